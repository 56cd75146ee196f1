/*
 * test_hostile.c — what a database may hold or do that must not break
 * crwatch's output or leak it: bytes that are not UTF-8 in a SQL_ASCII
 * database (every byte crwatch writes stays valid UTF-8 JSON, in both event
 * formats and in the dead-letter file), files of row data readable by their
 * owner only, a server restart that the log names, a 50 MiB value that
 * streams intact in bounded memory, and a sink that holds the stream back
 * longer than TCP's user timeout.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json_assert.h"
#include "support/itest.h"

#define EV_TIMEOUT 15000
#define FFFD "\xef\xbf\xbd"

/* Offset of the first byte of s[0..n) that is not part of valid UTF-8 (RFC 3629: no overlongs, no surrogates,
 * nothing past U+10FFFF), or -1.  Written here, apart from crwatch's own validator, on purpose. */
static long bad_utf8_at(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n)
            return (long)i;
        uint32_t cp = len == 1 ? c : c & (0x7f >> len);
        for (size_t k = 1; k < len; k++) {
            if ((u[i + k] & 0xc0) != 0x80)
                return (long)i;
            cp = cp << 6 | (u[i + k] & 0x3f);
        }
        static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return (long)i;
        i += len;
    }
    return -1;
}

/* Asserts that line is valid UTF-8 and one JSON value, and returns it parsed. */
static json_object *parse_valid(const char *line, const char *what) {
    cr_assert(line, "no %s", what);
    size_t n = strlen(line);
    long bad = bad_utf8_at(line, n);
    cr_assert_eq(bad, -1, "%s: byte 0x%02x at offset %ld is not UTF-8: %.300s", what,
                 bad >= 0 ? (unsigned char)line[bad] : 0, bad, line);
    assert_json(line, n);
    json_object *o = json_tokener_parse(line);
    cr_assert(o);
    return o;
}

/* ---- a SQL_ASCII database --------------------------------------------- */

/* A fresh database in SQL_ASCII, where PostgreSQL checks no encoding at all: its name into name[0..n). */
static PGconn *ascii_db_create(const char *prefix, char *name, size_t n) {
    static unsigned counter;
    snprintf(name, n, "%s_%ld_%u", prefix, (long)getpid(), ++counter);
    PGconn *admin = it_connect(NULL);
    it_db_drop(admin, name);
    it_exec(admin, "CREATE DATABASE %s ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'", name);
    PQfinish(admin);
    return it_connect(name);
}

/* A column of each json kind, and text. */
static void create_hostile_table(PGconn *c) {
    it_exec(c, "CREATE TABLE u (id int PRIMARY KEY, t text, j jsonb, js json, ja jsonb[], jsa json[])");
}

/* Bytes that are not UTF-8 in every column (E'' escapes: the server makes the bytes). */
static void insert_hostile_values(PGconn *c) {
    it_exec(c, "INSERT INTO u VALUES (4, E'caf\\xe9', E'{\"k\":\"\\xff\", \"\\xfe\": [1, \"a\\x80b\"]}',"
               " E'{\"k\" : \"\\xc3\", \"ok\": \"\\xc3\\xa9\"}',"
               " ARRAY[E'{\"a\":\"\\xff\"}'::jsonb, '{\"b\":1}'::jsonb], ARRAY[E'\"\\xf0\\x9f\"'::json])");
}

static it_proc_t *stream_u(const char *db, const char *format) {
    char fmt[64];
    snprintf(fmt, sizeof fmt, "event.format=%s", format);
    const char *xs[] = {"tables=public.u", fmt, NULL};
    return it_crwatch_stream(db, xs, NULL);
}

Test(hostile, sql_ascii_json_values_come_out_as_valid_utf8) {
    char db[64];
    PGconn *c = ascii_db_create("hostilece", db, sizeof db);
    create_hostile_table(c);
    it_proc_t *p = stream_u(db, "cloudevents");
    insert_hostile_values(c);
    char *line = it_proc_read_line(p, EV_TIMEOUT);
    json_object *ev = parse_valid(line, "the event");
    it_expect_str(ev, "subject", "4");
    it_expect_str(ev, "data.object.t", "caf" FFFD);
    /* jsonb: the value and the key of a member, an element of an array inside */
    it_expect_str(ev, "data.object.j.k", FFFD);
    it_expect_str(ev, "data.object.j." FFFD ".1", "a" FFFD "b");
    it_expect_str(ev, "data.object.j." FFFD ".0", "1");
    /* json: a sequence cut short; valid UTF-8 stays as it was */
    it_expect_str(ev, "data.object.js.k", FFFD);
    it_expect_str(ev, "data.object.js.ok", "\xc3\xa9");
    /* jsonb[] and json[] */
    it_expect_str(ev, "data.object.ja.0.a", FFFD);
    it_expect_str(ev, "data.object.ja.1.b", "1");
    it_expect_str(ev, "data.object.jsa.0", FFFD FFFD);
    json_object_put(ev);
    free(line);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(hostile, sql_ascii_json_values_come_out_as_valid_utf8_in_debezium_format) {
    char db[64];
    PGconn *c = ascii_db_create("hostiledbz", db, sizeof db);
    create_hostile_table(c);
    it_proc_t *p = stream_u(db, "debezium");
    insert_hostile_values(c);
    char *line = it_proc_read_line(p, EV_TIMEOUT);
    json_object *ev = parse_valid(line, "the event");
    it_expect_str(ev, "op", "c");
    it_expect_str(ev, "after.t", "caf" FFFD);
    /* io.debezium.data.Json: the document's text, in a string */
    const char *j = it_json_str(ev, "after.j");
    cr_assert(j && strstr(j, "\"k\": \"" FFFD "\"") && strstr(j, "\"a" FFFD "b\""), "after.j: %s", j ? j : "(none)");
    const char *js = it_json_str(ev, "after.js");
    cr_assert(js && strstr(js, "\"" FFFD "\"") && strstr(js, "\xc3\xa9"), "after.js: %s", js ? js : "(none)");
    const char *ja = it_json_str(ev, "after.ja.0");
    cr_assert(ja && strstr(ja, FFFD), "after.ja: %s", ja ? ja : "(none)");
    const char *jsa = it_json_str(ev, "after.jsa.0");
    cr_assert(jsa && strstr(jsa, FFFD FFFD), "after.jsa: %s", jsa ? jsa : "(none)");
    json_object_put(ev);
    free(line);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* ---- files of row data ------------------------------------------------ */

Test(hostile, dead_letter_file_is_for_its_owner_only_and_valid_utf8) {
    char db[64], dir[] = "/tmp/crw-hostile-XXXXXX", path[128], dl[160];
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/dead.jsonl", dir);
    snprintf(dl, sizeof dl, "deadletter.file=%s", path);
    PGconn *c = ascii_db_create("hostiledl", db, sizeof db);
    it_exec(c, "CREATE TABLE res (namespace text, name text, spec jsonb, status jsonb, PRIMARY KEY (namespace, name))");
    /* crwatch inherits umask 0: the mode of the file is then the one it asks for. */
    mode_t old = umask(0);
    const char *xs[] = {"resource.r.table=public.res", "resource.r.shape=crd", dl, NULL};
    it_proc_t *p = it_crwatch_stream(db, xs, NULL);
    umask(old);
    /* spec not an object: dead-lettered with its raw row, whose bytes are not UTF-8 */
    it_exec(c, "INSERT INTO res VALUES ('n', E'bad\\xff', E'[1, \"\\xfe\"]', null)");
    it_exec(c, "INSERT INTO res VALUES ('n', 'good', '{}', null)");
    json_object *ev = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(ev, "data.object.metadata.name", "good");
    json_object_put(ev);
    it_crwatch_stop(p, 10000);

    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "no dead-letter file");
    cr_assert_eq(st.st_mode & 07777, 0600, "dead-letter file mode %04o", (unsigned)(st.st_mode & 07777));
    FILE *f = fopen(path, "r");
    cr_assert(f);
    char buf[8192];
    cr_assert(fgets(buf, sizeof buf, f), "the dead-letter file is empty");
    buf[strcspn(buf, "\n")] = '\0';
    json_object *rec = parse_valid(buf, "the dead-letter record");
    it_expect_str(rec, "payload.new.name", "bad" FFFD);
    const char *spec = it_json_str(rec, "payload.new.spec");
    cr_assert(spec && strstr(spec, FFFD), "payload.new.spec: %s", spec ? spec : "(none)");
    json_object_put(rec);
    cr_assert_null(fgets(buf, sizeof buf, f), "one record expected");
    fclose(f);
    unlink(path);
    rmdir(dir);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* ---- a server restart ------------------------------------------------- */

/* A throwaway server of this test's own: restarting the shared one would disturb whatever else uses it. */
static char own_dir[64];

static void own_server_stop(void) {
    if (!own_dir[0])
        return;
    char pg[4096];
    snprintf(pg, sizeof pg, "%s/scripts/pg", CRW_SOURCE_DIR);
    const char *stop[] = {pg, "stop", own_dir, NULL};
    it_run(pg, stop, 120000, NULL, NULL);
    const char *rm[] = {"rm", "-rf", own_dir, NULL};
    it_run("/bin/rm", rm, 60000, NULL, NULL);
    own_dir[0] = '\0';
}

/* Starts the server and points this test process (and the crwatch it starts) at it. */
static void own_server_start(void) {
    snprintf(own_dir, sizeof own_dir, "/tmp/crw-pg-XXXXXX");
    cr_assert(mkdtemp(own_dir));
    char pg[4096], *err = NULL;
    snprintf(pg, sizeof pg, "%s/scripts/pg", CRW_SOURCE_DIR);
    const char *start[] = {pg, "start", own_dir, NULL};
    int rc = it_run(pg, start, 120000, NULL, &err);
    cr_assert_eq(rc, 0, "scripts/pg start failed: %s", err);
    free(err);
    char envpath[128], line[256], port[16] = "";
    snprintf(envpath, sizeof envpath, "%s/env", own_dir);
    FILE *f = fopen(envpath, "r");
    cr_assert(f, "no %s", envpath);
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "export PGPORT=%15s", port) == 1)
            break;
    fclose(f);
    cr_assert(port[0], "no port in %s", envpath);
    setenv("PGHOST", "127.0.0.1", 1);
    setenv("PGPORT", port, 1);
}

/* pg_ctl restart -m fast, as the server's own OS user. */
static void own_server_restart(void) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "d=\"${PG_BINDIR:-/usr/lib/postgresql/15/bin}\"; [ -x \"$d/pg_ctl\" ] || d=\"$(pg_config --bindir)\"; "
             "cd %1$s && set -- \"$d/pg_ctl\" restart -D %1$s/data -m fast -w -t 60 -s -l %1$s/server.log; "
             "if [ \"$(id -u)\" = 0 ]; then exec runuser -u \"$(stat -c %%U %1$s/data)\" -- \"$@\"; else exec \"$@\"; fi",
             own_dir);
    const char *argv[] = {"sh", "-c", cmd, NULL};
    char *err = NULL;
    int rc = it_run("/bin/sh", argv, 120000, NULL, &err);
    cr_assert_eq(rc, 0, "pg_ctl restart failed: %s", err);
    free(err);
}

Test(hostile, a_server_restart_is_logged_with_its_reason, .fini = own_server_stop, .timeout = 240) {
    own_server_start();
    char db[64];
    PGconn *c = it_db_create("hostilerestart", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    const char *xs[] = {"tables=public.t", NULL};
    it_proc_t *p = it_crwatch_stream(db, xs, NULL);
    it_exec(c, "INSERT INTO t VALUES (1)");
    json_object *ev = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(ev, "subject", "1");
    json_object_put(ev);
    PQfinish(c);

    own_server_restart();
    cr_assert(it_proc_stderr_wait(p, "; reconnecting", 30000), "no reconnect logged");
    char *log = it_proc_stderr(p);
    const char *at = strstr(log, "replication stream ended:");
    cr_assert(at, "the end of the stream is not logged: %s", log);
    at += strlen("replication stream ended:");
    size_t len = strcspn(at, ";\n");
    cr_assert_eq(at[len], ';', "%s", log);
    size_t sp = strspn(at, " ");
    cr_assert(sp < len, "the log gives no reason: \"replication stream ended:%.*s\"", (int)len, at);
    free(log);

    /* and the stream goes on (1 may come again: it need not have been confirmed before the restart) */
    c = it_connect(db);
    it_exec(c, "INSERT INTO t VALUES (2)");
    for (;;) {
        ev = it_proc_expect_event(p, 30000);
        const char *k = it_json_str(ev, "subject");
        cr_assert(k && (!strcmp(k, "1") || !strcmp(k, "2")), "unexpected event %s", k ? k : "(none)");
        bool two = !strcmp(k, "2");
        json_object_put(ev);
        if (two)
            break;
    }
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* ---- a 50 MiB value ---------------------------------------------------- */

#define BIG_VALUE (50L << 20)

/* The child's peak resident set (VmHWM), in bytes; -1 when unknown. */
static long peak_rss(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/*
 * The bound is twice the value, the process's own memory included.  The
 * CopyData message is read once, into the replication stream's own buffer
 * (libpq would hold it twice: pg_recvlogical, writing the same message to
 * /dev/null, peaks at 2.2 times); the object is rendered straight into the
 * event, and the value's pages go back to the system as it is escaped, so
 * the value and the event are not resident whole at once.  A copy of either
 * (libpq's reading, an object rendered apart, a copy into the stdout sink's
 * buffer) brings it past 2.  Over TLS libpq reads the stream, and holds the
 * message twice: the bound is 3 times there.
 */
Test(hostile, a_50_mib_value_streams_intact_in_bounded_memory, .timeout = 240) {
    char db[64];
    PGconn *c = it_db_create("hostilebig", db, sizeof db);
    /* md5 chains do not compress like repeat() does; EXTERNAL spares the compression attempt on insert */
    it_exec(c, "CREATE TABLE big (id int PRIMARY KEY, t text); ALTER TABLE big ALTER t SET STORAGE EXTERNAL");
    const char *xs[] = {"tables=public.big", NULL};
    it_proc_t *p = it_crwatch_stream(db, xs, NULL);
    it_exec(c, "INSERT INTO big SELECT 1, string_agg(md5(g::text), '') FROM generate_series(1, %ld) g", BIG_VALUE / 32);
    char *line = it_proc_read_line(p, 120000);
    cr_assert(line, "no event for the 50 MiB row");
    long peak = peak_rss(it_proc_pid(p));

    /* the value, whole: its length, and slices of its start, middle and end */
    const char *v = strstr(line, "\"object\":{\"id\":1,\"t\":\"");
    cr_assert(v, "no object in %.300s", line);
    v += strlen("\"object\":{\"id\":1,\"t\":\"");
    const char *end = strchr(v, '"');
    cr_assert(end);
    cr_assert_eq((long)(end - v), BIG_VALUE, "the value came out %ld bytes long", (long)(end - v));
    cr_assert_str_eq(end, "\"}}}", "the event goes on after the object: %.300s", end);
    PGresult *r = it_query(c, "SELECT left(t, 64), substr(t, %ld, 64), right(t, 64) FROM big", BIG_VALUE / 2);
    cr_assert_eq(strncmp(v, PQgetvalue(r, 0, 0), 64), 0);
    cr_assert_eq(strncmp(v + BIG_VALUE / 2 - 1, PQgetvalue(r, 0, 1), 64), 0);
    cr_assert_eq(strncmp(end - 64, PQgetvalue(r, 0, 2), 64), 0);
    PQclear(r);
    assert_json(line, strlen(line));
    free(line);

    cr_assert_gt(peak, 0, "no peak RSS for crwatch");
    cr_log_info("a %ld MiB value: crwatch peaked at %.1f MiB (%.2f times the value)", BIG_VALUE >> 20,
                (double)peak / (1 << 20), (double)peak / (double)BIG_VALUE);
#if defined(__SANITIZE_ADDRESS__)
    cr_log_info("the bound is not checked: AddressSanitizer's allocator keeps freed memory and copies on realloc");
#else
    char *ssl = it_query_value(c, "SELECT ssl FROM pg_stat_ssl JOIN pg_replication_slots ON pid = active_pid "
                                  "WHERE slot_name = '%s'", db);
    bool tls = ssl && !strcmp(ssl, "t");
    free(ssl);
    cr_assert_lt(peak, BIG_VALUE * (tls ? 3 : 2), "crwatch peaked at %.1f MiB for a %ld MiB value%s",
                 (double)peak / (1 << 20), BIG_VALUE >> 20, tls ? " over TLS" : "");
#endif
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/*
 * A sink that holds crwatch back for longer than the 9 s of the lock
 * session's tcp_user_timeout: crwatch stops reading the replication
 * connection (its window closes under a 30 MB backlog), and the connection
 * must outlive it.  Then everything arrives, over the same connection.
 */
Test(hostile, a_sink_holding_the_stream_back_15_s_keeps_the_replication_connection, .timeout = 240) {
    char dir[] = "/tmp/crw-hold.XXXXXX", db[64], script[1024], cmd[1400], path[600];
    cr_assert(mkdtemp(dir));
    /* exec handler: the first event waits for $dir/go; every event is counted */
    snprintf(script, sizeof script,
             "d=\"$1\"\n"
             "while IFS= read -r line; do\n"
             "  while [ ! -e \"$d/go\" ]; do sleep 0.1; done\n"
             "  echo x >> \"$d/seen\"\n"
             "  echo ok\n"
             "done\n");
    snprintf(path, sizeof path, "%s/h.sh", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(script, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "exec.command=sh %s %s", path, dir);
    PGconn *c = it_db_create("hhold", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    const char *xs[] = {"tables=public.t", "sink=exec", cmd, "workers=1", NULL};
    it_proc_t *p = it_crwatch_stream(db, xs, NULL);
    it_exec(c, "INSERT INTO t SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 30000) g");
    sleep(15);
    snprintf(path, sizeof path, "%s/go", dir);
    f = fopen(path, "w");
    cr_assert(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/seen", dir);
    long seen = 0;
    for (int i = 0; i < 900 && seen < 30000; i++) {
        usleep(100 * 1000);
        seen = 0;
        if ((f = fopen(path, "r"))) {
            for (int ch; (ch = fgetc(f)) != EOF;)
                seen += ch == '\n';
            fclose(f);
        }
    }
    cr_expect_eq(seen, 30000, "%ld of 30000 events", seen);
    char *log = it_proc_stderr(p);
    cr_expect_null(strstr(log, "replication stream ended"), "the connection was dropped:\n%s", log);
    cr_expect_null(strstr(log, "connection lost"), "%s", log);
    free(log);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    cr_expect_eq(system(rm), 0);
}
