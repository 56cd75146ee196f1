/*
 * poll.c — the polling source (source=poll; docs/poll.md): where logical
 * replication is not available, the watched tables are read for the rows
 * and tombstones whose writer committed since the last poll.
 *
 * Tables in the sql/ convention carry `txid` (xid8, the writer's top-level
 * transaction, kept by crwatch.manage()'s trigger), and deletes leave rows in
 * crwatch.tombstones.  The watermark is a snapshot, W: every change whose
 * writer is visible in W has been delivered.  A poll opens a REPEATABLE READ
 * transaction, whose snapshot S becomes the next watermark, and reads
 *
 *     txid >= pg_snapshot_xmin(W) AND NOT pg_visible_in_snapshot(txid, W)
 *
 * from each table and its tombstones (the txid index bounds the scan), so
 * what it reads is exactly what committed between W and S: a transaction
 * still running at W (in W's xip list, or above its xmax) is picked up by the
 * first poll that sees it committed, however long it ran, without holding
 * back the transactions that committed meanwhile (PgQ's batches).  An
 * aborted transaction's versions are never visible; a row written several
 * times between two polls is read once, in its latest state.
 *
 * Positions: each poll is a batch with the next position (a counter that
 * only grows, kept in crwatch.offsets with its watermark).  A batch is one
 * source transaction (each change carries its writer's xid and time), so
 * the pipeline confirms, and a Kafka checkpoint covers, whole batches only.
 * A confirmed position is made durable by writing its watermark to
 * crwatch.offsets (keyed by slot.name): a restart polls from there, so
 * nothing is lost and what was not confirmed comes again.  Under
 * exactly-once a batch's watermark is also written down before it is sent
 * (offsets.pending), so the sink's checkpoint can be resumed from (seek).
 *
 * Two connections: one reads batches (single-row mode, so a batch is never
 * held in memory whole), the other answers the catalog and keeps offsets,
 * holding the advisory lock that makes one poller per slot.name.
 * Thread-safety: one thread, the driver's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "decode/change.h"
#include "source/poll.h"
#include "source/poll_stamp.h"
#include "source/source.h"

#define PRUNE_EVERY_US INT64_C(60000000) /* crwatch.prune_seen_tombstones() at most once a minute */
/* A digest of the columns of the tables whose OIDs are $1 (an oid[] literal): it changes when one is altered. */
#define COLUMNS_DIGEST                                                                                                 \
    "(SELECT md5(string_agg(concat_ws(':', a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod), ',' "           \
    "ORDER BY a.attrelid, a.attnum)) FROM pg_attribute a WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 "         \
    "AND NOT a.attisdropped AND a.attgenerated = '')"
#define QUERY_ERRORS_MAX 5                 /* the same poll failing this often in a row stops crwatch (exit 3) */
#define META_COLS 5                      /* crw_op, crw_txid, crw_rv, crw_added, crw_time */

/* A delivered batch: its position and the watermark it leaves. */
typedef struct {
    uint64_t position;
    char *watermark;      /* pg_snapshot text */
    char *watermark_time; /* timestamptz text: when it was taken */
    bool changes;         /* it delivered rows (worth storing at once) */
} mark_t;

typedef struct {
    const crw_relation_t *rel;
    crw_buf_t query;      /* $1 the watermark, $2 its time, $3 the table's OID, $4 the watermark's xmin */
    crw_stamp_t *stamp;   /* polled by a column (poll_stamp.c); NULL: by txid */
} ptable_t;

typedef struct {
    crw_source_t base;
    const crw_config_t *conf;
    crw_session_t ses;     /* ses.sql: catalog and offsets */
    PGconn *read;          /* batches */
    crw_source_events_t ev;
    bool endpos_asked;
    crw_relcache_t *rels;
    crw_catalog_t *cat;
    ptable_t *tables;
    int ntables;
    uint64_t position;     /* the last position handed out; never reused in this process */
    mark_t *marks;         /* [0]: what crwatch.offsets holds; then batches delivered since, oldest first */
    int nmarks, capmarks;
    uint64_t confirmed;
    bool snapshot_done;
    bool in_txn, at_end, stop_after_commit;
    int64_t next_poll_us, last_store_us, last_prune_us;
    bool prune_refused;
    bool had_row;          /* this process read or made its crwatch.offsets row */
    crw_buf_t idbuf;
    crw_buf_t oids;        /* the watched tables' OIDs, "{1,2}" */
    char *schema;          /* digest of their columns (COLUMNS_DIGEST) when they were described */
    crw_stamp_t **stamps;  /* per resource: its timestamp-mode state, or NULL (kept across describes) */
    int ntxid;             /* tables polled by txid: none, and crwatch.offsets is not used */
    bool warned;           /* the timestamp mode's warning is out */
    int query_errors;      /* polls in a row whose query failed on a live connection */
} poll_t;

#define P(s) ((poll_t *)(s))

/* ---- marks ------------------------------------------------------------- */

static void mark_free(mark_t *m) {
    free(m->watermark);
    free(m->watermark_time);
}

static void marks_clear(poll_t *p) {
    for (int i = 0; i < p->nmarks; i++)
        mark_free(&p->marks[i]);
    p->nmarks = 0;
}

static void mark_push(poll_t *p, uint64_t position, const char *watermark, const char *time, bool changes) {
    if (p->nmarks == p->capmarks) {
        p->capmarks = p->capmarks ? p->capmarks * 2 : 16;
        p->marks = crw_realloc(p->marks, sizeof *p->marks * (size_t)p->capmarks);
    }
    p->marks[p->nmarks++] = (mark_t){position, crw_strdup(watermark), crw_strdup(time), changes};
}

/* ---- the source's ops ---------------------------------------------------- */

static int store(poll_t *p, bool force, char *errstr, size_t n);

static void poll_close(crw_source_t *base) {
    poll_t *p = P(base);
    /* A reconnect after a failed read: what is confirmed is kept, not sent again. */
    char err[512];
    if (p->ses.sql && PQstatus(p->ses.sql) == CONNECTION_OK && p->nmarks > 0 && store(p, true, err, sizeof err) < 0)
        crw_warn("poll: %s", err);
    if (p->read)
        PQfinish(p->read);
    p->read = NULL;
    crw_session_close(&p->ses);
    crw_catalog_set_conn(p->cat, NULL);
    /* What was delivered and not stored comes again from the stored watermark; tables polled by a column
     * are listed again (what of them was in flight is not known). */
    marks_clear(p);
    for (int i = 0; i < p->conf->nresources; i++)
        if (p->stamps[i])
            crw_stamp_forget(p->stamps[i]);
    p->in_txn = false;
}

static void poll_destroy(crw_source_t *base) {
    poll_t *p = P(base);
    poll_close(base);
    for (int i = 0; i < p->ntables; i++)
        crw_buf_free(&p->tables[i].query);
    free(p->tables);
    free(p->marks);
    crw_session_free(&p->ses);
    crw_catalog_destroy(p->cat);
    crw_relcache_destroy(p->rels);
    crw_buf_free(&p->idbuf);
    crw_buf_free(&p->oids);
    free(p->schema);
    for (int i = 0; i < p->conf->nresources; i++)
        crw_stamp_destroy(p->stamps[i]);
    free(p->stamps);
    free(p);
}

static const char *poll_dbname(const crw_source_t *base) {
    const poll_t *p = (const poll_t *)base;
    return p->ses.dbname ? p->ses.dbname : "";
}
static crw_catalog_t *poll_catalog(crw_source_t *base) { return P(base)->cat; }
static void poll_format_position(const crw_source_t *base, uint64_t position, char *buf, size_t n) {
    (void)base;
    snprintf(buf, n, "poll batch %llu", (unsigned long long)position);
}
static bool poll_at_end(const crw_source_t *base) { return ((const poll_t *)base)->at_end; }
static bool poll_in_txn(const crw_source_t *base) { return ((const poll_t *)base)->in_txn; }
static void poll_stop_after_commit(crw_source_t *base) { P(base)->stop_after_commit = true; }
static void poll_keepalive(crw_source_t *base) { (void)base; /* no connection to keep: reads wait for the driver */ }

static void poll_confirm(crw_source_t *base, uint64_t position) {
    poll_t *p = P(base);
    if (position > p->confirmed)
        p->confirmed = position;
}

/* The row of this crwatch went from crwatch.offsets under it: a gap it will not stream over. */
static int lost_row(const poll_t *p, char *errstr, size_t n) {
    snprintf(errstr, n, "crwatch.offsets' row of %s was removed, or moved ahead by another process, while crwatch was "
             "polling: it will not stream over what it may have missed", p->conf->slot_name);
    return CRW_ERR_PREREQ;
}

/* Runs a command on c (no rows wanted). */

/*
 * Stores the newest confirmed batch's watermark in crwatch.offsets: at once
 * when that batch (or one before it) delivered rows, else (idle polls) once a
 * status interval, or always when force.  Under exactly-once the sink's
 * checkpoint is where a restart goes on (poll_seek), so the watermark is
 * stored once a status interval only.
 */
/* Drops marks[from..to-1]. */
static void marks_drop(poll_t *p, int from, int to) {
    for (int i = from; i < to; i++)
        mark_free(&p->marks[i]);
    memmove(p->marks + from, p->marks + to, sizeof *p->marks * (size_t)(p->nmarks - to));
    p->nmarks -= to - from;
}

/* Tombstones every poller has seen can go (crwatch.create_role grants it): once a minute, and at the end. */
static void prune(poll_t *p, bool force) {
    int64_t now = crw_clock_mono_us();
    if (p->prune_refused || (!force && now - p->last_prune_us < PRUNE_EVERY_US))
        return;
    p->last_prune_us = now;
    PGresult *res = PQexec(p->ses.sql, "SELECT crwatch.prune_seen_tombstones()");
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        if (strcmp(PQgetvalue(res, 0, 0), "0") != 0)
            crw_info("poll: pruned %s tombstones every poller has seen", PQgetvalue(res, 0, 0));
    } else {
        crw_warn("poll: cannot prune tombstones (%.*s); prune them with crwatch.prune_tombstones()",
                 (int)strcspn(PQresultErrorMessage(res), "\n"), PQresultErrorMessage(res));
        p->prune_refused = true;
    }
    PQclear(res);
}

static int store(poll_t *p, bool force, char *errstr, size_t n) {
    int last = -1;
    bool changes = false;
    for (int i = 1; i < p->nmarks && p->marks[i].position <= p->confirmed; i++) {
        last = i;
        changes |= p->marks[i].changes;
    }
    if (p->ntxid == 0) { /* nothing is kept in the database */
        if (last > 0)
            marks_drop(p, 0, last);
        return 0;
    }
    if (last < 0) {
        if (force)
            prune(p, true);
        return 0;
    }
    int64_t now = crw_clock_mono_us();
    if (p->conf->delivery == CRW_DELIVERY_EXACTLY_ONCE)
        changes = false;
    if (!force && !changes && now - p->last_store_us < (int64_t)p->conf->status_interval_ms * 1000) {
        /* Not yet: keep only what the table holds and the newest confirmed batch. */
        p->marks[last].changes = p->marks[last].changes || changes;
        marks_drop(p, 1, last);
        return 0;
    }
    const mark_t *m = &p->marks[last];
    char pos[24];
    crw_u64_format(pos, m->position);
    const char *params[4] = {p->conf->slot_name, pos, m->watermark, m->watermark_time};
    PGresult *res = PQexecParams(p->ses.sql,
                                 "UPDATE crwatch.offsets SET position = $2::bigint, watermark = $3::pg_snapshot, "
                                 "watermark_time = $4::timestamptz, updated_at = now(), "
                                 "pending = (SELECT coalesce(jsonb_agg(e), '[]') FROM jsonb_array_elements(pending) e "
                                 "           WHERE (e ->> 'position')::bigint > $2::bigint) "
                                 "WHERE name = $1 AND position <= $2::bigint",
                                 4, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = crw_session_error(p->ses.sql, res, "storing the watermark in crwatch.offsets", errstr, n);
    else if (strcmp(PQcmdTuples(res), "1") != 0)
        rc = lost_row(p, errstr, n);
    PQclear(res);
    if (rc < 0)
        return rc;
    p->last_store_us = now;
    crw_debug("poll: stored position %s, watermark %s", pos, m->watermark);
    marks_drop(p, 0, last); /* marks[last] is what the table holds now */
    prune(p, force);
    return 0;
}

/*
 * Exactly-once: writes down a batch's watermark before it is delivered, so
 * that a sink's checkpoint naming the batch (seek) can be resumed from.
 * store() forgets them once confirmed.
 */
static int remember_pending(poll_t *p, uint64_t position, const char *watermark, const char *time, char *errstr,
                            size_t n) {
    char pos[24];
    crw_u64_format(pos, position);
    const char *params[4] = {p->conf->slot_name, pos, watermark, time};
    PGresult *res;
    int rc = crw_session_query(p->ses.sql, &res, errstr, n,
                               "UPDATE crwatch.offsets SET pending = pending || jsonb_build_object('position', "
                               "$2::bigint, 'watermark', $3::text, 'watermark_time', $4::text) WHERE name = $1",
                               4, params);
    if (rc < 0)
        return rc;
    bool one = !strcmp(PQcmdTuples(res), "1");
    PQclear(res);
    if (!one)
        return lost_row(p, errstr, n);
    return 0;
}

static int poll_seek(crw_source_t *base, uint64_t position, char *errstr, size_t n) {
    poll_t *p = P(base);
    if (position <= p->marks[0].position)
        return 0; /* the sinks are not ahead of the stored watermark: deliver from there */
    char pos[24];
    crw_u64_format(pos, position);
    const char *params[2] = {p->conf->slot_name, pos};
    PGresult *res;
    int rc = crw_session_query(p->ses.sql, &res, errstr, n,
                               "SELECT e ->> 'watermark', e ->> 'watermark_time' FROM crwatch.offsets o, "
                               "jsonb_array_elements(o.pending) e WHERE o.name = $1 AND (e ->> 'position')::bigint = "
                               "$2::bigint",
                               2, params);
    if (rc < 0)
        return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        snprintf(errstr, n,
                 "the sinks hold poll batch %s, which crwatch.offsets does not know for %s (it holds batch %llu): "
                 "another crwatch with this slot.name, or the row was changed; refusing to guess where to go on",
                 pos, p->conf->slot_name, (unsigned long long)p->marks[0].position);
        return CRW_ERR_PREREQ;
    }
    /* Everything up to the batch is in the sinks: poll from its watermark, never deliver it again. */
    marks_clear(p);
    mark_push(p, position, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), true);
    PQclear(res);
    if (position > p->position)
        p->position = position;
    crw_info("poll: the sinks hold everything up to poll batch %s: polling from its watermark %s", pos,
             p->marks[0].watermark);
    if (p->ev.tick)
        p->ev.tick(p->ev.opaque, position);
    return 0;
}

/* ---- start ------------------------------------------------------------------ */

static bool is_stamp(const crw_resource_conf_t *rs) { return rs->poll_column && *rs->poll_column; }

int crw_poll_txid_tables(const crw_config_t *cf) {
    int k = 0;
    for (int i = 0; i < cf->nresources; i++)
        k += !crw_config_table_named_before(cf, i) && !is_stamp(&cf->resources[i]);
    return k;
}

/* Each table polled by a column has it. */
static int check_stamp_columns(crw_session_t *ses, char *errstr, size_t n) {
    const crw_config_t *cf = ses->conf;
    for (int i = 0; i < cf->nresources; i++) {
        const crw_resource_conf_t *rs = &cf->resources[i];
        if (crw_config_table_named_before(cf, i) || !is_stamp(rs))
            continue;
        const char *params[3] = {rs->schema, rs->table, rs->poll_column};
        PGresult *res;
        int rc = crw_session_query(
            ses->sql, &res, errstr, n,
            "SELECT format_type(a.atttypid, NULL), "
            "       a.atttypid IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype, 'int2'::regtype, "
            "                      'int4'::regtype, 'int8'::regtype, 'numeric'::regtype), "
            "       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum "
            "               AND i.indisvalid AND i.indpred IS NULL), "
            "       EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND g.tgname = 'zz_crwatch_write') "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace ns "
            "ON ns.oid = c.relnamespace WHERE ns.nspname = $1 AND c.relname = $2 AND a.attname = $3 "
            "AND a.attnum > 0 AND NOT a.attisdropped",
            3, params);
        if (rc < 0)
            return rc;
        if (PQntuples(res) != 1) {
            PQclear(res);
            snprintf(errstr, n, "table %s.%s has no column %s (resource.%s.poll.column)", rs->schema, rs->table,
                     rs->poll_column, rs->id);
            return CRW_ERR_PREREQ;
        }
        bool ordered = PQgetvalue(res, 0, 1)[0] == 't', indexed = PQgetvalue(res, 0, 2)[0] == 't';
        bool managed = PQgetvalue(res, 0, 3)[0] == 't';
        if (!ordered)
            snprintf(errstr, n,
                     "resource.%s.poll.column: %s is %s; polling by a column takes a timestamp, date or integer "
                     "column that every write moves forward",
                     rs->id, rs->poll_column, PQgetvalue(res, 0, 0));
        else if (managed)
            snprintf(errstr, n,
                     "table %s.%s is managed by crwatch.manage(): it is polled by txid, which misses nothing; "
                     "remove resource.%s.poll.column",
                     rs->schema, rs->table, rs->id);
        else if (!indexed)
            crw_warn("poll: no index leads with %s.%s.%s: every poll reads the whole table "
                     "(CREATE INDEX ON %s.%s (%s))",
                     rs->schema, rs->table, rs->poll_column, rs->schema, rs->table, rs->poll_column);
        PQclear(res);
        if (!ordered || managed)
            return CRW_ERR_PREREQ;
    }
    return 0;
}

int crw_poll_check(crw_session_t *ses, char *errstr, size_t n) {
    const crw_config_t *cf = ses->conf;
    if (cf->nresources == 0) {
        snprintf(errstr, n, "source=poll reads the tables it is told: set tables= or resource.<id>.table");
        return CRW_ERR_CONFIG;
    }
    PGresult *res;
    bool standby;
    int rc = crw_session_standby(ses, &standby, errstr, n);
    if (rc < 0)
        return rc;
    if (standby) {
        snprintf(errstr, n,
                 "database %s is on a standby: polling needs the primary (it writes its watermark to "
                 "crwatch.offsets, and a standby's snapshots do not list the primary's open transactions)",
                 ses->dbname);
        return CRW_ERR_PREREQ;
    }
    if ((rc = crw_session_check_tables(ses, errstr, n)) < 0)
        return rc;
    /* Tables polled by a column need nothing of crwatch's schema; the others need all of it. */
    if (crw_poll_txid_tables(cf) == 0)
        return check_stamp_columns(ses, errstr, n);
    rc = crw_session_query(ses->sql, &res, errstr, n,
                               "SELECT o IS NOT NULL AND t IS NOT NULL, "
                               "       o IS NOT NULL AND t IS NOT NULL AND has_table_privilege(o, 'SELECT') "
                               "       AND has_table_privilege(o, 'INSERT') AND has_table_privilege(o, 'UPDATE') "
                               "       AND has_table_privilege(t, 'SELECT') "
                               "FROM to_regclass('crwatch.offsets') o, to_regclass('crwatch.tombstones') t",
                               0, NULL);
    if (rc < 0)
        return rc;
    bool have = !strcmp(PQgetvalue(res, 0, 0), "t"), may = !strcmp(PQgetvalue(res, 0, 1), "t");
    PQclear(res);
    if (!have) {
        snprintf(errstr, n,
                 "source=poll needs crwatch.offsets and crwatch.tombstones: apply sql/crwatch.sql to database %s",
                 ses->dbname);
        return CRW_ERR_PREREQ;
    }
    if (!may) {
        snprintf(errstr, n,
                 "role %s may not keep crwatch.offsets or read crwatch.tombstones: run "
                 "SELECT crwatch.create_role('%s', <tables>) (or GRANT SELECT, INSERT, UPDATE ON crwatch.offsets and "
                 "SELECT ON crwatch.tombstones)",
                 PQuser(ses->sql), PQuser(ses->sql));
        return CRW_ERR_PREREQ;
    }
    for (int i = 0; i < cf->nresources; i++) {
        const crw_resource_conf_t *rs = &cf->resources[i];
        if (crw_config_table_named_before(cf, i) || is_stamp(rs))
            continue;
        const char *params[2] = {rs->schema, rs->table};
        rc = crw_session_query(
            ses->sql, &res, errstr, n,
            "WITH t AS (SELECT c.oid FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace "
            "            WHERE ns.nspname = $1 AND c.relname = $2), "
            "     x AS (SELECT a.attnum FROM pg_attribute a, t WHERE a.attrelid = t.oid AND a.attname = 'txid' "
            "            AND NOT a.attisdropped AND a.atttypid = 'xid8'::regtype) "
            "SELECT EXISTS (SELECT 1 FROM x) AND EXISTS (SELECT 1 FROM pg_attribute a, t WHERE a.attrelid = t.oid "
            "              AND a.attname = 'created_txid' AND NOT a.attisdropped), "
            "       EXISTS (SELECT 1 FROM pg_index i, t, x WHERE i.indrelid = t.oid AND i.indkey[0] = x.attnum "
            "               AND i.indpred IS NULL AND i.indisvalid), "
            "       (SELECT count(*) FROM pg_trigger g JOIN pg_proc f ON f.oid = g.tgfoid, t "
            "         WHERE g.tgrelid = t.oid AND f.pronamespace = 'crwatch'::regnamespace AND g.tgenabled = 'O' "
            "           AND f.proname IN ('tg_write', 'tg_created', 'tg_tombstone', 'tg_truncate')) = 4",
            2, params);
        if (rc < 0)
            return rc;
        const char *missing = strcmp(PQgetvalue(res, 0, 0), "t")   ? "the txid or created_txid column"
                              : strcmp(PQgetvalue(res, 0, 1), "t") ? "an index on txid"
                              : strcmp(PQgetvalue(res, 0, 2), "t") ? "crwatch's triggers"
                                                                   : NULL;
        PQclear(res);
        if (missing) {
            snprintf(errstr, n,
                     "table %s.%s is not managed for polling (it lacks %s): run SELECT crwatch.manage('%s.%s') as "
                     "its owner (again, if it was managed by an older sql/crwatch.sql; docs/sql.md), or where no "
                     "trigger may be installed poll it by a column every write sets (resource.<id>.poll.column, "
                     "docs/poll.md)",
                     rs->schema, rs->table, missing, rs->schema, rs->table);
            return CRW_ERR_PREREQ;
        }
    }
    return check_stamp_columns(ses, errstr, n);
}

/*
 * The batch query of one table: its tombstones in the order the deletes
 * happened (their resource_version: deletes of one key are serialised by its
 * row lock), then its changed rows, writer by writer.  Deletes come first
 * because a row still in the table is the latest state of its key: a
 * tombstone of that key in the same batch came before it, even when the
 * re-inserting transaction has the lower txid.
 */
static void build_query(poll_t *p, ptable_t *t) {
    const crw_relation_t *rel = t->rel;
    PGconn *c = p->ses.sql;
    char *ns = PQescapeIdentifier(c, rel->nspname, strlen(rel->nspname));
    char *tb = PQescapeIdentifier(c, rel->relname, strlen(rel->relname));
    crw_buf_t cols = CRW_BUF_INIT, cols_r = CRW_BUF_INIT;
    for (int i = 0; i < rel->natts; i++) {
        char *q = PQescapeIdentifier(c, rel->atts[i].name, strlen(rel->atts[i].name));
        crw_buf_printf(&cols, ", x.%s", q);
        crw_buf_printf(&cols_r, ", r.%s", q);
        PQfreemem(q);
    }
    crw_buf_t *b = &t->query;
    crw_buf_reset(b);
    /* crw_added: its creator is not visible in the last watermark (created_txid; rows from before
     * manage() added it: created since the last poll, or never written again since, by their
     * timestamps). crw_time: the writer's now(), PostgreSQL epoch µs. */
    crw_buf_printf(b,
                   "SELECT * FROM (SELECT 'R' AS crw_op, x.txid AS crw_txid, x.resource_version AS crw_rv, "
                   "coalesce(NOT pg_visible_in_snapshot(x.created_txid, $1::pg_snapshot), "
                   "         x.created_at > $2::timestamptz OR x.created_at = x.updated_at) AS crw_added, "
                   "((extract(epoch FROM x.updated_at) - 946684800) * 1000000)::bigint AS crw_time%s "
                   "FROM %s.%s x WHERE x.txid >= $4::xid8 "
                   "AND NOT pg_visible_in_snapshot(x.txid, $1::pg_snapshot) "
                   "UNION ALL "
                   "SELECT CASE WHEN d.truncated THEN 'T' ELSE 'D' END, d.txid, d.resource_version, false, "
                   "((extract(epoch FROM d.deleted_at) - 946684800) * 1000000)::bigint%s "
                   "FROM crwatch.tombstones d CROSS JOIN LATERAL jsonb_populate_record(NULL::%s.%s, d.object) r "
                   "WHERE d.relid = $3::oid AND d.txid >= $4::xid8 "
                   "AND NOT pg_visible_in_snapshot(d.txid, $1::pg_snapshot) "
                   ") u ORDER BY crw_op = 'R', CASE WHEN crw_op = 'R' THEN crw_txid END, crw_rv",
                   cols.data ? cols.data : "", ns, tb, cols_r.data ? cols_r.data : "", ns, tb);
    crw_buf_free(&cols);
    crw_buf_free(&cols_r);
    PQfreemem(ns);
    PQfreemem(tb);
}

/* describe_tables' work, inside its transaction. */
static int describe_in_snapshot(poll_t *p, char *errstr, size_t n) {
    const crw_config_t *cf = p->conf;
    for (int i = 0; i < p->ntables; i++)
        crw_buf_free(&p->tables[i].query);
    p->ntables = 0;
    free(p->tables);
    p->tables = crw_calloc((size_t)cf->nresources, sizeof *p->tables);
    crw_buf_reset(&p->oids);
    crw_buf_putc(&p->oids, '{');
    for (int i = 0; i < cf->nresources; i++) {
        const crw_resource_conf_t *rs = &cf->resources[i];
        if (crw_config_table_named_before(cf, i))
            continue;
        const crw_relation_t *rel = crw_catalog_describe(p->cat, rs->schema, rs->table, errstr, n);
        if (!rel)
            return CRW_ERR_PREREQ;
        ptable_t *t = &p->tables[p->ntables++];
        t->rel = rel;
        if ((t->stamp = p->stamps[i])) {
            crw_strlist_t pk = {0};
            if (rs->key.n == 0)
                crw_catalog_primary_key(p->cat, rel->relid, &pk);
            const crw_strlist_t *key = rs->key.n ? &rs->key : &pk;
            int rc = crw_stamp_prepare(t->stamp, p->ses.sql, rel, (const char *const *)key->v, key->n, errstr, n);
            crw_strlist_clear(&pk);
            if (rc < 0)
                return rc;
        } else
            build_query(p, t);
        crw_buf_printf(&p->oids, "%s%u", p->ntables > 1 ? "," : "", rel->relid);
    }
    crw_buf_putc(&p->oids, '}');
    const char *oids[1] = {p->oids.data};
    PGresult *res;
    int rc = crw_session_query(p->ses.sql, &res, errstr, n, "SELECT " COLUMNS_DIGEST, 1, oids);
    if (rc < 0)
        return rc;
    free(p->schema);
    p->schema = crw_strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

/*
 * Describes the watched tables as they are now, builds their batch queries
 * and remembers their OIDs and the digest of their columns, all in one
 * snapshot: every poll compares the digest and describes again when a table
 * was altered.
 */
static int describe_tables(poll_t *p, char *errstr, size_t n) {
    int rc = crw_session_exec(p->ses.sql, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", errstr, n);
    if (rc < 0)
        return rc;
    if ((rc = describe_in_snapshot(p, errstr, n)) < 0) {
        PQclear(PQexec(p->ses.sql, "ROLLBACK"));
        return rc;
    }
    return crw_session_exec(p->ses.sql, "COMMIT", errstr, n);
}

/* The stored watermark of this crwatch, or a new one (first start) registered in crwatch.offsets. */
static int load_offsets(poll_t *p, char *errstr, size_t n) {
    const char *params[1] = {p->conf->slot_name};
    PGresult *res;
    int rc = crw_session_query(p->ses.sql, &res, errstr, n,
                               "SELECT position, watermark::text, watermark_time::text FROM crwatch.offsets "
                               "WHERE name = $1 AND watermark IS NOT NULL",
                               1, params);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 1) {
        p->had_row = true;
        uint64_t stored = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        if (stored > p->position)
            p->position = stored;
        mark_push(p, p->position, PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2), false);
        crw_info("poll: resuming %s at position %llu, watermark %s", p->conf->slot_name,
                 (unsigned long long)stored, PQgetvalue(res, 0, 1));
        PQclear(res);
        if (p->ev.snapshot && !p->snapshot_done) {
            crw_src_snapshot_t none = {NULL, p->position, 0};
            if ((rc = p->ev.snapshot(p->ev.opaque, p->cat, &none)) < 0)
                return rc;
            p->snapshot_done = true;
        }
        return 0;
    }
    PQclear(res);
    if (p->had_row) /* this process kept a watermark there: it went, and what it covered is unknown */
        return lost_row(p, errstr, n);
    /*
     * First start: the current snapshot is the watermark (what committed
     * before it is the tables' state, as a new slot's start is); the cache,
     * if any, reads that very snapshot.  The row goes in first, with a
     * snapshot no newer: from then on no other poller prunes a tombstone
     * this one still needs.
     */
    p->position = p->position ? p->position : 1;
    char pos[24];
    crw_u64_format(pos, p->position);
    const char *ins[2] = {p->conf->slot_name, pos};
    rc = crw_session_query(p->ses.sql, &res, errstr, n,
                           "INSERT INTO crwatch.offsets (name, position, watermark, watermark_time) "
                           "VALUES ($1, $2::bigint, pg_current_snapshot(), now()) ON CONFLICT (name) DO NOTHING",
                           2, ins);
    if (rc < 0)
        return rc;
    bool inserted = !strcmp(PQcmdTuples(res), "1");
    PQclear(res);
    if (!inserted) {
        snprintf(errstr, n,
                 "crwatch.offsets has a row named %s that this crwatch cannot use (another role's, or one without "
                 "a watermark): give this one its own slot.name",
                 p->conf->slot_name);
        return CRW_ERR_PREREQ;
    }
    if ((rc = crw_session_exec(p->ses.sql, "BEGIN ISOLATION LEVEL REPEATABLE READ", errstr, n)) < 0)
        return rc;
    rc = crw_session_query(p->ses.sql, &res, errstr, n,
                           "SELECT pg_current_snapshot()::text, clock_timestamp()::text, "
                           "CASE WHEN $1 THEN pg_export_snapshot() END",
                           1, (const char *[]){p->ev.snapshot && !p->snapshot_done ? "t" : "f"});
    if (rc < 0) {
        PQclear(PQexec(p->ses.sql, "ROLLBACK"));
        return rc;
    }
    char *wm = crw_strdup(PQgetvalue(res, 0, 0)), *wt = crw_strdup(PQgetvalue(res, 0, 1));
    char *exported = PQgetisnull(res, 0, 2) ? NULL : crw_strdup(PQgetvalue(res, 0, 2));
    PQclear(res);
    if (p->ev.snapshot && !p->snapshot_done) {
        /* The rows as of the first watermark: what the first poll does not bring. */
        crw_src_snapshot_t snap = {exported, p->position, 0};
        rc = p->ev.snapshot(p->ev.opaque, p->cat, &snap);
        if (rc < 0) {
            free(exported);
            goto out;
        }
        p->snapshot_done = true;
    }
    free(exported);
    if ((rc = crw_session_exec(p->ses.sql, "COMMIT", errstr, n)) < 0)
        goto out;
    const char *upd[3] = {p->conf->slot_name, wm, wt};
    rc = crw_session_query(p->ses.sql, &res, errstr, n,
                           "UPDATE crwatch.offsets SET watermark = $2::pg_snapshot, watermark_time = $3::timestamptz "
                           "WHERE name = $1",
                           3, upd);
    if (rc < 0)
        goto out;
    PQclear(res);
    p->had_row = true;
    mark_push(p, p->position, wm, wt, false);
    crw_info("poll: first start of %s: changes committed after snapshot %s are streamed", p->conf->slot_name, wm);
out:
    if (rc < 0)
        PQclear(PQexec(p->ses.sql, "ROLLBACK"));
    free(wm);
    free(wt);
    return rc;
}

/*
 * One poller per slot.name: a session lock on ses.sql, held while it is
 * connected, the same lock the logical source takes (session.c's
 * crw_session_lock_slot), so a poller and a logical stream of one slot.name
 * (source=auto on two machines) exclude each other too.  @returns 0, or
 * CRW_ERR_STANDBY (the driver stands by) while another has it.
 */
static int lock_name(poll_t *p, char *errstr, size_t n) {
    const char *params[1] = {p->conf->slot_name};
    PGresult *res;
    int rc = crw_session_query(p->ses.sql, &res, errstr, n,
                               "SELECT pg_try_advisory_lock(hashtext('crwatch.slot'), hashtext($1)), "
                               "(SELECT string_agg(l.pid::text, ',') FROM pg_locks l WHERE l.locktype = 'advisory' "
                               "AND l.classid = hashtext('crwatch.slot')::oid AND l.objid = hashtext($1)::oid "
                               "AND l.granted AND l.pid <> pg_backend_pid())",
                               1, params);
    if (rc < 0)
        return rc;
    bool got = PQgetvalue(res, 0, 0)[0] == 't';
    if (!got)
        snprintf(errstr, n, "another crwatch polls as %s (its session, PID %s, holds the lock of that name)",
                 p->conf->slot_name, PQgetisnull(res, 0, 1) ? "?" : PQgetvalue(res, 0, 1));
    PQclear(res);
    return got ? 0 : CRW_ERR_STANDBY; /* the driver stands by, as for a slot (docs/operations.md) */
}

/* Once per process: what timestamp polling can miss, and how the reconciliation bounds it. */
static void warn_stamp_mode(poll_t *p) {
    const crw_config_t *cf = p->conf;
    for (int i = 0; i < cf->nresources && !p->warned; i++) {
        const crw_resource_conf_t *rs = &cf->resources[i];
        if (!p->stamps[i])
            continue;
        crw_warn("poll: %s.%s is polled by its column %s, not by txid: a change is seen by the next poll only when "
                 "its transaction commits within poll.lag.ms=%d of setting %s and %s moves; deletes, longer "
                 "transactions and writes that leave %s as it was are seen by the reconciliation every "
                 "resync.interval.ms=%d; each start lists the table again (docs/poll.md)",
                 rs->schema, rs->table, rs->poll_column, cf->poll_lag_ms, rs->poll_column, rs->poll_column,
                 rs->poll_column, cf->resync_interval_ms);
    }
    p->warned = true;
}

static int poll_start(crw_source_t *base, char *errstr, size_t n) {
    poll_t *p = P(base);
    const crw_config_t *cf = p->conf;
    if (p->endpos_asked) {
        snprintf(errstr, n, "--endpos goes with source=logical (a polling source has no WAL end to stop at)");
        return CRW_ERR_CONFIG;
    }
    poll_close(base);
    int rc = crw_session_open_sql(&p->ses, errstr, n);
    if (rc < 0)
        return rc;
    crw_catalog_set_conn(p->cat, p->ses.sql);
    if ((rc = crw_poll_check(&p->ses, errstr, n)) < 0)
        goto fail;
    if ((p->ntxid && (rc = lock_name(p, errstr, n)) < 0) || (rc = describe_tables(p, errstr, n)) < 0)
        goto fail;
    if (p->ntxid == 0) {
        /* Only tables polled by a column: no watermark to keep, each start lists them. */
        mark_push(p, p->position, "", "", false);
        if (p->ev.snapshot && !p->snapshot_done) {
            crw_src_snapshot_t none = {NULL, p->position, 0};
            if ((rc = p->ev.snapshot(p->ev.opaque, p->cat, &none)) < 0)
                goto fail;
            p->snapshot_done = true;
        }
    } else if ((rc = load_offsets(p, errstr, n)) < 0)
        goto fail;
    warn_stamp_mode(p);
    /* Everything up to the stored watermark is confirmed. */
    if (p->ev.tick)
        p->ev.tick(p->ev.opaque, p->marks[0].position);
    /* The reading session: the same settings (DateStyle, TimeZone, ...), so values are the logical source's. */
    crw_session_t rd;
    crw_session_init(&rd, cf, p->ses.conninfo);
    rc = crw_session_open_sql(&rd, errstr, n);
    p->read = rd.sql;
    rd.sql = NULL;
    crw_session_free(&rd);
    if (rc < 0)
        goto fail;
    p->at_end = false;
    p->next_poll_us = 0;
    p->last_store_us = crw_clock_mono_us();
    crw_info("streaming by polling %d table(s) of database %s every %d ms (watermark %s, poll batch %llu)",
             p->ntables, p->ses.dbname, cf->poll_interval_ms, cf->slot_name, (unsigned long long)p->position);
    return 0;
fail:
    poll_close(base);
    return rc;
}

/* ---- one poll --------------------------------------------------------------- */

typedef struct {
    poll_t *p;
    uint64_t position;   /* this batch */
    uint64_t lsn;        /* where it read (pglsn) */
    const char *watermark, *watermark_time; /* the one it leaves */
    int64_t time;        /* when it read, PostgreSQL epoch µs: the time of changes without their own */
    bool open;           /* its source transaction began */
    bool truncated;      /* the last row was a truncate tombstone of trunc_txid in this table (TRUNCATED is out) */
    uint64_t trunc_txid;
    long rows;
} batch_t;

/*
 * A batch is one source transaction (of many writers: each change carries
 * its own xid and time), so everything that confirms or checkpoints a
 * position covers whole batches.  It begins at its first row; under
 * exactly-once its watermark is written down first (remember_pending), so
 * a sink's checkpoint naming it can be resumed from.
 */
static int begin_batch(batch_t *b, char *errstr, size_t n) {
    poll_t *p = b->p;
    int rc;
    if (p->conf->delivery == CRW_DELIVERY_EXACTLY_ONCE &&
        (rc = remember_pending(p, b->position, b->watermark, b->watermark_time, errstr, n)) < 0)
        return rc;
    crw_src_txn_t tx = {b->position, b->lsn, 0, b->time};
    b->open = true;
    p->in_txn = true;
    return p->ev.begin(p->ev.opaque, &tx);
}

/* One row of a batch result: begins the batch's transaction when it is the first, then the change. */
static int deliver_row(batch_t *b, const ptable_t *t, const PGresult *res, crw_pgo_col_t *cols, char *errstr,
                       size_t n) {
    poll_t *p = b->p;
    const crw_relation_t *rel = t->rel;
    uint64_t txid = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
    int rc;
    if (!b->open && (rc = begin_batch(b, errstr, n)) < 0)
        return rc;
    char op = PQgetvalue(res, 0, 0)[0];
    if (op == 'T' && b->truncated && txid == b->trunc_txid)
        return 0; /* one TRUNCATED for the rows one TRUNCATE took */
    b->truncated = op == 'T';
    b->trunc_txid = txid;
    crw_session_cols(res, META_COLS, rel->natts, cols);
    crw_pgo_tuple_t row = {rel->natts, cols};
    /* The event id: the writer and the row version, the same however often it is read. */
    crw_buf_reset(&p->idbuf);
    crw_buf_puts(&p->idbuf, PQgetvalue(res, 0, 1));
    crw_buf_putc(&p->idbuf, '/');
    crw_buf_puts(&p->idbuf, PQgetvalue(res, 0, 2));
    crw_change_t ch = {.rel = rel,
                       .id = p->idbuf.data,
                       .idlen = p->idbuf.len,
                       .xid = (uint32_t)txid,
                       .time = strtoll(PQgetvalue(res, 0, 4), NULL, 10)};
    if (op == 'T')
        ch.op = CRW_OP_TRUNCATE;
    else if (op == 'D') {
        ch.op = CRW_OP_DELETE;
        ch.oldtup = &row;
        ch.oldkind = 'O';
    } else {
        ch.op = PQgetvalue(res, 0, 3)[0] == 't' ? CRW_OP_INSERT : CRW_OP_UPDATE;
        ch.newtup = &row;
    }
    b->rows++;
    return p->ev.change(p->ev.opaque, &ch);
}

typedef struct {
    batch_t *b;
    const ptable_t *t;
    crw_pgo_col_t *cols;
    char *errstr;
    size_t n;
    int err; /* deliver_row's (not the query's) */
} read_t;

static int read_row(void *opaque, const PGresult *res) {
    read_t *r = opaque;
    return r->err = deliver_row(r->b, r->t, res, r->cols, r->errstr, r->n);
}

/* A change of a table polled by a column (poll_stamp.c) for the batch. */
typedef struct {
    batch_t *b;
    char *errstr;
    size_t n;
} stamp_ctx_t;

static int stamp_emit(void *opaque, const crw_change_t *ch) {
    stamp_ctx_t *x = opaque;
    batch_t *b = x->b;
    int rc;
    if (!b->open && (rc = begin_batch(b, x->errstr, x->n)) < 0)
        return rc;
    b->rows++;
    return b->p->ev.change(b->p->ev.opaque, ch);
}

/* Reads one table's part of the batch, row by row. */
static int read_table(batch_t *b, const ptable_t *t, const char *watermark, const char *wm_time, char *errstr,
                      size_t n) {
    char oid[16];
    snprintf(oid, sizeof oid, "%u", t->rel->relid);
    /* The index bound as a constant (pg_snapshot text is xmin:xmax:xip,...): the planner sees how few rows pass. */
    char xmin[24];
    snprintf(xmin, sizeof xmin, "%.*s", (int)strcspn(watermark, ":"), watermark);
    const char *params[4] = {watermark, wm_time, oid, xmin};
    read_t r = {b, t, crw_calloc(t->rel->natts ? (size_t)t->rel->natts : 1, sizeof(crw_pgo_col_t)), errstr, n, 0};
    b->truncated = false; /* another table */
    long rc = crw_session_rows(b->p->read, t->query.data, 4, params, read_row, &r, "polling", errstr, n);
    free(r.cols);
    /* A table changed under the query (a column dropped, ...): start again, which describes the tables
     * anew; a lasting error is retried with the driver's backoff, saying why. */
    if (r.err < 0)
        return r.err;
    return rc == CRW_ERR_PREREQ ? CRW_ERR_CONN : rc < 0 ? (int)rc : 0;
}

/* One batch: what committed since the last watermark; *rows: how many changes it read. */
static int poll_once(poll_t *p, long *rows, char *errstr, size_t n) {
    const mark_t *last = &p->marks[p->nmarks - 1];
    int64_t started = crw_clock_mono_us();
    int rc = crw_session_exec(p->read, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", errstr, n);
    if (rc < 0)
        return rc;
    /* The snapshot, and (in it) a digest of the watched tables' columns: a table altered since the
     * last poll is described again before its rows are read, so they come with its new columns. */
    const char *oids[1] = {p->oids.data};
    PGresult *res = PQexecParams(p->read,
                                 "SELECT pg_current_snapshot()::text, clock_timestamp()::text, pg_current_wal_lsn()::text, "
                                 COLUMNS_DIGEST ", ((extract(epoch FROM clock_timestamp()) - 946684800) * 1000000)::bigint",
                                 1, NULL, oids, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = crw_session_error(p->read, res, "taking the poll's snapshot", errstr, n);
        PQclear(res);
        PQclear(PQexec(p->read, "ROLLBACK"));
        return rc;
    }
    char *wm = crw_strdup(PQgetvalue(res, 0, 0)), *wt = crw_strdup(PQgetvalue(res, 0, 1));
    uint64_t lsn = 0;
    crw_lsn_parse(PQgetvalue(res, 0, 2), &lsn);
    bool altered = strcmp(p->schema, PQgetvalue(res, 0, 3)) != 0;
    int64_t read_at = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
    PQclear(res);
    if (altered) {
        crw_info("poll: a watched table was altered: describing the tables again");
        if ((rc = describe_tables(p, errstr, n)) < 0) {
            PQclear(PQexec(p->read, "ROLLBACK"));
            free(wm);
            free(wt);
            return rc;
        }
    }
    batch_t b = {.p = p, .position = p->position + 1, .lsn = lsn, .watermark = wm, .watermark_time = wt,
                 .time = read_at};
    stamp_ctx_t sx = {&b, errstr, n};
    crw_stamp_poll_t sp = {started, crw_clock_mono_us(), b.position, p->confirmed};
    for (int i = 0; i < p->ntables && rc == 0; i++)
        rc = p->tables[i].stamp ? crw_stamp_read(p->tables[i].stamp, p->read, &sp, stamp_emit, &sx, errstr, n)
                                : read_table(&b, &p->tables[i], last->watermark, last->watermark_time, errstr, n);
    /* A query that failed on a live connection is retried (the tables are described again); one that keeps
     * failing is no passing change, and stops crwatch rather than retry it for ever. */
    if (rc == CRW_ERR_CONN && PQstatus(p->read) == CONNECTION_OK && ++p->query_errors >= QUERY_ERRORS_MAX) {
        size_t l = strlen(errstr);
        snprintf(errstr + l, n - l, " (%d polls in a row)", p->query_errors);
        rc = CRW_ERR_PREREQ;
    } else if (rc == 0)
        p->query_errors = 0;
    if (rc == 0 && (rc = crw_session_exec(p->read, "COMMIT", errstr, n)) == 0) {
        p->position = b.position;
        *rows = b.rows;
        mark_push(p, b.position, wm, wt, b.rows > 0);
        if (b.open) {
            p->in_txn = false;
            rc = p->ev.commit(p->ev.opaque, b.position);
        } else if (p->ev.tick)
            p->ev.tick(p->ev.opaque, b.position);
        /* bench/poll.sh reads the idle polls' times from this line. */
        crw_debug("poll: batch %llu: %ld changes in %.3f ms, watermark %s", (unsigned long long)b.position, b.rows,
                  (double)(crw_clock_mono_us() - started) / 1000.0, wm);
    } else
        PQclear(PQexec(p->read, "ROLLBACK"));
    free(wm);
    free(wt);
    if (p->stop_after_commit)
        p->at_end = true;
    return rc;
}

static int poll_poll(crw_source_t *base, int timeout_ms, char *errstr, size_t n) {
    poll_t *p = P(base);
    if (!p->read)
        return CRW_ERR_CONN;
    int rc = store(p, false, errstr, n);
    if (rc < 0)
        return rc;
    if (p->at_end)
        return 0;
    int64_t now = crw_clock_mono_us(), wait = p->next_poll_us - now;
    if (wait > 0) {
        if (wait > (int64_t)timeout_ms * 1000)
            wait = (int64_t)timeout_ms * 1000;
        struct timespec ts = {(time_t)(wait / 1000000), (long)(wait % 1000000) * 1000};
        nanosleep(&ts, NULL); /* a signal ends it early: the driver looks at its stop flag */
        return 0;
    }
    p->next_poll_us = now + (int64_t)p->conf->poll_interval_ms * 1000;
    long rows = 0;
    rc = poll_once(p, &rows, errstr, n);
    if (rc == 0 && rows >= p->conf->poll_batch_rows)
        p->next_poll_us = now; /* catching up: the next poll at once, the interval again once one is small */
    return rc;
}

static int poll_finish(crw_source_t *base, int timeout_ms) {
    (void)timeout_ms;
    poll_t *p = P(base);
    char err[512];
    int rc = p->ses.sql ? store(p, true, err, sizeof err) : CRW_ERR_CONN;
    if (rc < 0 && p->ses.sql)
        crw_warn("poll: %s", err);
    marks_clear(p); /* stored: poll_close has nothing left to store */
    poll_close(base);
    return rc;
}

static const crw_source_ops_t poll_ops = {
    .name = "poll",
    .start = poll_start,
    .poll = poll_poll,
    .confirm = poll_confirm,
    .keepalive = poll_keepalive,
    .stop_after_commit = poll_stop_after_commit,
    .at_end = poll_at_end,
    .in_txn = poll_in_txn,
    .finish = poll_finish,
    .close = poll_close,
    .dbname = poll_dbname,
    .catalog = poll_catalog,
    .seek = poll_seek,
    .format_position = poll_format_position,
    .destroy = poll_destroy,
};

CRW_SOURCE_CONSTRUCTOR(crw_source_poll_new) {
    (void)err;
    (void)errstr;
    (void)errstr_size;
    poll_t *p = crw_calloc(1, sizeof *p);
    p->base.ops = &poll_ops;
    p->conf = conf;
    crw_session_init(&p->ses, conf, opts->conninfo);
    p->ev = *ev;
    p->endpos_asked = opts->endpos != 0;
    p->rels = crw_relcache_new();
    p->cat = crw_catalog_new(p->rels);
    p->stamps = crw_calloc((size_t)conf->nresources + 1, sizeof *p->stamps);
    for (int i = 0; i < conf->nresources; i++)
        if (!crw_config_table_named_before(conf, i) && is_stamp(&conf->resources[i]))
            p->stamps[i] = crw_stamp_new(conf, &conf->resources[i]);
    p->ntxid = crw_poll_txid_tables(conf);
    return &p->base;
}
