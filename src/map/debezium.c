/*
 * debezium.c — Debezium PostgreSQL change events: rows, keys and the
 * envelope (see debezium.h for the format and every representation choice;
 * the value conversions are in debezium_value.c).
 */
#include "map/debezium.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "map/value.h"

#ifndef CRW_VERSION
#define CRW_VERSION "unknown"
#endif

const char *crw_debezium_version(void) { return "crwatch-" CRW_VERSION; }

static void put_str(crw_buf_t *out, const char *s) { crw_buf_put_json_str(out, s, strlen(s)); }

/* ---- rows ------------------------------------------------------------- */

/* A column's value: NULL when the tuple cannot say (absent, or unchanged TOAST without fill). */
static const crw_pgo_col_t *known_col(const crw_pgo_tuple_t *t, const crw_pgo_tuple_t *fill, int i) {
    const crw_pgo_col_t *c = crw_pgo_tuple_col(t, i);
    if (c && c->kind == CRW_PGO_COL_UNCHANGED) {
        c = crw_pgo_tuple_col(fill, i);
        if (c && c->kind == CRW_PGO_COL_UNCHANGED)
            c = NULL;
    }
    return c;
}

static void put_value(crw_buf_t *out, const crw_relinfo_t *ri, int i, const crw_pgo_col_t *c) {
    const crw_rel_att_t *a = &ri->rel->atts[i];
    const crw_dbz_col_t col = {a->typoid, a->typmod, ri->cols[i].ti};
    if (c->kind == CRW_PGO_COL_NULL)
        crw_buf_put(out, "null", 4);
    else if (crw_debezium_render_value(out, &col, c->data, c->len) < 0)
        crw_value_render_text(out, c->data, c->len);
}

/*
 * The row object of t.  fill: the whole old row, for unchanged TOAST values.
 * keyonly: t is a 'K' old tuple, only replica identity columns are real.
 * Columns whose value is not known, and columns that resource.<id>.columns.*
 * leave out (Debezium's column.include.list/column.exclude.list), are left out.
 */
static void put_row(crw_buf_t *out, const crw_relinfo_t *ri, const crw_pgo_tuple_t *t, const crw_pgo_tuple_t *fill,
                    bool keyonly) {
    crw_buf_putc(out, '{');
    bool first = true;
    for (int i = 0; i < ri->ncols; i++) {
        const crw_pgo_col_t *c = known_col(t, fill, i);
        if (!c || (keyonly && !(ri->rel->atts[i].flags & 1)) || !ri->cols[i].included)
            continue;
        if (!first)
            crw_buf_putc(out, ',');
        first = false;
        crw_buf_put(out, ri->cols[i].json_name, ri->cols[i].json_name_len);
        put_value(out, ri, i, c);
    }
    crw_buf_putc(out, '}');
}

/* The key object from t (fill for unchanged TOAST key values). */
static int put_key(crw_buf_t *key, const crw_relinfo_t *ri, const crw_pgo_tuple_t *t, const crw_pgo_tuple_t *fill,
                   bool keyonly, char *errstr, size_t n) {
    const crw_relation_t *rel = ri->rel;
    crw_buf_reset(key);
    crw_buf_putc(key, '{');
    for (int k = 0; k < ri->nkey; k++) {
        int i = ri->key_idx[k];
        const crw_pgo_col_t *c = i < ri->ncols ? known_col(t, fill, i) : NULL;
        if (keyonly && i < ri->ncols && !(rel->atts[i].flags & 1))
            c = NULL; /* a 'K' tuple carries replica identity columns only */
        if (!c || c->kind == CRW_PGO_COL_NULL) {
            snprintf(errstr, n, "%s.%s: key column %s is %s", rel->nspname, rel->relname,
                     i < ri->ncols ? rel->atts[i].name : "?", c ? "NULL" : "missing");
            return CRW_ERR_UNMAPPED;
        }
        if (k)
            crw_buf_putc(key, ',');
        crw_buf_put(key, ri->cols[i].json_name, ri->cols[i].json_name_len);
        put_value(key, ri, i, c);
    }
    crw_buf_putc(key, '}');
    return 0;
}

/* ---- envelope --------------------------------------------------------- */

static const char *snapshot_name(crw_dbz_snapshot_t s) {
    switch (s) {
    case CRW_DBZ_SNAPSHOT_TRUE: return "true";
    case CRW_DBZ_SNAPSHOT_FIRST: return "first";
    case CRW_DBZ_SNAPSHOT_FIRST_IN_DATA_COLLECTION: return "first_in_data_collection";
    case CRW_DBZ_SNAPSHOT_LAST_IN_DATA_COLLECTION: return "last_in_data_collection";
    case CRW_DBZ_SNAPSHOT_LAST: return "last";
    case CRW_DBZ_SNAPSHOT_INCREMENTAL: return "incremental";
    case CRW_DBZ_SNAPSHOT_FALSE:
    default: return "false";
    }
}

typedef struct srcinfo {
    crw_dbz_snapshot_t snapshot;
    int64_t ts_us;   /* Unix µs */
    bool has_xid;
    uint32_t xid;
    uint64_t lsn;    /* 0: null */
    uint64_t last;   /* 0: null */
} srcinfo_t;

static void put_source(crw_buf_t *out, const crw_relation_t *rel, const crw_dbz_source_t *src, const srcinfo_t *si) {
    crw_buf_puts(out, "\"source\":{\"version\":");
    put_str(out, crw_debezium_version());
    crw_buf_puts(out, ",\"connector\":\"postgresql\",\"name\":");
    put_str(out, src->server_name ? src->server_name : "");
    crw_buf_putc(out, ',');
    int64_t ts = si->ts_us;
    crw_buf_puts(out, "\"ts_ms\":");
    crw_buf_put_i64(out, crw_floor_div(ts, 1000));
    crw_buf_puts(out, ",\"snapshot\":\"");
    crw_buf_puts(out, snapshot_name(si->snapshot));
    crw_buf_puts(out, "\",\"db\":");
    put_str(out, src->dbname ? src->dbname : "");
    /* sequence: a string holding the JSON array [last commit LSN, LSN] as decimal strings. */
    crw_buf_puts(out, ",\"sequence\":\"[");
    if (si->last) {
        crw_buf_puts(out, "\\\"");
        crw_buf_put_u64(out, si->last);
        crw_buf_puts(out, "\\\"");
    } else {
        crw_buf_puts(out, "null");
    }
    crw_buf_putc(out, ',');
    if (si->lsn) {
        crw_buf_puts(out, "\\\"");
        crw_buf_put_u64(out, si->lsn);
        crw_buf_puts(out, "\\\"");
    } else {
        crw_buf_puts(out, "null");
    }
    crw_buf_puts(out, "]\",\"ts_us\":");
    crw_buf_put_i64(out, ts);
    crw_buf_puts(out, ",\"ts_ns\":");
    crw_buf_put_i64(out, ts * 1000);
    crw_buf_puts(out, ",\"schema\":");
    put_str(out, rel->nspname);
    crw_buf_puts(out, ",\"table\":");
    put_str(out, rel->relname);
    crw_buf_puts(out, ",\"txId\":");
    if (si->has_xid)
        crw_buf_put_u64(out, si->xid);
    else
        crw_buf_puts(out, "null");
    crw_buf_puts(out, ",\"lsn\":");
    if (si->lsn)
        crw_buf_put_u64(out, si->lsn);
    else
        crw_buf_puts(out, "null");
    crw_buf_puts(out, ",\"xmin\":null}");
}

/* ,"transaction":null,"op":"<op>","ts_ms":..,"ts_us":..,"ts_ns":..} */
static void put_tail(crw_buf_t *out, char op, const crw_dbz_source_t *src) {
    int64_t ns = src->now_ns ? src->now_ns : crw_clock_wall_us() * 1000;
    crw_buf_puts(out, ",\"transaction\":null,\"op\":\"");
    crw_buf_putc(out, op);
    crw_buf_puts(out, "\",\"ts_ms\":");
    crw_buf_put_i64(out, crw_floor_div(ns, 1000000));
    crw_buf_puts(out, ",\"ts_us\":");
    crw_buf_put_i64(out, crw_floor_div(ns, 1000));
    crw_buf_puts(out, ",\"ts_ns\":");
    crw_buf_put_i64(out, ns);
    crw_buf_putc(out, '}');
}

static srcinfo_t stream_source(const crw_txn_ctx_t *tx, const crw_dbz_source_t *src) {
    srcinfo_t si = {CRW_DBZ_SNAPSHOT_FALSE, tx->commit_time + CRW_PG_EPOCH_OFFSET_US, true, tx->xid,
                    src->lsn ? src->lsn : tx->commit_lsn, src->last_commit_lsn};
    return si;
}

/* One record: {"before":..,"after":..,"source":..,<tail>}.  NULL rows are JSON null.  ev (may be
 * NULL) gets the spans of after (object) and before (old object). */
static void put_record(crw_buf_t *value, crw_event_t *ev, const crw_relinfo_t *ri, char op,
                       const crw_pgo_tuple_t *before, const crw_pgo_tuple_t *before_fill, bool before_keyonly,
                       const crw_pgo_tuple_t *after, const crw_pgo_tuple_t *after_fill, const crw_dbz_source_t *src,
                       const srcinfo_t *si) {
    crw_span_t b = {0, 0}, a = {0, 0};
    crw_buf_reset(value);
    crw_buf_puts(value, "{\"before\":");
    if (before) {
        b.off = value->len;
        put_row(value, ri, before, before_fill, before_keyonly);
        b.len = value->len - b.off;
    } else
        crw_buf_puts(value, "null");
    crw_buf_puts(value, ",\"after\":");
    if (after) {
        a.off = value->len;
        put_row(value, ri, after, after_fill, false);
        a.len = value->len - a.off;
    } else
        crw_buf_puts(value, "null");
    crw_buf_putc(value, ',');
    put_source(value, ri->rel, src, si);
    put_tail(value, op, src);
    if (ev) {
        ev->object = a;
        ev->old_object = b;
        ev->data = (crw_span_t){0, 0};
        ev->attrs = NULL;
        ev->nattrs = 0;
    }
}

int crw_debezium_encode(crw_buf_t *value, crw_buf_t *key, crw_event_t *ev, const crw_relinfo_t *ri,
                        const crw_change_t *ch, const crw_txn_ctx_t *tx, const crw_dbz_source_t *src, char *errstr,
                        size_t n) {
    const crw_relation_t *rel = ri->rel;
    if (ch->op != CRW_OP_INSERT && ch->op != CRW_OP_UPDATE && ch->op != CRW_OP_DELETE) {
        snprintf(errstr, n, "not a row change: '%c'", ch->op);
        return CRW_ERR_UNMAPPED;
    }
    const crw_pgo_tuple_t *oldt = ch->oldkind ? ch->oldtup : NULL;
    if (ch->op == CRW_OP_DELETE && !oldt) {
        snprintf(errstr, n, "%s.%s: delete without an old row (REPLICA IDENTITY NOTHING)", rel->nspname,
                 rel->relname);
        return CRW_ERR_UNMAPPED;
    }
    const crw_pgo_tuple_t *fill = ch->oldkind == 'O' ? oldt : NULL;
    int rc = ch->newtup ? put_key(key, ri, ch->newtup, oldt, false, errstr, n)
                        : put_key(key, ri, oldt, NULL, ch->oldkind == 'K', errstr, n);
    if (rc < 0)
        return rc;
    srcinfo_t si = stream_source(tx, src);
    char op = ch->op == CRW_OP_INSERT ? 'c' : ch->op == CRW_OP_UPDATE ? 'u' : 'd';
    put_record(value, ev, ri, op, oldt, NULL, ch->oldkind == 'K', ch->newtup, fill, src, &si);
    return 0;
}

static bool same_value(const crw_pgo_col_t *x, const crw_pgo_col_t *y) {
    if (x->kind != y->kind)
        return false;
    if (x->kind != CRW_PGO_COL_TEXT && x->kind != CRW_PGO_COL_BINARY)
        return true;
    return x->len == y->len && memcmp(x->data, y->data, x->len) == 0;
}

bool crw_debezium_key_changed(const crw_relinfo_t *ri, const crw_change_t *ch) {
    if (ch->op != CRW_OP_UPDATE || !ch->oldkind || !ch->oldtup)
        return false;
    for (int k = 0; k < ri->nkey; k++) {
        int i = ri->key_idx[k];
        const crw_pgo_col_t *a = crw_pgo_tuple_col(ch->oldtup, i), *b = crw_pgo_tuple_col(ch->newtup, i);
        /* A 'K' tuple has values only for replica identity columns; 'u' means unchanged. */
        if (!a || !b || (a->kind != CRW_PGO_COL_TEXT && a->kind != CRW_PGO_COL_BINARY) ||
            b->kind == CRW_PGO_COL_UNCHANGED)
            continue;
        if (!same_value(a, b))
            return true;
    }
    return false;
}

int crw_debezium_encode_key_change(crw_buf_t *del_value, crw_buf_t *old_key, crw_event_t *del_ev,
                                   crw_buf_t *create_value, crw_buf_t *new_key, crw_event_t *create_ev,
                                   const crw_relinfo_t *ri, const crw_change_t *ch, const crw_txn_ctx_t *tx,
                                   const crw_dbz_source_t *src, char *errstr, size_t n) {
    if (ch->op != CRW_OP_UPDATE || !ch->oldkind || !ch->oldtup) {
        snprintf(errstr, n, "%s.%s: not an update with an old row", ri->rel->nspname, ri->rel->relname);
        return CRW_ERR_UNMAPPED;
    }
    const crw_pgo_tuple_t *o = ch->oldtup, *nw = ch->newtup;
    char oldkind = ch->oldkind;
    int rc;
    if ((rc = put_key(old_key, ri, o, NULL, oldkind == 'K', errstr, n)) < 0 ||
        (rc = put_key(new_key, ri, nw, o, false, errstr, n)) < 0)
        return rc;
    srcinfo_t si = stream_source(tx, src);
    put_record(del_value, del_ev, ri, 'd', o, NULL, oldkind == 'K', NULL, NULL, src, &si);
    put_record(create_value, create_ev, ri, 'c', NULL, NULL, false, nw, oldkind == 'O' ? o : NULL, src, &si);
    return 0;
}

void crw_debezium_encode_truncate(crw_buf_t *value, crw_event_t *ev, const crw_relinfo_t *ri,
                                  const crw_txn_ctx_t *tx, const crw_dbz_source_t *src) {
    srcinfo_t si = stream_source(tx, src);
    put_record(value, ev, ri, 't', NULL, NULL, false, NULL, NULL, src, &si);
}

int crw_debezium_encode_read(crw_buf_t *value, crw_buf_t *key, crw_event_t *ev, const crw_relinfo_t *ri,
                             const crw_pgo_tuple_t *row, const crw_dbz_source_t *src, const crw_dbz_read_t *rd,
                             char *errstr, size_t n) {
    int rc = put_key(key, ri, row, NULL, false, errstr, n);
    if (rc < 0)
        return rc;
    srcinfo_t si = {rd->snapshot == CRW_DBZ_SNAPSHOT_FALSE ? CRW_DBZ_SNAPSHOT_TRUE : rd->snapshot,
                    rd->read_time_us ? rd->read_time_us : crw_clock_wall_us(),
                    rd->xid != 0,
                    rd->xid,
                    src->lsn,
                    src->last_commit_lsn};
    put_record(value, ev, ri, 'r', NULL, NULL, false, row, NULL, src, &si);
    return 0;
}
