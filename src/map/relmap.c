/*
 * relmap.c — relations prepared for mapping (see relmap.h): resources by
 * schema.table, variants of a shared table, crd convention columns, key
 * columns, column types and the JSON text of names, pointers and kinds.
 */
#include "map/relmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "core/oidmap.h"
#include "map/jsondiff.h"

/* ---- one relation ------------------------------------------------------ */

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
    static const char *const verbs[CRW_NVERBS] = {"added", "modified", "deleted", "truncated", "sync"};
    v->res = res;
    v->kind = crw_strdup(kind);
    v->js_kind = json_dup(kind);
    v->js_api_version = res && res->api_version && *res->api_version ? json_dup(res->api_version) : NULL;
    crw_buf_t b = CRW_BUF_INIT;
    for (int i = 0; i < CRW_NVERBS; i++) {
        crw_buf_reset(&b);
        crw_buf_printf(&b, "crwatch.%s.%s", kind, verbs[i]);
        v->type[i] = crw_strndup(b.data, b.len);
        v->js_type[i] = json_dup(b.data);
    }
    crw_buf_free(&b);
}

void crw_relinfo_clear(crw_relinfo_t *ri) {
    for (int v = 0; v < ri->nvariants; v++) {
        crw_rel_variant_t *x = &ri->variants[v];
        free(x->kind);
        free(x->js_kind);
        free(x->js_api_version);
        for (int i = 0; i < CRW_NVERBS; i++) {
            free(x->js_type[i]);
            free(x->type[i]);
        }
    }
    free(ri->variants);
    for (int i = 0; i < ri->ncols; i++) {
        free(ri->cols[i].json_name);
        free(ri->cols[i].pointer);
        free(ri->cols[i].obj_pointer);
    }
    free(ri->cols);
    free(ri->key_idx);
    free(ri->dbname);
    free(ri->source);
    free(ri->js_source);
    memset(ri, 0, sizeof *ri);
}

/* Type, JSON name and pointer of every column. */
static void prepare_columns(crw_relinfo_t *ri, crw_typecache_t *types) {
    const crw_relation_t *rel = ri->rel;
    ri->cols = crw_calloc(rel->natts ? rel->natts : 1, sizeof *ri->cols);
    ri->ncols = rel->natts;
    crw_buf_t b = CRW_BUF_INIT;
    for (int i = 0; i < rel->natts; i++) {
        const crw_rel_att_t *a = &rel->atts[i];
        crw_col_map_t *c = &ri->cols[i];
        if (types)
            c->ti = crw_typecache_get(types, a->typoid);
        else if (!crw_type_builtin(a->typoid, &c->ti))
            c->ti = (crw_typeinfo_t){CRW_TC_TEXT, false, ','};
        crw_buf_reset(&b);
        crw_buf_put_json_str(&b, a->name, strlen(a->name));
        crw_buf_putc(&b, ':');
        c->json_name = crw_strndup(b.data, b.len);
        c->json_name_len = b.len;
        crw_buf_reset(&b);
        crw_json_pointer_append(&b, a->name, strlen(a->name));
        c->pointer = crw_strndup(b.data, b.len);
    }
    crw_buf_free(&b);
}

/* Key columns: the resource's key, else crd's namespace/name, else pk, else the replica identity, else all. */
static int prepare_key(crw_relinfo_t *ri, const char *const *pk, int npk, char *errstr, size_t n) {
    const crw_relation_t *rel = ri->rel;
    const crw_resource_conf_t *first = ri->res;
    ri->key_idx = crw_calloc(rel->natts ? rel->natts : 1, sizeof(int));
    ri->nkey = 0;
    if (first && first->key.n) {
        for (int k = 0; k < first->key.n; k++) {
            int i = att_index(rel, first->key.v[k]);
            if (i < 0) {
                snprintf(errstr, n, "resource.%s.key: table %s.%s has no column '%s'", first->id, rel->nspname,
                         rel->relname, first->key.v[k]);
                return CRW_ERR_CONFIG;
            }
            if (ri->nkey < rel->natts)
                ri->key_idx[ri->nkey++] = i;
        }
    } else if (ri->shape == CRW_SHAPE_CRD) {
        if (ri->crd_col[CRW_CRD_NAMESPACE] >= 0)
            ri->key_idx[ri->nkey++] = ri->crd_col[CRW_CRD_NAMESPACE];
        ri->key_idx[ri->nkey++] = ri->crd_col[CRW_CRD_NAME];
    } else {
        for (int k = 0; k < npk && ri->nkey < rel->natts; k++) {
            int i = att_index(rel, pk[k]);
            if (i >= 0)
                ri->key_idx[ri->nkey++] = i;
        }
        if (ri->nkey == 0 && rel->replident != 'f')
            for (int i = 0; i < rel->natts; i++)
                if (rel->atts[i].flags & 1)
                    ri->key_idx[ri->nkey++] = i;
        if (ri->nkey == 0)
            for (int i = 0; i < rel->natts; i++)
                ri->key_idx[ri->nkey++] = i;
    }
    return 0;
}

int crw_relinfo_prepare(crw_relinfo_t *ri, const crw_relation_t *rel, const crw_resource_conf_t *const *res, int nres,
                        const char *const *pk, int npk, const char *dbname, crw_typecache_t *types, char *errstr,
                        size_t n) {
    const crw_resource_conf_t *first = nres ? res[0] : NULL;
    memset(ri, 0, sizeof *ri);
    ri->rel = rel;
    ri->generation = rel->generation;
    ri->res = first;
    ri->dbname = crw_strdup(dbname ? dbname : "");
    crw_buf_t b = CRW_BUF_INIT;
    crw_buf_printf(&b, "/crwatch/%s/%s/%s", ri->dbname, rel->nspname, rel->relname);
    ri->source = b.data;
    ri->js_source = json_dup(ri->source);
    ri->shape = first ? (int)first->shape : CRW_SHAPE_ROW;
    ri->cached = false;
    for (int i = 0; i < nres; i++)
        ri->cached = ri->cached || res[i]->cached;
    ri->nvariants = nres ? nres : 1;
    ri->variants = crw_calloc((size_t)ri->nvariants, sizeof *ri->variants);
    for (int v = 0; v < ri->nvariants; v++)
        set_variant(&ri->variants[v], nres ? res[v] : NULL, nres ? res[v]->kind : rel->relname);
    prepare_columns(ri, types);

    ri->kind_col = -1;
    if (first && first->kind_column && *first->kind_column) {
        ri->kind_col = att_index(rel, first->kind_column);
        if (ri->kind_col < 0) {
            snprintf(errstr, n, "resource.%s.kind.column: table %s.%s has no column '%s'", first->id, rel->nspname,
                     rel->relname, first->kind_column);
            return CRW_ERR_CONFIG;
        }
    }
    /* Where each column lands in the object. */
    for (int c = 0; c < CRW_CRD_NCOLS; c++)
        ri->crd_col[c] = -1;
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
        const crw_rel_att_t *a = &rel->atts[i];
        crw_col_map_t *c = &ri->cols[i];
        c->included = !inc || ((inc->n == 0 || in_list(inc, a->name)) && !in_list(exc, a->name));
        if (ri->shape == CRW_SHAPE_CRD) {
            for (int k = 0; k < CRW_CRD_NCOLS; k++)
                if (!strcmp(a->name, crd_names[k])) {
                    ri->crd_col[k] = i;
                    if (c->included)
                        c->obj_pointer = crw_strdup(crd_pointers[k]);
                }
        } else if (c->included)
            c->obj_pointer = crw_strdup(c->pointer);
    }
    if (ri->shape == CRW_SHAPE_CRD && (ri->crd_col[CRW_CRD_NAME] < 0 || ri->crd_col[CRW_CRD_SPEC] < 0)) {
        snprintf(errstr, n, "resource.%s.shape=crd: table %s.%s needs at least columns name and spec", first->id,
                 rel->nspname, rel->relname);
        return CRW_ERR_CONFIG;
    }
    return prepare_key(ri, pk, npk, errstr, n);
}

/* ---- the map ----------------------------------------------------------- */

struct crw_relmap {
    const crw_config_t *conf;
    crw_typecache_t *types;
    crw_oidmap_t infos;  /* relid -> crw_relinfo_t * */
    uint64_t epoch;      /* bumped by invalidate: entries of older epochs are stale */
    const crw_resource_conf_t **matched; /* scratch: the resources of one table */
};

typedef struct {
    crw_relinfo_t ri;
    uint64_t epoch;
} entry_t;

crw_relmap_t *crw_relmap_new(const crw_config_t *conf, crw_typecache_t *types) {
    crw_relmap_t *m = crw_calloc(1, sizeof *m);
    m->conf = conf;
    m->types = types;
    m->epoch = 1;
    m->matched = crw_calloc((size_t)(conf->nresources ? conf->nresources : 1), sizeof *m->matched);
    return m;
}

void crw_relmap_destroy(crw_relmap_t *m) {
    if (!m)
        return;
    for (uint32_t i = 0; i < m->infos.cap; i++)
        if (m->infos.keys[i]) {
            entry_t *e = m->infos.vals[i];
            crw_relinfo_clear(&e->ri);
            free(e);
        }
    crw_oidmap_free(&m->infos);
    free(m->matched);
    free(m);
}

static bool names(const crw_resource_conf_t *r, const char *schema, const char *table) {
    return !strcmp(r->schema, schema) && !strcmp(r->table, table);
}

bool crw_relmap_watches(const crw_relmap_t *m, const char *schema, const char *table) {
    if (m->conf->nresources == 0)
        return true;
    for (int i = 0; i < m->conf->nresources; i++)
        if (names(&m->conf->resources[i], schema, table))
            return true;
    return false;
}

crw_relinfo_t *crw_relmap_get(crw_relmap_t *m, const crw_relation_t *rel) {
    entry_t *e = crw_oidmap_get(&m->infos, rel->relid);
    if (!e || e->epoch != m->epoch || e->ri.rel != rel || e->ri.generation != rel->generation)
        return NULL;
    return &e->ri;
}

int crw_relmap_prepare(crw_relmap_t *m, const crw_relation_t *rel, const char *dbname, const char *const *pk, int npk,
                       crw_relinfo_t **out, char *errstr, size_t n) {
    const crw_config_t *cf = m->conf;
    int nmatched = 0;
    for (int i = 0; i < cf->nresources; i++)
        if (names(&cf->resources[i], rel->nspname, rel->relname))
            m->matched[nmatched++] = &cf->resources[i];
    entry_t *e = crw_oidmap_get(&m->infos, rel->relid);
    if (e)
        crw_relinfo_clear(&e->ri);
    else {
        e = crw_calloc(1, sizeof *e);
        crw_oidmap_put(&m->infos, rel->relid, e);
    }
    e->epoch = 0; /* stale until prepared whole */
    int rc = crw_relinfo_prepare(&e->ri, rel, m->matched, nmatched, pk, npk, dbname, m->types, errstr, n);
    if (rc < 0)
        return rc;
    /* With no table configured, the publication as it stands decides. */
    e->ri.watched = nmatched > 0 || cf->nresources == 0;
    e->epoch = m->epoch;
    *out = &e->ri;
    return 0;
}

void crw_relmap_invalidate(crw_relmap_t *m) { m->epoch++; }
