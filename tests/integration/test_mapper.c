/*
 * test_mapper.c — resources, not rows: crd-shaped objects through a whole
 * lifecycle, deep `changed` pointers, JSON Patch, oldObject and TOAST fill
 * from the old row or the resource cache, soft delete, shared tables with a
 * kind column, column filters, and the dead-letter path.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/itest.h"

#define EV_TIMEOUT 15000

static it_proc_t *start(const char *db, const char *const *xs) { return it_crwatch_stream(db, xs, NULL); }

static void stop(it_proc_t *p) { it_crwatch_stop(p, 10000); }

Test(mapper, crd_lifecycle_event_by_event) {
    char db[64];
    PGconn *c = it_db_create("crd", db, sizeof db);
    it_apply_sql(db, "sql/examples/video_transcoding_job.sql");
    const char *xs[] = {"resource.jobs.table=public.video_transcoding_jobs", "resource.jobs.kind=VideoTranscodingJob",
                        "resource.jobs.shape=crd", "resource.jobs.api.version=media.example.com/v1", NULL};
    it_proc_t *p = start(db, xs);
    it_exec(c, "INSERT INTO video_transcoding_jobs (namespace, name, labels, spec) VALUES ('default', 'job-42',"
               " '{\"team\":\"media\"}', '{\"input\":\"s3://in/cat.mov\",\"preset\":\"1080p\"}')");
    it_exec(c, "UPDATE video_transcoding_jobs SET status = '{\"phase\":\"Pending\"}' WHERE name = 'job-42'");
    it_exec(c, "UPDATE video_transcoding_jobs SET status = jsonb_set(status, '{phase}', '\"Running\"')");
    it_exec(c, "UPDATE video_transcoding_jobs SET spec = jsonb_set(spec, '{preset}', '\"4k\"')");
    it_exec(c, "UPDATE video_transcoding_jobs SET deleted_at = now()");
    it_exec(c, "DELETE FROM video_transcoding_jobs");

    json_object *ev[6];
    for (int i = 0; i < 6; i++)
        ev[i] = it_proc_expect_event(p, EV_TIMEOUT);
    static const char *const types[] = {"ADDED", "MODIFIED", "MODIFIED", "MODIFIED", "MODIFIED", "DELETED"};
    long long last_rv = 0;
    for (int i = 0; i < 6; i++) {
        it_expect_str(ev[i], "data.type", types[i]);
        it_expect_str(ev[i], "data.kind", "VideoTranscodingJob");
        it_expect_str(ev[i], "subject", "default/job-42");
        it_expect_str(ev[i], "data.key", "default/job-42");
        it_expect_str(ev[i], "data.object.apiVersion", "media.example.com/v1");
        it_expect_str(ev[i], "data.object.kind", "VideoTranscodingJob");
        it_expect_str(ev[i], "data.object.metadata.name", "job-42");
        it_expect_str(ev[i], "data.object.metadata.namespace", "default");
        it_expect_str(ev[i], "data.object.metadata.labels.team", "media");
        json_object *rv = it_json_get(ev[i], "data.object.metadata.resourceVersion");
        cr_assert(rv && json_object_is_type(rv, json_type_string), "resourceVersion must be a string");
        long long v = atoll(json_object_get_string(rv));
        if (i < 5) /* the delete carries the last state, not a new version */
            cr_assert_gt(v, last_rv, "resourceVersion did not increase at event %d", i);
        last_rv = v;
        cr_assert(it_json_exists(ev[i], "data.object.metadata.uid"));
        cr_assert(it_json_exists(ev[i], "data.object.metadata.creationTimestamp"));
    }
    it_expect_str(ev[0], "type", "crwatch.VideoTranscodingJob.added");
    it_expect_str(ev[0], "data.object.metadata.generation", "1");
    it_expect_str(ev[0], "data.object.spec.preset", "1080p");
    cr_assert_not(it_json_exists(ev[0], "data.object.metadata.deletionTimestamp"));

    it_expect_str(ev[1], "data.object.status.phase", "Pending");
    it_expect_str(ev[1], "data.object.metadata.generation", "1");
    cr_assert(it_json_array_has(ev[1], "data.changed", "/status/phase"), "%s", json_object_to_json_string(ev[1]));
    cr_assert_not(it_json_array_has(ev[1], "data.changed", "/metadata/resourceVersion"),
                  "every write changes it: changed leaves it out");
    cr_assert_not(it_json_array_has(ev[1], "data.changed", "/spec"));
    cr_assert_not(it_json_exists(ev[1], "data.oldObject.status.phase"));

    it_expect_str(ev[2], "data.object.status.phase", "Running");
    it_expect_str(ev[2], "data.oldObject.status.phase", "Pending");
    cr_assert(it_json_array_has(ev[2], "data.changed", "/status/phase"));
    cr_assert_not(it_json_array_has(ev[2], "data.changed", "/status"));

    it_expect_str(ev[3], "data.object.spec.preset", "4k");
    it_expect_str(ev[3], "data.oldObject.spec.preset", "1080p");
    it_expect_str(ev[3], "data.object.metadata.generation", "2");
    cr_assert(it_json_array_has(ev[3], "data.changed", "/spec/preset"));
    cr_assert(it_json_array_has(ev[3], "data.changed", "/metadata/generation"));

    /* Soft delete, as Kubernetes does it: MODIFIED with a deletionTimestamp. */
    cr_assert(it_json_exists(ev[4], "data.object.metadata.deletionTimestamp"));
    cr_assert(it_json_array_has(ev[4], "data.changed", "/metadata/deletionTimestamp"));
    cr_assert_not(it_json_exists(ev[4], "data.oldObject.metadata.deletionTimestamp"));

    it_expect_str(ev[5], "type", "crwatch.VideoTranscodingJob.deleted");
    it_expect_str(ev[5], "data.object.spec.preset", "4k");
    cr_assert(it_json_exists(ev[5], "data.object.metadata.deletionTimestamp"));
    for (int i = 0; i < 6; i++)
        json_object_put(ev[i]);
    /* REPLICA IDENTITY FULL (the example table): the old rows come with the changes, the cache steps aside. */
    char *log = it_proc_stderr(p);
    cr_expect(strstr(log, "sends its old rows (REPLICA IDENTITY FULL): not cached"), "%s", log);
    /* nor is it listed into the cache at start, to be dropped at the first change */
    cr_expect(strstr(log, "not listed into the cache: REPLICA IDENTITY FULL brings each old row whole"), "%s", log);
    cr_expect_null(strstr(log, "rows of public."), "%s", log);
    free(log);
    stop(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* A crd table with a 10 KiB incompressible spec (stored out of line). */
static void make_big(PGconn *c, const char *identity) {
    it_exec(c, "CREATE TABLE r (namespace text, name text, spec jsonb, status jsonb, PRIMARY KEY (namespace, name));"
               "ALTER TABLE r REPLICA IDENTITY %s", identity);
}

static void insert_big(PGconn *c, const char *name) {
    it_exec(c, "INSERT INTO r SELECT 'ns', '%s', jsonb_build_object('blob', string_agg(md5(g::text || '%s'), '')),"
               " '{\"phase\":\"a\"}' FROM generate_series(1, 320) g", name, name);
}

static void expect_whole_spec(json_object *ev) {
    const char *blob = it_json_str(ev, "data.object.spec.blob");
    cr_assert(blob && strlen(blob) == 320 * 32, "spec not delivered whole: %s", json_object_to_json_string(ev));
    cr_assert_not(it_json_exists(ev, "data.unknown"));
    it_expect_str(ev, "data.oldObject.status.phase", "a");
    it_expect_str(ev, "data.object.status.phase", "b");
    cr_assert(it_json_array_has(ev, "data.changed", "/status/phase"));
    cr_assert_not(it_json_array_has(ev, "data.changed", "/spec"));
    cr_assert_not(it_json_array_has(ev, "data.changed", "/spec/blob"));
}

Test(mapper, big_spec_status_update_delivered_whole_with_full_identity) {
    char db[64];
    PGconn *c = it_db_create("bigfull", db, sizeof db);
    make_big(c, "FULL");
    const char *xs[] = {"resource.r.table=public.r", "resource.r.shape=crd", "resource.r.kind=Big", NULL};
    it_proc_t *p = start(db, xs);
    insert_big(c, "x");
    it_exec(c, "UPDATE r SET status = '{\"phase\":\"b\"}'");
    json_object_put(it_proc_expect_event(p, EV_TIMEOUT));
    json_object *m = it_proc_expect_event(p, EV_TIMEOUT);
    expect_whole_spec(m);
    json_object_put(m);
    stop(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(mapper, big_spec_status_update_delivered_whole_with_the_cache) {
    char db[64];
    PGconn *c = it_db_create("bigcache", db, sizeof db);
    make_big(c, "DEFAULT");
    insert_big(c, "before"); /* known only through the cache's initial listing */
    const char *xs[] = {"resource.r.table=public.r", "resource.r.shape=crd", "resource.r.kind=Big",
                        "cache.max.entries=100", NULL};
    it_proc_t *p = start(db, xs);
    insert_big(c, "after"); /* known through the stream */
    it_exec(c, "UPDATE r SET status = '{\"phase\":\"b\"}' WHERE name = 'before'");
    it_exec(c, "UPDATE r SET status = '{\"phase\":\"b\"}' WHERE name = 'after'");
    it_exec(c, "DELETE FROM r WHERE name = 'after'");
    json_object *a = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(a, "data.type", "ADDED");
    json_object *m1 = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(m1, "subject", "ns/before");
    expect_whole_spec(m1);
    json_object *m2 = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(m2, "subject", "ns/after");
    expect_whole_spec(m2);
    /* A key-only delete carries the last state from the cache. */
    json_object *d = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(d, "data.type", "DELETED");
    it_expect_str(d, "data.object.status.phase", "b");
    cr_assert_not(it_json_exists(d, "data.unknown"));
    json_object_put(a);
    json_object_put(m1);
    json_object_put(m2);
    json_object_put(d);
    stop(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(mapper, crd_kinds_have_the_cache_by_default) {
    char db[64];
    PGconn *c = it_db_create("bigdflt", db, sizeof db);
    make_big(c, "DEFAULT");
    insert_big(c, "before");
    const char *xs[] = {"resource.r.table=public.r", "resource.r.shape=crd", "resource.r.kind=Big", NULL};
    it_proc_t *p = start(db, xs);
    it_exec(c, "UPDATE r SET status = '{\"phase\":\"b\"}' WHERE name = 'before'");
    json_object *m = it_proc_expect_event(p, EV_TIMEOUT);
    expect_whole_spec(m);
    cr_assert(it_json_array_has(m, "data.changed", "/status/phase"), "%s", json_object_to_json_string(m));
    cr_assert_not(it_json_exists(m, "data.oldObjectUnknown"));
    json_object_put(m);
    stop(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(mapper, a_cache_miss_says_the_old_object_is_unknown) {
    char db[64];
    PGconn *c = it_db_create("bigmiss", db, sizeof db);
    make_big(c, "DEFAULT");
    /* Room for one object of ~10 KiB: the second one in pushes the first out. */
    const char *xs[] = {"resource.r.table=public.r", "resource.r.shape=crd", "resource.r.kind=Big",
                        "cache.max.bytes=20kB", NULL};
    it_proc_t *p = start(db, xs);
    insert_big(c, "one");
    insert_big(c, "two");
    it_exec(c, "UPDATE r SET status = '{\"phase\":\"b\"}' WHERE name = 'one'");
    it_exec(c, "UPDATE r SET status = '{\"phase\":\"b\"}' WHERE name = 'two'");
    json_object_put(it_proc_expect_event(p, EV_TIMEOUT));
    json_object_put(it_proc_expect_event(p, EV_TIMEOUT));
    json_object *miss = it_proc_expect_event(p, EV_TIMEOUT), *hit = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(miss, "subject", "ns/one");
    cr_assert_not(it_json_exists(miss, "data.oldObject"), "%s", json_object_to_json_string(miss));
    it_expect_str(miss, "data.oldObjectUnknown", "true");
    cr_assert(it_json_array_has(miss, "data.unknown", "/spec"), "%s", json_object_to_json_string(miss));
    it_expect_str(hit, "subject", "ns/two");
    expect_whole_spec(hit);
    json_object_put(miss);
    json_object_put(hit);
    stop(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(mapper, big_spec_without_old_row_or_cache_is_named_unknown) {
    char db[64];
    PGconn *c = it_db_create("bignone", db, sizeof db);
    make_big(c, "DEFAULT");
    const char *xs[] = {"resource.r.table=public.r", "resource.r.shape=crd", "resource.r.kind=Big",
                        "resource.r.cache=false", NULL};
    it_proc_t *p = start(db, xs);
    insert_big(c, "x");
    it_exec(c, "UPDATE r SET status = '{\"phase\":\"b\"}'");
    json_object_put(it_proc_expect_event(p, EV_TIMEOUT));
    json_object *m = it_proc_expect_event(p, EV_TIMEOUT);
    cr_assert_not(it_json_exists(m, "data.object.spec"));
    cr_assert(it_json_array_has(m, "data.unknown", "/spec"), "%s", json_object_to_json_string(m));
    cr_assert_not(it_json_exists(m, "data.oldObject"));
    json_object_put(m);
    stop(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(mapper, shared_table_kinds_and_dead_letters) {
    char db[64], dl[256];
    PGconn *c = it_db_create("shared", db, sizeof db);
    snprintf(dl, sizeof dl, "deadletter.file=/tmp/%s.deadletter.jsonl", db);
    unlink(dl + strlen("deadletter.file="));
    it_exec(c, "CREATE TABLE res (kind text, namespace text, name text, spec jsonb, status jsonb,"
               " PRIMARY KEY (kind, namespace, name))");
    const char *xs[] = {"resource.a.table=public.res", "resource.a.kind=Alpha", "resource.a.kind.column=kind",
                        "resource.a.shape=crd", "resource.b.table=public.res", "resource.b.kind=Beta",
                        "resource.b.kind.column=kind", "resource.b.shape=crd", dl, NULL};
    it_proc_t *p = start(db, xs);
    it_exec(c, "INSERT INTO res VALUES ('Alpha', 'n', 'one', '{}', null)");
    it_exec(c, "INSERT INTO res VALUES ('Gamma', 'n', 'stray', '{}', null)");   /* no such kind */
    it_exec(c, "INSERT INTO res VALUES ('Beta', 'n', 'bad', '[1,2]', null)"); /* spec not an object */
    it_exec(c, "INSERT INTO res VALUES ('Beta', 'n', 'two', '{\"x\":1}', null)");
    char *after = it_query_value(c, "SELECT pg_current_wal_lsn()");
    json_object *a = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(a, "data.kind", "Alpha");
    it_expect_str(a, "data.object.kind", "Alpha");
    it_expect_str(a, "type", "crwatch.Alpha.added");
    json_object *b = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(b, "data.kind", "Beta");
    it_expect_str(b, "data.object.metadata.name", "two");
    json_object_put(a);
    json_object_put(b);
    cr_assert(it_proc_no_line_within(p, 300));
    stop(p);

    /* Both rejects are in the dead-letter file with reason and raw row; the slot went past them. */
    FILE *f = fopen(dl + strlen("deadletter.file="), "r");
    cr_assert(f, "no dead-letter file");
    char line[8192];
    int n = 0;
    bool kind_reason = false, spec_reason = false;
    while (fgets(line, sizeof line, f)) {
        json_object *o = json_tokener_parse(line);
        cr_assert(o, "dead-letter line is not JSON: %s", line);
        const char *reason = it_json_str(o, "reason");
        kind_reason |= strstr(reason, "Gamma") != NULL;
        spec_reason |= strstr(reason, "spec is not a JSON object") != NULL;
        cr_assert(it_json_exists(o, "payload.new.name"), "raw row missing: %s", line);
        cr_assert(it_json_exists(o, "pglsn"));
        json_object_put(o);
        n++;
    }
    fclose(f);
    cr_assert_eq(n, 2);
    cr_assert(kind_reason && spec_reason);
    char *ok = it_query_value(c, "SELECT confirmed_flush_lsn >= '%s'::pg_lsn - 200 FROM pg_replication_slots WHERE "
                                 "slot_name = current_database()", after);
    cr_assert_str_eq(ok, "t");
    free(ok);
    free(after);
    unlink(dl + strlen("deadletter.file="));
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(mapper, patch_option_and_column_filters) {
    char db[64];
    PGconn *c = it_db_create("patch", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, doc jsonb, secret text); ALTER TABLE t REPLICA IDENTITY FULL");
    const char *xs[] = {"resource.t.table=public.t", "resource.t.columns.exclude=secret", "event.patch=true", NULL};
    it_proc_t *p = start(db, xs);
    it_exec(c, "INSERT INTO t VALUES (1, '{\"a\":{\"b\":1},\"l\":[1,2]}', 'pw')");
    it_exec(c, "UPDATE t SET doc = '{\"a\":{\"b\":2},\"l\":[1],\"n\":true}', secret = 'pw2'");
    json_object *a = it_proc_expect_event(p, EV_TIMEOUT);
    cr_assert_not(it_json_exists(a, "data.object.secret"));
    json_object *m = it_proc_expect_event(p, EV_TIMEOUT);
    cr_assert_not(it_json_exists(m, "data.object.secret"));
    cr_assert_not(it_json_exists(m, "data.oldObject.secret"));
    cr_assert(it_json_array_has(m, "data.changed", "/doc/a/b"));
    cr_assert(it_json_array_has(m, "data.changed", "/doc/l/1"));
    cr_assert(it_json_array_has(m, "data.changed", "/doc/n"));
    cr_assert_null(it_json_get(m, "data.changed.3"), "%s", json_object_to_json_string(m));
    it_expect_str(m, "data.patch.0.op", "replace");
    it_expect_str(m, "data.patch.0.path", "/doc/a/b");
    it_expect_str(m, "data.patch.0.value", "2");
    json_object_put(a);
    json_object_put(m);
    stop(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(mapper, debezium_envelope_with_tombstones_and_key_changes) {
    char db[64];
    PGconn *c = it_db_create("dbz", db, sizeof db);
    it_exec(c, "CREATE TABLE customers (id int PRIMARY KEY, email text, joined date, doc jsonb);"
               "ALTER TABLE customers REPLICA IDENTITY FULL");
    const char *xs[] = {"tables=public.customers", "event.format=debezium", "debezium.name=inventory", NULL};
    it_proc_t *p = start(db, xs);
    it_exec(c, "INSERT INTO customers VALUES (1, 'a@x', '1970-01-02', '{\"k\": 1}'), (2, 'b@x', NULL, NULL)");
    it_exec(c, "UPDATE customers SET email = 'a2@x' WHERE id = 1");
    it_exec(c, "UPDATE customers SET id = 3 WHERE id = 2"); /* key change: d, tombstone, c */
    it_exec(c, "DELETE FROM customers WHERE id = 1");
    it_exec(c, "TRUNCATE customers");

    json_object *c1 = it_proc_expect_event(p, EV_TIMEOUT), *c2 = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(c1, "op", "c");
    cr_assert_null(it_json_get(c1, "before"));
    cr_assert(it_json_exists(c1, "before"), "before must be present as null");
    it_expect_str(c1, "after.id", "1");
    it_expect_str(c1, "after.email", "a@x");
    it_expect_str(c1, "after.joined", "1");      /* days since 1970 */
    it_expect_str(c1, "after.doc", "{\"k\": 1}"); /* jsonb text as PostgreSQL prints it, in a string (io.debezium.data.Json) */
    it_expect_str(c1, "source.connector", "postgresql");
    it_expect_str(c1, "source.name", "inventory");
    it_expect_str(c1, "source.db", db);
    it_expect_str(c1, "source.schema", "public");
    it_expect_str(c1, "source.table", "customers");
    it_expect_str(c1, "source.snapshot", "false");
    cr_assert(json_object_is_type(it_json_get(c1, "source.txId"), json_type_int));
    cr_assert(json_object_is_type(it_json_get(c1, "source.lsn"), json_type_int));
    cr_assert(json_object_is_type(it_json_get(c1, "ts_ms"), json_type_int));
    /* two rows of one transaction: distinct change LSNs, one txId */
    cr_assert_str_neq(it_json_str(c1, "source.lsn"), it_json_str(c2, "source.lsn"));
    cr_assert_str_eq(it_json_str(c1, "source.txId"), it_json_str(c2, "source.txId"));
    json_object *sq = json_tokener_parse(it_json_str(c2, "source.sequence"));
    cr_assert(sq && json_object_array_length(sq) == 2, "sequence is a JSON string of two LSNs");
    cr_assert_str_eq(json_object_get_string(json_object_array_get_idx(sq, 1)), it_json_str(c2, "source.lsn"));
    json_object_put(sq);

    json_object *u = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(u, "op", "u");
    it_expect_str(u, "before.email", "a@x");
    it_expect_str(u, "after.email", "a2@x");

    json_object *kd = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(kd, "op", "d");
    it_expect_str(kd, "before.id", "2");
    char *tomb = it_proc_read_line(p, EV_TIMEOUT);
    cr_assert(tomb && !strcmp(tomb, "null"), "tombstone after a delete: %s", tomb);
    free(tomb);
    json_object *kc = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(kc, "op", "c");
    it_expect_str(kc, "after.id", "3");

    json_object *d = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(d, "op", "d");
    it_expect_str(d, "before.email", "a2@x");
    cr_assert_null(it_json_get(d, "after"));
    tomb = it_proc_read_line(p, EV_TIMEOUT);
    cr_assert(tomb && !strcmp(tomb, "null"));
    free(tomb);
    json_object *t = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(t, "op", "t");
    json_object *all[] = {c1, c2, u, kd, kc, d, t};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        json_object_put(all[i]);
    stop(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(mapper, changes_older_than_the_caches_listing_say_the_old_object_is_unknown, .timeout = 60) {
    char db[64];
    PGconn *c = it_db_create("bigold", db, sizeof db);
    make_big(c, "DEFAULT");
    insert_big(c, "one");
    const char *xs[] = {"resource.r.table=public.r", "resource.r.shape=crd", "resource.r.kind=Big", NULL};
    it_proc_t *p = start(db, xs);
    stop(p);
    /* While crwatch is away; on the next start the slot sends it, and the cache is listed after it. */
    it_exec(c, "UPDATE r SET status = '{\"phase\":\"b\"}' WHERE name = 'one'");
    p = start(db, xs);
    json_object *old = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(old, "data.object.status.phase", "b");
    cr_assert_not(it_json_exists(old, "data.oldObject"), "a newer oldObject: %s", json_object_to_json_string(old));
    it_expect_str(old, "data.oldObjectUnknown", "true");
    json_object_put(old);
    it_exec(c, "UPDATE r SET status = '{\"phase\":\"c\"}' WHERE name = 'one'");
    json_object *now = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(now, "data.oldObject.status.phase", "b");
    cr_assert(it_json_array_has(now, "data.changed", "/status/phase"), "%s", json_object_to_json_string(now));
    json_object_put(now);
    stop(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}
