/*
 * conf.c — table-driven configuration.
 *
 * Every fixed key is one row of `keys[]`: its type, where it lands in
 * crw_config_t, its default and its help line.  Two prefixes are open:
 * `kafka.<prop>` (passed to librdkafka as <prop>) and `resource.<id>.<sub>`
 * (a row of `resource_keys[]`).  Anything else is an unknown key.
 */
#include "core/conf.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"

typedef enum { T_STR, T_BOOL, T_INT, T_BYTES, T_ENUM, T_SINKS, T_LIST, T_LOGLEVEL } keytype_t;

typedef struct {
    const char *name;
    keytype_t type;
    size_t off;
    const char *def;
    const char *const *choices; /* T_ENUM: NULL-terminated, index = value */
    long min, max;              /* T_INT, T_BYTES */
    const char *help;
} keydef_t;

static const char *const source_choices[] = {"auto", "logical", "poll", NULL};
static const char *const format_choices[] = {"cloudevents", "debezium", NULL};
static const char *const delivery_choices[] = {"at-least-once", "exactly-once", NULL};
static const char *const exec_mode_choices[] = {"stream", "per-event", NULL};
static const char *const shape_choices[] = {"row", "crd", NULL};
static const char *const snapshot_mode_choices[] = {"never", "initial", "incremental", NULL};

#define OFF(f) offsetof(crw_config_t, f)

static const keydef_t keys[] = {
    {"source", T_ENUM, OFF(source), "auto", source_choices, 0, 0, "logical, poll, or auto"},
    {"slot.name", T_STR, OFF(slot_name), "crwatch", NULL, 0, 0, "logical replication slot"},
    {"slot.create", T_BOOL, OFF(slot_create), "true", NULL, 0, 0, "create the slot when missing"},
    {"publication.name", T_STR, OFF(publication_name), "crwatch", NULL, 0, 0, "publication of the watched tables"},
    {"publication.create", T_BOOL, OFF(publication_create), "true", NULL, 0, 0, "create the publication when missing"},
    {"tables", T_LIST, OFF(tables), "", NULL, 0, 0, "comma list of schema.table watched as row-shaped resources"},
    {"sink", T_SINKS, OFF(sinks), "stdout", NULL, 0, 0, "comma list of stdout, kafka, nats, rabbitmq, exec, plugin"},
    {"topic.template", T_STR, OFF(topic_template), "crwatch.{schema}.{table}", NULL, 0, 0,
     "Kafka topic; {schema}, {table}, {kind}"},
    {"event.format", T_ENUM, OFF(event_format), "cloudevents", format_choices, 0, 0, "cloudevents or debezium"},
    {"delivery", T_ENUM, OFF(delivery), "at-least-once", delivery_choices, 0, 0, "at-least-once or exactly-once"},
    {"poll.interval.ms", T_INT, OFF(poll_interval_ms), "1000", NULL, 10, 86400000, "polling source interval"},
    {"poll.batch.rows", T_INT, OFF(poll_batch_rows), "10000", NULL, 1, 100000000,
     "a poll that read this many changes is followed by the next at once (catching up)"},
    {"poll.lag.ms", T_INT, OFF(poll_lag_ms), "30000", NULL, 0, 86400000,
     "timestamp polling: re-read this far back (covers transactions up to this long)"},
    {"resync.interval.ms", T_INT, OFF(resync_interval_ms), "300000", NULL, 1000, 604800000,
     "timestamp polling: reconcile the whole table this often (deletes, longer transactions)"},
    {"resync.from", T_STR, OFF(resync_from), "", NULL, 0, 0,
     "crwatch resync: what the sink holds: a JSON-lines file of its events, or kafka (the tables' topics)"},
    {"exec.command", T_STR, OFF(exec_command), "", NULL, 0, 0, "local handler command (/bin/sh -c)"},
    {"exec.mode", T_ENUM, OFF(exec_mode), "stream", exec_mode_choices, 0, 0, "stream or per-event"},
    {"plugin.path", T_STR, OFF(plugin_path), "", NULL, 0, 0, "handler shared object"},
    {"status.interval.ms", T_INT, OFF(status_interval_ms), "10000", NULL, 100, 3600000,
     "standby status update interval"},
    {"reconnect.backoff.max.ms", T_INT, OFF(reconnect_max_ms), "30000", NULL, 100, 3600000,
     "cap of the reconnect backoff"},
    {"reconnect.auth", T_ENUM, OFF(reconnect_auth), "fail", (const char *const[]){"fail", "retry", NULL}, 0, 0,
     "a login the server refuses (password, role, database): fail (exit 3) or retry with the backoff"},
    {"spool.dir", T_STR, OFF(spool_dir), "", NULL, 0, 0, "where streamed in-progress transactions wait ($TMPDIR)"},
    {"log.level", T_LOGLEVEL, OFF(log_level), "info", NULL, 0, 0, "error, warn, info or debug"},
    {"log.format", T_ENUM, OFF(log_format), "text", (const char *const[]){"text", "json", NULL}, 0, 0,
     "text, or json: one JSON object per line (ts, level, msg, slot)"},

    /* --- slot safety and operations (docs/operations.md) --- */
    {"heartbeat.interval.ms", T_INT, OFF(heartbeat_interval_ms), "10000", NULL, 0, 3600000,
     "logical: a transactional pg_logical_emit_message through the slot after this long without a change (0: off)"},
    {"heartbeat.timeout.ms", T_INT, OFF(heartbeat_timeout_ms), "30000", NULL, 100, 3600000,
     "logical: a heartbeat not back through the stream within this, with the server silent, rebuilds the connection"},
    {"slot.max.retained.bytes", T_BYTES, OFF(slot_max_retained_bytes), "1073741824", NULL, 0, LONG_MAX,
     "logical: retained WAL above this warns (bytes; kB, MB, GB suffixes)"},
    {"slot.lost", T_ENUM, OFF(slot_lost), "fail", (const char *const[]){"fail", "resync", NULL}, 0, 0,
     "a slot lost or recreated while crwatch was away: fail (exit 3) or resync (run crwatch resync, then stream)"},
    {"http.listen", T_STR, OFF(http_listen), "", NULL, 0, 0,
     "host:port of /metrics, /healthz, /readyz (empty: off; port 0: any free one)"},
    {"watch.listen", T_STR, OFF(watch_listen), "", NULL, 0, 0,
     "host:port of the watch API: crd kinds as the Kubernetes API serves custom resources (empty: off)"},
    {"watch.history.events", T_INT, OFF(watch_history_events), "10000", NULL, 1, 10000000,
     "the watch API: changes kept for watches that resume (an older resourceVersion gets 410 Gone)"},
    {"health.timeout.ms", T_INT, OFF(health_timeout_ms), "60000", NULL, 100, 3600000,
     "/healthz answers 503 when the main loop has not gone round for this long"},
    {"snapshot.mode", T_ENUM, OFF(snapshot_mode), "never", snapshot_mode_choices, 0, 0,
     "stream: never, initial (SYNC every row when the slot is created, then stream), or incremental (re-read "
     "alongside the stream)"},
    {"snapshot.workers", T_INT, OFF(snapshot_workers), "2", NULL, 1, 64,
     "backfill/initial: connections reading one snapshot in parallel"},
    {"snapshot.chunk.rows", T_INT, OFF(snapshot_chunk_rows), "10000", NULL, 1, 100000000,
     "backfill/initial: rows per chunk (the unit of resume)"},
    {"snapshot.chunking", T_ENUM, OFF(snapshot_chunking), "ctid", (const char *const[]){"ctid", "key", NULL}, 0, 0,
     "backfill/initial: chunks of block ranges (ctid: the table's own order) or primary-key ranges (key)"},
    {"snapshot.state.file", T_STR, OFF(snapshot_state_file), "", NULL, 0, 0,
     "progress kept for backfill --resume (default crwatch-backfill.<slot.name>.state) and of the initial snapshot "
     "(crwatch-initial.<slot.name>.state)"},
    {"deadletter.file", T_STR, OFF(deadletter_file), "crwatch-deadletter.jsonl", NULL, 0, 0,
     "JSON lines of changes that could not be mapped or delivered"},

    /* --- Kafka sink --- */
    {"deadletter.topic", T_STR, OFF(deadletter_topic), "crwatch.deadletter", NULL, 0, 0,
     "kafka: topic for events the broker refuses (too large, not authorized); empty: file only"},
    {"checkpoint.topic", T_STR, OFF(checkpoint_topic), "crwatch.checkpoints", NULL, 0, 0,
     "exactly-once: compacted topic of slot checkpoints (partition 0)"},
    {"transaction.interval.ms", T_INT, OFF(transaction_interval_ms), "100", NULL, 1, 600000,
     "exactly-once: a Kafka transaction is committed once this old"},
    {"cloudevents.mode", T_ENUM, OFF(cloudevents_mode), "structured", (const char *const[]){"structured", "binary", NULL},
     0, 0, "kafka: structured (JSON value) or binary (ce_* headers, data as the value)"},

    /* --- RabbitMQ sink (docs/rabbitmq.md) --- */
    {"rabbitmq.url", T_STR, OFF(rabbitmq_url), "", NULL, 0, 0,
     "rabbitmq: amqp://user:pass@host:port/vhost (amqps:// for TLS); a comma list is tried in turn"},
    {"rabbitmq.exchange", T_STR, OFF(rabbitmq_exchange), "crwatch", NULL, 0, 0,
     "rabbitmq: exchange ({schema}, {table}, {kind}); a topic exchange is declared when missing"},
    {"rabbitmq.routing.key", T_STR, OFF(rabbitmq_routing_key), "{schema}.{table}", NULL, 0, 0,
     "rabbitmq: routing key ({schema}, {table}, {kind}, {key})"},
    {"rabbitmq.max.unconfirmed", T_INT, OFF(rabbitmq_max_unconfirmed), "2048", NULL, 1, 100000,
     "rabbitmq: messages published and not yet confirmed before the stream waits"},
    {"rabbitmq.mandatory", T_BOOL, OFF(rabbitmq_mandatory), "true", NULL, 0, 0,
     "rabbitmq: unroutable messages come back and are dead-lettered (false: the broker drops them)"},
    {"rabbitmq.password.file", T_STR, OFF(rabbitmq_password_file), "", NULL, 0, 0,
     "rabbitmq: a file holding the password (instead of the URL's)"},
    {"rabbitmq.tls.ca.file", T_STR, OFF(rabbitmq_tls_ca_file), "", NULL, 0, 0,
     "rabbitmq: amqps: CA certificates (PEM) the server's certificate is checked against"},
    {"rabbitmq.tls.cert.file", T_STR, OFF(rabbitmq_tls_cert_file), "", NULL, 0, 0,
     "rabbitmq: amqps: client certificate (PEM)"},
    {"rabbitmq.tls.key.file", T_STR, OFF(rabbitmq_tls_key_file), "", NULL, 0, 0,
     "rabbitmq: amqps: client private key (PEM)"},
    {"rabbitmq.tls.verify", T_BOOL, OFF(rabbitmq_tls_verify), "true", NULL, 0, 0,
     "rabbitmq: amqps: verify the server's certificate and host name"},

    /* --- NATS JetStream sink (docs/nats.md) --- */
    {"nats.url", T_STR, OFF(nats_url), "", NULL, 0, 0,
     "nats: comma list of servers, nats://[user:pass@]host:4222 (tls:// for TLS)"},
    {"nats.subject.template", T_STR, OFF(nats_subject_template), "crwatch.{schema}.{table}", NULL, 0, 0,
     "nats: the subject ({schema}, {table}, {kind}, {key}, each one token)"},
    {"nats.stream", T_STR, OFF(nats_stream), "CRWATCH", NULL, 0, 0, "nats: the JetStream stream of the subjects"},
    {"nats.stream.create", T_BOOL, OFF(nats_stream_create), "true", NULL, 0, 0,
     "nats: create the stream when missing (the template's subjects, file storage)"},
    {"nats.stream.replicas", T_INT, OFF(nats_stream_replicas), "1", NULL, 1, 5,
     "nats: replicas of a stream crwatch creates"},
    {"nats.stream.duplicate.window", T_STR, OFF(nats_stream_duplicate_window), "2m", NULL, 0, 0,
     "nats: duplicate window of a stream crwatch creates (ms, s, m, h): longer than a restart takes"},
    {"nats.max.pending", T_INT, OFF(nats_max_pending), "4096", NULL, 1, 1000000,
     "nats: publishes awaiting JetStream's acknowledgement before the stream waits"},
    {"nats.publish.timeout.ms", T_INT, OFF(nats_publish_timeout_ms), "5000", NULL, 100, 600000,
     "nats: an acknowledgement not back within this fails the publish (it is sent again)"},
    {"nats.user", T_STR, OFF(nats_user), "", NULL, 0, 0, "nats: user name (with nats.password.file)"},
    {"nats.password.file", T_STR, OFF(nats_password_file), "", NULL, 0, 0, "nats: a file holding the password"},
    {"nats.token.file", T_STR, OFF(nats_token_file), "", NULL, 0, 0, "nats: a file holding an authentication token"},
    {"nats.creds.file", T_STR, OFF(nats_creds_file), "", NULL, 0, 0,
     "nats: a credentials file (user JWT and NKey seed, as nsc writes it)"},
    {"nats.tls", T_BOOL, OFF(nats_tls), "false", NULL, 0, 0,
     "nats: require TLS (tls:// URLs and nats.tls.*.file do too)"},
    {"nats.tls.ca.file", T_STR, OFF(nats_tls_ca_file), "", NULL, 0, 0,
     "nats: CA certificates (PEM) the server's certificate is checked against"},
    {"nats.tls.cert.file", T_STR, OFF(nats_tls_cert_file), "", NULL, 0, 0, "nats: client certificate (PEM)"},
    {"nats.tls.key.file", T_STR, OFF(nats_tls_key_file), "", NULL, 0, 0, "nats: client private key (PEM)"},
    {"nats.tls.verify", T_BOOL, OFF(nats_tls_verify), "true", NULL, 0, 0,
     "nats: verify the server's certificate and host name"},

    /* --- local handlers: exec, plugin, embedding --- */
    {"workers", T_INT, OFF(workers), "1", NULL, 1, 256, "local handlers: worker threads (keys in parallel)"},
    {"retry.max", T_INT, OFF(retry_max), "10", NULL, -1, 1000000,
     "local handlers: retries before dead-lettering (-1: forever)"},
    {"retry.backoff.initial.ms", T_INT, OFF(retry_backoff_initial_ms), "100", NULL, 1, 3600000,
     "local handlers: first retry delay (doubles, jittered)"},
    {"retry.backoff.max.ms", T_INT, OFF(retry_backoff_max_ms), "30000", NULL, 1, 86400000,
     "local handlers: cap of the retry delay"},
    {"rate.limit", T_INT, OFF(rate_limit), "0", NULL, 0, 10000000, "local handlers: calls per second (0: no limit)"},
    {"rate.burst", T_INT, OFF(rate_burst), "1", NULL, 1, 10000000, "local handlers: calls allowed back to back"},
    {"coalesce", T_BOOL, OFF(coalesce), "false", NULL, 0, 0, "local handlers: only the latest queued change per key"},
    {"queue.max.events", T_INT, OFF(queue_max_events), "10000", NULL, 1, 10000000,
     "local handlers: unfinished events before the stream waits"},
    {"queue.max.bytes", T_INT, OFF(queue_max_bytes), "67108864", NULL, 4096, 2147483647,
     "local handlers: unfinished event bytes before the stream waits"},
    {"exec.timeout.ms", T_INT, OFF(exec_timeout_ms), "0", NULL, 0, 86400000,
     "exec: a reply or exit later than this is a retry (0: wait)"},
    {"plugin.config", T_STR, OFF(plugin_config), "", NULL, 0, 0, "string handed to the plugin's init()"},

    /* --- mapper --- */
    {"event.patch", T_BOOL, OFF(event_patch), "false", NULL, 0, 0, "add data.patch: RFC 6902 from oldObject to object"},
    {"cache.max.entries", T_INT, OFF(cache_max_entries), "0", NULL, 0, 50000000,
     "resource cache: at most this many objects (0: bounded by bytes only); > 0 caches row-shaped kinds too"},
    {"cache.max.bytes", T_BYTES, OFF(cache_max_bytes), "67108864", NULL, 0, LONG_MAX,
     "resource cache: at most this many bytes (crd kinds are cached by default; 0: no cache)"},
    {"cache.seed", T_BOOL, OFF(cache_seed), "true", NULL, 0, 0, "list watched tables at start to fill the cache"},
    {"debezium.name", T_STR, OFF(debezium_name), "crwatch", NULL, 0, 0, "event.format=debezium: source.name"},
};

#define ROFF(f) offsetof(crw_resource_conf_t, f)

static const keydef_t resource_keys[] = {
    {"table", T_STR, ROFF(table), "", NULL, 0, 0, "schema.table watched"},
    {"kind", T_STR, ROFF(kind), "", NULL, 0, 0, "event kind (default: table name)"},
    {"api.version", T_STR, ROFF(api_version), "", NULL, 0, 0, "apiVersion of crd-shaped objects"},
    {"shape", T_ENUM, ROFF(shape), "row", shape_choices, 0, 0, "row or crd"},
    {"key", T_LIST, ROFF(key), "", NULL, 0, 0, "key columns (default: primary key; crd: namespace,name)"},
    {"kind.column", T_STR, ROFF(kind_column), "", NULL, 0, 0, "shared table: column holding each row's kind"},
    {"columns.include", T_LIST, ROFF(include), "", NULL, 0, 0, "columns in the object (default: all)"},
    {"columns.exclude", T_LIST, ROFF(exclude), "", NULL, 0, 0, "columns left out of the object"},
    {"poll.column", T_STR, ROFF(poll_column), "", NULL, 0, 0,
     "polling a table outside the convention: the column every write sets (updated_at, a sequence)"},
    {"filter", T_STR, ROFF(filter), "", NULL, 0, 0, "backfill/snapshots: SQL condition on the rows read (default: all)"},
    {"plural", T_STR, ROFF(plural), "", NULL, 0, 0, "the watch API: the kind's plural in paths (default: lowercase kind + s)"},
    {"cache", T_ENUM, ROFF(cache), "auto", (const char *const[]){"auto", "true", "false", NULL}, 0, 0,
     "keep this kind in the resource cache (auto: crd-shaped kinds, and every kind when cache.max.entries > 0)"},
};

void crw_strlist_add(crw_strlist_t *l, const char *s) {
    l->v = crw_realloc(l->v, sizeof(char *) * (size_t)(l->n + 1));
    l->v[l->n++] = crw_strdup(s);
}

void crw_strlist_clear(crw_strlist_t *l) {
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Splits a comma list into l (replacing it); empty items are an error. */
static int list_parse(crw_strlist_t *l, const char *value) {
    crw_strlist_clear(l);
    if (*value == '\0')
        return 0;
    char *copy = crw_strdup(value), *save = NULL;
    int rc = 0;
    for (char *p = copy;; p = NULL) {
        char *tok = strtok_r(p, ",", &save);
        if (!tok)
            break;
        tok = trim(tok);
        if (*tok == '\0') {
            rc = -1;
            break;
        }
        crw_strlist_add(l, tok);
    }
    /* ",a" and "a,,b" lose an item to strtok: count commas to catch them. */
    int commas = 0;
    for (const char *q = value; *q; q++)
        commas += *q == ',';
    if (rc == 0 && commas != l->n - 1)
        rc = -1;
    free(copy);
    return rc;
}

static int set_typed(void *base, const keydef_t *k, const char *shown, const char *value, char *errstr,
                     size_t n) {
    void *field = (char *)base + k->off;
    switch (k->type) {
    case T_STR:
        free(*(char **)field);
        *(char **)field = crw_strdup(value);
        return 0;
    case T_BOOL:
        if (!strcmp(value, "true") || !strcmp(value, "on") || !strcmp(value, "1") || !strcmp(value, "yes"))
            *(bool *)field = true;
        else if (!strcmp(value, "false") || !strcmp(value, "off") || !strcmp(value, "0") || !strcmp(value, "no"))
            *(bool *)field = false;
        else {
            snprintf(errstr, n, "%s: '%s' is not a boolean (true or false)", shown, value);
            return CRW_ERR_CONFIG;
        }
        return 0;
    case T_INT: {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end || v < k->min || v > k->max) {
            snprintf(errstr, n, "%s: '%s' is not an integer in [%ld, %ld]", shown, value, k->min, k->max);
            return CRW_ERR_CONFIG;
        }
        *(int *)field = (int)v;
        return 0;
    }
    case T_BYTES: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        long long mult = 1;
        if (!strcmp(end, "kB") || !strcmp(end, "KiB"))
            mult = 1024;
        else if (!strcmp(end, "MB") || !strcmp(end, "MiB"))
            mult = 1024 * 1024;
        else if (!strcmp(end, "GB") || !strcmp(end, "GiB"))
            mult = 1024LL * 1024 * 1024;
        else if (*end)
            mult = 0;
        if (errno || end == value || mult == 0 || v < k->min || v > k->max / mult) {
            snprintf(errstr, n, "%s: '%s' is not a byte count (an integer >= %ld, optionally kB, MB or GB)", shown,
                     value, k->min);
            return CRW_ERR_CONFIG;
        }
        *(int64_t *)field = (int64_t)(v * mult);
        return 0;
    }
    case T_ENUM:
        for (int i = 0; k->choices[i]; i++)
            if (!strcmp(value, k->choices[i])) {
                *(int *)field = i;
                return 0;
            }
        {
            char allowed[256] = "";
            for (int i = 0; k->choices[i]; i++) {
                if (i)
                    strncat(allowed, ", ", sizeof allowed - strlen(allowed) - 1);
                strncat(allowed, k->choices[i], sizeof allowed - strlen(allowed) - 1);
            }
            snprintf(errstr, n, "%s: '%s' is not one of %s", shown, value, allowed);
        }
        return CRW_ERR_CONFIG;
    case T_SINKS: /* a list that names at least one sink; which names exist is sink/sinks.c's to say */
        if (list_parse((crw_strlist_t *)field, value) < 0 || ((crw_strlist_t *)field)->n == 0) {
            snprintf(errstr, n, "%s: '%s' is not a comma list of sinks", shown, value);
            return CRW_ERR_CONFIG;
        }
        return 0;
    case T_LIST:
        if (list_parse((crw_strlist_t *)field, value) < 0) {
            snprintf(errstr, n, "%s: '%s' has an empty item", shown, value);
            return CRW_ERR_CONFIG;
        }
        return 0;
    case T_LOGLEVEL: {
        int lvl = crw_log_level_parse(value);
        if (lvl < 0) {
            snprintf(errstr, n, "%s: '%s' is not one of error, warn, info, debug", shown, value);
            return CRW_ERR_CONFIG;
        }
        *(int *)field = lvl;
        return 0;
    }
    }
    return CRW_ERR_INTERNAL;
}

static bool valid_word(const char *s, size_t len) {
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

static crw_resource_conf_t *resource_get(crw_config_t *c, const char *id, size_t idlen) {
    for (int i = 0; i < c->nresources; i++)
        if (strlen(c->resources[i].id) == idlen && !strncmp(c->resources[i].id, id, idlen))
            return &c->resources[i];
    c->resources = crw_realloc(c->resources, sizeof *c->resources * (size_t)(c->nresources + 1));
    crw_resource_conf_t *r = &c->resources[c->nresources++];
    memset(r, 0, sizeof *r);
    r->id = crw_strndup(id, idlen);
    return r;
}

int crw_config_set(crw_config_t *c, const char *key, const char *value, char *errstr, size_t n) {
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!strcmp(key, keys[i].name))
            return set_typed(c, &keys[i], key, value, errstr, n);

    if (!strncmp(key, "kafka.", 6)) {
        const char *prop = key + 6;
        if (*prop == '\0') {
            snprintf(errstr, n, "%s: missing librdkafka property name after 'kafka.'", key);
            return CRW_ERR_CONFIG;
        }
        for (int i = 0; i < c->nkafka; i++)
            if (!strcmp(c->kafka[i].key, prop)) {
                free(c->kafka[i].value);
                c->kafka[i].value = crw_strdup(value);
                return 0;
            }
        c->kafka = crw_realloc(c->kafka, sizeof *c->kafka * (size_t)(c->nkafka + 1));
        c->kafka[c->nkafka].key = crw_strdup(prop);
        c->kafka[c->nkafka].value = crw_strdup(value);
        c->nkafka++;
        return 0;
    }

    if (!strncmp(key, "resource.", 9)) {
        const char *id = key + 9, *dot = strchr(id, '.');
        if (!dot || !valid_word(id, (size_t)(dot - id))) {
            snprintf(errstr, n, "%s: expected resource.<id>.<setting> with <id> a word of letters, digits, _ or -",
                     key);
            return CRW_ERR_CONFIG;
        }
        for (size_t i = 0; i < sizeof resource_keys / sizeof resource_keys[0]; i++)
            if (!strcmp(dot + 1, resource_keys[i].name)) {
                crw_resource_conf_t *r = resource_get(c, id, (size_t)(dot - id));
                if (!strcmp(dot + 1, "table"))
                    r->seen_table = true;
                return set_typed(r, &resource_keys[i], key, value, errstr, n);
            }
        snprintf(errstr, n,
                 "%s: unknown resource setting '%s' (table, kind, api.version, shape, key, kind.column, "
                 "columns.include, columns.exclude, poll.column)",
                 key,
                 dot + 1);
        return CRW_ERR_CONFIG;
    }

    snprintf(errstr, n, "unknown configuration key '%s'", key);
    return CRW_ERR_CONFIG;
}

int crw_config_set_pair(crw_config_t *c, const char *pair, char *errstr, size_t n) {
    const char *eq = strchr(pair, '=');
    if (!eq || eq == pair) {
        snprintf(errstr, n, "'%s': expected key=value", pair);
        return CRW_ERR_CONFIG;
    }
    char *k = crw_strndup(pair, (size_t)(eq - pair));
    char *v = crw_strdup(eq + 1);
    int rc = crw_config_set(c, trim(k), trim(v), errstr, n);
    free(k);
    free(v);
    return rc;
}

int crw_props_parse(const char *text, const char *label, crw_props_set_fn set, void *arg, char *errstr, size_t n) {
    char *copy = crw_strdup(text), *next = NULL;
    int lineno = 0, rc = 0;
    /* strtok_r would skip empty lines and so miscount: split by hand. */
    for (char *line = copy; line && rc == 0; line = next) {
        char *nl = strchr(line, '\n');
        next = nl ? nl + 1 : NULL;
        if (nl)
            *nl = '\0';
        lineno++;
        char *s = trim(line);
        if (*s == '\0' || *s == '#' || *s == '!')
            continue;
        char *eq = strchr(s, '=');
        if (!eq || eq == s) {
            snprintf(errstr, n, "%s%s%d: expected 'key = value', got '%s'", label ? label : "line ", label ? ":" : "",
                     lineno, s);
            rc = CRW_ERR_CONFIG;
            break;
        }
        *eq = '\0';
        char inner[768];
        if ((rc = set(arg, trim(s), trim(eq + 1), inner, sizeof inner)) < 0)
            snprintf(errstr, n, "%s%s%d: %s", label ? label : "line ", label ? ":" : "", lineno, inner);
    }
    free(copy);
    return rc;
}

int crw_props_load_file(const char *path, crw_props_set_fn set, void *arg, char *errstr, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(errstr, n, "config file %s: %s", path, strerror(errno));
        return CRW_ERR_CONFIG;
    }
    crw_buf_t text = CRW_BUF_INIT;
    char chunk[4096];
    size_t r;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0)
        crw_buf_put(&text, chunk, r);
    int rc;
    if (ferror(f)) {
        snprintf(errstr, n, "config file %s: read error", path);
        rc = CRW_ERR_CONFIG;
    } else
        rc = crw_props_parse(text.data ? text.data : "", path, set, arg, errstr, n);
    fclose(f);
    crw_buf_free(&text);
    return rc;
}

static int config_set_cb(void *arg, const char *key, const char *value, char *errstr, size_t n) {
    return crw_config_set(arg, key, value, errstr, n);
}

int crw_config_load_file(crw_config_t *c, const char *path, char *errstr, size_t n) {
    return crw_props_load_file(path, config_set_cb, c, errstr, n);
}

/* Splits "schema.table" (or "table": schema public) into r. */
static int split_table(crw_resource_conf_t *r, const char *qualified, const char *shown, char *errstr, size_t n) {
    const char *dot = strchr(qualified, '.');
    free(r->schema);
    char *tbl = dot ? crw_strdup(dot + 1) : crw_strdup(qualified);
    r->schema = dot ? crw_strndup(qualified, (size_t)(dot - qualified)) : crw_strdup("public");
    free(r->table);
    r->table = tbl;
    if (*r->schema == '\0' || *r->table == '\0' || strchr(r->table, '.')) {
        snprintf(errstr, n, "%s: '%s' is not schema.table", shown, qualified);
        return CRW_ERR_CONFIG;
    }
    return 0;
}

/* True (with errstr) when resources[i] and an earlier kind of its table set the string key at off differently. */
static bool kinds_differ(const crw_config_t *c, int i, size_t off, const char *key, char *errstr, size_t n) {
    const crw_resource_conf_t *r = &c->resources[i];
    const char *mine = *(char *const *)((const char *)r + off);
    for (int j = 0; j < i; j++) {
        const crw_resource_conf_t *o = &c->resources[j];
        const char *theirs = *(char *const *)((const char *)o + off);
        if (!strcmp(o->schema, r->schema) && !strcmp(o->table, r->table) &&
            strcmp(mine ? mine : "", theirs ? theirs : "")) {
            snprintf(errstr, n, "table %s.%s: resource.%s and resource.%s set different %s", r->schema, r->table,
                     o->id, r->id, key);
            return true;
        }
    }
    return false;
}

int crw_config_listen(const char *listen, char *host, size_t hostn, int *port) {
    const char *colon = strrchr(listen, ':');
    if (!colon || (size_t)(colon - listen) >= hostn)
        return -1;
    const char *h = listen, *he = colon;
    if (*h == '[' && he > h && he[-1] == ']') { /* [::1]:9187 */
        h++;
        he--;
    }
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || p < 0 || p > 65535)
        return -1;
    snprintf(host, hostn, "%.*s", (int)(he - h), h);
    *port = (int)p;
    return 0;
}

int crw_config_finalize(crw_config_t *c, char *errstr, size_t n) {
    char shown[300];
    /* resource.<id>.table values are still "schema.table": split them. */
    for (int i = 0; i < c->nresources; i++) {
        crw_resource_conf_t *r = &c->resources[i];
        snprintf(shown, sizeof shown, "resource.%s.table", r->id);
        if (!r->seen_table || !r->table || !*r->table) {
            snprintf(errstr, n, "resource.%s: no table given (set resource.%s.table = schema.table)", r->id, r->id);
            return CRW_ERR_CONFIG;
        }
        char *q = crw_strdup(r->table);
        int rc = split_table(r, q, shown, errstr, n);
        free(q);
        if (rc < 0)
            return rc;
    }
    for (int i = 0; i < c->tables.n; i++) {
        char id[64];
        snprintf(id, sizeof id, "tables#%d", i + 1);
        crw_resource_conf_t *r = resource_get(c, id, strlen(id));
        if (split_table(r, c->tables.v[i], "tables", errstr, n) < 0)
            return CRW_ERR_CONFIG;
        r->seen_table = true;
    }
    for (int i = 0; i < c->nresources; i++) {
        crw_resource_conf_t *r = &c->resources[i];
        if (!r->kind || !*r->kind) {
            free(r->kind);
            r->kind = crw_strdup(r->table);
        }
        if (r->include.n && r->exclude.n) {
            snprintf(errstr, n, "resource.%s: set columns.include or columns.exclude, not both", r->id);
            return CRW_ERR_CONFIG;
        }
        /* One table may hold several kinds when each resource names the same kind column. */
        for (int j = 0; j < i; j++)
            if (!strcmp(c->resources[j].schema, r->schema) && !strcmp(c->resources[j].table, r->table) &&
                !(r->kind_column && c->resources[j].kind_column && *r->kind_column &&
                  !strcmp(r->kind_column, c->resources[j].kind_column) && strcmp(r->kind, c->resources[j].kind))) {
                snprintf(errstr, n, "table %s.%s is watched twice (resource.%s and resource.%s)", r->schema,
                         r->table, c->resources[j].id, r->id);
                return CRW_ERR_CONFIG;
            }
        if (r->cache == 1 && c->cache_max_bytes == 0) {
            snprintf(errstr, n, "resource.%s.cache=true, but cache.max.bytes=0 turns the cache off", r->id);
            return CRW_ERR_CONFIG;
        }
        /* The resource cache (docs/events.md): crd kinds by default; row kinds when asked. */
        r->cached = c->cache_max_bytes > 0 &&
                    (r->cache == 1 || (r->cache == 0 && (r->shape == CRW_SHAPE_CRD || c->cache_max_entries > 0)));
        /* Kinds of one table are polled one way, and a snapshot reads the table once. */
        if (kinds_differ(c, i, offsetof(crw_resource_conf_t, poll_column), "poll.column", errstr, n) ||
            kinds_differ(c, i, offsetof(crw_resource_conf_t, filter), "filter", errstr, n))
            return CRW_ERR_CONFIG;
    }
    if (!*c->slot_name || !*c->publication_name) {
        snprintf(errstr, n, "%s: must not be empty", !*c->slot_name ? "slot.name" : "publication.name");
        return CRW_ERR_CONFIG;
    }
    /* Slot names are [a-z0-9_]{1,63} in PostgreSQL; say so before touching it. */
    for (const char *p = c->slot_name; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_') || p - c->slot_name >= 63) {
            snprintf(errstr, n, "slot.name: '%s' may contain only lower-case letters, digits and _ (63 at most)",
                     c->slot_name);
            return CRW_ERR_CONFIG;
        }

    if (c->slot_lost == 1 && !*c->resync_from) {
        snprintf(errstr, n, "slot.lost=resync needs resync.from (a JSON-lines file of the sink's events, or kafka): "
                 "the resync compares the sink's view with the tables");
        return CRW_ERR_CONFIG;
    }
    const struct {
        const char *key, *value;
    } listens[] = {{"watch.listen", c->watch_listen}, {"http.listen", c->http_listen}};
    for (size_t i = 0; i < sizeof listens / sizeof listens[0]; i++) {
        char host[256];
        int port;
        if (*listens[i].value && crw_config_listen(listens[i].value, host, sizeof host, &port) < 0) {
            snprintf(errstr, n, "%s: '%s' is not host:port (a port in [0, 65535]; 0: any free one)", listens[i].key,
                     listens[i].value);
            return CRW_ERR_CONFIG;
        }
    }
    if (!*c->spool_dir) {
        const char *t = getenv("TMPDIR");
        free(c->spool_dir);
        c->spool_dir = crw_strdup(t && *t ? t : "/tmp");
    }
    return 0;
}

crw_config_t *crw_config_new(void) {
    crw_config_t *c = crw_calloc(1, sizeof *c);
    char err[256];
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (set_typed(c, &keys[i], keys[i].name, keys[i].def, err, sizeof err) < 0)
            crw_log_write(CRW_LOG_ERROR, "bad default: %s", err); /* a bug in keys[] */
    return c;
}

static void resource_free(crw_resource_conf_t *r) {
    free(r->id);
    free(r->schema);
    free(r->table);
    free(r->kind);
    free(r->api_version);
    free(r->kind_column);
    free(r->poll_column);
    free(r->filter);
    free(r->plural);
    crw_strlist_clear(&r->key);
    crw_strlist_clear(&r->include);
    crw_strlist_clear(&r->exclude);
}

void crw_config_destroy(crw_config_t *c) {
    if (!c)
        return;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (keys[i].type == T_STR)
            free(*(char **)((char *)c + keys[i].off));
        else if (keys[i].type == T_LIST || keys[i].type == T_SINKS)
            crw_strlist_clear((crw_strlist_t *)((char *)c + keys[i].off));
    }
    for (int i = 0; i < c->nresources; i++)
        resource_free(&c->resources[i]);
    free(c->resources);
    for (int i = 0; i < c->nkafka; i++) {
        free(c->kafka[i].key);
        free(c->kafka[i].value);
    }
    free(c->kafka);
    free(c);
}

bool crw_config_list_names(const crw_strlist_t *names, const char *schema, const char *table) {
    if (!names || !names->n)
        return true;
    size_t sl = strlen(schema);
    for (int i = 0; i < names->n; i++) {
        const char *nm = names->v[i];
        if ((!strncmp(nm, schema, sl) && nm[sl] == '.' && !strcmp(nm + sl + 1, table)) ||
            (!strchr(nm, '.') && !strcmp(schema, "public") && !strcmp(nm, table)))
            return true;
    }
    return false;
}

bool crw_config_cache_on(const crw_config_t *c) {
    for (int i = 0; i < c->nresources; i++)
        if (c->resources[i].cached)
            return true;
    return false;
}

bool crw_config_table_named_before(const crw_config_t *c, int i) {
    for (int j = 0; j < i; j++)
        if (!strcmp(c->resources[j].schema, c->resources[i].schema) &&
            !strcmp(c->resources[j].table, c->resources[i].table))
            return true;
    return false;
}

const char *crw_config_source_name(crw_source_kind_t kind) {
    return (size_t)kind < sizeof source_choices / sizeof source_choices[0] - 1 ? source_choices[kind] : "?";
}

void crw_config_describe(FILE *f) {
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        fprintf(f, "  %-26s %-26s %s\n", keys[i].name, *keys[i].def ? keys[i].def : "-", keys[i].help);
    for (size_t i = 0; i < sizeof resource_keys / sizeof resource_keys[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "resource.<id>.%s", resource_keys[i].name);
        fprintf(f, "  %-26s %-26s %s\n", name, *resource_keys[i].def ? resource_keys[i].def : "-",
                resource_keys[i].help);
    }
    fprintf(f, "  %-26s %-26s %s\n", "kafka.<prop>", "-", "passed to librdkafka as <prop>");
}
