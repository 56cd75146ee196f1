/*
 * cache.c — hash table (chained) plus an LRU list.  An entry is one
 * allocation: its links, then key and object bytes; replacing an object of
 * the same or a smaller size reuses it, so a steady stream of updates
 * rarely allocates.  What an entry costs (its allocation, rounded as malloc
 * does, and its bucket) counts against the byte bound.
 */
#include "map/cache.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

typedef struct entry {
    struct entry *hnext;            /* hash chain */
    struct entry *prev, *next;      /* LRU: head is the most recent */
    uint32_t relid;
    uint32_t keylen;
    uint32_t objlen, cap;           /* cap: bytes of buf */
    char buf[];                     /* key bytes, then object bytes */
} entry_t;

struct crw_cache {
    entry_t **buckets;
    uint32_t nbuckets; /* power of two */
    uint32_t n, max;   /* max 0: no entry bound */
    size_t bytes, max_bytes;
    entry_t *head, *tail;
    uint64_t hits, misses, evictions;
};

/* What an entry of buf size cap costs: its allocation as malloc rounds it (16-byte steps, 8 of header). */
static size_t cost(uint32_t cap) { return (sizeof(entry_t) + cap + 8 + 15) & ~(size_t)15; }

static uint32_t hash(uint32_t relid, const char *key, size_t n);

static void grow_buckets(crw_cache_t *c) {
    uint32_t nb = c->nbuckets * 2;
    entry_t **b = crw_calloc(nb, sizeof *b);
    for (uint32_t i = 0; i < c->nbuckets; i++)
        for (entry_t *e = c->buckets[i], *nx; e; e = nx) {
            nx = e->hnext;
            uint32_t h = hash(e->relid, e->buf, e->keylen);
            e->hnext = b[h & (nb - 1)];
            b[h & (nb - 1)] = e;
        }
    free(c->buckets);
    c->bytes += (size_t)(nb - c->nbuckets) * sizeof *b;
    c->buckets = b;
    c->nbuckets = nb;
}

crw_cache_t *crw_cache_new(uint32_t max_entries, size_t max_bytes) {
    crw_cache_t *c = crw_calloc(1, sizeof *c);
    c->max = max_entries;
    c->max_bytes = max_bytes ? max_bytes : SIZE_MAX;
    c->nbuckets = 64;
    c->buckets = crw_calloc(c->nbuckets, sizeof *c->buckets);
    c->bytes = sizeof *c + c->nbuckets * sizeof *c->buckets;
    return c;
}

void crw_cache_destroy(crw_cache_t *c) {
    if (!c)
        return;
    for (entry_t *e = c->head, *nx; e; e = nx) {
        nx = e->next;
        free(e);
    }
    free(c->buckets);
    free(c);
}

static uint32_t hash(uint32_t relid, const char *key, size_t n) {
    uint32_t h = 2166136261u ^ relid; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)key[i]) * 16777619u;
    return h;
}

static entry_t **find(crw_cache_t *c, uint32_t relid, const char *key, size_t n) {
    entry_t **pp = &c->buckets[hash(relid, key, n) & (c->nbuckets - 1)];
    while (*pp && !((*pp)->relid == relid && (*pp)->keylen == n && !memcmp((*pp)->buf, key, n)))
        pp = &(*pp)->hnext;
    return pp;
}

static void lru_unlink(crw_cache_t *c, entry_t *e) {
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front(crw_cache_t *c, entry_t *e) {
    e->next = c->head;
    e->prev = NULL;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

static void drop(crw_cache_t *c, entry_t **pp) {
    entry_t *e = *pp;
    *pp = e->hnext;
    lru_unlink(c, e);
    c->bytes -= cost(e->cap);
    free(e);
    c->n--;
}

/* The least recently used go until what is kept fits both bounds (need more bytes, one more entry). */
static void evict(crw_cache_t *c, size_t need, uint32_t more, const entry_t *keep) {
    while (c->tail && c->tail != keep && (c->bytes + need > c->max_bytes || (c->max && c->n + more > c->max))) {
        entry_t *old = c->tail;
        drop(c, find(c, old->relid, old->buf, old->keylen));
        c->evictions++;
    }
}

const char *crw_cache_get(crw_cache_t *c, uint32_t relid, const char *key, size_t keylen, size_t *len) {
    entry_t *e = *find(c, relid, key, keylen);
    if (!e) {
        c->misses++;
        return NULL;
    }
    c->hits++;
    lru_unlink(c, e);
    lru_front(c, e);
    *len = e->objlen;
    return e->buf + e->keylen;
}

void crw_cache_put(crw_cache_t *c, uint32_t relid, const char *key, size_t keylen, const char *obj, size_t len) {
    crw_cache_put_parts(c, relid, key, keylen, NULL, 0, obj, len);
}

void crw_cache_put_parts(crw_cache_t *c, uint32_t relid, const char *key, size_t keylen, const char *head,
                         size_t hlen, const char *obj, size_t olen) {
    size_t len = hlen + olen;
    if (keylen + len > UINT32_MAX / 2) {
        crw_cache_remove(c, relid, key, keylen); /* not worth keeping; an older one would be stale */
        return;
    }
    uint32_t want = (uint32_t)(keylen + len);
    entry_t **pp = find(c, relid, key, keylen);
    entry_t *e = *pp;
    if (e && want > e->cap) { /* it moves: take it out, it goes back in below */
        crw_cache_remove(c, relid, key, keylen);
        e = NULL;
    }
    if (!e) {
        uint32_t cap = want + want / 8;
        if (cost(cap) + c->nbuckets * sizeof *c->buckets + sizeof *c > c->max_bytes)
            return; /* it cannot fit: never kept */
        if (c->n * 2 > c->nbuckets && c->nbuckets < (1u << 26))
            grow_buckets(c); /* first: the buckets count against the bound too */
        evict(c, cost(cap), 1, NULL);
        e = crw_malloc(sizeof *e + cap);
        e->prev = e->next = NULL;
        e->relid = relid;
        e->keylen = (uint32_t)keylen;
        e->cap = cap;
        memcpy(e->buf, key, keylen);
        pp = find(c, relid, key, keylen);
        e->hnext = *pp;
        *pp = e;
        c->n++;
        c->bytes += cost(cap);
    } else
        lru_unlink(c, e);
    if (hlen)
        memcpy(e->buf + keylen, head, hlen);
    memcpy(e->buf + keylen + hlen, obj, olen);
    e->objlen = (uint32_t)len;
    lru_front(c, e);
}

void crw_cache_remove(crw_cache_t *c, uint32_t relid, const char *key, size_t keylen) {
    entry_t **pp = find(c, relid, key, keylen);
    if (*pp)
        drop(c, pp);
}

void crw_cache_clear_relation(crw_cache_t *c, uint32_t relid) {
    for (uint32_t b = 0; b < c->nbuckets; b++)
        for (entry_t **pp = &c->buckets[b]; *pp;)
            if ((*pp)->relid == relid)
                drop(c, pp);
            else
                pp = &(*pp)->hnext;
}

uint32_t crw_cache_size(const crw_cache_t *c) { return c->n; }
size_t crw_cache_bytes(const crw_cache_t *c) { return c->bytes; }
void crw_cache_stats(const crw_cache_t *c, uint64_t *hits, uint64_t *misses, uint64_t *evictions) {
    *hits = c->hits;
    *misses = c->misses;
    *evictions = c->evictions;
}
