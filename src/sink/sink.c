/*
 * sink.c — fan-out over the configured sinks.
 */
#include "sink/sink.h"

#include <stdio.h>
#include <unistd.h>

#include "core/err.h"
#include "sink/kafka.h"
#include "sink/handler.h"

int crw_sinks_open(crw_sinks_t *ss, const crw_sink_env_t *env, char *errstr, size_t n) {
    ss->n = 0;
    if (env->conf->sinks & CRW_SINK_STDOUT) {
        crw_sink_t *s = crw_sink_stdout_new(env, STDOUT_FILENO, errstr, n);
        if (!s)
            return CRW_ERR_SINK;
        ss->v[ss->n++] = s;
    }
    /* --- kafka --- */
    if (env->conf->sinks & CRW_SINK_KAFKA) {
        int err;
        crw_sink_t *s = crw_sink_kafka_new(env, &err, errstr, n);
        if (!s)
            return err;
        ss->v[ss->n++] = s;
    }

    /* --- exec, plugin --- */
    for (unsigned bit = CRW_SINK_EXEC; bit <= CRW_SINK_PLUGIN; bit <<= 1)
        if (env->conf->sinks & bit) {
            int err = CRW_ERR_SINK;
            crw_sink_t *s = bit == CRW_SINK_EXEC ? crw_sink_exec_new(env, &err, errstr, n)
                                                 : crw_sink_plugin_new(env, &err, errstr, n);
            if (!s)
                return err;
            ss->v[ss->n++] = s;
        }
    if (env->conf->sinks == 0)
        return 0; /* embedding (crwatch.h): the program's callbacks are the only sink */

    if (ss->n == 0) {
        snprintf(errstr, n, "sink: no usable sink configured");
        return CRW_ERR_CONFIG;
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

int crw_sinks_resume_lsn(crw_sinks_t *ss, uint64_t *lsn) {
    *lsn = 0;
    for (int i = 0; i < ss->n; i++)
        if (ss->v[i]->ops->resume_lsn) {
            uint64_t l = 0;
            int rc = ss->v[i]->ops->resume_lsn(ss->v[i], &l);
            if (rc < 0)
                return rc;
            if (l > *lsn)
                *lsn = l;
        }
    return 0;
}

void crw_sinks_close(crw_sinks_t *ss) {
    for (int i = 0; i < ss->n; i++)
        ss->v[i]->ops->destroy(ss->v[i]);
    ss->n = 0;
}
