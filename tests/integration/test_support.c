/*
 * test_support.c — self-test of the integration-test support library
 * (support/itest.c) against the real test server and real child processes,
 * so a broken helper shows up as itself rather than as a crwatch bug.
 */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/itest.h"

/* pg_recvlogical of the server under test (Debian: versioned bindir or wrapper). */
static const char *recvlogical_path(void) {
    static const char *const candidates[] = {
        "/usr/lib/postgresql/15/bin/pg_recvlogical",
        "/usr/bin/pg_recvlogical",
        NULL,
    };
    for (int i = 0; candidates[i]; i++)
        if (access(candidates[i], X_OK) == 0)
            return candidates[i];
    return NULL;
}

Test(support, sql_helpers_and_db_lifecycle) {
    char db[64];
    PGconn *c = it_db_create("itsupport", db, sizeof(db));

    cr_assert(strncmp(db, "itsupport_", 10) == 0, "unexpected name %s", db);
    it_exec(c,
            "CREATE TABLE t (id int PRIMARY KEY, note text); "
            "INSERT INTO t VALUES (1, 'one'), (2, %s)",
            "NULL");

    char *v = it_query_value(c, "SELECT count(*) FROM t");
    cr_assert_str_eq(v, "2");
    free(v);
    v = it_query_value(c, "SELECT note FROM t WHERE id = %d", 1);
    cr_assert_str_eq(v, "one");
    free(v);
    cr_assert_null(it_query_value(c, "SELECT note FROM t WHERE id = 2"), "NULL value -> NULL");
    cr_assert_null(it_query_value(c, "SELECT note FROM t WHERE id = 3"), "no row -> NULL");

    v = it_query_value(c, "SELECT current_database()");
    cr_assert_str_eq(v, db);
    free(v);
    v = it_query_value(c, "SHOW wal_level");
    cr_assert_str_eq(v, "logical", "the test server must run with wal_level=logical");
    free(v);

    PGresult *r = it_query(c, "SELECT id FROM t ORDER BY id");
    cr_assert_eq(PQntuples(r), 2);
    cr_assert_str_eq(PQgetvalue(r, 1, 0), "2");
    PQclear(r);
    cr_assert(it_wait_sql_true(c, 1000, "SELECT count(*) = 2 FROM t"));
    cr_assert_not(it_wait_sql_true(c, 100, "SELECT count(*) = 3 FROM t"));

    /* An inactive slot in the database must not stop it_db_drop. */
    it_exec(c, "SELECT pg_create_logical_replication_slot('itsupport_idle', 'pgoutput')");
    PQfinish(c);

    PGconn *admin = it_connect(NULL);
    it_db_drop(admin, db);
    v = it_query_value(admin, "SELECT count(*) FROM pg_database WHERE datname = '%s'", db);
    cr_assert_str_eq(v, "0", "database %s still exists", db);
    free(v);
    v = it_query_value(admin, "SELECT count(*) FROM pg_replication_slots WHERE database = '%s'",
                       db);
    cr_assert_str_eq(v, "0", "slots of %s still exist", db);
    free(v);
    it_db_drop(admin, db); /* dropping a missing database is a no-op */
    PQfinish(admin);
}

/*
 * A live walsender streaming from a slot (pg_recvlogical, test_decoding):
 * exercises line reading from a real streaming child, then it_db_drop must
 * terminate the walsender before dropping its slot and the database.
 */
Test(support, drop_with_active_walsender) {
    const char *recv = recvlogical_path();
    cr_assert(recv, "pg_recvlogical is missing (PostgreSQL's client programs: scripts/deps installs them)");

    char db[64];
    PGconn *c = it_db_create("itsupport", db, sizeof(db));
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    it_exec(c, "SELECT pg_create_logical_replication_slot('itsupport_live', 'test_decoding')");

    const char *const argv[] = {"pg_recvlogical",
                                "-d",
                                db,
                                "--slot",
                                "itsupport_live",
                                "--start",
                                "--no-loop",
                                "-f",
                                "-",
                                "-s",
                                "1",
                                "-o", /* another transaction of the database (an autovacuum's ANALYZE) would */
                                "skip-empty-xacts=1", /* come first as an empty BEGIN and COMMIT */
                                NULL};
    it_proc_t *p = it_proc_spawn(recv, argv);
    cr_assert(it_wait_sql_true(c, 10000,
                               "SELECT active FROM pg_replication_slots "
                               "WHERE slot_name = 'itsupport_live'"),
              "pg_recvlogical never became active");

    it_exec(c, "INSERT INTO t VALUES (42)");
    char *line = it_proc_read_line(p, 10000);
    cr_assert_not_null(line, "no output from pg_recvlogical");
    cr_assert(strncmp(line, "BEGIN ", 6) == 0, "got: %s", line);
    free(line);
    line = it_proc_read_line(p, 10000);
    cr_assert_str_eq(line, "table public.t: INSERT: id[integer]:42");
    free(line);
    line = it_proc_read_line(p, 10000);
    cr_assert(line != NULL && strncmp(line, "COMMIT ", 7) == 0, "got: %s", line);
    free(line);
    cr_assert(it_proc_no_line_within(p, 200));
    PQfinish(c);

    it_db_drop(NULL, db);
    int st = it_proc_wait(p, 10000);
    cr_assert(st > 0, "pg_recvlogical should fail once its walsender is gone (status %d)", st);
    it_proc_free(p);
}

Test(support, proc_json_stderr_exit_code) {
    const char *const argv[] = {"sh", "-c",
                                "echo '{\"a\":1,\"b\":{\"c\":[\"x\",null]}}'; "
                                "echo hello >&2; exit 3",
                                NULL};
    it_proc_t *p = it_proc_spawn("/bin/sh", argv);

    json_object *ev = it_proc_read_event(p, 5000);
    cr_assert_not_null(ev);
    cr_assert_eq(json_object_get_int(it_json_get(ev, "a")), 1);
    cr_assert_str_eq(it_json_str(ev, "a"), "1");
    cr_assert_str_eq(it_json_str(ev, "b.c.0"), "x");
    cr_assert_null(it_json_get(ev, "b.c.1"), "JSON null -> NULL");
    cr_assert(it_json_exists(ev, "b.c.1"), "a null value exists");
    cr_assert_not(it_json_exists(ev, "b.c.2"));
    cr_assert_null(it_json_str(ev, "b.missing"));
    cr_assert_null(it_json_str(ev, "a.deeper"));
    cr_assert_null(it_json_str(ev, "b.c.x"));
    json_object_put(ev);

    cr_assert_null(it_proc_read_line(p, 5000), "EOF after the only line");
    cr_assert_eq(it_proc_wait(p, 5000), 3);
    cr_assert_not(it_proc_running(p));
    char *err = it_proc_stderr(p);
    cr_assert_str_eq(err, "hello\n");
    free(err);
    cr_assert(it_proc_stderr_wait(p, "hell", 0));
    cr_assert_not(it_proc_stderr_wait(p, "absent", 1000), "exited child: false at once");
    it_proc_free(p);
}

Test(support, proc_lines_timeouts_and_signals) {
    const char *const argv[] = {"sh", "-c",
                                "printf 'one\\ntwo\\n'; sleep 0.3; printf 'three'; "
                                "echo ready >&2; exec sleep 30",
                                NULL};
    const char *const env[] = {"IT_SELFTEST=1", NULL};
    it_proc_t *p = it_proc_spawn_env("/bin/sh", argv, env);

    char *l = it_proc_read_line(p, 5000);
    cr_assert_str_eq(l, "one");
    free(l);
    l = it_proc_read_line(p, 5000);
    cr_assert_str_eq(l, "two");
    free(l);
    /* "three" never gets its newline while the child lives. */
    cr_assert(it_proc_stderr_wait(p, "ready", 5000));
    cr_assert(it_proc_no_line_within(p, 200));
    cr_assert_null(it_proc_read_line(p, 0));
    cr_assert(it_proc_running(p));
    cr_assert_eq(it_proc_wait(p, 100), -1, "timeout while running");

    cr_assert_eq(it_proc_signal_wait(p, SIGTERM, 5000), 128 + SIGTERM);
    /* At EOF the unterminated last line is still delivered. */
    l = it_proc_read_line(p, 1000);
    cr_assert_str_eq(l, "three");
    free(l);
    cr_assert_null(it_proc_read_line(p, 1000));
    it_proc_free(p);

    /* Extra environment reaches the child; "NAME" alone unsets. */
    const char *const envargv[] = {"sh", "-c", "echo \"$IT_SELFTEST-${HOME-unset}\"", NULL};
    const char *const env2[] = {"IT_SELFTEST=yes", "HOME", NULL};
    p = it_proc_spawn_env("/bin/sh", envargv, env2);
    l = it_proc_read_line(p, 5000);
    cr_assert_str_eq(l, "yes-unset");
    free(l);
    cr_assert_eq(it_proc_wait(p, 5000), 0);
    it_proc_free(p);

    /* Freeing a running child kills it (and its process group). */
    const char *const sleeper[] = {"sleep", "30", NULL};
    p = it_proc_spawn("/bin/sleep", sleeper);
    pid_t pid = it_proc_pid(p);
    it_proc_free(p);
    cr_assert_eq(kill(pid, 0), -1, "child %ld survived it_proc_free", (long)pid);
}

Test(support, run_one_shot_and_large_output) {
    char *out = NULL, *err = NULL;
    const char *const argv[] = {"sh", "-c", "echo out; echo err >&2; exit 0", NULL};

    cr_assert_eq(it_run("/bin/sh", argv, 5000, &out, &err), 0);
    cr_assert_str_eq(out, "out\n");
    cr_assert_str_eq(err, "err\n");
    free(out);
    free(err);

    /* More than a pipe's worth: it_proc_wait must keep draining stdout. */
    const char *const big[] = {"sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; echo; echo end",
                               NULL};
    it_proc_t *p = it_proc_spawn("/bin/sh", big);
    cr_assert_eq(it_proc_wait(p, 10000), 0);
    char *l = it_proc_read_line(p, 1000);
    cr_assert_not_null(l);
    cr_assert_eq(strlen(l), 300000);
    cr_assert_eq(strspn(l, "x"), 300000);
    free(l);
    l = it_proc_read_line(p, 1000);
    cr_assert_str_eq(l, "end");
    free(l);
    it_proc_free(p);

    /* A command that cannot be executed: status 127, reason on stderr. */
    const char *const nope[] = {"nope", NULL};
    cr_assert_eq(it_run("/nonexistent/nope", nope, 5000, NULL, &err), 127);
    cr_assert(strstr(err, "execve failed") != NULL, "stderr: %s", err);
    free(err);

    /* it_run_crwatch builds [CRW_BIN, args..., -d dbname='...']; check via CRW_BIN=/bin/echo. */
    setenv("CRW_BIN", "/bin/echo", 1);
    const char *const args[] = {"stream", "-X", "source=poll", NULL};
    cr_assert_eq(it_run_crwatch("db'x", args, 5000, &out, NULL), 0);
    cr_assert_str_eq(out, "stream -X source=poll -d dbname='db\\'x'\n");
    free(out);
    cr_assert_eq(it_run_crwatch(NULL, NULL, 5000, &out, NULL), 0);
    cr_assert_str_eq(out, "\n");
    free(out);
    unsetenv("CRW_BIN");
    cr_assert_str_eq(it_crwatch_path(), CRW_BIN);
}
