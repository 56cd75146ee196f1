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

#include <errno.h>
#include <fcntl.h>
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
#include "core/metrics.h"
#include "core/pipeline.h"
#include "decode/types.h"
#include "app/ops.h"
#include "app/watchapi.h"
#include "map/cache.h"
#include "map/mapper.h"
#include "map/relmap.h"
#include "sink/sinks.h"
#include "core/strmap.h"
#include "source/admin.h"
#include "source/incremental.h"
#include "source/snapshot.h"
#include "source/source.h"

typedef struct {
    const crw_config_t *conf;
    const char *conninfo;
    volatile sig_atomic_t *stop;
    const crw_stream_opts_t *opts;
    crw_source_events_t ev;   /* the source's callbacks (an initial snapshot's source gets them too) */
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
    crw_wapi_t *watch;       /* the watch API (watch.listen); NULL: off */
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
    uint64_t txn_events;      /* st->events when the open transaction began */
    bool at_end_done;         /* crw_stream_opts_t.at_end ran */
    bool idle_due;            /* a transaction reached the sinks since they were last told the stream is idle */
    /* incremental snapshots (DBLog): the chunk read between two watermarks, awaiting its high one */
    crw_incr_t *incr;
    uint64_t window;          /* its number; 0: none */
    bool window_open;         /* its low watermark came */
    crw_strmap_t *changed;    /* keys of that table changed since the window was made */
    uint32_t recent[256];      /* xids of the last transactions delivered (a ring): the chunk's snapshot must see them */
    int nrecent, recent_at;
} stream_t;

/* Tells the source what the pipeline confirmed. */
static void confirm(stream_t *st) {
    crw_source_confirm(st->src, crw_pipeline_confirmed(st->pipeline));
    crw_wapi_confirmed(st->watch, crw_pipeline_confirmed(st->pipeline)); /* watchers see what is acknowledged */
}

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
    bool cache; /* fill the cache */
} seed_t;

static int seed_row(void *opaque, const crw_pgo_tuple_t *row) {
    seed_t *sd = opaque;
    stream_t *st = sd->st;
    char why[256];
    if (sd->cache && crw_mapper_seed(st->mapper, sd->ri, row, why, sizeof why) == 0)
        sd->seeded++;
    if (st->watch) { /* the watch API's store: the object as a SYNC event, shown to no sink */
        crw_change_t ch = {.op = CRW_OP_READ, .rel = sd->ri->rel, .newtup = row};
        if (crw_mapper_change(st->mapper, sd->ri, &ch, &st->tx, &st->mapped, why, sizeof why) == 0)
            for (int i = 0; i < st->mapped.n; i++)
                crw_wapi_seed(st->watch, &st->mapped.ev[i], st->tx.position);
    }
    return 0;
}

static int incr_queue(stream_t *st, const char *schema, const char *table);

/* ---- snapshot.mode=initial (docs/snapshots.md) --------------------------- */

/* The file recording an initial snapshot: <snapshot.state.file>.initial, or crwatch-initial.<slot.name>.state. */
static const char *initial_file(const crw_config_t *cf, char *buf, size_t n) {
    if (*cf->snapshot_state_file)
        snprintf(buf, n, "%s.initial", cf->snapshot_state_file);
    else
        snprintf(buf, n, "crwatch-initial.%s.state", cf->slot_name);
    return buf;
}

/* Writes line to path (fresh: the file starts over), mode 0600, synced.  @returns 0 or -1 (logged). */
static int note_line(const char *path, const char *line, bool fresh) {
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (fresh ? O_TRUNC : O_APPEND), 0600);
    size_t len = strlen(line);
    bool ok = fd >= 0 && write(fd, line, len) == (ssize_t)len && fsync(fd) == 0;
    if (fd >= 0)
        ok = close(fd) == 0 && ok;
    if (!ok)
        crw_warn("snapshot.mode=initial: cannot write %s: %s", path, strerror(errno));
    return ok ? 0 : -1;
}

/* True when path records an initial snapshot that began and did not finish. */
static bool initial_interrupted(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[512];
    bool began = false, done = false;
    for (int i = 0; fgets(line, sizeof line, f); i++) {
        if (i == 0)
            began = !strncmp(line, "{\"initial\":", 11);
        else
            done = done || !strcmp(line, "{\"done\":true}\n");
    }
    fclose(f);
    return began && !done;
}

/*
 * Every row of the watched tables as SYNC events, read in snap (the new
 * slot's exported snapshot, or polling's first watermark), through this
 * driver's own callbacks and sinks, before the first change streams: each
 * chunk stands at snap->position, where the stream continues, so the stream
 * brings exactly what committed after the read.  Drained before it returns:
 * what follows is recorded as done only once the sinks have every row.
 */
static int initial_snapshot(stream_t *st, const crw_src_snapshot_t *snap) {
    const crw_config_t *cf = st->conf;
    char buf[512], line[256];
    const char *path = initial_file(cf, buf, sizeof buf);
    snprintf(line, sizeof line, "{\"initial\":\"%s\",\"position\":%" PRIu64 "}\n", cf->slot_name, snap->position);
    if (note_line(path, line, true) < 0) {
        snprintf(st->err, sizeof st->err, "snapshot.mode=initial: cannot record the initial snapshot in %s", path);
        return CRW_ERR_IO;
    }
    uint64_t held;
    int rc = crw_sinks_resume_position(&st->sinks, &held); /* exactly-once: the producer is ready first */
    if (rc < 0) {
        snprintf(st->err, sizeof st->err, "a sink could not report what it already holds");
        return rc;
    }
    crw_snapshot_opts_t so = {snap->name, snap->lsn, NULL, false, NULL, snap->position};
    crw_source_opts_t sopts = {st->conninfo, 0};
    crw_source_t *sub = crw_source_snapshot_new(cf, &sopts, &so, &st->ev, &rc, st->err, sizeof st->err);
    if (!sub)
        return rc;
    crw_info("snapshot.mode=initial: every row as of the stream's start, as SYNC events");
    uint64_t before = st->events;
    rc = crw_source_start(sub, st->err, sizeof st->err);
    bool stopping = false;
    while (rc == 0 && !crw_source_at_end(sub)) {
        if (!stopping && st->stop && *st->stop) {
            crw_source_stop_after_commit(sub);
            stopping = true;
        }
        if ((rc = crw_source_poll(sub, 100, st->err, sizeof st->err)) == 0)
            rc = crw_sinks_poll(&st->sinks, 0);
        crw_health_beat();
    }
    if (st->txn_open) {
        crw_pipeline_abandon(st->pipeline, st->seq);
        crw_wapi_abandon(st->watch);
        st->txn_open = false;
    }
    if (rc == 0 && crw_sinks_drain(&st->sinks, 30000) < 0) {
        snprintf(st->err, sizeof st->err, "not every sink acknowledged the initial snapshot");
        rc = CRW_ERR_SINK;
    }
    crw_source_finish(sub, 0);
    crw_source_destroy(sub);
    crw_relmap_invalidate(st->relmap); /* the snapshot source's relations are gone */
    if (rc == 0 && stopping)
        rc = CRW_ERR_STOPPED;
    if (rc == CRW_ERR_STOPPED) {
        crw_warn("snapshot.mode=initial: stopped inside the initial snapshot; the next start takes it again");
        return rc;
    }
    if (rc < 0) {
        /* Its exported snapshot is gone with the failure: a retry on this slot would stream over the rows not
         * read yet.  Stop; the next start drops the slot and takes it again. */
        char why[600];
        snprintf(why, sizeof why, "%.599s", st->err);
        snprintf(st->err, sizeof st->err,
                 "the initial snapshot did not finish (%s); crwatch stops, and its next start takes it again", why);
        return crw_err_retriable(rc) ? CRW_ERR_INTERNAL : rc;
    }
    if (note_line(path, "{\"done\":true}\n", false) < 0) {
        snprintf(st->err, sizeof st->err, "snapshot.mode=initial: cannot record the end of the initial snapshot");
        return CRW_ERR_IO;
    }
    crw_info("snapshot.mode=initial: %" PRIu64 " SYNC events; streaming what committed after them", st->events - before);
    return 0;
}

/*
 * The source's snapshot callback, once before streaming: the initial
 * snapshot (snapshot.mode=initial), and the resource cache's listing.
 */
static int on_snapshot(void *opaque, crw_catalog_t *cat, const crw_src_snapshot_t *snap) {
    stream_t *st = opaque;
    const crw_config_t *cf = st->conf;
    bool consistent = snap->name != NULL;
    if (cf->snapshot_mode == CRW_SNAPSHOT_INCREMENTAL && consistent) {
        for (int i = 0; i < cf->nresources; i++)
            if (!crw_config_table_named_before(cf, i))
                incr_queue(st, cf->resources[i].schema, cf->resources[i].table);
    }
    if (cf->snapshot_mode == CRW_SNAPSHOT_INITIAL) {
        if (consistent)
            return initial_snapshot(st, snap); /* it fills the cache too */
        crw_info("snapshot.mode=initial: the slot (or poll watermark) existed, so the stream goes on from it "
                 "without an initial snapshot (crwatch backfill sends the current rows)");
    }
    if (!st->watch && (!st->cache || !cf->cache_seed))
        return 0;
    if (!consistent && st->cache)
        crw_mapper_cache_horizon(st->mapper, snap->read_at); /* replayed changes are older than the listing */
    crw_txn_init(&st->tx, snap->lsn, 0, 0); /* the listing stands at the stream's start */
    st->tx.position = snap->position;
    crw_info("%s: listing the watched tables (%s)", st->watch ? "cache, watch API" : "cache",
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
        seed_t sd = {st, ri, 0, st->cache != NULL};
        if (snap->whole_old_rows && rel->replident == 'f') {
            /* every change brings its whole old row: the cache would only be dropped at the first one */
            sd.cache = false;
            crw_info("cache: %s.%s not listed into the cache: REPLICA IDENTITY FULL brings each old row whole",
                     rel->nspname, rel->relname);
            if (!st->watch)
                continue;
        }
        long rows = crw_catalog_scan(cat, rel, seed_row, &sd, why, sizeof why);
        if (rows < 0)
            crw_warn("cache seed of %s.%s failed: %s", rel->nspname, rel->relname, why);
        else if (sd.cache)
            crw_info("cache: %ld of %ld rows of %s.%s", sd.seeded, rows, rel->nspname, rel->relname);
    }
    crw_wapi_base(st->watch, snap->position); /* listed: the watch API answers from here */
    return 0;
}

/* ---- the source's callbacks ------------------------------------------- */

static int on_begin(void *opaque, const crw_src_txn_t *t) {
    stream_t *st = opaque;
    st->seq = crw_pipeline_begin(st->pipeline);
    st->txn_open = true;
    st->skipping = t->position <= st->skip_position;
    if (t->xid) {
        st->recent[st->recent_at] = t->xid;
        st->recent_at = (st->recent_at + 1) % 256;
        if (st->nrecent < 256)
            st->nrecent++;
    }
    crw_txn_init(&st->tx, t->lsn, t->xid, t->commit_time);
    st->tx.position = t->position;
    st->txn_events = st->events;
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
    if (!st->skipping && st->events > st->txn_events) { /* timed from its commit to every sink's ack */
        crw_pipeline_stamp(st->pipeline, st->seq, st->tx.commit_time);
        crw_metric_add(CRW_M_TRANSACTIONS, 1);
    }
    crw_pipeline_commit(st->pipeline, st->seq, end);
    if (!st->skipping) {
        crw_wapi_commit(st->watch, end);
        st->idle_due = true;
    }
    st->tx.last_end = end;
    st->txn_open = false;
    st->commits++;
    return 0;
}

/* A change that cannot be mapped: its raw row goes to the dead-letter file. */
static int dead_letter(stream_t *st, const crw_relinfo_t *ri, const crw_change_t *ch, const char *why) {
    crw_mapper_raw(&st->raw, ch);
    crw_deadletter_rec_t rec = {why, ri->source, st->tx.lsn_str, st->tx.xid, st->tx.ordinal, st->raw.data,
                                st->raw.len};
    int rc = crw_deadletter_write(st->deadletter, &rec);
    if (rc < 0) {
        snprintf(st->err, sizeof st->err, "cannot write the dead-letter file %s for a change of %s.%s at %s/%u (%s)",
                 st->conf->deadletter_file, ch->rel->nspname, ch->rel->relname, st->tx.lsn_str, st->tx.ordinal, why);
        return rc;
    }
    /* said and counted once the record is there */
    st->unmapped++;
    crw_warn("cannot map a change of %s.%s at %s/%u (%s): dead-lettered", ch->rel->nspname, ch->rel->relname,
             st->tx.lsn_str, st->tx.ordinal, why);
    return 0;
}

/* Hands ev, of the open transaction, to the sinks (also crw_stream_opts_t.at_end's emit). */
static int emit_more(void *ctx, crw_event_t *ev) {
    stream_t *st = ctx;
    ev->txn = st->seq;
    st->events++;
    crw_metric_event(ev->kind, ev->type);
    crw_wapi_event(st->watch, ev);
    return crw_sinks_emit(&st->sinks, ev);
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
    if (ri->cached && st->cache && (ch->old_rows_whole || (ch->op == CRW_OP_UPDATE && ch->oldkind == 'O'))) {
        /* The whole old row comes with the changes (REPLICA IDENTITY FULL): the cache adds nothing for it.
         * (A polled delete brings its old row too, but polled updates do not: that keeps the cache.) */
        ri->cached = false;
        crw_cache_clear_relation(st->cache, ri->rel->relid);
        crw_info("cache: %s.%s sends its old rows (REPLICA IDENTITY FULL): not cached", ch->rel->nspname,
                 ch->rel->relname);
    }
    char why[512];
    crw_change_t kept;
    if (ch->values_once && st->opts->verdict) { /* the verdict may have the row mapped again: its values must stay */
        kept = *ch;
        kept.values_once = false;
        ch = &kept;
    }
    rc = crw_mapper_change(st->mapper, ri, ch, &st->tx, &st->mapped, why, sizeof why);
    if (rc == CRW_ERR_UNMAPPED)
        return dead_letter(st, ri, ch, why);
    if (rc < 0)
        return rc;
    if (st->opts->verdict && st->mapped.n > 0) {
        crw_stream_verdict_t v = st->opts->verdict(st->opts->arg, &st->mapped.ev[0]);
        if (v == CRW_VERDICT_SKIP)
            return 0;
        if (v == CRW_VERDICT_ADDED || v == CRW_VERDICT_MODIFIED) { /* the same row, as the change it stands for */
            crw_change_t again = *ch;
            again.op = v == CRW_VERDICT_ADDED ? CRW_OP_INSERT : CRW_OP_UPDATE;
            again.oldtup = NULL;
            again.oldkind = 0;
            if ((rc = crw_mapper_change(st->mapper, ri, &again, &st->tx, &st->mapped, why, sizeof why)) < 0)
                return rc == CRW_ERR_UNMAPPED ? dead_letter(st, ri, ch, why) : rc;
        }
    }
    if (st->window && ch->rel == crw_incr_table(st->incr)) {
        bool created;
        for (int i = 0; i < st->mapped.n; i++)
            crw_strmap_put(st->changed, st->mapped.ev[i].key, st->mapped.ev[i].keylen, &created);
    }
    for (int i = 0; i < st->mapped.n; i++)
        if ((rc = emit_more(st, &st->mapped.ev[i])) < 0)
            return rc;
    crw_mapper_trim(st->mapper, &st->mapped);
    return 0;
}

/* ---- incremental snapshots (docs/snapshots.md, "snapshot.mode=incremental") ---- */

/* Queues schema.table for an incremental snapshot, described by the source's catalog. */
static int incr_queue(stream_t *st, const char *schema, const char *table) {
    char why[512];
    crw_catalog_t *cat = crw_source_catalog(st->src);
    const crw_relation_t *rel = cat ? crw_catalog_describe(cat, schema, table, why, sizeof why) : NULL;
    if (!rel) {
        crw_warn("snapshot: cannot re-read %s.%s: %s", schema, table, cat ? why : "no catalog");
        return 0;
    }
    if (!st->incr) {
        st->incr = crw_incr_new(st->conf, st->conninfo);
        st->changed = crw_strmap_new(1);
    }
    crw_info("snapshot: incremental snapshot of %s.%s queued (chunks of %d rows between watermarks)", schema, table,
             st->conf->snapshot_chunk_rows);
    return crw_incr_queue(st->incr, rel, why, sizeof why);
}

/* The high watermark of the window: its rows whose keys did not change since the low one, as SYNC events. */
static int incr_deliver(stream_t *st) {
    const crw_relation_t *rel = crw_incr_table(st->incr);
    crw_relinfo_t *ri;
    int rc = info_for(st, rel, &ri);
    if (rc < 0)
        return rc;
    int rows = crw_incr_nrows(st->incr), sent = 0;
    for (int i = 0; i < rows && ri->watched; i++) {
        crw_change_t ch = {.op = CRW_OP_READ, .rel = rel, .newtup = crw_incr_row(st->incr, i)};
        char why[512];
        st->tx.ordinal++;
        rc = crw_mapper_change(st->mapper, ri, &ch, &st->tx, &st->mapped, why, sizeof why);
        if (rc == CRW_ERR_UNMAPPED) {
            if ((rc = dead_letter(st, ri, &ch, why)) < 0)
                return rc;
            continue;
        }
        if (rc < 0)
            return rc;
        if (st->mapped.n < 1 ||
            crw_strmap_get(st->changed, st->mapped.ev[0].key, st->mapped.ev[0].keylen)) /* the stream has it newer */
            continue;
        for (int k = 0; k < st->mapped.n; k++)
            if ((rc = emit_more(st, &st->mapped.ev[k])) < 0)
                return rc;
        sent++;
    }
    crw_debug("snapshot: window %llu of %s.%s: %d of %d rows sent, %zu changed in it",
              (unsigned long long)st->window, rel->nspname, rel->relname, sent, rows, crw_strmap_count(st->changed));
    crw_incr_advance(st->incr);
    st->window = 0;
    st->window_open = false;
    crw_strmap_clear(st->changed);
    return 0;
}

/* A "crwatch..." logical message: this slot's incremental snapshot watermarks and requests. */
static int on_message(void *opaque, const char *prefix, const char *content, size_t len) {
    stream_t *st = opaque;
    if (strcmp(prefix, CRW_INCR_PREFIX) || st->skipping)
        return 0;
    char msg[600];
    snprintf(msg, sizeof msg, "%.*s", (int)(len < sizeof msg - 1 ? len : sizeof msg - 1), content);
    size_t sl = strlen(st->conf->slot_name);
    if (strncmp(msg, st->conf->slot_name, sl) || msg[sl] != ':')
        return 0; /* another crwatch's */
    const char *verb = msg + sl + 1, *arg = strchr(verb, ':');
    if (!arg)
        return 0;
    arg++;
    if (!strncmp(verb, "request:", 8)) {
        char schema[256];
        const char *dot = strchr(arg, '.');
        if (!dot)
            return 0;
        snprintf(schema, sizeof schema, "%.*s", (int)(dot - arg), arg);
        return incr_queue(st, schema, dot + 1);
    }
    uint64_t w = strtoull(arg, NULL, 10);
    if (!st->incr || w == 0 || w != st->window)
        return 0; /* a window of an earlier connection or process */
    if (!strncmp(verb, "low:", 4)) {
        st->window_open = true;
    } else if (!strncmp(verb, "high:", 5)) {
        if (st->window_open)
            return incr_deliver(st);
        crw_incr_forget(st->incr); /* its low watermark was not seen: read the chunk again */
        st->window = 0;
    }
    return 0;
}

/* Between transactions: the next chunk of a queued incremental snapshot, when no window is open. */
static void incr_step(stream_t *st) {
    if (!st->incr || st->window || st->txn_open || !crw_incr_table(st->incr))
        return;
    char why[512];
    /*
     * Changes are noted from here, not only from the low watermark: a writer
     * whose commit record precedes the low watermark in WAL may still be
     * invisible to the chunk's snapshot (its backend has not yet left the
     * proc array, e.g. waiting on a group commit's flush), so its change
     * comes before the low watermark and is not in the chunk.
     */
    crw_strmap_clear(st->changed);
    int rc = crw_incr_next(st->incr, st->recent, st->nrecent, &st->window, why, sizeof why);
    if (rc == CRW_ERR_CONN) {
        crw_warn("snapshot: the incremental snapshot's session failed (%s); trying again", why);
    } else if (rc < 0) {
        crw_warn("snapshot: the incremental snapshot stops: %s", why);
        crw_incr_destroy(st->incr);
        st->incr = NULL;
        st->window = 0;
    }
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
    crw_health_beat(); /* waiting on a sink is working */
}

/* The at_end hook's events, as one transaction at the last position. */
static int run_at_end(stream_t *st, const crw_stream_opts_t *opts) {
    st->seq = crw_pipeline_begin(st->pipeline);
    int rc = opts->at_end(opts->arg, emit_more, st);
    if (rc == 0 && (rc = crw_sinks_commit(&st->sinks, st->seq)) < 0)
        snprintf(st->err, sizeof st->err, "a sink failed to commit a transaction");
    if (rc < 0) {
        crw_pipeline_abandon(st->pipeline, st->seq);
        crw_wapi_abandon(st->watch);
        return rc;
    }
    crw_pipeline_commit(st->pipeline, st->seq, crw_pipeline_confirmed(st->pipeline) > st->tx.last_end
                                                   ? crw_pipeline_confirmed(st->pipeline)
                                                   : st->tx.last_end);
    return 0;
}

/* ---- the service loop -------------------------------------------------- */

/*
 * slot.lost=resync (docs/operations.md, "Slot safety"): the gap is closed by
 * a resync instead of an exit.  A slot that is gone or invalidated is made
 * again first, so the stream continues from before what the resync reads;
 * then the sinks get the corrections, and the slot as it is becomes the
 * stored position.  Changes between the slot's start and the resync's read
 * may come twice (at-least-once).
 */
static int resync_lost_slot(stream_t *st, const crw_stream_opts_t *opts) {
    const crw_config_t *cf = st->conf;
    crw_warn("%s", st->err);
    crw_warn("slot.lost=resync: resyncing the sinks from %s against the tables, then streaming from the slot",
             cf->resync_from);
    char why[1024];
    int rc = crw_admin_slot_recover(cf, st->conninfo, false, why, sizeof why);
    if (rc == 0 && !opts->resync) {
        snprintf(why, sizeof why, "no resync here (the command line's stream runs it; set slot.lost=fail)");
        rc = CRW_ERR_CONFIG;
    } else if (rc == 0)
        rc = opts->resync(cf, st->conninfo, opts->stop, why, sizeof why);
    if (rc == 0 && opts->stop && *opts->stop)
        rc = CRW_ERR_STOPPED;
    if (rc == 0)
        rc = crw_admin_slot_recover(cf, st->conninfo, true, why, sizeof why);
    if (rc < 0 && rc != CRW_ERR_STOPPED)
        snprintf(st->err, sizeof st->err, "slot.lost=resync: %.900s", why);
    if (rc == 0)
        st->err[0] = '\0';
    return rc == CRW_ERR_STOPPED ? 0 : rc;
}

/* Sleeps ms, waking early when a stop is requested. */
static void nap(int ms, volatile sig_atomic_t *stop) {
    while (ms > 0 && !(stop && *stop)) {
        int step = ms < 100 ? ms : 100;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
        crw_health_beat();
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

/* The source delivered all it had read, between transactions: the sinks send what they hold back (sink.h, idle). */
static int sinks_idle(stream_t *st) {
    st->idle_due = false;
    for (int i = 0; i < st->sinks.n; i++) {
        crw_sink_t *s = st->sinks.v[i];
        int rc = s->ops->idle ? s->ops->idle(s) : 0;
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Streams on one connection until it drops, a stop, endpos or an error. */
static int stream_connected(stream_t *st, const crw_stream_opts_t *opts) {
    int rc;
    int64_t stop_deadline = 0;
    for (;;) {
        crw_health_beat();
        crw_metric_set(CRW_M_QUEUE_EVENTS, (int64_t)crw_pipeline_outstanding(st->pipeline));
        if (opts->stop && *opts->stop) {
            crw_health_set_ready(0); /* stopping: a standby may take over */
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
        /* First what the source has read already, without waiting: when that leaves no transaction open
         * after one committed, the stream has caught up, and the sinks hear it before the wait below. */
        if ((rc = crw_source_poll(st->src, 0, st->err, sizeof st->err)) < 0)
            return rc;
        if (st->idle_due && !st->txn_open && (rc = sinks_idle(st)) < 0)
            return rc;
        /* While deliveries are in flight, come back soon to apply their acks. */
        rc = crw_source_poll(st->src, crw_pipeline_idle(st->pipeline) ? 200 : 10, st->err, sizeof st->err);
        if (rc < 0)
            return rc;
        if ((rc = crw_sinks_poll(&st->sinks, 0)) < 0)
            return rc;
        confirm(st);
        if (opts->progress)
            opts->progress(opts->arg, st->src);
        if (!stop_deadline)
            incr_step(st);
        if (opts->at_end && !st->at_end_done && crw_source_at_end(st->src) && !st->txn_open &&
            !(opts->stop && *opts->stop)) {
            st->at_end_done = true;
            if ((rc = run_at_end(st, opts)) < 0)
                return rc;
        }
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
    /* A backfill or a resync (their own source) sends whole objects only: no cache to keep. */
    st.cache = crw_config_cache_on(conf) && !opts->source_new
                   ? crw_cache_new((uint32_t)conf->cache_max_entries, (size_t)conf->cache_max_bytes)
                   : NULL;
    st.mapper = crw_mapper_new(conf, st.cache);
    st.deadletter = crw_deadletter_new(conf->deadletter_file);
    st.env = (crw_sink_env_t){conf, st.pipeline, st.deadletter, keepalive, &st, opts->stop, opts->checkpoint_id};
    st.conninfo = opts->conninfo;
    st.stop = opts->stop;
    st.opts = opts;
    crw_ops_t *ops = NULL;
    int rc0 = 0;
    crw_health_beat();
    crw_health_set_ready(0);
    if (*conf->http_listen && !opts->source_new &&
        !(ops = crw_ops_start(conf->http_listen, conf->health_timeout_ms, errstr, n))) {
        crw_pipeline_destroy(st.pipeline);
        crw_mapper_destroy(st.mapper);
        crw_cache_destroy(st.cache);
        crw_deadletter_destroy(st.deadletter);
        return CRW_ERR_CONFIG; /* before anything connects */
    }
    if (*conf->watch_listen && !opts->source_new &&
        !(st.watch = crw_wapi_start(conf, &rc0, errstr, n))) {
        crw_ops_stop(ops);
        crw_pipeline_destroy(st.pipeline);
        crw_mapper_destroy(st.mapper);
        crw_cache_destroy(st.cache);
        crw_deadletter_destroy(st.deadletter);
        return rc0;
    }
    bool initial = conf->snapshot_mode == CRW_SNAPSHOT_INITIAL && !opts->source_new;
    bool incremental = conf->snapshot_mode == CRW_SNAPSHOT_INCREMENTAL && !opts->source_new;
    crw_source_events_t ev = {.begin = on_begin,
                              .change = on_change,
                              .commit = on_commit,
                              .tick = on_tick,
                              .invalidate = on_invalidate,
                              .snapshot = (st.cache && conf->cache_seed) || initial || incremental || *conf->watch_listen
                                              ? on_snapshot
                                              : NULL,
                              .message = opts->source_new ? NULL : on_message,
                              .opaque = &st};
    st.ev = ev;
    int rc = 0;
    char ibuf[512];
    if (initial && initial_interrupted(initial_file(conf, ibuf, sizeof ibuf))) {
        /* Its snapshot ended with the process: a new first start takes a new one. */
        const char *what = "";
        if ((rc = crw_admin_forget(conf, opts->conninfo, &what, errstr, n)) < 0)
            return rc;
        crw_warn("snapshot.mode=initial: the initial snapshot recorded in %s did not finish: %s is dropped, and "
                 "this first start takes it again",
                 initial_file(conf, ibuf, sizeof ibuf), what);
    }
    crw_source_opts_t so = {opts->conninfo, opts->endpos};
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
    bool standing_by = false;
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (;;) {
        if (opts->stop && *opts->stop) {
            rc = 0;
            break;
        }
        rc = crw_source_start(st.src, st.err, sizeof st.err);
        if (rc == CRW_ERR_STOPPED) { /* stopped inside the initial snapshot: said already */
            rc = 0;
            break;
        }
        if (rc == CRW_ERR_STANDBY) { /* another instance streams: check again every second, say it once */
            if (!standing_by)
                crw_info("standing by: %s; taking over when it stops", st.err);
            standing_by = true;
            st.err[0] = '\0';
            nap(1000, opts->stop);
            continue;
        }
        if (rc == CRW_ERR_SLOT_LOST && conf->slot_lost == 1 && !opts->source_new) {
            if ((rc = resync_lost_slot(&st, opts)) < 0)
                break;
            continue;
        }
        if (rc < 0) {
            /* A refused login is retried only when asked (reconnect.auth=retry): a password being rotated. */
            if (!crw_err_retriable(rc) && !(rc == CRW_ERR_AUTH && conf->reconnect_auth == 1))
                break;
            if (rc == CRW_ERR_SLOT_BUSY && backoff > 1000)
                backoff = 1000; /* held by a predecessor on its way out, or ended by take-over: soon free */
            retry_wait(&st, &backoff, opts->stop, "retrying");
            continue;
        }
        if (standing_by)
            crw_info("slot %s: this instance is the active one now", conf->slot_name);
        standing_by = false;
        crw_health_set_ready(1);
        crw_wapi_base(st.watch, crw_pipeline_confirmed(st.pipeline));
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
        crw_health_set_ready(0);
        if (st.txn_open) {
            crw_pipeline_abandon(st.pipeline, st.seq);
            crw_wapi_abandon(st.watch);
            st.txn_open = false;
        }
        if (rc == CRW_ERR_SLOT_LOST && conf->slot_lost == 1 && !opts->source_new) { /* found while streaming */
            crw_source_close(st.src);
            if ((rc = resync_lost_slot(&st, opts)) < 0)
                break;
            continue;
        }
        if (rc == CRW_ERR_CONN) {
            crw_metric_add(CRW_M_RECONNECTS, 1);
            crw_source_close(st.src);
            if (st.window) { /* its watermarks come again, but its rows are gone with the connection */
                crw_incr_forget(st.incr);
                st.window = 0;
                st.window_open = false;
            }
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
    crw_health_set_ready(0);
    crw_ops_stop(ops);
    crw_wapi_stop(st.watch);
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
    crw_incr_destroy(st.incr);
    crw_strmap_destroy(st.changed);
    return rc;
}
