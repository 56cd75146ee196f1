/*
 * relcache.h — the relations the source has described, as the wire (or the
 * catalog) describes them: OID, names, replica identity, columns and their
 * types.  Nothing derived: what crwatch makes of a relation (its resource,
 * key, JSON names) is the mapper's, in map/relmap.h, keyed by the same OID.
 *
 * A Relation message (or a catalog description) replaces the entry in
 * place: the pointer stays valid for the cache's life, and `generation`
 * grows, so whoever derived something from an entry sees that it changed.
 * Entries own their strings.  Look-ups by OID cost no allocation.
 * Thread-safety: one thread (the source's).
 */
#ifndef CRW_RELCACHE_H
#define CRW_RELCACHE_H

#include <stdint.h>

#include "decode/pgoutput.h"

typedef struct crw_rel_att {
    char *name;
    uint32_t typoid;
    int32_t typmod;
    uint8_t flags; /* 1 = part of the replica identity key */
} crw_rel_att_t;

typedef struct crw_relation {
    uint32_t relid;
    char *nspname;
    char *relname;
    char replident; /* 'd' default, 'n' nothing, 'f' full, 'i' index */
    uint16_t natts;
    crw_rel_att_t *atts;
    uint64_t generation; /* a new value on every replacement, never 0 */
} crw_relation_t;

typedef struct crw_relcache crw_relcache_t;

crw_relcache_t *crw_relcache_new(void);
void crw_relcache_destroy(crw_relcache_t *rc);

/* Replaces (or adds) the entry for msg's relation; returns it. */
crw_relation_t *crw_relcache_update(crw_relcache_t *rc, const crw_pgo_relation_t *msg);
/* The entry for relid, or NULL when no Relation message was seen for it. */
crw_relation_t *crw_relcache_get(crw_relcache_t *rc, uint32_t relid);

#endif
