/*
 * cache.c — hash table (chained) plus an LRU list.  An entry owns one
 * allocation holding key and object; replacing an object of the same or a
 * smaller size reuses it, so a steady stream of updates rarely allocates.
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
    size_t objlen, cap;
    char *buf;                      /* key bytes, then object bytes */
} entry_t;

struct crw_cache {
    entry_t **buckets;
    uint32_t nbuckets; /* power of two */
    uint32_t n, max;
    entry_t *head, *tail;
};

crw_cache_t *crw_cache_new(uint32_t max_entries) {
    crw_cache_t *c = crw_calloc(1, sizeof *c);
    c->max = max_entries ? max_entries : 1;
    c->nbuckets = 64;
    while (c->nbuckets < c->max && c->nbuckets < (1u << 24))
        c->nbuckets *= 2;
    c->buckets = crw_calloc(c->nbuckets, sizeof *c->buckets);
    return c;
}

void crw_cache_destroy(crw_cache_t *c) {
    if (!c)
        return;
    for (entry_t *e = c->head, *nx; e; e = nx) {
        nx = e->next;
        free(e->buf);
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
    free(e->buf);
    free(e);
    c->n--;
}

const char *crw_cache_get(crw_cache_t *c, uint32_t relid, const char *key, size_t keylen, size_t *len) {
    entry_t *e = *find(c, relid, key, keylen);
    if (!e)
        return NULL;
    lru_unlink(c, e);
    lru_front(c, e);
    *len = e->objlen;
    return e->buf + e->keylen;
}

void crw_cache_put(crw_cache_t *c, uint32_t relid, const char *key, size_t keylen, const char *obj, size_t len) {
    entry_t **pp = find(c, relid, key, keylen);
    entry_t *e = *pp;
    if (!e) {
        if (c->n >= c->max) {
            entry_t *old = c->tail;
            drop(c, find(c, old->relid, old->buf, old->keylen));
            pp = find(c, relid, key, keylen);
        }
        e = crw_calloc(1, sizeof *e);
        e->relid = relid;
        e->keylen = (uint32_t)keylen;
        *pp = e;
        c->n++;
    } else
        lru_unlink(c, e);
    if (keylen + len > e->cap) {
        e->cap = (keylen + len) + (keylen + len) / 4;
        e->buf = crw_realloc(e->buf, e->cap);
    }
    memcpy(e->buf, key, keylen);
    memcpy(e->buf + keylen, obj, len);
    e->objlen = len;
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
