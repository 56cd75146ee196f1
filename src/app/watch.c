/*
 * watch.c — the embedding API (include/crwatch/crwatch.h) over the stream
 * service: crw_stream_run with one extra sink, a local handler sink
 * (sink/local.h) whose deliver() dispatches each event to the registered
 * callbacks.
 */
#include <crwatch/crwatch.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "app/stream.h"
#include "sink/local.h"
#include "sink/sinks.h"
#include "source/source.h"

_Static_assert((int)CRW_WATCH_ERR_CONFIG == (int)CRW_ERR_CONFIG && (int)CRW_WATCH_ERR_PREREQ == (int)CRW_ERR_PREREQ &&
                   (int)CRW_WATCH_ERR_CONN == (int)CRW_ERR_CONN && (int)CRW_WATCH_ERR_IO == (int)CRW_ERR_IO &&
                   (int)CRW_WATCH_ERR_SINK == (int)CRW_ERR_SINK &&
                   (int)CRW_WATCH_ERR_SLOT_LOST == (int)CRW_ERR_SLOT_LOST && (int)CRW_WATCH_ERR_AUTH == (int)CRW_ERR_AUTH,
               "crwatch.h error codes must equal core/err.h's");

typedef struct {
    char *kind; /* NULL: every kind */
    crw_watch_handlers_t h;
    void *opaque;
} registration_t;

struct crw_watch {
    crw_config_t *conf;
    char *conninfo;
    uint64_t endpos;
    bool sink_set;     /* `sink` given: keep the configured sinks beside the callbacks */
    bool ran;
    registration_t *regs;
    int nregs;
    volatile sig_atomic_t stop;
};

crw_watch_t *crw_watch_new(void) {
    crw_watch_t *w = crw_calloc(1, sizeof *w);
    w->conf = crw_config_new();
    return w;
}

void crw_watch_destroy(crw_watch_t *w) {
    if (!w)
        return;
    for (int i = 0; i < w->nregs; i++)
        free(w->regs[i].kind);
    free(w->regs);
    free(w->conninfo);
    crw_config_destroy(w->conf);
    free(w);
}

int crw_watch_set(crw_watch_t *w, const char *key, const char *value, char *errstr, size_t n) {
    if (w->ran) {
        snprintf(errstr, n, "%s: the watch has already run", key);
        return CRW_ERR_CONFIG;
    }
    if (!strcmp(key, "conninfo")) {
        free(w->conninfo);
        w->conninfo = crw_strdup(value);
        return 0;
    }
    if (!strcmp(key, "endpos")) {
        if (crw_lsn_parse(value, &w->endpos) < 0 || w->endpos == 0) {
            snprintf(errstr, n, "endpos: '%s' is not an LSN like 0/16B3748", value);
            return CRW_ERR_CONFIG;
        }
        return 0;
    }
    int rc = crw_config_set(w->conf, key, value, errstr, n);
    if (rc == 0 && !strcmp(key, "sink"))
        w->sink_set = true;
    return rc;
}

static int watch_set_cb(void *arg, const char *key, const char *value, char *errstr, size_t n) {
    return crw_watch_set(arg, key, value, errstr, n);
}

int crw_watch_load(crw_watch_t *w, const char *text, char *errstr, size_t n) {
    return crw_props_parse(text, NULL, watch_set_cb, w, errstr, n);
}

int crw_watch_load_file(crw_watch_t *w, const char *path, char *errstr, size_t n) {
    return crw_props_load_file(path, watch_set_cb, w, errstr, n);
}

int crw_watch_add_handlers(crw_watch_t *w, const char *kind, const crw_watch_handlers_t *h, void *opaque,
                           char *errstr, size_t n) {
    if (w->ran) {
        snprintf(errstr, n, "handlers must be added before crw_watch_run");
        return CRW_ERR_CONFIG;
    }
    if (!h || !(h->on_added || h->on_modified || h->on_deleted || h->on_truncated)) {
        snprintf(errstr, n, "handlers for kind %s: every callback is NULL", kind ? kind : "*");
        return CRW_ERR_CONFIG;
    }
    w->regs = crw_realloc(w->regs, sizeof *w->regs * (size_t)(w->nregs + 1));
    registration_t *r = &w->regs[w->nregs++];
    r->kind = kind && strcmp(kind, "*") ? crw_strdup(kind) : NULL;
    r->h = *h;
    r->opaque = opaque;
    return 0;
}

/* Worker thread: every registration matching the kind, in order, until one is not OK. */
static int watch_deliver(void *impl, const crw_handler_event_t *ev, char *reason, size_t n) {
    crw_watch_t *w = impl;
    for (int i = 0; i < w->nregs; i++) {
        const registration_t *r = &w->regs[i];
        if (r->kind && strcmp(r->kind, ev->kind) != 0)
            continue;
        crw_watch_cb_t cb = NULL;
        if (!strcmp(ev->type, "ADDED") || !strcmp(ev->type, "SYNC"))
            cb = r->h.on_added;
        else if (!strcmp(ev->type, "MODIFIED"))
            cb = r->h.on_modified;
        else if (!strcmp(ev->type, "DELETED"))
            cb = r->h.on_deleted;
        else if (!strcmp(ev->type, "TRUNCATED"))
            cb = r->h.on_truncated;
        if (!cb)
            continue;
        int rc = cb(ev, r->opaque, reason, n);
        if (rc != CRW_HANDLER_OK)
            return rc;
    }
    return CRW_HANDLER_OK;
}

static crw_sink_t *watch_sink_new(const crw_sink_env_t *env, void *arg, char *errstr, size_t n) {
    crw_watch_t *w = arg;
    crw_local_impl_t impl = {.name = "callbacks", .wants_objects = true, .deliver = watch_deliver, .impl = w};
    int err;
    return crw_local_sink_new(env, &impl, &w->stop, &err, errstr, n);
}

int crw_watch_run(crw_watch_t *w, char *errstr, size_t n) {
    if (w->ran) {
        snprintf(errstr, n, "a watch runs once: create a new one");
        return CRW_ERR_CONFIG;
    }
    w->ran = true;
    int rc = crw_config_finalize(w->conf, errstr, n);
    if (rc < 0 || (rc = crw_sinks_check(w->conf, errstr, n)) < 0 || (rc = crw_sources_check(w->conf, errstr, n)) < 0)
        return rc;
    if (!w->sink_set)
        crw_strlist_clear(&w->conf->sinks); /* the callbacks are the only sink */
    if (w->nregs == 0 && w->conf->sinks.n == 0) {
        snprintf(errstr, n, "no handlers registered (crw_watch_add_handlers) and no sink set");
        return CRW_ERR_CONFIG;
    }
    crw_log_level = w->conf->log_level;
    crw_stream_opts_t so = {.conninfo = w->conninfo,
                            .endpos = w->endpos,
                            .stop = &w->stop,
                            .extra_sink_new = w->nregs ? watch_sink_new : NULL,
                            .extra_sink_arg = w};
    return crw_stream_run(w->conf, &so, errstr, n);
}

void crw_watch_stop(crw_watch_t *w) { w->stop = 1; }

const char *crw_watch_err_str(int err) { return crw_err_str(err); }

int crw_watch_exit_code(int err) { return crw_err_exit_code(err); }
