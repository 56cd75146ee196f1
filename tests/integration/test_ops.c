/*
 * test_ops.c — slot safety and operations (docs/operations.md) against a
 * real PostgreSQL: the operations endpoint read with curl (/metrics checked
 * by promtool, /healthz, /readyz), the heartbeat keeping an idle slot's WAL
 * down and finding a stalled walsender, a slot dropped or recreated while
 * crwatch was away (exit 3 naming the gap, or slot.lost=resync), an
 * invalidated slot, `crwatch check`'s report, two instances on one slot
 * (standby, take-over after kill -9), log.format=json.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "prom_sample.h"
#include "support/itest.h"

#define EV_TIMEOUT 15000

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The port crwatch's operations endpoint listens on (http.listen=127.0.0.1:0: it logs the one it got). */
static int ops_port(it_proc_t *p) {
    const char *needle = "/healthz and /readyz on 127.0.0.1:";
    cr_assert(it_proc_stderr_wait(p, needle, EV_TIMEOUT), "no operations endpoint");
    char *err = it_proc_stderr(p);
    int port = atoi(strstr(err, needle) + strlen(needle));
    free(err);
    cr_assert(port > 0);
    return port;
}

/* GET path with curl: the status code, and the body in *body (malloc'd) when body is not NULL. */
static int http_get(int port, const char *path, char **body) {
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    const char *const argv[] = {"curl", "-s", "-m", "5", "-w", "\n%{http_code}", url, NULL};
    char *out = NULL;
    int rc = it_run("/usr/bin/curl", argv, 10000, &out, NULL);
    cr_assert_eq(rc, 0, "curl %s exited %d", url, rc);
    char *nl = strrchr(out, '\n');
    cr_assert(nl, "curl %s: %s", url, out);
    int code = atoi(nl + 1);
    *nl = '\0';
    if (body)
        *body = out;
    else
        free(out);
    return code;
}

static void read_n(it_proc_t *p, int n) {
    for (int i = 0; i < n; i++)
        json_object_put(it_proc_expect_event(p, EV_TIMEOUT));
}

Test(ops, metrics_count_what_was_emitted_and_promtool_accepts_them, .timeout = 120) {
    char db[64];
    PGconn *c = it_db_create("opsm", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE u (id int PRIMARY KEY)");
    const char *const base[] = {"tables=public.t,public.u", "http.listen=127.0.0.1:0", "status.interval.ms=500", NULL};
    it_proc_t *p = it_crwatch_stream(db, base, NULL);
    int port = ops_port(p);
    it_exec(c, "INSERT INTO t SELECT g, 'v' FROM generate_series(1, 5) g");
    it_exec(c, "UPDATE t SET v = 'w' WHERE id <= 2");
    it_exec(c, "DELETE FROM t WHERE id = 5");
    it_exec(c, "INSERT INTO u VALUES (1), (2), (3)");
    read_n(p, 11);
    cr_assert(it_proc_no_line_within(p, 300), "more events than written");

    char *page = NULL;
    /* The acknowledgements land a moment after the events: wait for the last transaction's. */
    int64_t until = now_ms() + 5000;
    for (;;) {
        cr_assert_eq(http_get(port, "/metrics", &page), 200);
        if (prom_sample(page, "crwatch_commit_to_ack_seconds_count") >= 4 || now_ms() > until)
            break;
        free(page);
        usleep(100 * 1000);
    }
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"t\",type=\"ADDED\"}"), 5, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"t\",type=\"MODIFIED\"}"), 2, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"t\",type=\"DELETED\"}"), 1, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"u\",type=\"ADDED\"}"), 3, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_transactions_total"), 4, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_commit_to_ack_seconds_count"), 4, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_commit_to_ack_seconds_bucket{le=\"+Inf\"}"), 4, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_active"), 1, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_queue_events"), 0, "%s", page);
    cr_expect(prom_sample(page, "crwatch_confirmed_position") > 0, "%s", page);
    cr_expect(prom_sample(page, "crwatch_source_position") >= prom_sample(page, "crwatch_confirmed_position"), "%s", page);
    cr_expect(prom_sample(page, "crwatch_slot_retained_wal_bytes") >= 0, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_slot_wal_status{status=\"reserved\"}"), 1, "%s", page);
    free(page);

    /* promtool (Debian's prometheus package) accepts the page, and refuses a broken one. */
    char sh[256];
    snprintf(sh, sizeof sh, "curl -s http://127.0.0.1:%d/metrics | promtool check metrics", port);
    char *out = NULL, *err = NULL;
    int rc = it_run("/bin/sh", (const char *const[]){"sh", "-c", sh, NULL}, 30000, &out, &err);
    cr_expect_eq(rc, 0, "promtool: %s%s", out, err);
    free(out);
    free(err);
    rc = it_run("/bin/sh", (const char *const[]){"sh", "-c", "printf 'x_total{a=\"1\" 1\\n' | promtool check metrics", NULL},
                30000, NULL, NULL);
    cr_expect_neq(rc, 0, "promtool accepts anything");

    cr_expect_eq(http_get(port, "/healthz", NULL), 200);
    cr_expect_eq(http_get(port, "/readyz", NULL), 200);
    cr_expect_eq(http_get(port, "/nothing", NULL), 404);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(ops, retries_and_dead_letters_are_counted, .timeout = 120) {
    char db[64], dl[128], dlset[160];
    PGconn *c = it_db_create("opsd", db, sizeof db);
    snprintf(dl, sizeof dl, "/tmp/crw-it-%s.deadletter.jsonl", db);
    snprintf(dlset, sizeof dlset, "deadletter.file=%s", dl);
    unlink(dl);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    /* Every delivery asks for a retry (exit 75): retry.max=2 retries each, then dead-letters it. */
    const char *const base[] = {"tables=public.t", "http.listen=127.0.0.1:0", "sink=exec", "exec.mode=per-event",
                                "exec.command=exit 75", "retry.max=2", "retry.backoff.initial.ms=10", dlset, NULL};
    it_proc_t *p = it_crwatch_stream(db, base, NULL);
    int port = ops_port(p);
    it_exec(c, "INSERT INTO t VALUES (1), (2)");
    char *page = NULL;
    int64_t until = now_ms() + 15000;
    for (;;) {
        cr_assert_eq(http_get(port, "/metrics", &page), 200);
        if (prom_sample(page, "crwatch_deadletter_total") >= 2 || now_ms() > until)
            break;
        free(page);
        usleep(100 * 1000);
    }
    cr_expect_eq(prom_sample(page, "crwatch_retries_total"), 4, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_deadletter_total"), 2, "%s", page);
    free(page);
    it_crwatch_stop(p, 10000);
    unlink(dl);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(ops, readyz_flips_on_stop, .timeout = 120) {
    char db[64];
    PGconn *c = it_db_create("opsr", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    /* Each event's handler takes 3 s: the drain at stop lasts a while. */
    const char *const base[] = {"tables=public.t", "http.listen=127.0.0.1:0", "sink=exec", "exec.mode=per-event",
                                "exec.command=sleep 3", NULL};
    it_proc_t *p = it_crwatch_stream(db, base, NULL);
    int port = ops_port(p);
    cr_expect_eq(http_get(port, "/readyz", NULL), 200);
    it_exec(c, "INSERT INTO t VALUES (1)");
    usleep(500 * 1000); /* the handler runs */
    kill(it_proc_pid(p), SIGTERM);
    usleep(1000 * 1000);
    cr_expect_eq(http_get(port, "/readyz", NULL), 503, "ready while stopping");
    cr_expect_eq(http_get(port, "/healthz", NULL), 200, "draining is working");
    cr_assert_eq(it_proc_wait(p, 20000), 0);
    it_proc_free(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(ops, healthz_is_503_while_the_main_loop_is_stuck, .timeout = 120) {
    char db[64];
    PGconn *c = it_db_create("opsh", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    const char *const base[] = {"tables=public.t", "http.listen=127.0.0.1:0", "health.timeout.ms=1000", NULL};
    it_proc_t *p = it_crwatch_stream(db, base, NULL);
    int port = ops_port(p);
    it_exec(c, "INSERT INTO t VALUES (1)");
    read_n(p, 1);
    cr_expect_eq(http_get(port, "/healthz", NULL), 200);
    /* The catalog session's backend stops: the next new relation's look-up waits on it, inside the loop. */
    char *pid = it_query_value(c,
                               "SELECT pid FROM pg_stat_activity WHERE datname = '%s' AND application_name = 'crwatch' "
                               "AND backend_type = 'client backend' AND pid NOT IN (SELECT pid FROM pg_locks WHERE "
                               "locktype = 'advisory')",
                               db);
    cr_assert(pid, "no catalog session");
    cr_assert_eq(kill(atoi(pid), SIGSTOP), 0);
    it_exec(c, "ALTER TABLE t ADD COLUMN v text");
    it_exec(c, "INSERT INTO t VALUES (2, 'x')");
    usleep(2500 * 1000);
    char *body = NULL;
    int code = http_get(port, "/healthz", &body);
    kill(atoi(pid), SIGCONT);
    cr_expect_eq(code, 503, "healthy while stuck: %s", body);
    cr_expect(strstr(body, "stuck"), "%s", body);
    free(body);
    json_object *ev = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(ev, "data.key", "2");
    json_object_put(ev);
    int again = 0; /* the loop beats when it is round again: soon after the event */
    for (int64_t until = now_ms() + 3000; (again = http_get(port, "/healthz", NULL)) != 200 && now_ms() < until;)
        usleep(50 * 1000);
    cr_expect_eq(again, 200, "healthy again");
    free(pid);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(ops, bad_operations_settings_exit_2_before_connecting) {
    struct {
        const char *set, *want;
    } cases[] = {
        {"http.listen=localhost", "http.listen"},
        {"http.listen=127.0.0.1:99999", "http.listen"},
        {"slot.lost=maybe", "slot.lost"},
        {"slot.max.retained.bytes=1TBB", "slot.max.retained.bytes"},
        {"log.format=xml", "log.format"},
        {"heartbeat.interval.ms=-1", "heartbeat.interval.ms"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[] = {"stream", "-X", "tables=public.t", "-X", cases[i].set, NULL};
        char *err = NULL;
        int rc = it_run_crwatch("nonexistent_db_never_reached", args, 10000, NULL, &err);
        cr_expect_eq(rc, 2, "%s: exit %d: %s", cases[i].set, rc, err);
        cr_expect(strstr(err, cases[i].want), "%s: %s", cases[i].set, err);
        free(err);
    }
    const char *args[] = {"stream", "-X", "tables=public.t", "-X", "slot.lost=resync", NULL};
    char *err = NULL;
    cr_expect_eq(it_run_crwatch("nonexistent_db_never_reached", args, 10000, NULL, &err), 2);
    cr_expect(strstr(err, "resync.from"), "%s", err);
    free(err);
}

Test(ops, log_format_json_gives_one_object_per_line, .timeout = 60) {
    char db[64];
    PGconn *c = it_db_create("opsl", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    char slot[128];
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    const char *args[] = {"stream", "-X", "tables=public.t", "-X", "log.format=json", "-X", slot, NULL};
    it_proc_t *p = it_crwatch_start(db, args);
    cr_assert(it_proc_stderr_wait(p, "\"msg\":\"streaming from slot", EV_TIMEOUT), "no JSON streaming line");
    it_exec(c, "INSERT INTO t VALUES (1)");
    read_n(p, 1);
    char *err = it_proc_stderr(p);
    int lines = 0;
    for (char *l = strtok(err, "\n"); l; l = strtok(NULL, "\n"), lines++) {
        json_object *o = json_tokener_parse(l);
        cr_assert(o, "not JSON: %s", l);
        cr_expect(it_json_str(o, "ts") && it_json_str(o, "level") && it_json_str(o, "msg"), "%s", l);
        it_expect_str(o, "slot", db);
        json_object_put(o);
    }
    cr_expect(lines >= 2, "%d lines", lines);
    free(err);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* ---- slot safety --------------------------------------------------------------------------------- */

/* A database with sql/crwatch.sql (crwatch.offsets keeps the stored position) and table t. */
static PGconn *safety_db(const char *prefix, char *db, size_t n) {
    PGconn *c = it_db_create(prefix, db, n);
    it_apply_sql(db, "sql/crwatch.sql");
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    return c;
}

/* Streams rows 1..3, and stops: crwatch.offsets holds what was confirmed. */
static void stream_some(PGconn *c, const char *db, const char *view) {
    const char *const base[] = {"tables=public.t", "status.interval.ms=200", NULL};
    it_proc_t *p = it_crwatch_stream(db, base, NULL);
    it_exec(c, "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')");
    FILE *f = view ? fopen(view, "w") : NULL;
    for (int i = 0; i < 3; i++) {
        char *line = it_proc_read_line(p, EV_TIMEOUT);
        cr_assert(line, "event %d", i + 1);
        if (f)
            fprintf(f, "%s\n", line);
        free(line);
    }
    if (f)
        fclose(f);
    it_crwatch_stop(p, 10000);
    char *stored = it_query_value(c, "SELECT position FROM crwatch.offsets WHERE name = 'logical:%s'", db);
    cr_assert(stored, "nothing stored in crwatch.offsets");
    char *flushed =
        it_query_value(c, "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = '%s'", db);
    cr_expect(strtoull(stored, NULL, 10) >= strtoull(flushed, NULL, 10), "stored %s behind the slot's %s", stored,
              flushed);
    free(stored);
    free(flushed);
}

/* `crwatch stream` that must exit 3 at once, printing no event; its stderr. */
static char *stream_exit_3(const char *db) {
    char slot[128];
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    const char *args[] = {"stream", "-X", "tables=public.t", "-X", slot, NULL};
    char *out = NULL, *err = NULL;
    int rc = it_run_crwatch(db, args, 30000, &out, &err);
    cr_expect_eq(rc, 3, "exit %d: %s", rc, err);
    cr_expect_str_eq(out, "", "events were streamed over the gap");
    free(out);
    return err;
}

Test(slot, recreated_by_hand_exits_3_naming_the_gap, .timeout = 120) {
    char db[64];
    PGconn *c = safety_db("slotre", db, sizeof db);
    stream_some(c, db, NULL);
    char *before = it_query_value(c, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '%s'", db);
    it_exec(c, "SELECT pg_drop_replication_slot('%s')", db);
    it_exec(c, "INSERT INTO t VALUES (4, 'lost'), (5, 'lost')");
    char *after = it_query_value(c, "SELECT lsn FROM pg_create_logical_replication_slot('%s', 'pgoutput')", db);
    char *err = stream_exit_3(db);
    cr_expect(strstr(err, "dropped and created again"), "%s", err);
    cr_expect(strstr(err, after), "the gap's end %s: %s", after, err);
    cr_expect(strstr(err, "slot.lost=resync"), "the fix: %s", err);
    /* crwatch check says the same, and the slot was left as it was. */
    char slot[128];
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    const char *chk[] = {"check", "-X", "tables=public.t", "-X", slot, NULL};
    char *out = NULL;
    cr_expect_eq(it_run_crwatch(db, chk, 30000, &out, NULL), 3);
    cr_expect(strstr(out, "FAIL  slot") && strstr(out, "dropped and created again"), "%s", out);
    free(out);
    free(err);
    free(before);
    free(after);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(slot, dropped_exits_3_and_slot_drop_starts_over, .timeout = 120) {
    char db[64];
    PGconn *c = safety_db("slotdr", db, sizeof db);
    stream_some(c, db, NULL);
    it_exec(c, "SELECT pg_drop_replication_slot('%s')", db);
    it_exec(c, "INSERT INTO t VALUES (4, 'lost')");
    char *err = stream_exit_3(db);
    cr_expect(strstr(err, "is gone"), "%s", err);
    free(err);
    /* `crwatch slot drop` forgets the stored position: the next start is a first start. */
    char slot[128];
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    const char *drop[] = {"slot", "drop", "-X", "tables=public.t", "-X", slot, NULL};
    char *out = NULL;
    cr_expect_eq(it_run_crwatch(db, drop, 30000, &out, NULL), 0);
    cr_expect(strstr(out, "\"forgotten\":true"), "%s", out);
    free(out);
    const char *const base[] = {"tables=public.t", NULL};
    it_proc_t *p = it_crwatch_stream(db, base, NULL);
    it_exec(c, "INSERT INTO t VALUES (6, 'new')");
    json_object *ev = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(ev, "data.key", "6");
    json_object_put(ev);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(slot, lost_resync_corrects_the_sinks_and_goes_on, .timeout = 120) {
    char db[64], view[128];
    PGconn *c = safety_db("slotrs", db, sizeof db);
    snprintf(view, sizeof view, "/tmp/crw-it-%s.jsonl", db);
    stream_some(c, db, view);
    it_exec(c, "SELECT pg_drop_replication_slot('%s')", db);
    it_exec(c, "INSERT INTO t VALUES (4, 'gap')");
    it_exec(c, "UPDATE t SET v = 'gap' WHERE id = 1");
    it_exec(c, "DELETE FROM t WHERE id = 2");
    it_exec(c, "SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", db);
    char from[200];
    snprintf(from, sizeof from, "resync.from=%s", view);
    const char *const base[] = {"tables=public.t", "slot.lost=resync", from, NULL};
    it_proc_t *p = it_crwatch_stream(db, base, NULL);
    /* The corrections (in the order the table is read, deletions last), then the stream goes on. */
    char got[128] = "";
    for (int i = 0; i < 3; i++) {
        json_object *ev = it_proc_expect_event(p, EV_TIMEOUT);
        size_t l = strlen(got);
        snprintf(got + l, sizeof got - l, "%s:%s ", it_json_str(ev, "data.key"), it_json_str(ev, "data.type"));
        json_object_put(ev);
    }
    cr_expect(strstr(got, "1:MODIFIED") && strstr(got, "2:DELETED") && strstr(got, "4:ADDED"), "%s", got);
    it_exec(c, "INSERT INTO t VALUES (7, 'after')");
    json_object *ev = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(ev, "data.key", "7");
    json_object_put(ev);
    char *err = it_proc_stderr(p);
    cr_expect(strstr(err, "dropped and created again"), "%s", err);
    free(err);
    it_crwatch_stop(p, 10000);
    /* Accepted: the next start streams without a word about a gap. */
    p = it_crwatch_stream(db, (const char *const[]){"tables=public.t", NULL}, NULL);
    it_exec(c, "INSERT INTO t VALUES (8, 'later')");
    ev = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(ev, "data.key", "8");
    json_object_put(ev);
    it_crwatch_stop(p, 10000);
    unlink(view);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(slot, invalidated_wal_status_lost_exits_3, .timeout = 180) {
    char db[64];
    PGconn *c = safety_db("slotwl", db, sizeof db);
    stream_some(c, db, NULL);
    it_exec(c, "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'");
    it_exec(c, "SELECT pg_reload_conf()");
    /* Enough WAL past the slot, and a checkpoint: the slot's WAL is removed. */
    for (int i = 0; i < 4; i++)
        it_exec(c, "INSERT INTO t VALUES (%d, 'x'); SELECT pg_switch_wal()", 100 + i);
    it_exec(c, "CHECKPOINT");
    bool lost = it_wait_sql_true(c, 20000, "SELECT wal_status = 'lost' FROM pg_replication_slots WHERE slot_name = '%s'", db);
    it_exec(c, "ALTER SYSTEM RESET max_slot_wal_keep_size");
    it_exec(c, "SELECT pg_reload_conf()");
    cr_assert(lost, "the slot was not invalidated");
    char *err = stream_exit_3(db);
    cr_expect(strstr(err, "wal_status lost"), "%s", err);
    free(err);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(slot, check_reports_stored_position_retained_wal_and_heartbeat, .timeout = 60) {
    char db[64];
    PGconn *c = safety_db("slotck", db, sizeof db);
    stream_some(c, db, NULL);
    char slot[128];
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    const char *chk[] = {"check", "-X", "tables=public.t", "-X", slot, NULL};
    char *out = NULL;
    cr_expect_eq(it_run_crwatch(db, chk, 30000, &out, NULL), 0);
    cr_expect(strstr(out, "ok    stored position: crwatch last confirmed"), "%s", out);
    cr_expect(strstr(out, "ok    retained WAL:") && strstr(out, "wal_status reserved"), "%s", out);
    cr_expect(strstr(out, "ok    heartbeat: a transactional pg_logical_emit_message"), "%s", out);
    free(out);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* ---- heartbeat ----------------------------------------------------------------------------------- */

Test(heartbeat, idle_watched_table_busy_other_keeps_retained_wal_down, .timeout = 180) {
    char db[64];
    PGconn *c = it_db_create("hbwal", db, sizeof db);
    it_exec(c, "CREATE TABLE watched (id int PRIMARY KEY); CREATE TABLE busy (id serial PRIMARY KEY, pad text)");
    const char *const base[] = {"tables=public.watched", "http.listen=127.0.0.1:0", "heartbeat.interval.ms=2000",
                                "status.interval.ms=1000", NULL};
    it_proc_t *p = it_crwatch_stream(db, base, NULL);
    int port = ops_port(p);
    /* 25 s of inserts into a table crwatch does not watch. */
    int64_t until = now_ms() + 25000;
    while (now_ms() < until)
        it_exec(c, "INSERT INTO busy (pad) SELECT repeat('x', 200) FROM generate_series(1, 2000)");
    char *total = it_query_value(c, "SELECT pg_size_pretty(pg_current_wal_lsn() - '0/0')");
    /* Within 25 s of the load, the slot holds less than 16 MiB of WAL. */
    bool low = it_wait_sql_true(c, 25000,
                                "SELECT pg_current_wal_lsn() - restart_lsn < 16 * 1024 * 1024 FROM "
                                "pg_replication_slots WHERE slot_name = '%s'",
                                db);
    char *retained = it_query_value(
        c, "SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots WHERE slot_name = '%s'", db);
    cr_expect(low, "the slot retains %s bytes of WAL (the server wrote %s in all)", retained, total);
    char *page = NULL;
    cr_assert_eq(http_get(port, "/metrics", &page), 200);
    cr_expect(prom_sample(page, "crwatch_heartbeats_total") >= 1, "%s", page);
    cr_expect(prom_sample(page, "crwatch_source_lag_seconds") > 0, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"watched\",type=\"ADDED\"}"), -1, "no event: %s", page);
    free(page);
    free(total);
    free(retained);
    cr_expect(it_proc_no_line_within(p, 100), "an event for an unwatched table");
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(heartbeat, stopped_walsender_is_detected_and_the_stream_recovers, .timeout = 120) {
    char db[64];
    PGconn *c = it_db_create("hbst", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    const char *const base[] = {"tables=public.t", "http.listen=127.0.0.1:0", "heartbeat.interval.ms=500",
                                "heartbeat.timeout.ms=2000", NULL};
    it_proc_t *p = it_crwatch_stream(db, base, NULL);
    int port = ops_port(p);
    it_exec(c, "INSERT INTO t VALUES (1)");
    read_n(p, 1);
    char *pid = it_query_value(c, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '%s'", db);
    cr_assert(pid);
    /* The walsender stops sending (its backend stopped) for three times the liveness bound. */
    cr_assert_eq(kill(atoi(pid), SIGSTOP), 0);
    bool seen = it_proc_stderr_wait(p, "replication stalled", 10000);
    usleep(4000 * 1000);
    kill(atoi(pid), SIGCONT);
    cr_assert(seen, "the stall was not noticed");
    char *page = NULL;
    cr_expect_eq(http_get(port, "/metrics", &page), 200);
    cr_expect(prom_sample(page, "crwatch_stalls_total") >= 1, "%s", page);
    free(page);
    it_exec(c, "INSERT INTO t VALUES (2)");
    json_object *ev = it_proc_expect_event(p, 30000);
    it_expect_str(ev, "data.key", "2");
    json_object_put(ev);
    free(pid);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* ---- high availability --------------------------------------------------------------------------- */

/* The keys of every event line in text, as a set over [0, n). */
static void mark_keys(const char *text, bool *seen, int n) {
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *k = strstr(l, "\"subject\":\"");
        const char *nl = strchr(l, '\n');
        if (k && (!nl || k < nl)) {
            int key = atoi(k + 11);
            if (key >= 0 && key < n)
                seen[key] = true;
        }
    }
}

Test(ha, standby_takes_over_within_10s_of_a_kill_and_nothing_is_lost, .timeout = 180) {
    char db[64];
    PGconn *c = it_db_create("haover", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    const char *const base[] = {"tables=public.t", "http.listen=127.0.0.1:0", NULL};
    it_proc_t *a = it_crwatch_stream(db, base, NULL);
    int aport = ops_port(a);
    char slot[128];
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    const char *bargs[] = {"stream", "-X", "tables=public.t", "-X", "http.listen=127.0.0.1:0", "-X", slot, NULL};
    it_proc_t *b = it_crwatch_start(db, bargs);
    cr_assert(it_proc_stderr_wait(b, "standing by", EV_TIMEOUT), "the second instance does not stand by");
    int bport = ops_port(b);
    cr_expect_eq(http_get(aport, "/readyz", NULL), 200);
    cr_expect_eq(http_get(bport, "/readyz", NULL), 503, "a standby is not ready");
    cr_expect_eq(http_get(bport, "/healthz", NULL), 200, "a standby is healthy");
    char *page = NULL;
    cr_expect_eq(http_get(bport, "/metrics", &page), 200);
    cr_expect_eq(prom_sample(page, "crwatch_active"), 0, "%s", page);
    free(page);

    /* A load: rows keep coming while the active one is killed. */
    enum { N = 400 };
    bool seen[N] = {false};
    int next = 0;
    for (; next < 100; next++)
        it_exec(c, "INSERT INTO t VALUES (%d)", next);
    for (int i = 0; i < 100; i++) {
        char *line = it_proc_read_line(a, EV_TIMEOUT);
        cr_assert(line, "active: event %d", i);
        mark_keys(line, seen, N);
        free(line);
    }
    kill(it_proc_pid(a), SIGKILL);
    int64_t killed = now_ms();
    for (; next < 200; next++)
        it_exec(c, "INSERT INTO t VALUES (%d)", next);
    cr_assert(it_proc_stderr_wait(b, "this instance is the active one now", 15000), "no take-over");
    int64_t took = now_ms() - killed;
    cr_expect(took < 10000, "took over after %lld ms", (long long)took);
    for (; next < N; next++)
        it_exec(c, "INSERT INTO t VALUES (%d)", next);
    int missing = N;
    int64_t until = now_ms() + 30000;
    while (missing > 0 && now_ms() < until) {
        char *line = it_proc_read_line(b, 1000);
        if (line) {
            mark_keys(line, seen, N);
            free(line);
        }
        missing = 0;
        for (int i = 0; i < N; i++)
            missing += !seen[i];
    }
    cr_expect_eq(missing, 0, "%d rows never arrived", missing);
    /* B streamed only after A died: it said nothing of streaming before the take-over line. */
    char *berr = it_proc_stderr(b);
    const char *streaming = strstr(berr, "streaming from slot"), *active = strstr(berr, "active one now");
    cr_expect(streaming && active && streaming > strstr(berr, "standing by"), "%s", berr);
    free(berr);
    cr_expect_eq(http_get(bport, "/readyz", NULL), 200);
    it_proc_free(a);
    it_crwatch_stop(b, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(heartbeat, the_least_privilege_role_heartbeats_and_keeps_its_position, .timeout = 120) {
    char db[64], role[80];
    PGconn *c = safety_db("hbrole", db, sizeof db);
    snprintf(role, sizeof role, "%s_crw", db);
    it_exec(c, "DROP ROLE IF EXISTS %s", role);
    it_exec(c, "SELECT crwatch.create_role('%s', 'public.t')", role);
    it_exec(c, "CREATE PUBLICATION %s FOR TABLE t", db); /* the owner's: the role may not create it */
    char conninfo[256], slot[96], pub[96];
    snprintf(conninfo, sizeof conninfo, "dbname=%s user=%s", db, role);
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    snprintf(pub, sizeof pub, "publication.name=%s", db);
    const char *args[] = {"stream",  "-X", "tables=public.t",         "-X", slot, "-X", pub, "-X",
                          "publication.create=false", "-X", "heartbeat.interval.ms=300", "-X",
                          "http.listen=127.0.0.1:0",  "-d", conninfo, NULL};
    it_proc_t *p = it_crwatch_start(NULL, args);
    cr_assert(it_proc_stderr_wait(p, "INFO: streaming from slot", EV_TIMEOUT), "crwatch did not stream as %s", role);
    int port = ops_port(p);
    it_exec(c, "INSERT INTO t VALUES (1, 'a')");
    read_n(p, 1);
    char *page = NULL;
    int64_t until = now_ms() + 10000;
    for (;;) {
        cr_assert_eq(http_get(port, "/metrics", &page), 200);
        if (prom_sample(page, "crwatch_heartbeats_total") >= 2 || now_ms() > until)
            break;
        free(page);
        usleep(100 * 1000);
    }
    cr_expect(prom_sample(page, "crwatch_heartbeats_total") >= 2, "%s", page);
    cr_expect(prom_sample(page, "crwatch_source_lag_seconds") > 0, "%s", page);
    free(page);
    char *err = it_proc_stderr(p);
    cr_expect(!strstr(err, "WARN"), "%s", err);
    free(err);
    it_crwatch_stop(p, 10000);
    char *owner = it_query_value(c, "SELECT owner FROM crwatch.offsets WHERE name = 'logical:%s'", db);
    cr_expect(owner && !strcmp(owner, role), "the stored position's owner: %s", owner ? owner : "none");
    free(owner);
    PQfinish(c);
    it_db_drop(NULL, db);
    PGconn *admin = it_connect(NULL);
    it_exec(admin, "DROP ROLE IF EXISTS %s", role);
    PQfinish(admin);
}

/* The cluster's synchronous_standby_names back to none, whatever the test did. */
static void no_sync_standby(void) {
    PGconn *admin = it_connect(NULL);
    PQclear(PQexec(admin, "ALTER SYSTEM RESET synchronous_standby_names"));
    PQclear(PQexec(admin, "SELECT pg_reload_conf()"));
    PQfinish(admin);
}

Test(slot, crwatch_as_the_synchronous_standby_does_not_deadlock_its_stored_position, .timeout = 120,
     .fini = no_sync_standby) {
    char db[64];
    PGconn *c = safety_db("slotsync", db, sizeof db);
    const char *const base[] = {"tables=public.t", "status.interval.ms=300", NULL};
    it_proc_t *p = it_crwatch_stream(db, base, NULL);
    /* crwatch's walsender (application_name crwatch) is the synchronous standby: a commit waits for its flush. */
    it_exec(c, "ALTER SYSTEM SET synchronous_standby_names = 'crwatch'");
    it_exec(c, "SELECT pg_reload_conf()");
    cr_assert(it_wait_sql_true(c, 10000, "SELECT count(*) > 0 FROM pg_stat_replication WHERE sync_state = 'sync'"),
              "crwatch is not the synchronous standby");
    it_exec(c, "SET statement_timeout = '15s'"); /* a wait that never ends is cut, with a warning */
    int64_t t0 = now_ms();
    PGresult *res = PQexec(c, "INSERT INTO t VALUES (1, 'sync')");
    int64_t took = now_ms() - t0;
    cr_expect_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(res));
    PQclear(res);
    cr_expect(took < 10000, "the commit waited %lld ms for crwatch's flush", (long long)took);
    json_object *ev = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(ev, "data.key", "1");
    json_object_put(ev);
    no_sync_standby();
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}
