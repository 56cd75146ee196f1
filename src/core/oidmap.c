/*
 * oidmap.c — OID -> pointer hash map (see oidmap.h).
 */
#include "core/oidmap.h"

#include <stdlib.h>

#include "core/log.h"

static uint32_t hash_oid(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    return x;
}

static uint32_t slot_of(const crw_oidmap_t *m, uint32_t key) {
    uint32_t i = hash_oid(key) & (m->cap - 1);
    while (m->keys[i] && m->keys[i] != key)
        i = (i + 1) & (m->cap - 1);
    return i;
}

void crw_oidmap_free(crw_oidmap_t *m) {
    free(m->keys);
    free(m->vals);
    *m = (crw_oidmap_t)CRW_OIDMAP_INIT;
}

void *crw_oidmap_get(const crw_oidmap_t *m, uint32_t key) {
    if (!m->cap)
        return NULL;
    uint32_t i = slot_of(m, key);
    return m->keys[i] ? m->vals[i] : NULL;
}

static void grow(crw_oidmap_t *m) {
    crw_oidmap_t old = *m;
    m->cap = old.cap ? old.cap * 2 : 16;
    m->keys = crw_calloc(m->cap, sizeof *m->keys);
    m->vals = crw_calloc(m->cap, sizeof *m->vals);
    for (uint32_t i = 0; i < old.cap; i++)
        if (old.keys[i]) {
            uint32_t j = slot_of(m, old.keys[i]);
            m->keys[j] = old.keys[i];
            m->vals[j] = old.vals[i];
        }
    free(old.keys);
    free(old.vals);
}

void crw_oidmap_put(crw_oidmap_t *m, uint32_t key, void *val) {
    if ((m->n + 1) * 2 > m->cap)
        grow(m);
    uint32_t i = slot_of(m, key);
    if (!m->keys[i]) {
        m->keys[i] = key;
        m->n++;
    }
    m->vals[i] = val;
}
