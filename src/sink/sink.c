/*
 * sink.c — fan-out over the configured sinks.
 */
#include "sink/sink.h"

#include <stdio.h>
#include <unistd.h>

#include "core/err.h"

int crw_sinks_open(crw_sinks_t *ss, const crw_config_t *conf, crw_pipeline_t *p, char *errstr, size_t n) {
    ss->n = 0;
    if (conf->sinks & CRW_SINK_STDOUT) {
        crw_sink_t *s = crw_sink_stdout_new(p, STDOUT_FILENO, errstr, n);
        if (!s)
            return CRW_ERR_SINK;
        ss->v[ss->n++] = s;
    }
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

void crw_sinks_close(crw_sinks_t *ss) {
    for (int i = 0; i < ss->n; i++)
        ss->v[i]->ops->destroy(ss->v[i]);
    ss->n = 0;
}
