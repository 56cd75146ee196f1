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
} crw_rel_att_t;

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
    const struct crw_resource_conf *res;
    char *kind;
    char *source;        /* CloudEvents source: /crwatch/<db>/<schema>/<table> */
    int *key_idx;        /* columns forming the resource key, in order */
    int nkey;
    uint64_t generation; /* bumped on every replacement; lets callers see schema changes */
    /* Pre-escaped JSON strings (quotes included) the encoder copies per row. */
    char *js_source;
    char *js_kind;
    char *js_type[4];    /* crwatch.<Kind>.added|modified|deleted|truncated */
} crw_relation_t;

typedef struct crw_relcache crw_relcache_t;

crw_relcache_t *crw_relcache_new(void);
void crw_relcache_destroy(crw_relcache_t *rc);

/* Replaces (or adds) the entry for msg's relation; returns it (unresolved). */
crw_relation_t *crw_relcache_update(crw_relcache_t *rc, const crw_pgo_relation_t *msg);
/* The entry for relid, or NULL when no Relation message was seen for it. */
crw_relation_t *crw_relcache_get(crw_relcache_t *rc, uint32_t relid);
/* Marks every entry unresolved (types changed, or a reconnect). */
void crw_relcache_invalidate(crw_relcache_t *rc);

#endif
