/*
 * relcache.c — relation cache keyed by OID (open addressing, grow at 50%).
 */
#include "decode/relcache.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"

struct crw_relcache {
    crw_relation_t **slots;
    uint32_t cap; /* power of two */
    uint32_t n;
    crw_relation_t *last; /* one-entry lookup cache: rows come in runs */
    uint64_t generation;
};

crw_relcache_t *crw_relcache_new(void) {
    crw_relcache_t *rc = crw_calloc(1, sizeof *rc);
    rc->cap = 16;
    rc->slots = crw_calloc(rc->cap, sizeof *rc->slots);
    return rc;
}

void crw_relcache_clear_variants(crw_relation_t *r);

static void rel_clear(crw_relation_t *r) {
    for (uint16_t i = 0; i < r->natts; i++) {
        free(r->atts[i].name);
        free(r->atts[i].json_name);
        free(r->atts[i].pointer);
        free(r->atts[i].obj_pointer);
    }
    free(r->atts);
    free(r->nspname);
    free(r->relname);
    free(r->kind);
    free(r->source);
    free(r->key_idx);
    free(r->js_source);
    crw_relcache_clear_variants(r);
}

void crw_relcache_clear_variants(crw_relation_t *r) {
    for (int v = 0; v < r->nvariants; v++) {
        crw_rel_variant_t *x = &r->variants[v];
        free(x->kind);
        free(x->js_kind);
        free(x->js_api_version);
        for (int i = 0; i < 4; i++)
            free(x->js_type[i]);
    }
    free(r->variants);
    r->variants = NULL;
    r->nvariants = 0;
}

void crw_relcache_destroy(crw_relcache_t *rc) {
    if (!rc)
        return;
    for (uint32_t i = 0; i < rc->cap; i++)
        if (rc->slots[i]) {
            rel_clear(rc->slots[i]);
            free(rc->slots[i]);
        }
    free(rc->slots);
    free(rc);
}

static uint32_t hash_oid(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    return x;
}

static crw_relation_t **find_slot(crw_relcache_t *rc, uint32_t relid) {
    uint32_t i = hash_oid(relid) & (rc->cap - 1);
    while (rc->slots[i] && rc->slots[i]->relid != relid)
        i = (i + 1) & (rc->cap - 1);
    return &rc->slots[i];
}

crw_relation_t *crw_relcache_get(crw_relcache_t *rc, uint32_t relid) {
    if (rc->last && rc->last->relid == relid)
        return rc->last;
    crw_relation_t *r = *find_slot(rc, relid);
    if (r)
        rc->last = r;
    return r;
}

static void grow(crw_relcache_t *rc) {
    crw_relation_t **old = rc->slots;
    uint32_t ocap = rc->cap;
    rc->cap *= 2;
    rc->slots = crw_calloc(rc->cap, sizeof *rc->slots);
    for (uint32_t i = 0; i < ocap; i++)
        if (old[i])
            *find_slot(rc, old[i]->relid) = old[i];
    free(old);
}

crw_relation_t *crw_relcache_update(crw_relcache_t *rc, const crw_pgo_relation_t *m) {
    crw_relation_t **s = find_slot(rc, m->relid);
    crw_relation_t *r = *s;
    if (r)
        rel_clear(r);
    else {
        if ((rc->n + 1) * 2 > rc->cap) {
            grow(rc);
            s = find_slot(rc, m->relid);
        }
        r = crw_malloc(sizeof *r);
        *s = r;
        rc->n++;
    }
    memset(r, 0, sizeof *r);
    r->relid = m->relid;
    /* proto.c sends "" for pg_catalog; nothing watched lives there, keep it readable. */
    r->nspname = crw_strdup(*m->nspname ? m->nspname : "pg_catalog");
    r->relname = crw_strdup(m->relname);
    r->replident = m->replident;
    r->natts = m->natts;
    r->atts = crw_calloc(m->natts ? m->natts : 1, sizeof *r->atts);
    crw_buf_t b = CRW_BUF_INIT;
    for (uint16_t i = 0; i < m->natts; i++) {
        crw_rel_att_t *a = &r->atts[i];
        a->name = crw_strdup(m->atts[i].name);
        a->typoid = m->atts[i].typoid;
        a->typmod = m->atts[i].typmod;
        a->flags = m->atts[i].flags;
        crw_buf_reset(&b);
        crw_buf_put_json_str(&b, a->name, strlen(a->name));
        crw_buf_putc(&b, ':');
        a->json_name = crw_strndup(b.data, b.len);
        a->json_name_len = b.len;
        /* RFC 6901: '~' -> "~0", '/' -> "~1". */
        crw_buf_reset(&b);
        crw_buf_putc(&b, '/');
        for (const char *p = a->name; *p; p++) {
            if (*p == '~')
                crw_buf_puts(&b, "~0");
            else if (*p == '/')
                crw_buf_puts(&b, "~1");
            else
                crw_buf_putc(&b, *p);
        }
        a->pointer = crw_strndup(b.data, b.len);
    }
    crw_buf_free(&b);
    r->generation = ++rc->generation;
    rc->last = r;
    return r;
}

void crw_relcache_invalidate(crw_relcache_t *rc) {
    for (uint32_t i = 0; i < rc->cap; i++)
        if (rc->slots[i])
            rc->slots[i]->resolved = false;
}
