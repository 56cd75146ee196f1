/*
 * test_event.c — the mapper's rules without a server: crd shape, nested
 * `changed` pointers, unknown fields, TOAST fill from the old row and from
 * the cache, soft delete, key-only deletes, kinds of a shared table, and
 * what is refused (to the dead-letter file).
 */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <string.h>

#include "core/conf.h"
#include "map/event.h"

#define UNCH ((const char *)1)

/* Columns of the convention, in this order. */
enum { NS, NAME, GEN, RV, SPEC, STATUS, DELETED, NCOL };
static const char *const names[NCOL] = {"namespace", "name", "generation", "resource_version", "spec", "status",
                                        "deleted_at"};
static const uint32_t oids[NCOL] = {25, 25, 20, 20, 3802, 3802, 1184};

static crw_relcache_t *rc;
static crw_resource_conf_t res;
static crw_cache_t *cache;
static crw_mapper_t *mp;
static crw_buf_t out, key;
static crw_txn_ctx_t tx;
static crw_pgo_col_t c_new[NCOL], c_old[NCOL];
static char err[512];

static crw_relation_t *crd_relation(bool with_cache, int shape) {
    rc = crw_relcache_new();
    crw_pgo_attr_t attrs[NCOL];
    for (int i = 0; i < NCOL; i++)
        attrs[i] = (crw_pgo_attr_t){i <= NAME ? 1 : 0, names[i], oids[i], -1};
    crw_pgo_relation_t m = {16400, "public", "jobs", 'd', NCOL, attrs};
    crw_relation_t *rel = crw_relcache_update(rc, &m);
    for (int i = 0; i < NCOL; i++)
        crw_type_builtin(oids[i], &rel->atts[i].ti);
    memset(&res, 0, sizeof res);
    res.id = "jobs";
    res.schema = "public";
    res.table = "jobs";
    res.kind = "Job";
    res.api_version = "ex.com/v1";
    res.shape = shape;
    rel->source = strdup("/crwatch/db/public/jobs");
    const crw_resource_conf_t *rs[1] = {&res};
    const char *pk[2] = {"namespace", "name"};
    cr_assert_eq(crw_mapper_prepare(rel, rs, 1, pk, 2, err, sizeof err), 0, "%s", err);
    rel->resolved = rel->watched = true;
    cache = with_cache ? crw_cache_new(100) : NULL;
    mp = crw_mapper_new(cache, true);
    crw_event_txn_init(&tx, 0x1000, 7, 0);
    tx.ordinal = 1;
    return rel;
}

static void teardown_all(void) {
    crw_mapper_destroy(mp);
    crw_cache_destroy(cache);
    crw_relcache_destroy(rc);
    crw_buf_free(&out);
    crw_buf_free(&key);
    mp = NULL;
    cache = NULL;
    rc = NULL;
}

static crw_pgo_tuple_t tuple(crw_pgo_col_t *cols, const char *const *vals) {
    for (int i = 0; i < NCOL; i++) {
        if (vals[i] == NULL)
            cols[i] = (crw_pgo_col_t){CRW_PGO_COL_NULL, 0, NULL};
        else if (vals[i] == UNCH)
            cols[i] = (crw_pgo_col_t){CRW_PGO_COL_UNCHANGED, 0, NULL};
        else
            cols[i] = (crw_pgo_col_t){CRW_PGO_COL_TEXT, (uint32_t)strlen(vals[i]), vals[i]};
    }
    return (crw_pgo_tuple_t){NCOL, cols};
}

/* Maps m and returns the parsed event (caller puts it). */
static json_object *map(const crw_relation_t *rel, const crw_pgo_msg_t *m) {
    const char *type, *kind;
    int rc2 = crw_mapper_change(mp, &out, &key, &type, &kind, rel, m, &tx, err, sizeof err);
    cr_assert_eq(rc2, 0, "not mapped: %s", err);
    json_object *ev = json_tokener_parse(out.data);
    cr_assert(ev, "not JSON: %s", out.data);
    return ev;
}

static const char *at(json_object *o, const char *path) {
    json_object *cur = o;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok; tok = strtok_r(NULL, ".", &save)) {
        if (json_object_is_type(cur, json_type_array))
            cur = json_object_array_get_idx(cur, (size_t)atoi(tok));
        else if (!json_object_object_get_ex(cur, tok, &cur))
            return NULL;
        if (!cur)
            return NULL;
    }
    return json_object_get_string(cur);
}

static size_t count(json_object *o, const char *path) {
    json_object *a = o;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok; tok = strtok_r(NULL, ".", &save))
        if (!json_object_object_get_ex(a, tok, &a))
            return 0;
    return json_object_array_length(a);
}

static const char *const V_OLD[NCOL] = {"ns", "j", "1", "5", "{\"preset\": \"1080p\", \"outs\": [1, 2]}",
                                        "{\"phase\": \"Pending\"}", NULL};

Test(event, crd_shape_and_nested_changed_pointers, .fini = teardown_all) {
    crw_relation_t *rel = crd_relation(false, CRW_SHAPE_CRD);
    const char *v_new[NCOL] = {"ns", "j", "2", "6", "{\"preset\": \"4k\", \"outs\": [1]}", "{\"phase\": \"Running\"}",
                               NULL};
    crw_pgo_msg_t m = {.type = CRW_PGO_UPDATE};
    m.u.update.relid = rel->relid;
    m.u.update.oldkind = 'O';
    m.u.update.oldtup = tuple(c_old, V_OLD);
    m.u.update.newtup = tuple(c_new, v_new);
    json_object *ev = map(rel, &m);
    cr_assert_str_eq(at(ev, "subject"), "ns/j");
    cr_assert_str_eq(at(ev, "type"), "crwatch.Job.modified");
    cr_assert_str_eq(at(ev, "data.object.apiVersion"), "ex.com/v1");
    cr_assert_str_eq(at(ev, "data.object.kind"), "Job");
    cr_assert_str_eq(at(ev, "data.object.metadata.resourceVersion"), "6");
    cr_assert(json_object_is_type(json_object_object_get(json_object_object_get(json_object_object_get(
                                                             json_object_object_get(ev, "data"), "object"),
                                                         "metadata"),
                                  "resourceVersion"),
                                  json_type_string));
    cr_assert_null(at(ev, "data.object.metadata.deletionTimestamp"));
    cr_assert_str_eq(at(ev, "data.oldObject.spec.preset"), "1080p");
    /* pointers inside the JSON, not column names */
    static const char *const want[] = {"/metadata/resourceVersion", "/metadata/generation", "/spec/preset",
                                       "/spec/outs/1", "/status/phase"};
    cr_assert_eq(count(ev, "data.changed"), 5, "%s", out.data);
    for (size_t i = 0; i < 5; i++) {
        char p[32];
        snprintf(p, sizeof p, "data.changed.%zu", i);
        cr_assert_str_eq(at(ev, p), want[i], "%s", out.data);
    }
    cr_assert_str_eq(at(ev, "data.patch.3.op"), "remove");
    cr_assert_str_eq(at(ev, "data.patch.3.path"), "/spec/outs/1");
    json_object_put(ev);
}

Test(event, unchanged_toast_filled_from_the_old_row, .fini = teardown_all) {
    crw_relation_t *rel = crd_relation(false, CRW_SHAPE_CRD);
    const char *v_new[NCOL] = {"ns", "j", "1", "6", UNCH, "{\"phase\": \"Running\"}", NULL};
    crw_pgo_msg_t m = {.type = CRW_PGO_UPDATE};
    m.u.update.relid = rel->relid;
    m.u.update.oldkind = 'O';
    m.u.update.oldtup = tuple(c_old, V_OLD);
    m.u.update.newtup = tuple(c_new, v_new);
    json_object *ev = map(rel, &m);
    cr_assert_str_eq(at(ev, "data.object.spec.preset"), "1080p");
    cr_assert_null(at(ev, "data.unknown"));
    cr_assert_null(strstr(out.data, "/spec\""), "spec did not change: %s", out.data);
    json_object_put(ev);
}

Test(event, unchanged_toast_without_old_row_is_unknown_then_filled_from_the_cache, .fini = teardown_all) {
    crw_relation_t *rel = crd_relation(false, CRW_SHAPE_CRD);
    const char *v_new[NCOL] = {"ns", "j", "1", "6", UNCH, "{\"phase\": \"Running\"}", NULL};
    crw_pgo_msg_t m = {.type = CRW_PGO_UPDATE};
    m.u.update.relid = rel->relid;
    m.u.update.newtup = tuple(c_new, v_new);
    json_object *ev = map(rel, &m);
    cr_assert_null(at(ev, "data.object.spec"));
    cr_assert_str_eq(at(ev, "data.unknown.0"), "/spec");
    cr_assert_null(at(ev, "data.oldObject"));
    cr_assert_null(strstr(out.data, "unchanged"), "placeholder: %s", out.data);
    json_object_put(ev);
    teardown_all();

    /* The same change with a cache that saw the row before. */
    rel = crd_relation(true, CRW_SHAPE_CRD);
    crw_pgo_tuple_t seed = tuple(c_old, V_OLD);
    cr_assert_eq(crw_mapper_seed(mp, rel, &seed, err, sizeof err), 0, "%s", err);
    m.u.update.relid = rel->relid;
    m.u.update.newtup = tuple(c_new, v_new);
    ev = map(rel, &m);
    cr_assert_str_eq(at(ev, "data.object.spec.preset"), "1080p");
    cr_assert_str_eq(at(ev, "data.oldObject.status.phase"), "Pending");
    cr_assert_null(at(ev, "data.unknown"));
    cr_assert_str_eq(at(ev, "data.changed.0"), "/metadata/resourceVersion");
    cr_assert_str_eq(at(ev, "data.changed.1"), "/status/phase");
    json_object_put(ev);

    /* A key-only delete then carries the last state. */
    const char *v_key[NCOL] = {"ns", "j", NULL, NULL, NULL, NULL, NULL};
    crw_pgo_msg_t d = {.type = CRW_PGO_DELETE};
    d.u.del.relid = rel->relid;
    d.u.del.oldkind = 'K';
    d.u.del.oldtup = tuple(c_old, v_key);
    ev = map(rel, &d);
    cr_assert_str_eq(at(ev, "data.type"), "DELETED");
    cr_assert_str_eq(at(ev, "data.object.status.phase"), "Running");
    cr_assert_null(at(ev, "data.unknown"));
    cr_assert_eq(crw_cache_size(cache), 0, "a deleted resource leaves the cache");
    json_object_put(ev);
}

Test(event, soft_delete_is_modified_with_a_deletion_timestamp, .fini = teardown_all) {
    crw_relation_t *rel = crd_relation(false, CRW_SHAPE_CRD);
    const char *v_new[NCOL] = {"ns", "j", "1", "6", V_OLD[SPEC], V_OLD[STATUS], "2026-11-24 10:00:00+00"};
    crw_pgo_msg_t m = {.type = CRW_PGO_UPDATE};
    m.u.update.relid = rel->relid;
    m.u.update.oldkind = 'O';
    m.u.update.oldtup = tuple(c_old, V_OLD);
    m.u.update.newtup = tuple(c_new, v_new);
    json_object *ev = map(rel, &m);
    cr_assert_str_eq(at(ev, "data.type"), "MODIFIED");
    cr_assert_str_eq(at(ev, "data.object.metadata.deletionTimestamp"), "2026-11-24T10:00:00Z");
    cr_assert_str_eq(at(ev, "data.changed.1"), "/metadata/deletionTimestamp");
    json_object_put(ev);
}

Test(event, key_only_delete_without_cache_names_the_rest_unknown_in_row_shape, .fini = teardown_all) {
    crw_relation_t *rel = crd_relation(false, CRW_SHAPE_ROW);
    const char *v_key[NCOL] = {"ns", "j", NULL, NULL, NULL, NULL, NULL};
    crw_pgo_msg_t d = {.type = CRW_PGO_DELETE};
    d.u.del.relid = rel->relid;
    d.u.del.oldkind = 'K';
    d.u.del.oldtup = tuple(c_old, v_key);
    json_object *ev = map(rel, &d);
    cr_assert_str_eq(at(ev, "data.object.name"), "j");
    cr_assert_null(at(ev, "data.object.spec"), "a NULL sent for a non-key column is not a value");
    cr_assert_eq(count(ev, "data.unknown"), 5, "%s", out.data);
    cr_assert_str_eq(at(ev, "data.unknown.0"), "/generation");
    json_object_put(ev);
}

Test(event, refusals_that_go_to_the_dead_letter_file, .fini = teardown_all) {
    crw_relation_t *rel = crd_relation(false, CRW_SHAPE_CRD);
    const char *type, *kind;
    const char *v_arr[NCOL] = {"ns", "j", "1", "1", "[1, 2]", "{}", NULL};
    crw_pgo_msg_t m = {.type = CRW_PGO_INSERT};
    m.u.insert.relid = rel->relid;
    m.u.insert.newtup = tuple(c_new, v_arr);
    cr_assert_eq(crw_mapper_change(mp, &out, &key, &type, &kind, rel, &m, &tx, err, sizeof err), -1);
    cr_assert(strstr(err, "spec is not a JSON object"), "%s", err);
    const char *v_null[NCOL] = {"ns", NULL, "1", "1", "{}", "{}", NULL};
    m.u.insert.newtup = tuple(c_new, v_null);
    cr_assert_eq(crw_mapper_change(mp, &out, &key, &type, &kind, rel, &m, &tx, err, sizeof err), -1);
    cr_assert(strstr(err, "key column name is NULL"), "%s", err);
    /* the raw row for the record: every value as text, nothing interpreted */
    crw_event_encode_raw(&out, rel, &m);
    json_object *raw = json_tokener_parse(out.data);
    cr_assert(raw);
    cr_assert_str_eq(at(raw, "op"), "INSERT");
    cr_assert_str_eq(at(raw, "new.spec"), "{}");
    json_object_put(raw);
}
