/*
 * sinks.c — the registry of sink kinds and the fan-out (see sinks.h).
 */
#include "sink/sinks.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"

/* The registry: a new sink is one file defining its constructor, and one line in each list below. */
CRW_SINK_CONSTRUCTOR(crw_sink_stdout_new);
CRW_SINK_CONSTRUCTOR(crw_sink_kafka_new);
CRW_SINK_CONSTRUCTOR(crw_sink_nats_new);
CRW_SINK_CONSTRUCTOR(crw_sink_exec_new);
CRW_SINK_CONSTRUCTOR(crw_sink_plugin_new);
CRW_SINK_CONSTRUCTOR(crw_sink_rabbitmq_new);

static const struct {
    const char *name;
    crw_sink_new_fn open;
} registry[] = {
    {"stdout", crw_sink_stdout_new},
    {"kafka", crw_sink_kafka_new},
    {"nats", crw_sink_nats_new},
    {"exec", crw_sink_exec_new},
    {"plugin", crw_sink_plugin_new},
    {"rabbitmq", crw_sink_rabbitmq_new},
};

#define NKINDS (sizeof registry / sizeof registry[0])

static crw_sink_new_fn lookup(const char *name) {
    for (size_t i = 0; i < NKINDS; i++)
        if (!strcmp(registry[i].name, name))
            return registry[i].open;
    return NULL;
}

int crw_sinks_check(const crw_config_t *conf, char *errstr, size_t n) {
    for (int i = 0; i < conf->sinks.n; i++)
        if (!lookup(conf->sinks.v[i])) {
            char known[128] = "";
            for (size_t k = 0; k < NKINDS; k++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", k ? ", " : "", registry[k].name);
            snprintf(errstr, n, "sink: unknown sink '%s' (%s)", conf->sinks.v[i], known);
            return CRW_ERR_CONFIG;
        }
    return 0;
}

void crw_sinks_add(crw_sinks_t *ss, crw_sink_t *s) {
    if (ss->n == ss->cap) {
        ss->cap = ss->cap ? ss->cap * 2 : 4;
        ss->v = crw_realloc(ss->v, sizeof *ss->v * (size_t)ss->cap);
    }
    ss->v[ss->n++] = s;
}

int crw_sinks_open(crw_sinks_t *ss, const crw_sink_env_t *env, char *errstr, size_t n) {
    int rc = crw_sinks_check(env->conf, errstr, n);
    if (rc < 0)
        return rc;
    const crw_strlist_t *names = &env->conf->sinks;
    for (int i = 0; i < names->n; i++) {
        bool again = false; /* `sink=stdout,stdout` is one stdout sink */
        for (int j = 0; j < i && !again; j++)
            again = !strcmp(names->v[j], names->v[i]);
        if (again)
            continue;
        int err = CRW_ERR_SINK;
        crw_sink_t *s = lookup(names->v[i])(env, &err, errstr, n);
        if (!s)
            return err;
        crw_sinks_add(ss, s);
    }
    return 0;
}

int crw_sinks_emit(crw_sinks_t *ss, const crw_event_t *ev) {
    for (int i = 0; i < ss->n; i++) {
        int rc = ss->v[i]->ops->emit(ss->v[i], ev);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int crw_sinks_commit(crw_sinks_t *ss, uint64_t txn) {
    for (int i = 0; i < ss->n; i++) {
        int rc = ss->v[i]->ops->commit(ss->v[i], txn);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int crw_sinks_poll(crw_sinks_t *ss, int timeout_ms) {
    for (int i = 0; i < ss->n; i++)
        if (ss->v[i]->ops->poll) {
            int rc = ss->v[i]->ops->poll(ss->v[i], timeout_ms);
            if (rc < 0)
                return rc;
        }
    return 0;
}

int crw_sinks_drain(crw_sinks_t *ss, int timeout_ms) {
    int rc = 0;
    for (int i = 0; i < ss->n; i++)
        if (ss->v[i]->ops->drain) {
            int r = ss->v[i]->ops->drain(ss->v[i], timeout_ms);
            if (r < 0)
                rc = r;
        }
    return rc;
}

int crw_sinks_resume_position(crw_sinks_t *ss, uint64_t *position) {
    *position = 0;
    for (int i = 0; i < ss->n; i++)
        if (ss->v[i]->ops->resume_position) {
            uint64_t p = 0;
            int rc = ss->v[i]->ops->resume_position(ss->v[i], &p);
            if (rc < 0)
                return rc;
            if (p > *position)
                *position = p;
        }
    return 0;
}

void crw_sinks_close(crw_sinks_t *ss) {
    for (int i = 0; i < ss->n; i++)
        ss->v[i]->ops->destroy(ss->v[i]);
    free(ss->v);
    *ss = (crw_sinks_t){0};
}
