/*
 * sources.c — the registry of source kinds, and source=auto (see source.h).
 *
 * auto is logical replication when the database allows it (wal_level=logical
 * and a role that may replicate), else the polling source, with one warning
 * naming why.  It decides at its first start, by asking the database, and
 * delegates every op to the kind it chose from then on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "source/session.h"
#include "source/source.h"

/* The registry: a new source kind is one file defining its constructor, and one line in each list below. */
CRW_SOURCE_CONSTRUCTOR(crw_source_logical_new);
CRW_SOURCE_CONSTRUCTOR(crw_source_poll_new);

static const struct {
    crw_source_kind_t kind;
    crw_source_new_fn open;
} registry[] = {
    {CRW_SOURCE_LOGICAL, crw_source_logical_new},
    {CRW_SOURCE_POLL, crw_source_poll_new},
};

static crw_source_new_fn lookup(crw_source_kind_t kind) {
    for (size_t i = 0; i < sizeof registry / sizeof registry[0]; i++)
        if (registry[i].kind == kind)
            return registry[i].open;
    return NULL;
}

/* Why exactly-once cannot be had: a table polled by a column is listed again at every start. NULL: none. */
static const char *stamp_table(const crw_config_t *conf) {
    for (int i = 0; i < conf->nresources; i++)
        if (conf->resources[i].poll_column && *conf->resources[i].poll_column)
            return "a table polled by a column (resource.<id>.poll.column) is listed again at every start, so its "
                   "events can come twice; poll it by txid (crwatch.manage()) or use delivery=at-least-once";
    return NULL;
}

int crw_sources_check(const crw_config_t *conf, char *errstr, size_t n) {
    if (conf->source != CRW_SOURCE_AUTO && !lookup(conf->source)) {
        snprintf(errstr, n, "source=%s is not available in this version of crwatch",
                 crw_config_source_name(conf->source));
        return CRW_ERR_CONFIG;
    }
    if (conf->source == CRW_SOURCE_POLL && conf->delivery == CRW_DELIVERY_EXACTLY_ONCE && stamp_table(conf)) {
        snprintf(errstr, n, "delivery=exactly-once: %s", stamp_table(conf));
        return CRW_ERR_CONFIG;
    }
    if (conf->snapshot_mode == CRW_SNAPSHOT_INCREMENTAL && conf->source == CRW_SOURCE_POLL) {
        snprintf(errstr, n, "snapshot.mode=incremental writes its watermarks through the slot: it needs "
                            "source=logical (or auto); with polling use snapshot.mode=initial or crwatch backfill");
        return CRW_ERR_CONFIG;
    }
    if (conf->source == CRW_SOURCE_POLL && conf->nresources == 0) {
        snprintf(errstr, n, "source=poll reads the tables it is told: set tables= or resource.<id>.table");
        return CRW_ERR_CONFIG;
    }
    return 0;
}

int crw_source_choose(const crw_config_t *conf, const char *conninfo, crw_source_kind_t *kind, char *why, size_t n) {
    if (conf->source != CRW_SOURCE_AUTO) {
        *kind = conf->source;
        snprintf(why, n, "source=%s", crw_config_source_name(conf->source));
        return 0;
    }
    crw_session_t ses;
    crw_session_init(&ses, conf, conninfo);
    int rc = crw_session_open_sql(&ses, why, n);
    if (rc == 0) {
        rc = crw_session_logical_ready(&ses, why, n);
        /* Polling needs a primary: it writes its watermark, and a standby's snapshots do not list the
         * primary's open transactions (their rows would pass for seen). */
        bool standby = false;
        char e2[256];
        if (rc == CRW_ERR_PREREQ && crw_session_standby(&ses, &standby, e2, sizeof e2) == 0 && standby) {
            size_t l = strlen(why);
            snprintf(why + l, n - l, "; and polling needs the primary: point crwatch at it");
            crw_session_free(&ses);
            return CRW_ERR_PREREQ;
        }
        if (rc == 0) {
            *kind = CRW_SOURCE_LOGICAL;
            snprintf(why, n, "wal_level=logical and the role may replicate");
        } else if (rc == CRW_ERR_PREREQ) {
            *kind = CRW_SOURCE_POLL; /* why: what logical replication lacks */
            rc = 0;
        }
    }
    crw_session_free(&ses);
    return rc;
}

/* ---- source=auto --------------------------------------------------------- */

typedef struct {
    crw_source_t base;
    const crw_config_t *conf;
    crw_source_opts_t opts;
    crw_source_events_t ev;
    crw_source_t *chosen; /* NULL until the first start decided */
} auto_t;

#define A(s) ((auto_t *)(s))

static int auto_start(crw_source_t *base, char *errstr, size_t n) {
    auto_t *a = A(base);
    if (!a->chosen) {
        crw_source_kind_t kind;
        char why[512];
        int rc = crw_source_choose(a->conf, a->opts.conninfo, &kind, why, sizeof why);
        if (rc < 0) {
            snprintf(errstr, n, "%s", why);
            return rc;
        }
        if (kind == CRW_SOURCE_POLL && a->conf->delivery == CRW_DELIVERY_EXACTLY_ONCE && stamp_table(a->conf)) {
            snprintf(errstr, n, "source=auto polls (%s), and delivery=exactly-once: %s", why, stamp_table(a->conf));
            return CRW_ERR_CONFIG;
        }
        if (kind == CRW_SOURCE_POLL)
            crw_warn("source=auto: polling, not logical replication: %s", why);
        int err = CRW_ERR_INTERNAL;
        a->chosen = lookup(kind)(a->conf, &a->opts, &a->ev, &err, errstr, n);
        if (!a->chosen)
            return err;
    }
    return crw_source_start(a->chosen, errstr, n);
}

/* Before the first start nothing is connected: the ops a driver may call then answer as a closed source. */
static int auto_poll(crw_source_t *s, int t, char *e, size_t n) {
    return A(s)->chosen ? crw_source_poll(A(s)->chosen, t, e, n) : CRW_ERR_CONN;
}
static void auto_confirm(crw_source_t *s, uint64_t pos) {
    if (A(s)->chosen)
        crw_source_confirm(A(s)->chosen, pos);
}
static int auto_seek(crw_source_t *s, uint64_t pos, char *e, size_t n) {
    return A(s)->chosen ? crw_source_seek(A(s)->chosen, pos, e, n) : 0;
}
static void auto_keepalive(crw_source_t *s) {
    if (A(s)->chosen)
        crw_source_keepalive(A(s)->chosen);
}
static void auto_stop_after_commit(crw_source_t *s) {
    if (A(s)->chosen)
        crw_source_stop_after_commit(A(s)->chosen);
}
static bool auto_at_end(const crw_source_t *s) {
    const auto_t *a = (const auto_t *)s;
    return a->chosen && crw_source_at_end(a->chosen);
}
static bool auto_in_txn(const crw_source_t *s) {
    const auto_t *a = (const auto_t *)s;
    return a->chosen && crw_source_in_txn(a->chosen);
}
static int auto_finish(crw_source_t *s, int t) { return A(s)->chosen ? crw_source_finish(A(s)->chosen, t) : 0; }
static void auto_close(crw_source_t *s) {
    if (A(s)->chosen)
        crw_source_close(A(s)->chosen);
}
static const char *auto_dbname(const crw_source_t *s) {
    const auto_t *a = (const auto_t *)s;
    return a->chosen ? crw_source_dbname(a->chosen) : "";
}
static crw_catalog_t *auto_catalog(crw_source_t *s) { return A(s)->chosen ? crw_source_catalog(A(s)->chosen) : NULL; }
static void auto_format_position(const crw_source_t *s, uint64_t position, char *buf, size_t n) {
    const auto_t *a = (const auto_t *)s;
    if (a->chosen)
        crw_source_format_position(a->chosen, position, buf, n);
    else
        snprintf(buf, n, "%llu", (unsigned long long)position);
}
static void auto_destroy(crw_source_t *s) {
    crw_source_destroy(A(s)->chosen);
    free(s);
}

static const crw_source_ops_t auto_ops = {
    .name = "auto",
    .start = auto_start,
    .poll = auto_poll,
    .confirm = auto_confirm,
    .keepalive = auto_keepalive,
    .stop_after_commit = auto_stop_after_commit,
    .at_end = auto_at_end,
    .in_txn = auto_in_txn,
    .finish = auto_finish,
    .close = auto_close,
    .dbname = auto_dbname,
    .catalog = auto_catalog,
    .seek = auto_seek,
    .format_position = auto_format_position,
    .destroy = auto_destroy,
};

crw_source_t *crw_source_open(const crw_config_t *conf, const crw_source_opts_t *opts, const crw_source_events_t *ev,
                              int *err, char *errstr, size_t n) {
    *err = crw_sources_check(conf, errstr, n);
    if (*err < 0)
        return NULL;
    *err = CRW_ERR_INTERNAL;
    if (conf->source != CRW_SOURCE_AUTO)
        return lookup(conf->source)(conf, opts, ev, err, errstr, n);
    auto_t *a = crw_calloc(1, sizeof *a);
    a->base.ops = &auto_ops;
    a->conf = conf;
    a->opts = *opts;
    a->ev = *ev;
    return &a->base;
}
