/*
 * test_handlers.c — local handlers against a real PostgreSQL: sink=exec
 * (stream and per-event modes), sink=plugin (the example plugin, and a
 * wrong-ABI build of it), and the embedding API (the example program, and
 * crw_watch_* in this process).
 *
 * Handlers are small shell scripts written into a temp dir per test; they
 * log what they see to files the test reads.  What matters most is checked
 * on the server: pg_replication_slots.confirmed_flush_lsn must not pass a
 * change a handler has not finished, and must pass it once it has.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <crwatch/crwatch.h>

#include "support/itest.h"

#define EV_TIMEOUT 20000

/* ---- helpers ----------------------------------------------------------------------------- */

static void tmpdir(char *out, size_t n) {
    snprintf(out, n, "%s/crwh.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    cr_assert(mkdtemp(out), "mkdtemp");
    chmod(out, 0755);
}

static void rmtree(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static void write_file(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

/* The file's content, malloc'd ("" when missing). */
static char *read_file(const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    char buf[4096];
    size_t r;
    while ((r = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, r, m);
    fclose(f);
    fclose(m);
    return text;
}

static int count_lines_with(const char *text, const char *needle) {
    int n = 0;
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t l = nl ? (size_t)(nl - line) : strlen(line);
        if (!needle || memmem(line, l, needle, strlen(needle)))
            n++;
        line = nl ? nl + 1 : NULL;
    }
    return n;
}

/* Waits until file dir/name has at least n lines containing needle (NULL: any line). */
static bool wait_lines(const char *dir, const char *name, const char *needle, int n, int timeout_ms) {
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        char *t = read_file(dir, name);
        int got = count_lines_with(t, needle);
        free(t);
        if (got >= n)
            return true;
        usleep(20 * 1000);
    }
    return false;
}

static bool file_exists(const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

/* Starts crwatch on db (slot named after it) with tables=public.t and extra -X settings. */
static it_proc_t *start_crwatch(const char *db, const char *const *settings) {
    static const char *const base[] = {"tables=public.t", "status.interval.ms=100", NULL};
    return it_crwatch_stream(db, base, settings);
}

/* Field idx (0-based, split on spaces and tabs) of the first line of dir/name containing needle; malloc'd. */
static char *field_of(const char *dir, const char *name, const char *needle, int idx) {
    char *text = read_file(dir, name);
    char *line = strstr(text, needle);
    cr_assert(line, "%s: no line with '%s':\n%s", name, needle, text);
    while (line > text && line[-1] != '\n')
        line--;
    for (int i = 0; i < idx; i++) {
        line += strcspn(line, " \t\n");
        cr_assert(*line == ' ' || *line == '\t', "%s: line with '%s' has no field %d", name, needle, idx);
        line++;
    }
    char *f = strndup(line, strcspn(line, " \t\n"));
    free(text);
    return f;
}

/* The commit LSN of an event id "X/Y/ordinal", malloc'd "X/Y". */
static char *commit_lsn_of(const char *id) {
    const char *slash = strchr(id, '/');
    cr_assert(slash && strchr(slash + 1, '/'), "not an event id: %s", id);
    return strndup(id, (size_t)(strchr(slash + 1, '/') - id));
}

/* The commit LSN of the event whose id is field idx of the line with needle. */
static char *commit_lsn_in(const char *dir, const char *name, const char *needle, int idx) {
    char *id = field_of(dir, name, needle, idx);
    char *lsn = commit_lsn_of(id);
    free(id);
    return lsn;
}

/* The slot is confirmed beyond a change's commit LSN: the change is acknowledged. */
static bool slot_confirmed_beyond(PGconn *c, const char *db, const char *commit_lsn, int timeout_ms) {
    return it_wait_sql_true(c, timeout_ms,
                            "SELECT confirmed_flush_lsn > '%s'::pg_lsn FROM pg_replication_slots WHERE slot_name = "
                            "'%s'",
                            commit_lsn, db);
}

/* Asserts the slot is not confirmed beyond a change's commit LSN. */
static void assert_not_confirmed(PGconn *c, const char *db, const char *commit_lsn) {
    char *v = it_query_value(c,
                             "SELECT confirmed_flush_lsn::text || ' ' || (confirmed_flush_lsn <= '%s'::pg_lsn)::text "
                             "FROM pg_replication_slots WHERE slot_name = '%s'",
                             commit_lsn, db);
    cr_assert(v && strstr(v, " true"), "slot confirmed %s, beyond the unfinished change committed at %s", v,
              commit_lsn);
    free(v);
}

static void stop_crwatch(it_proc_t *p) { it_crwatch_stop(p, 20000); }

/* Shell fragments the handler scripts share: the event id and subject of $line. */
#define SH_FIELDS                                                                                                      \
    "  id=${line#*\\\"id\\\":\\\"}; id=${id%%%%\\\"*}\n"                                                               \
    "  key=${line#*\\\"subject\\\":\\\"}; key=${key%%%%\\\"*}\n"

/* ---- exec, stream mode ------------------------------------------------------------------------ */

Test(handlers, exec_retry_twice_then_ok_confirms_only_after_the_third_attempt) {
    char dir[256], db[64], script[2048], cmd[600];
    tmpdir(dir, sizeof dir);
    /* key 1: retry, retry, then wait for $dir/go and answer ok; other keys: ok. */
    snprintf(script, sizeof script,
             "d=\"$1\"\n"
             "while IFS= read -r line; do\n" SH_FIELDS "  echo \"$id $key\" >> \"$d/seen\"\n"
             "  if [ \"$key\" = 1 ]; then\n"
             "    n=$(grep -c \"^$id \" \"$d/seen\")\n"
             "    if [ \"$n\" -lt 3 ]; then echo \"retry not yet ($n)\"; continue; fi\n"
             "    while [ ! -e \"$d/go\" ]; do sleep 0.05; done\n"
             "  fi\n"
             "  echo ok\n"
             "done\n");
    write_file(dir, "h.sh", script);
    snprintf(cmd, sizeof cmd, "exec.command=sh %s/h.sh %s", dir, dir);
    PGconn *c = it_db_create("hretry", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    /* Two workers: key 2 must get through while key 1's third attempt hangs. */
    const char *set[] = {"sink=exec", cmd, "workers=2", "retry.backoff.initial.ms=50", "retry.backoff.max.ms=100",
                         NULL};
    it_proc_t *p = start_crwatch(db, set);

    it_exec(c, "INSERT INTO t VALUES (1, 'a')");
    cr_assert(wait_lines(dir, "seen", " 1", 3, EV_TIMEOUT), "key 1 was not delivered three times");
    it_exec(c, "INSERT INTO t VALUES (2, 'b')");
    cr_assert(wait_lines(dir, "seen", " 2", 1, EV_TIMEOUT), "key 2 was not delivered");
    char *lsn_a = commit_lsn_in(dir, "seen", " 1", 0), *lsn_b = commit_lsn_in(dir, "seen", " 2", 0);
    /* The third attempt of key 1 is in progress; key 2 is done.  Give crwatch
     * many status intervals (100 ms): the slot must stay before change 1. */
    usleep(800 * 1000);
    assert_not_confirmed(c, db, lsn_a);

    write_file(dir, "go", "");
    cr_assert(slot_confirmed_beyond(c, db, lsn_b, EV_TIMEOUT), "slot not confirmed past both changes after the ok");
    stop_crwatch(p);
    char *seen = read_file(dir, "seen");
    cr_assert_eq(count_lines_with(seen, " 1"), 3, "key 1 seen %d times:\n%s", count_lines_with(seen, " 1"), seen);
    cr_assert_eq(count_lines_with(seen, " 2"), 1, "%s", seen);
    /* The same event (same id) each time. */
    char first[128];
    sscanf(seen, "%127s", first);
    cr_assert_eq(count_lines_with(seen, first), 3, "%s", seen);
    free(seen);
    free(lsn_a);
    free(lsn_b);
    PQfinish(c);
    it_db_drop(NULL, db);
    rmtree(dir);
}

Test(handlers, exec_stream_child_killed_mid_event_is_restarted_and_nothing_is_lost) {
    char dir[256], db[64], script[2048], cmd[600];
    tmpdir(dir, sizeof dir);
    /* On key 5's first delivery the handler hangs (in a grandchild sleep that keeps its pipes). */
    snprintf(script, sizeof script,
             "d=\"$1\"\n"
             "echo $$ > \"$d/pid\"; echo $$ >> \"$d/pids\"\n"
             "while IFS= read -r line; do\n" SH_FIELDS "  echo \"start $key $id\" >> \"$d/log\"\n"
             "  if [ \"$key\" = 5 ] && [ ! -e \"$d/hung\" ]; then touch \"$d/hung\"; sleep 60; fi\n"
             "  echo \"done $key $id\" >> \"$d/log\"\n"
             "  echo ok\n"
             "done\n");
    write_file(dir, "k.sh", script);
    snprintf(cmd, sizeof cmd, "exec.command=exec sh %s/k.sh %s", dir, dir);
    PGconn *c = it_db_create("hkill", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    const char *set[] = {"sink=exec", cmd, "retry.backoff.initial.ms=50", "retry.backoff.max.ms=200", NULL};
    it_proc_t *p = start_crwatch(db, set);
    for (int i = 1; i <= 10; i++)
        it_exec(c, "INSERT INTO t VALUES (%d, 'v')", i);
    for (int i = 0; i < 500 && !file_exists(dir, "hung"); i++)
        usleep(20 * 1000);
    cr_assert(file_exists(dir, "hung"), "the handler never got key 5");
    char *pidtext = read_file(dir, "pid");
    pid_t pid = (pid_t)atoi(pidtext);
    free(pidtext);
    cr_assert_gt(pid, 1);
    usleep(300 * 1000);
    char *lsn5 = commit_lsn_in(dir, "log", "start 5 ", 2);
    assert_not_confirmed(c, db, lsn5);
    cr_assert_eq(kill(pid, SIGKILL), 0);

    char needle[32];
    for (int i = 1; i <= 10; i++) {
        snprintf(needle, sizeof needle, "done %d ", i);
        if (!wait_lines(dir, "log", needle, 1, EV_TIMEOUT)) {
            it_proc_dump_stderr(p);
            cr_assert_fail("key %d never handled after the kill", i);
        }
    }
    char *lsn = commit_lsn_in(dir, "log", "done 10 ", 2);
    cr_assert(slot_confirmed_beyond(c, db, lsn, EV_TIMEOUT), "slot not confirmed past every change");
    cr_assert(it_proc_running(p), "crwatch died with its handler");
    char *err = it_proc_stderr(p);
    cr_assert(strstr(err, "killed by signal 9"), "crwatch did not report the kill:\n%s", err);
    free(err);
    stop_crwatch(p);

    char *log = read_file(dir, "log");
    cr_assert_eq(count_lines_with(log, "start 5 "), 2, "key 5 not delivered exactly twice:\n%s", log);
    cr_assert_eq(count_lines_with(log, "done "), 10, "%s", log);
    free(log);
    char *pids = read_file(dir, "pids");
    cr_assert_eq(count_lines_with(pids, NULL), 2, "handler started %d times", count_lines_with(pids, NULL));
    free(pids);
    free(lsn);
    free(lsn5);
    PQfinish(c);
    it_db_drop(NULL, db);
    rmtree(dir);
}

Test(handlers, exec_stream_handler_past_the_timeout_is_killed_and_the_event_redelivered) {
    char dir[256], db[64], script[1024], cmd[600];
    tmpdir(dir, sizeof dir);
    snprintf(script, sizeof script,
             "d=\"$1\"\n"
             "while IFS= read -r line; do\n" SH_FIELDS "  echo \"$key $id\" >> \"$d/seen\"\n"
             "  if [ ! -e \"$d/hung\" ]; then touch \"$d/hung\"; sleep 30; fi\n"
             "  echo ok\n"
             "done\n");
    write_file(dir, "t.sh", script);
    snprintf(cmd, sizeof cmd, "exec.command=sh %s/t.sh %s", dir, dir);
    PGconn *c = it_db_create("htime", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    const char *set[] = {"sink=exec", cmd, "exec.timeout.ms=300", "retry.backoff.initial.ms=20",
                         "retry.backoff.max.ms=40", NULL};
    it_proc_t *p = start_crwatch(db, set);
    it_exec(c, "INSERT INTO t VALUES (1)");
    cr_assert(wait_lines(dir, "seen", "1 ", 2, EV_TIMEOUT), "the timed-out event was not delivered again");
    char *lsn = commit_lsn_in(dir, "seen", "1 ", 1);
    cr_assert(slot_confirmed_beyond(c, db, lsn, EV_TIMEOUT));
    char *err = it_proc_stderr(p);
    cr_assert(strstr(err, "no reply within exec.timeout.ms=300"), "%s", err);
    free(err);
    stop_crwatch(p);
    char *seen = read_file(dir, "seen");
    cr_assert_eq(count_lines_with(seen, NULL), 2, "%s", seen);
    free(seen);
    free(lsn);
    PQfinish(c);
    it_db_drop(NULL, db);
    rmtree(dir);
}

Test(handlers, exec_per_key_order_holds_with_4_workers_over_100_keys) {
    char dir[256], db[64], script[2048], cmd[600];
    tmpdir(dir, sizeof dir);
    /* Logs "worker key seq"; keys divisible by 7 are slow, so other keys race ahead. */
    snprintf(script, sizeof script,
             "d=\"$1\"\n"
             "while IFS= read -r line; do\n" SH_FIELDS "  seq=${line#*\\\"seq\\\":}; seq=${seq%%%%[,\\}]*}\n"
             "  if [ $((key %% 7)) -eq 0 ]; then sleep 0.02; fi\n"
             "  echo \"$CRWATCH_WORKER $key $seq $id\" >> \"$d/seen\"\n"
             "  echo ok\n"
             "done\n");
    write_file(dir, "o.sh", script);
    snprintf(cmd, sizeof cmd, "exec.command=sh %s/o.sh %s", dir, dir);
    PGconn *c = it_db_create("horder", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, seq int)");
    const char *set[] = {"sink=exec", cmd, "workers=4", NULL};
    it_proc_t *p = start_crwatch(db, set);
    it_exec(c, "INSERT INTO t SELECT g, 0 FROM generate_series(1, 100) g");
    for (int i = 0; i < 4; i++)
        it_exec(c, "UPDATE t SET seq = seq + 1");
    if (!wait_lines(dir, "seen", NULL, 500, 60000)) {
        it_proc_dump_stderr(p);
        cr_assert_fail("not all 500 changes were handled");
    }
    char *lsn = commit_lsn_in(dir, "seen", " 100 4 ", 3);
    cr_assert(slot_confirmed_beyond(c, db, lsn, EV_TIMEOUT));
    stop_crwatch(p);

    char *seen = read_file(dir, "seen");
    cr_assert_eq(count_lines_with(seen, NULL), 500, "%d lines", count_lines_with(seen, NULL));
    int next[101] = {0}, workers[4] = {0};
    for (const char *line = seen; *line;) {
        int w, k, s;
        cr_assert_eq(sscanf(line, "%d %d %d", &w, &k, &s), 3, "bad line: %.40s", line);
        cr_assert(w >= 0 && w < 4 && k >= 1 && k <= 100);
        cr_assert_eq(s, next[k], "key %d: seq %d handled when %d was due", k, s, next[k]);
        next[k]++;
        workers[w]++;
        line = strchr(line, '\n') + 1;
    }
    for (int k = 1; k <= 100; k++)
        cr_assert_eq(next[k], 5, "key %d: %d changes", k, next[k]);
    for (int w = 0; w < 4; w++)
        cr_assert_gt(workers[w], 0, "worker %d handled nothing: no parallelism", w);
    free(seen);
    free(lsn);
    PQfinish(c);
    it_db_drop(NULL, db);
    rmtree(dir);
}

Test(handlers, exec_failures_are_dead_lettered_and_the_stream_goes_on) {
    char dir[256], db[64], script[2048], cmd[600], dl[600];
    tmpdir(dir, sizeof dir);
    snprintf(script, sizeof script,
             "d=\"$1\"\n"
             "while IFS= read -r line; do\n" SH_FIELDS "  echo \"$key $id\" >> \"$d/seen\"\n"
             "  case \"$key\" in\n"
             "    poison) echo 'RETRY still broken' ;;\n"
             "    bad) echo 'fail cannot parse spec' ;;\n"
             "    *) echo ok ;;\n"
             "  esac\n"
             "done\n");
    write_file(dir, "f.sh", script);
    snprintf(cmd, sizeof cmd, "exec.command=sh %s/f.sh %s", dir, dir);
    snprintf(dl, sizeof dl, "deadletter.file=%s/dead.jsonl", dir);
    PGconn *c = it_db_create("hdead", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id text PRIMARY KEY, v text)");
    const char *set[] = {"sink=exec", cmd, dl, "retry.max=2", "retry.backoff.initial.ms=20", "retry.backoff.max.ms=40",
                         NULL};
    it_proc_t *p = start_crwatch(db, set);
    it_exec(c, "INSERT INTO t VALUES ('poison', 'x')");
    it_exec(c, "INSERT INTO t VALUES ('bad', 'x')");
    it_exec(c, "INSERT INTO t VALUES ('good', 'x')");
    cr_assert(wait_lines(dir, "dead.jsonl", NULL, 2, EV_TIMEOUT), "two dead-letter records expected");
    it_exec(c, "INSERT INTO t VALUES ('after', 'x')");
    cr_assert(wait_lines(dir, "seen", "after ", 1, EV_TIMEOUT), "the stream did not go on");
    char *lsn = commit_lsn_in(dir, "seen", "after ", 1), *lsn_poison = commit_lsn_in(dir, "seen", "poison ", 1);
    cr_assert(slot_confirmed_beyond(c, db, lsn, EV_TIMEOUT), "slot not confirmed past the dead-lettered changes");
    stop_crwatch(p);

    char *seen = read_file(dir, "seen");
    cr_assert_eq(count_lines_with(seen, "poison "), 3, "retry.max=2: 3 attempts:\n%s", seen);
    cr_assert_eq(count_lines_with(seen, "bad "), 1, "fail: no retry:\n%s", seen);
    cr_assert_eq(count_lines_with(seen, "good "), 1, "%s", seen);
    free(seen);
    char *dead = read_file(dir, "dead.jsonl");
    char *second = strchr(dead, '\n') + 1;
    second[-1] = '\0';
    json_object *r1 = json_tokener_parse(dead), *r2 = json_tokener_parse(second);
    cr_assert(r1 && r2, "dead-letter records are not JSON: %s", dead);
    json_object *rp = strcmp(it_json_str(r1, "payload.subject"), "poison") == 0 ? r1 : r2;
    json_object *rb = rp == r1 ? r2 : r1;
    cr_assert_str_eq(it_json_str(rp, "payload.subject"), "poison");
    cr_assert(strstr(it_json_str(rp, "reason"), "retry.max (2) exhausted after 3 attempts"), "%s",
              it_json_str(rp, "reason"));
    cr_assert(strstr(it_json_str(rp, "reason"), "still broken"), "%s", it_json_str(rp, "reason"));
    cr_assert_str_eq(it_json_str(rp, "payload.data.type"), "ADDED");
    cr_assert_str_eq(it_json_str(rp, "pglsn"), lsn_poison);
    cr_assert_str_eq(it_json_str(rp, "pglsn"), it_json_str(rp, "payload.pglsn"));
    cr_assert_str_eq(it_json_str(rb, "payload.subject"), "bad");
    cr_assert(strstr(it_json_str(rb, "reason"), "cannot parse spec"), "%s", it_json_str(rb, "reason"));
    cr_assert_null(strstr(it_json_str(rb, "reason"), "retry.max"), "%s", it_json_str(rb, "reason"));
    json_object_put(r1);
    json_object_put(r2);
    free(dead);
    free(lsn);
    free(lsn_poison);
    PQfinish(c);
    it_db_drop(NULL, db);
    rmtree(dir);
}

Test(handlers, exec_coalesce_hands_over_only_the_latest_state_and_acks_all) {
    char dir[256], db[64], script[2048], cmd[600];
    tmpdir(dir, sizeof dir);
    /* The first event waits for $dir/go, so the later ones queue up behind it. */
    snprintf(script, sizeof script,
             "d=\"$1\"\n"
             "while IFS= read -r line; do\n"
             "  v=${line#*\\\"v\\\":\\\"}; v=${v%%%%\\\"*}\n"
             "  id=${line#*\\\"id\\\":\\\"}; id=${id%%%%\\\"*}\n"
             "  echo \"$v $id\" >> \"$d/seen\"\n"
             "  if [ \"$v\" = first ]; then while [ ! -e \"$d/go\" ]; do sleep 0.05; done; fi\n"
             "  echo ok\n"
             "done\n");
    write_file(dir, "c.sh", script);
    snprintf(cmd, sizeof cmd, "exec.command=sh %s/c.sh %s", dir, dir);
    PGconn *c = it_db_create("hcoal", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    const char *set[] = {"sink=exec", cmd, "coalesce=true", NULL};
    it_proc_t *p = start_crwatch(db, set);
    it_exec(c, "INSERT INTO t VALUES (1, 'first')");
    cr_assert(wait_lines(dir, "seen", "first", 1, EV_TIMEOUT));
    for (int i = 1; i <= 5; i++)
        it_exec(c, "UPDATE t SET v = 'u%d'", i);
    /* Let crwatch read and queue all five before the handler is free again. */
    usleep(800 * 1000);
    char *lsn_first = commit_lsn_in(dir, "seen", "first ", 1);
    assert_not_confirmed(c, db, lsn_first);
    write_file(dir, "go", "");
    cr_assert(wait_lines(dir, "seen", "u5 ", 1, EV_TIMEOUT), "the latest state never reached the handler");
    char *lsn = commit_lsn_in(dir, "seen", "u5 ", 1);
    cr_assert(slot_confirmed_beyond(c, db, lsn, EV_TIMEOUT), "coalesced changes were not acknowledged");
    stop_crwatch(p);
    char *seen = read_file(dir, "seen");
    cr_assert_eq(count_lines_with(seen, NULL), 2, "the handler saw:\n%s", seen);
    cr_assert(!strncmp(seen, "first ", 6) && strstr(seen, "\nu5 "), "the handler saw:\n%s", seen);
    free(seen);
    free(lsn);
    free(lsn_first);
    PQfinish(c);
    it_db_drop(NULL, db);
    rmtree(dir);
}

Test(handlers, exec_beside_stdout_a_change_is_confirmed_only_when_both_sinks_have_it) {
    char dir[256], db[64], script[1024], cmd[600];
    tmpdir(dir, sizeof dir);
    snprintf(script, sizeof script,
             "d=\"$1\"\n"
             "while IFS= read -r line; do\n"
             "  while [ ! -e \"$d/go\" ]; do sleep 0.05; done\n"
             "  echo ok\n"
             "done\n");
    write_file(dir, "s.sh", script);
    snprintf(cmd, sizeof cmd, "exec.command=sh %s/s.sh %s", dir, dir);
    PGconn *c = it_db_create("hfan", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    const char *set[] = {"sink=stdout,exec", cmd, NULL};
    it_proc_t *p = start_crwatch(db, set);
    it_exec(c, "INSERT INTO t VALUES (1)");
    json_object *ev = it_proc_expect_event(p, EV_TIMEOUT); /* stdout has it at once */
    char *lsn = strdup(it_json_str(ev, "pglsn"));
    json_object_put(ev);
    usleep(600 * 1000);
    assert_not_confirmed(c, db, lsn); /* the exec handler does not have it yet */
    write_file(dir, "go", "");
    cr_assert(slot_confirmed_beyond(c, db, lsn, EV_TIMEOUT), "not confirmed once both sinks had the change");
    stop_crwatch(p);
    free(lsn);
    PQfinish(c);
    it_db_drop(NULL, db);
    rmtree(dir);
}

Test(handlers, a_full_queue_holds_the_stream_and_a_stop_still_ends_it_cleanly) {
    char dir[256], db[64], script[1024], cmd[600];
    tmpdir(dir, sizeof dir);
    /* A handler that takes events and never answers. */
    snprintf(script, sizeof script,
             "d=\"$1\"\n"
             "while IFS= read -r line; do\n" SH_FIELDS "  echo \"$id $key\" >> \"$d/seen\"\n"
             "  sleep 1000\n"
             "done\n");
    write_file(dir, "h.sh", script);
    snprintf(cmd, sizeof cmd, "exec.command=sh %s/h.sh %s", dir, dir);
    PGconn *c = it_db_create("hfull", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    const char *set[] = {"sink=exec", cmd, "queue.max.events=2", NULL};
    it_proc_t *p = start_crwatch(db, set);
    for (int i = 1; i <= 6; i++)
        it_exec(c, "INSERT INTO t VALUES (%d, 'x')", i);
    cr_assert(wait_lines(dir, "seen", " 1", 1, EV_TIMEOUT), "key 1 was not delivered");
    /* Two events in flight fill the queue: the stream waits instead of reading on. */
    cr_assert(it_proc_stderr_wait(p, "the stream waits for the handler", 15000), "no backpressure");
    cr_assert(it_proc_running(p));
    char *lsn = commit_lsn_in(dir, "seen", " 1", 0);
    assert_not_confirmed(c, db, lsn);
    /* SIGTERM reaches the waiting stream: exit 0, nothing unfinished confirmed. */
    stop_crwatch(p);
    assert_not_confirmed(c, db, lsn);
    free(lsn);
    PQfinish(c);
    it_db_drop(NULL, db);
    rmtree(dir);
}

/* ---- exec, per-event mode ---------------------------------------------------------------------- */

Test(handlers, exec_per_event_exit_codes_decide_ok_retry_fail) {
    char dir[256], db[64], script[2048], cmd[600], dl[600];
    tmpdir(dir, sizeof dir);
    snprintf(script, sizeof script,
             "d=\"$1\"\n"
             "cat > \"$d/event.$CRWATCH_EVENT_KEY.$CRWATCH_ATTEMPT\"\n"
             "id=$CRWATCH_EVENT_ID\n"
             "echo \"$CRWATCH_EVENT_KEY $CRWATCH_ATTEMPT $CRWATCH_EVENT_TYPE $CRWATCH_EVENT_KIND $id\" >> \"$d/seen\"\n"
             "echo handler-stdout-goes-to-stderr\n"
             "case \"$CRWATCH_EVENT_KEY\" in\n"
             "  1) [ \"$CRWATCH_ATTEMPT\" -ge 3 ] || exit 75 ;;\n"
             "  2) exit 3 ;;\n"
             "esac\n"
             "exit 0\n");
    write_file(dir, "e.sh", script);
    snprintf(cmd, sizeof cmd, "exec.command=sh %s/e.sh %s", dir, dir);
    snprintf(dl, sizeof dl, "deadletter.file=%s/dead.jsonl", dir);
    PGconn *c = it_db_create("hper", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    const char *set[] = {"sink=exec", "exec.mode=per-event", cmd, dl, "retry.backoff.initial.ms=20",
                         "retry.backoff.max.ms=40", NULL};
    it_proc_t *p = start_crwatch(db, set);
    it_exec(c, "INSERT INTO t VALUES (1, 'a')");
    it_exec(c, "INSERT INTO t VALUES (2, 'b')");
    it_exec(c, "INSERT INTO t VALUES (3, 'c')");
    cr_assert(wait_lines(dir, "seen", "1 3 ", 1, EV_TIMEOUT), "key 1 not retried to attempt 3");
    cr_assert(wait_lines(dir, "seen", "3 1 ", 1, EV_TIMEOUT), "key 3 not delivered");
    char *lsn = commit_lsn_in(dir, "seen", "3 1 ", 4);
    cr_assert(slot_confirmed_beyond(c, db, lsn, EV_TIMEOUT));
    cr_assert(it_proc_no_line_within(p, 100), "a handler wrote to crwatch's stdout");
    char *err = it_proc_stderr(p);
    cr_assert(strstr(err, "handler-stdout-goes-to-stderr"), "%s", err);
    free(err);
    stop_crwatch(p);

    char *seen = read_file(dir, "seen");
    cr_assert_eq(count_lines_with(seen, NULL), 5, "1 x3, 2 x1, 3 x1 expected:\n%s", seen);
    cr_assert_eq(count_lines_with(seen, "1 1 ADDED t "), 1, "%s", seen);
    cr_assert_eq(count_lines_with(seen, "1 2 ADDED t "), 1, "%s", seen);
    cr_assert_eq(count_lines_with(seen, "1 3 ADDED t "), 1, "%s", seen);
    cr_assert_eq(count_lines_with(seen, "2 1 ADDED t "), 1, "exit 3 is not retried:\n%s", seen);
    free(seen);
    /* stdin carried the event, one JSON line. */
    char *ev = read_file(dir, "event.3.1");
    json_object *o = json_tokener_parse(ev);
    cr_assert(o, "not JSON: %s", ev);
    cr_assert_str_eq(it_json_str(o, "subject"), "3");
    cr_assert_str_eq(it_json_str(o, "data.object.v"), "c");
    json_object_put(o);
    free(ev);
    char *dead = read_file(dir, "dead.jsonl");
    cr_assert_eq(count_lines_with(dead, NULL), 1, "%s", dead);
    cr_assert(strstr(dead, "exited with status 3"), "%s", dead);
    cr_assert(strstr(dead, "\"subject\":\"2\""), "%s", dead);
    free(dead);
    free(lsn);
    PQfinish(c);
    it_db_drop(NULL, db);
    rmtree(dir);
}

Test(handlers, exec_without_a_command_is_a_configuration_error) {
    const char *args[] = {"stream", "-X", "tables=public.t", "-X", "sink=exec", NULL};
    char *err = NULL;
    int rc = it_run_crwatch("postgres", args, 10000, NULL, &err);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, err);
    cr_assert(strstr(err, "exec.command"), "%s", err);
    free(err);
    const char *args2[] = {"stream", "-X", "tables=public.t", "-X", "retry.max=-2", NULL};
    rc = it_run_crwatch("postgres", args2, 10000, NULL, &err);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, err);
    cr_assert(strstr(err, "retry.max"), "%s", err);
    free(err);
}

/* ---- plugin ------------------------------------------------------------------------------------ */

Test(handlers, plugin_retry_twice_then_ok_sees_the_event_three_times) {
    char dir[256], db[64], path[600], conf[800];
    tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "plugin.path=%s", CRW_EXAMPLE_PLUGIN);
    snprintf(conf, sizeof conf, "plugin.config=file=%s/calls.tsv,retry_first=2,fail_key=13", dir);
    PGconn *c = it_db_create("hplug", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v text, j jsonb)");
    const char *set[] = {"sink=plugin", path, conf, "retry.backoff.initial.ms=30", "retry.backoff.max.ms=60", NULL};
    it_proc_t *p = start_crwatch(db, set);
    it_exec(c, "INSERT INTO t VALUES (7, 'seven', '{\"a\": [1, 2]}')");
    cr_assert(wait_lines(dir, "calls.tsv", NULL, 3, EV_TIMEOUT));
    char *lsn = commit_lsn_in(dir, "calls.tsv", "3\tADDED", 4);
    cr_assert(slot_confirmed_beyond(c, db, lsn, EV_TIMEOUT));
    stop_crwatch(p);
    char *calls = read_file(dir, "calls.tsv");
    cr_assert_eq(count_lines_with(calls, NULL), 3, "%s", calls);
    char want[256];
    for (int a = 1; a <= 3; a++) {
        snprintf(want, sizeof want, "%d\tADDED\tt\t7\t", a);
        cr_assert_eq(count_lines_with(calls, want), 1, "attempt %d missing:\n%s", a, calls);
    }
    cr_assert_eq(count_lines_with(calls, "\t{\"id\":7,\"v\":\"seven\",\"j\":{\"a\":[1,2]}}"), 3,
                 "object JSON not handed over:\n%s", calls);
    free(calls);
    free(lsn);
    PQfinish(c);
    it_db_drop(NULL, db);
    rmtree(dir);
}

Test(handlers, plugin_fail_is_dead_lettered) {
    char dir[256], db[64], path[600], conf[800], dl[600];
    tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "plugin.path=%s", CRW_EXAMPLE_PLUGIN);
    snprintf(conf, sizeof conf, "plugin.config=file=%s/calls.tsv,fail_key=13", dir);
    snprintf(dl, sizeof dl, "deadletter.file=%s/dead.jsonl", dir);
    PGconn *c = it_db_create("hplugf", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    const char *set[] = {"sink=plugin", path, conf, dl, "workers=2", NULL};
    it_proc_t *p = start_crwatch(db, set);
    it_exec(c, "INSERT INTO t VALUES (12), (13), (14)");
    cr_assert(wait_lines(dir, "calls.tsv", NULL, 3, EV_TIMEOUT));
    char *lsn = commit_lsn_in(dir, "calls.tsv", "\t14\t", 4);
    cr_assert(slot_confirmed_beyond(c, db, lsn, EV_TIMEOUT));
    stop_crwatch(p);
    char *calls = read_file(dir, "calls.tsv");
    cr_assert_eq(count_lines_with(calls, NULL), 3, "%s", calls);
    free(calls);
    char *dead = read_file(dir, "dead.jsonl");
    cr_assert_eq(count_lines_with(dead, NULL), 1, "%s", dead);
    cr_assert(strstr(dead, "plugin: handler failed: example_plugin: key 13 is configured to fail"), "%s", dead);
    free(dead);
    free(lsn);
    PQfinish(c);
    it_db_drop(NULL, db);
    rmtree(dir);
}

Test(handlers, plugin_abi_mismatch_is_refused_before_touching_the_database) {
    char db[64], path[600];
    PGconn *c = it_db_create("habi", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    char slot[128];
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    snprintf(path, sizeof path, "plugin.path=%s", CRW_BADABI_PLUGIN);
    const char *args[] = {"stream", "-X", "tables=public.t", "-X", slot, "-X", "sink=plugin", "-X", path, NULL};
    char *err = NULL;
    int rc = it_run_crwatch(db, args, 10000, NULL, &err);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, err);
    cr_assert(strstr(err, "handler ABI version 999"), "%s", err);
    cr_assert(strstr(err, "provides version 1"), "%s", err);
    free(err);
    /* Nothing was created: no slot, no publication. */
    char *slots = it_query_value(c, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'", db);
    char *pubs = it_query_value(c, "SELECT count(*) FROM pg_publication");
    cr_assert_str_eq(slots, "0");
    cr_assert_str_eq(pubs, "0");
    free(slots);
    free(pubs);

    /* A file that is not there, and a config the plugin refuses: exit 2 as well. */
    const char *args2[] = {"stream", "-X", "tables=public.t", "-X", slot, "-X", "sink=plugin", "-X",
                           "plugin.path=/nonexistent/handler.so", NULL};
    rc = it_run_crwatch(db, args2, 10000, NULL, &err);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, err);
    cr_assert(strstr(err, "cannot load /nonexistent/handler.so"), "%s", err);
    free(err);
    snprintf(path, sizeof path, "plugin.path=%s", CRW_EXAMPLE_PLUGIN);
    const char *args3[] = {"stream", "-X", "tables=public.t", "-X", slot, "-X", "sink=plugin", "-X", path, "-X",
                           "plugin.config=colour=blue", NULL};
    rc = it_run_crwatch(db, args3, 10000, NULL, &err);
    cr_assert_eq(rc, 2, "exit %d: %s", rc, err);
    cr_assert(strstr(err, "unknown option 'colour'"), "%s", err);
    free(err);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* ---- embedding ---------------------------------------------------------------------------------- */

Test(handlers, embedding_example_program_prints_changes_and_confirms_them) {
    char db[64], slot[128];
    PGconn *c = it_db_create("hembed", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v text); ALTER TABLE t REPLICA IDENTITY FULL");
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    char conninfo[128];
    snprintf(conninfo, sizeof conninfo, "dbname=%s", db);
    const char *argv[] = {CRW_WATCH_EXAMPLE, "-X", "tables=public.t", "-X", slot, "-X", "status.interval.ms=100",
                          "-k", "t", "-n", "3", conninfo, NULL};
    it_proc_t *p = it_proc_spawn(CRW_WATCH_EXAMPLE, argv);
    cr_assert(it_proc_stderr_wait(p, "streaming from slot", EV_TIMEOUT), "the example did not start");
    it_exec(c, "INSERT INTO t VALUES (1, 'a')");
    it_exec(c, "UPDATE t SET v = 'b'");
    it_exec(c, "DELETE FROM t");
    /* TYPE KIND KEY ID OBJECT [OLD-OBJECT]; the id varies, the rest is known. */
    const char *want_head[] = {"ADDED\tt\t1\t", "MODIFIED\tt\t1\t", "DELETED\tt\t1\t"};
    const char *want_tail[] = {"\t{\"id\":1,\"v\":\"a\"}", "\t{\"id\":1,\"v\":\"b\"}\t{\"id\":1,\"v\":\"a\"}",
                               "\t{\"id\":1,\"v\":\"b\"}"};
    char *lsn[3];
    for (int i = 0; i < 3; i++) {
        char *line = it_proc_read_line(p, EV_TIMEOUT);
        if (!line)
            it_proc_dump_stderr(p);
        cr_assert(line, "line %d missing", i + 1);
        size_t hl = strlen(want_head[i]), tl = strlen(want_tail[i]), ll = strlen(line);
        cr_assert(!strncmp(line, want_head[i], hl), "line %d: %s", i + 1, line);
        char *id = strndup(line + hl, strcspn(line + hl, "\t"));
        cr_assert(ll == hl + strlen(id) + tl && !strcmp(line + ll - tl, want_tail[i]), "line %d: %s", i + 1, line);
        lsn[i] = commit_lsn_of(id);
        free(id);
        free(line);
    }
    /* -n 3: it stops itself from the callback, drains and confirms. */
    int rc = it_proc_wait(p, EV_TIMEOUT);
    if (rc != 0)
        it_proc_dump_stderr(p);
    cr_assert_eq(rc, 0);
    char *err = it_proc_stderr(p);
    cr_assert(strstr(err, "stopped after 3 changes"), "%s", err);
    free(err);
    it_proc_free(p);
    /* The update's transaction was complete and handled before the stop: confirmed.
     * The delete's may have been cut short by the stop (its commit not read yet):
     * then it is not confirmed, and the next run must get it again. */
    cr_assert(slot_confirmed_beyond(c, db, lsn[1], 2000), "the example exited without confirming its changes");
    bool delete_confirmed = slot_confirmed_beyond(c, db, lsn[2], 0);
    const char *argv2[] = {CRW_WATCH_EXAMPLE, "-X", "tables=public.t", "-X", slot, "-n", "1", conninfo, NULL};
    p = it_proc_spawn(CRW_WATCH_EXAMPLE, argv2);
    cr_assert(it_proc_stderr_wait(p, "streaming from slot", EV_TIMEOUT), "the example did not start again");
    it_exec(c, "INSERT INTO t VALUES (2, 'c')");
    char *line = it_proc_read_line(p, EV_TIMEOUT);
    cr_assert(line, "no change after the restart");
    if (delete_confirmed)
        cr_assert(!strncmp(line, "ADDED\tt\t2\t", 8), "a confirmed change came again: %s", line);
    else
        cr_assert(!strncmp(line, "DELETED\tt\t1\t", 10) && strstr(line, lsn[2]),
                  "the unconfirmed delete (%s) was not delivered again: %s", lsn[2], line);
    free(line);
    cr_assert_eq(it_proc_wait(p, EV_TIMEOUT), 0);
    it_proc_free(p);
    for (int i = 0; i < 3; i++)
        free(lsn[i]);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* In this process: callbacks, kind filtering, RETRY, stop from another thread. */
typedef struct {
    atomic_int added, added_attempt1, other_kind;
    atomic_uint_least64_t last_lsn;
    char object[256];
} embed_state_t;

static int embed_added(const crw_handler_event_t *ev, void *opaque, char *reason, size_t n) {
    embed_state_t *s = opaque;
    if (ev->attempt == 1) {
        atomic_fetch_add(&s->added_attempt1, 1);
        snprintf(reason, n, "first attempts are refused");
        return CRW_HANDLER_RETRY;
    }
    snprintf(s->object, sizeof s->object, "%s", ev->object ? ev->object : "(none)");
    atomic_store(&s->last_lsn, ev->commit_lsn);
    atomic_fetch_add(&s->added, 1);
    return CRW_HANDLER_OK;
}

static int embed_other(const crw_handler_event_t *ev, void *opaque, char *reason, size_t n) {
    (void)ev;
    (void)reason;
    (void)n;
    atomic_fetch_add(&((embed_state_t *)opaque)->other_kind, 1);
    return CRW_HANDLER_OK;
}

typedef struct {
    crw_watch_t *w;
    int rc;
    atomic_bool finished;
    char err[512];
} runner_t;

static void *run_watch(void *arg) {
    runner_t *r = arg;
    r->rc = crw_watch_run(r->w, r->err, sizeof r->err);
    atomic_store(&r->finished, true);
    return NULL;
}

Test(handlers, embedding_api_in_process_retry_kind_filter_and_stop_from_another_thread) {
    char db[64], err[512], props[512];
    PGconn *c = it_db_create("hapi", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    crw_watch_t *w = crw_watch_new();
    cr_assert_eq(crw_watch_set(w, "workers", "0", err, sizeof err), CRW_WATCH_ERR_CONFIG);
    cr_assert(strstr(err, "workers"), "%s", err);
    cr_assert_eq(crw_watch_load(w, "# comment\n\nlog.level = warn\nnot a pair\n", err, sizeof err),
                 CRW_WATCH_ERR_CONFIG);
    cr_assert(strstr(err, "line 4"), "%s", err);
    snprintf(props, sizeof props,
             "conninfo = dbname=%s\nresource.t.table = public.t\nresource.t.kind = Thing\nslot.name = %s\n"
             "retry.backoff.initial.ms = 20\nretry.backoff.max.ms = 40\nstatus.interval.ms = 100\n",
             db, db);
    cr_assert_eq(crw_watch_load(w, props, err, sizeof err), 0, "%s", err);
    embed_state_t st = {0};
    crw_watch_handlers_t things = {.on_added = embed_added};
    crw_watch_handlers_t others = {.on_added = embed_other, .on_modified = embed_other, .on_deleted = embed_other};
    cr_assert_eq(crw_watch_add_handlers(w, "Thing", &things, &st, err, sizeof err), 0, "%s", err);
    cr_assert_eq(crw_watch_add_handlers(w, "Other", &others, &st, err, sizeof err), 0, "%s", err);
    runner_t r = {.w = w};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, run_watch, &r), 0);
    for (int i = 0; i < 1000 && !atomic_load(&r.finished); i++) {
        char *active = it_query_value(c, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s' AND active",
                                      db);
        bool up = active && !strcmp(active, "1");
        free(active);
        if (up)
            break;
        usleep(20 * 1000);
    }
    cr_assert_not(atomic_load(&r.finished), "crw_watch_run returned %d: %s", r.rc, r.err);
    it_exec(c, "INSERT INTO t VALUES (1, 'x'), (2, 'y')");
    for (int i = 0; i < 500 && atomic_load(&st.added) < 2; i++)
        usleep(20 * 1000);
    cr_assert_eq(atomic_load(&st.added), 2);
    cr_assert_eq(atomic_load(&st.added_attempt1), 2, "each change first refused once");
    cr_assert_eq(atomic_load(&st.other_kind), 0, "callbacks of another kind were called");
    uint64_t l = atomic_load(&st.last_lsn);
    char lsn[32];
    snprintf(lsn, sizeof lsn, "%X/%X", (unsigned)(l >> 32), (unsigned)l);
    cr_assert(slot_confirmed_beyond(c, db, lsn, EV_TIMEOUT));
    crw_watch_stop(w);
    cr_assert_eq(pthread_join(th, NULL), 0);
    cr_assert_eq(r.rc, 0, "crw_watch_run: %d %s", r.rc, r.err);
    cr_assert(strstr(st.object, "\"v\":"), "%s", st.object);
    cr_assert_eq(crw_watch_run(w, err, sizeof err), CRW_WATCH_ERR_CONFIG, "a watch runs once");
    crw_watch_destroy(w);
    PQfinish(c);
    it_db_drop(NULL, db);
}
