/*
 * event.c — CloudEvents encoding of row changes.
 *
 * Output (design.md §4), for one change:
 *   {"specversion":"1.0","id":"<commit lsn>/<ordinal>","source":"/crwatch/<db>/<schema>/<table>",
 *    "type":"crwatch.<Kind>.<added|modified|deleted>","subject":"<key>","time":"<commit time>",
 *    "datacontenttype":"application/json","pglsn":"<commit lsn>","pgxid":<xid>,
 *    "data":{"type":"ADDED","kind":"<Kind>","key":"<key>","object":{...},
 *            "oldObject":{...},"changed":["/col"],"unknown":["/col"]}}
 * Key columns' text forms joined by '/' make the key (Kubernetes'
 * namespace/name style).  `id` is stable across redelivery: the commit LSN
 * and the change's 1-based position in its transaction.
 */
#include "map/event.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "map/value.h"

void crw_event_format_time(char *buf, size_t n, int64_t pg_us) {
    int64_t us = pg_us + CRW_PG_EPOCH_OFFSET_US;
    int64_t secs = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs--;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
}

void crw_event_txn_init(crw_txn_ctx_t *tx, uint64_t commit_lsn, uint32_t xid, int64_t commit_time) {
    tx->commit_lsn = commit_lsn;
    tx->xid = xid;
    tx->commit_time = commit_time;
    tx->ordinal = 0;
    crw_event_format_time(tx->time_str, sizeof tx->time_str, commit_time);
    snprintf(tx->lsn_str, sizeof tx->lsn_str, "%X/%X", (unsigned)(commit_lsn >> 32), (unsigned)commit_lsn);
}

/* Appends one column value; 'u' and out-of-range columns are the caller's business. */
static void put_value(crw_buf_t *out, const crw_rel_att_t *a, const crw_pgo_col_t *c) {
    if (c->kind == CRW_PGO_COL_NULL) {
        crw_buf_put(out, "null", 4);
        return;
    }
    if (crw_value_render(out, &a->ti, c->data, c->len) < 0)
        crw_value_render_text(out, c->data, c->len);
}

/* Column i of t, or NULL when the tuple does not carry it. */
static const crw_pgo_col_t *col_at(const crw_pgo_tuple_t *t, int i) {
    return t && i < t->ncols ? &t->cols[i] : NULL;
}

/*
 * Appends the object for tuple t.  fill: the whole old row ('O'), used for
 * unchanged TOAST values.  keyonly: t is an old key tuple, only key columns
 * are real.  Columns whose value is not known are appended to *unknown as
 * pointers, comma-separated JSON strings.
 */
static void put_object(crw_buf_t *out, const crw_relation_t *rel, const crw_pgo_tuple_t *t,
                       const crw_pgo_tuple_t *fill, bool keyonly, crw_buf_t *unknown) {
    crw_buf_putc(out, '{');
    bool first = true;
    for (int i = 0; i < rel->natts; i++) {
        const crw_rel_att_t *a = &rel->atts[i];
        const crw_pgo_col_t *c = col_at(t, i);
        if (c && c->kind == CRW_PGO_COL_UNCHANGED) {
            const crw_pgo_col_t *o = col_at(fill, i);
            c = o && o->kind != CRW_PGO_COL_UNCHANGED ? o : NULL;
        }
        if (!c || (keyonly && !(a->flags & 1))) {
            if (unknown) {
                if (unknown->len)
                    crw_buf_putc(unknown, ',');
                crw_buf_put_json_str(unknown, a->pointer, strlen(a->pointer));
            }
            continue;
        }
        if (!first)
            crw_buf_putc(out, ',');
        first = false;
        crw_buf_put(out, a->json_name, a->json_name_len);
        put_value(out, a, c);
    }
    crw_buf_putc(out, '}');
}

static bool same_col(const crw_pgo_col_t *x, const crw_pgo_col_t *y) {
    if (x->kind != y->kind)
        return false;
    if (x->kind == CRW_PGO_COL_NULL || x->kind == CRW_PGO_COL_UNCHANGED)
        return true;
    return x->len == y->len && memcmp(x->data, y->data, x->len) == 0;
}

/* Pointers of unknown fields, collected beside the object; one per thread, reused. */
static __thread crw_buf_t unknown;

void crw_event_thread_cleanup(void) {
    crw_buf_free(&unknown);
    crw_value_thread_cleanup();
}

enum { VERB_ADDED, VERB_MODIFIED, VERB_DELETED, VERB_TRUNCATED };

static char *json_dup(const char *text) {
    crw_buf_t b = CRW_BUF_INIT;
    crw_buf_put_json_str(&b, text, strlen(text));
    return b.data; /* ownership moves to the caller */
}

void crw_event_prepare_relation(crw_relation_t *rel) {
    static const char *const verbs[4] = {"added", "modified", "deleted", "truncated"};
    free(rel->js_source);
    free(rel->js_kind);
    rel->js_source = json_dup(rel->source);
    rel->js_kind = json_dup(rel->kind);
    crw_buf_t b = CRW_BUF_INIT;
    for (int i = 0; i < 4; i++) {
        crw_buf_reset(&b);
        crw_buf_printf(&b, "crwatch.%s.%s", rel->kind, verbs[i]);
        free(rel->js_type[i]);
        rel->js_type[i] = json_dup(b.data);
    }
    crw_buf_free(&b);
}

static void put_header(crw_buf_t *out, const crw_relation_t *rel, const crw_txn_ctx_t *tx, int verb) {
    crw_buf_put(out, "{\"specversion\":\"1.0\",\"id\":\"", 27);
    crw_buf_puts(out, tx->lsn_str);
    crw_buf_putc(out, '/');
    crw_buf_put_u64(out, tx->ordinal);
    crw_buf_put(out, "\",\"source\":", 11);
    crw_buf_puts(out, rel->js_source);
    crw_buf_put(out, ",\"type\":", 8);
    crw_buf_puts(out, rel->js_type[verb]);
}

static void put_tail(crw_buf_t *out, const crw_txn_ctx_t *tx) {
    crw_buf_put(out, ",\"time\":\"", 9);
    crw_buf_puts(out, tx->time_str);
    crw_buf_put(out, "\",\"datacontenttype\":\"application/json\",\"pglsn\":\"", 48);
    crw_buf_puts(out, tx->lsn_str);
    crw_buf_put(out, "\",\"pgxid\":", 10);
    crw_buf_put_u64(out, tx->xid);
}

int crw_event_encode_change(crw_buf_t *out, crw_buf_t *key, const crw_relation_t *rel, const crw_pgo_msg_t *m,
                            const crw_txn_ctx_t *tx, char *errstr, size_t n) {
    const crw_pgo_tuple_t *newt = NULL, *oldt = NULL;
    char oldkind = 0;
    int verb;
    const char *type;
    switch (m->type) {
    case CRW_PGO_INSERT:
        newt = &m->u.insert.newtup;
        verb = VERB_ADDED;
        type = "ADDED";
        break;
    case CRW_PGO_UPDATE:
        newt = &m->u.update.newtup;
        oldkind = m->u.update.oldkind;
        oldt = oldkind ? &m->u.update.oldtup : NULL;
        verb = VERB_MODIFIED;
        type = "MODIFIED";
        break;
    case CRW_PGO_DELETE:
        oldkind = m->u.del.oldkind;
        oldt = oldkind ? &m->u.del.oldtup : NULL;
        verb = VERB_DELETED;
        type = "DELETED";
        break;
    default:
        snprintf(errstr, n, "not a row change: %s", crw_pgo_type_name(m->type));
        return -1;
    }
    const crw_pgo_tuple_t *keysrc = newt ? newt : oldt;
    if (!keysrc) {
        snprintf(errstr, n, "%s.%s: delete without an old key (REPLICA IDENTITY NOTHING)", rel->nspname,
                 rel->relname);
        return -1;
    }

    /* The key: key columns' text joined by '/'. */
    crw_buf_reset(key);
    for (int k = 0; k < rel->nkey; k++) {
        int i = rel->key_idx[k];
        const crw_pgo_col_t *c = col_at(keysrc, i);
        if (c && c->kind == CRW_PGO_COL_UNCHANGED && keysrc == newt)
            c = col_at(oldt, i);
        if (!c || c->kind == CRW_PGO_COL_NULL || c->kind == CRW_PGO_COL_UNCHANGED) {
            snprintf(errstr, n, "%s.%s: key column %s is %s", rel->nspname, rel->relname, rel->atts[i].name,
                     c && c->kind == CRW_PGO_COL_NULL ? "NULL" : "missing");
            return -1;
        }
        if (k)
            crw_buf_putc(key, '/');
        crw_buf_put(key, c->data, c->len);
    }

    crw_buf_reset(out);
    put_header(out, rel, tx, verb);
    crw_buf_put(out, ",\"subject\":", 11);
    crw_buf_put_json_str(out, key->data ? key->data : "", key->len);
    put_tail(out, tx);
    crw_buf_put(out, ",\"data\":{\"type\":\"", 17);
    crw_buf_puts(out, type);
    crw_buf_put(out, "\",\"kind\":", 9);
    crw_buf_puts(out, rel->js_kind);
    crw_buf_put(out, ",\"key\":", 7);
    crw_buf_put_json_str(out, key->data ? key->data : "", key->len);

    crw_buf_reset(&unknown);
    const crw_pgo_tuple_t *fill = oldkind == 'O' ? oldt : NULL;
    crw_buf_put(out, ",\"object\":", 10);
    if (newt)
        put_object(out, rel, newt, fill, false, &unknown);
    else
        put_object(out, rel, oldt, NULL, oldkind == 'K', &unknown);

    if (newt && oldkind == 'O') {
        crw_buf_put(out, ",\"oldObject\":", 13);
        put_object(out, rel, oldt, NULL, false, NULL);
        crw_buf_put(out, ",\"changed\":[", 12);
        bool first = true;
        for (int i = 0; i < rel->natts; i++) {
            const crw_pgo_col_t *a = col_at(newt, i), *b = col_at(oldt, i);
            if (!a || !b || a->kind == CRW_PGO_COL_UNCHANGED || same_col(a, b))
                continue;
            if (!first)
                crw_buf_putc(out, ',');
            first = false;
            crw_buf_put_json_str(out, rel->atts[i].pointer, strlen(rel->atts[i].pointer));
        }
        crw_buf_putc(out, ']');
    }
    if (unknown.len) {
        crw_buf_put(out, ",\"unknown\":[", 12);
        crw_buf_put(out, unknown.data, unknown.len);
        crw_buf_putc(out, ']');
    }
    crw_buf_put(out, "}}", 2);
    return 0;
}

static void put_raw_tuple(crw_buf_t *out, const crw_relation_t *rel, const crw_pgo_tuple_t *t) {
    crw_buf_putc(out, '{');
    for (int i = 0; i < t->ncols && i < rel->natts; i++) {
        if (i)
            crw_buf_putc(out, ',');
        crw_buf_put(out, rel->atts[i].json_name, rel->atts[i].json_name_len);
        const crw_pgo_col_t *c = &t->cols[i];
        if (c->kind == CRW_PGO_COL_TEXT || c->kind == CRW_PGO_COL_BINARY)
            crw_buf_put_json_str(out, c->data, c->len);
        else if (c->kind == CRW_PGO_COL_UNCHANGED)
            crw_buf_puts(out, "{\"unchanged\":true}");
        else
            crw_buf_puts(out, "null");
    }
    crw_buf_putc(out, '}');
}

void crw_event_encode_raw(crw_buf_t *out, const crw_relation_t *rel, const crw_pgo_msg_t *m) {
    crw_buf_reset(out);
    crw_buf_puts(out, "{\"schema\":");
    crw_buf_put_json_str(out, rel->nspname, strlen(rel->nspname));
    crw_buf_puts(out, ",\"table\":");
    crw_buf_put_json_str(out, rel->relname, strlen(rel->relname));
    const crw_pgo_tuple_t *newt = NULL, *oldt = NULL;
    const char *op = "?";
    if (m->type == CRW_PGO_INSERT) {
        op = "INSERT";
        newt = &m->u.insert.newtup;
    } else if (m->type == CRW_PGO_UPDATE) {
        op = "UPDATE";
        newt = &m->u.update.newtup;
        oldt = m->u.update.oldkind ? &m->u.update.oldtup : NULL;
    } else if (m->type == CRW_PGO_DELETE) {
        op = "DELETE";
        oldt = m->u.del.oldkind ? &m->u.del.oldtup : NULL;
    }
    crw_buf_printf(out, ",\"op\":\"%s\"", op);
    if (newt) {
        crw_buf_puts(out, ",\"new\":");
        put_raw_tuple(out, rel, newt);
    }
    if (oldt) {
        crw_buf_puts(out, ",\"old\":");
        put_raw_tuple(out, rel, oldt);
    }
    crw_buf_putc(out, '}');
}

void crw_event_encode_truncate(crw_buf_t *out, const crw_relation_t *rel, const crw_txn_ctx_t *tx) {
    crw_buf_reset(out);
    put_header(out, rel, tx, VERB_TRUNCATED);
    put_tail(out, tx);
    crw_buf_put(out, ",\"data\":{\"type\":\"TRUNCATED\",\"kind\":", 35);
    crw_buf_puts(out, rel->js_kind);
    crw_buf_put(out, "}}", 2);
}
