/*
 * poll_stamp.c — timestamp polling of a table outside the convention (see
 * poll_stamp.h, docs/poll.md).
 *
 * The window: each poll reads the rows whose column is at least a
 * high-water mark (`x.col >= $1 ORDER BY x.col`): the one read by a poll
 * whose snapshot was taken poll.lag.ms before the previous poll began.  A
 * transaction T that set the column to v and committed within poll.lag.ms
 * of doing so, after the previous poll's snapshot, has v >= that mark (the
 * mark's rows committed before T wrote), so this poll reads it however late
 * the polls run.  Until such a mark exists the listing's mark serves: what
 * was open at the listing is caught by the reconciliation that follows it.
 * Each row's digest (md5 of its text) is compared with what was emitted of
 * its key: equal, it is skipped; else it is ADDED (a key not seen) or
 * MODIFIED.
 *
 * The reconciliation (the first read, then every resync.interval.ms, the
 * first one poll.lag.ms + poll.interval.ms after the listing): every row is
 * read, the same comparison emits what differs, and the keys no row had are
 * DELETED (their key columns only, as a DELETE with the default replica
 * identity).  A deleted key is forgotten only once the batch that said so
 * was acknowledged: after a reconnect it is DELETED again.
 */
#include "source/poll_stamp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "core/strmap.h"
#include "source/session.h"

#define META 2 /* md5(x::text), the column as text */

/* What was emitted of a key. */
typedef struct {
    unsigned char digest[16]; /* all zero: nothing known (after a reconnect) */
    uint32_t gen;             /* the reconciliation that last saw it */
    uint64_t gone_at;         /* the batch that sent its DELETED; 0: it lives */
} seen_t;

/* "A snapshot taken by at_us saw the column's high-water mark at hwm" (NULL: no value yet, read them all). */
typedef struct {
    int64_t at_us;
    char *hwm;
} mark_t;

struct crw_stamp {
    const crw_config_t *conf;
    const crw_resource_conf_t *rs;
    const crw_relation_t *rel;
    int *keyatt; /* rel attribute of each key column */
    int nkey;
    crw_buf_t q_full, q_window, q_all, q_max;
    crw_strmap_t *seen;
    uint32_t gen;
    bool listed;
    int64_t next_resync_us;
    int64_t prev_before_us;  /* when the previous read's transaction began; 0: none yet */
    mark_t *marks;
    int nmarks, capmarks;
    crw_buf_t key, id;
    crw_pgo_col_t *cols, *keycols;
};

crw_stamp_t *crw_stamp_new(const crw_config_t *conf, const crw_resource_conf_t *rs) {
    crw_stamp_t *s = crw_calloc(1, sizeof *s);
    s->conf = conf;
    s->rs = rs;
    s->seen = crw_strmap_new(sizeof(seen_t));
    return s;
}

static void marks_clear(crw_stamp_t *s) {
    for (int i = 0; i < s->nmarks; i++)
        free(s->marks[i].hwm);
    s->nmarks = 0;
}

void crw_stamp_destroy(crw_stamp_t *s) {
    if (!s)
        return;
    marks_clear(s);
    free(s->marks);
    free(s->keyatt);
    free(s->cols);
    free(s->keycols);
    crw_buf_t *bufs[] = {&s->q_full, &s->q_window, &s->q_all, &s->q_max, &s->key, &s->id};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        crw_buf_free(bufs[i]);
    crw_strmap_destroy(s->seen);
    free(s);
}

static bool forget_one(void *opaque, const void *key, size_t len, void *value) {
    (void)opaque, (void)key, (void)len;
    seen_t *v = value;
    memset(v->digest, 0, sizeof v->digest);
    v->gone_at = 0;
    return false;
}

void crw_stamp_forget(crw_stamp_t *s) {
    crw_strmap_sweep(s->seen, forget_one, NULL);
    marks_clear(s);
    s->listed = false;
    s->prev_before_us = 0;
}

static int att_named(const crw_relation_t *rel, const char *name) {
    for (int i = 0; i < rel->natts; i++)
        if (!strcmp(rel->atts[i].name, name))
            return i;
    return -1;
}

int crw_stamp_prepare(crw_stamp_t *s, PGconn *c, const crw_relation_t *rel, const char *const *key, int nkey,
                      char *errstr, size_t n) {
    const char *col = s->rs->poll_column;
    if (att_named(rel, col) < 0) {
        snprintf(errstr, n, "table %s.%s has no column %s (resource.%s.poll.column)", rel->nspname, rel->relname, col,
                 s->rs->id);
        return CRW_ERR_PREREQ;
    }
    if (nkey == 0) {
        snprintf(errstr, n,
                 "table %s.%s has no primary key: timestamp polling needs one, or resource.%s.key, to tell its rows "
                 "apart",
                 rel->nspname, rel->relname, s->rs->id);
        return CRW_ERR_PREREQ;
    }
    int *keyatt = crw_calloc((size_t)nkey, sizeof *keyatt);
    for (int i = 0; i < nkey; i++)
        if ((keyatt[i] = att_named(rel, key[i])) < 0) {
            snprintf(errstr, n, "table %s.%s has no key column %s", rel->nspname, rel->relname, key[i]);
            free(keyatt);
            return CRW_ERR_PREREQ;
        }
    /* Other key columns (an ALTER TABLE): the keys kept mean nothing now; list the table as new. */
    bool same = s->keyatt && s->nkey == nkey && !memcmp(s->keyatt, keyatt, sizeof *keyatt * (size_t)nkey);
    if (s->keyatt && !same) {
        crw_strmap_clear(s->seen);
        marks_clear(s);
        s->listed = false;
        s->prev_before_us = 0;
    }
    free(s->keyatt);
    s->keyatt = keyatt;
    s->nkey = nkey;
    s->rel = rel;
    free(s->cols);
    free(s->keycols);
    s->cols = crw_calloc((size_t)rel->natts + 1, sizeof *s->cols);
    s->keycols = crw_calloc((size_t)rel->natts + 1, sizeof *s->keycols);

    char *ns = crw_session_quote_ident(c, rel->nspname), *tb = crw_session_quote_ident(c, rel->relname);
    char *qc = crw_session_quote_ident(c, col);
    crw_buf_t cols = CRW_BUF_INIT;
    for (int i = 0; i < rel->natts; i++) {
        char *q = crw_session_quote_ident(c, rel->atts[i].name);
        crw_buf_printf(&cols, ", x.%s", q);
        free(q);
    }
    const char *cl = cols.data ? cols.data : "";
    crw_buf_reset(&s->q_full);
    crw_buf_printf(&s->q_full, "SELECT md5(x::text), x.%s::text%s FROM %s.%s x", qc, cl, ns, tb);
    crw_buf_reset(&s->q_window);
    crw_buf_printf(&s->q_window, "SELECT md5(x::text), x.%s::text%s FROM %s.%s x WHERE x.%s >= $1 ORDER BY x.%s", qc,
                   cl, ns, tb, qc, qc);
    crw_buf_reset(&s->q_all);
    crw_buf_printf(&s->q_all, "SELECT md5(x::text), x.%s::text%s FROM %s.%s x WHERE x.%s IS NOT NULL ORDER BY x.%s",
                   qc, cl, ns, tb, qc, qc);
    crw_buf_reset(&s->q_max);
    crw_buf_printf(&s->q_max, "SELECT max(x.%s)::text FROM %s.%s x", qc, ns, tb);
    crw_buf_free(&cols);
    free(ns);
    free(tb);
    free(qc);
    return 0;
}

/* ---- the high-water marks ------------------------------------------------- */

/* Records a snapshot's mark; the same value as the newest one adds nothing (the older time stays). */
static void mark_add(crw_stamp_t *s, int64_t at_us, const char *hwm) {
    if (s->nmarks) {
        const char *last = s->marks[s->nmarks - 1].hwm;
        if (!hwm || (last && !strcmp(last, hwm)))
            return;
    }
    if (s->nmarks == s->capmarks) {
        s->capmarks = s->capmarks ? s->capmarks * 2 : 16;
        s->marks = crw_realloc(s->marks, sizeof *s->marks * (size_t)s->capmarks);
    }
    s->marks[s->nmarks++] = (mark_t){at_us, hwm ? crw_strdup(hwm) : NULL};
}

/*
 * The window's low end: the newest mark taken poll.lag.ms before the
 * previous read began, else the oldest (the listing's); the older ones go.
 * NULL: no value yet (read every row that has one).
 */
static const char *window_low(crw_stamp_t *s) {
    int64_t cutoff = s->prev_before_us - (int64_t)s->conf->poll_lag_ms * 1000;
    int k = 0;
    while (k + 1 < s->nmarks && s->marks[k + 1].at_us <= cutoff)
        k++;
    for (int i = 0; i < k; i++)
        free(s->marks[i].hwm);
    memmove(s->marks, s->marks + k, sizeof *s->marks * (size_t)(s->nmarks - k));
    s->nmarks -= k;
    return s->nmarks ? s->marks[0].hwm : NULL;
}

/* ---- rows ----------------------------------------------------------------------- */

typedef struct {
    crw_stamp_t *s;
    const crw_stamp_poll_t *poll;
    crw_stamp_emit_fn emit;
    void *opaque;
    long added, modified, deleted;
    const char *last; /* the window's last column value (its new high-water mark); NULL: none */
    crw_buf_t lastbuf;
    int err;
} pass_t;

/* The key of a row: each key column's length (or ~0u for NULL) and bytes. */
static void key_of(crw_stamp_t *s, const crw_pgo_col_t *cols) {
    crw_buf_reset(&s->key);
    for (int i = 0; i < s->nkey; i++) {
        const crw_pgo_col_t *c = &cols[s->keyatt[i]];
        uint32_t len = c->kind == CRW_PGO_COL_NULL ? ~0u : c->len;
        crw_buf_put(&s->key, (const char *)&len, sizeof len);
        if (c->kind != CRW_PGO_COL_NULL)
            crw_buf_put(&s->key, c->data, c->len);
    }
}

/* A DELETED's id: the digest of the last state sent, in hex, and "/deleted". */
static void deleted_id(crw_stamp_t *s, const unsigned char *digest) {
    static const char hx[] = "0123456789abcdef";
    crw_buf_reset(&s->id);
    for (int i = 0; i < 16; i++) {
        crw_buf_putc(&s->id, hx[digest[i] >> 4]);
        crw_buf_putc(&s->id, hx[digest[i] & 15]);
    }
    crw_buf_puts(&s->id, "/deleted");
}

static int pass_row(void *opaque, const PGresult *res) {
    pass_t *ps = opaque;
    crw_stamp_t *s = ps->s;
    const crw_relation_t *rel = s->rel;
    unsigned char digest[16];
    const char *hx = PQgetvalue(res, 0, 0);
    for (int i = 0; i < 16; i++)
        digest[i] = (unsigned char)(crw_hexval(hx[2 * i]) << 4 | crw_hexval(hx[2 * i + 1]));
    if (!PQgetisnull(res, 0, 1)) {
        crw_buf_reset(&ps->lastbuf);
        crw_buf_puts(&ps->lastbuf, PQgetvalue(res, 0, 1));
        ps->last = ps->lastbuf.data;
    }
    crw_session_cols(res, META, rel->natts, s->cols);
    key_of(s, s->cols);
    bool created;
    seen_t *v = crw_strmap_put(s->seen, s->key.data, s->key.len, &created);
    v->gen = s->gen;
    if (v->gone_at) { /* deleted, and there again: a new resource */
        v->gone_at = 0;
        created = true;
    } else if (!created && !memcmp(v->digest, digest, sizeof digest))
        return 0;
    memcpy(v->digest, digest, sizeof digest);
    crw_pgo_tuple_t row = {rel->natts, s->cols};
    /* The id: the digest as the server wrote it. */
    crw_change_t ch = {.op = created ? CRW_OP_INSERT : CRW_OP_UPDATE, .rel = rel, .newtup = &row,
                       .id = hx, .idlen = (size_t)PQgetlength(res, 0, 0)};
    if (created)
        ps->added++;
    else
        ps->modified++;
    return ps->err = ps->emit(ps->opaque, &ch);
}

/* A reconciliation's sweep: a key no row had is DELETED (its key columns only) and forgotten. */
static bool sweep_gone(void *opaque, const void *key, size_t len, void *value) {
    pass_t *ps = opaque;
    crw_stamp_t *s = ps->s;
    seen_t *v = value;
    if (v->gen == s->gen || ps->err < 0)
        return false;
    if (v->gone_at) /* its DELETED went out: forgotten once acknowledged */
        return v->gone_at <= ps->poll->confirmed;
    const crw_relation_t *rel = s->rel;
    for (int i = 0; i < rel->natts; i++)
        s->keycols[i] = (crw_pgo_col_t){.kind = CRW_PGO_COL_NULL};
    const char *p = key, *end = p + len;
    for (int i = 0; i < s->nkey && p + sizeof(uint32_t) <= end; i++) {
        uint32_t l;
        memcpy(&l, p, sizeof l);
        p += sizeof l;
        crw_pgo_col_t *c = &s->keycols[s->keyatt[i]];
        if (l != ~0u && l <= (size_t)(end - p)) {
            *c = (crw_pgo_col_t){.kind = CRW_PGO_COL_TEXT, .data = p, .len = l};
            p += l;
        }
    }
    crw_pgo_tuple_t old = {rel->natts, s->keycols};
    deleted_id(s, v->digest);
    crw_change_t ch = {.op = CRW_OP_DELETE, .rel = rel, .oldtup = &old, .oldkind = 'K',
                       .id = s->id.data, .idlen = s->id.len};
    ps->deleted++;
    if ((ps->err = ps->emit(ps->opaque, &ch)) == 0)
        v->gone_at = ps->poll->position;
    return false;
}

static int query_failed(long rc) { return rc == CRW_ERR_PREREQ ? CRW_ERR_CONN : (int)rc; }

int crw_stamp_read(crw_stamp_t *s, PGconn *c, const crw_stamp_poll_t *poll, crw_stamp_emit_fn emit, void *opaque,
                   char *errstr, size_t n) {
    const crw_relation_t *rel = s->rel;
    char what[300];
    pass_t ps = {.s = s, .poll = poll, .emit = emit, .opaque = opaque};
    int64_t now_us = poll->after_us;
    bool full = !s->listed || now_us >= s->next_resync_us;
    const char *low = full ? NULL : window_low(s);
    long rc;
    if (full) {
        /* The high-water mark first: rows the pass reads have no greater value (one snapshot). */
        PGresult *res;
        snprintf(what, sizeof what, "reading %s.%s's %s", rel->nspname, rel->relname, s->rs->poll_column);
        if ((rc = crw_session_query(c, &res, errstr, n, s->q_max.data, 0, NULL)) < 0)
            return query_failed(rc);
        char *hwm = PQgetisnull(res, 0, 0) ? NULL : crw_strdup(PQgetvalue(res, 0, 0));
        PQclear(res);
        s->gen++;
        snprintf(what, sizeof what, "reconciling %s.%s", rel->nspname, rel->relname);
        rc = crw_session_rows(c, s->q_full.data, 0, NULL, pass_row, &ps, what, errstr, n);
        if (rc >= 0 && ps.err == 0)
            crw_strmap_sweep(s->seen, sweep_gone, &ps);
        if (rc >= 0 && ps.err == 0) {
            if (!s->listed)
                marks_clear(s); /* the listing's mark is the first: NULL too (no value yet) */
            mark_add(s, now_us, hwm);
            int64_t every = (int64_t)s->conf->resync_interval_ms * 1000;
            int64_t soon = ((int64_t)s->conf->poll_lag_ms + s->conf->poll_interval_ms) * 1000;
            /* After the listing, one reconciliation as soon as the lag has passed: what was in flight then. */
            s->next_resync_us = now_us + (!s->listed && soon < every ? soon : every);
            if (s->listed || ps.added)
                crw_info("poll: %s %s.%s: %ld added, %ld modified, %ld deleted", s->listed ? "reconciled" : "listed",
                         rel->nspname, rel->relname, ps.added, ps.modified, ps.deleted);
            s->listed = true;
        }
        free(hwm);
    } else if (low) {
        const char *params[1] = {low};
        snprintf(what, sizeof what, "polling %s.%s", rel->nspname, rel->relname);
        rc = crw_session_rows(c, s->q_window.data, 1, params, pass_row, &ps, what, errstr, n);
        if (rc >= 0 && ps.err == 0)
            mark_add(s, now_us, ps.last);
    } else {
        /* No value yet (the table was empty): the window is the whole column until one comes. */
        snprintf(what, sizeof what, "polling %s.%s", rel->nspname, rel->relname);
        rc = crw_session_rows(c, s->q_all.data, 0, NULL, pass_row, &ps, what, errstr, n);
        if (rc >= 0 && ps.err == 0)
            mark_add(s, now_us, ps.last);
    }
    crw_buf_free(&ps.lastbuf);
    if (ps.err < 0)
        return ps.err;
    if (rc < 0)
        return query_failed(rc);
    s->prev_before_us = poll->before_us;
    return 0;
}
