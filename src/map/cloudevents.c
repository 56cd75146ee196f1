/*
 * cloudevents.c — row changes to CloudEvents (see cloudevents.h).
 *
 * Output, for one change:
 *   {"specversion":"1.0","id":"<commit lsn>/<ordinal>","source":"/crwatch/<db>/<schema>/<table>",
 *    "type":"crwatch.<Kind>.<added|modified|deleted>","subject":"<key>","time":"<commit time>",
 *    "datacontenttype":"application/json","pglsn":"<commit lsn>","pgxid":<xid>,
 *    "data":{"type":"ADDED","kind":"<Kind>","key":"<key>","object":{...},
 *            "oldObject":{...},"changed":["/status/phase"],"patch":[...],"unknown":["/col"]}}
 * The key is the key columns' text joined by '/' (Kubernetes' namespace/name).
 * `id` is stable across redelivery: commit LSN and 1-based position in the
 * transaction.  `changed` and `patch` come from a structural diff of the two
 * objects (map/jsondiff.c), so they point inside JSON columns.
 *
 * The context attributes also go out as text (crw_event_t.attrs) and the
 * spans of data, object and oldObject are recorded while they are written,
 * for binary content mode and the local handlers.
 */
#include "map/cloudevents.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "map/jsondiff.h"
#include "map/value.h"

enum { ATTR_SPECVERSION, ATTR_ID, ATTR_SOURCE, ATTR_TYPE, ATTR_SUBJECT, ATTR_TIME, ATTR_CONTENTTYPE, ATTR_PGLSN,
       ATTR_PGXID, NATTRS };

struct crw_ce {
    crw_cache_t *cache;
    uint64_t horizon;   /* changes committed before it find the cache newer than they are (crw_ce_cache_horizon) */
    bool patch;
    crw_buf_t obj, old, unknown, changed, patchbuf, cachekey, head;
    crw_jdoc_t da, db, dc;
    uint32_t *sp_obj, *sp_old; /* where each column's value is in obj / the old object (span_t pairs) */
    int spcap;
    crw_event_attr_t attrs[NATTRS];
    char xid[24];
};

crw_ce_t *crw_ce_new(crw_cache_t *cache, bool patch) {
    crw_ce_t *ce = crw_calloc(1, sizeof *ce);
    ce->cache = cache;
    ce->patch = patch;
    return ce;
}

void crw_ce_destroy(crw_ce_t *ce) {
    if (!ce)
        return;
    crw_buf_t *bufs[] = {&ce->obj, &ce->old, &ce->unknown, &ce->changed, &ce->patchbuf, &ce->cachekey, &ce->head};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        crw_buf_free(bufs[i]);
    crw_jdoc_free(&ce->da);
    crw_jdoc_free(&ce->db);
    crw_jdoc_free(&ce->dc);
    free(ce->sp_obj);
    free(ce->sp_old);
    free(ce);
}


/* ---- rendering ------------------------------------------------------- */

/*
 * Column spans: for each column, where its value is in a rendered object,
 * as (offset, length) pairs, length 0 for a column the object lacks.  The
 * renderer writes them as it goes, the cache keeps them in front of each
 * object, so an unchanged-TOAST value is copied from the cached object and
 * the diff compares column by column, without tokenizing either object.
 * Relations wider than SPAN_MAX_COLS keep no spans (the text is parsed).
 */
#define SPAN_MAX_COLS 255

/* An old object: its text and, when known, its column spans (else parsed into doc). */
typedef struct {
    const char *text;
    size_t len;
    const uint32_t *spans; /* NULL: not known */
    const crw_jdoc_t *doc; /* text parsed, when spans is NULL and parsing worked; else NULL */
} oldobj_t;

/* How one object is rendered: its tuple and where unknown values may be found. */
typedef struct {
    const crw_relinfo_t *ri;
    const crw_pgo_tuple_t *t;
    const crw_pgo_tuple_t *fill; /* the whole old row ('O') */
    const oldobj_t *cached;      /* the cached object; NULL when none */
    bool keyonly;                /* t is an old key tuple */
    crw_buf_t *unknown;          /* pointers of fields not known; NULL: do not collect */
    uint32_t *spans;             /* out: the column spans of what is rendered (NULL: not kept) */
    bool discard;                /* a text's bytes go back to the system as it is rendered (crw_change_t.values_once) */
} render_t;

static void set_span(const render_t *r, int i, size_t off, size_t len) {
    if (r->spans) {
        r->spans[2 * i] = (uint32_t)off;
        r->spans[2 * i + 1] = (uint32_t)len;
    }
}

/* The cached value of column i (its pointer ptr), or NULL. */
static const char *cached_value(const oldobj_t *o, int i, const char *ptr, size_t *len) {
    if (o->spans) {
        *len = o->spans[2 * i + 1];
        return *len ? o->text + o->spans[2 * i] : NULL;
    }
    int t = o->doc ? crw_jdoc_lookup(o->doc, ptr) : -1;
    if (t < 0)
        return NULL;
    const crw_jtok_t *tok = &o->doc->toks[t];
    *len = tok->end - tok->start;
    return o->text + tok->start;
}

static void note_unknown(const render_t *r, const char *pointer) {
    if (!r->unknown)
        return;
    if (r->unknown->len)
        crw_buf_putc(r->unknown, ',');
    crw_buf_put_json_str(r->unknown, pointer, strlen(pointer));
}

/*
 * Appends `"name":value` (name pre-escaped with colon, or NULL for a bare
 * value) for column i.  @returns 1 written, 0 not known (noted), -1 no such
 * column.  as_text: the value as a JSON string of its text form.
 */
static int put_field(const render_t *r, crw_buf_t *out, const char *name, int i, bool as_text) {
    if (i < 0)
        return -1;
    const crw_rel_att_t *a = &r->ri->rel->atts[i];
    const crw_col_map_t *cm = &r->ri->cols[i];
    const crw_pgo_col_t *c = crw_pgo_tuple_col(r->t, i);
    if (c && (c->kind == CRW_PGO_COL_UNCHANGED || (r->keyonly && !(a->flags & 1)))) {
        const crw_pgo_col_t *o = c->kind == CRW_PGO_COL_UNCHANGED ? crw_pgo_tuple_col(r->fill, i) : NULL;
        c = o && o->kind != CRW_PGO_COL_UNCHANGED ? o : NULL;
        size_t vlen;
        const char *val = !c && r->cached && cm->obj_pointer ? cached_value(r->cached, i, cm->obj_pointer, &vlen) : NULL;
        if (val) {
            if (name)
                crw_buf_puts(out, name);
            set_span(r, i, out->len, vlen);
            crw_buf_put(out, val, vlen);
            return 1;
        }
    }
    if (!c) {
        note_unknown(r, cm->obj_pointer ? cm->obj_pointer : cm->pointer);
        return 0;
    }
    if (name)
        crw_buf_puts(out, name);
    size_t start = out->len;
    if (c->kind == CRW_PGO_COL_NULL)
        crw_buf_put(out, "null", 4);
    else if (r->discard && cm->ti.cls == CRW_TC_TEXT && !cm->ti.is_array)
        crw_buf_put_json_str_discard(out, c->data, c->len); /* rendered once: a large text is not resident twice */
    else if (as_text || crw_value_render(out, &cm->ti, c->data, c->len) < 0)
        crw_value_render_text(out, c->data, c->len);
    set_span(r, i, start, out->len - start);
    return 1;
}

static int render_row(const render_t *r, crw_buf_t *out) {
    crw_buf_putc(out, '{');
    bool first = true;
    for (int i = 0; i < r->ri->ncols; i++) {
        const crw_col_map_t *cm = &r->ri->cols[i];
        if (!cm->obj_pointer)
            continue;
        size_t mark = out->len;
        if (!first)
            crw_buf_putc(out, ',');
        if (put_field(r, out, cm->json_name, i, false) == 1)
            first = false;
        else
            out->len = mark;
    }
    crw_buf_putc(out, '}');
    return 0;
}

/* crd: the members of metadata, in the order they are written. */
static const struct {
    int col;
    const char *name;
    bool as_text;
    bool omit_null;
} meta[] = {
    {CRW_CRD_NAME, "\"name\":", false, false},
    {CRW_CRD_NAMESPACE, "\"namespace\":", false, false},
    {CRW_CRD_UID, "\"uid\":", false, false},
    {CRW_CRD_RESOURCE_VERSION, "\"resourceVersion\":", true, false}, /* a string, as Kubernetes has it */
    {CRW_CRD_GENERATION, "\"generation\":", false, false},
    {CRW_CRD_CREATED_AT, "\"creationTimestamp\":", false, false},
    {CRW_CRD_DELETED_AT, "\"deletionTimestamp\":", false, true},
    {CRW_CRD_LABELS, "\"labels\":", false, false},
    {CRW_CRD_ANNOTATIONS, "\"annotations\":", false, false},
};
#define NMETA (sizeof meta / sizeof meta[0])

/* crd: {apiVersion, kind, metadata{...}, spec, status} from the convention's columns. */
static int render_crd(const render_t *r, const crw_rel_variant_t *v, crw_buf_t *out, char *errstr, size_t n) {
    const crw_relinfo_t *ri = r->ri;
    crw_buf_putc(out, '{');
    if (v->js_api_version) {
        crw_buf_puts(out, "\"apiVersion\":");
        crw_buf_puts(out, v->js_api_version);
        crw_buf_putc(out, ',');
    }
    crw_buf_puts(out, "\"kind\":");
    crw_buf_puts(out, v->js_kind);
    crw_buf_puts(out, ",\"metadata\":{");
    bool first = true;
    for (size_t k = 0; k < NMETA; k++) {
        int i = ri->crd_col[meta[k].col];
        if (i < 0 || !ri->cols[i].obj_pointer)
            continue;
        const crw_pgo_col_t *c = crw_pgo_tuple_col(r->t, i);
        if (meta[k].omit_null && c && c->kind == CRW_PGO_COL_NULL)
            continue;
        size_t mark = out->len;
        if (!first)
            crw_buf_putc(out, ',');
        if (put_field(r, out, meta[k].name, i, meta[k].as_text) == 1)
            first = false;
        else
            out->len = mark;
    }
    crw_buf_putc(out, '}');
    for (int s = CRW_CRD_SPEC; s <= CRW_CRD_STATUS; s++) {
        int i = ri->crd_col[s];
        if (i < 0 || !ri->cols[i].obj_pointer)
            continue;
        size_t mark = out->len;
        int rc = put_field(r, out, s == CRW_CRD_SPEC ? ",\"spec\":" : ",\"status\":", i, false);
        if (rc != 1) {
            out->len = mark;
            set_span(r, i, 0, 0);
            continue;
        }
        /* The convention's spec is an object; anything else is not a resource. */
        const char *val = out->data + mark + strlen(",\"spec\":");
        if (s == CRW_CRD_SPEC && *val != '{') {
            snprintf(errstr, n, "%s.%s: spec is not a JSON object", ri->rel->nspname, ri->rel->relname);
            return CRW_ERR_UNMAPPED;
        }
    }
    crw_buf_putc(out, '}');
    return 0;
}

/* The object appended to out (the event itself, when r keeps no spans). */
static int render_append(const render_t *r, const crw_rel_variant_t *v, crw_buf_t *out, char *errstr, size_t n) {
    return r->ri->shape == CRW_SHAPE_CRD ? render_crd(r, v, out, errstr, n) : render_row(r, out);
}

/* The object alone in out, with its column spans when r keeps them. */
static int render(const render_t *r, const crw_rel_variant_t *v, crw_buf_t *out, char *errstr, size_t n) {
    crw_buf_reset(out);
    if (r->spans)
        memset(r->spans, 0, sizeof *r->spans * 2 * (size_t)r->ri->ncols);
    return render_append(r, v, out, errstr, n);
}

/* The variant a row belongs to (shared table: by its kind column). */
static const crw_rel_variant_t *variant_for(const crw_relinfo_t *ri, const crw_pgo_tuple_t *t, char *errstr,
                                            size_t n) {
    if (ri->kind_col < 0)
        return &ri->variants[0];
    const crw_pgo_col_t *c = crw_pgo_tuple_col(t, ri->kind_col);
    if (c && c->kind == CRW_PGO_COL_TEXT)
        for (int v = 0; v < ri->nvariants; v++)
            if (strlen(ri->variants[v].kind) == c->len && !memcmp(ri->variants[v].kind, c->data, c->len))
                return &ri->variants[v];
    snprintf(errstr, n, "%s.%s: kind column %s holds '%.*s', which no resource.<id>.kind names", ri->rel->nspname,
             ri->rel->relname, ri->rel->atts[ri->kind_col].name, c && c->kind == CRW_PGO_COL_TEXT ? (int)c->len : 6,
             c && c->kind == CRW_PGO_COL_TEXT ? c->data : "(null)");
    return NULL;
}

/* The key: key columns' text joined by '/'. */
static int make_key(crw_buf_t *key, const crw_relinfo_t *ri, const crw_pgo_tuple_t *t, const crw_pgo_tuple_t *alt,
                    char *errstr, size_t n) {
    crw_buf_reset(key);
    for (int k = 0; k < ri->nkey; k++) {
        int i = ri->key_idx[k];
        const crw_pgo_col_t *c = crw_pgo_tuple_col(t, i);
        if (c && c->kind == CRW_PGO_COL_UNCHANGED)
            c = crw_pgo_tuple_col(alt, i);
        if (!c || c->kind == CRW_PGO_COL_NULL || c->kind == CRW_PGO_COL_UNCHANGED) {
            snprintf(errstr, n, "%s.%s: key column %s is %s", ri->rel->nspname, ri->rel->relname,
                     ri->rel->atts[i].name, c && c->kind == CRW_PGO_COL_NULL ? "NULL" : "missing");
            return CRW_ERR_UNMAPPED;
        }
        if (k)
            crw_buf_putc(key, '/');
        crw_buf_put(key, c->data, c->len);
    }
    return 0;
}

/*
 * Drops one pointer (a JSON string, quotes included) from a comma list of
 * them: a crd object's metadata.resourceVersion changes with every write,
 * so `changed` leaves it out (docs/events.md); the patch keeps it.
 */
static void drop_pointer(crw_buf_t *list, const char *ptr) {
    size_t n = strlen(ptr);
    if (!list->data || list->len < n)
        return;
    for (char *p = list->data; (p = strstr(p, ptr));) {
        bool start = p == list->data || p[-1] == ',', end = p[n] == ',' || p[n] == '\0';
        if (!start || !end) {
            p += n;
            continue;
        }
        size_t from = (size_t)(p - list->data), to = from + n;
        if (list->data[to] == ',')
            to++; /* "x,next" -> "next" */
        else if (from > 0)
            from--; /* "prev,x" -> "prev" */
        memmove(list->data + from, list->data + to, list->len - to + 1);
        list->len -= to - from;
        return;
    }
}

/* The cache key: the kind too for shared tables, where names repeat across kinds. */
static void cache_key(crw_ce_t *ce, const crw_rel_variant_t *v, const crw_relinfo_t *ri, const crw_buf_t *key) {
    crw_buf_reset(&ce->cachekey);
    if (ri->kind_col >= 0) {
        crw_buf_puts(&ce->cachekey, v->kind);
        crw_buf_putc(&ce->cachekey, '\0');
    }
    crw_buf_put(&ce->cachekey, key->data ? key->data : "", key->len);
}

/* Room for the column spans of ri's rows (both objects). */
static void spans_reserve(crw_ce_t *ce, const crw_relinfo_t *ri) {
    if (ri->ncols <= ce->spcap)
        return;
    ce->spcap = ri->ncols;
    ce->sp_obj = crw_realloc(ce->sp_obj, sizeof *ce->sp_obj * 2 * (size_t)ce->spcap);
    ce->sp_old = crw_realloc(ce->sp_old, sizeof *ce->sp_old * 2 * (size_t)ce->spcap);
}

static bool keeps_spans(const crw_relinfo_t *ri) { return ri->ncols <= SPAN_MAX_COLS; }

/*
 * A cache entry: uint32 ncols (0: no spans), ncols span pairs, the object.
 * Stores ce->obj with its spans under the current key.
 */
static void cache_store(crw_ce_t *ce, const crw_relinfo_t *ri) {
    uint32_t nc = keeps_spans(ri) && ce->obj.len <= UINT32_MAX ? (uint32_t)ri->ncols : 0;
    crw_buf_reset(&ce->head);
    crw_buf_put(&ce->head, &nc, sizeof nc);
    crw_buf_put(&ce->head, ce->sp_obj, sizeof *ce->sp_obj * 2 * nc);
    crw_cache_put_parts(ce->cache, ri->rel->relid, ce->cachekey.data, ce->cachekey.len, ce->head.data, ce->head.len,
                        ce->obj.data, ce->obj.len);
}

/*
 * The cached object of the current key, or false.  Its text points into the
 * cache, valid until the next put or remove (crw_ce_change makes them last).
 * Spans are copied into ce->sp_old when they fit the relation as it is now;
 * otherwise the text is parsed into ce->dc.
 */
static bool cache_lookup(crw_ce_t *ce, const crw_relinfo_t *ri, oldobj_t *o) {
    if (!ce->cache || !ri->cached)
        return false;
    size_t len;
    const char *e = crw_cache_get(ce->cache, ri->rel->relid, ce->cachekey.data, ce->cachekey.len, &len);
    uint32_t nc;
    if (!e || len < sizeof nc)
        return false;
    memcpy(&nc, e, sizeof nc);
    size_t hlen = sizeof nc + sizeof(uint32_t) * 2 * nc;
    if (len < hlen)
        return false;
    *o = (oldobj_t){e + hlen, len - hlen, NULL, NULL};
    if (nc && nc == (uint32_t)ri->ncols) {
        memcpy(ce->sp_old, e + sizeof nc, sizeof(uint32_t) * 2 * nc); /* the entry's bytes are not aligned */
        o->spans = ce->sp_old;
    } else if (crw_jdoc_parse(&ce->dc, o->text, o->len) == 0)
        o->doc = &ce->dc;
    else
        return false;
    return true;
}

/* ---- the envelope ----------------------------------------------------- */

static void attr(crw_ce_t *ce, int i, const char *name, const char *value, size_t len) {
    ce->attrs[i] = (crw_event_attr_t){name, value, len};
}

/* The context attributes as text, in the order the JSON has them; subject NULL: none (TRUNCATED). */
static void set_attrs(crw_ce_t *ce, crw_event_t *ev, const crw_relinfo_t *ri, const crw_rel_variant_t *v,
                      const crw_txn_ctx_t *tx, int verb, const crw_buf_t *subject) {
    size_t xn = crw_u64_format(ce->xid, tx->xid); /* by hand, not printf: every event */
    int k = 0;
    attr(ce, k++, "specversion", "1.0", 3);
    attr(ce, k++, "id", ev->id, ev->idlen);
    attr(ce, k++, "source", ri->source, strlen(ri->source));
    attr(ce, k++, "type", v->type[verb], strlen(v->type[verb]));
    if (subject)
        attr(ce, k++, "subject", subject->data ? subject->data : "", subject->len);
    attr(ce, k++, "time", tx->time_str, strlen(tx->time_str));
    attr(ce, k++, "datacontenttype", "application/json", 16);
    attr(ce, k++, "pglsn", tx->lsn_str, strlen(tx->lsn_str));
    attr(ce, k++, "pgxid", ce->xid, xn);
    ev->attrs = ce->attrs;
    ev->nattrs = k;
}

static void put_header(crw_buf_t *out, const crw_relinfo_t *ri, const crw_rel_variant_t *v, const crw_event_t *ev,
                       int verb) {
    crw_buf_put(out, "{\"specversion\":\"1.0\",\"id\":", 26);
    crw_buf_put_json_str(out, ev->id, ev->idlen);
    crw_buf_put(out, ",\"source\":", 10);
    crw_buf_puts(out, ri->js_source);
    crw_buf_put(out, ",\"type\":", 8);
    crw_buf_puts(out, v->js_type[verb]);
}

static void put_tail(crw_buf_t *out, const crw_txn_ctx_t *tx) {
    crw_buf_put(out, ",\"time\":\"", 9);
    crw_buf_puts(out, tx->time_str);
    crw_buf_put(out, "\",\"datacontenttype\":\"application/json\",\"pglsn\":\"", 48);
    crw_buf_puts(out, tx->lsn_str);
    crw_buf_put(out, "\",\"pgxid\":", 10);
    crw_buf_put_u64(out, tx->xid);
}

/* Opens "data": records where its value starts. */
static void open_data(crw_buf_t *out, crw_event_t *ev) {
    crw_buf_put(out, ",\"data\":", 8);
    ev->data.off = out->len;
}

/* Closes "data" and the event; the data span ends before the final brace. */
static void close_data(crw_buf_t *out, crw_event_t *ev) {
    crw_buf_putc(out, '}');
    ev->data.len = out->len - ev->data.off;
    crw_buf_putc(out, '}');
}

/* Appends ,"<name>":<json> and records its span. */
static void put_object_text(crw_buf_t *out, const char *member, size_t mlen, const char *json, size_t len,
                            crw_span_t *span) {
    crw_buf_put(out, member, mlen);
    span->off = out->len;
    span->len = len;
    crw_buf_put(out, json, len);
}

static void put_object(crw_buf_t *out, const char *member, size_t mlen, const crw_buf_t *json, crw_span_t *span) {
    put_object_text(out, member, mlen, json->data, json->len, span);
}

/* Column c's value in object o (text + spans), or NULL when o lacks it. */
static const char *span_value(const char *text, const uint32_t *spans, int c, size_t *len) {
    *len = spans[2 * c + 1];
    return *len ? text + spans[2 * c] : NULL;
}

/*
 * One group of members (the members of one object, in the order they are
 * written), compared column by column in the order crw_jdoc_diff walks them:
 * changed and added members first, then removed ones.
 */
static void diff_group(crw_ce_t *ce, const crw_relinfo_t *ri, const oldobj_t *old, const uint32_t *spans,
                       const int *cols, int ncols) {
    const char *skip = ce->unknown.len ? ce->unknown.data : NULL;
    crw_buf_t *patch = ce->patch ? &ce->patchbuf : NULL;
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < ncols; k++) {
            int c = cols[k];
            size_t an, bn;
            const char *a = span_value(old->text, old->spans, c, &an);
            const char *b = span_value(ce->obj.data, spans, c, &bn);
            if (pass == 0 ? b != NULL : (a != NULL && b == NULL))
                crw_jdoc_diff_member(ri->cols[c].obj_pointer, a, an, b, bn, &ce->da, &ce->db, &ce->changed, patch,
                                     skip);
        }
}

/* `changed` (and the patch) between the old object and ce->obj. */
static void diff_objects(crw_ce_t *ce, const crw_relinfo_t *ri, const oldobj_t *old, const uint32_t *spans) {
    const char *skip = ce->unknown.len ? ce->unknown.data : NULL;
    crw_buf_t *patch = ce->patch ? &ce->patchbuf : NULL;
    if (!spans || !old->spans) {
        /* no spans on one side: both objects tokenized (the cached one may be already) */
        const crw_jdoc_t *olddoc = old->doc;
        if (!olddoc && crw_jdoc_parse(&ce->da, old->text, old->len) == 0)
            olddoc = &ce->da;
        if (olddoc && crw_jdoc_parse(&ce->db, ce->obj.data, ce->obj.len) == 0)
            crw_jdoc_diff(olddoc, &ce->db, &ce->changed, patch, skip);
        return;
    }
    int cols[SPAN_MAX_COLS], nc = 0;
    if (ri->shape == CRW_SHAPE_CRD) {
        /* metadata's members, then spec and status; apiVersion and kind are the variant's, the same in both */
        for (size_t k = 0; k < NMETA; k++) {
            int i = ri->crd_col[meta[k].col];
            if (i >= 0 && ri->cols[i].obj_pointer)
                cols[nc++] = i;
        }
        diff_group(ce, ri, old, spans, cols, nc);
        nc = 0;
        for (int s = CRW_CRD_SPEC; s <= CRW_CRD_STATUS; s++) {
            int i = ri->crd_col[s];
            if (i >= 0 && ri->cols[i].obj_pointer)
                cols[nc++] = i;
        }
    } else
        for (int i = 0; i < ri->ncols; i++)
            if (ri->cols[i].obj_pointer)
                cols[nc++] = i;
    diff_group(ce, ri, old, spans, cols, nc);
}

int crw_ce_change(crw_ce_t *ce, crw_buf_t *out, crw_buf_t *key, crw_event_t *ev, const crw_relinfo_t *ri,
                  const crw_change_t *ch, const crw_txn_ctx_t *tx, char *errstr, size_t n) {
    const crw_pgo_tuple_t *newt = ch->newtup, *oldt = ch->oldkind ? ch->oldtup : NULL;
    char oldkind = ch->oldkind;
    int verb;
    switch (ch->op) {
    case CRW_OP_INSERT: verb = CRW_VERB_ADDED; ev->type = "ADDED"; break;
    case CRW_OP_UPDATE: verb = CRW_VERB_MODIFIED; ev->type = "MODIFIED"; break;
    case CRW_OP_DELETE: verb = CRW_VERB_DELETED; ev->type = "DELETED"; break;
    case CRW_OP_READ: verb = CRW_VERB_SYNC; ev->type = "SYNC"; break;
    default: snprintf(errstr, n, "not a row change: '%c'", ch->op); return CRW_ERR_UNMAPPED;
    }
    if (!newt && !oldt) {
        snprintf(errstr, n, "%s.%s: delete without an old key (REPLICA IDENTITY NOTHING)", ri->rel->nspname,
                 ri->rel->relname);
        return CRW_ERR_UNMAPPED;
    }
    const crw_pgo_tuple_t *cur = newt ? newt : oldt;
    const crw_rel_variant_t *v = variant_for(ri, cur, errstr, n);
    if (!v)
        return CRW_ERR_UNMAPPED;
    int rc = make_key(key, ri, cur, oldt, errstr, n);
    if (rc < 0)
        return rc;
    ev->kind = v->kind;
    /* An update that changed the key: the old object lives under the old key. */
    crw_buf_t *oldkey = &ce->patchbuf; /* borrowed until the diff below */
    bool rekeyed = false;
    if (newt && oldt && oldkind == 'K') {
        char e2[8];
        if (make_key(oldkey, ri, oldt, NULL, e2, sizeof e2) == 0 &&
            (oldkey->len != key->len || memcmp(oldkey->data, key->data, key->len)))
            rekeyed = true;
    }
    cache_key(ce, v, ri, rekeyed ? oldkey : key);
    /* A read (SYNC) is the whole current object: it has no older one to show. */
    /* A change older than the cache's listing would find a newer object there: treated as a miss. */
    spans_reserve(ce, ri);
    uint32_t *spans = keeps_spans(ri) ? ce->sp_obj : NULL;
    oldobj_t co;
    const oldobj_t *cached = oldkind == 'O' || ch->op == CRW_OP_READ || tx->commit_lsn < ce->horizon ||
                                     !cache_lookup(ce, ri, &co)
                                 ? NULL
                                 : &co;

    /* object, and oldObject when the old row is known */
    crw_buf_reset(&ce->unknown);
    render_t r = {ri, cur, oldkind == 'O' ? oldt : NULL, cached, newt == NULL && oldkind == 'K', &ce->unknown, spans};
    oldobj_t old = {NULL, 0, NULL, NULL};
    bool have_old = false;
    /* With no diff to make and nothing to cache, the object is rendered
     * straight into the event: a copy of it would double a large value. */
    bool direct = !cached && !(newt && oldkind == 'O') && !(ce->cache && ri->cached && tx->commit_lsn >= ce->horizon);
    if (direct) {
        r.spans = NULL;
        /* nothing reads the row after the event is rendered, unless a crd's spec check fails on it */
        r.discard = ch->values_once && ri->shape != CRW_SHAPE_CRD;
    } else if (!newt && cached) {
        /* a key-only delete: the cache knows the whole last state */
        crw_buf_reset(&ce->obj);
        crw_buf_put(&ce->obj, cached->text, cached->len);
        spans = NULL;
    } else if ((rc = render(&r, v, &ce->obj, errstr, n)) < 0)
        return rc;
    if (newt && oldkind == 'O') {
        render_t ro = {ri, oldt, NULL, NULL, false, NULL, spans ? ce->sp_old : NULL};
        if ((rc = render(&ro, v, &ce->old, errstr, n)) < 0)
            return rc;
        old = (oldobj_t){ce->old.data, ce->old.len, ro.spans, NULL};
        have_old = true;
    } else if (newt && cached) {
        old = *cached; /* straight from the cache: nothing below changes it before the event is written */
        have_old = true;
    }

    /* the envelope */
    crw_buf_reset(out);
    put_header(out, ri, v, ev, verb);
    crw_buf_put(out, ",\"subject\":", 11);
    crw_buf_put_json_str(out, key->data ? key->data : "", key->len);
    put_tail(out, tx);
    open_data(out, ev);
    crw_buf_put(out, "{\"type\":\"", 9);
    crw_buf_puts(out, ev->type);
    crw_buf_put(out, "\",\"kind\":", 9);
    crw_buf_puts(out, v->js_kind);
    crw_buf_put(out, ",\"key\":", 7);
    crw_buf_put_json_str(out, key->data ? key->data : "", key->len);
    if (direct) {
        crw_buf_put(out, ",\"object\":", 10);
        ev->object.off = out->len;
        if ((rc = render_append(&r, v, out, errstr, n)) < 0)
            return rc;
        ev->object.len = out->len - ev->object.off;
    } else
        put_object(out, ",\"object\":", 10, &ce->obj, &ev->object);
    ev->old_object = (crw_span_t){0, 0};
    if (have_old) {
        put_object_text(out, ",\"oldObject\":", 13, old.text, old.len, &ev->old_object);
        crw_buf_reset(&ce->changed);
        crw_buf_reset(&ce->patchbuf);
        diff_objects(ce, ri, &old, spans);
        if (ri->shape == CRW_SHAPE_CRD)
            drop_pointer(&ce->changed, "\"/metadata/resourceVersion\"");
        crw_buf_put(out, ",\"changed\":[", 12);
        crw_buf_put(out, ce->changed.data ? ce->changed.data : "", ce->changed.len);
        crw_buf_putc(out, ']');
        if (ce->patch) {
            crw_buf_put(out, ",\"patch\":[", 10);
            crw_buf_put(out, ce->patchbuf.data ? ce->patchbuf.data : "", ce->patchbuf.len);
            crw_buf_putc(out, ']');
        }
    }
    if (!have_old && ch->op == CRW_OP_UPDATE && ce->cache && ri->cached)
        crw_buf_put(out, ",\"oldObjectUnknown\":true", 24); /* a cache miss: never a wrong oldObject */
    if (ce->unknown.len) {
        crw_buf_put(out, ",\"unknown\":[", 12);
        crw_buf_put(out, ce->unknown.data, ce->unknown.len);
        crw_buf_putc(out, ']');
    }
    close_data(out, ev);
    set_attrs(ce, ev, ri, v, tx, verb, key);

    /* keep the cache current: only whole objects are worth remembering; a change older than the listing leaves
     * what the listing read, which is newer */
    if (ce->cache && ri->cached && tx->commit_lsn >= ce->horizon) {
        if (rekeyed)
            crw_cache_remove(ce->cache, ri->rel->relid, ce->cachekey.data, ce->cachekey.len);
        cache_key(ce, v, ri, key);
        if (!newt || ce->unknown.len)
            crw_cache_remove(ce->cache, ri->rel->relid, ce->cachekey.data, ce->cachekey.len);
        else
            cache_store(ce, ri);
    }
    return 0;
}

void crw_ce_cache_horizon(crw_ce_t *ce, uint64_t lsn) { ce->horizon = lsn; }

int crw_ce_seed(crw_ce_t *ce, const crw_relinfo_t *ri, const crw_pgo_tuple_t *row, char *errstr, size_t n) {
    if (!ce->cache || !ri->cached)
        return 0;
    const crw_rel_variant_t *v = variant_for(ri, row, errstr, n);
    if (!v)
        return CRW_ERR_UNMAPPED;
    int rc = make_key(&ce->old, ri, row, NULL, errstr, n);
    if (rc < 0)
        return rc;
    cache_key(ce, v, ri, &ce->old);
    spans_reserve(ce, ri);
    render_t r = {ri, row, NULL, NULL, false, NULL, ce->sp_obj};
    if ((rc = render(&r, v, &ce->obj, errstr, n)) < 0)
        return rc;
    cache_store(ce, ri);
    return 0;
}

void crw_ce_truncate(crw_ce_t *ce, crw_buf_t *out, crw_event_t *ev, const crw_relinfo_t *ri, const crw_txn_ctx_t *tx) {
    if (ce->cache)
        crw_cache_clear_relation(ce->cache, ri->rel->relid);
    const crw_rel_variant_t *v = &ri->variants[0];
    crw_buf_reset(out);
    put_header(out, ri, v, ev, CRW_VERB_TRUNCATED);
    put_tail(out, tx);
    open_data(out, ev);
    crw_buf_put(out, "{\"type\":\"TRUNCATED\",\"kind\":", 27);
    crw_buf_puts(out, v->js_kind);
    close_data(out, ev);
    ev->type = "TRUNCATED";
    ev->kind = v->kind;
    ev->object = ev->old_object = (crw_span_t){0, 0};
    set_attrs(ce, ev, ri, v, tx, CRW_VERB_TRUNCATED, NULL);
}
