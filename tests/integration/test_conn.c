/*
 * test_conn.c — connecting, and what crwatch does when it cannot: connection
 * settings libpq refuses exit 2 before anything connects; a login the server
 * refuses (a wrong or missing password, a pg_hba.conf reject, a role or a
 * database that does not exist) exits 3 naming the user, or is retried with
 * reconnect.auth=retry; a server that does not answer is retried.  And
 * `crwatch check` for a role that may stream but not create the publication:
 * it fails naming the statement an owner runs, and passes once it ran.
 *
 * The wrong password needs scripts/pg's pg_hba.conf: crwatch_password logs
 * in with scram-sha-256 and crwatch_refused is rejected (every other role is
 * trusted).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/itest.h"

#define EV_TIMEOUT 15000
#define RUN_TIMEOUT 20000
#define PW_ROLE "crwatch_password"

static void expect_in(const char *text, const char *want, const char *what) {
    cr_assert(text && strstr(text, want), "%s: wanted '%s' in:\n%s", what, want, text ? text : "(nothing)");
}

static long long count_of(PGconn *c, const char *sql) {
    char *v = it_query_value(c, "%s", sql);
    long long n = v ? atoll(v) : -1;
    free(v);
    return n;
}

/* The role the server asks a password of (scripts/pg's pg_hba.conf), with password pw. */
static void password_role(PGconn *admin, const char *pw) {
    cr_assert_gt(count_of(admin, "SELECT count(*) FROM pg_hba_file_rules WHERE '" PW_ROLE "' = ANY (user_name) "
                                 "AND auth_method = 'scram-sha-256'"),
                 0, "pg_hba.conf has no scram-sha-256 line for " PW_ROLE ": start the cluster with scripts/pg");
    it_exec(admin, "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" PW_ROLE "') THEN "
                   "CREATE ROLE " PW_ROLE " LOGIN; END IF; END $$");
    it_exec(admin, "SET password_encryption = 'scram-sha-256'; ALTER ROLE " PW_ROLE " LOGIN PASSWORD '%s'", pw);
}

static void drop_role(const char *role) {
    PGconn *admin = it_connect(NULL);
    it_exec(admin, "DROP ROLE IF EXISTS %s", role);
    PQfinish(admin);
}

/* A TCP port on 127.0.0.1 where nothing listens (it was free a moment ago). */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
              getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* ---------------------------------------------------------------------- */

Test(conn, malformed_connection_settings_exit_2_naming_the_option, .timeout = 120) {
    char db[64], slot[128];
    PGconn *c = it_db_create("connbad", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    static const struct {
        const char *conninfo, *reason;
    } bad[] = {
        {"host=127.0.0.1 junk", "-d/--dbname: missing \"=\" after \"junk\" in connection info string"},
        {"postgresql://localhost:99999/db", "-d/--dbname: port \"99999\" is not a port number (1 to 65535)"},
        {"host=x foo=bar", "-d/--dbname: invalid connection option \"foo\""},
    };
    static const char *const commands[][2] = {{"stream", NULL}, {"check", NULL}, {"backfill", NULL},
                                              {"slot", "status"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++) {
            const char *args[10];
            int n = 0;
            args[n++] = commands[k][0];
            if (commands[k][1])
                args[n++] = commands[k][1];
            const char *rest[] = {"-X", "tables=public.t", "-X", slot, "-d", bad[i].conninfo, NULL};
            for (int r = 0; rest[r]; r++)
                args[n++] = rest[r];
            args[n] = NULL;
            char *out = NULL, *err = NULL;
            int rc = it_run_crwatch(NULL, args, RUN_TIMEOUT, &out, &err);
            cr_expect_eq(rc, 2, "%s -d '%s': exit %d\n%s", commands[k][0], bad[i].conninfo, rc, err);
            expect_in(err, "configuration error", bad[i].conninfo);
            expect_in(err, bad[i].reason, bad[i].conninfo);
            cr_expect_str_empty(out, "%s: nothing on stdout", commands[k][0]);
            free(out);
            free(err);
        }

    /* An option's value libpq refuses only when it connects: exit 2 at the first connection. */
    char conninfo[256];
    snprintf(conninfo, sizeof conninfo, "dbname=%s sslmode=bogus", db);
    const char *args[] = {"stream", "-X", "tables=public.t", "-X", slot, "-d", conninfo, NULL};
    char *err = NULL;
    cr_expect_eq(it_run_crwatch(NULL, args, RUN_TIMEOUT, NULL, &err), 2, "%s", err);
    expect_in(err, "conninfo: invalid sslmode value: \"bogus\"", "sslmode=bogus");
    free(err);
    cr_expect_eq(count_of(c, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = current_database()"), 0);
    cr_expect_eq(count_of(c, "SELECT count(*) FROM pg_publication"), 0, "nothing is touched");
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(conn, a_wrong_or_missing_password_exits_3_naming_the_user, .timeout = 120) {
    char db[64], slot[128], conninfo[256];
    PGconn *c = it_db_create("connpw", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    password_role(c, "right");
    snprintf(slot, sizeof slot, "slot.name=%s", db);

    snprintf(conninfo, sizeof conninfo, "dbname=%s user=" PW_ROLE " password=wrong", db);
    const char *stream[] = {"stream", "-X", "tables=public.t", "-X", slot, "-d", conninfo, NULL};
    char *out = NULL, *err = NULL;
    cr_assert_eq(it_run_crwatch(NULL, stream, RUN_TIMEOUT, NULL, &err), 3, "%s", err);
    expect_in(err, "login refused: authentication failed for user \"" PW_ROLE "\": ", "stream");
    expect_in(err, "FATAL:  password authentication failed for user \"" PW_ROLE "\"", "stream");
    cr_expect(!strstr(err, "retrying"), "a wrong password is not retried:\n%s", err);
    cr_expect(!strstr(err, "wrong"), "the password is never logged:\n%s", err);
    free(err);

    const char *backfill[] = {"backfill", "-X", "tables=public.t", "-X", slot, "-d", conninfo, NULL};
    cr_expect_eq(it_run_crwatch(NULL, backfill, RUN_TIMEOUT, NULL, &err), 3, "%s", err);
    expect_in(err, "password authentication failed", "backfill");
    free(err);

    const char *check[] = {"check", "-X", "tables=public.t", "-X", slot, "-d", conninfo, NULL};
    cr_expect_eq(it_run_crwatch(NULL, check, RUN_TIMEOUT, &out, &err), 3, "%s%s", out, err);
    expect_in(out, "FAIL  connection: authentication failed for user \"" PW_ROLE "\"", "check");
    free(out);
    free(err);

    /* No password at all (none in the conninfo, the environment or a .pgpass). */
    snprintf(conninfo, sizeof conninfo, "dbname=%s user=" PW_ROLE " passfile=/dev/null", db);
    cr_expect_eq(it_run_crwatch(NULL, stream, RUN_TIMEOUT, NULL, &err), 3, "%s", err);
    expect_in(err, "authentication failed for user \"" PW_ROLE "\": ", "no password");
    expect_in(err, "no password supplied", "no password");
    free(err);

    cr_expect_eq(count_of(c, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = current_database()"), 0);
    PQfinish(c);
    it_db_drop(NULL, db);
    drop_role(PW_ROLE);
}

Test(conn, a_refused_role_or_a_missing_role_or_database_exits_3, .timeout = 120) {
    char db[64], slot[128], conninfo[256];
    PGconn *c = it_db_create("connrole", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    static const struct {
        const char *fmt, *user, *reason;
    } cases[] = {
        {"dbname=%s user=crwatch_refused", "crwatch_refused", "FATAL:  pg_hba.conf rejects connection for host"},
        {"dbname=%s user=crwatch_no_such_role", "crwatch_no_such_role",
         "FATAL:  role \"crwatch_no_such_role\" does not exist"},
        {"dbname=%s_gone", NULL, "_gone\" does not exist"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(conninfo, sizeof conninfo, cases[i].fmt, db);
        const char *args[] = {"stream", "-X", "tables=public.t", "-X", slot, "-d", conninfo, NULL};
        char *err = NULL;
        cr_expect_eq(it_run_crwatch(NULL, args, RUN_TIMEOUT, NULL, &err), 3, "%s: %s", conninfo, err);
        expect_in(err, "login refused: ", conninfo);
        expect_in(err, cases[i].reason, conninfo);
        if (cases[i].user) {
            char want[128];
            snprintf(want, sizeof want, "authentication failed for user \"%s\"", cases[i].user);
            expect_in(err, want, conninfo);
        }
        free(err);
    }
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(conn, reconnect_auth_retry_waits_for_the_password, .timeout = 120) {
    char db[64], slot[128], conninfo[256];
    PGconn *c = it_db_create("connretry", db, sizeof db);
    it_apply_sql(db, "sql/crwatch.sql");
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    password_role(c, "old");
    it_exec(c, "SELECT crwatch.create_role('" PW_ROLE "', 'public.t')");
    it_exec(c, "SELECT crwatch.publish('crwatch', 'public.t')");
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    snprintf(conninfo, sizeof conninfo, "dbname=%s user=" PW_ROLE " password=rotated", db);
    const char *args[] = {"stream", "-X", "tables=public.t", "-X", slot, "-X", "reconnect.auth=retry",
                          "-X", "reconnect.backoff.max.ms=500", "-d", conninfo, NULL};
    it_proc_t *p = it_crwatch_start(NULL, args);
    cr_assert(it_proc_stderr_wait(p, "password authentication failed", EV_TIMEOUT), "no refused login");
    cr_assert(it_proc_stderr_wait(p, "retrying in", EV_TIMEOUT), "the refused login is not retried");
    usleep(1000 * 1000);
    cr_assert(it_proc_running(p), "crwatch gave up although reconnect.auth=retry");
    /* The server's side of a password rotation: the next attempt logs in. */
    it_exec(c, "ALTER ROLE " PW_ROLE " PASSWORD 'rotated'");
    if (!it_proc_stderr_wait(p, "streaming from slot", EV_TIMEOUT)) {
        it_proc_dump_stderr(p);
        cr_assert_fail("crwatch did not stream once the password was right");
    }
    it_exec(c, "INSERT INTO t VALUES (42)");
    json_object *ev = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(ev, "data.type", "ADDED");
    it_expect_str(ev, "subject", "42");
    json_object_put(ev);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
    drop_role(PW_ROLE);
}

Test(conn, a_server_that_does_not_answer_is_retried, .timeout = 60) {
    char conninfo[128];
    snprintf(conninfo, sizeof conninfo, "host=127.0.0.1 port=%d dbname=postgres", free_port());
    const char *args[] = {"stream", "-X", "tables=public.t", "-X", "slot.name=conn_no_server", "-d", conninfo,
                          NULL};
    it_proc_t *p = it_crwatch_start(NULL, args);
    cr_assert(it_proc_stderr_wait(p, "Connection refused", EV_TIMEOUT), "no refused connection");
    cr_assert(it_proc_stderr_wait(p, "retrying in", EV_TIMEOUT), "a refused connection is not retried");
    usleep(2000 * 1000);
    cr_assert(it_proc_running(p), "crwatch gave up on a server that may come back");
    char *log = it_proc_stderr(p);
    cr_expect(!strstr(log, "login refused") && !strstr(log, "configuration error"), "%s", log);
    free(log);
    it_crwatch_stop(p, 10000);
}

/* The statement `check` names as the fix: what follows "(or a superuser): " on its line. */
static char *fix_of(const char *out) {
    const char *f = strstr(out, "(or a superuser): ");
    cr_assert(f, "check names no fix:\n%s", out);
    f += strlen("(or a superuser): ");
    return strndup(f, strcspn(f, "\n"));
}

Test(conn, check_fails_for_a_role_that_cannot_publish_and_names_the_fix, .timeout = 180) {
    char db[64], role[80], slot[128], conninfo[256], want[512];
    PGconn *c = it_db_create("connlp", db, sizeof db);
    snprintf(role, sizeof role, "%s_lp", db);
    it_apply_sql(db, "sql/crwatch.sql");
    it_exec(c, "CREATE TABLE t7 (id int PRIMARY KEY, v text)");
    it_exec(c, "CREATE TABLE t8 (id int PRIMARY KEY)");
    drop_role(role);
    it_exec(c, "SELECT crwatch.create_role('%s', 'public.t7')", role);
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    snprintf(conninfo, sizeof conninfo, "dbname=%s user=%s", db, role);
    char *owner = it_query_value(c, "SELECT current_user");

    /* No publication, and the role may not create it: check says so, with the statement for the owner. */
    const char *check[] = {"check", "-X", "tables=public.t7", "-X", "publication.name=p7", "-X", slot,
                           "-d", conninfo, NULL};
    char *out = NULL, *err = NULL;
    cr_assert_eq(it_run_crwatch(NULL, check, RUN_TIMEOUT, &out, &err), 3, "%s%s", out, err);
    snprintf(want, sizeof want,
             "FAIL  publication p7 does not exist (for public.t7) and role %s may not create it: that takes the "
             "CREATE privilege on database %s and owning public.t7; run, as %s (or a superuser): "
             "SELECT crwatch.publish('p7', 'public.t7')\n",
             role, db, owner);
    expect_in(out, want, "check");
    char *fix = fix_of(out);
    free(out);
    free(err);

    /* stream and slot create fail the same way, naming the same fix, and leave no slot behind. */
    const char *stream[] = {"stream", "-X", "tables=public.t7", "-X", "publication.name=p7", "-X", slot,
                            "-d", conninfo, NULL};
    cr_assert_eq(it_run_crwatch(NULL, stream, RUN_TIMEOUT, NULL, &err), 3, "%s", err);
    expect_in(err, "permission denied for database", "stream");
    expect_in(err, fix, "stream");
    free(err);
    const char *create[] = {"slot", "create", "-X", "tables=public.t7", "-X", "publication.name=p7", "-X", slot,
                            "-d", conninfo, NULL};
    cr_assert_eq(it_run_crwatch(NULL, create, RUN_TIMEOUT, NULL, &err), 3, "%s", err);
    expect_in(err, fix, "slot create");
    free(err);
    cr_assert_eq(count_of(c, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = current_database()"), 0);

    /* The owner runs what check named: check passes, and stream streams as the role. */
    it_exec(c, "%s", fix);
    free(fix);
    cr_assert_eq(it_run_crwatch(NULL, check, RUN_TIMEOUT, &out, &err), 0, "%s%s", out, err);
    expect_in(out, "ok    publication p7: 1 table(s)\n", "check after the fix");
    expect_in(out, "replica identity DEFAULT (old key only: no oldObject, the kind is not cached)\n", "check");
    cr_expect(!strstr(out, "FAIL"), "%s", out);
    free(out);
    free(err);
    /* With cache.max.entries row kinds are cached too: check says where oldObject comes from. */
    const char *cached[] = {"check", "-X", "tables=public.t7", "-X", "publication.name=p7", "-X", slot,
                            "-X", "cache.max.entries=100", "-d", conninfo, NULL};
    cr_assert_eq(it_run_crwatch(NULL, cached, RUN_TIMEOUT, &out, &err), 0, "%s%s", out, err);
    expect_in(out, "replica identity DEFAULT (old key only; oldObject from the resource cache)\n", "check, cached");
    free(out);
    free(err);
    it_proc_t *p = it_crwatch_start(NULL, stream);
    if (!it_proc_stderr_wait(p, "streaming from slot", EV_TIMEOUT)) {
        it_proc_dump_stderr(p);
        cr_assert_fail("crwatch did not stream as %s", role);
    }
    it_exec(c, "INSERT INTO t7 VALUES (7, 'seven')");
    json_object *ev = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(ev, "data.type", "ADDED");
    it_expect_str(ev, "data.object.v", "seven");
    json_object_put(ev);
    it_crwatch_stop(p, 10000);

    /* A second table the publication lacks, which the role may read but not add: the same, for ADD TABLE. */
    it_exec(c, "SELECT crwatch.create_role('%s', 'public.t7', 'public.t8')", role);
    const char *check2[] = {"check", "-X", "tables=public.t7,public.t8", "-X", "publication.name=p7", "-X", slot,
                            "-d", conninfo, NULL};
    cr_assert_eq(it_run_crwatch(NULL, check2, RUN_TIMEOUT, &out, &err), 3, "%s%s", out, err);
    snprintf(want, sizeof want,
             "FAIL  publication p7 lacks public.t8 and role %s may not extend it: that takes owning the publication "
             "(its owner is %s) and owning public.t8; run, as %s (or a superuser): "
             "SELECT crwatch.publish('p7', 'public.t8')\n",
             role, owner, owner);
    expect_in(out, want, "check, a table missing from the publication");
    fix = fix_of(out);
    free(out);
    free(err);
    it_exec(c, "%s", fix);
    free(fix);
    cr_assert_eq(it_run_crwatch(NULL, check2, RUN_TIMEOUT, &out, &err), 0, "%s%s", out, err);
    expect_in(out, "ok    publication p7: 2 table(s)\n", "check after the second fix");
    free(out);
    free(err);

    free(owner);
    PQfinish(c);
    it_db_drop(NULL, db);
    drop_role(role);
}

/* A publication that exists: the watched tables it has are left alone, those it lacks are added (one
 * statement), or refused with publication.create=false; its tables are listed once, not queried one by one. */
Test(conn, an_existing_publication_gets_the_tables_it_lacks, .timeout = 120) {
    char db[64], slot[128], conninfo[256];
    PGconn *c = it_db_create("connpub", db, sizeof db);
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    snprintf(conninfo, sizeof conninfo, "dbname=%s", db);
    it_exec(c, "CREATE SCHEMA other");
    it_exec(c, "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)");
    it_exec(c, "CREATE TABLE other.a (id int PRIMARY KEY); CREATE TABLE c (id int PRIMARY KEY)");
    it_exec(c, "CREATE PUBLICATION pp FOR TABLE a");
    const char *pubcount = "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'pp'";

    /* It has a: nothing to do. */
    const char *has[] = {"slot", "create", "-X", "tables=public.a", "-X", "publication.name=pp", "-X", slot,
                         "-d", conninfo, NULL};
    char *err = NULL;
    cr_assert_eq(it_run_crwatch(NULL, has, RUN_TIMEOUT, NULL, &err), 0, "%s", err);
    cr_expect(!strstr(err, "added"), "%s", err);
    free(err);
    cr_assert_eq(count_of(c, pubcount), 1);
    it_exec(c, "SELECT pg_drop_replication_slot('%s')", db);

    /* It lacks b and other.a (same table name, another schema): both added, a kept. */
    const char *lacks[] = {"slot", "create", "-X", "tables=public.a,public.b,other.a", "-X",
                           "publication.name=pp", "-X", slot, "-d", conninfo, NULL};
    cr_assert_eq(it_run_crwatch(NULL, lacks, RUN_TIMEOUT, NULL, &err), 0, "%s", err);
    expect_in(err, "publication pp: added 2 table(s)", "ADD TABLE");
    free(err);
    cr_assert_eq(count_of(c, pubcount), 3);
    cr_assert_eq(count_of(c, "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'pp' AND "
                             "schemaname = 'other' AND tablename = 'a'"), 1);
    it_exec(c, "SELECT pg_drop_replication_slot('%s')", db);

    /* publication.create=false: a lacking table is an error naming it, and nothing changes. */
    const char *refused[] = {"slot", "create", "-X", "tables=public.a,public.c", "-X", "publication.name=pp",
                             "-X", "publication.create=false", "-X", slot, "-d", conninfo, NULL};
    cr_assert_eq(it_run_crwatch(NULL, refused, RUN_TIMEOUT, NULL, &err), 3, "%s", err);
    expect_in(err, "publication pp does not include public.c and publication.create=false", "refused");
    free(err);
    cr_assert_eq(count_of(c, pubcount), 3);
    cr_assert_eq(count_of(c, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = current_database()"), 0);

    PQfinish(c);
    it_db_drop(NULL, db);
}
