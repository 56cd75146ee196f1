/*
 * stream.c — the stream service: wires the replication source, the
 * relation/type caches, the event encoder and the sinks, and reconnects.
 *
 * Acknowledgement rule (Bottled Water's): a transaction is closed in the
 * pipeline only after every sink's commit() returned, and the flush
 * position sent to PostgreSQL is the pipeline's confirmed LSN — the end of
 * the last transaction every sink acknowledged.  A transaction cut short by
 * a lost connection or a stop is abandoned, never confirmed: the server
 * sends it again.
 */
#include "core/stream.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <inttypes.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/deadletter.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "core/pipeline.h"
#include "decode/relcache.h"
#include "decode/types.h"
#include "map/cache.h"
#include "map/debezium.h"
#include "map/event.h"
#include "sink/sink.h"
#include "source/replication.h"

typedef struct {
    const crw_config_t *conf;
    crw_repl_t *repl;
    crw_pipeline_t *pipeline;
    crw_sinks_t sinks;
    crw_sink_env_t env;
    crw_deadletter_t *deadletter;
    uint64_t skip_lsn;      /* changes committed at or below it are in the sinks already */
    bool skipping;          /* the open transaction is at or below skip_lsn */
    crw_relcache_t *rels;
    crw_typecache_t *types;
    crw_cache_t *cache;
    crw_mapper_t *mapper;
    crw_txn_ctx_t tx;
    uint64_t seq;
    bool txn_open;
    crw_buf_t out;
    crw_buf_t key;
    crw_buf_t out2, key2;    /* Debezium key changes: the second record */
    uint64_t last_commit_lsn; /* Debezium's sequence[0] */
    char err[1024];
    uint64_t events;
    uint64_t unmapped;
    uint64_t commits;       /* transactions committed on the current connection */
} stream_t;

/* Type look-up through the SQL session (crw_type_lookup_fn). */
static int lookup_type(void *opaque, uint32_t oid, crw_pgtype_row_t *row) {
    stream_t *st = opaque;
    PGconn *c = crw_repl_sql(st->repl);
    if (!c)
        return -1;
    char oidbuf[16];
    snprintf(oidbuf, sizeof oidbuf, "%u", oid);
    const char *p[1] = {oidbuf};
    PGresult *res = PQexecParams(c,
                                 "SELECT typtype, typbasetype, typelem, typcategory, typdelim FROM pg_type "
                                 "WHERE oid = $1::oid",
                                 1, NULL, p, NULL, NULL, 0);
    int rc = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        row->oid = oid;
        row->typtype = PQgetvalue(res, 0, 0)[0];
        row->typbasetype = (uint32_t)strtoul(PQgetvalue(res, 0, 1), NULL, 10);
        row->typelem = (uint32_t)strtoul(PQgetvalue(res, 0, 2), NULL, 10);
        row->typcategory = PQgetvalue(res, 0, 3)[0];
        row->typdelim = PQgetvalue(res, 0, 4)[0];
        rc = 0;
    } else
        crw_warn("type %u: catalog look-up failed: %s", oid, PQerrorMessage(c));
    PQclear(res);
    return rc;
}

/* Primary key column names of relid, in key order (through the SQL session). */
static PGresult *primary_key(stream_t *st, uint32_t relid) {
    PGconn *c = crw_repl_sql(st->repl);
    if (!c)
        return NULL;
    char oidbuf[16];
    snprintf(oidbuf, sizeof oidbuf, "%u", relid);
    const char *p[1] = {oidbuf};
    PGresult *res = PQexecParams(c,
                                 "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = "
                                 "i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::oid AND "
                                 "i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)",
                                 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        crw_warn("primary key of relation %u: %s", relid, PQerrorMessage(c));
        PQclear(res);
        return NULL;
    }
    return res;
}

/* Fills the resource cache with the current rows of rel (cache.seed). */
static int seed_cache(stream_t *st, const crw_relation_t *rel) {
    PGconn *c = crw_repl_sql(st->repl);
    if (!c)
        return 0;
    crw_buf_t sql = CRW_BUF_INIT;
    crw_buf_puts(&sql, "SELECT ");
    for (int i = 0; i < rel->natts; i++) {
        char *q = PQescapeIdentifier(c, rel->atts[i].name, strlen(rel->atts[i].name));
        crw_buf_printf(&sql, "%s%s", i ? ", " : "", q);
        PQfreemem(q);
    }
    char *ns = PQescapeIdentifier(c, rel->nspname, strlen(rel->nspname));
    char *tb = PQescapeIdentifier(c, rel->relname, strlen(rel->relname));
    crw_buf_printf(&sql, " FROM %s.%s", ns, tb);
    PQfreemem(ns);
    PQfreemem(tb);
    /* Row by row: the listing never holds the whole table in memory. */
    if (!PQsendQuery(c, sql.data) || !PQsetSingleRowMode(c)) {
        crw_warn("cache seed of %s.%s failed: %s", rel->nspname, rel->relname, PQerrorMessage(c));
        crw_buf_free(&sql);
        return 0;
    }
    crw_buf_free(&sql);
    crw_pgo_col_t *cols = crw_calloc(rel->natts ? rel->natts : 1, sizeof *cols);
    crw_pgo_tuple_t row = {rel->natts, cols};
    long seeded = 0, rows = 0;
    PGresult *res;
    while ((res = PQgetResult(c))) {
        if (PQresultStatus(res) == PGRES_SINGLE_TUPLE) {
            rows++;
            for (int i = 0; i < rel->natts; i++) {
                cols[i].kind = PQgetisnull(res, 0, i) ? CRW_PGO_COL_NULL : CRW_PGO_COL_TEXT;
                cols[i].data = PQgetvalue(res, 0, i);
                cols[i].len = (uint32_t)PQgetlength(res, 0, i);
            }
            char why[256];
            if (crw_mapper_seed(st->mapper, rel, &row, why, sizeof why) == 0)
                seeded++;
        } else if (PQresultStatus(res) != PGRES_TUPLES_OK)
            crw_warn("cache seed of %s.%s failed: %s", rel->nspname, rel->relname, PQresultErrorMessage(res));
        PQclear(res);
    }
    crw_info("cache: %ld of %ld rows of %s.%s", seeded, rows, rel->nspname, rel->relname);
    free(cols);
    return 0;
}

static int resolve(stream_t *st, crw_relation_t *rel) {
    const crw_config_t *cf = st->conf;
    const crw_resource_conf_t *matched[64];
    int nmatched = 0;
    for (int i = 0; i < cf->nresources && nmatched < 64; i++)
        if (!strcmp(cf->resources[i].schema, rel->nspname) && !strcmp(cf->resources[i].table, rel->relname))
            matched[nmatched++] = &cf->resources[i];
    /* With no table configured, the publication as it stands decides. */
    rel->watched = nmatched > 0 || cf->nresources == 0;
    crw_buf_t b = CRW_BUF_INIT;
    crw_buf_printf(&b, "/crwatch/%s/%s/%s", crw_repl_dbname(st->repl), rel->nspname, rel->relname);
    free(rel->source);
    rel->source = b.data;
    for (int i = 0; i < rel->natts; i++)
        rel->atts[i].ti = crw_typecache_get(st->types, rel->atts[i].typoid);
    PGresult *pk = rel->watched ? primary_key(st, rel->relid) : NULL;
    int npk = pk ? PQntuples(pk) : 0;
    const char *pkcols[64];
    for (int i = 0; i < npk && i < 64; i++)
        pkcols[i] = PQgetvalue(pk, i, 0);
    int rc = crw_mapper_prepare(rel, matched, nmatched, pkcols, npk < 64 ? npk : 64, st->err, sizeof st->err);
    PQclear(pk);
    if (rc < 0)
        return rc;
    rel->resolved = true;
    return 0;
}

/*
 * The seed hook: lists every watched table once, before streaming, to fill
 * the resource cache.  Relations are described from the catalog as pgoutput
 * will describe them (no dropped or generated columns).
 */
static int seed_all(void *opaque, PGconn *c, bool in_snapshot) {
    stream_t *st = opaque;
    const crw_config_t *cf = st->conf;
    crw_info("cache: listing the watched tables (%s)",
             in_snapshot ? "in the new slot's snapshot" : "current state; the slot existed already");
    for (int i = 0; i < cf->nresources; i++) {
        const crw_resource_conf_t *rs = &cf->resources[i];
        bool dup = false;
        for (int j = 0; j < i; j++)
            dup |= !strcmp(cf->resources[j].schema, rs->schema) && !strcmp(cf->resources[j].table, rs->table);
        if (dup)
            continue;
        const char *p[2] = {rs->schema, rs->table};
        PGresult *res = PQexecParams(c,
                                     "SELECT c.oid, c.relreplident, a.attname, a.atttypid, a.atttypmod FROM pg_class c "
                                     "JOIN pg_namespace ns ON ns.oid = c.relnamespace JOIN pg_attribute a ON "
                                     "a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
                                     "WHERE ns.nspname = $1 AND c.relname = $2 ORDER BY a.attnum",
                                     2, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) == 0) {
            crw_warn("cache: cannot describe %s.%s: %s", rs->schema, rs->table, PQerrorMessage(c));
            PQclear(res);
            continue;
        }
        int natts = PQntuples(res);
        crw_pgo_attr_t *atts = crw_calloc((size_t)natts, sizeof *atts);
        for (int a = 0; a < natts; a++) {
            atts[a].name = PQgetvalue(res, a, 2);
            atts[a].typoid = (uint32_t)strtoul(PQgetvalue(res, a, 3), NULL, 10);
            atts[a].typmod = atoi(PQgetvalue(res, a, 4));
        }
        crw_pgo_relation_t m = {(uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10), rs->schema, rs->table,
                                PQgetvalue(res, 0, 1)[0], (uint16_t)natts, atts};
        crw_relation_t *rel = crw_relcache_update(st->rels, &m);
        int rc = resolve(st, rel);
        if (rc == 0)
            seed_cache(st, rel);
        free(atts);
        PQclear(res);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static crw_relation_t *relation_for(stream_t *st, uint32_t relid, int *rc) {
    crw_relation_t *rel = crw_relcache_get(st->rels, relid);
    *rc = 0;
    if (!rel) {
        snprintf(st->err, sizeof st->err, "change for relation %u before its Relation message", relid);
        *rc = CRW_ERR_PROTOCOL;
        return NULL;
    }
    if (!rel->resolved)
        *rc = resolve(st, rel);
    return *rc < 0 ? NULL : rel;
}

static int emit_buf(stream_t *st, const crw_relation_t *rel, const char *type, const crw_buf_t *value,
                    const crw_buf_t *key, const char *kind) {
    crw_event_t ev = {.txn = st->seq,
                      .commit_lsn = st->tx.commit_lsn,
                      .ordinal = st->tx.ordinal,
                      .type = type,
                      .key = key->data ? key->data : "",
                      .keylen = key->len,
                      .value = value ? (value->data ? value->data : "") : NULL,
                      .len = value ? value->len : 0,
                      .rel = rel,
                      .kind = kind ? kind : rel->kind};
    st->events++;
    return crw_sinks_emit(&st->sinks, &ev);
}

static int emit(stream_t *st, const crw_relation_t *rel, const char *type) {
    return emit_buf(st, rel, type, &st->out, &st->key, NULL);
}

/*
 * event.format=debezium: Debezium's records for one change.  A delete is
 * followed by a tombstone (same key, no value); an update that changes the
 * key becomes a delete, its tombstone and a create, as Debezium does.
 */
static int emit_debezium(stream_t *st, const crw_relation_t *rel, const crw_pgo_msg_t *m, char *why, size_t n) {
    crw_dbz_source_t src = {crw_repl_dbname(st->repl), st->conf->debezium_name, m->lsn, st->last_commit_lsn, 0};
    int rc;
    if (m->type == CRW_PGO_UPDATE && crw_debezium_key_changed(rel, m)) {
        if (crw_debezium_encode_key_change(&st->out, &st->key, &st->out2, &st->key2, rel, m, &st->tx, &src, why, n) < 0)
            return -1;
        if ((rc = emit(st, rel, "DELETED")) < 0 || (rc = emit_buf(st, rel, "DELETED", NULL, &st->key, NULL)) < 0)
            return rc;
        return emit_buf(st, rel, "ADDED", &st->out2, &st->key2, NULL);
    }
    if (crw_debezium_encode(&st->out, &st->key, rel, m, &st->tx, &src, why, n) < 0)
        return -1;
    const char *type = m->type == CRW_PGO_INSERT ? "ADDED" : m->type == CRW_PGO_UPDATE ? "MODIFIED" : "DELETED";
    if ((rc = emit(st, rel, type)) < 0)
        return rc;
    return m->type == CRW_PGO_DELETE ? emit_buf(st, rel, "DELETED", NULL, &st->key, NULL) : 0;
}

/* A change that cannot be mapped: its raw row goes to the dead-letter file. */
static int dead_letter(stream_t *st, const crw_relation_t *rel, const crw_pgo_msg_t *m, const char *why) {
    st->unmapped++;
    crw_event_encode_raw(&st->out, rel, m);
    crw_deadletter_rec_t rec = {why, rel->source, st->tx.lsn_str, st->tx.xid, st->tx.ordinal, st->out.data,
                                st->out.len};
    crw_warn("cannot map a change of %s.%s at %s/%u (%s): dead-lettered", rel->nspname, rel->relname,
             st->tx.lsn_str, st->tx.ordinal, why);
    int rc = crw_deadletter_write(st->deadletter, &rec);
    if (rc < 0)
        snprintf(st->err, sizeof st->err, "cannot write the dead-letter file %s", st->conf->deadletter_file);
    return rc;
}

static void keepalive(void *opaque) {
    stream_t *st = opaque;
    crw_repl_keepalive(st->repl);
}

static int on_message(void *opaque, const crw_pgo_msg_t *m) {
    stream_t *st = opaque;
    int rc = 0;
    crw_relation_t *rel;
    switch (m->type) {
    case CRW_PGO_BEGIN:
        st->seq = crw_pipeline_begin(st->pipeline);
        st->txn_open = true;
        st->skipping = m->u.begin.final_lsn <= st->skip_lsn;
        crw_event_txn_init(&st->tx, m->u.begin.final_lsn, m->u.begin.xid, m->u.begin.commit_time);
        return 0;
    case CRW_PGO_COMMIT:
        if (!st->txn_open)
            return 0;
        if (!st->skipping && (rc = crw_sinks_commit(&st->sinks, st->seq)) < 0) {
            snprintf(st->err, sizeof st->err, "a sink failed to commit a transaction");
            return rc;
        }
        crw_pipeline_commit(st->pipeline, st->seq, m->u.commit.end_lsn);
        st->last_commit_lsn = m->u.commit.end_lsn;
        st->txn_open = false;
        st->commits++;
        return 0;
    case CRW_PGO_RELATION:
        rel = crw_relcache_update(st->rels, &m->u.relation);
        return resolve(st, rel);
    case CRW_PGO_TYPE:
        crw_typecache_forget(st->types, m->u.type.typoid);
        crw_relcache_invalidate(st->rels);
        return 0;
    case CRW_PGO_INSERT:
    case CRW_PGO_UPDATE:
    case CRW_PGO_DELETE: {
        uint32_t relid = m->type == CRW_PGO_INSERT   ? m->u.insert.relid
                         : m->type == CRW_PGO_UPDATE ? m->u.update.relid
                                                     : m->u.del.relid;
        st->tx.ordinal++;
        if (!(rel = relation_for(st, relid, &rc)))
            return rc;
        if (!rel->watched || st->skipping)
            return 0;
        char why[512];
        if (st->conf->event_format == CRW_FORMAT_DEBEZIUM) {
            rc = emit_debezium(st, rel, m, why, sizeof why);
            return rc == -1 ? dead_letter(st, rel, m, why) : rc;
        }
        const char *type, *kind;
        if (crw_mapper_change(st->mapper, &st->out, &st->key, &type, &kind, rel, m, &st->tx, why, sizeof why) < 0)
            return dead_letter(st, rel, m, why);
        return emit_buf(st, rel, type, &st->out, &st->key, kind);
    }
    case CRW_PGO_TRUNCATE:
        for (uint32_t i = 0; i < m->u.truncate.nrels; i++) {
            st->tx.ordinal++;
            if (!(rel = relation_for(st, m->u.truncate.relids[i], &rc)))
                return rc;
            if (!rel->watched || st->skipping)
                continue;
            if (st->conf->event_format == CRW_FORMAT_DEBEZIUM) {
                crw_dbz_source_t src = {crw_repl_dbname(st->repl), st->conf->debezium_name, m->lsn,
                                        st->last_commit_lsn, 0};
                crw_debezium_encode_truncate(&st->out, rel, &st->tx, &src);
            } else
                crw_mapper_truncate(st->mapper, &st->out, rel, &st->tx);
            crw_buf_reset(&st->key);
            if ((rc = emit(st, rel, "TRUNCATED")) < 0)
                return rc;
        }
        return 0;
    default:
        return 0; /* Origin, Message: nothing to publish */
    }
}

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

int crw_stream_run(const crw_config_t *conf, const crw_stream_opts_t *opts, char *errstr, size_t n) {
    stream_t st = {0};
    st.conf = conf;
    st.pipeline = crw_pipeline_new(0);
    st.rels = crw_relcache_new();
    st.types = crw_typecache_new(lookup_type, &st);
    st.cache = conf->cache_max_entries > 0 ? crw_cache_new((uint32_t)conf->cache_max_entries) : NULL;
    st.mapper = crw_mapper_new(st.cache, conf->event_patch);
    st.deadletter = crw_deadletter_new(conf->deadletter_file);
    st.env = (crw_sink_env_t){conf, st.pipeline, st.deadletter, keepalive, &st, opts->stop};
    st.repl = crw_repl_new(conf, opts->conninfo, st.pipeline, opts->endpos, on_message, &st);
    if (st.cache && conf->cache_seed)
        crw_repl_set_seed(st.repl, seed_all, &st);
    int rc = crw_sinks_open(&st.sinks, &st.env, errstr, n);
    if (rc < 0)
        goto out;
    if (opts->extra_sink_new) {
        crw_sink_t *x = opts->extra_sink_new(&st.env, opts->extra_sink_arg, errstr, n);
        if (!x) {
            rc = CRW_ERR_SINK;
            goto out;
        }
        st.sinks.v[st.sinks.n++] = x;
    }

    int backoff = 100;
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    for (;;) {
        if (opts->stop && *opts->stop) {
            rc = 0;
            break;
        }
        rc = crw_repl_start(st.repl, st.err, sizeof st.err);
        if (rc < 0) {
            if (!crw_err_retriable(rc))
                break;
            retry_wait(&st, &backoff, opts->stop, "retrying");
            continue;
        }
        st.commits = 0;
        int64_t started = crw_clock_mono_ms();
        if ((rc = crw_sinks_resume_lsn(&st.sinks, &st.skip_lsn)) < 0) {
            snprintf(st.err, sizeof st.err, "a sink could not report what it already holds");
            break;
        }
        int64_t stop_deadline = 0;
        for (;;) {
            if (opts->stop && *opts->stop) {
                /* A transaction half handed to the sinks would be sent again: read
                 * on to its commit (for a while), then stop. */
                if (!st.txn_open && !crw_repl_in_txn(st.repl))
                    break;
                if (!stop_deadline) {
                    stop_deadline = crw_clock_mono_ms() + 5000;
                    crw_repl_stop_after_commit(st.repl);
                    crw_info("stopping: finishing the open transaction first");
                } else if (crw_clock_mono_ms() > stop_deadline)
                    break;
            }
            /* While deliveries are in flight, come back soon to apply their acks. */
            rc = crw_repl_poll(st.repl, crw_pipeline_idle(st.pipeline) ? 200 : 10, st.err, sizeof st.err);
            if (rc < 0)
                break;
            if ((rc = crw_sinks_poll(&st.sinks, 0)) < 0)
                break;
            if (crw_repl_at_endpos(st.repl) && !st.txn_open && crw_pipeline_idle(st.pipeline)) {
                /* Everything committed up to endpos arrived (commit order) and was
                 * acknowledged: the slot may move to endpos itself. */
                if (opts->endpos)
                    crw_pipeline_follow(st.pipeline, opts->endpos);
                rc = CRW_ERR_STOPPED;
                break;
            }
            if (stop_deadline && crw_repl_at_endpos(st.repl) && !st.txn_open) {
                rc = CRW_ERR_STOPPED; /* the open transaction committed; acks are drained below */
                break;
            }
        }
        if (st.txn_open) {
            crw_pipeline_abandon(st.pipeline, st.seq);
            st.txn_open = false;
        }
        if (rc == CRW_ERR_CONN) {
            crw_repl_close(st.repl);
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
             * server takes the final confirmed position. */
            if (crw_sinks_drain(&st.sinks, 10000) < 0)
                crw_warn("not every sink drained; unacknowledged changes will be sent again");
            if (crw_repl_finish(st.repl, 5000) < 0)
                crw_warn("the final confirmed position may not have reached the server");
            rc = 0;
        }
        break;
    }
    if (rc < 0)
        snprintf(errstr, n, "%s", st.err);
    uint64_t c = crw_pipeline_confirmed(st.pipeline);
    crw_info("stopped: %" PRIu64 " events, confirmed " CRW_LSN_FMT "%s", st.events, CRW_LSN_ARGS(c),
             st.unmapped ? ", some changes were dead-lettered" : "");
out:
    crw_sinks_close(&st.sinks);
    crw_repl_destroy(st.repl);
    crw_deadletter_destroy(st.deadletter);
    crw_typecache_destroy(st.types);
    crw_relcache_destroy(st.rels);
    crw_pipeline_destroy(st.pipeline);
    crw_buf_free(&st.out);
    crw_buf_free(&st.key);
    crw_mapper_destroy(st.mapper);
    crw_debezium_thread_cleanup();
    crw_buf_free(&st.out2);
    crw_buf_free(&st.key2);
    crw_cache_destroy(st.cache);
    return rc;
}
