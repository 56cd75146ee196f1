/*
 * snapshot.c — the snapshot source (see snapshot.h; docs/snapshots.md).
 *
 * Connections: `ctl` takes (or imports) the snapshot and stays idle in its
 * REPEATABLE READ transaction for the whole read, answering the catalog;
 * each worker imports the snapshot and runs, one chunk at a time, a
 * boundary query (the key snapshot.chunk.rows rows on, from the PK index)
 * and then the chunk's COPY, without blocking: one thread drives every
 * connection.  The chunk being delivered drains its worker's buffer; the
 * other workers read ahead up to READ_AHEAD_BYTES each and then leave their
 * data in the socket, where the server waits for them.
 *
 * Chunks of a table are cut in key order, (lo, hi], hi from the boundary
 * query: lo of the next chunk is hi of the last.  A chunk is delivered as
 * one source transaction with the next position; it is done once the
 * pipeline confirmed that position.  What is not done when the connection
 * or the process goes is read again, in a new snapshot.
 */
#include "source/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "decode/change.h"
#include "decode/copytext.h"
#include "source/session.h"

#define READ_AHEAD_BYTES ((size_t)4 << 20) /* rows a worker buffers ahead of delivery */
#define ROWS_PER_POLL 4096                 /* rows delivered per poll() call before the driver runs again */
#define STATE_WRITE_MS 200                 /* the confirmed position is written at most this often */
#define STATE_VERSION 1

typedef struct {
    crw_strlist_t v; /* the key columns' text values */
    bool set;        /* false: unbounded */
} bound_t;

typedef struct {
    int table;
    bound_t lo, hi;    /* key values, or block numbers (ctid) */
    uint64_t since;    /* a catch-up: the rows written by transactions from this xid8 on; 0: a range */
    uint64_t position; /* the position it was last delivered with; 0: never */
    int epoch;         /* the snapshot it was last delivered from */
    bool done;         /* that position was confirmed */
    bool inflight;     /* a worker reads it (this connection epoch) */
    bool delivered;    /* delivered whole (this connection epoch) */
    bool dropped;      /* void: its table was rewritten since it was read, and is read again */
} chunk_t;

/* One snapshot read from: each start takes one. */
typedef struct {
    uint64_t xmin;      /* the oldest transaction (xid8) that may have written a row here this snapshot did not see:
                         * its xmin, or above it (snap_since) */
    uint32_t *filenode; /* per table: a rewrite (VACUUM FULL, CLUSTER) changes it, and with it every ctid */
} epoch_t;

typedef struct {
    crw_snapshot_table_t pub;
    const crw_resource_conf_t *rs;
    const char *filter;        /* resource.<id>.filter, NULL when none applies */
    const crw_relation_t *rel; /* as described in the snapshot (the source's relation cache) */
    char *qname;               /* "schema"."table" */
    char *cols;                /* the quoted column list */
    crw_strlist_t keyq;        /* quoted primary key columns */
    crw_strlist_t keytype;     /* their types, format_type() */
    crw_strlist_t keyname;     /* their names */
    int *keyidx;               /* their places in rel->atts */
    bool by_ctid;              /* chunks are block ranges */
    int64_t nblocks;           /* ctid: the table's blocks when the snapshot was taken */
    int64_t chunk_blocks;      /* ctid: blocks per chunk */
    uint32_t filenode;
    bound_t frontier;          /* hi of the last chunk cut */
    bool cut_all;              /* the last chunk (hi unbounded) is cut */
    bool cutting;              /* a boundary query is in flight */
    int nchunks, ndone;
} stable_t;

enum { W_IDLE, W_BOUND, W_COPY, W_READ }; /* W_READ: the COPY ended, rows still buffered */

typedef struct {
    crw_session_t ses;
    int state;
    int chunk; /* W_COPY / W_READ: the chunk read; -1 */
    int table; /* W_BOUND: the table cut */
    bool copying; /* W_COPY: the server answered COPY OUT */
    crw_buf_t buf;
    size_t off; /* buf[off..] is not delivered yet */
} worker_t;

typedef struct {
    crw_source_t base;
    const crw_config_t *conf;
    crw_source_events_t ev;
    crw_snapshot_opts_t so;
    char *conninfo;
    crw_session_t ctl;
    crw_relcache_t *rels;
    crw_catalog_t *cat;
    stable_t *t;
    int nt;
    chunk_t *ch;
    int nch, capch;
    int *acks; /* delivered chunks in position order, from acks_head: the ones not yet confirmed */
    int nacks, capacks, acks_head;
    worker_t *w;
    int nw;
    int active; /* the worker whose chunk is being delivered; -1 */
    uint64_t next_position, confirmed;
    epoch_t *ep;
    int nep;
    char *snapshot;
    uint64_t snap_lsn, snap_xmin;
    int64_t snap_time;
    char *dbname;
    bool loaded, in_txn, at_end, stop_after_commit, finished_before, warned_new_snapshot;
    int state_fd;
    int64_t state_good; /* bytes of whole lines read back (what follows was torn) */
    uint64_t state_confirmed;
    int64_t state_written_ms;
    int64_t row_in_chunk;
    crw_buf_t scratch, id, sql;
    crw_pgo_col_t *cols;
    crw_snapshot_table_t *view; /* crw_snapshot_tables' copy */
    char lsn_str[CRW_LSN_BUFSIZE];
} snap_t;

#define S(base) ((snap_t *)(base))

/* ---- bounds ---------------------------------------------------------- */

static void bound_clear(bound_t *b) {
    crw_strlist_clear(&b->v);
    b->set = false;
}

static void bound_copy(bound_t *dst, const bound_t *src) {
    bound_clear(dst);
    for (int i = 0; i < src->v.n; i++)
        crw_strlist_add(&dst->v, src->v.v[i]);
    dst->set = src->set;
}

/* b as JSON: an array of strings, or null. */
static void bound_json(crw_buf_t *out, const bound_t *b) {
    if (!b->set) {
        crw_buf_puts(out, "null");
        return;
    }
    crw_buf_putc(out, '[');
    for (int i = 0; i < b->v.n; i++) {
        if (i)
            crw_buf_putc(out, ',');
        crw_buf_put_json_str(out, b->v.v[i], strlen(b->v.v[i]));
    }
    crw_buf_putc(out, ']');
}

/* "(k1, k2) op ('v1'::t1, 'v2'::t2)" for table t onto out. */
static void put_compare(PGconn *c, crw_buf_t *out, const stable_t *t, const char *op, const bound_t *b) {
    crw_buf_putc(out, '(');
    for (int k = 0; k < t->keyq.n; k++)
        crw_buf_printf(out, "%s%s", k ? ", " : "", t->keyq.v[k]);
    crw_buf_printf(out, ") %s (", op);
    for (int k = 0; k < t->keyq.n && k < b->v.n; k++) {
        char *lit = PQescapeLiteral(c, b->v.v[k], strlen(b->v.v[k]));
        crw_buf_printf(out, "%s%s::%s", k ? ", " : "", lit ? lit : "NULL", t->keytype.v[k]);
        PQfreemem(lit);
    }
    crw_buf_putc(out, ')');
}

/* The xid8 of a row's xmin (a 32-bit xid), taken in the epoch of the snapshot's xmax. */
#define ROW_XID8                                                                                                       \
    "(((pg_snapshot_xmax(pg_current_snapshot())::text::int8 >> 32) - (xmin::text::int8 > "                             \
    "(pg_snapshot_xmax(pg_current_snapshot())::text::int8 & 4294967295))::int) << 32 | xmin::text::int8)"

/*
 * " WHERE filter AND <range>" onto out: the range is lo < key <= hi (key
 * chunks), lo <= block < hi (ctid chunks), or, for a catch-up, the rows
 * written by a transaction from xid8 since on.  A NULL or unset bound is open.
 */
static void put_where(PGconn *c, crw_buf_t *out, const stable_t *t, const bound_t *lo, const bound_t *hi,
                      uint64_t since) {
    const char *sep = " WHERE ";
    if (t->filter) {
        crw_buf_printf(out, "%s(%s)", sep, t->filter);
        sep = " AND ";
    }
    if (since) {
        /* xids 0-2 are frozen or bootstrap rows: old.  A subtransaction's xid is above its top's, so >= xmin
         * of the snapshot catches it too. */
        crw_buf_printf(out, "%sxmin::text::int8 >= 3 AND " ROW_XID8 " >= %" PRIu64, sep, since);
        return;
    }
    if (t->by_ctid) {
        if (lo && lo->set && lo->v.n) {
            crw_buf_printf(out, "%sctid >= '(%s,0)'::tid", sep, lo->v.v[0]);
            sep = " AND ";
        }
        if (hi && hi->set && hi->v.n)
            crw_buf_printf(out, "%sctid < '(%s,0)'::tid", sep, hi->v.v[0]);
        return;
    }
    if (lo && lo->set) {
        crw_buf_puts(out, sep);
        put_compare(c, out, t, ">", lo);
        sep = " AND ";
    }
    if (hi && hi->set) {
        crw_buf_puts(out, sep);
        put_compare(c, out, t, "<=", hi);
    }
}

/* ---- the state file --------------------------------------------------- */

static int state_write(snap_t *s, const crw_buf_t *line, bool sync, char *errstr, size_t n) {
    if (s->state_fd < 0)
        return 0;
    size_t off = 0;
    while (off < line->len) {
        ssize_t w = write(s->state_fd, line->data + off, line->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(errstr, n, "cannot write the snapshot state file %s: %s", s->so.state_file, strerror(errno));
            return CRW_ERR_IO;
        }
        off += (size_t)w;
    }
    if (sync && fdatasync(s->state_fd) < 0) {
        snprintf(errstr, n, "cannot sync the snapshot state file %s: %s", s->so.state_file, strerror(errno));
        return CRW_ERR_IO;
    }
    return 0;
}

/* The header: which tables, keys and filters the chunks of this file refer to. */
static void state_header(const snap_t *s, crw_buf_t *out) {
    crw_buf_printf(out, "{\"backfill\":%d,\"tables\":[", STATE_VERSION);
    for (int i = 0; i < s->nt; i++) {
        const stable_t *t = &s->t[i];
        if (i)
            crw_buf_putc(out, ',');
        crw_buf_puts(out, "{\"table\":");
        char q[300];
        snprintf(q, sizeof q, "%s.%s", t->pub.schema, t->pub.table);
        crw_buf_put_json_str(out, q, strlen(q));
        crw_buf_puts(out, ",\"filter\":");
        const char *f = t->filter ? t->filter : "";
        crw_buf_put_json_str(out, f, strlen(f));
        /* what the recorded bounds are made of: block numbers, or values of these key columns */
        crw_buf_printf(out, ",\"chunking\":\"%s\",\"key\":[", t->by_ctid ? "ctid" : "key");
        for (int k = 0; k < t->keyname.n; k++) {
            if (k)
                crw_buf_putc(out, ',');
            crw_buf_put_json_str(out, t->keyname.v[k], strlen(t->keyname.v[k]));
            crw_buf_putc(out, ',');
            crw_buf_put_json_str(out, t->keytype.v[k], strlen(t->keytype.v[k]));
        }
        crw_buf_puts(out, "]}");
    }
    crw_buf_puts(out, "]}\n");
}

static void state_confirmed(snap_t *s, bool force) {
    if (s->state_fd < 0 || s->confirmed == s->state_confirmed)
        return;
    int64_t now = crw_clock_mono_ms();
    if (!force && now - s->state_written_ms < STATE_WRITE_MS)
        return;
    crw_buf_t b = CRW_BUF_INIT;
    crw_buf_printf(&b, "{\"confirmed\":%" PRIu64 "}\n", s->confirmed);
    char err[256];
    if (state_write(s, &b, false, err, sizeof err) < 0)
        crw_warn("%s", err);
    else
        s->state_confirmed = s->confirmed;
    s->state_written_ms = now;
    crw_buf_free(&b);
}

static chunk_t *chunk_add(snap_t *s, int table) {
    if (s->nch == s->capch) {
        s->capch = s->capch ? s->capch * 2 : 64;
        s->ch = crw_realloc(s->ch, sizeof *s->ch * (size_t)s->capch);
    }
    chunk_t *c = &s->ch[s->nch++];
    memset(c, 0, sizeof *c);
    c->table = table;
    s->t[table].nchunks++;
    return c;
}

static epoch_t *epoch_add(snap_t *s, uint64_t xmin) {
    s->ep = crw_realloc(s->ep, sizeof *s->ep * (size_t)(s->nep + 1));
    epoch_t *e = &s->ep[s->nep++];
    e->xmin = xmin;
    e->filenode = crw_calloc((size_t)s->nt + 1, sizeof *e->filenode);
    return e;
}

/* Table ti was rewritten: what was read of it by block says nothing now; it is read again from the start. */
static void table_void(snap_t *s, int ti) {
    stable_t *t = &s->t[ti];
    for (int i = 0; i < s->nch; i++)
        if (s->ch[i].table == ti)
            s->ch[i].dropped = true;
    bound_clear(&t->frontier);
    t->cut_all = false;
    t->nchunks = t->ndone = 0;
}

static void bound_from_json(bound_t *b, json_object *j) {
    bound_clear(b);
    if (!j || !json_object_is_type(j, json_type_array))
        return;
    b->set = true;
    for (size_t i = 0; i < json_object_array_length(j); i++)
        crw_strlist_add(&b->v, json_object_get_string(json_object_array_get_idx(j, i)));
}

/* Reads the state file back (--resume).  @returns 0, or CRW_ERR_CONFIG when it belongs to another backfill. */
static int state_replay(snap_t *s, FILE *f, char *errstr, size_t n) {
    crw_buf_t expect = CRW_BUF_INIT;
    state_header(s, &expect);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    s->state_good = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (line[len - 1] != '\n')
            break; /* torn by a crash: what follows was never acted on */
        if (lineno == 1) {
            if ((size_t)len != expect.len || memcmp(line, expect.data, expect.len)) {
                snprintf(errstr, n,
                         "--resume: %s belongs to a backfill of other tables, filters, chunking or primary keys; run "
                         "without --resume to start over",
                         s->so.state_file);
                rc = CRW_ERR_CONFIG;
                break;
            }
            s->state_good += len;
            continue;
        }
        json_object *j = json_tokener_parse(line), *v;
        if (!j)
            break;
        if (json_object_object_get_ex(j, "cut", &v)) {
            int64_t idx = json_object_get_int64(v);
            json_object *tj = NULL, *lo = NULL, *hi = NULL;
            json_object_object_get_ex(j, "table", &tj);
            int ti = tj ? json_object_get_int(tj) : -1;
            if (idx != s->nch || ti < 0 || ti >= s->nt) {
                json_object_put(j);
                break;
            }
            chunk_t *c = chunk_add(s, ti);
            json_object *since = NULL;
            if (json_object_object_get_ex(j, "since", &since)) {
                c->since = (uint64_t)json_object_get_int64(since);
                json_object_put(j);
                s->state_good += len;
                continue;
            }
            json_object_object_get_ex(j, "lo", &lo);
            json_object_object_get_ex(j, "hi", &hi);
            bound_from_json(&c->lo, lo);
            bound_from_json(&c->hi, hi);
            stable_t *t = &s->t[ti];
            if (c->hi.set)
                bound_copy(&t->frontier, &c->hi);
            else
                t->cut_all = true;
        } else if (json_object_object_get_ex(j, "deliver", &v)) {
            int64_t idx = json_object_get_int64(v);
            json_object *p = NULL;
            json_object_object_get_ex(j, "position", &p);
            json_object *e = NULL;
            json_object_object_get_ex(j, "epoch", &e);
            json_object *cf = NULL;
            if (json_object_object_get_ex(j, "confirmed", &cf) && (uint64_t)json_object_get_int64(cf) > s->confirmed)
                s->confirmed = (uint64_t)json_object_get_int64(cf);
            if (idx >= 0 && idx < s->nch && p) {
                uint64_t pos = (uint64_t)json_object_get_int64(p);
                s->ch[idx].position = pos;
                s->ch[idx].epoch = e ? json_object_get_int(e) : 0;
                if (pos >= s->next_position)
                    s->next_position = pos + 1;
            }
        } else if (json_object_object_get_ex(j, "confirmed", &v)) {
            uint64_t pos = (uint64_t)json_object_get_int64(v);
            if (pos > s->confirmed)
                s->confirmed = pos;
        } else if (json_object_object_get_ex(j, "epoch", &v)) {
            json_object *x = NULL, *fn = NULL;
            json_object_object_get_ex(j, "xmin", &x);
            json_object_object_get_ex(j, "filenodes", &fn);
            if (json_object_get_int(v) != s->nep || !x || !fn) {
                json_object_put(j);
                break;
            }
            epoch_t *ep = epoch_add(s, (uint64_t)json_object_get_int64(x));
            for (int i = 0; i < s->nt && i < (int)json_object_array_length(fn); i++)
                ep->filenode[i] = (uint32_t)json_object_get_int64(json_object_array_get_idx(fn, i));
        } else if (json_object_object_get_ex(j, "void", &v)) {
            int ti = json_object_get_int(v);
            if (ti >= 0 && ti < s->nt)
                table_void(s, ti);
        } else if (json_object_object_get_ex(j, "done", &v))
            s->finished_before = true;
        json_object_put(j);
        s->state_good += len;
    }
    free(line);
    crw_buf_free(&expect);
    if (rc == 0 && lineno == 0)
        crw_warn("--resume: %s is empty; starting the backfill over", s->so.state_file);
    s->state_confirmed = s->confirmed;
    return rc;
}

/* Opens the state file: replays it for --resume, else starts it over. */
static int state_open(snap_t *s, char *errstr, size_t n) {
    s->state_fd = -1;
    if (!s->so.state_file)
        return 0;
    int rc = 0;
    bool replayed = false;
    if (s->so.resume) {
        FILE *f = fopen(s->so.state_file, "r");
        if (!f && errno != ENOENT) {
            snprintf(errstr, n, "--resume: cannot read %s: %s", s->so.state_file, strerror(errno));
            return CRW_ERR_IO;
        }
        if (!f)
            crw_warn("--resume: no state file %s; starting the backfill from the beginning", s->so.state_file);
        else {
            rc = state_replay(s, f, errstr, n);
            fclose(f);
            replayed = rc == 0 && s->nch > 0;
            if (rc < 0)
                return rc;
            if (replayed)
                crw_info("--resume: %d chunks recorded in %s, confirmed up to position %" PRIu64, s->nch,
                         s->so.state_file, s->confirmed);
        }
    }
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (replayed || s->finished_before ? O_APPEND : O_TRUNC);
    s->state_fd = open(s->so.state_file, flags, 0600);
    if (s->state_fd < 0) {
        snprintf(errstr, n, "cannot open the snapshot state file %s: %s", s->so.state_file, strerror(errno));
        return CRW_ERR_IO;
    }
    /* A line torn by a crash is cut off: what is appended must start a line of its own. */
    if ((replayed || s->finished_before) && ftruncate(s->state_fd, (off_t)s->state_good) < 0) {
        snprintf(errstr, n, "cannot cut the torn end of %s: %s", s->so.state_file, strerror(errno));
        return CRW_ERR_IO;
    }
    if (!replayed && !s->finished_before) {
        crw_buf_t h = CRW_BUF_INIT;
        state_header(s, &h);
        rc = state_write(s, &h, true, errstr, n);
        crw_buf_free(&h);
    }
    return rc;
}

/* ---- connections and tables ------------------------------------------ */

/*
 * The catch-up's bound (rebuild): the oldest transaction that may have
 * written a row of this database that the snapshot did not see.  Every
 * transaction below the snapshot's xmin had ended; one of those in progress
 * (pg_snapshot_xip, top-level ids only: a subtransaction's id is above its
 * top's) may have written here unless it is seen running in another
 * database, whose tables are not ours (another database's long transaction,
 * an ANALYZE there, holds the xmin back cluster-wide, and the catch-up would
 * read every row written since).  A transaction not seen (ended meanwhile,
 * or its backend hidden from this role) counts as ours.  In recovery the
 * snapshot lists no top-level ids: its xmin, as before.
 */
#define SNAP_SINCE                                                                                                     \
    "CASE WHEN pg_is_in_recovery() THEN pg_snapshot_xmin(pg_current_snapshot())::text::int8 ELSE "                     \
    "coalesce((SELECT min(x::text::int8) FROM pg_snapshot_xip(pg_current_snapshot()) x WHERE NOT EXISTS ("            \
    "SELECT 1 FROM pg_stat_activity a WHERE a.backend_xid::text::int8 = x::text::int8 & 4294967295 "                  \
    "AND a.datname <> current_database())), pg_snapshot_xmax(pg_current_snapshot())::text::int8) END"

/* Takes the snapshot on ctl (or imports the one given), and where and when it stands. */
static int take_snapshot(snap_t *s, char *errstr, size_t n) {
    PGconn *c = s->ctl.sql;
    int rc;
    free(s->snapshot);
    s->snapshot = NULL;
    if (s->so.snapshot) {
        if ((rc = crw_session_import_snapshot(c, s->so.snapshot, errstr, n)) < 0)
            return rc;
        s->snapshot = crw_strdup(s->so.snapshot);
    } else if ((rc = crw_session_exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", errstr, n)) < 0)
        return rc;
    PGresult *res;
    rc = crw_session_query(c, &res, errstr, n,
                           "SELECT CASE WHEN $1 = '' THEN pg_export_snapshot() END, "
                           "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, "
                           "(extract(epoch FROM statement_timestamp()) * 1000000)::int8 - 946684800000000, "
                           "current_database(), " SNAP_SINCE,
                           1, (const char *[]){s->snapshot ? s->snapshot : ""});
    if (rc < 0)
        return rc;
    if (!s->snapshot)
        s->snapshot = crw_strdup(PQgetvalue(res, 0, 0));
    if (s->so.snapshot_lsn)
        s->snap_lsn = s->so.snapshot_lsn;
    else if (crw_lsn_parse(PQgetvalue(res, 0, 1), &s->snap_lsn) < 0)
        s->snap_lsn = 0;
    s->snap_time = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    free(s->dbname);
    s->dbname = crw_strdup(PQgetvalue(res, 0, 3));
    s->snap_xmin = strtoull(PQgetvalue(res, 0, 4), NULL, 10);
    PQclear(res);
    crw_lsn_format(s->lsn_str, s->snap_lsn);
    return 0;
}

/* Describes table t in the snapshot: its columns, primary key, row estimate; checks its filter. */
static int describe(snap_t *s, stable_t *t, char *errstr, size_t n) {
    PGconn *c = s->ctl.sql;
    char why[512];
    t->rel = crw_catalog_describe(s->cat, t->pub.schema, t->pub.table, why, sizeof why);
    if (!t->rel) {
        snprintf(errstr, n, "%s", why);
        return CRW_ERR_PREREQ;
    }
    free(t->qname);
    free(t->cols);
    char *ns = crw_session_quote_ident(c, t->pub.schema), *tb = crw_session_quote_ident(c, t->pub.table);
    crw_buf_t b = CRW_BUF_INIT;
    crw_buf_printf(&b, "%s.%s", ns, tb);
    t->qname = crw_strdup(b.data);
    free(ns);
    free(tb);
    crw_buf_reset(&b);
    for (int i = 0; i < t->rel->natts; i++) {
        char *q = crw_session_quote_ident(c, t->rel->atts[i].name);
        crw_buf_printf(&b, "%s%s", i ? ", " : "", q);
        free(q);
    }
    t->cols = crw_strdup(b.data ? b.data : "");
    crw_buf_free(&b);

    char relid[16];
    snprintf(relid, sizeof relid, "%u", t->rel->relid);
    PGresult *res;
    crw_strlist_t names = {0}, types = {0};
    int rc = crw_session_primary_key(c, t->rel->relid, &names, &types, errstr, n);
    if (rc < 0)
        return rc;
    /* A key that changed under a resumed backfill makes its recorded bounds meaningless. */
    bool differs = t->keyname.n && names.n != t->keyname.n;
    for (int k = 0; !differs && k < t->keyname.n && k < names.n; k++)
        differs = strcmp(names.v[k], t->keyname.v[k]) != 0;
    if (differs && s->nch && !t->by_ctid) {
        snprintf(errstr, n, "the primary key of %s.%s changed during the backfill; run it again without --resume",
                 t->pub.schema, t->pub.table);
        crw_strlist_clear(&names);
        crw_strlist_clear(&types);
        return CRW_ERR_CONFIG;
    }
    crw_strlist_clear(&t->keyq);
    crw_strlist_clear(&t->keyname);
    crw_strlist_clear(&t->keytype);
    free(t->keyidx);
    t->keyidx = crw_calloc((size_t)names.n + 1, sizeof(int));
    crw_session_key_columns(c, t->rel, &names, &t->keyq, t->keyidx);
    t->keyname = names;
    t->keytype = types;
    /* A recorded chunk of a table that had a key is bounded by it: without one now, the table is read whole. */
    if (!t->keyq.n && t->frontier.set && !t->by_ctid) {
        snprintf(errstr, n, "%s.%s lost its primary key during the backfill; run it again without --resume",
                 t->pub.schema, t->pub.table);
        return CRW_ERR_CONFIG;
    }

    /* The filter must be an SQL condition on this table: say so now, naming the key. */
    crw_buf_reset(&s->sql);
    crw_buf_printf(&s->sql, "EXPLAIN SELECT 1 FROM %s", t->qname);
    put_where(c, &s->sql, t, NULL, NULL, 0);
    if (t->filter && (rc = crw_session_query(c, &res, why, sizeof why, s->sql.data, 0, NULL)) < 0) {
        snprintf(errstr, n, "resource.%s.filter: %s", t->rs->id, why);
        return rc == CRW_ERR_CONN ? rc : CRW_ERR_CONFIG;
    }
    if (t->filter)
        PQclear(res);

    rc = crw_session_query(c, &res, errstr, n,
                           "SELECT reltuples::int8, relpages, pg_relation_size(oid) / current_setting('block_size')::int8, "
                           "pg_relation_filenode(oid) FROM pg_class WHERE oid = $1::oid",
                           1, (const char *[]){relid});
    if (rc < 0)
        return rc;
    int64_t reltuples = strtoll(PQgetvalue(res, 0, 0), NULL, 10), relpages = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    t->nblocks = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    t->filenode = (uint32_t)strtoul(PQgetvalue(res, 0, 3), NULL, 10);
    PQclear(res);
    /* Blocks per chunk from the rows a block holds (the statistics', else a guess of 50). */
    double per_block = reltuples > 0 && relpages > 0 ? (double)reltuples / (double)relpages : 50.0;
    t->chunk_blocks = (int64_t)((double)s->conf->snapshot_chunk_rows / per_block + 0.5);
    if (t->chunk_blocks < 1)
        t->chunk_blocks = 1;
    if (t->pub.estimate < 0) {
        t->pub.estimate = reltuples;
        if (t->pub.estimate < 0) { /* never analyzed: count */
            crw_buf_reset(&s->sql);
            crw_buf_printf(&s->sql, "SELECT count(*) FROM %s", t->qname);
            put_where(c, &s->sql, t, NULL, NULL, 0);
            if ((rc = crw_session_query(c, &res, errstr, n, s->sql.data, 0, NULL)) < 0)
                return rc;
            t->pub.estimate = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
            PQclear(res);
        }
    }
    return 0;
}

static void worker_reset(worker_t *w) {
    w->state = W_IDLE;
    w->chunk = -1;
    w->table = -1;
    w->copying = false;
    crw_buf_reset(&w->buf);
    w->off = 0;
}

/* ---- the source ops ----------------------------------------------------- */

static void snap_close(crw_source_t *base) {
    snap_t *s = S(base);
    for (int i = 0; i < s->nw; i++) {
        crw_session_close(&s->w[i].ses);
        worker_reset(&s->w[i]);
    }
    crw_catalog_set_conn(s->cat, NULL);
    crw_session_close(&s->ctl);
    for (int i = 0; i < s->nt; i++)
        s->t[i].cutting = false;
    for (int i = 0; i < s->nch; i++)
        s->ch[i].inflight = false;
    s->active = -1;
    s->in_txn = false;
}

/* Appends line to the state file; a failure is said and kept in rc (0 on success). */
static int state_line(snap_t *s, char *errstr, size_t n, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int state_line(snap_t *s, char *errstr, size_t n, const char *fmt, ...) {
    crw_buf_t b = CRW_BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    crw_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    int rc = state_write(s, &b, false, errstr, n);
    crw_buf_free(&b);
    return rc;
}

/*
 * The work that remains after a (re)start in a new snapshot: what was not
 * confirmed is read again.  A table read by blocks in an earlier snapshot
 * gets a catch-up: a row written since then may have moved to a block read
 * already, so the rows written since that snapshot are read again; a table
 * rewritten since (its filenode changed) is read again whole.
 */
static int rebuild(snap_t *s, char *errstr, size_t n) {
    int cur = s->nep - 1, rc;
    s->nacks = s->acks_head = 0;
    for (int i = 0; i < s->nt; i++)
        s->t[i].ndone = s->t[i].nchunks = 0;
    for (int i = 0; i < s->nch; i++) {
        chunk_t *c = &s->ch[i];
        if (c->dropped)
            continue;
        s->t[c->table].nchunks++;
        c->done = c->position && c->position <= s->confirmed;
        c->inflight = c->delivered = false;
        if (c->done)
            s->t[c->table].ndone++;
    }
    for (int ti = 0; ti < s->nt && cur >= 0; ti++) {
        stable_t *t = &s->t[ti];
        if (!t->by_ctid)
            continue;
        int oldest = -1;
        bool pending_catchup = false;
        for (int i = 0; i < s->nch; i++) {
            const chunk_t *c = &s->ch[i];
            if (c->table != ti || c->dropped)
                continue;
            if (c->done && (oldest < 0 || c->epoch < oldest))
                oldest = c->epoch;
            if (c->since && !c->done)
                pending_catchup = true;
        }
        if (oldest < 0 || oldest >= cur)
            continue;
        if (s->ep[oldest].filenode[ti] != s->ep[cur].filenode[ti]) {
            crw_warn("snapshot: %s.%s was rewritten (VACUUM FULL, CLUSTER) since it was read by blocks; reading it "
                     "again whole",
                     t->pub.schema, t->pub.table);
            if ((rc = state_line(s, errstr, n, "{\"void\":%d}\n", ti)) < 0)
                return rc;
            table_void(s, ti);
            continue;
        }
        if (pending_catchup)
            continue;
        chunk_t *c = chunk_add(s, ti);
        c->since = s->ep[oldest].xmin;
        crw_info("snapshot: %s.%s: reading again the rows written since the earlier snapshot (they may have moved "
                 "to blocks read already)",
                 t->pub.schema, t->pub.table);
        if ((rc = state_line(s, errstr, n, "{\"cut\":%d,\"table\":%d,\"since\":%" PRIu64 "}\n", (int)(c - s->ch), ti,
                             c->since)) < 0)
            return rc;
    }
    for (int i = 0; i < s->nt; i++)
        s->t[i].pub.done = s->t[i].cut_all && s->t[i].ndone == s->t[i].nchunks;
    return 0;
}

static bool work_left(const snap_t *s) {
    for (int i = 0; i < s->nt; i++)
        if (!s->t[i].cut_all)
            return true;
    for (int i = 0; i < s->nch; i++)
        if (!s->ch[i].done && !s->ch[i].delivered && !s->ch[i].dropped)
            return true;
    return false;
}

/* A new snapshot to read from: its xmin and the tables' filenodes, recorded. */
static int new_epoch(snap_t *s, char *errstr, size_t n) {
    epoch_t *e = epoch_add(s, s->snap_xmin);
    crw_buf_t b = CRW_BUF_INIT;
    crw_buf_printf(&b, "{\"epoch\":%d,\"xmin\":%" PRIu64 ",\"filenodes\":[", s->nep - 1, e->xmin);
    for (int i = 0; i < s->nt; i++) {
        e->filenode[i] = s->t[i].filenode;
        crw_buf_printf(&b, "%s%u", i ? "," : "", e->filenode[i]);
    }
    crw_buf_puts(&b, "]}\n");
    int rc = state_write(s, &b, false, errstr, n);
    crw_buf_free(&b);
    return rc;
}

static int snap_start(crw_source_t *base, char *errstr, size_t n) {
    snap_t *s = S(base);
    int rc;
    s->at_end = false;
    if ((rc = crw_session_open_sql(&s->ctl, errstr, n)) < 0 || (rc = take_snapshot(s, errstr, n)) < 0)
        goto fail;
    crw_catalog_set_conn(s->cat, s->ctl.sql);
    for (int i = 0; i < s->nt; i++)
        if ((rc = describe(s, &s->t[i], errstr, n)) < 0)
            goto fail;
    if (!s->loaded) {
        if ((rc = state_open(s, errstr, n)) < 0)
            goto fail;
        s->loaded = true;
        if (!s->next_position)
            s->next_position = 1;
    } else if (!s->warned_new_snapshot) {
        crw_warn("snapshot: the connection was lost; the chunks not yet acknowledged are read again in a new snapshot");
        s->warned_new_snapshot = true;
    }
    for (int i = 0; i < s->nw; i++) {
        worker_t *w = &s->w[i];
        worker_reset(w);
        if ((rc = crw_session_open_sql(&w->ses, errstr, n)) < 0 ||
            (rc = crw_session_import_snapshot(w->ses.sql, s->snapshot, errstr, n)) < 0)
            goto fail;
        if (PQsetnonblocking(w->ses.sql, 1) != 0) {
            rc = crw_session_error(w->ses.sql, NULL, "snapshot worker", errstr, n);
            goto fail;
        }
    }
    if ((rc = new_epoch(s, errstr, n)) < 0 || (rc = rebuild(s, errstr, n)) < 0)
        goto fail;
    crw_info("snapshot: reading %d table%s in snapshot %s at %s with %d worker%s", s->nt, s->nt == 1 ? "" : "s",
             s->snapshot, s->lsn_str, s->nw, s->nw == 1 ? "" : "s");
    if (s->finished_before || !work_left(s))
        s->at_end = true;
    return 0;
fail:
    snap_close(base);
    return rc;
}

/* Sends the boundary query of table ti's next chunk on worker w. */
static int send_bound(snap_t *s, worker_t *w, int ti, char *errstr, size_t n) {
    stable_t *t = &s->t[ti];
    PGconn *c = w->ses.sql;
    crw_buf_reset(&s->sql);
    crw_buf_puts(&s->sql, "SELECT ");
    for (int k = 0; k < t->keyq.n; k++)
        crw_buf_printf(&s->sql, "%s%s", k ? ", " : "", t->keyq.v[k]);
    crw_buf_printf(&s->sql, " FROM %s", t->qname);
    put_where(c, &s->sql, t, &t->frontier, NULL, 0);
    crw_buf_puts(&s->sql, " ORDER BY ");
    for (int k = 0; k < t->keyq.n; k++)
        crw_buf_printf(&s->sql, "%s%s", k ? ", " : "", t->keyq.v[k]);
    crw_buf_printf(&s->sql, " OFFSET %d LIMIT 1", s->conf->snapshot_chunk_rows - 1);
    if (!PQsendQueryParams(c, s->sql.data, 0, NULL, NULL, NULL, NULL, 0))
        return crw_session_error(c, NULL, "snapshot: cutting a chunk", errstr, n);
    w->state = W_BOUND;
    w->table = ti;
    t->cutting = true;
    return 0;
}

/* Sends chunk ci's COPY on worker w. */
static int send_copy(snap_t *s, worker_t *w, int ci, char *errstr, size_t n) {
    chunk_t *c = &s->ch[ci];
    const stable_t *t = &s->t[c->table];
    PGconn *conn = w->ses.sql;
    crw_buf_reset(&s->sql);
    crw_buf_printf(&s->sql, "COPY (SELECT %s FROM %s", t->cols, t->qname);
    put_where(conn, &s->sql, t, &c->lo, &c->hi, c->since);
    crw_buf_puts(&s->sql, ") TO STDOUT");
    if (!PQsendQueryParams(conn, s->sql.data, 0, NULL, NULL, NULL, NULL, 0))
        return crw_session_error(conn, NULL, "snapshot: reading a chunk", errstr, n);
    w->state = W_COPY;
    w->chunk = ci;
    c->inflight = true;
    crw_buf_reset(&w->buf);
    w->off = 0;
    return 0;
}

/* Cuts table ti's next chunk, (frontier, hi]: hi NULL for the last one. */
static int cut(snap_t *s, int ti, const PGresult *res, char *errstr, size_t n) {
    stable_t *t = &s->t[ti];
    chunk_t *c = chunk_add(s, ti);
    int ci = (int)(c - s->ch);
    bound_copy(&c->lo, &t->frontier);
    int64_t lo = t->frontier.set && t->frontier.v.n ? strtoll(t->frontier.v.v[0], NULL, 10) : 0;
    if (t->by_ctid && lo + t->chunk_blocks < t->nblocks) {
        char hi[24];
        snprintf(hi, sizeof hi, "%" PRId64, lo + t->chunk_blocks);
        c->hi.set = true;
        crw_strlist_add(&c->hi.v, hi);
        bound_copy(&t->frontier, &c->hi);
    } else if (!t->by_ctid && res && PQntuples(res) > 0) {
        c->hi.set = true;
        for (int k = 0; k < PQnfields(res); k++)
            crw_strlist_add(&c->hi.v, PQgetvalue(res, 0, k));
        bound_copy(&t->frontier, &c->hi);
    } else
        t->cut_all = true;
    t->pub.done = false;
    crw_buf_t line = CRW_BUF_INIT;
    crw_buf_printf(&line, "{\"cut\":%d,\"table\":%d,\"lo\":", ci, ti);
    bound_json(&line, &c->lo);
    crw_buf_puts(&line, ",\"hi\":");
    bound_json(&line, &c->hi);
    crw_buf_puts(&line, "}\n");
    int rc = state_write(s, &line, false, errstr, n);
    crw_buf_free(&line);
    return rc < 0 ? rc : ci;
}

/* Moves worker w on with what its connection has: a boundary's result, COPY rows, the COPY's end. */
static int pump(snap_t *s, worker_t *w, char *errstr, size_t n) {
    PGconn *c = w->ses.sql;
    if (w->state == W_IDLE || w->state == W_READ)
        return 0;
    if (w->state == W_COPY && w->buf.len - w->off >= READ_AHEAD_BYTES)
        return 0; /* enough ahead: the rest waits in the socket */
    if (!PQconsumeInput(c))
        return crw_session_error(c, NULL, "snapshot worker", errstr, n);
    if (w->state == W_BOUND) {
        if (PQisBusy(c))
            return 0;
        PGresult *res = PQgetResult(c), *more;
        int rc = 0;
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            rc = crw_session_error(c, res, "snapshot: cutting a chunk", errstr, n);
        int ti = w->table;
        int ci = rc == 0 ? cut(s, ti, res, errstr, n) : rc;
        PQclear(res);
        while ((more = PQgetResult(c)))
            PQclear(more);
        s->t[ti].cutting = false;
        w->state = W_IDLE;
        w->table = -1;
        return ci < 0 ? ci : send_copy(s, w, ci, errstr, n);
    }
    if (!w->copying) { /* W_COPY: the COPY's answer comes first */
        if (PQisBusy(c))
            return 0;
        PGresult *res = PQgetResult(c);
        int rc = PQresultStatus(res) == PGRES_COPY_OUT
                     ? 0
                     : crw_session_error(c, res, "snapshot: reading a chunk", errstr, n);
        PQclear(res);
        if (rc < 0)
            return rc;
        w->copying = true;
    }
    /* take the rows that arrived, up to the read-ahead bound */
    while (w->buf.len - w->off < READ_AHEAD_BYTES) {
        char *row = NULL;
        int r = PQgetCopyData(c, &row, 1);
        if (r > 0) {
            if (w->off && w->off == w->buf.len) { /* all delivered: start the buffer over */
                crw_buf_reset(&w->buf);
                w->off = 0;
            }
            crw_buf_put(&w->buf, row, (size_t)r);
            PQfreemem(row);
            continue;
        }
        if (r == 0)
            return 0;
        if (r == -2)
            return crw_session_error(c, NULL, "snapshot: reading a chunk", errstr, n);
        PGresult *res = PQgetResult(c), *more;
        int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0
                                                         : crw_session_error(c, res, "snapshot: reading a chunk",
                                                                             errstr, n);
        PQclear(res);
        while ((more = PQgetResult(c)))
            PQclear(more);
        if (rc < 0) /* the filter or the table failed: the query is wrong, not the connection */
            return rc;
        w->state = W_READ;
        return 0;
    }
    return 0;
}

/* Gives idle workers work: a chunk to read again, else the next chunk of a table to cut. */
static int assign(snap_t *s, char *errstr, size_t n) {
    int rc;
    for (int i = 0; i < s->nw; i++) {
        worker_t *w = &s->w[i];
        if (w->state != W_IDLE || s->stop_after_commit)
            continue;
        int pick = -1;
        for (int ci = 0; ci < s->nch && pick < 0; ci++)
            if (!s->ch[ci].done && !s->ch[ci].delivered && !s->ch[ci].inflight && !s->ch[ci].dropped)
                pick = ci;
        if (pick >= 0) {
            if ((rc = send_copy(s, w, pick, errstr, n)) < 0)
                return rc;
            continue;
        }
        for (int ti = 0; ti < s->nt; ti++) {
            stable_t *t = &s->t[ti];
            if (t->cut_all || t->cutting)
                continue;
            if (t->by_ctid || !t->keyq.n) { /* blocks, or no key: the whole table is one chunk */
                int ci = cut(s, ti, NULL, errstr, n);
                if (ci < 0)
                    return ci;
                if ((rc = send_copy(s, w, ci, errstr, n)) < 0)
                    return rc;
            } else if ((rc = send_bound(s, w, ti, errstr, n)) < 0)
                return rc;
            break;
        }
    }
    return 0;
}

/* True when w has something to deliver now: a whole row, or the end of its chunk. */
static bool ready(const worker_t *w) {
    if (w->state == W_READ)
        return true;
    return w->state == W_COPY && w->buf.len > w->off;
}

static int begin_chunk(snap_t *s, int wi, char *errstr, size_t n) {
    worker_t *w = &s->w[wi];
    chunk_t *c = &s->ch[w->chunk];
    c->position = s->so.position ? s->so.position : s->next_position++;
    crw_buf_t line = CRW_BUF_INIT;
    c->epoch = s->nep - 1;
    /* with what is confirmed by now: the line is synced anyway */
    crw_buf_printf(&line, "{\"deliver\":%d,\"position\":%" PRIu64 ",\"epoch\":%d,\"confirmed\":%" PRIu64 "}\n",
                   w->chunk, c->position, c->epoch, s->confirmed);
    /* Durable before its first row goes: a sink's checkpoint of this position must name this chunk. */
    int rc = state_write(s, &line, true, errstr, n);
    crw_buf_free(&line);
    if (rc < 0)
        return rc;
    s->state_confirmed = s->confirmed;
    crw_src_txn_t txn = {c->position, s->snap_lsn, 0, s->snap_time};
    s->active = wi;
    s->in_txn = true;
    s->row_in_chunk = 0;
    return s->ev.begin(s->ev.opaque, &txn);
}

/* The event id of a row: "<snapshot LSN>/sync/<key values>" ("c<chunk>/<row>" for a table without a key). */
static void row_id(snap_t *s, const stable_t *t, int chunk, const crw_pgo_col_t *cols) {
    crw_buf_reset(&s->id);
    crw_buf_puts(&s->id, s->lsn_str);
    crw_buf_putc(&s->id, '/');
    crw_buf_puts(&s->id, s->so.tag ? s->so.tag : "sync");
    crw_buf_putc(&s->id, '/');
    if (!t->keyq.n) {
        crw_buf_putc(&s->id, 'c');
        crw_buf_put_i64(&s->id, chunk);
        crw_buf_putc(&s->id, '/');
        crw_buf_put_i64(&s->id, s->row_in_chunk);
        return;
    }
    for (int k = 0; k < t->keyq.n; k++) {
        if (k)
            crw_buf_putc(&s->id, ',');
        int i = t->keyidx[k];
        if (i >= 0 && cols[i].kind == CRW_PGO_COL_TEXT)
            crw_buf_put(&s->id, cols[i].data, cols[i].len);
    }
}

/* Delivers up to max rows of the active chunk; commits it when it is whole. */
static int deliver(snap_t *s, int max, int *delivered, char *errstr, size_t n) {
    worker_t *w = &s->w[s->active];
    chunk_t *c = &s->ch[w->chunk];
    stable_t *t = &s->t[c->table];
    int rc;
    while (*delivered < max && w->off < w->buf.len) {
        const char *line = w->buf.data + w->off;
        const char *nl = memchr(line, '\n', w->buf.len - w->off);
        size_t len = nl ? (size_t)(nl - line) + 1 : w->buf.len - w->off;
        if (crw_copytext_row(line, len, t->rel->natts, s->cols, &s->scratch) < 0) {
            snprintf(errstr, n, "snapshot: a row of %s.%s does not have its %d columns", t->pub.schema,
                     t->pub.table, t->rel->natts);
            return CRW_ERR_PROTOCOL;
        }
        w->off += len;
        s->row_in_chunk++;
        row_id(s, t, w->chunk, s->cols);
        crw_pgo_tuple_t tup = {t->rel->natts, s->cols};
        crw_change_t chg = {.op = CRW_OP_READ, .rel = t->rel, .newtup = &tup, .id = s->id.data, .idlen = s->id.len};
        if ((rc = s->ev.change(s->ev.opaque, &chg)) < 0)
            return rc;
        t->pub.rows++;
        (*delivered)++;
    }
    if (w->state != W_READ || w->off < w->buf.len)
        return 0;
    /* the chunk is whole */
    if ((rc = s->ev.commit(s->ev.opaque, c->position)) < 0)
        return rc;
    c->delivered = true;
    c->inflight = false;
    if (s->nacks == s->capacks) {
        s->capacks = s->capacks ? s->capacks * 2 : 64;
        s->acks = crw_realloc(s->acks, sizeof *s->acks * (size_t)s->capacks);
    }
    s->acks[s->nacks++] = w->chunk;
    worker_reset(w);
    s->active = -1;
    s->in_txn = false;
    return 0;
}

/* Waits until a worker's connection has something, or timeout_ms. */
static void wait_workers(snap_t *s, int timeout_ms) {
    struct pollfd fds[64];
    int nf = 0;
    for (int i = 0; i < s->nw && nf < 64; i++) {
        worker_t *w = &s->w[i];
        bool want = w->state == W_BOUND || (w->state == W_COPY && w->buf.len - w->off < READ_AHEAD_BYTES);
        if (want && w->ses.sql)
            fds[nf++] = (struct pollfd){PQsocket(w->ses.sql), POLLIN, 0};
    }
    if (nf == 0 || timeout_ms <= 0)
        return;
    poll(fds, (nfds_t)nf, timeout_ms);
}

static int snap_poll(crw_source_t *base, int timeout_ms, char *errstr, size_t n) {
    snap_t *s = S(base);
    int64_t deadline = crw_clock_mono_ms() + timeout_ms;
    int delivered = 0, rc;
    for (;;) {
        if (s->at_end)
            return 0;
        for (int i = 0; i < s->nw; i++)
            if ((rc = pump(s, &s->w[i], errstr, n)) < 0)
                return rc;
        if ((rc = assign(s, errstr, n)) < 0)
            return rc;
        if (s->active < 0 && !s->stop_after_commit) {
            int best = -1;
            for (int i = 0; i < s->nw; i++)
                if (ready(&s->w[i]) && (best < 0 || s->w[i].chunk < s->w[best].chunk))
                    best = i;
            if (best >= 0 && (rc = begin_chunk(s, best, errstr, n)) < 0)
                return rc;
        }
        if (s->active >= 0) {
            if ((rc = deliver(s, ROWS_PER_POLL, &delivered, errstr, n)) < 0)
                return rc;
            if (delivered >= ROWS_PER_POLL)
                return 0;
            if (s->active < 0)
                continue; /* a chunk committed: the next may be ready */
        }
        if (!s->in_txn && (s->stop_after_commit || !work_left(s))) {
            s->at_end = true;
            return 0;
        }
        int64_t left = deadline - crw_clock_mono_ms();
        if (left <= 0 || delivered > 0)
            return 0;
        wait_workers(s, (int)left);
    }
}

static void mark_done(snap_t *s) {
    while (s->acks_head < s->nacks) {
        chunk_t *c = &s->ch[s->acks[s->acks_head]];
        if (!c->position || c->position > s->confirmed)
            break;
        if (!c->done) {
            c->done = true;
            stable_t *t = &s->t[c->table];
            t->ndone++;
            t->pub.done = t->cut_all && t->ndone == t->nchunks;
        }
        s->acks_head++;
    }
}

static void snap_confirm(crw_source_t *base, uint64_t position) {
    snap_t *s = S(base);
    if (position <= s->confirmed)
        return;
    s->confirmed = position;
    mark_done(s);
    state_confirmed(s, false);
}

static int snap_seek(crw_source_t *base, uint64_t position, char *errstr, size_t n) {
    snap_t *s = S(base);
    /* The sink holds every chunk delivered up to position (its checkpoint). */
    crw_info("snapshot: the sinks hold everything up to chunk position %" PRIu64 "%s", position,
             position > s->confirmed ? " (past what the state file says)" : "");
    if (position > s->confirmed) {
        s->confirmed = position;
        int rc = rebuild(s, errstr, n);
        state_confirmed(s, true);
        if (rc < 0)
            return rc;
    }
    if (s->next_position <= position)
        s->next_position = position + 1;
    if (!work_left(s))
        s->at_end = true;
    return 0;
}

static int snap_finish(crw_source_t *base, int timeout_ms) {
    (void)timeout_ms;
    snap_t *s = S(base);
    state_confirmed(s, true);
    bool all = s->nt > 0 || s->nch > 0;
    for (int i = 0; i < s->nt; i++)
        all = all && s->t[i].pub.done;
    if (all && s->state_fd >= 0 && !s->finished_before) {
        crw_buf_t b = CRW_BUF_INIT;
        crw_buf_puts(&b, "{\"done\":true}\n");
        char err[256];
        if (state_write(s, &b, true, err, sizeof err) < 0)
            crw_warn("%s", err);
        crw_buf_free(&b);
    }
    snap_close(base);
    return 0;
}

static void snap_keepalive(crw_source_t *base) { (void)base; /* the server waits for the workers' reads */ }
static void snap_stop_after_commit(crw_source_t *base) { S(base)->stop_after_commit = true; }
static bool snap_at_end(const crw_source_t *base) { return ((const snap_t *)base)->at_end; }
static bool snap_in_txn(const crw_source_t *base) { return ((const snap_t *)base)->in_txn; }
static const char *snap_dbname(const crw_source_t *base) {
    const snap_t *s = (const snap_t *)base;
    return s->dbname ? s->dbname : "";
}
static crw_catalog_t *snap_catalog(crw_source_t *base) { return S(base)->cat; }
static void snap_format_position(const crw_source_t *base, uint64_t position, char *buf, size_t n) {
    (void)base;
    snprintf(buf, n, "snapshot chunk position %" PRIu64, position);
}

static void snap_destroy(crw_source_t *base) {
    snap_t *s = S(base);
    snap_close(base);
    for (int i = 0; i < s->nw; i++) {
        crw_session_free(&s->w[i].ses);
        crw_buf_free(&s->w[i].buf);
    }
    free(s->w);
    crw_session_free(&s->ctl);
    for (int i = 0; i < s->nch; i++) {
        bound_clear(&s->ch[i].lo);
        bound_clear(&s->ch[i].hi);
    }
    free(s->ch);
    free(s->acks);
    for (int i = 0; i < s->nep; i++)
        free(s->ep[i].filenode);
    free(s->ep);
    for (int i = 0; i < s->nt; i++) {
        stable_t *t = &s->t[i];
        free(t->qname);
        free(t->cols);
        crw_strlist_clear(&t->keyq);
        crw_strlist_clear(&t->keytype);
        crw_strlist_clear(&t->keyname);
        free(t->keyidx);
        bound_clear(&t->frontier);
    }
    free(s->t);
    if (s->state_fd >= 0)
        close(s->state_fd);
    crw_catalog_destroy(s->cat);
    crw_relcache_destroy(s->rels);
    crw_buf_free(&s->scratch);
    crw_buf_free(&s->id);
    crw_buf_free(&s->sql);
    free(s->cols);
    free(s->view);
    free(s->snapshot);
    free(s->dbname);
    free(s->conninfo);
    free(s);
}

static const crw_source_ops_t snapshot_ops = {
    .name = "snapshot",
    .start = snap_start,
    .poll = snap_poll,
    .confirm = snap_confirm,
    .keepalive = snap_keepalive,
    .stop_after_commit = snap_stop_after_commit,
    .at_end = snap_at_end,
    .in_txn = snap_in_txn,
    .finish = snap_finish,
    .close = snap_close,
    .dbname = snap_dbname,
    .catalog = snap_catalog,
    .seek = snap_seek,
    .format_position = snap_format_position,
    .destroy = snap_destroy,
};

crw_source_t *crw_source_snapshot_new(const crw_config_t *conf, const crw_source_opts_t *opts,
                                      const crw_snapshot_opts_t *so, const crw_source_events_t *ev, int *err,
                                      char *errstr, size_t n) {
    snap_t *s = crw_calloc(1, sizeof *s);
    s->base.ops = &snapshot_ops;
    s->conf = conf;
    s->ev = *ev;
    s->so = *so;
    s->conninfo = crw_strdup(opts->conninfo ? opts->conninfo : "");
    s->rels = crw_relcache_new();
    s->cat = crw_catalog_new(s->rels);
    s->active = -1;
    s->state_fd = -1;
    s->t = crw_calloc((size_t)conf->nresources + 1, sizeof *s->t);
    for (int i = 0; i < conf->nresources; i++) {
        const crw_resource_conf_t *rs = &conf->resources[i];
        if (crw_config_table_named_before(conf, i) || !crw_config_list_names(so->only, rs->schema, rs->table))
            continue;
        stable_t *t = &s->t[s->nt++];
        t->rs = rs;
        t->pub.schema = rs->schema;
        t->pub.table = rs->table;
        t->pub.estimate = -1;
        t->by_ctid = conf->snapshot_chunking == 0;
        t->filter = !so->whole && rs->filter && *rs->filter ? rs->filter : NULL;
    }
    if (so->only)
        for (int i = 0; i < so->only->n; i++) {
            bool found = false;
            for (int k = 0; k < s->nt && !found; k++) {
                crw_strlist_t one = {&so->only->v[i], 1};
                found = crw_config_list_names(&one, s->t[k].rs->schema, s->t[k].rs->table);
            }
            if (!found) {
                snprintf(errstr, n, "--table %s: not a watched table (set tables= or resource.<id>.table)",
                         so->only->v[i]);
                *err = CRW_ERR_CONFIG;
                snap_destroy(&s->base);
                return NULL;
            }
        }
    if (s->nt == 0) {
        snprintf(errstr, n, "nothing to read: set tables= or resource.<id>.table");
        *err = CRW_ERR_CONFIG;
        snap_destroy(&s->base);
        return NULL;
    }
    s->nw = conf->snapshot_workers;
    s->w = crw_calloc((size_t)s->nw, sizeof *s->w);
    for (int i = 0; i < s->nw; i++) {
        crw_session_init(&s->w[i].ses, conf, s->conninfo);
        worker_reset(&s->w[i]);
    }
    crw_session_init(&s->ctl, conf, s->conninfo);
    s->cols = crw_calloc(1600, sizeof *s->cols); /* PostgreSQL's MaxTupleAttributeNumber */
    return &s->base;
}

int crw_snapshot_tables(const crw_source_t *base, const crw_snapshot_table_t **tables) {
    snap_t *s = (snap_t *)(uintptr_t)base;
    if (!s->view)
        s->view = crw_calloc((size_t)s->nt + 1, sizeof *s->view);
    for (int i = 0; i < s->nt; i++)
        s->view[i] = s->t[i].pub;
    *tables = s->view;
    return s->nt;
}

bool crw_snapshot_finished_before(const crw_source_t *base) { return ((const snap_t *)base)->finished_before; }
