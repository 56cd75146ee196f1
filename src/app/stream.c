/*
 * stream.c — the stream service: wires a source, the mapper and the sinks,
 * and reconnects (see stream.h; docs/architecture.md).
 *
 * Acknowledgement rule (Bottled Water's): a transaction is closed in the
 * pipeline only after every sink's commit() returned, and the position
 * confirmed to the source is the pipeline's: the end of the last
 * transaction every sink acknowledged.  A transaction cut short by a lost
 * connection or a stop is abandoned, never confirmed: the source sends it
 * again.
 */
#include "app/stream.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/deadletter.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "core/pipeline.h"
#include "decode/types.h"
#include "map/cache.h"
#include "map/mapper.h"
#include "map/relmap.h"
#include "sink/sinks.h"
#include "source/source.h"

typedef struct {
    const crw_config_t *conf;
    crw_source_t *src;
    crw_pipeline_t *pipeline;
    crw_sinks_t sinks;
    crw_sink_env_t env;
    crw_deadletter_t *deadletter;
    uint64_t skip_position;   /* changes committed at or below it are in the sinks already */
    bool skipping;            /* the open transaction is at or below skip_position */
    crw_typecache_t *types;
    crw_relmap_t *relmap;
    crw_strlist_t pk;         /* scratch: a relation's primary key */
    crw_cache_t *cache;
    crw_mapper_t *mapper;
    crw_mapped_t mapped;
    crw_txn_ctx_t tx;
    uint64_t seq;
    bool txn_open;
    crw_buf_t raw;            /* a dead-lettered change */
    char err[1024];
    uint64_t events;
    uint64_t unmapped;
    uint64_t commits;         /* transactions committed on the current connection */
} stream_t;

/* Tells the source what the pipeline confirmed. */
static void confirm(stream_t *st) { crw_source_confirm(st->src, crw_pipeline_confirmed(st->pipeline)); }

/* The type cache's look-up: the source's catalog of the moment (source=auto has one only once it chose a kind). */
static int lookup_type(void *opaque, uint32_t oid, crw_pgtype_row_t *row) {
    crw_catalog_t *cat = crw_source_catalog(((stream_t *)opaque)->src);
    return cat ? crw_catalog_type(cat, oid, row) : -1;
}

/* The mapper's view of rel, prepared (with its primary key from the catalog) when new or changed. */
static int info_for(stream_t *st, const crw_relation_t *rel, crw_relinfo_t **out) {
    if ((*out = crw_relmap_get(st->relmap, rel)))
        return 0;
    crw_strlist_clear(&st->pk);
    if (crw_relmap_watches(st->relmap, rel->nspname, rel->relname))
        crw_catalog_primary_key(crw_source_catalog(st->src), rel->relid, &st->pk);
    return crw_relmap_prepare(st->relmap, rel, crw_source_dbname(st->src), (const char *const *)st->pk.v, st->pk.n,
                              out, st->err, sizeof st->err);
}

/* ---- the resource cache's listing ------------------------------------ */

typedef struct {
    stream_t *st;
    const crw_relinfo_t *ri;
    long seeded;
} seed_t;

static int seed_row(void *opaque, const crw_pgo_tuple_t *row) {
    seed_t *sd = opaque;
    char why[256];
    if (crw_mapper_seed(sd->st->mapper, sd->ri, row, why, sizeof why) == 0)
        sd->seeded++;
    return 0;
}

/*
 * The source's snapshot callback: lists every watched table once, before
 * streaming, to fill the resource cache.
 */
static int on_snapshot(void *opaque, crw_catalog_t *cat, bool consistent) {
    stream_t *st = opaque;
    const crw_config_t *cf = st->conf;
    crw_info("cache: listing the watched tables (%s)",
             consistent ? "in the new slot's snapshot" : "current state; the slot existed already");
    for (int i = 0; i < cf->nresources; i++) {
        const crw_resource_conf_t *rs = &cf->resources[i];
        if (crw_config_table_named_before(cf, i))
            continue;
        char why[512];
        const crw_relation_t *rel = crw_catalog_describe(cat, rs->schema, rs->table, why, sizeof why);
        if (!rel) {
            crw_warn("cache: %s", why);
            continue;
        }
        crw_relinfo_t *ri;
        int rc = info_for(st, rel, &ri);
        if (rc < 0)
            return rc;
        seed_t sd = {st, ri, 0};
        long rows = crw_catalog_scan(cat, rel, seed_row, &sd, why, sizeof why);
        if (rows < 0)
            crw_warn("cache seed of %s.%s failed: %s", rel->nspname, rel->relname, why);
        else
            crw_info("cache: %ld of %ld rows of %s.%s", sd.seeded, rows, rel->nspname, rel->relname);
    }
    return 0;
}

/* ---- the source's callbacks ------------------------------------------- */

static int on_begin(void *opaque, const crw_src_txn_t *t) {
    stream_t *st = opaque;
    st->seq = crw_pipeline_begin(st->pipeline);
    st->txn_open = true;
    st->skipping = t->position <= st->skip_position;
    crw_txn_init(&st->tx, t->lsn, t->xid, t->commit_time);
    st->tx.position = t->position;
    return 0;
}

static int on_commit(void *opaque, uint64_t end) {
    stream_t *st = opaque;
    int rc;
    if (!st->txn_open)
        return 0;
    if (!st->skipping && (rc = crw_sinks_commit(&st->sinks, st->seq)) < 0) {
        snprintf(st->err, sizeof st->err, "a sink failed to commit a transaction");
        return rc;
    }
    crw_pipeline_commit(st->pipeline, st->seq, end);
    st->tx.last_end = end;
    st->txn_open = false;
    st->commits++;
    return 0;
}

/* A change that cannot be mapped: its raw row goes to the dead-letter file. */
static int dead_letter(stream_t *st, const crw_relinfo_t *ri, const crw_change_t *ch, const char *why) {
    st->unmapped++;
    crw_mapper_raw(&st->raw, ch);
    crw_deadletter_rec_t rec = {why, ri->source, st->tx.lsn_str, st->tx.xid, st->tx.ordinal, st->raw.data,
                                st->raw.len};
    crw_warn("cannot map a change of %s.%s at %s/%u (%s): dead-lettered", ch->rel->nspname, ch->rel->relname,
             st->tx.lsn_str, st->tx.ordinal, why);
    int rc = crw_deadletter_write(st->deadletter, &rec);
    if (rc < 0)
        snprintf(st->err, sizeof st->err, "cannot write the dead-letter file %s", st->conf->deadletter_file);
    return rc;
}

static int on_change(void *opaque, const crw_change_t *ch) {
    stream_t *st = opaque;
    st->tx.ordinal++; /* every change counts, watched or not: ids stay stable */
    crw_relinfo_t *ri;
    int rc = info_for(st, ch->rel, &ri);
    if (rc < 0)
        return rc;
    if (!ri->watched || st->skipping)
        return 0;
    char why[512];
    rc = crw_mapper_change(st->mapper, ri, ch, &st->tx, &st->mapped, why, sizeof why);
    if (rc == CRW_ERR_UNMAPPED)
        return dead_letter(st, ri, ch, why);
    if (rc < 0)
        return rc;
    for (int i = 0; i < st->mapped.n; i++) {
        crw_event_t *ev = &st->mapped.ev[i];
        ev->txn = st->seq;
        st->events++;
        if ((rc = crw_sinks_emit(&st->sinks, ev)) < 0)
            return rc;
    }
    return 0;
}

static void on_tick(void *opaque, uint64_t position) {
    stream_t *st = opaque;
    /* Nothing open at the source: when nothing is unacknowledged either, follow it. */
    crw_pipeline_follow(st->pipeline, position);
    confirm(st);
}

static void on_invalidate(void *opaque, uint32_t typoid) {
    stream_t *st = opaque;
    crw_typecache_forget(st->types, typoid);
    crw_relmap_invalidate(st->relmap);
}

/* A sink blocked by backpressure: what it acknowledged meanwhile is confirmed, the source kept alive. */
static void keepalive(void *opaque) {
    stream_t *st = opaque;
    confirm(st);
    crw_source_keepalive(st->src);
}

/* ---- the service loop -------------------------------------------------- */

/* Sleeps ms, waking early when a stop is requested. */
static void nap(int ms, volatile sig_atomic_t *stop) {
    while (ms > 0 && !(stop && *stop)) {
        int step = ms < 100 ? ms : 100;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* Logs why, sleeps a jittered backoff (half to all of it), doubles it up to the cap. */
static void retry_wait(stream_t *st, int *backoff, volatile sig_atomic_t *stop, const char *what) {
    int sleep_ms = *backoff / 2 + rand() % (*backoff / 2 + 1);
    crw_warn("%s; %s in %d ms", st->err, what, sleep_ms);
    st->err[0] = '\0'; /* said: the next failure brings its own */
    nap(sleep_ms, stop);
    *backoff = *backoff * 2 > st->conf->reconnect_max_ms ? st->conf->reconnect_max_ms : *backoff * 2;
}

/* Streams on one connection until it drops, a stop, endpos or an error. */
static int stream_connected(stream_t *st, const crw_stream_opts_t *opts) {
    int rc;
    int64_t stop_deadline = 0;
    for (;;) {
        if (opts->stop && *opts->stop) {
            /* A transaction half handed to the sinks would be sent again: read
             * on to its commit (for a while), then stop. */
            if (!st->txn_open && !crw_source_in_txn(st->src))
                return 0;
            if (!stop_deadline) {
                stop_deadline = crw_clock_mono_ms() + 5000;
                crw_source_stop_after_commit(st->src);
                crw_info("stopping: finishing the open transaction first");
            } else if (crw_clock_mono_ms() > stop_deadline)
                return 0;
        }
        /* While deliveries are in flight, come back soon to apply their acks. */
        rc = crw_source_poll(st->src, crw_pipeline_idle(st->pipeline) ? 200 : 10, st->err, sizeof st->err);
        if (rc < 0)
            return rc;
        if ((rc = crw_sinks_poll(&st->sinks, 0)) < 0)
            return rc;
        confirm(st);
        if (opts->progress)
            opts->progress(opts->arg, st->src);
        if (crw_source_at_end(st->src) && !st->txn_open && crw_pipeline_idle(st->pipeline)) {
            /* Everything committed up to endpos arrived (commit order) and was
             * acknowledged: the slot may move to endpos itself. */
            if (opts->endpos)
                crw_pipeline_follow(st->pipeline, opts->endpos);
            confirm(st);
            return CRW_ERR_STOPPED;
        }
        if (stop_deadline && crw_source_at_end(st->src) && !st->txn_open)
            return CRW_ERR_STOPPED; /* the open transaction committed; acks are drained below */
    }
}

int crw_stream_run(const crw_config_t *conf, const crw_stream_opts_t *opts, char *errstr, size_t n) {
    stream_t st = {0};
    st.conf = conf;
    st.pipeline = crw_pipeline_new(0);
    st.cache = conf->cache_max_entries > 0 ? crw_cache_new((uint32_t)conf->cache_max_entries) : NULL;
    st.mapper = crw_mapper_new(conf, st.cache);
    st.deadletter = crw_deadletter_new(conf->deadletter_file);
    st.env = (crw_sink_env_t){conf, st.pipeline, st.deadletter, keepalive, &st, opts->stop, opts->checkpoint_id};
    crw_source_events_t ev = {.begin = on_begin,
                              .change = on_change,
                              .commit = on_commit,
                              .tick = on_tick,
                              .invalidate = on_invalidate,
                              .snapshot = st.cache && conf->cache_seed ? on_snapshot : NULL,
                              .opaque = &st};
    crw_source_opts_t so = {opts->conninfo, opts->endpos};
    int rc = 0;
    st.src = opts->source_new ? opts->source_new(opts->arg, conf, &so, &ev, &rc, errstr, n)
                              : crw_source_open(conf, &so, &ev, &rc, errstr, n);
    if (!st.src)
        goto out;
    st.types = crw_typecache_new(lookup_type, &st);
    st.relmap = crw_relmap_new(conf, st.types);
    if ((rc = crw_sinks_open(&st.sinks, &st.env, errstr, n)) < 0)
        goto out;
    if (opts->extra_sink_new) {
        crw_sink_t *x = opts->extra_sink_new(&st.env, opts->extra_sink_arg, errstr, n);
        if (!x) {
            rc = CRW_ERR_SINK;
            goto out;
        }
        crw_sinks_add(&st.sinks, x);
    }

    int backoff = 100;
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (;;) {
        if (opts->stop && *opts->stop) {
            rc = 0;
            break;
        }
        rc = crw_source_start(st.src, st.err, sizeof st.err);
        if (rc < 0) {
            if (!crw_err_retriable(rc))
                break;
            retry_wait(&st, &backoff, opts->stop, "retrying");
            continue;
        }
        st.commits = 0;
        int64_t started = crw_clock_mono_ms();
        if ((rc = crw_sinks_resume_position(&st.sinks, &st.skip_position)) < 0) {
            snprintf(st.err, sizeof st.err, "a sink could not report what it already holds");
            break;
        }
        if (st.skip_position && (rc = crw_source_seek(st.src, st.skip_position, st.err, sizeof st.err)) < 0) {
            crw_source_close(st.src);
            break;
        }
        rc = stream_connected(&st, opts);
        if (st.txn_open) {
            crw_pipeline_abandon(st.pipeline, st.seq);
            st.txn_open = false;
        }
        if (rc == CRW_ERR_CONN) {
            crw_source_close(st.src);
            /* A connection that delivered work or lived a while was healthy:
             * start the backoff over.  One that fails at once backs off. */
            if (st.commits > 0 || crw_clock_mono_ms() - started > 10000)
                backoff = 100;
            if (!st.err[0]) /* a sink's restart: it said why */
                snprintf(st.err, sizeof st.err, "a sink asked for the changes again from the confirmed position");
            retry_wait(&st, &backoff, opts->stop, "reconnecting");
            continue;
        }
        if (rc == 0 || rc == CRW_ERR_STOPPED) {
            /* Stopped or at endpos: let in-flight deliveries land, then the
             * source takes the final confirmed position. */
            if (crw_sinks_drain(&st.sinks, 10000) < 0)
                crw_warn("not every sink drained; unacknowledged changes will be sent again");
            confirm(&st);
            if (crw_source_finish(st.src, 5000) < 0)
                crw_warn("the final confirmed position may not have reached the server");
            rc = 0;
        }
        break;
    }
    if (rc < 0)
        snprintf(errstr, n, "%s", st.err);
    uint64_t c = crw_pipeline_confirmed(st.pipeline);
    char cpos[64];
    crw_source_format_position(st.src, c, cpos, sizeof cpos);
    crw_info("stopped: %" PRIu64 " events, confirmed %s%s", st.events, cpos,
             st.unmapped ? ", some changes were dead-lettered" : "");
out:
    crw_sinks_close(&st.sinks);
    if (st.src && opts->finished)
        opts->finished(opts->arg, st.src);
    crw_source_destroy(st.src);
    crw_deadletter_destroy(st.deadletter);
    crw_relmap_destroy(st.relmap);
    crw_typecache_destroy(st.types);
    crw_pipeline_destroy(st.pipeline);
    crw_mapper_destroy(st.mapper);
    crw_cache_destroy(st.cache);
    crw_buf_free(&st.raw);
    crw_strlist_clear(&st.pk);
    return rc;
}
