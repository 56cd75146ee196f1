/*
 * relmap.h — what the mapper makes of each relation: the resource(s) it
 * is, its shape, key columns, the type class of each column and the JSON
 * text (names, pointers, kinds, event types) every event of it repeats,
 * escaped once here instead of once per row.
 *
 * Keyed by relation OID beside the source's relation cache (decode/
 * relcache.h), whose entries it never changes: an entry is prepared from a
 * relation and the configuration, and is stale once the relation's
 * generation moves (a new Relation message) or the types changed.
 * Thread-safety: one thread (the driver's).
 */
#ifndef CRW_RELMAP_H
#define CRW_RELMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/conf.h"
#include "decode/relcache.h"
#include "decode/types.h"

/* Event verbs, in the order of crw_rel_variant_t's type arrays. */
enum { CRW_VERB_ADDED, CRW_VERB_MODIFIED, CRW_VERB_DELETED, CRW_VERB_TRUNCATED, CRW_VERB_SYNC, CRW_NVERBS };

/* One column, as the mapper renders it. */
typedef struct crw_col_map {
    crw_typeinfo_t ti;     /* how its values render (decode/types.h) */
    char *json_name;       /* "\"name\":" pre-escaped, for the hot path */
    size_t json_name_len;
    char *pointer;         /* RFC 6901 pointer "/name" */
    char *obj_pointer;     /* where it lands in the object; NULL: not part of it (excluded; crd: no convention column) */
    bool included;         /* columns.include/exclude keep it (Debezium's before/after) */
} crw_col_map_t;

/* A kind the relation's rows can be: one, or several for a shared table with a kind column. */
typedef struct crw_rel_variant {
    const crw_resource_conf_t *res;
    char *kind;
    /* Pre-escaped JSON strings (quotes included) the encoder copies per row. */
    char *js_kind;
    char *js_api_version; /* NULL: none configured */
    char *js_type[CRW_NVERBS]; /* "crwatch.<Kind>.added" | modified | deleted | truncated | sync */
    char *type[CRW_NVERBS];    /* the same, not escaped (CloudEvents binary content mode) */
} crw_rel_variant_t;

/* Convention columns of a crd-shaped table (docs/sql.md), in crd_col[] order. */
enum {
    CRW_CRD_NAMESPACE, CRW_CRD_NAME, CRW_CRD_UID, CRW_CRD_GENERATION, CRW_CRD_RESOURCE_VERSION, CRW_CRD_LABELS,
    CRW_CRD_ANNOTATIONS, CRW_CRD_CREATED_AT, CRW_CRD_DELETED_AT, CRW_CRD_SPEC, CRW_CRD_STATUS, CRW_CRD_NCOLS
};

typedef struct crw_relinfo {
    const crw_relation_t *rel;
    uint64_t generation;        /* rel->generation it was prepared from */
    bool watched;               /* some resource names the table (or none is configured) */
    const crw_resource_conf_t *res; /* the first (or only) resource; NULL when none is configured */
    char *dbname;
    char *source;               /* CloudEvents source: /crwatch/<db>/<schema>/<table> */
    char *js_source;            /* the same, pre-escaped */
    crw_col_map_t *cols;        /* ncols of them: rel->natts when prepared */
    int ncols;
    int *key_idx;               /* columns forming the resource key, in order */
    int nkey;
    int shape;                  /* crw_shape_t */
    bool cached;                /* its objects are kept in the resource cache (crw_resource_conf_t.cached) */
    int crd_col[CRW_CRD_NCOLS]; /* crd: column index of each convention column, -1 when absent */
    int kind_col;               /* shared table: index of the kind column, -1 otherwise */
    crw_rel_variant_t *variants;
    int nvariants;
} crw_relinfo_t;

/*
 * Prepares ri (zeroed, or cleared) for rel as the resources res[0..nres)
 * (several for a shared table with a kind column; none: the table as it
 * is, kind = table name).  Key columns: the resource's key, else for crd
 * namespace and name, else pk[0..npk) (primary key names), else the
 * replica identity, else every column.  types: resolves column types (NULL:
 * built-in types only, the rest text).
 * @returns 0, or CRW_ERR_CONFIG with errstr (a configured column the table lacks).
 */
int crw_relinfo_prepare(crw_relinfo_t *ri, const crw_relation_t *rel, const crw_resource_conf_t *const *res, int nres,
                        const char *const *pk, int npk, const char *dbname, crw_typecache_t *types, char *errstr,
                        size_t errstr_size);
/* Frees what ri holds (ri may be prepared again). */
void crw_relinfo_clear(crw_relinfo_t *ri);

typedef struct crw_relmap crw_relmap_t;

/* conf: the resources (borrowed, must outlive the map); types: as for crw_relinfo_prepare. */
crw_relmap_t *crw_relmap_new(const crw_config_t *conf, crw_typecache_t *types);
void crw_relmap_destroy(crw_relmap_t *m);

/* True when schema.table is watched: a resource names it, or none is configured (the publication decides). */
bool crw_relmap_watches(const crw_relmap_t *m, const char *schema, const char *table);

/* rel's prepared entry, or NULL when rel is new, replaced since, or the map was invalidated. */
crw_relinfo_t *crw_relmap_get(crw_relmap_t *m, const crw_relation_t *rel);

/*
 * Prepares rel as every resource naming its table (crw_relinfo_prepare).
 * pk: its primary key column names (only needed when watched).
 * @returns 0 with *out, or CRW_ERR_CONFIG with errstr.
 */
int crw_relmap_prepare(crw_relmap_t *m, const crw_relation_t *rel, const char *dbname, const char *const *pk, int npk,
                       crw_relinfo_t **out, char *errstr, size_t errstr_size);

/* Types changed: every entry is prepared again before it is used. */
void crw_relmap_invalidate(crw_relmap_t *m);

#endif
