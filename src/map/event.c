/*
 * event.c — the mapper: row changes to CloudEvents.
 *
 * Output (design.md §4), for one change:
 *   {"specversion":"1.0","id":"<commit lsn>/<ordinal>","source":"/crwatch/<db>/<schema>/<table>",
 *    "type":"crwatch.<Kind>.<added|modified|deleted>","subject":"<key>","time":"<commit time>",
 *    "datacontenttype":"application/json","pglsn":"<commit lsn>","pgxid":<xid>,
 *    "data":{"type":"ADDED","kind":"<Kind>","key":"<key>","object":{...},
 *            "oldObject":{...},"changed":["/status/phase"],"patch":[...],"unknown":["/col"]}}
 * The key is the key columns' text joined by '/' (Kubernetes' namespace/name).
 * `id` is stable across redelivery: commit LSN and 1-based position in the
 * transaction.  oldObject comes from the old row (REPLICA IDENTITY FULL) or
 * the resource cache; `changed` and `patch` come from a structural diff of
 * the two objects, so they point inside JSON columns.
 */
#include "map/event.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/conf.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "map/jsondiff.h"
#include "map/value.h"

struct crw_mapper {
    crw_cache_t *cache;
    bool patch;
    crw_buf_t obj, old, unknown, changed, patchbuf, cachekey, cached;
    crw_jdoc_t da, db, dc;
};

crw_mapper_t *crw_mapper_new(crw_cache_t *cache, bool patch) {
    crw_mapper_t *mp = crw_calloc(1, sizeof *mp);
    mp->cache = cache;
    mp->patch = patch;
    return mp;
}

void crw_mapper_destroy(crw_mapper_t *mp) {
    if (!mp)
        return;
    crw_buf_t *bufs[] = {&mp->obj, &mp->old, &mp->unknown, &mp->changed, &mp->patchbuf, &mp->cachekey, &mp->cached};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        crw_buf_free(bufs[i]);
    crw_jdoc_free(&mp->da);
    crw_jdoc_free(&mp->db);
    crw_jdoc_free(&mp->dc);
    crw_value_thread_cleanup();
    free(mp);
}

void crw_event_format_time(char *buf, size_t n, int64_t pg_us) {
    crw_clock_format_iso(buf, n, pg_us + CRW_PG_EPOCH_OFFSET_US);
}

void crw_event_txn_init(crw_txn_ctx_t *tx, uint64_t commit_lsn, uint32_t xid, int64_t commit_time) {
    tx->commit_lsn = commit_lsn;
    tx->xid = xid;
    tx->commit_time = commit_time;
    tx->ordinal = 0;
    crw_event_format_time(tx->time_str, sizeof tx->time_str, commit_time);
    crw_lsn_format(tx->lsn_str, commit_lsn);
}

/* ---- preparing a relation -------------------------------------------- */

enum { VERB_ADDED, VERB_MODIFIED, VERB_DELETED, VERB_TRUNCATED };

static char *json_dup(const char *text) {
    crw_buf_t b = CRW_BUF_INIT;
    crw_buf_put_json_str(&b, text, strlen(text));
    return b.data; /* ownership moves to the caller */
}

static int att_index(const crw_relation_t *rel, const char *name) {
    for (int i = 0; i < rel->natts; i++)
        if (!strcmp(rel->atts[i].name, name))
            return i;
    return -1;
}

static bool in_list(const crw_strlist_t *l, const char *s) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], s))
            return true;
    return false;
}

/* The convention's columns and where a crd-shaped object keeps them. */
static const char *const crd_names[CRW_CRD_NCOLS] = {
    "namespace", "name", "uid", "generation", "resource_version", "labels",
    "annotations", "created_at", "deleted_at", "spec", "status"};
static const char *const crd_pointers[CRW_CRD_NCOLS] = {
    "/metadata/namespace", "/metadata/name", "/metadata/uid", "/metadata/generation",
    "/metadata/resourceVersion", "/metadata/labels", "/metadata/annotations",
    "/metadata/creationTimestamp", "/metadata/deletionTimestamp", "/spec", "/status"};

static void set_variant(crw_rel_variant_t *v, const crw_resource_conf_t *res, const char *kind) {
    static const char *const verbs[4] = {"added", "modified", "deleted", "truncated"};
    v->res = res;
    v->kind = crw_strdup(kind);
    v->js_kind = json_dup(kind);
    v->js_api_version = res && res->api_version && *res->api_version ? json_dup(res->api_version) : NULL;
    crw_buf_t b = CRW_BUF_INIT;
    for (int i = 0; i < 4; i++) {
        crw_buf_reset(&b);
        crw_buf_printf(&b, "crwatch.%s.%s", kind, verbs[i]);
        v->js_type[i] = json_dup(b.data);
    }
    crw_buf_free(&b);
}

int crw_mapper_prepare(crw_relation_t *rel, const crw_resource_conf_t *const *res, int nres, const char *const *pk,
                       int npk, char *errstr, size_t n) {
    const crw_resource_conf_t *first = nres ? res[0] : NULL;
    crw_relcache_clear_variants(rel);
    rel->res = first;
    rel->shape = first ? (int)first->shape : CRW_SHAPE_ROW;
    rel->nvariants = nres ? nres : 1;
    rel->variants = crw_calloc((size_t)rel->nvariants, sizeof *rel->variants);
    for (int v = 0; v < rel->nvariants; v++)
        set_variant(&rel->variants[v], nres ? res[v] : NULL, nres ? res[v]->kind : rel->relname);
    free(rel->kind);
    rel->kind = crw_strdup(rel->variants[0].kind);
    free(rel->js_source);
    rel->js_source = json_dup(rel->source);

    rel->kind_col = -1;
    if (first && first->kind_column && *first->kind_column) {
        rel->kind_col = att_index(rel, first->kind_column);
        if (rel->kind_col < 0) {
            snprintf(errstr, n, "resource.%s.kind.column: table %s.%s has no column '%s'", first->id, rel->nspname,
                     rel->relname, first->kind_column);
            return CRW_ERR_CONFIG;
        }
    }
    /* Where each column lands in the object. */
    for (int c = 0; c < CRW_CRD_NCOLS; c++)
        rel->crd_col[c] = -1;
    const crw_strlist_t *inc = first ? &first->include : NULL, *exc = first ? &first->exclude : NULL;
    for (int l = 0; first && l < 2; l++) {
        const crw_strlist_t *list = l ? exc : inc;
        for (int i = 0; i < list->n; i++)
            if (att_index(rel, list->v[i]) < 0) {
                snprintf(errstr, n, "resource.%s.columns.%s: table %s.%s has no column '%s'", first->id,
                         l ? "exclude" : "include", rel->nspname, rel->relname, list->v[i]);
                return CRW_ERR_CONFIG;
            }
    }
    for (int i = 0; i < rel->natts; i++) {
        crw_rel_att_t *a = &rel->atts[i];
        free(a->obj_pointer);
        a->obj_pointer = NULL;
        bool keep = !inc || ((inc->n == 0 || in_list(inc, a->name)) && !in_list(exc, a->name));
        if (rel->shape == CRW_SHAPE_CRD) {
            for (int c = 0; c < CRW_CRD_NCOLS; c++)
                if (!strcmp(a->name, crd_names[c])) {
                    rel->crd_col[c] = i;
                    if (keep)
                        a->obj_pointer = crw_strdup(crd_pointers[c]);
                }
        } else if (keep)
            a->obj_pointer = crw_strdup(a->pointer);
    }
    if (rel->shape == CRW_SHAPE_CRD && (rel->crd_col[CRW_CRD_NAME] < 0 || rel->crd_col[CRW_CRD_SPEC] < 0)) {
        snprintf(errstr, n, "resource.%s.shape=crd: table %s.%s needs at least columns name and spec", first->id,
                 rel->nspname, rel->relname);
        return CRW_ERR_CONFIG;
    }

    /* Key columns. */
    free(rel->key_idx);
    rel->key_idx = crw_calloc(rel->natts ? rel->natts : 1, sizeof(int));
    rel->nkey = 0;
    if (first && first->key.n) {
        for (int k = 0; k < first->key.n; k++) {
            int i = att_index(rel, first->key.v[k]);
            if (i < 0) {
                snprintf(errstr, n, "resource.%s.key: table %s.%s has no column '%s'", first->id, rel->nspname,
                         rel->relname, first->key.v[k]);
                return CRW_ERR_CONFIG;
            }
            rel->key_idx[rel->nkey++] = i;
        }
    } else if (rel->shape == CRW_SHAPE_CRD) {
        if (rel->crd_col[CRW_CRD_NAMESPACE] >= 0)
            rel->key_idx[rel->nkey++] = rel->crd_col[CRW_CRD_NAMESPACE];
        rel->key_idx[rel->nkey++] = rel->crd_col[CRW_CRD_NAME];
    } else {
        for (int k = 0; k < npk; k++) {
            int i = att_index(rel, pk[k]);
            if (i >= 0)
                rel->key_idx[rel->nkey++] = i;
        }
        if (rel->nkey == 0 && rel->replident != 'f')
            for (int i = 0; i < rel->natts; i++)
                if (rel->atts[i].flags & 1)
                    rel->key_idx[rel->nkey++] = i;
        if (rel->nkey == 0)
            for (int i = 0; i < rel->natts; i++)
                rel->key_idx[rel->nkey++] = i;
    }
    return 0;
}

/* ---- rendering ------------------------------------------------------- */

/* How one object is rendered: its tuple and where unknown values may be found. */
typedef struct {
    crw_mapper_t *mp;
    const crw_relation_t *rel;
    const crw_pgo_tuple_t *t;
    const crw_pgo_tuple_t *fill; /* the whole old row ('O') */
    const crw_jdoc_t *cached;    /* the cached object, parsed; NULL when none */
    bool keyonly;                /* t is an old key tuple */
    crw_buf_t *unknown;          /* pointers of fields not known; NULL: do not collect */
} render_t;

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
    const crw_rel_att_t *a = &r->rel->atts[i];
    const crw_pgo_col_t *c = crw_pgo_tuple_col(r->t, i);
    if (c && (c->kind == CRW_PGO_COL_UNCHANGED || (r->keyonly && !(a->flags & 1)))) {
        const crw_pgo_col_t *o = c->kind == CRW_PGO_COL_UNCHANGED ? crw_pgo_tuple_col(r->fill, i) : NULL;
        c = o && o->kind != CRW_PGO_COL_UNCHANGED ? o : NULL;
        if (!c && r->cached && a->obj_pointer) {
            int t = crw_jdoc_lookup(r->cached, a->obj_pointer);
            if (t >= 0) {
                if (name)
                    crw_buf_puts(out, name);
                const crw_jtok_t *tok = &r->cached->toks[t];
                crw_buf_put(out, r->cached->text + tok->start, tok->end - tok->start);
                return 1;
            }
        }
    }
    if (!c) {
        note_unknown(r, a->obj_pointer ? a->obj_pointer : a->pointer);
        return 0;
    }
    if (name)
        crw_buf_puts(out, name);
    if (c->kind == CRW_PGO_COL_NULL)
        crw_buf_put(out, "null", 4);
    else if (as_text || crw_value_render(out, &a->ti, c->data, c->len) < 0)
        crw_value_render_text(out, c->data, c->len);
    return 1;
}

static int render_row(const render_t *r, crw_buf_t *out) {
    crw_buf_putc(out, '{');
    bool first = true;
    for (int i = 0; i < r->rel->natts; i++) {
        const crw_rel_att_t *a = &r->rel->atts[i];
        if (!a->obj_pointer)
            continue;
        size_t mark = out->len;
        if (!first)
            crw_buf_putc(out, ',');
        if (put_field(r, out, a->json_name, i, false) == 1)
            first = false;
        else
            out->len = mark;
    }
    crw_buf_putc(out, '}');
    return 0;
}

/* crd: {apiVersion, kind, metadata{...}, spec, status} from the convention's columns. */
static int render_crd(const render_t *r, const crw_rel_variant_t *v, crw_buf_t *out, char *errstr, size_t n) {
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
    const crw_relation_t *rel = r->rel;
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
    for (size_t k = 0; k < sizeof meta / sizeof meta[0]; k++) {
        int i = rel->crd_col[meta[k].col];
        if (i < 0 || !rel->atts[i].obj_pointer)
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
        int i = rel->crd_col[s];
        if (i < 0 || !rel->atts[i].obj_pointer)
            continue;
        size_t mark = out->len;
        int rc = put_field(r, out, s == CRW_CRD_SPEC ? ",\"spec\":" : ",\"status\":", i, false);
        if (rc != 1) {
            out->len = mark;
            continue;
        }
        /* The convention's spec is an object; anything else is not a resource. */
        const char *val = out->data + mark + strlen(",\"spec\":");
        if (s == CRW_CRD_SPEC && *val != '{') {
            snprintf(errstr, n, "%s.%s: spec is not a JSON object", rel->nspname, rel->relname);
            return -1;
        }
    }
    crw_buf_putc(out, '}');
    return 0;
}

static int render(const render_t *r, const crw_rel_variant_t *v, crw_buf_t *out, char *errstr, size_t n) {
    crw_buf_reset(out);
    return r->rel->shape == CRW_SHAPE_CRD ? render_crd(r, v, out, errstr, n) : render_row(r, out);
}

/* The variant a row belongs to (shared table: by its kind column). */
static const crw_rel_variant_t *variant_for(const crw_relation_t *rel, const crw_pgo_tuple_t *t, char *errstr,
                                            size_t n) {
    if (rel->kind_col < 0)
        return &rel->variants[0];
    const crw_pgo_col_t *c = crw_pgo_tuple_col(t, rel->kind_col);
    if (c && c->kind == CRW_PGO_COL_TEXT)
        for (int v = 0; v < rel->nvariants; v++)
            if (strlen(rel->variants[v].kind) == c->len && !memcmp(rel->variants[v].kind, c->data, c->len))
                return &rel->variants[v];
    snprintf(errstr, n, "%s.%s: kind column %s holds '%.*s', which no resource.<id>.kind names", rel->nspname,
             rel->relname, rel->atts[rel->kind_col].name, c && c->kind == CRW_PGO_COL_TEXT ? (int)c->len : 6,
             c && c->kind == CRW_PGO_COL_TEXT ? c->data : "(null)");
    return NULL;
}

/* The key: key columns' text joined by '/'. */
static int make_key(crw_buf_t *key, const crw_relation_t *rel, const crw_pgo_tuple_t *t, const crw_pgo_tuple_t *alt,
                    char *errstr, size_t n) {
    crw_buf_reset(key);
    for (int k = 0; k < rel->nkey; k++) {
        int i = rel->key_idx[k];
        const crw_pgo_col_t *c = crw_pgo_tuple_col(t, i);
        if (c && c->kind == CRW_PGO_COL_UNCHANGED)
            c = crw_pgo_tuple_col(alt, i);
        if (!c || c->kind == CRW_PGO_COL_NULL || c->kind == CRW_PGO_COL_UNCHANGED) {
            snprintf(errstr, n, "%s.%s: key column %s is %s", rel->nspname, rel->relname, rel->atts[i].name,
                     c && c->kind == CRW_PGO_COL_NULL ? "NULL" : "missing");
            return -1;
        }
        if (k)
            crw_buf_putc(key, '/');
        crw_buf_put(key, c->data, c->len);
    }
    return 0;
}

/* The cache key: the kind too for shared tables, where names repeat across kinds. */
static void cache_key(crw_mapper_t *mp, const crw_rel_variant_t *v, const crw_relation_t *rel, const crw_buf_t *key) {
    crw_buf_reset(&mp->cachekey);
    if (rel->kind_col >= 0) {
        crw_buf_puts(&mp->cachekey, v->kind);
        crw_buf_putc(&mp->cachekey, '\0');
    }
    crw_buf_put(&mp->cachekey, key->data ? key->data : "", key->len);
}

/* Parses the cached object of the current key into mp->dc; returns it or NULL. */
static const crw_jdoc_t *cached_doc(crw_mapper_t *mp, const crw_relation_t *rel) {
    if (!mp->cache)
        return NULL;
    size_t len;
    const char *o = crw_cache_get(mp->cache, rel->relid, mp->cachekey.data, mp->cachekey.len, &len);
    if (!o)
        return NULL;
    crw_buf_reset(&mp->cached);
    crw_buf_put(&mp->cached, o, len); /* a copy: the cache entry may change before we are done */
    return crw_jdoc_parse(&mp->dc, mp->cached.data, mp->cached.len) == 0 ? &mp->dc : NULL;
}

static void put_header(crw_buf_t *out, const crw_relation_t *rel, const crw_rel_variant_t *v,
                       const crw_txn_ctx_t *tx, int verb) {
    crw_buf_put(out, "{\"specversion\":\"1.0\",\"id\":\"", 27);
    crw_buf_puts(out, tx->lsn_str);
    crw_buf_putc(out, '/');
    crw_buf_put_u64(out, tx->ordinal);
    crw_buf_put(out, "\",\"source\":", 11);
    crw_buf_puts(out, rel->js_source);
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

int crw_mapper_change(crw_mapper_t *mp, crw_buf_t *out, crw_buf_t *key, const char **type, const char **kind,
                      const crw_relation_t *rel,
                      const crw_pgo_msg_t *m, const crw_txn_ctx_t *tx, char *errstr, size_t n) {
    const crw_pgo_tuple_t *newt = NULL, *oldt = NULL;
    char oldkind = 0;
    int verb;
    switch (m->type) {
    case CRW_PGO_INSERT:
        newt = &m->u.insert.newtup;
        verb = VERB_ADDED;
        *type = "ADDED";
        break;
    case CRW_PGO_UPDATE:
        newt = &m->u.update.newtup;
        oldkind = m->u.update.oldkind;
        oldt = oldkind ? &m->u.update.oldtup : NULL;
        verb = VERB_MODIFIED;
        *type = "MODIFIED";
        break;
    case CRW_PGO_DELETE:
        oldkind = m->u.del.oldkind;
        oldt = oldkind ? &m->u.del.oldtup : NULL;
        verb = VERB_DELETED;
        *type = "DELETED";
        break;
    default:
        snprintf(errstr, n, "not a row change: %s", crw_pgo_type_name(m->type));
        return -1;
    }
    if (!newt && !oldt) {
        snprintf(errstr, n, "%s.%s: delete without an old key (REPLICA IDENTITY NOTHING)", rel->nspname,
                 rel->relname);
        return -1;
    }
    const crw_pgo_tuple_t *cur = newt ? newt : oldt;
    const crw_rel_variant_t *v = variant_for(rel, cur, errstr, n);
    if (!v || make_key(key, rel, cur, oldt, errstr, n) < 0)
        return -1;
    *kind = v->kind;
    /* An update that changed the key: the old object lives under the old key. */
    crw_buf_t *oldkey = &mp->patchbuf; /* borrowed until the diff below */
    bool rekeyed = false;
    if (newt && oldt && oldkind == 'K') {
        char e2[8];
        if (make_key(oldkey, rel, oldt, NULL, e2, sizeof e2) == 0 &&
            (oldkey->len != key->len || memcmp(oldkey->data, key->data, key->len)))
            rekeyed = true;
    }
    cache_key(mp, v, rel, rekeyed ? oldkey : key);
    const crw_jdoc_t *cached = oldkind == 'O' ? NULL : cached_doc(mp, rel);

    /* object, and oldObject when the old row is known */
    crw_buf_reset(&mp->unknown);
    render_t r = {mp, rel, cur, oldkind == 'O' ? oldt : NULL, cached, newt == NULL && oldkind == 'K', &mp->unknown};
    bool have_old = false;
    if (!newt && cached) {
        /* a key-only delete: the cache knows the whole last state */
        crw_buf_reset(&mp->obj);
        crw_buf_put(&mp->obj, mp->cached.data, mp->cached.len);
    } else if (render(&r, v, &mp->obj, errstr, n) < 0)
        return -1;
    if (newt && oldkind == 'O') {
        render_t ro = {mp, rel, oldt, NULL, NULL, false, NULL};
        if (render(&ro, v, &mp->old, errstr, n) < 0)
            return -1;
        have_old = true;
    } else if (newt && cached) {
        crw_buf_reset(&mp->old);
        crw_buf_put(&mp->old, mp->cached.data, mp->cached.len);
        have_old = true;
    }

    /* the envelope */
    crw_buf_reset(out);
    put_header(out, rel, v, tx, verb);
    crw_buf_put(out, ",\"subject\":", 11);
    crw_buf_put_json_str(out, key->data ? key->data : "", key->len);
    put_tail(out, tx);
    crw_buf_put(out, ",\"data\":{\"type\":\"", 17);
    crw_buf_puts(out, *type);
    crw_buf_put(out, "\",\"kind\":", 9);
    crw_buf_puts(out, v->js_kind);
    crw_buf_put(out, ",\"key\":", 7);
    crw_buf_put_json_str(out, key->data ? key->data : "", key->len);
    crw_buf_put(out, ",\"object\":", 10);
    crw_buf_put(out, mp->obj.data, mp->obj.len);
    if (have_old) {
        crw_buf_put(out, ",\"oldObject\":", 13);
        crw_buf_put(out, mp->old.data, mp->old.len);
        crw_buf_reset(&mp->changed);
        crw_buf_reset(&mp->patchbuf);
        /* The old object from the cache is parsed already (mp->dc). */
        const crw_jdoc_t *olddoc = cached && oldkind != 'O' ? cached : NULL;
        if (!olddoc && crw_jdoc_parse(&mp->da, mp->old.data, mp->old.len) == 0)
            olddoc = &mp->da;
        if (olddoc && crw_jdoc_parse(&mp->db, mp->obj.data, mp->obj.len) == 0)
            crw_jdoc_diff(olddoc, &mp->db, &mp->changed, mp->patch ? &mp->patchbuf : NULL,
                          mp->unknown.len ? mp->unknown.data : NULL);
        crw_buf_put(out, ",\"changed\":[", 12);
        crw_buf_put(out, mp->changed.data ? mp->changed.data : "", mp->changed.len);
        crw_buf_putc(out, ']');
        if (mp->patch) {
            crw_buf_put(out, ",\"patch\":[", 10);
            crw_buf_put(out, mp->patchbuf.data ? mp->patchbuf.data : "", mp->patchbuf.len);
            crw_buf_putc(out, ']');
        }
    }
    if (mp->unknown.len) {
        crw_buf_put(out, ",\"unknown\":[", 12);
        crw_buf_put(out, mp->unknown.data, mp->unknown.len);
        crw_buf_putc(out, ']');
    }
    crw_buf_put(out, "}}", 2);

    /* keep the cache current: only whole objects are worth remembering */
    if (mp->cache) {
        if (rekeyed)
            crw_cache_remove(mp->cache, rel->relid, mp->cachekey.data, mp->cachekey.len);
        cache_key(mp, v, rel, key);
        if (!newt || mp->unknown.len)
            crw_cache_remove(mp->cache, rel->relid, mp->cachekey.data, mp->cachekey.len);
        else
            crw_cache_put(mp->cache, rel->relid, mp->cachekey.data, mp->cachekey.len, mp->obj.data, mp->obj.len);
    }
    return 0;
}

int crw_mapper_seed(crw_mapper_t *mp, const crw_relation_t *rel, const crw_pgo_tuple_t *row, char *errstr,
                    size_t n) {
    if (!mp->cache)
        return 0;
    const crw_rel_variant_t *v = variant_for(rel, row, errstr, n);
    if (!v || make_key(&mp->old, rel, row, NULL, errstr, n) < 0)
        return -1;
    cache_key(mp, v, rel, &mp->old);
    render_t r = {mp, rel, row, NULL, NULL, false, NULL};
    if (render(&r, v, &mp->obj, errstr, n) < 0)
        return -1;
    crw_cache_put(mp->cache, rel->relid, mp->cachekey.data, mp->cachekey.len, mp->obj.data, mp->obj.len);
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

void crw_mapper_truncate(crw_mapper_t *mp, crw_buf_t *out, const crw_relation_t *rel, const crw_txn_ctx_t *tx) {
    if (mp->cache)
        crw_cache_clear_relation(mp->cache, rel->relid);
    const crw_rel_variant_t *v = &rel->variants[0];
    crw_buf_reset(out);
    put_header(out, rel, v, tx, VERB_TRUNCATED);
    put_tail(out, tx);
    crw_buf_put(out, ",\"data\":{\"type\":\"TRUNCATED\",\"kind\":", 35);
    crw_buf_puts(out, v->js_kind);
    crw_buf_put(out, "}}", 2);
}
