/*
 * kafka_topic.c — the Kafka sink's topics: topic.template checked and
 * expanded, topic names checked, and the topic handle cache.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "sink/kafka_int.h"

bool kafka_topic_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
}

static const char *const placeholders[] = {"{schema}", "{table}", "{kind}"};

int crw_kafka_template_check(const char *tmpl, char *errstr, size_t n) {
    if (!*tmpl) {
        snprintf(errstr, n, "topic.template: must not be empty");
        return -1;
    }
    for (const char *p = tmpl; *p;) {
        if (*p == '{') {
            size_t i;
            for (i = 0; i < 3; i++)
                if (!strncmp(p, placeholders[i], strlen(placeholders[i])))
                    break;
            if (i == 3) {
                snprintf(errstr, n, "topic.template: '%s': unknown placeholder at '%.16s' ({schema}, {table}, {kind})",
                         tmpl, p);
                return -1;
            }
            p += strlen(placeholders[i]);
            continue;
        }
        if (!kafka_topic_char((unsigned char)*p)) {
            snprintf(errstr, n, "topic.template: '%s': '%c' is not allowed in a Kafka topic name ([A-Za-z0-9._-])",
                     tmpl, *p);
            return -1;
        }
        p++;
    }
    return 0;
}

static void put_topic_part(crw_buf_t *out, const char *v) {
    for (; *v; v++)
        crw_buf_putc(out, kafka_topic_char((unsigned char)*v) ? *v : '_');
}

void crw_kafka_topic_expand(crw_buf_t *out, const char *tmpl, const char *schema, const char *table,
                            const char *kind) {
    const char *vals[3] = {schema, table, kind};
    crw_buf_reset(out);
    for (const char *p = tmpl; *p;) {
        if (*p == '{') {
            int i;
            for (i = 0; i < 3; i++)
                if (!strncmp(p, placeholders[i], strlen(placeholders[i])))
                    break;
            if (i < 3) {
                put_topic_part(out, vals[i] ? vals[i] : "");
                p += strlen(placeholders[i]);
                continue;
            }
        }
        crw_buf_putc(out, *p++);
    }
}

int kafka_topic_name_check(const char *key, const char *v, bool may_be_empty, char *errstr, size_t n) {
    if (!*v && !may_be_empty) {
        snprintf(errstr, n, "%s: must not be empty", key);
        return -1;
    }
    for (const char *p = v; *p; p++)
        if (!kafka_topic_char((unsigned char)*p)) {
            snprintf(errstr, n, "%s: '%s': '%c' is not allowed in a Kafka topic name ([A-Za-z0-9._-])", key, v, *p);
            return -1;
        }
    if (strlen(v) > 249) {
        snprintf(errstr, n, "%s: longer than Kafka's 249 characters", key);
        return -1;
    }
    return 0;
}

/* The topic handle for ev: the template expanded, then a small cache (a
 * handful of tables; the last hit first) so the hot path does no look-up. */
rd_kafka_topic_t *kafka_topic_for(kafka_sink_t *s, const crw_event_t *ev) {
    crw_kafka_topic_expand(&s->tname, s->conf->topic_template, ev->schema ? ev->schema : "",
                           ev->table ? ev->table : "", ev->kind ? ev->kind : "");
    if (s->last_topic >= 0 && !strcmp(s->topics[s->last_topic].name, s->tname.data))
        return s->topics[s->last_topic].rkt;
    for (int i = 0; i < s->ntopics; i++)
        if (!strcmp(s->topics[i].name, s->tname.data)) {
            s->last_topic = i;
            return s->topics[i].rkt;
        }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(s->rk, s->tname.data, NULL);
    if (!rkt)
        return NULL;
    s->topics = crw_realloc(s->topics, sizeof *s->topics * (size_t)(s->ntopics + 1));
    s->topics[s->ntopics] = (topic_t){crw_strdup(s->tname.data), rkt};
    s->last_topic = s->ntopics++;
    return rkt;
}

void kafka_topics_destroy(kafka_sink_t *s) {
    for (int i = 0; i < s->ntopics; i++) {
        rd_kafka_topic_destroy(s->topics[i].rkt);
        free(s->topics[i].name);
    }
    free(s->topics);
    s->topics = NULL;
    s->ntopics = 0;
    s->last_topic = -1;
}

void crw_kafka_ce_header_name(char *out, size_t n, const char *name, size_t len) {
    if (len == 15 && !memcmp(name, "datacontenttype", 15))
        snprintf(out, n, "content-type");
    else
        snprintf(out, n, "ce_%.*s", (int)len, name);
}
