/*
 * oidmap.h — a hash map from PostgreSQL OIDs to pointers (open addressing,
 * linear probing, grown at half full).  OID 0 (InvalidOid) is no key.
 * The map owns nothing it points to.  Thread-safety: one thread.
 */
#ifndef CRW_OIDMAP_H
#define CRW_OIDMAP_H

#include <stdint.h>

typedef struct crw_oidmap {
    uint32_t *keys; /* 0: an empty slot */
    void **vals;
    uint32_t cap;   /* power of two, or 0 before the first put */
    uint32_t n;
} crw_oidmap_t;

#define CRW_OIDMAP_INIT {NULL, NULL, 0, 0}

/* Frees the map's storage (not the values); it may be used again afterwards. */
void crw_oidmap_free(crw_oidmap_t *m);
/* The value of key, or NULL. */
void *crw_oidmap_get(const crw_oidmap_t *m, uint32_t key);
/* Sets key's value (key != 0), replacing any earlier one. */
void crw_oidmap_put(crw_oidmap_t *m, uint32_t key, void *val);

/* Visits every entry: for (uint32_t i = 0; i < m->cap; i++) if (m->keys[i]) use(m->vals[i]). */

#endif
