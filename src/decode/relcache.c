/*
 * relcache.c — relation cache keyed by OID (core/oidmap.h).
 */
#include "decode/relcache.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/oidmap.h"

struct crw_relcache {
    crw_oidmap_t rels;    /* relid -> crw_relation_t * */
    crw_relation_t *last; /* one-entry lookup cache: rows come in runs */
    uint64_t generation;
};

crw_relcache_t *crw_relcache_new(void) { return crw_calloc(1, sizeof(crw_relcache_t)); }

static void rel_clear(crw_relation_t *r) {
    for (uint16_t i = 0; i < r->natts; i++)
        free(r->atts[i].name);
    free(r->atts);
    free(r->nspname);
    free(r->relname);
}

void crw_relcache_destroy(crw_relcache_t *rc) {
    if (!rc)
        return;
    for (uint32_t i = 0; i < rc->rels.cap; i++)
        if (rc->rels.keys[i]) {
            rel_clear(rc->rels.vals[i]);
            free(rc->rels.vals[i]);
        }
    crw_oidmap_free(&rc->rels);
    free(rc);
}

crw_relation_t *crw_relcache_get(crw_relcache_t *rc, uint32_t relid) {
    if (rc->last && rc->last->relid == relid)
        return rc->last;
    crw_relation_t *r = crw_oidmap_get(&rc->rels, relid);
    if (r)
        rc->last = r;
    return r;
}

crw_relation_t *crw_relcache_update(crw_relcache_t *rc, const crw_pgo_relation_t *m) {
    crw_relation_t *r = crw_oidmap_get(&rc->rels, m->relid);
    if (r)
        rel_clear(r);
    else {
        r = crw_malloc(sizeof *r);
        crw_oidmap_put(&rc->rels, m->relid, r);
    }
    memset(r, 0, sizeof *r);
    r->relid = m->relid;
    /* proto.c sends "" for pg_catalog; nothing watched lives there, keep it readable. */
    r->nspname = crw_strdup(*m->nspname ? m->nspname : "pg_catalog");
    r->relname = crw_strdup(m->relname);
    r->replident = m->replident;
    r->natts = m->natts;
    r->atts = crw_calloc(m->natts ? m->natts : 1, sizeof *r->atts);
    for (uint16_t i = 0; i < m->natts; i++) {
        crw_rel_att_t *a = &r->atts[i];
        a->name = crw_strdup(m->atts[i].name);
        a->typoid = m->atts[i].typoid;
        a->typmod = m->atts[i].typmod;
        a->flags = m->atts[i].flags;
    }
    r->generation = ++rc->generation;
    rc->last = r;
    return r;
}
