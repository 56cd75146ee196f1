/*
 * incremental.c — the chunk reader of incremental snapshots (see
 * incremental.h; docs/snapshots.md, "snapshot.mode=incremental").
 */
#include "source/incremental.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "source/session.h"

typedef struct {
    const crw_relation_t *rel;
    crw_strlist_t keyq, keytype; /* quoted primary key columns, their types */
    int *keyidx;                 /* their places in rel->atts */
    crw_strlist_t cursor;        /* key values of the last row delivered; empty: from the start */
    bool keys_known;
    long rows;
} itable_t;

struct crw_incr {
    const crw_config_t *conf;
    crw_session_t ses;
    itable_t *q; /* q[0] is being read */
    int nq;
    uint64_t next_window;
    PGresult *res; /* the last chunk */
    crw_pgo_col_t *cols;
    crw_pgo_tuple_t tup;
    crw_buf_t sql;
};

crw_incr_t *crw_incr_new(const crw_config_t *conf, const char *conninfo) {
    crw_incr_t *in = crw_calloc(1, sizeof *in);
    in->conf = conf;
    crw_session_init(&in->ses, conf, conninfo);
    return in;
}

static void table_free(itable_t *t) {
    crw_strlist_clear(&t->keyq);
    crw_strlist_clear(&t->keytype);
    crw_strlist_clear(&t->cursor);
    free(t->keyidx);
}

static void pop(crw_incr_t *in) {
    table_free(&in->q[0]);
    memmove(&in->q[0], &in->q[1], sizeof in->q[0] * (size_t)(in->nq - 1));
    in->nq--;
}

void crw_incr_destroy(crw_incr_t *in) {
    if (!in)
        return;
    while (in->nq > 0)
        pop(in);
    free(in->q);
    PQclear(in->res);
    free(in->cols);
    crw_buf_free(&in->sql);
    crw_session_free(&in->ses);
    free(in);
}

int crw_incr_queue(crw_incr_t *in, const crw_relation_t *rel, char *errstr, size_t n) {
    (void)errstr;
    (void)n;
    for (int i = 0; i < in->nq; i++)
        if (in->q[i].rel->relid == rel->relid) {
            if (i > 0 || !in->q[0].cursor.n)
                return 0; /* queued already, and not begun: nothing to add */
        }
    in->q = crw_realloc(in->q, sizeof *in->q * (size_t)(in->nq + 1));
    memset(&in->q[in->nq], 0, sizeof in->q[0]);
    in->q[in->nq++].rel = rel;
    return 0;
}

const crw_relation_t *crw_incr_table(const crw_incr_t *in) { return in->nq ? in->q[0].rel : NULL; }

static int emit(crw_incr_t *in, const char *content, char *errstr, size_t n) {
    PGresult *res;
    int rc = crw_session_query(in->ses.sql, &res, errstr, n,
                               "SELECT pg_logical_emit_message(true, '" CRW_INCR_PREFIX "', $1)", 1,
                               (const char *[]){content});
    if (rc == 0)
        PQclear(res);
    return rc;
}

/* The primary key of t: names (quoted), types and places.  @returns 0, or CRW_ERR_PREREQ when it has none. */
static int keys(crw_incr_t *in, itable_t *t, char *errstr, size_t n) {
    crw_strlist_t names = {0};
    int rc = crw_session_primary_key(in->ses.sql, t->rel->relid, &names, &t->keytype, errstr, n);
    if (rc < 0)
        return rc;
    t->keyidx = crw_calloc((size_t)names.n + 1, sizeof(int));
    if (crw_session_key_columns(in->ses.sql, t->rel, &names, &t->keyq, t->keyidx) > 0)
        rc = CRW_ERR_PREREQ;
    crw_strlist_clear(&names);
    if (!t->keyq.n || rc < 0) {
        snprintf(errstr, n, "%s.%s: an incremental snapshot reads in primary-key order, and it has no primary key "
                            "among its published columns",
                 t->rel->nspname, t->rel->relname);
        return CRW_ERR_PREREQ;
    }
    t->keys_known = true;
    return 0;
}

static void put_list(crw_buf_t *b, const crw_strlist_t *l) {
    for (int k = 0; k < l->n; k++)
        crw_buf_printf(b, "%s%s", k ? ", " : "", l->v[k]);
}

/*
 * Opens a REPEATABLE READ transaction whose snapshot sees every xid of
 * xids; retried while one is not visible yet (for up to about 2 s).
 */
static int begin_seeing(crw_incr_t *in, const uint32_t *xids, int nxids, char *errstr, size_t n) {
    crw_buf_t arr = CRW_BUF_INIT;
    crw_buf_putc(&arr, '{');
    for (int i = 0; i < nxids; i++)
        crw_buf_printf(&arr, "%s%u", i ? "," : "", xids[i]);
    crw_buf_putc(&arr, '}');
    int rc = 0;
    for (int attempt = 0;; attempt++) {
        if ((rc = crw_session_exec(in->ses.sql, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", errstr, n)) < 0)
            break;
        PGresult *res;
        /* each 32-bit xid in the epoch of the snapshot's xmax */
        rc = crw_session_query(in->ses.sql, &res, errstr, n,
                               "SELECT coalesce(bool_and(pg_visible_in_snapshot(((((m >> 32) - (x > (m & 4294967295))::int)"
                               " << 32) | x)::text::xid8, s)), true) FROM (SELECT pg_current_snapshot() s, "
                               "pg_snapshot_xmax(pg_current_snapshot())::text::int8 m) q, unnest($1::int8[]) x",
                               1, (const char *[]){arr.data});
        if (rc < 0)
            break;
        bool sees = PQgetvalue(res, 0, 0)[0] == 't';
        PQclear(res);
        if (sees)
            break;
        PQclear(PQexec(in->ses.sql, "ROLLBACK"));
        if (attempt >= 1000) {
            snprintf(errstr, n, "a transaction the stream delivered stays invisible to new snapshots");
            rc = CRW_ERR_INTERNAL;
            break;
        }
        struct timespec ts = {0, 2000000L};
        nanosleep(&ts, NULL);
    }
    crw_buf_free(&arr);
    return rc;
}

int crw_incr_next(crw_incr_t *in, const uint32_t *xids, int nxids, uint64_t *window, char *errstr, size_t n) {
    *window = 0;
    PQclear(in->res);
    in->res = NULL;
    int rc;
    if (!in->ses.sql && (rc = crw_session_open_sql(&in->ses, errstr, n)) < 0)
        return rc;
    while (in->nq > 0 && !in->q[0].keys_known) {
        if ((rc = keys(in, &in->q[0], errstr, n)) == 0)
            break;
        if (rc == CRW_ERR_CONN)
            return rc;
        crw_warn("snapshot: %s; left out", errstr);
        pop(in);
    }
    if (in->nq == 0)
        return 0;
    itable_t *t = &in->q[0];
    PGconn *c = in->ses.sql;
    crw_buf_t q = CRW_BUF_INIT;
    crw_buf_t *sql = &in->sql;
    crw_buf_reset(sql);
    crw_buf_puts(sql, "SELECT ");
    for (int i = 0; i < t->rel->natts; i++) {
        char *a = crw_session_quote_ident(c, t->rel->atts[i].name);
        crw_buf_printf(sql, "%s%s", i ? ", " : "", a);
        free(a);
    }
    char *ns = crw_session_quote_ident(c, t->rel->nspname), *tb = crw_session_quote_ident(c, t->rel->relname);
    crw_buf_printf(sql, " FROM %s.%s", ns, tb);
    free(ns);
    free(tb);
    if (t->cursor.n) {
        crw_buf_puts(sql, " WHERE (");
        put_list(sql, &t->keyq);
        crw_buf_puts(sql, ") > (");
        for (int k = 0; k < t->keyq.n; k++) {
            char *lit = PQescapeLiteral(c, t->cursor.v[k], strlen(t->cursor.v[k]));
            crw_buf_printf(sql, "%s%s::%s", k ? ", " : "", lit ? lit : "NULL", t->keytype.v[k]);
            PQfreemem(lit);
        }
        crw_buf_putc(sql, ')');
    }
    crw_buf_puts(sql, " ORDER BY ");
    put_list(sql, &t->keyq);
    crw_buf_printf(sql, " LIMIT %d", in->conf->snapshot_chunk_rows);
    /* DBLog: low watermark, the chunk in a snapshot taken after it, high watermark. */
    uint64_t w = ++in->next_window;
    crw_buf_printf(&q, "%s:low:%llu", in->conf->slot_name, (unsigned long long)w);
    if ((rc = emit(in, q.data, errstr, n)) == 0 && (rc = begin_seeing(in, xids, nxids, errstr, n)) == 0 &&
        (rc = crw_session_query(c, &in->res, errstr, n, sql->data, 0, NULL)) == 0 &&
        (rc = crw_session_exec(c, "COMMIT", errstr, n)) == 0) {
        crw_buf_reset(&q);
        crw_buf_printf(&q, "%s:high:%llu", in->conf->slot_name, (unsigned long long)w);
        rc = emit(in, q.data, errstr, n);
    }
    crw_buf_free(&q);
    if (rc < 0) {
        PQclear(in->res);
        in->res = NULL;
        PQclear(PQexec(c, "ROLLBACK"));
        if (rc == CRW_ERR_CONN)
            crw_session_close(&in->ses);
        return rc;
    }
    *window = w;
    free(in->cols);
    in->cols = crw_calloc((size_t)t->rel->natts + 1, sizeof *in->cols);
    return 0;
}

int crw_incr_nrows(const crw_incr_t *in) { return in->res ? PQntuples(in->res) : 0; }

const crw_pgo_tuple_t *crw_incr_row(crw_incr_t *in, int i) {
    const crw_relation_t *rel = in->q[0].rel;
    for (int c = 0; c < rel->natts; c++) {
        in->cols[c].kind = PQgetisnull(in->res, i, c) ? CRW_PGO_COL_NULL : CRW_PGO_COL_TEXT;
        in->cols[c].data = PQgetvalue(in->res, i, c);
        in->cols[c].len = (uint32_t)PQgetlength(in->res, i, c);
    }
    in->tup = (crw_pgo_tuple_t){rel->natts, in->cols};
    return &in->tup;
}

void crw_incr_advance(crw_incr_t *in) {
    if (!in->res || in->nq == 0)
        return;
    itable_t *t = &in->q[0];
    int rows = PQntuples(in->res);
    t->rows += rows;
    if (rows > 0) {
        crw_strlist_clear(&t->cursor);
        for (int k = 0; k < t->keyq.n; k++)
            crw_strlist_add(&t->cursor, PQgetvalue(in->res, rows - 1, t->keyidx[k]));
    }
    if (rows < in->conf->snapshot_chunk_rows) {
        crw_info("snapshot: incremental snapshot of %s.%s done: %ld rows read", t->rel->nspname, t->rel->relname,
                 t->rows);
        pop(in);
    }
    PQclear(in->res);
    in->res = NULL;
}

void crw_incr_forget(crw_incr_t *in) {
    PQclear(in->res);
    in->res = NULL;
}

int crw_incr_request(const crw_config_t *conf, const char *conninfo, const char *schema, const char *table,
                     char *errstr, size_t n) {
    crw_incr_t *in = crw_incr_new(conf, conninfo);
    int rc = crw_session_open_sql(&in->ses, errstr, n);
    if (rc == 0) {
        crw_buf_t q = CRW_BUF_INIT;
        crw_buf_printf(&q, "%s:request:%s.%s", conf->slot_name, schema, table);
        rc = emit(in, q.data, errstr, n);
        crw_buf_free(&q);
    }
    crw_incr_destroy(in);
    return rc;
}
