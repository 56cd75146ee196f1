/*
 * test_poll.c — `crwatch stream` with source=poll (src/source/poll.c,
 * docs/poll.md) against a real PostgreSQL: level-triggered events of every
 * kind, the long transaction timestamp polling loses, concurrent writers,
 * kill -9 and restarts, the same values as the logical source, tombstone
 * pruning, refusals, and source=auto on a wal_level=replica server.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "support/itest.h"

#define EV_TIMEOUT 15000
#define NKEYS 1400 /* writers' keys: k0..k299 and k1000..k1299 */

/* A fresh database with sql/crwatch.sql and the managed table public.jobs (extra columns: extra, may be ""). */
static PGconn *setup(const char *prefix, char *db, size_t n, const char *extra) {
    PGconn *c = it_db_create(prefix, db, n);
    it_apply_sql(db, "sql/crwatch.sql");
    it_exec(c, "CREATE TABLE jobs (" IT_CONVENTION_COLUMNS "%s, PRIMARY KEY (namespace, name))", extra);
    it_exec(c, "SELECT crwatch.manage('public.jobs')");
    return c;
}

/* crwatch polling public.jobs every interval_ms, with one more setting (may be NULL). */
static it_proc_t *start_poll(const char *db, int interval_ms, const char *extra) {
    char iv[64];
    snprintf(iv, sizeof iv, "poll.interval.ms=%d", interval_ms);
    const char *const base[] = {"source=poll", "tables=public.jobs", iv, extra, NULL};
    return it_crwatch_stream(db, base, NULL);
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The next event, which must be of type on key name. */
static json_object *expect(it_proc_t *p, const char *type, const char *name) {
    json_object *ev = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(ev, "data.type", type);
    if (name) {
        char subject[128];
        snprintf(subject, sizeof subject, "default/%s", name);
        it_expect_str(ev, "subject", subject);
    }
    return ev;
}

/* Stops p with SIGTERM: it must exit 0. */
static void stop(it_proc_t *p) { it_crwatch_stop(p, 10000); }

/* Stops p, closes c and drops db. */
static void teardown(it_proc_t *p, PGconn *c, const char *db) {
    stop(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(poll, level_triggered_events_of_every_kind) {
    char db[64];
    PGconn *c = setup("pollkinds", db, sizeof db, "");
    /* A long interval: the writes below land between two polls. */
    it_proc_t *p = start_poll(db, 2500, NULL);
    it_sleep_ms(300); /* the first poll (at once) is done */

    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('a', '{\"v\":1}')");
    it_exec(c, "UPDATE jobs SET spec = '{\"v\":2}' WHERE name = 'a'");
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Running\"}' WHERE name = 'a'");
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('b', '{\"v\":1}')");
    it_exec(c, "BEGIN; INSERT INTO jobs (name, spec) VALUES ('gone', '{}'); ROLLBACK");
    /* Three writes of a: one event, ADDED (created since the last poll), with the latest state. */
    json_object *a = expect(p, "ADDED", "a");
    it_expect_str(a, "data.object.spec.v", "2");
    it_expect_str(a, "data.object.status.phase", "Running");
    it_expect_str(a, "data.object.generation", "2");
    char *rv = it_query_value(c, "SELECT resource_version FROM jobs WHERE name = 'a'");
    char *txid = it_query_value(c, "SELECT txid FROM jobs WHERE name = 'a'");
    it_expect_str(a, "data.object.resource_version", rv);
    it_expect_str(a, "pgxid", txid);
    char id[128];
    snprintf(id, sizeof id, "%s/%s", txid, rv);
    it_expect_str(a, "id", id); /* the writer and the version: the same however often it is read */
    char *at = it_query_value(c, "SELECT to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
                                 "FROM jobs WHERE name = 'a'");
    it_expect_str(a, "time", at); /* the last writer's time */
    free(at);
    free(rv);
    free(txid);
    json_object *b = expect(p, "ADDED", "b");
    cr_assert(it_proc_no_line_within(p, 2800), "one event per row and poll; none for a rolled-back row");

    /* The next window: a delete, an update, a delete and re-insert of one key. */
    it_exec(c, "DELETE FROM jobs WHERE name = 'a'");
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Done\"}' WHERE name = 'b'");
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('c', '{}')");
    it_exec(c, "DELETE FROM jobs WHERE name = 'c'");
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('c', '{\"again\":true}')");
    json_object *da = expect(p, "DELETED", "a");
    it_expect_str(da, "data.object.status.phase", "Running"); /* the last state, from the tombstone */
    json_object *dc = expect(p, "DELETED", "c");                /* tombstones come before the rows */
    json_object *mb = expect(p, "MODIFIED", "b");
    it_expect_str(mb, "data.object.status.phase", "Done");
    json_object *ac = expect(p, "ADDED", "c");
    it_expect_str(ac, "data.object.spec.again", "true");
    cr_assert(it_proc_no_line_within(p, 2800));

    /* TRUNCATE: one TRUNCATED, then what the same transaction wrote after it. */
    it_exec(c, "BEGIN; TRUNCATE jobs; INSERT INTO jobs (name, spec) VALUES ('d', '{}'); COMMIT");
    json_object *t = expect(p, "TRUNCATED", NULL);
    it_expect_str(t, "data.kind", "jobs");
    json_object *ad = expect(p, "ADDED", "d");
    cr_assert(it_proc_no_line_within(p, 2800));

    json_object *all[] = {a, b, da, dc, mb, ac, t, ad};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        json_object_put(all[i]);
    teardown(p, c, db);
}

/*
 * ADDED is told by the row's creating transaction (created_txid), not by
 * timestamps: T1 begins before a poll, inserts, commits after it, and T2
 * updates the row before the next poll.  Its created_at is older than that
 * poll and differs from updated_at, yet the consumer never saw the row.
 */
Test(poll, a_row_created_by_a_transaction_spanning_a_poll_is_added) {
    char db[64];
    PGconn *c = setup("polladded", db, sizeof db, "");
    it_proc_t *p = start_poll(db, 1500, "log.level=debug");
    PGconn *t1 = it_connect(db);
    it_exec(t1, "BEGIN; INSERT INTO jobs (name, spec) VALUES ('k', '{}')");
    /* A poll passes while T1 is open (batch 2 is the first, perhaps before T1 began; batch 3 is not). */
    cr_assert(it_proc_stderr_wait(p, "poll: batch 3:", 5000), "no poll while T1 was open");
    it_exec(t1, "COMMIT");
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Running\"}' WHERE name = 'k'");
    json_object *ev = expect(p, "ADDED", "k");
    it_expect_str(ev, "data.object.status.phase", "Running");
    json_object_put(ev);
    PQfinish(t1);
    teardown(p, c, db);
}

/*
 * Kafka Connect JDBC's miss: T1 writes a row and stays open while 200 short
 * transactions write and are polled; a timestamp poll has moved past T1's
 * timestamp by the time T1 commits.  Here T1's row arrives once, and the 200
 * did not wait for it.
 */
Test(poll, long_transaction_is_neither_missed_nor_holding_back) {
    char db[64];
    PGconn *c = setup("polllong", db, sizeof db, "");
    it_proc_t *p = start_poll(db, 50, NULL);
    PGconn *t1 = it_connect(db);
    it_exec(t1, "BEGIN; INSERT INTO jobs (name, spec) VALUES ('long', '{}')");
    for (int i = 0; i < 200; i++) {
        it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('k%d', '{}')", i);
        if (i % 20 == 0)
            it_sleep_ms(60); /* several polls pass meanwhile */
    }
    for (int i = 0; i < 200; i++) {
        json_object *ev = it_proc_expect_event(p, EV_TIMEOUT);
        char want[32];
        snprintf(want, sizeof want, "default/k%d", i);
        it_expect_str(ev, "subject", want); /* in commit order, without T1's row */
        json_object_put(ev);
    }
    cr_assert(it_proc_no_line_within(p, 500), "an event while T1 is open");
    it_exec(t1, "COMMIT");
    json_object *ev = expect(p, "ADDED", "long");
    json_object_put(ev);
    cr_assert(it_proc_no_line_within(p, 1000), "T1's row came twice");
    PQfinish(t1);
    teardown(p, c, db);
}

/* ---- concurrent writers ----------------------------------------------------- */

/*
 * One writer session until deadline: upserts, deletes, two-row transactions
 * and rolled-back writes marked {"aborted":true}.  Runs in a forked child:
 * no Criterion asserts, _exit only.
 */
static void writer(const char *db, unsigned seed, int ms) {
    char conninfo[128];
    snprintf(conninfo, sizeof conninfo, "dbname=%s", db);
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK)
        _exit(2);
    long long end = now_ms() + ms;
    char sql[512];
    while (now_ms() < end) {
        int r = (int)(rand_r(&seed) % 10), k = (int)(rand_r(&seed) % 300), v = (int)(rand_r(&seed) % 100000);
        if (r < 6)
            snprintf(sql, sizeof sql,
                     "INSERT INTO jobs (name, spec) VALUES ('k%d', '{\"v\":%d}') "
                     "ON CONFLICT (namespace, name) DO UPDATE SET spec = EXCLUDED.spec",
                     k, v);
        else if (r < 8)
            snprintf(sql, sizeof sql, "DELETE FROM jobs WHERE name = 'k%d'", k);
        else if (r == 8)
            snprintf(sql, sizeof sql,
                     "BEGIN; INSERT INTO jobs (name, spec) VALUES ('k%d', '{\"aborted\":true}') "
                     "ON CONFLICT (namespace, name) DO UPDATE SET spec = EXCLUDED.spec; ROLLBACK",
                     k);
        else /* two rows, always in key order: no deadlock */
            snprintf(sql, sizeof sql,
                     "BEGIN; INSERT INTO jobs (name, spec) VALUES ('k%d', '{\"v\":%d}'), ('k%d', '{\"v\":%d}') "
                     "ON CONFLICT (namespace, name) DO UPDATE SET spec = EXCLUDED.spec; COMMIT",
                     k, v, k + 1000, v);
        PGresult *res = PQexec(c, sql);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            fprintf(stderr, "writer: %s: %s", sql, PQresultErrorMessage(res));
            _exit(3);
        }
        PQclear(res);
        usleep(1000);
    }
    PQfinish(c);
    _exit(0);
}

static pid_t spawn_writer(const char *db, unsigned seed, int ms) {
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork");
    if (pid == 0)
        writer(db, seed, ms);
    return pid;
}

/* What the events say each key is now. */
typedef struct {
    bool present[NKEYS];
    long long rv[NKEYS];      /* resource_version of the last ADDED/MODIFIED, or of the deleted object */
    char **ids;
    size_t nids, capids;
    long events;
} view_t;

static int key_index(const char *subject) {
    const char *k = strstr(subject ? subject : "", "/k");
    int i = k ? atoi(k + 2) : -1;
    cr_assert(i >= 0 && i < NKEYS, "unexpected subject %s", subject ? subject : "(none)");
    return i;
}

/*
 * Applies one event; within one run a key's versions only grow while it
 * lives.  A key created again after a delete is a new resource (a new uid),
 * whose version may be lower: its insert drew it in its BEFORE trigger, and
 * then waited for the delete of the row an update had just moved past it.
 */
static void view_apply(view_t *v, json_object *ev, bool same_run) {
    const char *type = it_json_str(ev, "data.type");
    cr_assert(type, "no data.type");
    const char *subject = it_json_str(ev, "subject");
    cr_assert(!it_json_get(ev, "data.object.spec.aborted"), "an event of a rolled-back transaction: %s",
              json_object_to_json_string(ev));
    int k = key_index(subject);
    const char *rvs = it_json_str(ev, "data.object.resource_version");
    cr_assert(rvs, "no resource_version");
    long long rv = atoll(rvs);
    bool deleted = !strcmp(type, "DELETED");
    if (same_run && v->present[k])
        cr_assert(deleted ? rv >= v->rv[k] : rv > v->rv[k], "key %s: version %lld after %lld (%s)", subject, rv,
                  v->rv[k], type);
    v->present[k] = !deleted;
    v->rv[k] = rv;
    if (v->nids == v->capids) {
        v->capids = v->capids ? v->capids * 2 : 1024;
        v->ids = realloc(v->ids, v->capids * sizeof *v->ids);
    }
    v->ids[v->nids++] = strdup(it_json_str(ev, "id"));
    v->events++;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* No id twice among the events of one run; forgets them. */
static void view_check_ids(view_t *v) {
    qsort(v->ids, v->nids, sizeof *v->ids, cmp_str);
    for (size_t i = 1; i < v->nids; i++)
        cr_assert(strcmp(v->ids[i - 1], v->ids[i]) != 0, "event %s came twice in one run", v->ids[i]);
    for (size_t i = 0; i < v->nids; i++)
        free(v->ids[i]);
    free(v->ids);
    v->ids = NULL;
    v->nids = v->capids = 0;
}

/* The events' view equals the table: the same keys, each at its current version. */
static void view_equals_table(view_t *v, PGconn *c) {
    bool in_table[NKEYS] = {false};
    PGresult *r = it_query(c, "SELECT name, resource_version FROM jobs WHERE name LIKE 'k%%'");
    for (int i = 0; i < PQntuples(r); i++) {
        int k = atoi(PQgetvalue(r, i, 0) + 1);
        in_table[k] = true;
        cr_assert(v->present[k], "k%d is in the table, the events say it is not", k);
        cr_assert_eq(v->rv[k], atoll(PQgetvalue(r, i, 1)), "k%d: the events have version %lld, the table %s", k,
                     v->rv[k], PQgetvalue(r, i, 1));
    }
    cr_assert_gt(PQntuples(r), 0);
    PQclear(r);
    for (int k = 0; k < NKEYS; k++)
        cr_assert(in_table[k] || !v->present[k], "k%d was deleted, the events say it is there", k);
}

/* Reads p's events into v until the row 'done' (written last) arrives. */
static void read_until_done(it_proc_t *p, view_t *v, bool same_run) {
    for (;;) {
        json_object *ev = it_proc_expect_event(p, 30000);
        const char *subject = it_json_str(ev, "subject");
        bool done = subject && !strcmp(subject, "default/done");
        if (!done)
            view_apply(v, ev, same_run);
        json_object_put(ev);
        if (done)
            return;
    }
}

/* Reads what comes while the writers run (so crwatch never waits on its stdout); reaps them. */
static void read_while_writing(it_proc_t *p, view_t *v, pid_t *pids, int n, bool same_run) {
    int left = n;
    while (left > 0) {
        json_object *ev = it_proc_read_event(p, 100);
        if (ev) {
            view_apply(v, ev, same_run);
            json_object_put(ev);
        }
        for (int i = 0; i < n; i++) {
            int st;
            if (pids[i] > 0 && waitpid(pids[i], &st, WNOHANG) == pids[i]) {
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %d failed (status %d)", i, st);
                pids[i] = 0;
                left--;
            }
        }
    }
}

Test(poll, concurrent_writers_lose_nothing_and_repeat_nothing, .timeout = 180) {
    char db[64];
    PGconn *c = setup("pollconc", db, sizeof db, "");
    it_proc_t *p = start_poll(db, 50, NULL);
    pid_t pids[8];
    for (int i = 0; i < 8; i++)
        pids[i] = spawn_writer(db, 1000u + (unsigned)i, 20000);
    view_t *v = calloc(1, sizeof *v);
    read_while_writing(p, v, pids, 8, true);
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('done', '{}')");
    read_until_done(p, v, true);
    view_equals_table(v, c);
    cr_assert_gt(v->events, 1000, "only %ld events", v->events);
    view_check_ids(v);
    cr_assert(it_proc_no_line_within(p, 500));
    free(v);
    teardown(p, c, db);
}

Test(poll, kill_9_mid_load_resumes_from_the_stored_watermark, .timeout = 180) {
    char db[64];
    PGconn *c = setup("pollkill", db, sizeof db, "");
    it_proc_t *p = start_poll(db, 50, NULL);
    pid_t pids[4];
    for (int i = 0; i < 4; i++)
        pids[i] = spawn_writer(db, 2000u + (unsigned)i, 8000);
    view_t *v = calloc(1, sizeof *v);
    long long kill_at = now_ms() + 3000;
    while (now_ms() < kill_at) {
        json_object *ev = it_proc_read_event(p, 100);
        if (ev) {
            view_apply(v, ev, true);
            json_object_put(ev);
        }
    }
    cr_assert_gt(v->events, 0, "nothing streamed before the kill");
    kill(it_proc_pid(p), SIGKILL);
    cr_assert_eq(it_proc_wait(p, 10000), 128 + SIGKILL);
    /* What it wrote before it died is delivered (and may be stored): read it to the end. */
    json_object *ev;
    while ((ev = it_proc_read_event(p, 1000))) {
        view_apply(v, ev, true);
        json_object_put(ev);
    }
    /* What it had delivered but not stored comes again. */
    it_proc_free(p);
    view_check_ids(v);
    char *stored = it_query_value(c, "SELECT position FROM crwatch.offsets WHERE name = current_database()");
    cr_assert(stored && atoll(stored) > 1, "no watermark was stored before the kill (position %s)", stored);
    free(stored);
    p = start_poll(db, 50, NULL);
    cr_assert(it_proc_stderr_wait(p, "poll: resuming", 1000), "the restart did not resume from crwatch.offsets");
    read_while_writing(p, v, pids, 4, false); /* versions may repeat across the restart */
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('done', '{}')");
    read_until_done(p, v, false);
    view_equals_table(v, c);
    view_check_ids(v);
    free(v);
    teardown(p, c, db);
}

Test(poll, a_clean_restart_sends_only_what_is_new) {
    char db[64];
    PGconn *c = setup("pollrestart", db, sizeof db, "");
    it_proc_t *p = start_poll(db, 50, NULL);
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('x', '{}')");
    json_object_put(expect(p, "ADDED", "x"));
    stop(p);
    /* Written while crwatch is down. */
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('y', '{}')");
    it_exec(c, "DELETE FROM jobs WHERE name = 'x'");
    p = start_poll(db, 50, NULL);
    json_object_put(expect(p, "DELETED", "x"));
    json_object_put(expect(p, "ADDED", "y"));
    cr_assert(it_proc_no_line_within(p, 800), "x came again");
    teardown(p, c, db);
}

Test(poll, a_table_altered_while_polling_is_described_again) {
    char db[64];
    PGconn *c = setup("pollalter", db, sizeof db, "");
    it_proc_t *p = start_poll(db, 50, NULL);
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('a', '{}')");
    json_object *ev = expect(p, "ADDED", "a");
    cr_assert(!it_json_exists(ev, "data.object.note"));
    json_object_put(ev);
    it_exec(c, "ALTER TABLE jobs ADD COLUMN note text");
    it_exec(c, "UPDATE jobs SET note = 'new column' WHERE name = 'a'");
    ev = expect(p, "MODIFIED", "a");
    it_expect_str(ev, "data.object.note", "new column");
    json_object_put(ev);
    it_exec(c, "ALTER TABLE jobs DROP COLUMN note");
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('b', '{}')");
    ev = expect(p, "ADDED", "b");
    cr_assert(!it_json_exists(ev, "data.object.note"), "a dropped column is still read");
    json_object_put(ev);
    cr_assert(it_proc_running(p));
    teardown(p, c, db);
}

Test(poll, crd_events_carry_old_object_and_changed_from_the_cache) {
    char db[64];
    PGconn *c = setup("pollcrd", db, sizeof db, "");
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('job-1', '{\"preset\":\"720p\"}')"); /* before the start */
    const char *const base[] = {"source=poll", "poll.interval.ms=50", "resource.jobs.table=public.jobs",
                                "resource.jobs.shape=crd", "resource.jobs.kind=VideoTranscodingJob",
                                "resource.jobs.api.version=media.example.com/v1", "cache.max.entries=1000", NULL};
    it_proc_t *p = it_crwatch_stream(db, base, NULL);
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Running\"}' WHERE name = 'job-1'");
    json_object *m = expect(p, "MODIFIED", "job-1");
    it_expect_str(m, "data.object.kind", "VideoTranscodingJob");
    it_expect_str(m, "data.object.status.phase", "Running");
    cr_assert(it_json_exists(m, "data.oldObject.status"), "no oldObject from the seeded cache: %s",
              json_object_to_json_string(m));
    cr_assert(!it_json_get(m, "data.oldObject.status.phase"));
    cr_assert(it_json_array_has(m, "data.changed", "/status/phase"), "%s", json_object_to_json_string(m));
    cr_assert(!it_json_array_has(m, "data.changed", "/spec"));
    json_object_put(m);
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('job-2', '{}')");
    json_object_put(expect(p, "ADDED", "job-2"));
    it_exec(c, "UPDATE jobs SET spec = '{\"preset\":\"4k\"}' WHERE name = 'job-2'");
    m = expect(p, "MODIFIED", "job-2");
    it_expect_str(m, "data.oldObject.metadata.generation", "1");
    it_expect_str(m, "data.object.metadata.generation", "2");
    cr_assert(it_json_array_has(m, "data.changed", "/spec/preset"), "%s", json_object_to_json_string(m));
    json_object_put(m);
    it_exec(c, "DELETE FROM jobs WHERE name = 'job-2'");
    m = expect(p, "DELETED", "job-2");
    it_expect_str(m, "data.object.spec.preset", "4k");
    json_object_put(m);
    /* A polled delete brings its whole old row, polled updates do not: the cache stays on after it. */
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Done\"}' WHERE name = 'job-1'");
    m = expect(p, "MODIFIED", "job-1");
    it_expect_str(m, "data.oldObject.status.phase", "Running");
    cr_assert(it_json_array_has(m, "data.changed", "/status/phase"), "%s", json_object_to_json_string(m));
    json_object_put(m);
    char *log = it_proc_stderr(p);
    cr_expect_null(strstr(log, "not cached"), "%s", log);
    free(log);
    teardown(p, c, db);
}

/* ---- the same values as the logical source ------------------------------------ */

/* The raw JSON text of the object value after "<member>": in line (malloc'd), braces balanced. */
static char *raw_member(const char *line, const char *member) {
    const char *s = strstr(line, member);
    cr_assert(s, "no %s in %s", member, line);
    s += strlen(member);
    cr_assert_eq(*s, '{', "%s is no object in %s", member, line);
    int depth = 0;
    bool str = false;
    const char *e = s;
    for (; *e; e++) {
        if (str) {
            if (*e == '\\')
                e++;
            else if (*e == '"')
                str = false;
        } else if (*e == '"')
            str = true;
        else if (*e == '{')
            depth++;
        else if (*e == '}' && --depth == 0)
            break;
    }
    cr_assert(*e, "unbalanced %s in %s", member, line);
    return strndup(s, (size_t)(e - s + 1));
}

Test(poll, values_render_as_the_logical_source_renders_them) {
    char db[64];
    PGconn *c = setup("pollvals", db, sizeof db,
                      ", i2 int2, i8 int8, f4 float4, f8 float8, n numeric(12,4), b bool, tx text, bp char(3), "
                      "u uuid, j json, by bytea, d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, "
                      "iv interval, ai int[], at text[], ip inet, nul text");
    it_exec(c, "ALTER TABLE jobs REPLICA IDENTITY FULL");
    char slot[96];
    snprintf(slot, sizeof slot, "slot.name=%s_logical", db);
    const char *const lbase[] = {"source=logical", "tables=public.jobs", slot, NULL};
    it_proc_t *l = it_crwatch_stream(db, lbase, NULL);
    it_proc_t *p = start_poll(db, 50, NULL);
    static const char *const writes[] = {
        "INSERT INTO jobs (name, spec, labels, i2, i8, f4, f8, n, b, tx, bp, u, j, by, d, tm, ttz, ts, tstz, iv, ai, "
        "at, ip) VALUES ('v1', '{\"big\": 123456789012345678901234567890, \"s\": \"\\u00e9\\n\"}', "
        "'{\"app\":\"x\"}', -32768, 9223372036854775807, 'NaN', '-Infinity', 12.3400, true, "
        "E'quote\" back\\\\ nl\\n tab\\t \u00e9', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', "
        "'{ \"a\" :\n [1, 2] }', '\\x00ff10', '0044-03-15 BC', '23:59:59.999999', '10:00:00+05:30', "
        "'infinity', '2026-11-24 10:00:00.123456+02', '1 year 2 months 3 days 04:05:06.5', '{1,NULL,3}', "
        "'{\"a b\",\"c,d\",NULL,\"NULL\"}', '10.0.0.1/8')",
        "INSERT INTO jobs (name, spec, f4, f8, n, d) VALUES ('v2', '[]', 1.5e-40, 0.1, -0.0001, '2000-01-01')",
        "UPDATE jobs SET status = '{\"phase\":\"Running\"}', f8 = 1e300 WHERE name = 'v1'",
        "DELETE FROM jobs WHERE name = 'v2'",
        "DELETE FROM jobs WHERE name = 'v1'",
    };
    /* One write at a time, so each is one event of each source: the same key, type and object. */
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        it_exec(c, "%s", writes[i]);
        char *ll = it_proc_read_line(l, EV_TIMEOUT), *pl = it_proc_read_line(p, EV_TIMEOUT);
        cr_assert(ll && pl, "write %zu: no event (logical %s, poll %s)", i, ll ? "ok" : "none", pl ? "ok" : "none");
        char *lo = raw_member(ll, "\"object\":"), *po = raw_member(pl, "\"object\":");
        cr_assert_str_eq(po, lo, "write %zu: the objects differ:\npoll    %s\nlogical %s", i, po, lo);
        json_object *lev = json_tokener_parse(ll), *pev = json_tokener_parse(pl);
        static const char *const same[] = {"source", "type", "subject", "data.type", "data.kind", "data.key"};
        for (size_t k = 0; k < sizeof same / sizeof same[0]; k++)
            it_expect_str(pev, same[k], it_json_str(lev, same[k]));
        json_object_put(lev);
        json_object_put(pev);
        free(lo);
        free(po);
        free(ll);
        free(pl);
    }
    stop(l);
    teardown(p, c, db);
}

/* ---- a poll that keeps failing ------------------------------------------------- */

Test(poll, a_query_that_keeps_failing_stops_crwatch_naming_it, .timeout = 60) {
    char db[64];
    PGconn *c = setup("pollpoison", db, sizeof db, "");
    it_proc_t *p = start_poll(db, 50, NULL);
    /* A tombstone whose row cannot be read back as the table's (as after ALTER COLUMN TYPE). */
    it_exec(c, "INSERT INTO crwatch.tombstones (resource_version, relid, namespace, name, txid, deleted_at, object) "
               "VALUES (nextval('crwatch.resource_version'), 'public.jobs', 'default', 'x', pg_current_xact_id(), "
               "now(), '{\"name\": \"x\", \"generation\": \"not a number\"}')");
    int rc = it_proc_wait(p, 40000);
    char *log = it_proc_stderr(p);
    cr_assert_eq(rc, 3, "exit %d: %s", rc, log);
    cr_assert(strstr(log, "reconnecting") && strstr(log, "not a number") && strstr(log, "5 polls in a row"), "%s",
              log);
    free(log);
    it_proc_free(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* ---- tombstones, refusals, check ---------------------------------------------- */

static long long count_tombstones(PGconn *c) {
    char *n = it_query_value(c, "SELECT count(*) FROM crwatch.tombstones WHERE relid = 'public.jobs'::regclass");
    long long v = atoll(n);
    free(n);
    return v;
}

Test(poll, tombstones_go_once_every_poller_is_past_them) {
    char db[64];
    PGconn *c = setup("pollprune", db, sizeof db, "");
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('a', '{}'), ('b', '{}')");
    /* Another poller, registered before the deletes and still behind them. */
    it_exec(c, "INSERT INTO crwatch.offsets (name, position, watermark, watermark_time) "
               "VALUES ('other', 1, pg_current_snapshot(), now())");
    it_proc_t *p = start_poll(db, 50, NULL);
    it_exec(c, "DELETE FROM jobs WHERE name = 'a'");
    json_object_put(expect(p, "DELETED", "a"));
    stop(p); /* stores the watermark and prunes */
    cr_assert_eq(count_tombstones(c), 1, "a tombstone another poller has not seen was pruned");

    it_exec(c, "DELETE FROM crwatch.offsets WHERE name = 'other'");
    p = start_poll(db, 50, NULL);
    it_exec(c, "DELETE FROM jobs WHERE name = 'b'");
    json_object_put(expect(p, "DELETED", "b"));
    cr_assert(it_proc_no_line_within(p, 300), "a came again");
    /* A snapshot is past b's delete only once no older transaction runs anywhere in the cluster (an
     * autovacuum ANALYZE holds one for a moment): wait for that, then for a poll after it. */
    cr_assert(it_wait_sql_true(c, 20000,
                               "SELECT pg_snapshot_xmin(pg_current_snapshot()) > "
                               "coalesce((SELECT max(txid) FROM crwatch.tombstones WHERE name = 'b'), '0'::xid8)"),
              "an old transaction stays open in the cluster");
    it_sleep_ms(300);
    stop(p);
    cr_assert_eq(count_tombstones(c), 0, "tombstones every poller has seen were kept");
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(poll, bad_setups_are_refused_naming_the_fix) {
    char db[64], slot[96];
    PGconn *c = setup("pollbad", db, sizeof db, "");
    it_exec(c, "CREATE TABLE plain (id int PRIMARY KEY)");
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    char *err = NULL;
    const char *unmanaged[] = {"stream", "-X", "source=poll", "-X", "tables=public.plain", "-X", slot, NULL};
    int rc = it_run_crwatch(db, unmanaged, 20000, NULL, &err);
    cr_assert_eq(rc, 3, "exit %d: %s", rc, err);
    cr_assert(strstr(err, "crwatch.manage('public.plain')"), "the fix is not named: %s", err);
    free(err);
    char *rows = it_query_value(c, "SELECT count(*) FROM crwatch.offsets");
    cr_assert_str_eq(rows, "0", "a refused start registered a watermark");
    free(rows);

    /* A managed table is polled by txid (no misses), never by a column; a column must be orderable. */
    it_exec(c, "ALTER TABLE plain ADD COLUMN note text");
    const char *const stamped[][2] = {{"public.jobs", "updated_at"}, {"public.plain", "note"}};
    const char *const why[] = {"is managed by crwatch.manage()", "takes a timestamp, date or integer column"};
    for (int i = 0; i < 2; i++) {
        char table[64], col[64];
        snprintf(table, sizeof table, "resource.r.table=%s", stamped[i][0]);
        snprintf(col, sizeof col, "resource.r.poll.column=%s", stamped[i][1]);
        const char *args[] = {"stream", "-X", "source=poll", "-X", table, "-X", col, "-X", slot, NULL};
        rc = it_run_crwatch(db, args, 20000, NULL, &err);
        cr_assert_eq(rc, 3, "exit %d: %s", rc, err);
        cr_assert(strstr(err, why[i]), "%s", err);
        free(err);
    }

    const char *notables[] = {"stream", "-X", "source=poll", "-X", slot, NULL};
    rc = it_run_crwatch(db, notables, 20000, NULL, &err);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, err);
    cr_assert(strstr(err, "tables"), "%s", err);
    free(err);
    const char *endpos[] = {"stream", "-X", "source=poll", "-X", "tables=public.jobs", "--endpos", "0/1", NULL};
    rc = it_run_crwatch(db, endpos, 20000, NULL, &err);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, err);
    cr_assert(strstr(err, "--endpos"), "%s", err);
    free(err);

    /* check: which source stream would use, and what polling needs. */
    char *out = NULL;
    const char *check[] = {"check", "-X", "source=poll", "-X", "tables=public.jobs", "-X", slot, NULL};
    rc = it_run_crwatch(db, check, 20000, &out, NULL);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "ok    source: stream would use polling (source=poll)"), "%s", out);
    cr_assert(strstr(out, "warn  watermark") && strstr(out, "none stored"), "%s", out);
    free(out);
    const char *checkbad[] = {"check", "-X", "source=poll", "-X", "tables=public.plain", "-X", slot, NULL};
    rc = it_run_crwatch(db, checkbad, 20000, &out, NULL);
    cr_assert_eq(rc, 3, "%s", out);
    cr_assert(strstr(out, "FAIL") && strstr(out, "crwatch.manage('public.plain')"), "%s", out);
    free(out);
    const char *checkauto[] = {"check", "-X", "tables=public.jobs", "-X", slot, NULL};
    rc = it_run_crwatch(db, checkauto, 20000, &out, NULL);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "source: stream would use logical replication (wal_level=logical"), "%s", out);
    free(out);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(poll, a_least_privilege_role_polls_and_keeps_only_its_own_watermark) {
    char db[64], role[80];
    PGconn *c = setup("pollrole", db, sizeof db, "");
    snprintf(role, sizeof role, "%s_crw", db);
    it_exec(c, "DROP ROLE IF EXISTS %s", role);
    it_exec(c, "SELECT crwatch.create_role('%s', 'public.jobs')", role);
    /* Another role's watermark, which this one can neither see nor move. */
    it_exec(c, "INSERT INTO crwatch.offsets (name, position, watermark, watermark_time) "
               "VALUES ('theirs', 7, pg_current_snapshot(), now())");
    char conninfo[256], slot[96];
    snprintf(conninfo, sizeof conninfo, "dbname=%s user=%s", db, role);
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    const char *args[] = {"stream", "-X", "source=poll", "-X", "tables=public.jobs", "-X", "poll.interval.ms=50",
                          "-X", slot, "-d", conninfo, NULL};
    it_proc_t *p = it_crwatch_start(NULL, args);
    cr_assert(it_proc_stderr_wait(p, "streaming by polling", EV_TIMEOUT), "crwatch did not poll as %s", role);
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('a', '{}')");
    json_object_put(expect(p, "ADDED", "a"));
    it_exec(c, "DELETE FROM jobs");
    json_object_put(expect(p, "DELETED", "a"));
    stop(p);
    char *owner = it_query_value(c, "SELECT owner FROM crwatch.offsets WHERE name = current_database()");
    cr_assert_str_eq(owner, role);
    free(owner);
    char *theirs = it_query_value(c, "SELECT position FROM crwatch.offsets WHERE name = 'theirs'");
    cr_assert_str_eq(theirs, "7");
    free(theirs);
    /* A name another role keeps is refused, not taken over. */
    const char *taken[] = {"stream", "-X", "source=poll", "-X", "tables=public.jobs", "-X", "slot.name=theirs",
                           "-d", conninfo, NULL};
    char *err = NULL;
    int rc = it_run_crwatch(NULL, taken, 20000, NULL, &err);
    cr_assert_eq(rc, 3, "exit %d: %s", rc, err);
    cr_assert(strstr(err, "own slot.name"), "%s", err);
    free(err);
    PQfinish(c);
    it_db_drop(NULL, db);
    PGconn *admin = it_connect(NULL);
    it_exec(admin, "DROP ROLE IF EXISTS %s", role);
    PQfinish(admin);
}

Test(poll, a_second_poller_with_the_same_name_waits_its_turn) {
    char db[64];
    PGconn *c = setup("pollbusy", db, sizeof db, "");
    it_proc_t *first = start_poll(db, 50, NULL);
    const char *args[] = {"stream", "-X", "source=poll", "-X", "tables=public.jobs", "-X", "poll.interval.ms=50",
                          "-X", NULL, NULL};
    char slot[96];
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    args[8] = slot;
    it_proc_t *second = it_crwatch_start(db, args);
    cr_assert(it_proc_stderr_wait(second, "another crwatch polls as", EV_TIMEOUT), "the second did not wait");
    cr_assert(it_proc_running(second));
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('a', '{}')");
    json_object_put(expect(first, "ADDED", "a"));
    cr_assert(it_proc_no_line_within(second, 300), "two pollers of one watermark both delivered");
    stop(first);
    cr_assert(it_proc_stderr_wait(second, "streaming by polling", 40000), "the second never took over");
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('b', '{}')");
    json_object_put(expect(second, "ADDED", "b"));
    teardown(second, c, db);
}

/* ---- timestamp polling of a table outside the convention ---------------------- */

/* The next event within ms: of type on the row whose key is id. */
static json_object *within(it_proc_t *p, int ms, const char *type, const char *id) {
    json_object *ev = it_proc_read_event(p, ms);
    cr_assert(ev, "no %s of row %s within %d ms", type, id, ms);
    it_expect_str(ev, "data.type", type);
    it_expect_str(ev, "subject", id);
    return ev;
}

Test(poll, timestamp_mode_on_an_unmanaged_table_with_a_read_only_role, .timeout = 120) {
    char db[64], role[80];
    PGconn *c = it_db_create("pollstamp", db, sizeof db); /* no sql/crwatch.sql: nothing of crwatch in it */
    snprintf(role, sizeof role, "%s_ro", db);
    it_exec(c, "CREATE TABLE legacy (id int PRIMARY KEY, v text, updated_at timestamptz NOT NULL DEFAULT now())");
    it_exec(c, "INSERT INTO legacy (id, v) VALUES (1, 'one')");
    it_exec(c, "DROP ROLE IF EXISTS %s", role);
    it_exec(c, "CREATE ROLE %s LOGIN; GRANT SELECT ON legacy TO %s", role, role);
    char conninfo[256], slot[96];
    snprintf(conninfo, sizeof conninfo, "dbname=%s user=%s", db, role);
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    const char *args[] = {"stream", "-X", "source=poll", "-X", "resource.l.table=public.legacy", "-X",
                          "resource.l.poll.column=updated_at", "-X", "poll.interval.ms=100", "-X", "poll.lag.ms=400",
                          "-X", "resync.interval.ms=2500", "-X", slot, "-d", conninfo, NULL};
    it_proc_t *p = it_crwatch_start(NULL, args);
    cr_assert(it_proc_stderr_wait(p, "streaming by polling", EV_TIMEOUT), "crwatch did not poll as %s", role);
    /* The listing: every row, as a Kubernetes watch without a resourceVersion starts. */
    json_object *ev = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(ev, "data.type", "ADDED");
    it_expect_str(ev, "subject", "1");
    json_object_put(ev);

    /* Inserts and updates: by the next polls. */
    it_exec(c, "INSERT INTO legacy (id, v) VALUES (2, 'two')");
    ev = within(p, 1000, "ADDED", "2");
    it_expect_str(ev, "data.object.v", "two");
    json_object_put(ev);
    it_exec(c, "UPDATE legacy SET v = 'TWO', updated_at = now() WHERE id = 2");
    ev = within(p, 1000, "MODIFIED", "2");
    it_expect_str(ev, "data.object.v", "TWO");
    json_object_put(ev);

    /* A delete: no poll can see it; the next reconciliation does. */
    it_exec(c, "DELETE FROM legacy WHERE id = 1");
    cr_assert(it_proc_no_line_within(p, 300), "a delete seen by a poll?");
    ev = within(p, 4000, "DELETED", "1");
    it_expect_str(ev, "data.object.id", "1");
    json_object_put(ev);
    cr_assert(it_proc_stderr_wait(p, "reconciled public.legacy: 0 added, 0 modified, 1 deleted", 1000));

    /* A transaction longer than the lag: its row has an older updated_at than what the polls moved on to. */
    PGconn *t1 = it_connect(db);
    it_exec(t1, "BEGIN; INSERT INTO legacy (id, v) VALUES (3, 'late')");
    it_sleep_ms(200);
    it_exec(c, "INSERT INTO legacy (id, v) VALUES (4, 'four')");
    json_object_put(within(p, 1000, "ADDED", "4"));
    it_sleep_ms(1000);
    it_exec(t1, "COMMIT");
    json_object_put(within(p, 4000, "ADDED", "3"));
    cr_assert(it_proc_stderr_wait(p, "reconciled public.legacy: 1 added, 0 modified, 0 deleted", 1000),
              "row 3 came, but not from a reconciliation: the test did not outlive the window");
    cr_assert(it_proc_no_line_within(p, 3000), "an event came twice");
    char *log = it_proc_stderr(p);
    const char *w = strstr(log, "is polled by its column updated_at");
    cr_assert(w && strstr(log, "WARN: poll: public.legacy"), "no warning of what timestamp polling misses: %s", log);
    cr_assert(!strstr(w + 1, "is polled by its column"), "warned twice");
    free(log);

    /* A delete, then the connections go before any reconciliation: the reconnect lists the table again, and
     * the key it no longer has is DELETED (what of it was in flight is not known). */
    it_exec(c, "DELETE FROM legacy WHERE id = 4");
    it_exec(c, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '%s'", role);
    bool deleted = false;
    for (int i = 0; i < 10 && !deleted; i++) {
        ev = it_proc_read_event(p, 8000);
        cr_assert(ev, "no DELETED of row 4 after the reconnect");
        deleted = !strcmp(it_json_str(ev, "data.type"), "DELETED") && !strcmp(it_json_str(ev, "subject"), "4");
        json_object_put(ev);
    }
    cr_assert(it_proc_stderr_wait(p, "reconnecting", 1000), "no reconnect happened");
    stop(p);

    /* A restart lists the table again. */
    p = it_crwatch_start(NULL, args);
    int ids = 0;
    for (int i = 0; i < 2; i++) {
        ev = it_proc_expect_event(p, EV_TIMEOUT);
        it_expect_str(ev, "data.type", "ADDED");
        ids += atoi(it_json_str(ev, "subject"));
        json_object_put(ev);
    }
    cr_assert_eq(ids, 2 + 3);
    cr_assert(it_proc_no_line_within(p, 1000));
    stop(p);

    /* Exactly-once cannot be had with a table listed again at every start. */
    char *err = NULL;
    const char *eos[] = {"stream", "-X", "source=poll", "-X", "resource.l.table=public.legacy", "-X",
                         "resource.l.poll.column=updated_at", "-X", "delivery=exactly-once", "-X", "sink=kafka",
                         "-d", conninfo, NULL};
    int rc = it_run_crwatch(NULL, eos, 20000, NULL, &err);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, err);
    cr_assert(strstr(err, "poll.column"), "%s", err);
    free(err);
    PQfinish(t1);
    PQfinish(c);
    it_db_drop(NULL, db);
    PGconn *admin = it_connect(NULL);
    it_exec(admin, "DROP ROLE IF EXISTS %s", role);
    PQfinish(admin);
}

/* ---- source=auto on a server without wal_level=logical ------------------------- */

Test(poll, auto_polls_a_wal_level_replica_server_and_says_why_once, .timeout = 120) {
    char dir[] = "/tmp/crw-replica.XXXXXX";
    cr_assert(mkdtemp(dir), "mkdtemp");
    char pg[4096];
    snprintf(pg, sizeof pg, "%s/scripts/pg", CRW_SOURCE_DIR);
    const char *start[] = {pg, "start", dir, "-c", "wal_level=replica", "-c", "max_wal_senders=10", NULL};
    char *err = NULL;
    int rc = it_run(pg, start, 90000, NULL, &err);
    cr_assert_eq(rc, 0, "scripts/pg start: %s", err);
    free(err);
    char envpath[4200], port[16] = "";
    snprintf(envpath, sizeof envpath, "%s/env", dir);
    FILE *f = fopen(envpath, "r");
    cr_assert(f, "no %s", envpath);
    char line[256];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "export PGPORT=", 14))
            snprintf(port, sizeof port, "%.*s", (int)strcspn(line + 14, "\n"), line + 14);
    fclose(f);
    char conninfo[256];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%s user=crwatch_test dbname=postgres", port);
    PGconn *c = PQconnectdb(conninfo);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    it_apply_sql(conninfo, "sql/crwatch.sql");
    it_exec(c, "CREATE TABLE jobs (" IT_CONVENTION_COLUMNS ", PRIMARY KEY (namespace, name))");
    it_exec(c, "SELECT crwatch.manage('public.jobs')");

    char *out = NULL;
    const char *check[] = {"check", "-X", "tables=public.jobs", "-d", conninfo, NULL};
    rc = it_run_crwatch(NULL, check, 20000, &out, NULL);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "warn  source: stream would use polling (wal_level is 'replica'"), "%s", out);
    free(out);

    const char *args[] = {"stream", "-X", "tables=public.jobs", "-X", "poll.interval.ms=50", "-d", conninfo, NULL};
    it_proc_t *p = it_crwatch_start(NULL, args);
    cr_assert(it_proc_stderr_wait(p, "streaming by polling", EV_TIMEOUT), "auto did not fall back to polling");
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('r', '{}')");
    json_object_put(expect(p, "ADDED", "r"));
    it_exec(c, "UPDATE jobs SET status = '{\"n\":1}'");
    json_object_put(expect(p, "MODIFIED", "r"));
    char *log = it_proc_stderr(p);
    static const char warning[] = "WARN: source=auto: polling, not logical replication: wal_level is 'replica'";
    const char *w = strstr(log, warning);
    cr_assert(w, "no warning naming why: %s", log);
    cr_assert(!strstr(w + sizeof warning - 1, "source=auto"), "warned twice: %s", log);
    free(log);
    stop(p);
    PQfinish(c);
    const char *stop[] = {pg, "stop", dir, NULL};
    it_run(pg, stop, 90000, NULL, NULL);
    const char *rm[] = {"rm", "-rf", dir, NULL};
    it_run("/bin/rm", rm, 30000, NULL, NULL);
}
