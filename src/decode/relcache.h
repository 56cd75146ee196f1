/*
 * relcache.h — what crwatch knows of each relation the stream mentions.
 *
 * Filled from pgoutput Relation messages (a column added mid-stream simply
 * replaces the entry) and annotated by the stream driver with the resource
 * it belongs to, resolved column types and key columns.  Entries own their
 * strings.  Lookups are by relation OID and cost no allocation.
 */
#ifndef CRW_RELCACHE_H
#define CRW_RELCACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "decode/pgoutput.h"
#include "decode/types.h"

struct crw_resource_conf;

typedef struct crw_rel_att {
    char *name;
    char *json_name;     /* "\"name\":" pre-escaped, for the hot path */
    size_t json_name_len;
    char *pointer;       /* RFC 6901 pointer "/name" */
    uint32_t typoid;
    int32_t typmod;
    uint8_t flags;       /* 1 = replica identity key */
    crw_typeinfo_t ti;
    /* Set by the mapper: where the column lands in the object (RFC 6901),
     * NULL when it is not part of it (excluded; crd: not a convention column). */
    char *obj_pointer;
} crw_rel_att_t;

/* A kind the relation's rows can be: one, or several for a shared table with a kind column. */
typedef struct crw_rel_variant {
    const struct crw_resource_conf *res;
    char *kind;
    /* Pre-escaped JSON strings (quotes included) the encoder copies per row. */
    char *js_kind;
    char *js_api_version; /* NULL: none configured */
    char *js_type[4];     /* crwatch.<Kind>.added|modified|deleted|truncated */
} crw_rel_variant_t;

/* Convention columns of a crd-shaped table (design.md §5), in crd_col[] order. */
enum {
    CRW_CRD_NAMESPACE, CRW_CRD_NAME, CRW_CRD_UID, CRW_CRD_GENERATION, CRW_CRD_RESOURCE_VERSION, CRW_CRD_LABELS,
    CRW_CRD_ANNOTATIONS, CRW_CRD_CREATED_AT, CRW_CRD_DELETED_AT, CRW_CRD_SPEC, CRW_CRD_STATUS, CRW_CRD_NCOLS
};

typedef struct crw_relation {
    uint32_t relid;
    char *nspname;
    char *relname;
    char replident;
    uint16_t natts;
    crw_rel_att_t *atts;
    /* Set by the stream driver once resolved. */
    bool resolved;
    bool watched;
    const struct crw_resource_conf *res; /* the first (or only) resource */
    char *kind;          /* the first variant's kind */
    char *source;        /* CloudEvents source: /crwatch/<db>/<schema>/<table> */
    int *key_idx;        /* columns forming the resource key, in order */
    int nkey;
    uint64_t generation; /* bumped on every replacement; lets callers see schema changes */
    char *js_source;     /* pre-escaped source */
    int shape;           /* crw_shape_t */
    int crd_col[CRW_CRD_NCOLS]; /* crd: column index of each convention column, -1 when absent */
    int kind_col;        /* shared table: index of the kind column, -1 otherwise */
    crw_rel_variant_t *variants;
    int nvariants;
} crw_relation_t;

typedef struct crw_relcache crw_relcache_t;

crw_relcache_t *crw_relcache_new(void);
void crw_relcache_destroy(crw_relcache_t *rc);

/* Replaces (or adds) the entry for msg's relation; returns it (unresolved). */
crw_relation_t *crw_relcache_update(crw_relcache_t *rc, const crw_pgo_relation_t *msg);
/* The entry for relid, or NULL when no Relation message was seen for it. */
crw_relation_t *crw_relcache_get(crw_relcache_t *rc, uint32_t relid);
/* Frees a relation's variants (before the mapper rebuilds them). */
void crw_relcache_clear_variants(crw_relation_t *r);

/* Marks every entry unresolved (types changed, or a reconnect). */
void crw_relcache_invalidate(crw_relcache_t *rc);

#endif
