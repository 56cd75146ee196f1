/*
 * test_relmap.c — relations prepared for mapping (map/relmap.c): which
 * resources a table is, its key columns, the JSON text of its columns, and
 * when an entry must be prepared again.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "core/conf.h"
#include "core/err.h"
#include "decode/relcache.h"
#include "map/relmap.h"

static crw_relcache_t *rc;
static crw_config_t *conf;
static crw_relmap_t *map;
static char err[512];

static void init(void) {
    rc = crw_relcache_new();
    conf = crw_config_new();
}

static void fini(void) {
    crw_relmap_destroy(map);
    crw_config_destroy(conf);
    crw_relcache_destroy(rc);
    map = NULL;
}

TestSuite(relmap, .init = init, .fini = fini);

static void set(const char *pair) { cr_assert_eq(crw_config_set_pair(conf, pair, err, sizeof err), 0, "%s", err); }

static void ready(void) {
    cr_assert_eq(crw_config_finalize(conf, err, sizeof err), 0, "%s", err);
    map = crw_relmap_new(conf, NULL);
}

static const crw_relation_t *relation(uint32_t relid, const char *name, char replident) {
    crw_pgo_attr_t atts[] = {{1, "id", 23, -1}, {0, "a/b~c", 25, -1}, {0, "q\"x", 3802, -1}, {0, "kind", 25, -1}};
    crw_pgo_relation_t m = {relid, "public", name, replident, 4, atts};
    return crw_relcache_update(rc, &m);
}

static crw_relinfo_t *prepare(const crw_relation_t *rel, const char *const *pk, int npk) {
    crw_relinfo_t *ri = NULL;
    cr_assert_eq(crw_relmap_prepare(map, rel, "appdb", pk, npk, &ri, err, sizeof err), 0, "%s", err);
    cr_assert(ri);
    return ri;
}

Test(relmap, columns_get_their_json_text_types_and_pointers) {
    set("tables=public.t");
    ready();
    const char *pk[] = {"id"};
    crw_relinfo_t *ri = prepare(relation(1, "t", 'd'), pk, 1);
    cr_assert(ri->watched);
    cr_assert_str_eq(ri->source, "/crwatch/appdb/public/t");
    cr_assert_str_eq(ri->js_source, "\"/crwatch/appdb/public/t\"");
    cr_assert_eq(ri->ncols, 4);
    cr_assert_str_eq(ri->cols[2].json_name, "\"q\\\"x\":");
    cr_assert_eq(ri->cols[2].json_name_len, strlen("\"q\\\"x\":"));
    cr_assert_str_eq(ri->cols[1].pointer, "/a~1b~0c");
    cr_assert_str_eq(ri->cols[1].obj_pointer, "/a~1b~0c");
    cr_assert_eq(ri->cols[0].ti.cls, CRW_TC_INT);
    cr_assert_eq(ri->cols[2].ti.cls, CRW_TC_JSONB);
    cr_assert_eq(ri->nkey, 1);
    cr_assert_eq(ri->key_idx[0], 0);
    cr_assert_str_eq(ri->variants[0].kind, "t");
    cr_assert_str_eq(ri->variants[0].type[1], "crwatch.t.modified");
    cr_assert_str_eq(ri->variants[0].js_type[1], "\"crwatch.t.modified\"");
}

Test(relmap, unwatched_tables_and_the_publication_deciding) {
    set("tables=public.t");
    ready();
    cr_assert(crw_relmap_watches(map, "public", "t"));
    cr_assert_not(crw_relmap_watches(map, "public", "other"));
    crw_relinfo_t *ri = prepare(relation(2, "other", 'd'), NULL, 0);
    cr_assert_not(ri->watched);
    fini();
    init();
    ready(); /* no table configured: the publication as it stands decides */
    cr_assert(crw_relmap_watches(map, "public", "anything"));
    cr_assert(prepare(relation(3, "anything", 'd'), NULL, 0)->watched);
}

Test(relmap, key_columns_in_order_of_precedence) {
    set("resource.r.table=public.t");
    set("resource.r.key=kind,id");
    ready();
    const char *pk[] = {"id"};
    crw_relinfo_t *ri = prepare(relation(4, "t", 'd'), pk, 1);
    cr_assert_eq(ri->nkey, 2);
    cr_assert_eq(ri->key_idx[0], 3);
    cr_assert_eq(ri->key_idx[1], 0);
    fini();
    init();
    set("tables=public.t");
    ready();
    ri = prepare(relation(5, "t", 'd'), NULL, 0); /* no primary key: the replica identity */
    cr_assert_eq(ri->nkey, 1);
    cr_assert_eq(ri->key_idx[0], 0);
    ri = prepare(relation(6, "t", 'f'), NULL, 0); /* FULL and no primary key: every column */
    cr_assert_eq(ri->nkey, 4);
}

Test(relmap, a_column_the_table_lacks_is_a_config_error) {
    set("resource.r.table=public.t");
    set("resource.r.key=nope");
    ready();
    crw_relinfo_t *ri;
    cr_assert_eq(crw_relmap_prepare(map, relation(7, "t", 'd'), "appdb", NULL, 0, &ri, err, sizeof err),
                 CRW_ERR_CONFIG);
    cr_assert(strstr(err, "resource.r.key") && strstr(err, "nope"), "%s", err);
    cr_assert_null(crw_relmap_get(map, crw_relcache_get(rc, 7)), "a failed preparation is not kept");
}

Test(relmap, entries_go_stale_on_a_new_description_or_invalidation) {
    set("tables=public.t");
    ready();
    const crw_relation_t *rel = relation(8, "t", 'd');
    cr_assert_null(crw_relmap_get(map, rel));
    crw_relinfo_t *ri = prepare(rel, NULL, 0);
    cr_assert_eq(crw_relmap_get(map, rel), ri);
    relation(8, "t", 'd'); /* a new Relation message */
    cr_assert_null(crw_relmap_get(map, rel));
    ri = prepare(rel, NULL, 0);
    cr_assert_eq(crw_relmap_get(map, rel), ri);
    crw_relmap_invalidate(map); /* a type changed */
    cr_assert_null(crw_relmap_get(map, rel));
}

/* A shared table has one variant per kind, however many. */
Test(relmap, a_shared_table_of_many_kinds) {
    char pair[96];
    for (int k = 0; k < 100; k++) {
        snprintf(pair, sizeof pair, "resource.k%d.table=public.res", k);
        set(pair);
        snprintf(pair, sizeof pair, "resource.k%d.kind=Kind%d", k, k);
        set(pair);
        snprintf(pair, sizeof pair, "resource.k%d.kind.column=kind", k);
        set(pair);
    }
    ready();
    crw_relinfo_t *ri = prepare(relation(9, "res", 'd'), NULL, 0);
    cr_assert_eq(ri->nvariants, 100);
    cr_assert_str_eq(ri->variants[99].kind, "Kind99");
    cr_assert_eq(ri->kind_col, 3);
}
