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
#include "core/err.h"
#include "map/mapper.h"
#include "map/relmap.h"

#define UNCH ((const char *)1)

/* Columns of the convention, in this order. */
enum { NS, NAME, GEN, RV, SPEC, STATUS, DELETED, NCOL };
static const char *const names[NCOL] = {"namespace", "name", "generation", "resource_version", "spec", "status",
                                        "deleted_at"};
static const uint32_t oids[NCOL] = {25, 25, 20, 20, 3802, 3802, 1184};

static crw_relcache_t *rc;
static crw_resource_conf_t res;
static crw_cache_t *cache;
static crw_config_t *conf;
static crw_mapper_t *mp;
static crw_relinfo_t info;
static crw_mapped_t mapped;
static crw_buf_t out;
static crw_txn_ctx_t tx;
static crw_pgo_col_t c_new[NCOL], c_old[NCOL];
static char err[512];
static uint32_t cache_entries = 100; /* the cache crd_relation makes */
static size_t cache_bytes;

static const crw_relinfo_t *crd_relation(bool with_cache, int shape) {
    rc = crw_relcache_new();
    crw_pgo_attr_t attrs[NCOL];
    for (int i = 0; i < NCOL; i++)
        attrs[i] = (crw_pgo_attr_t){i <= NAME ? 1 : 0, names[i], oids[i], -1};
    crw_pgo_relation_t m = {16400, "public", "jobs", 'd', NCOL, attrs};
    crw_relation_t *rel = crw_relcache_update(rc, &m);
    memset(&res, 0, sizeof res);
    res.id = "jobs";
    res.schema = "public";
    res.table = "jobs";
    res.kind = "Job";
    res.api_version = "ex.com/v1";
    res.shape = shape;
    res.cached = with_cache;
    const crw_resource_conf_t *rs[1] = {&res};
    const char *pk[2] = {"namespace", "name"};
    cr_assert_eq(crw_relinfo_prepare(&info, rel, rs, 1, pk, 2, "db", NULL, err, sizeof err), 0, "%s", err);
    info.watched = true;
    cache = with_cache ? crw_cache_new(cache_entries, cache_bytes) : NULL;
    conf = crw_config_new();
    conf->event_patch = true;
    mp = crw_mapper_new(conf, cache);
    crw_txn_init(&tx, 0x1000, 7, 0);
    tx.ordinal = 1;
    return &info;
}

static void teardown_all(void) {
    crw_mapper_destroy(mp);
    crw_cache_destroy(cache);
    crw_relinfo_clear(&info);
    crw_relcache_destroy(rc);
    crw_config_destroy(conf);
    crw_buf_free(&out);
    mp = NULL;
    cache = NULL;
    rc = NULL;
    conf = NULL;
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

/* Maps pgoutput message m as the logical source hands it on; returns the mapper's result. */
static int map_rc(const crw_relinfo_t *ri, const crw_pgo_msg_t *m) {
    crw_change_t ch;
    crw_change_from_msg(&ch, ri->rel, m);
    return crw_mapper_change(mp, ri, &ch, &tx, &mapped, err, sizeof err);
}

/* Maps m and returns the parsed event (caller puts it); its text is left in out. */
static json_object *map(const crw_relinfo_t *ri, const crw_pgo_msg_t *m) {
    cr_assert_eq(map_rc(ri, m), 0, "not mapped: %s", err);
    cr_assert_eq(mapped.n, 1);
    const crw_event_t *e = &mapped.ev[0];
    crw_buf_reset(&out); /* the bodies below look at the text too */
    crw_buf_put(&out, e->value, e->len);
    json_object *ev = json_tokener_parse(e->value);
    cr_assert(ev, "not JSON: %s", e->value);
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
    const crw_relinfo_t *rel = crd_relation(false, CRW_SHAPE_CRD);
    const char *v_new[NCOL] = {"ns", "j", "2", "6", "{\"preset\": \"4k\", \"outs\": [1]}", "{\"phase\": \"Running\"}",
                               NULL};
    crw_pgo_msg_t m = {.type = CRW_PGO_UPDATE};
    m.u.update.relid = rel->rel->relid;
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
    static const char *const want[] = {"/metadata/generation", "/spec/preset", "/spec/outs/1", "/status/phase"};
    cr_assert_eq(count(ev, "data.changed"), 4, "%s", out.data); /* not /metadata/resourceVersion: every write */
    for (size_t i = 0; i < 4; i++) {
        char p[32];
        snprintf(p, sizeof p, "data.changed.%zu", i);
        cr_assert_str_eq(at(ev, p), want[i], "%s", out.data);
    }
    cr_assert_str_eq(at(ev, "data.patch.3.op"), "remove");
    cr_assert_str_eq(at(ev, "data.patch.3.path"), "/spec/outs/1");
    json_object_put(ev);
}

Test(event, unchanged_toast_filled_from_the_old_row, .fini = teardown_all) {
    const crw_relinfo_t *rel = crd_relation(false, CRW_SHAPE_CRD);
    const char *v_new[NCOL] = {"ns", "j", "1", "6", UNCH, "{\"phase\": \"Running\"}", NULL};
    crw_pgo_msg_t m = {.type = CRW_PGO_UPDATE};
    m.u.update.relid = rel->rel->relid;
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
    const crw_relinfo_t *rel = crd_relation(false, CRW_SHAPE_CRD);
    const char *v_new[NCOL] = {"ns", "j", "1", "6", UNCH, "{\"phase\": \"Running\"}", NULL};
    crw_pgo_msg_t m = {.type = CRW_PGO_UPDATE};
    m.u.update.relid = rel->rel->relid;
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
    m.u.update.relid = rel->rel->relid;
    m.u.update.newtup = tuple(c_new, v_new);
    ev = map(rel, &m);
    cr_assert_str_eq(at(ev, "data.object.spec.preset"), "1080p");
    cr_assert_str_eq(at(ev, "data.oldObject.status.phase"), "Pending");
    cr_assert_null(at(ev, "data.unknown"));
    cr_assert_str_eq(at(ev, "data.changed.0"), "/status/phase");
    cr_assert_eq(count(ev, "data.changed"), 1, "%s", out.data);
    json_object_put(ev);

    /* A key-only delete then carries the last state. */
    const char *v_key[NCOL] = {"ns", "j", NULL, NULL, NULL, NULL, NULL};
    crw_pgo_msg_t d = {.type = CRW_PGO_DELETE};
    d.u.del.relid = rel->rel->relid;
    d.u.del.oldkind = 'K';
    d.u.del.oldtup = tuple(c_old, v_key);
    ev = map(rel, &d);
    cr_assert_str_eq(at(ev, "data.type"), "DELETED");
    cr_assert_str_eq(at(ev, "data.object.status.phase"), "Running");
    cr_assert_null(at(ev, "data.unknown"));
    cr_assert_eq(crw_cache_size(cache), 0, "a deleted resource leaves the cache");
    json_object_put(ev);
}

/* A member of ev's data as compact JSON text ("" when absent). */
static const char *json_at(json_object *ev, const char *member) {
    json_object *d, *m;
    if (!json_object_object_get_ex(ev, "data", &d) || !json_object_object_get_ex(d, member, &m))
        return "";
    return json_object_to_json_string_ext(m, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
}

/*
 * With a cached old object, `changed` and the patch come from comparing the
 * two objects column by column: the same pointers and operations, in the
 * same order, as a walk of both documents (added and changed members of an
 * object first, then its removed ones), with a TOAST-unchanged value
 * copied from the cache comparing equal.
 */
Test(event, cached_updates_diff_with_adds_removes_and_nulls_in_walk_order, .fini = teardown_all) {
    const crw_relinfo_t *rel = crd_relation(true, CRW_SHAPE_CRD);
    crw_pgo_tuple_t seed = tuple(c_old, V_OLD);
    cr_assert_eq(crw_mapper_seed(mp, rel, &seed, err, sizeof err), 0, "%s", err);
    crw_pgo_msg_t m = {.type = CRW_PGO_UPDATE};
    m.u.update.relid = rel->rel->relid;

    /* status to NULL, deletionTimestamp appears, spec unchanged (TOAST) */
    const char *v1[NCOL] = {"ns", "j", "1", "6", UNCH, NULL, "2026-11-24 10:00:00+00"};
    m.u.update.newtup = tuple(c_new, v1);
    json_object *ev = map(rel, &m);
    cr_assert_str_eq(json_at(ev, "changed"), "[\"/metadata/deletionTimestamp\",\"/status\"]", "%s", out.data);
    cr_assert_str_eq(json_at(ev, "patch"),
                     "[{\"op\":\"replace\",\"path\":\"/metadata/resourceVersion\",\"value\":\"6\"},"
                     "{\"op\":\"add\",\"path\":\"/metadata/deletionTimestamp\",\"value\":\"2026-11-24T10:00:00Z\"},"
                     "{\"op\":\"replace\",\"path\":\"/status\",\"value\":null}]",
                     "%s", out.data);
    cr_assert_str_eq(at(ev, "data.object.spec.preset"), "1080p", "%s", out.data);
    json_object_put(ev);

    /* deletionTimestamp goes, an array element goes, status unchanged (TOAST): filled, equal */
    const char *v2[NCOL] = {"ns", "j", "1", "7", "{\"preset\": \"1080p\", \"outs\": [1]}", UNCH, NULL};
    m.u.update.newtup = tuple(c_new, v2);
    ev = map(rel, &m);
    cr_assert_str_eq(json_at(ev, "changed"), "[\"/metadata/deletionTimestamp\",\"/spec/outs/1\"]", "%s", out.data);
    cr_assert_str_eq(json_at(ev, "patch"),
                     "[{\"op\":\"replace\",\"path\":\"/metadata/resourceVersion\",\"value\":\"7\"},"
                     "{\"op\":\"remove\",\"path\":\"/metadata/deletionTimestamp\"},"
                     "{\"op\":\"remove\",\"path\":\"/spec/outs/1\"}]",
                     "%s", out.data);
    cr_assert_null(at(ev, "data.unknown"), "%s", out.data);
    json_object_put(ev);
}

Test(event, soft_delete_is_modified_with_a_deletion_timestamp, .fini = teardown_all) {
    const crw_relinfo_t *rel = crd_relation(false, CRW_SHAPE_CRD);
    const char *v_new[NCOL] = {"ns", "j", "1", "6", V_OLD[SPEC], V_OLD[STATUS], "2026-11-24 10:00:00+00"};
    crw_pgo_msg_t m = {.type = CRW_PGO_UPDATE};
    m.u.update.relid = rel->rel->relid;
    m.u.update.oldkind = 'O';
    m.u.update.oldtup = tuple(c_old, V_OLD);
    m.u.update.newtup = tuple(c_new, v_new);
    json_object *ev = map(rel, &m);
    cr_assert_str_eq(at(ev, "data.type"), "MODIFIED");
    cr_assert_str_eq(at(ev, "data.object.metadata.deletionTimestamp"), "2026-11-24T10:00:00Z");
    cr_assert_str_eq(at(ev, "data.changed.0"), "/metadata/deletionTimestamp");
    json_object_put(ev);
}

Test(event, key_only_delete_without_cache_names_the_rest_unknown_in_row_shape, .fini = teardown_all) {
    const crw_relinfo_t *rel = crd_relation(false, CRW_SHAPE_ROW);
    const char *v_key[NCOL] = {"ns", "j", NULL, NULL, NULL, NULL, NULL};
    crw_pgo_msg_t d = {.type = CRW_PGO_DELETE};
    d.u.del.relid = rel->rel->relid;
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
    const crw_relinfo_t *rel = crd_relation(false, CRW_SHAPE_CRD);
    const char *v_arr[NCOL] = {"ns", "j", "1", "1", "[1, 2]", "{}", NULL};
    crw_pgo_msg_t m = {.type = CRW_PGO_INSERT};
    m.u.insert.relid = rel->rel->relid;
    m.u.insert.newtup = tuple(c_new, v_arr);
    cr_assert_eq(map_rc(rel, &m), CRW_ERR_UNMAPPED);
    cr_assert(strstr(err, "spec is not a JSON object"), "%s", err);
    const char *v_null[NCOL] = {"ns", NULL, "1", "1", "{}", "{}", NULL};
    m.u.insert.newtup = tuple(c_new, v_null);
    cr_assert_eq(map_rc(rel, &m), CRW_ERR_UNMAPPED);
    cr_assert(strstr(err, "key column name is NULL"), "%s", err);
    /* the raw row for the record: every value as text, nothing interpreted */
    crw_change_t ch;
    crw_change_from_msg(&ch, rel->rel, &m);
    crw_mapper_raw(&out, &ch);
    json_object *raw = json_tokener_parse(out.data);
    cr_assert(raw);
    cr_assert_str_eq(at(raw, "op"), "INSERT");
    cr_assert_str_eq(at(raw, "new.spec"), "{}");
    json_object_put(raw);
}

/* The bytes of span sp of ev's value, as a string (static: the next call overwrites it). */
static const char *span_text(const crw_event_t *ev, crw_span_t sp) {
    static char buf[4096];
    cr_assert_leq(sp.off + sp.len, ev->len);
    snprintf(buf, sizeof buf, "%.*s", (int)sp.len, ev->value + sp.off);
    return buf;
}

/* The value of top-level member name of o, as JSON text (caller frees). */
static char *member_json(json_object *o, const char *name) {
    json_object *v;
    cr_assert(json_object_object_get_ex(o, name, &v), "no %s", name);
    return strdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
}

/* JSON text a, reparsed and printed plainly, equals b so printed. */
static void same_json(const char *a, const char *b) {
    json_object *x = json_tokener_parse(a), *y = json_tokener_parse(b);
    cr_assert(x && y, "not JSON: %s / %s", a, b);
    cr_assert(json_object_equal(x, y), "%s != %s", a, b);
    json_object_put(x);
    json_object_put(y);
}

/* Sinks take what they need from the event's fields, never from its bytes: those fields must say what the
 * bytes say.  Spans of data, object and oldObject, and the CloudEvents attributes as plain text. */
Test(event, the_event_carries_what_sinks_need, .fini = teardown_all) {
    const crw_relinfo_t *rel = crd_relation(false, CRW_SHAPE_CRD);
    const char *v_new[NCOL] = {"n\"s/\xc3\xa9", "j", "2", "6", "{\"preset\": \"4k\"}", "{\"phase\": \"Running\"}", NULL};
    const char *v_old[NCOL] = {"n\"s/\xc3\xa9", "j", "1", "5", "{\"preset\": \"4k\"}", "{\"phase\": \"Pending\"}", NULL};
    crw_pgo_msg_t m = {.type = CRW_PGO_UPDATE};
    m.u.update.oldkind = 'O';
    m.u.update.oldtup = tuple(c_old, v_old);
    m.u.update.newtup = tuple(c_new, v_new);
    json_object *js = map(rel, &m);
    const crw_event_t *ev = &mapped.ev[0];
    cr_assert_str_eq(ev->type, "MODIFIED");
    cr_assert_str_eq(ev->kind, "Job");
    cr_assert_str_eq(ev->schema, "public");
    cr_assert_str_eq(ev->table, "jobs");
    cr_assert_str_eq(ev->source, "/crwatch/db/public/jobs");
    cr_assert_eq(ev->position, 0x1000);
    cr_assert_eq(ev->xid, 7);
    cr_assert_eq(ev->ordinal, 1);
    cr_assert_eq(ev->keylen, strlen("n\"s/\xc3\xa9/j"));
    cr_assert(!memcmp(ev->key, "n\"s/\xc3\xa9/j", ev->keylen));

    char *data = member_json(js, "data");
    same_json(span_text(ev, ev->data), data);
    json_object *d = json_object_object_get(js, "data");
    char *obj = member_json(d, "object"), *old = member_json(d, "oldObject");
    same_json(span_text(ev, ev->object), obj);
    same_json(span_text(ev, ev->old_object), old);
    free(data);
    free(obj);
    free(old);

    /* Every top-level attribute but data, in order, as its unescaped text. */
    static const char *const attr_names[] = {"specversion", "id",   "source",          "type", "subject",
                                        "time",        "datacontenttype", "pglsn", "pgxid"};
    cr_assert_eq(ev->nattrs, 9);
    for (int i = 0; i < ev->nattrs; i++) {
        cr_assert_str_eq(ev->attrs[i].name, attr_names[i]);
        json_object *v;
        cr_assert(json_object_object_get_ex(js, attr_names[i], &v));
        const char *want = json_object_get_string(v);
        cr_assert_eq(ev->attrs[i].len, strlen(want), "%s", attr_names[i]);
        cr_assert(!memcmp(ev->attrs[i].value, want, ev->attrs[i].len), "%s: %.*s != %s", attr_names[i],
                  (int)ev->attrs[i].len, ev->attrs[i].value, want);
    }
    json_object_put(js);

    /* An insert has no oldObject; a truncate has no subject and no object. */
    m = (crw_pgo_msg_t){.type = CRW_PGO_INSERT};
    m.u.insert.newtup = tuple(c_new, v_new);
    json_object_put(map(rel, &m));
    cr_assert_gt(mapped.ev[0].object.len, 0);
    cr_assert_eq(mapped.ev[0].old_object.len, 0);
    crw_change_t t = {.op = CRW_OP_TRUNCATE, .rel = rel->rel};
    cr_assert_eq(crw_mapper_change(mp, rel, &t, &tx, &mapped, err, sizeof err), 0, "%s", err);
    ev = &mapped.ev[0];
    cr_assert_str_eq(ev->type, "TRUNCATED");
    cr_assert_eq(ev->keylen, 0);
    cr_assert_eq(ev->object.len, 0);
    cr_assert_eq(ev->nattrs, 8);
    for (int i = 0; i < ev->nattrs; i++)
        cr_assert_str_neq(ev->attrs[i].name, "subject");
    js = json_tokener_parse(ev->value);
    data = member_json(js, "data");
    same_json(span_text(ev, ev->data), data);
    free(data);
    json_object_put(js);
}

/* Debezium: object and old object are after and before; a delete is followed by its tombstone. */
Test(event, debezium_records_and_tombstones, .fini = teardown_all) {
    const crw_relinfo_t *rel = crd_relation(false, CRW_SHAPE_ROW);
    crw_mapper_destroy(mp);
    conf->event_format = CRW_FORMAT_DEBEZIUM;
    mp = crw_mapper_new(conf, NULL);
    crw_pgo_msg_t d = {.type = CRW_PGO_DELETE};
    d.u.del.oldkind = 'O';
    d.u.del.oldtup = tuple(c_old, V_OLD);
    cr_assert_eq(map_rc(rel, &d), 0, "%s", err);
    cr_assert_eq(mapped.n, 2);
    const crw_event_t *ev = &mapped.ev[0], *tomb = &mapped.ev[1];
    cr_assert_str_eq(ev->type, "DELETED");
    cr_assert_null(ev->attrs);
    cr_assert_eq(ev->object.len, 0, "after is null");
    json_object *js = json_tokener_parse(ev->value);
    char *before = member_json(js, "before");
    same_json(span_text(ev, ev->old_object), before);
    free(before);
    json_object_put(js);
    cr_assert_null(tomb->value);
    cr_assert_eq(tomb->keylen, ev->keylen);
    cr_assert(!memcmp(tomb->key, ev->key, ev->keylen));
    cr_assert(!memcmp(ev->key, "{\"namespace\":\"ns\",\"name\":\"j\"}", ev->keylen), "%.*s", (int)ev->keylen, ev->key);
}

Test(event, a_snapshot_read_is_sync_without_old_object_and_fills_the_cache, .fini = teardown_all) {
    const crw_relinfo_t *rel = crd_relation(true, CRW_SHAPE_CRD);
    /* The cache knows an older state: a read still shows only the current object. */
    crw_pgo_tuple_t seed = tuple(c_old, V_OLD);
    cr_assert_eq(crw_mapper_seed(mp, rel, &seed, err, sizeof err), 0, "%s", err);
    const char *v_read[NCOL] = {"ns", "j", "1", "6", "{\"preset\": \"1080p\", \"outs\": [1, 2]}",
                                "{\"phase\": \"Running\"}", NULL};
    crw_pgo_tuple_t row = tuple(c_new, v_read);
    crw_change_t rd = {.op = CRW_OP_READ, .rel = rel->rel, .newtup = &row, .id = "0/10/sync/ns,j", .idlen = 14};
    cr_assert_eq(crw_mapper_change(mp, rel, &rd, &tx, &mapped, err, sizeof err), 0, "%s", err);
    cr_assert_eq(mapped.n, 1);
    cr_assert_str_eq(mapped.ev[0].type, "SYNC");
    json_object *ev = json_tokener_parse(mapped.ev[0].value);
    cr_assert(ev);
    cr_assert_str_eq(at(ev, "type"), "crwatch.Job.sync");
    cr_assert_str_eq(at(ev, "id"), "0/10/sync/ns,j");
    cr_assert_str_eq(at(ev, "data.type"), "SYNC");
    cr_assert_str_eq(at(ev, "data.object.status.phase"), "Running");
    cr_assert_null(at(ev, "data.oldObject"), "a SYNC is the whole current object");
    cr_assert_null(at(ev, "data.changed"));
    json_object_put(ev);
    /* The next update's oldObject is what the read saw. */
    const char *v_new[NCOL] = {"ns", "j", "1", "7", UNCH, "{\"phase\": \"Succeeded\"}", NULL};
    crw_pgo_msg_t m = {.type = CRW_PGO_UPDATE};
    m.u.update.relid = rel->rel->relid;
    m.u.update.newtup = tuple(c_new, v_new);
    ev = map(rel, &m);
    cr_assert_str_eq(at(ev, "data.oldObject.status.phase"), "Running");
    cr_assert_str_eq(at(ev, "data.object.spec.preset"), "1080p");
    json_object_put(ev);
}

/* VmRSS of this process, in bytes. */
static size_t rss_now(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %zu kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

/*
 * The default byte bound (64 MiB) under 100,000 resources with 4 KiB specs:
 * the cache never holds more, the process grows by no more than the bound
 * plus 16 MiB, the newest resources are found and the oldest are reported
 * unknown, never wrong.
 */
Test(event, the_byte_bound_holds_under_100k_resources_with_4k_specs, .fini = teardown_all) {
    cache_entries = 0;
    cache_bytes = 64u << 20;
    const crw_relinfo_t *rel = crd_relation(true, CRW_SHAPE_CRD);
    cache_entries = 100;
    cache_bytes = 0;
    char spec[4200], name[32];
    int n = snprintf(spec, sizeof spec, "{\"steps\": [");
    for (int k = 0; n < 4000; k++)
        n += snprintf(spec + n, sizeof spec - (size_t)n, "%s{\"image\": \"reg/transcode@sha256:%08x%08x\", \"n\": %d}",
                      k ? ", " : "", (unsigned)k * 2654435761u, (unsigned)k, k);
    snprintf(spec + n, sizeof spec - (size_t)n, "]}");
    size_t before = rss_now();
    crw_pgo_msg_t m = {.type = CRW_PGO_INSERT};
    m.u.insert.relid = rel->rel->relid;
    for (int i = 0; i < 100000; i++) {
        snprintf(name, sizeof name, "job-%d", i);
        const char *v[NCOL] = {"ns", name, "1", "1", spec, "{\"phase\": \"Pending\"}", NULL};
        m.u.insert.newtup = tuple(c_new, v);
        cr_assert_eq(map_rc(rel, &m), 0, "%s", err);
        if (i % 1000 == 0)
            cr_assert_leq(crw_cache_bytes(cache), 64u << 20, "after %d: %zu bytes", i, crw_cache_bytes(cache));
    }
    cr_assert_leq(crw_cache_bytes(cache), 64u << 20);
    size_t grew = rss_now() > before ? rss_now() - before : 0;
#ifndef __SANITIZE_ADDRESS__ /* AddressSanitizer keeps freed memory aside (its quarantine): RSS says nothing there */
    cr_expect_leq(grew, (64u + 16u) << 20, "RSS grew by %zu MiB", grew >> 20);
#else
    (void)grew;
#endif
    uint32_t held = crw_cache_size(cache);
    cr_expect(held > 10000 && held < 16000, "%u objects of ~4.5 KiB in 64 MiB", held);

    /* the newest: a status update finds its old object; the oldest: unknown */
    crw_pgo_msg_t u = {.type = CRW_PGO_UPDATE};
    u.u.update.relid = rel->rel->relid;
    const char *vnew[NCOL] = {"ns", "job-99999", "1", "2", UNCH, "{\"phase\": \"Running\"}", NULL};
    u.u.update.newtup = tuple(c_new, vnew);
    json_object *ev = map(rel, &u);
    cr_expect_str_eq(at(ev, "data.oldObject.status.phase"), "Pending");
    cr_expect_str_eq(at(ev, "data.changed.0"), "/status/phase");
    cr_expect_null(at(ev, "data.unknown"));
    json_object_put(ev);
    const char *vold[NCOL] = {"ns", "job-0", "1", "2", UNCH, "{\"phase\": \"Running\"}", NULL};
    u.u.update.newtup = tuple(c_new, vold);
    ev = map(rel, &u);
    cr_expect_null(at(ev, "data.oldObject"));
    cr_expect_str_eq(at(ev, "data.oldObjectUnknown"), "true");
    cr_expect_str_eq(at(ev, "data.unknown.0"), "/spec");
    json_object_put(ev);
}
