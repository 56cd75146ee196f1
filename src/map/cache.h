/*
 * cache.h — the resource cache (informer-style): the last known object of
 * each resource, by relation and key, so events can carry oldObject and
 * fill unchanged-TOAST fields under the default replica identity.
 *
 * Bounded by bytes (what the entries cost in memory) and, when asked, by
 * entries; the least recently used goes first.
 * Seeded by listing the watched tables at start, kept current by the stream.
 * Thread-safety: one thread (the stream's).
 */
#ifndef CRW_CACHE_H
#define CRW_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct crw_cache crw_cache_t;

/* max_entries 0: no entry bound; max_bytes 0: no byte bound (the configuration's 0 means no cache at all). */
crw_cache_t *crw_cache_new(uint32_t max_entries, size_t max_bytes);
void crw_cache_destroy(crw_cache_t *c);

/* The cached object JSON of (relid, key), or NULL; valid until the next put/remove. */
const char *crw_cache_get(crw_cache_t *c, uint32_t relid, const char *key, size_t keylen, size_t *len);
/* Stores a copy of the object for (relid, key), replacing any older one. */
void crw_cache_put(crw_cache_t *c, uint32_t relid, const char *key, size_t keylen, const char *obj, size_t len);
/* The same, the stored object being head[0..hlen) followed by obj[0..olen) (one copy of each). */
void crw_cache_put_parts(crw_cache_t *c, uint32_t relid, const char *key, size_t keylen, const char *head,
                         size_t hlen, const char *obj, size_t olen);
void crw_cache_remove(crw_cache_t *c, uint32_t relid, const char *key, size_t keylen);
/* Drops every entry of relid (TRUNCATE). */
void crw_cache_clear_relation(crw_cache_t *c, uint32_t relid);
uint32_t crw_cache_size(const crw_cache_t *c);
/* What the cache holds in memory: its entries, their buckets and itself. */
size_t crw_cache_bytes(const crw_cache_t *c);
/* Look-ups that found an object, that did not, and objects evicted by the bounds. */
void crw_cache_stats(const crw_cache_t *c, uint64_t *hits, uint64_t *misses, uint64_t *evictions);

#endif
