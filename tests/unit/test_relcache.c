/*
 * test_relcache.c — the relation cache (decode/relcache.c): entries as the
 * wire describes them, replaced in place by a newer description with a new
 * generation, found by OID however many there are.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "decode/relcache.h"

static crw_relcache_t *rc;

static void init(void) { rc = crw_relcache_new(); }
static void fini(void) { crw_relcache_destroy(rc); }

TestSuite(relcache, .init = init, .fini = fini);

static crw_relation_t *describe(uint32_t relid, const char *nsp, const char *name, int natts) {
    crw_pgo_attr_t atts[4] = {{1, "id", 23, -1}, {0, "spec", 3802, -1}, {0, "note", 25, -1}, {0, "n", 20, -1}};
    crw_pgo_relation_t m = {relid, nsp, name, 'd', (uint16_t)natts, atts};
    return crw_relcache_update(rc, &m);
}

Test(relcache, keeps_the_wire_facts) {
    crw_relation_t *r = describe(16400, "public", "jobs", 3);
    cr_assert_eq(r->relid, 16400);
    cr_assert_str_eq(r->nspname, "public");
    cr_assert_str_eq(r->relname, "jobs");
    cr_assert_eq(r->replident, 'd');
    cr_assert_eq(r->natts, 3);
    cr_assert_str_eq(r->atts[1].name, "spec");
    cr_assert_eq(r->atts[1].typoid, 3802);
    cr_assert_eq(r->atts[0].flags, 1);
    cr_assert_neq(r->generation, 0);
    cr_assert_eq(crw_relcache_get(rc, 16400), r);
    cr_assert_null(crw_relcache_get(rc, 16401));
}

Test(relcache, pg_catalog_is_named) {
    crw_relation_t *r = describe(1259, "", "pg_class", 1); /* proto.c sends "" for pg_catalog */
    cr_assert_str_eq(r->nspname, "pg_catalog");
}

Test(relcache, a_new_description_replaces_in_place) {
    crw_relation_t *r = describe(16400, "public", "jobs", 2);
    uint64_t g = r->generation;
    crw_relation_t *r2 = describe(16400, "public", "jobs", 4); /* a column added while streaming */
    cr_assert_eq(r2, r, "the pointer stays valid");
    cr_assert_eq(r2->natts, 4);
    cr_assert_str_eq(r2->atts[3].name, "n");
    cr_assert_gt(r2->generation, g);
    crw_relation_t *other = describe(16500, "public", "other", 1);
    cr_assert_neq(other->generation, r2->generation, "generations differ across relations too");
}

Test(relcache, many_relations) {
    char name[32];
    for (uint32_t i = 1; i <= 1000; i++) {
        snprintf(name, sizeof name, "t%u", i);
        describe(16384 + i * 7, "public", name, 1);
    }
    for (uint32_t i = 1000; i >= 1; i--) {
        crw_relation_t *r = crw_relcache_get(rc, 16384 + i * 7);
        cr_assert(r, "relation %u lost", i);
        snprintf(name, sizeof name, "t%u", i);
        cr_assert_str_eq(r->relname, name);
    }
    cr_assert_null(crw_relcache_get(rc, 16384 + 3));
}
