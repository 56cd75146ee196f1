/*
 * strmap.c — byte string -> inline value hash map (see strmap.h).
 */
#include "core/strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

typedef struct entry {
    struct entry *next;
    uint32_t hash;
    uint32_t len;
    /* the value (value_size bytes, aligned), then the key */
    _Alignas(max_align_t) unsigned char data[];
} entry_t;

struct crw_strmap {
    entry_t **buckets;
    size_t nbuckets; /* power of two */
    size_t n;
    size_t vsize;    /* value size rounded up to the alignment */
};

static uint32_t hash_of(const void *key, size_t n) {
    const unsigned char *p = key;
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

crw_strmap_t *crw_strmap_new(size_t value_size) {
    crw_strmap_t *m = crw_calloc(1, sizeof *m);
    size_t a = _Alignof(max_align_t);
    m->vsize = (value_size + a - 1) / a * a;
    m->nbuckets = 64;
    m->buckets = crw_calloc(m->nbuckets, sizeof *m->buckets);
    return m;
}

void crw_strmap_clear(crw_strmap_t *m) {
    for (size_t i = 0; i < m->nbuckets; i++)
        for (entry_t *e = m->buckets[i], *nx; e; e = nx) {
            nx = e->next;
            free(e);
        }
    memset(m->buckets, 0, m->nbuckets * sizeof *m->buckets);
    m->n = 0;
}

void crw_strmap_destroy(crw_strmap_t *m) {
    if (!m)
        return;
    crw_strmap_clear(m);
    free(m->buckets);
    free(m);
}

size_t crw_strmap_count(const crw_strmap_t *m) { return m->n; }

static entry_t **find(const crw_strmap_t *m, const void *key, size_t len, uint32_t h) {
    entry_t **pp = &m->buckets[h & (m->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && (*pp)->len == len && !memcmp((*pp)->data + m->vsize, key, len))
            return pp;
    return pp;
}

void *crw_strmap_get(const crw_strmap_t *m, const void *key, size_t len) {
    entry_t *e = *find(m, key, len, hash_of(key, len));
    return e ? e->data : NULL;
}

static void grow(crw_strmap_t *m) {
    size_t nb = m->nbuckets * 2;
    entry_t **b = crw_calloc(nb, sizeof *b);
    for (size_t i = 0; i < m->nbuckets; i++)
        for (entry_t *e = m->buckets[i], *nx; e; e = nx) {
            nx = e->next;
            entry_t **head = &b[e->hash & (nb - 1)];
            e->next = *head;
            *head = e;
        }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = nb;
}

void *crw_strmap_put(crw_strmap_t *m, const void *key, size_t len, bool *created) {
    uint32_t h = hash_of(key, len);
    entry_t **pp = find(m, key, len, h);
    if (*pp) {
        if (created)
            *created = false;
        return (*pp)->data;
    }
    entry_t *e = crw_malloc(sizeof *e + m->vsize + len);
    e->next = NULL;
    e->hash = h;
    e->len = (uint32_t)len;
    memset(e->data, 0, m->vsize);
    memcpy(e->data + m->vsize, key, len);
    *pp = e;
    if (++m->n > m->nbuckets)
        grow(m);
    if (created)
        *created = true;
    return e->data;
}

bool crw_strmap_remove(crw_strmap_t *m, const void *key, size_t len) {
    entry_t **pp = find(m, key, len, hash_of(key, len)), *e = *pp;
    if (!e)
        return false;
    *pp = e->next;
    free(e);
    m->n--;
    return true;
}

void crw_strmap_sweep(crw_strmap_t *m, crw_strmap_sweep_fn fn, void *opaque) {
    for (size_t i = 0; i < m->nbuckets; i++)
        for (entry_t **pp = &m->buckets[i]; *pp;) {
            entry_t *e = *pp;
            if (fn(opaque, e->data + m->vsize, e->len, e->data)) {
                *pp = e->next;
                free(e);
                m->n--;
            } else
                pp = &e->next;
        }
}

const char *crw_names_intern(crw_names_t *names, const char *s) {
    if (!s)
        return NULL;
    if (names->last >= 0 && !strcmp(names->v[names->last], s))
        return names->v[names->last];
    for (int i = 0; i < names->n; i++)
        if (!strcmp(names->v[i], s)) {
            names->last = i;
            return names->v[i];
        }
    names->v = crw_realloc(names->v, sizeof *names->v * (size_t)(names->n + 1));
    names->v[names->n] = crw_strdup(s);
    names->last = names->n;
    return names->v[names->n++];
}

void crw_names_free(crw_names_t *names) {
    for (int i = 0; i < names->n; i++)
        free(names->v[i]);
    free(names->v);
    *names = (crw_names_t)CRW_NAMES_INIT;
}
