/*
 * test_stream.c — `crwatch stream` against a real PostgreSQL: event order and
 * content, rollbacks, restarts, a killed walsender, streamed (protocol 2)
 * transactions, schema changes, and bad configuration.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/itest.h"

#define EV_TIMEOUT 15000

/* Starts crwatch watching `tables` in db; waits until it streams. */
static it_proc_t *start_stream(const char *db, const char *tables, const char *extra) {
    char t[256];
    snprintf(t, sizeof t, "tables=%s", tables);
    const char *const base[] = {t, extra, NULL};
    return it_crwatch_stream(db, base, NULL);
}

/* The JSON text of the value at path (numbers, objects, arrays exactly as emitted). */
static const char *json_text(json_object *ev, const char *path) {
    json_object *v = it_json_get(ev, path);
    return v ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE) : "null";
}

Test(stream, typed_values_and_change_types_in_commit_order) {
    char db[64];
    PGconn *c = it_db_create("types", db, sizeof db);
    it_exec(c, "CREATE TYPE mood AS ENUM ('sad','happy');"
               "CREATE DOMAIN posint AS int CHECK (VALUE > 0);"
               "CREATE TABLE t (id int PRIMARY KEY, i2 int2, i8 int8, o oid, f4 float4, f8 float8, "
               " n numeric(12,4), b bool, tx text, vc varchar(10), bp char(3), nm name, u uuid, j json, jb jsonb,"
               " by bytea, d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,"
               " ai int[], at text[], a2 int[][], m mood, pi posint, ip inet)");
    it_proc_t *p = start_stream(db, "public.t", NULL);
    it_exec(c, "INSERT INTO t VALUES (1, -32768, 9223372036854775807, 4294967295, 'NaN', '-Infinity', "
               " 12.3400, true, E'quote\" back\\\\ nl\\n tab\\t é', 'abc', 'ab', 'nm', "
               " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{ \"a\" :\n [1, 2] }', "
               " '{\"big\": 123456789012345678901234567890, \"s\": \"x\"}', '\\x00ff10', "
               " '0044-03-15 BC', '23:59:59.999999', '10:00:00+05:30', 'infinity', "
               " '2026-11-24 10:00:00.123456+02', '1 year 2 months 3 days 04:05:06.5', "
               " '{1,NULL,3}', '{\"a b\",\"c,d\",NULL,\"NULL\"}', '{{1,2},{3,4}}', 'happy', 7, '10.0.0.1/8')");
    it_exec(c, "BEGIN; INSERT INTO t (id) VALUES (2); UPDATE t SET tx = 'changed' WHERE id = 1; "
               "DELETE FROM t WHERE id = 2; COMMIT");
    it_exec(c, "TRUNCATE t");

    /* Raw line first: a JSON parser would round the 30-digit jsonb number. */
    char *line = it_proc_read_line(p, EV_TIMEOUT);
    cr_assert(line, "no event");
    cr_assert(strstr(line, "\"big\":123456789012345678901234567890"), "jsonb lost digits: %s", line);
    json_object *ev = json_tokener_parse(line);
    free(line);
    it_expect_str(ev, "specversion", "1.0");
    it_expect_str(ev, "type", "crwatch.t.added");
    it_expect_str(ev, "subject", "1");
    it_expect_str(ev, "datacontenttype", "application/json");
    it_expect_str(ev, "data.type", "ADDED");
    it_expect_str(ev, "data.kind", "t");
    it_expect_str(ev, "data.key", "1");
    char src[128];
    snprintf(src, sizeof src, "/crwatch/%s/public/t", db);
    it_expect_str(ev, "source", src);
    char *lsn = strdup(it_json_str(ev, "pglsn")); /* outlives ev */
    char want_id[64];
    snprintf(want_id, sizeof want_id, "%s/1", lsn);
    it_expect_str(ev, "id", want_id);
    cr_assert(json_object_is_type(it_json_get(ev, "pgxid"), json_type_int));
    const char *time = it_json_str(ev, "time");
    cr_assert(time && strlen(time) == 27 && time[10] == 'T' && time[26] == 'Z', "time %s", time);

    static const struct {
        const char *col, *json;
    } want[] = {
        {"id", "1"},
        {"i2", "-32768"},
        {"i8", "9223372036854775807"},
        {"o", "4294967295"},
        {"f4", "\"NaN\""},
        {"f8", "\"-Infinity\""},
        {"n", "\"12.3400\""},
        {"b", "true"},
        {"tx", "\"quote\\\" back\\\\ nl\\n tab\\t \xc3\xa9\""},
        {"vc", "\"abc\""},
        {"bp", "\"ab \""},
        {"nm", "\"nm\""},
        {"u", "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\""},
        {"j", "{\"a\":[1,2]}"},
        {"by", "\"AP8Q\""},
        {"d", "\"-0043-03-15\""},
        {"tm", "\"23:59:59.999999\""},
        {"ttz", "\"10:00:00+05:30\""},
        {"ts", "\"infinity\""},
        {"tstz", "\"2026-11-24T08:00:00.123456Z\""},
        {"iv", "\"P1Y2M3DT4H5M6.5S\""},
        {"ai", "[1,null,3]"},
        {"at", "[\"a b\",\"c,d\",null,\"NULL\"]"},
        {"a2", "[[1,2],[3,4]]"},
        {"m", "\"happy\""},
        {"pi", "7"},
        {"ip", "\"10.0.0.1/8\""},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char path[64];
        snprintf(path, sizeof path, "data.object.%s", want[i].col);
        const char *got = json_text(ev, path);
        cr_assert_str_eq(got, want[i].json, "column %s: want %s got %s", want[i].col, want[i].json, got);
    }
    json_object_put(ev);

    /* One transaction: ADDED 2, MODIFIED 1, DELETED 2 with ordinals 1..3 and one commit LSN. */
    json_object *a = it_proc_expect_event(p, EV_TIMEOUT);
    json_object *m = it_proc_expect_event(p, EV_TIMEOUT);
    json_object *d = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(a, "data.type", "ADDED");
    it_expect_str(a, "subject", "2");
    it_expect_str(m, "data.type", "MODIFIED");
    it_expect_str(m, "subject", "1");
    it_expect_str(m, "data.object.tx", "changed");
    it_expect_str(m, "data.object.i8", "9223372036854775807");
    it_expect_str(d, "data.type", "DELETED");
    it_expect_str(d, "type", "crwatch.t.deleted");
    it_expect_str(d, "data.object.id", "2");
    /* Default replica identity: the delete carries only the key; the rest is named unknown. */
    cr_assert(it_json_exists(d, "data.unknown"), "%s", json_object_to_json_string(d));
    it_expect_str(d, "data.unknown.0", "/i2");
    cr_assert_str_eq(it_json_str(a, "pglsn"), it_json_str(d, "pglsn"));
    cr_assert_str_neq(it_json_str(a, "pglsn"), lsn);
    char id3[64];
    snprintf(id3, sizeof id3, "%s/3", it_json_str(d, "pglsn"));
    it_expect_str(d, "id", id3);
    json_object_put(a);
    json_object_put(m);
    json_object_put(d);
    free(lsn);

    json_object *tr = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(tr, "data.type", "TRUNCATED");
    it_expect_str(tr, "type", "crwatch.t.truncated");
    cr_assert_not(it_json_exists(tr, "subject"));
    json_object_put(tr);

    cr_assert(it_proc_no_line_within(p, 500), "unexpected extra event");
    cr_assert_eq(it_proc_signal_wait(p, SIGTERM, 10000), 0);
    it_proc_free(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(stream, replica_identity_full_gives_old_object_and_changed) {
    char db[64];
    PGconn *c = it_db_create("full", db, sizeof db);
    it_exec(c, "CREATE TABLE f (ns text, name text, big text, phase text, PRIMARY KEY (ns, name));"
               "ALTER TABLE f REPLICA IDENTITY FULL");
    /* An incompressible 10 KiB value is stored out of line (TOAST). */
    it_exec(c, "INSERT INTO f SELECT 'default', 'job-1', string_agg(md5(g::text), '') , 'Pending' "
               "FROM generate_series(1, 320) g");
    it_proc_t *p = start_stream(db, "public.f", NULL);
    it_exec(c, "UPDATE f SET phase = 'Running'");
    it_exec(c, "DELETE FROM f");
    json_object *m = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(m, "subject", "default/job-1");
    it_expect_str(m, "data.object.phase", "Running");
    it_expect_str(m, "data.oldObject.phase", "Pending");
    it_expect_str(m, "data.changed.0", "/phase");
    cr_assert_null(it_json_get(m, "data.changed.1"));
    const char *big = it_json_str(m, "data.object.big");
    cr_assert(big && strlen(big) == 320 * 32, "unchanged TOAST value not filled from the old row");
    cr_assert_not(it_json_exists(m, "data.unknown"));
    json_object *d = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(d, "data.type", "DELETED");
    it_expect_str(d, "data.object.phase", "Running");
    cr_assert_not(it_json_exists(d, "data.unknown"));
    json_object_put(m);
    json_object_put(d);
    cr_assert_eq(it_proc_signal_wait(p, SIGTERM, 10000), 0);
    it_proc_free(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(stream, unchanged_toast_without_old_row_is_named_unknown_not_a_placeholder) {
    char db[64];
    PGconn *c = it_db_create("toast", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, big text, phase text)");
    it_exec(c, "INSERT INTO t SELECT 1, string_agg(md5(g::text), ''), 'a' FROM generate_series(1, 320) g");
    it_proc_t *p = start_stream(db, "public.t", NULL);
    it_exec(c, "UPDATE t SET phase = 'b'");
    char *line = it_proc_read_line(p, EV_TIMEOUT);
    cr_assert(line, "no event");
    cr_assert_null(strstr(line, "unchanged-toast"), "placeholder leaked: %s", line);
    json_object *m = json_tokener_parse(line);
    it_expect_str(m, "data.object.phase", "b");
    cr_assert_not(it_json_exists(m, "data.object.big"));
    it_expect_str(m, "data.unknown.0", "/big");
    json_object_put(m);
    free(line);
    cr_assert_eq(it_proc_signal_wait(p, SIGTERM, 10000), 0);
    it_proc_free(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(stream, rolled_back_transactions_give_nothing) {
    char db[64];
    PGconn *c = it_db_create("rollback", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    it_proc_t *p = start_stream(db, "public.t", NULL);
    it_exec(c, "BEGIN; INSERT INTO t VALUES (1); ROLLBACK");
    it_exec(c, "BEGIN; INSERT INTO t VALUES (2); SAVEPOINT s; INSERT INTO t VALUES (3); ROLLBACK TO s; COMMIT");
    json_object *ev = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(ev, "subject", "2");
    json_object_put(ev);
    cr_assert(it_proc_no_line_within(p, 700));
    cr_assert_eq(it_proc_signal_wait(p, SIGTERM, 10000), 0);
    it_proc_free(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* Reads events until every key 1..n was seen; duplicates are allowed (at-least-once). */
static void expect_keys(it_proc_t *p, int lo, int hi, int *dups) {
    int n = hi - lo + 1, seen_n = 0;
    char *seen = calloc((size_t)n, 1);
    *dups = 0;
    while (seen_n < n) {
        json_object *ev = it_proc_read_event(p, EV_TIMEOUT);
        if (!ev) {
            it_proc_dump_stderr(p);
            cr_assert_fail("only %d of keys %d..%d arrived", seen_n, lo, hi);
        }
        int k = atoi(it_json_str(ev, "subject"));
        json_object_put(ev);
        cr_assert(k >= lo && k <= hi, "unexpected key %d (want %d..%d)", k, lo, hi);
        if (seen[k - lo])
            (*dups)++;
        else {
            seen[k - lo] = 1;
            seen_n++;
        }
    }
    free(seen);
}

Test(stream, restart_resumes_without_loss_or_duplicates) {
    char db[64];
    PGconn *c = it_db_create("restart", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    it_proc_t *p = start_stream(db, "public.t", NULL);
    for (int i = 1; i <= 50; i++)
        it_exec(c, "INSERT INTO t VALUES (%d)", i);
    int dups;
    expect_keys(p, 1, 50, &dups);
    cr_assert_eq(dups, 0);
    cr_assert_eq(it_proc_signal_wait(p, SIGTERM, 10000), 0, "SIGTERM must drain and exit 0");
    it_proc_free(p);
    /* The final status update confirmed everything delivered. */
    char *confirmed = it_query_value(c, "SELECT confirmed_flush_lsn >= (SELECT max(lsn) FROM "
                                        "(SELECT pg_current_wal_lsn() AS lsn) x) - 1000000 FROM "
                                        "pg_replication_slots WHERE slot_name = current_database()");
    cr_assert(confirmed);
    free(confirmed);
    for (int i = 51; i <= 100; i++)
        it_exec(c, "INSERT INTO t VALUES (%d)", i);
    p = start_stream(db, "public.t", NULL);
    expect_keys(p, 51, 100, &dups);
    cr_assert_eq(dups, 0, "a clean stop must confirm what was delivered");
    cr_assert(it_proc_no_line_within(p, 500));
    cr_assert_eq(it_proc_signal_wait(p, SIGTERM, 10000), 0);
    it_proc_free(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(stream, terminated_walsender_is_survived_without_loss) {
    char db[64];
    PGconn *c = it_db_create("kill", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, pad text)");
    it_proc_t *p = start_stream(db, "public.t", NULL);
    for (int i = 1; i <= 300; i++) {
        it_exec(c, "INSERT INTO t VALUES (%d, repeat('x', 200))", i);
        if (i == 100 || i == 200)
            it_exec(c, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                       "WHERE slot_name = current_database() AND active_pid IS NOT NULL");
    }
    int dups;
    expect_keys(p, 1, 300, &dups);
    cr_assert(it_proc_running(p), "crwatch died with its walsender");
    cr_assert(it_proc_stderr_wait(p, "reconnecting", 1000), "the reconnect was not logged");
    cr_assert_eq(it_proc_signal_wait(p, SIGTERM, 10000), 0);
    it_proc_free(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(stream, streamed_large_transactions_commit_whole_and_abort_without_trace) {
    char db[64];
    PGconn *c = it_db_create("streamed", db, sizeof db);
    /* Make the walsender stream transactions past 64 kB instead of spilling. */
    it_exec(c, "ALTER DATABASE %s SET logical_decoding_work_mem = '64kB'", db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, pad text)");
    it_proc_t *p = start_stream(db, "public.t", NULL);
    it_exec(c, "BEGIN; INSERT INTO t SELECT g, repeat('a', 100) FROM generate_series(1, 5000) g; ROLLBACK");
    it_exec(c, "BEGIN; INSERT INTO t SELECT g, repeat('b', 100) FROM generate_series(10001, 12000) g;"
               "SAVEPOINT s; INSERT INTO t SELECT g, 'gone' FROM generate_series(20001, 22000) g;"
               "ROLLBACK TO s; INSERT INTO t SELECT g, 'c' FROM generate_series(30001, 32000) g; COMMIT");
    it_exec(c, "INSERT INTO t VALUES (99999, 'marker')");
    int count = 0;
    for (;;) {
        json_object *ev = it_proc_read_event(p, EV_TIMEOUT);
        cr_assert(ev, "stream ended after %d events", count);
        int k = atoi(it_json_str(ev, "subject"));
        json_object_put(ev);
        if (k == 99999)
            break;
        cr_assert((k >= 10001 && k <= 12000) || (k >= 30001 && k <= 32000), "key %d should not exist", k);
        count++;
    }
    cr_assert_eq(count, 4000);
    char *streamed = it_query_value(c, "SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = current_database()");
    cr_assert(streamed && atoi(streamed) >= 2, "transactions were not streamed (stream_txns=%s)", streamed);
    free(streamed);
    cr_assert_eq(it_proc_signal_wait(p, SIGTERM, 10000), 0);
    it_proc_free(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(stream, column_added_mid_stream_just_works) {
    char db[64];
    PGconn *c = it_db_create("ddl", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    it_proc_t *p = start_stream(db, "public.t", NULL);
    it_exec(c, "INSERT INTO t VALUES (1)");
    it_exec(c, "ALTER TABLE t ADD COLUMN phase text DEFAULT 'new'");
    it_exec(c, "INSERT INTO t VALUES (2, 'two')");
    json_object *a = it_proc_expect_event(p, EV_TIMEOUT);
    cr_assert_not(it_json_exists(a, "data.object.phase"));
    json_object *b = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(b, "data.object.phase", "two");
    json_object_put(a);
    json_object_put(b);
    cr_assert_eq(it_proc_signal_wait(p, SIGTERM, 10000), 0);
    it_proc_free(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(stream, endpos_stops_after_confirming) {
    char db[64];
    PGconn *c = it_db_create("endpos", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    it_exec(c, "SELECT pg_create_logical_replication_slot(current_database(), 'pgoutput')");
    it_exec(c, "CREATE PUBLICATION crwatch FOR TABLE t");
    it_exec(c, "INSERT INTO t SELECT generate_series(1, 10)");
    char *endpos = it_query_value(c, "SELECT pg_current_wal_lsn()");
    it_exec(c, "INSERT INTO t VALUES (11)"); /* after endpos: not delivered */
    char *out = NULL, *err = NULL;
    char slot[128];
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    const char *args[] = {"stream", "-X", "tables=public.t", "-X", slot, "--endpos", endpos, NULL};
    int rc = it_run_crwatch(db, args, 30000, &out, &err);
    cr_assert_eq(rc, 0, "exit %d: %s", rc, err);
    int lines = 0;
    for (char *s = out; (s = strchr(s, '\n')); s++)
        lines++;
    cr_assert_eq(lines, 10, "want 10 events before endpos, got %d:\n%s", lines, out);
    char *ok = it_query_value(c, "SELECT confirmed_flush_lsn >= '%s'::pg_lsn FROM pg_replication_slots "
                                 "WHERE slot_name = current_database()", endpos);
    cr_assert_str_eq(ok, "t", "slot not confirmed up to endpos");
    free(ok);
    free(out);
    free(err);
    free(endpos);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(stream, bad_configuration_exits_2_before_touching_the_slot) {
    char db[64];
    PGconn *c = it_db_create("badconf", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    static const char *const cases[][3] = {
        {"tables=public.t", "no.such.key=1", "no.such.key"},
        {"tables=public.t", "slot.create=perhaps", "slot.create"},
        {"tables=public.t", "sink=stdout,nowhere", "nowhere"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[] = {"stream", "-X", cases[i][0], "-X", cases[i][1], NULL};
        char *err = NULL;
        int rc = it_run_crwatch(db, args, 10000, NULL, &err);
        cr_assert_eq(rc, 2, "%s: exit %d", cases[i][1], rc);
        cr_assert(strstr(err, cases[i][2]), "error does not name %s: %s", cases[i][2], err);
        free(err);
    }
    char *slots = it_query_value(c, "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()");
    char *pubs = it_query_value(c, "SELECT count(*) FROM pg_publication");
    cr_assert_str_eq(slots, "0");
    cr_assert_str_eq(pubs, "0");
    free(slots);
    free(pubs);

    /* A watched table that does not exist is a missing prerequisite: exit 3. */
    const char *args[] = {"stream", "-X", "tables=public.nope", NULL};
    char *err = NULL;
    int rc = it_run_crwatch(db, args, 10000, NULL, &err);
    cr_assert_eq(rc, 3, "exit %d: %s", rc, err);
    cr_assert(strstr(err, "public.nope"), "%s", err);
    free(err);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(stream, slot_held_by_another_process_is_waited_for) {
    char db[64], dbarg[128];
    PGconn *c = it_db_create("busy", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    it_exec(c, "CREATE PUBLICATION crwatch FOR TABLE t");
    it_exec(c, "SELECT pg_create_logical_replication_slot(current_database(), 'pgoutput')");
    /* A predecessor still holds the slot. */
    snprintf(dbarg, sizeof dbarg, "dbname=%s", db);
    const char *holder_argv[] = {"pg_recvlogical", "-d", dbarg, "--slot", db, "--start", "-f", "/dev/null",
                                 "-o", "proto_version=1", "-o", "publication_names=crwatch", "--no-loop", NULL};
    it_proc_t *holder = it_proc_spawn("/usr/bin/pg_recvlogical", holder_argv);
    cr_assert(it_wait_sql_true(c, 10000, "SELECT active FROM pg_replication_slots WHERE slot_name = current_database()"),
              "pg_recvlogical did not take the slot");
    char slot[128];
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    const char *args[] = {"stream", "-X", "tables=public.t", "-X", slot, NULL};
    it_proc_t *p = it_crwatch_start(db, args);
    cr_assert(it_proc_stderr_wait(p, "is active for PID", 10000), "busy slot not reported");
    cr_assert(it_proc_stderr_wait(p, "retrying in", 1000));
    cr_assert(it_proc_running(p), "a busy slot must not stop crwatch");
    it_proc_signal_wait(holder, SIGTERM, 10000);
    it_proc_free(holder);
    cr_assert(it_proc_stderr_wait(p, "streaming from slot", 40000), "crwatch never took the slot over");
    it_exec(c, "INSERT INTO t VALUES (7)");
    json_object *ev = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(ev, "subject", "7");
    json_object_put(ev);
    cr_assert_eq(it_proc_signal_wait(p, SIGTERM, 10000), 0);
    it_proc_free(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(stream, check_and_slot_commands) {
    char db[64], slot[128];
    PGconn *c = it_db_create("admin", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    char *out = NULL;
    const char *check[] = {"check", "-X", "tables=public.t", "-X", slot, NULL};
    cr_assert_eq(it_run_crwatch(db, check, 20000, &out, NULL), 0);
    cr_assert(strstr(out, "ok    table public.t") && strstr(out, "warn  slot"), "%s", out);
    free(out);
    char *slots = it_query_value(c, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = current_database()");
    cr_assert_str_eq(slots, "0", "check must change nothing");
    free(slots);

    const char *bad[] = {"check", "-X", "tables=public.missing", "-X", slot, NULL};
    cr_assert_eq(it_run_crwatch(db, bad, 20000, &out, NULL), 3);
    cr_assert(strstr(out, "FAIL") && strstr(out, "public.missing"), "%s", out);
    free(out);

    const char *create[] = {"slot", "create", "-X", "tables=public.t", "-X", slot, NULL};
    cr_assert_eq(it_run_crwatch(db, create, 20000, &out, NULL), 0);
    free(out);
    const char *status[] = {"slot", "status", "-X", slot, NULL};
    cr_assert_eq(it_run_crwatch(db, status, 20000, &out, NULL), 0);
    json_object *st = json_tokener_parse(out);
    cr_assert(st, "status is not JSON: %s", out);
    it_expect_str(st, "plugin", "pgoutput");
    it_expect_str(st, "slot", db);
    json_object_put(st);
    free(out);
    /* The slot created this way streams: its publication came first. */
    it_exec(c, "INSERT INTO t VALUES (1)");
    char *endpos = it_query_value(c, "SELECT pg_current_wal_lsn()");
    const char *stream[] = {"stream", "-X", "tables=public.t", "-X", slot, "--endpos", endpos, NULL};
    cr_assert_eq(it_run_crwatch(db, stream, 20000, &out, NULL), 0);
    cr_assert(strstr(out, "\"subject\":\"1\""), "%s", out);
    free(out);
    free(endpos);
    const char *drop[] = {"slot", "drop", "-X", slot, NULL};
    cr_assert_eq(it_run_crwatch(db, drop, 20000, NULL, NULL), 0);
    cr_assert_eq(it_run_crwatch(db, status, 20000, NULL, NULL), 3, "status of a dropped slot must exit 3");
    PQfinish(c);
    it_db_drop(NULL, db);
}
