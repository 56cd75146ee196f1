/*
 * test_backfill.c — `crwatch backfill` (src/source/snapshot.c,
 * src/app/backfill.c, docs/snapshots.md) against a real PostgreSQL: one
 * consistent snapshot under concurrent writers, every key exactly once with
 * parallel workers and bounded memory, kill -9 and --resume (only
 * unacknowledged chunks come twice), Ctrl-C, both chunkings, filters, --table,
 * and the refusals.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "support/itest.h"

#define RUN_TIMEOUT 120000

/* A fresh database with public.acct(id, bal, pad): rows 1..n, each bal 100, pad wide enough to spread them over
 * many blocks. */
static PGconn *setup(const char *prefix, char *db, size_t dbn, int n) {
    PGconn *c = it_db_create(prefix, db, dbn);
    it_exec(c, "CREATE TABLE acct (id int PRIMARY KEY, bal int NOT NULL, pad text NOT NULL) "
               "WITH (autovacuum_enabled = false)");
    it_exec(c, "INSERT INTO acct SELECT g, 100, repeat('x', 150) FROM generate_series(1, %d) g", n);
    it_exec(c, "ANALYZE acct");
    return c;
}

/* A test's database (public.acct of n rows) and state file, and the -X setting naming it. */
typedef struct {
    char db[64];
    PGconn *c;
    char state[128];
    char sf[200]; /* "snapshot.state.file=<state>" */
} bf_t;

static void bf_open(bf_t *b, const char *prefix, int n) {
    b->c = setup(prefix, b->db, sizeof b->db, n);
    snprintf(b->state, sizeof b->state, "/tmp/crw-it-%s.state", b->db);
    snprintf(b->sf, sizeof b->sf, "snapshot.state.file=%s", b->state);
}

static void bf_close(bf_t *b) {
    unlink(b->state);
    PQfinish(b->c);
    it_db_drop(NULL, b->db);
}

typedef struct {
    int n;           /* keys 1..n */
    int *seen;       /* per key: SYNC events */
    long long sum;   /* of data.object.bal */
    long events;
    long bad;        /* lines that are no SYNC event of acct */
} tally_t;

static void tally_init(tally_t *t, int n) {
    memset(t, 0, sizeof *t);
    t->n = n;
    t->seen = calloc((size_t)n + 1, sizeof(int));
}

/* Counts one event line (a CloudEvents SYNC of public.acct, row shape). */
static void tally_line(tally_t *t, const char *line) {
    const char *k = strstr(line, "\"data\":{\"type\":\"SYNC\",\"kind\":\"acct\",\"key\":\"");
    const char *b = strstr(line, "\"bal\":");
    if (!k || !b) {
        t->bad++;
        return;
    }
    int id = atoi(k + strlen("\"data\":{\"type\":\"SYNC\",\"kind\":\"acct\",\"key\":\""));
    if (id < 1 || id > t->n) {
        t->bad++;
        return;
    }
    t->seen[id]++;
    t->sum += atoll(b + 6);
    t->events++;
}

/* Reads the next count lines of p, which must come. */
static void tally_some(tally_t *t, it_proc_t *p, int count) {
    for (int i = 0; i < count; i++) {
        char *line = it_proc_read_line(p, RUN_TIMEOUT);
        cr_assert(line, "line %d of %d", i, count);
        tally_line(t, line);
        free(line);
    }
}

/* Reads lines of p until n events are counted (or nothing more comes for 30 s). */
static void tally_until(tally_t *t, it_proc_t *p, long n) {
    char *line;
    while (t->events < n && (line = it_proc_read_line(p, 30000))) {
        tally_line(t, line);
        free(line);
    }
}

/* Reads every line p writes until it exits. */
static void tally_all(tally_t *t, it_proc_t *p) {
    char *line;
    while ((line = it_proc_read_line(p, RUN_TIMEOUT))) {
        tally_line(t, line);
        free(line);
    }
}

/* Runs `crwatch backfill` on db with settings (NULL-terminated, may be NULL) and more arguments; tallies its
 * events; returns its exit status. */
static int backfill(const char *db, const char *const *settings, const char *const *more, tally_t *t,
                    char **err_out) {
    const char *args[64];
    int a = 0;
    args[a++] = "backfill";
    args[a++] = "-X";
    args[a++] = "tables=public.acct";
    for (int i = 0; settings && settings[i]; i++) {
        args[a++] = "-X";
        args[a++] = settings[i];
    }
    for (int i = 0; more && more[i]; i++)
        args[a++] = more[i];
    args[a] = NULL;
    it_proc_t *p = it_crwatch_start(db, args);
    tally_all(t, p);
    int st = it_proc_wait(p, RUN_TIMEOUT);
    if (err_out)
        *err_out = it_proc_stderr(p);
    if (st != 0)
        it_proc_dump_stderr(p);
    it_proc_free(p);
    return st;
}

static void expect_each_once(const tally_t *t) {
    cr_expect_eq(t->bad, 0, "%ld lines were no SYNC event of acct", t->bad);
    int missing = 0, twice = 0;
    for (int i = 1; i <= t->n; i++) {
        missing += t->seen[i] == 0;
        twice += t->seen[i] > 1;
    }
    cr_expect_eq(missing, 0, "%d keys missing", missing);
    cr_expect_eq(twice, 0, "%d keys came more than once", twice);
    cr_expect_eq(t->events, t->n, "%ld events for %d rows", t->events, t->n);
}

/* ---- one snapshot under concurrent writers ------------------------------ */

typedef struct {
    const char *db;
    volatile int stop;
    int n;
    long transfers;
} writer_t;

/* Moves 1..5 between two rows, lower id first (no deadlock between writers): the total never changes. */
static void *writer(void *arg) {
    writer_t *w = arg;
    PGconn *c = it_connect(w->db);
    unsigned seed = (unsigned)(uintptr_t)&seed;
    while (!w->stop) {
        int a = 1 + (int)(rand_r(&seed) % (unsigned)w->n), b = 1 + (int)(rand_r(&seed) % (unsigned)w->n);
        if (a == b)
            continue;
        int lo = a < b ? a : b, hi = a < b ? b : a, amt = 1 + (int)(rand_r(&seed) % 5);
        char sql[256];
        snprintf(sql, sizeof sql,
                 "BEGIN; UPDATE acct SET bal = bal - %d WHERE id = %d; UPDATE acct SET bal = bal + %d WHERE id = %d; "
                 "COMMIT",
                 a == lo ? amt : -amt, lo, a == lo ? amt : -amt, hi);
        PGresult *r = PQexec(c, sql);
        PQclear(r);
        w->transfers++;
    }
    PQfinish(c);
    return NULL;
}

static void consistent_under_writers(const char *chunking) {
    bf_t b;
    const int n = 20000;
    bf_open(&b, "bfcons", n);
    PGconn *c = b.c;
    const char *db = b.db, *sf = b.sf;
    writer_t w[2] = {{db, 0, n, 0}, {db, 0, n, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, writer, &w[i]);
    it_sleep_ms(300);
    char chunk[64];
    snprintf(chunk, sizeof chunk, "snapshot.chunking=%s", chunking);
    const char *const settings[] = {"snapshot.workers=2", "snapshot.chunk.rows=500", chunk, sf, NULL};
    tally_t t;
    tally_init(&t, n);
    int st = backfill(db, settings, NULL, &t, NULL);
    for (int i = 0; i < 2; i++) {
        w[i].stop = 1;
        pthread_join(th[i], NULL);
    }
    cr_assert_eq(st, 0, "backfill exits 0");
    cr_expect(w[0].transfers + w[1].transfers > 50, "the writers ran during the backfill (%ld transfers)",
              w[0].transfers + w[1].transfers);
    expect_each_once(&t);
    cr_expect_eq(t.sum, 100LL * n, "the balances sum to %lld, not %lld: not one snapshot", t.sum, 100LL * n);
    char *total = it_query_value(c, "SELECT sum(bal) FROM acct");
    cr_expect_str_eq(total, "2000000");
    free(total);
    free(t.seen);
    bf_close(&b);
}

Test(backfill, one_snapshot_under_concurrent_transfers_by_blocks, .timeout = 180) { consistent_under_writers("ctid"); }
Test(backfill, one_snapshot_under_concurrent_transfers_by_key, .timeout = 180) { consistent_under_writers("key"); }

/* ---- 500k rows, two workers, bounded memory --------------------------- */

Test(backfill, five_hundred_thousand_rows_each_key_once_in_bounded_memory, .timeout = 300) {
    bf_t b;
    const int n = 500000;
    bf_open(&b, "bfbig", n);
    const char *db = b.db, *sf = b.sf;
    const char *const settings[] = {"snapshot.workers=2", sf, NULL};
    tally_t t;
    tally_init(&t, n);
    char *err = NULL;
    int st = backfill(db, settings, NULL, &t, &err);
    cr_assert_eq(st, 0);
    expect_each_once(&t);
    cr_expect(strstr(err, "backfill done: 500000 rows of 1 table"), "the summary line: %s", err);
    /* The largest child this test waited for is crwatch (the backfill above). */
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    cr_expect(ru.ru_maxrss < 64 * 1024, "peak RSS %ld KiB: a backfill's memory must not grow with the table",
              ru.ru_maxrss);
    free(err);
    free(t.seen);
    bf_close(&b);
}

/* ---- kill -9, then --resume ------------------------------------------- */

/* The ids of the rows of the chunks delivered but not confirmed in the state file, as a 0/1 array. */
static char *unacked_ids(PGconn *c, const char *state, int n, const char *chunking) {
    char *ids = calloc((size_t)n + 1, 1);
    FILE *f = fopen(state, "r");
    cr_assert(f, "the state file %s exists", state);
    char line[4096];
    long long confirmed = 0;
    /* chunk -> last position, and its range as SQL */
    long long pos[4096] = {0};
    char *where[4096] = {0};
    int nch = 0;
    while (fgets(line, sizeof line, f)) {
        json_object *j = json_tokener_parse(line);
        if (!j)
            continue;
        json_object *v;
        if (json_object_object_get_ex(j, "cut", &v) && nch < 4096) {
            int i = json_object_get_int(v);
            json_object *lo = it_json_get(j, "lo"), *hi = it_json_get(j, "hi");
            char w[256] = "true";
            int len = 4;
            if (!strcmp(chunking, "ctid")) {
                if (lo)
                    len += snprintf(w + len, sizeof w - (size_t)len, " AND ctid >= '(%s,0)'::tid",
                                    json_object_get_string(json_object_array_get_idx(lo, 0)));
                if (hi)
                    snprintf(w + len, sizeof w - (size_t)len, " AND ctid < '(%s,0)'::tid",
                             json_object_get_string(json_object_array_get_idx(hi, 0)));
            } else {
                if (lo)
                    len += snprintf(w + len, sizeof w - (size_t)len, " AND id > %s",
                                    json_object_get_string(json_object_array_get_idx(lo, 0)));
                if (hi)
                    snprintf(w + len, sizeof w - (size_t)len, " AND id <= %s",
                             json_object_get_string(json_object_array_get_idx(hi, 0)));
            }
            if (json_object_object_get_ex(j, "since", &v))
                snprintf(w, sizeof w, "true"); /* a catch-up may bring any row */
            where[i] = strdup(w);
            nch = i + 1 > nch ? i + 1 : nch;
        } else if (json_object_object_get_ex(j, "deliver", &v)) {
            int i = json_object_get_int(v);
            if (i >= 0 && i < 4096)
                pos[i] = json_object_get_int64(it_json_get(j, "position"));
        } else if (json_object_object_get_ex(j, "confirmed", &v))
            confirmed = json_object_get_int64(v);
        json_object_put(j);
    }
    fclose(f);
    for (int i = 0; i < nch; i++) {
        if (pos[i] > confirmed && where[i]) {
            PGresult *r = it_query(c, "SELECT id FROM acct WHERE %s", where[i]);
            for (int k = 0; k < PQntuples(r); k++) {
                int id = atoi(PQgetvalue(r, k, 0));
                if (id >= 1 && id <= n)
                    ids[id] = 1;
            }
            PQclear(r);
        }
        free(where[i]);
    }
    return ids;
}

/*
 * kill -9 mid-backfill, then --resume: every row, and none of an
 * acknowledged chunk twice.  A transaction older than the rows stays open
 * throughout, in another database (as an autovacuum's ANALYZE or a long
 * report would): it holds every snapshot's xmin below the rows' writers, and
 * the catch-up of a block-chunked resume must still read only what the first
 * snapshot did not see, not every row written since that xmin.
 */
static void kill_and_resume(const char *chunking) {
    PGconn *old = it_connect(NULL);
    it_exec(old, "BEGIN");
    free(it_query_value(old, "SELECT txid_current()"));
    bf_t b;
    const int n = 30000;
    bf_open(&b, "bfkill", n);
    PGconn *c = b.c;
    const char *db = b.db, *sf = b.sf;
    char chunk[64];
    snprintf(chunk, sizeof chunk, "snapshot.chunking=%s", chunking);
    const char *args[] = {"backfill", "-X", "tables=public.acct", "-X", "snapshot.workers=2", "-X",
                          "snapshot.chunk.rows=1000", "-X", chunk, "-X", sf, NULL};
    it_proc_t *p = it_crwatch_start(db, args);
    tally_t t;
    tally_init(&t, n);
    /* Read a third, then stop reading: crwatch blocks on the full pipe, mid-backfill. */
    tally_some(&t, p, n / 3);
    it_sleep_ms(800);
    cr_assert(it_proc_running(p), "the backfill waits for its reader");
    kill(it_proc_pid(p), SIGKILL);
    tally_all(&t, p); /* what it wrote before it died */
    it_proc_wait(p, 10000);
    it_proc_free(p);
    cr_expect(t.bad <= 1, "only the last line may be torn by the kill (%ld bad)", t.bad);
    t.bad = 0;
    long first = t.events;
    cr_assert(first < n, "the first run was cut short (%ld of %d)", first, n);
    char *unacked = unacked_ids(c, b.state, n, chunking);
    int *before = calloc((size_t)n + 1, sizeof(int));
    memcpy(before, t.seen, sizeof(int) * ((size_t)n + 1));

    const char *const settings[] = {"snapshot.workers=2", "snapshot.chunk.rows=1000", chunk, sf, NULL};
    const char *const more[] = {"--resume", NULL};
    char *err = NULL;
    cr_assert_eq(backfill(db, settings, more, &t, &err), 0);
    cr_expect(strstr(err, "--resume:"), "the resumed run says where it resumes: %s", err);
    int missing = 0, twice = 0, twice_acked = 0;
    for (int i = 1; i <= n; i++) {
        missing += t.seen[i] == 0;
        if (t.seen[i] > 1) {
            twice++;
            if (!unacked[i])
                twice_acked++;
        }
    }
    cr_expect_eq(t.bad, 0);
    cr_expect_eq(missing, 0, "%d rows were never delivered", missing);
    cr_expect_eq(twice_acked, 0, "%d rows of acknowledged chunks came again (%d twice in all)", twice_acked, twice);
    cr_expect(t.events - first < n, "the resumed run did not start over (%ld events)", t.events - first);
    /* Resuming a finished backfill does nothing. */
    tally_t again;
    tally_init(&again, n);
    free(err);
    cr_assert_eq(backfill(db, settings, more, &again, &err), 0);
    cr_expect_eq(again.events, 0, "a finished backfill resumed sends nothing (%ld)", again.events);
    cr_expect(strstr(err, "finished already"), "%s", err);
    free(err);
    free(again.seen);
    free(before);
    free(unacked);
    free(t.seen);
    bf_close(&b);
    it_exec(old, "COMMIT");
    PQfinish(old);
}

Test(backfill, kill_9_then_resume_by_blocks, .timeout = 180) { kill_and_resume("ctid"); }
Test(backfill, kill_9_then_resume_by_key, .timeout = 180) { kill_and_resume("key"); }

/* A block-chunked backfill of one worker (chunks of 1,000 rows) into *t, killed with SIGKILL after count rows. */
static void backfill_killed(const char *db, const char *sf, tally_t *t, int n, int count) {
    const char *args[] = {"backfill", "-X", "tables=public.acct", "-X", "snapshot.workers=1", "-X",
                          "snapshot.chunk.rows=1000", "-X", sf, NULL};
    it_proc_t *p = it_crwatch_start(db, args);
    tally_init(t, n);
    tally_some(t, p, count);
    it_sleep_ms(500);
    kill(it_proc_pid(p), SIGKILL);
    tally_all(t, p);
    it_proc_wait(p, 10000);
    it_proc_free(p);
    t->bad = 0; /* the last line may be torn */
}

/* Rows that move between blocks while a block-chunked backfill is down are caught up on --resume. */
Test(backfill, resume_by_blocks_catches_rows_that_moved, .timeout = 180) {
    bf_t b;
    const int n = 20000;
    bf_open(&b, "bfmove", n);
    PGconn *c = b.c;
    const char *db = b.db, *sf = b.sf;
    tally_t t;
    backfill_killed(db, sf, &t, n, n / 2);
    /* While it is down: the last rows (in blocks not read yet) are updated and land in free space at the
     * table's start, which was read already. */
    cr_assert(it_wait_sql_true(c, 30000,
                               "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = current_database() "
                               "AND pid <> pg_backend_pid()"),
              "the killed backfill's sessions end (their snapshot would keep VACUUM from freeing space)");
    it_exec(c, "DELETE FROM acct WHERE id <= 2000");
    it_exec(c, "VACUUM acct");
    it_exec(c, "UPDATE acct SET bal = 101 WHERE id > %d", n - 500);
    it_exec(c, "INSERT INTO acct SELECT g, 100, repeat('x', 150) FROM generate_series(1, 2000) g");
    char *moved = it_query_value(c, "SELECT count(*) FROM acct WHERE id > %d AND (ctid::text::point)[0] < 100",
                                 n - 500);
    cr_assert(moved && atoi(moved) > 0, "rows moved to the first blocks (%s)", moved ? moved : "none");
    free(moved);
    const char *const settings[] = {"snapshot.workers=1", "snapshot.chunk.rows=1000", sf, NULL};
    const char *const more[] = {"--resume", NULL};
    char *err = NULL;
    cr_assert_eq(backfill(db, settings, more, &t, &err), 0);
    int missing = 0;
    for (int i = 1; i <= n; i++)
        missing += t.seen[i] == 0;
    cr_expect_eq(missing, 0, "%d rows were never delivered", missing);
    cr_expect(strstr(err, "reading again the rows written since"), "%s", err);
    free(err);
    free(t.seen);
    bf_close(&b);
}

/*
 * A row moved by a subtransaction of a writer running when the first
 * snapshot was taken: the snapshot lists its top transaction only, and the
 * subtransaction's id is above it.  The catch-up must still read the row's
 * new version, which landed in a block read already.
 */
Test(backfill, resume_by_blocks_catches_rows_a_running_subtransaction_moved, .timeout = 180) {
    bf_t b;
    const int n = 20000;
    bf_open(&b, "bfsub", n);
    PGconn *c = b.c;
    const char *db = b.db, *sf = b.sf;
    it_exec(c, "DELETE FROM acct WHERE id <= 2000");
    it_exec(c, "VACUUM acct"); /* free space in the first blocks */
    PGconn *w = it_connect(db);
    it_exec(w, "BEGIN");
    it_exec(w, "SELECT txid_current()"); /* the top transaction has its id first */
    it_exec(w, "SAVEPOINT s");
    it_exec(w, "UPDATE acct SET bal = 101 WHERE id > %d", n - 500); /* the new versions go to the first blocks */
    char *moved = it_query_value(w, "SELECT count(*) FROM acct WHERE id > %d AND (ctid::text::point)[0] < 100",
                                 n - 500);
    cr_assert(moved && atoi(moved) > 0, "rows moved to the first blocks (%s)", moved ? moved : "none");
    free(moved);
    it_exec(c, "INSERT INTO acct VALUES (1, 100, 'x')"); /* a later transaction ends: the writer is in the xip */
    tally_t t;
    backfill_killed(db, sf, &t, n, n / 3); /* past the first blocks, before the last */
    it_exec(w, "RELEASE s");
    it_exec(w, "COMMIT");
    PQfinish(w);
    const char *const settings[] = {"snapshot.workers=1", "snapshot.chunk.rows=1000", sf, NULL};
    const char *const more[] = {"--resume", NULL};
    char *err = NULL;
    cr_assert_eq(backfill(db, settings, more, &t, &err), 0);
    int missing = 0;
    for (int i = n - 499; i <= n; i++)
        missing += t.seen[i] == 0;
    cr_expect_eq(missing, 0, "%d rows the subtransaction moved were never delivered", missing);
    cr_expect(strstr(err, "reading again the rows written since"), "%s", err);
    free(err);
    free(t.seen);
    bf_close(&b);
}

/* ---- a lost connection ------------------------------------------------- */

Test(backfill, lost_connections_mid_run_are_resumed_in_a_new_snapshot, .timeout = 180) {
    bf_t b;
    const int n = 30000;
    bf_open(&b, "bfconn", n);
    const char *args[] = {"backfill", "-X", "tables=public.acct", "-X", "snapshot.chunk.rows=1000", "-X", b.sf, NULL};
    it_proc_t *p = it_crwatch_start(b.db, args);
    tally_t t;
    tally_init(&t, n);
    tally_some(&t, p, n / 3);
    /* Every session of the backfill goes, while it waits for its reader. */
    char *killed = it_query_value(b.c, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                       "WHERE datname = current_database() AND application_name = 'crwatch'");
    cr_assert(killed && atoi(killed) >= 2, "terminated %s sessions", killed ? killed : "no");
    free(killed);
    tally_all(&t, p);
    cr_assert_eq(it_proc_wait(p, RUN_TIMEOUT), 0);
    char *err = it_proc_stderr(p);
    cr_expect(strstr(err, "read again in a new snapshot"), "%s", err);
    free(err);
    it_proc_free(p);
    int missing = 0;
    for (int i = 1; i <= n; i++)
        missing += t.seen[i] == 0;
    cr_expect_eq(t.bad, 0);
    cr_expect_eq(missing, 0, "%d rows never came", missing);
    free(t.seen);
    bf_close(&b);
}

/* ---- Ctrl-C ------------------------------------------------------------ */

Test(backfill, sigterm_stops_cleanly_and_resume_finishes, .timeout = 180) {
    bf_t b;
    const int n = 30000;
    bf_open(&b, "bfterm", n);
    const char *db = b.db, *sf = b.sf;
    const char *args[] = {"backfill", "-X", "tables=public.acct", "-X", "snapshot.chunk.rows=1000", "-X", sf, NULL};
    it_proc_t *p = it_crwatch_start(db, args);
    tally_t t;
    tally_init(&t, n);
    tally_some(&t, p, n / 3);
    kill(it_proc_pid(p), SIGTERM);
    tally_all(&t, p);
    cr_assert_eq(it_proc_wait(p, 20000), 0, "SIGTERM: exit 0");
    char *err = it_proc_stderr(p);
    cr_expect(strstr(err, "backfill stopped:") && strstr(err, "--resume"), "%s", err);
    free(err);
    it_proc_free(p);
    cr_expect(t.events < n);
    const char *const settings[] = {"snapshot.chunk.rows=1000", sf, NULL};
    const char *const more[] = {"--resume", NULL};
    cr_assert_eq(backfill(db, settings, more, &t, NULL), 0);
    /* A clean stop confirms everything it delivered: the resumed run sends each of the others once. */
    expect_each_once(&t);
    free(t.seen);
    bf_close(&b);
}

/* ---- what is read, and how it looks --------------------------------------- */

Test(backfill, filter_table_and_formats) {
    bf_t b;
    bf_open(&b, "bffilt", 100);
    PGconn *c = b.c;
    const char *db = b.db, *sf = b.sf;
    it_exec(c, "CREATE TABLE other (k text PRIMARY KEY, v jsonb)");
    it_exec(c, "INSERT INTO other VALUES ('a', '{\"x\":[1,2]}'), ('b', NULL)");

    /* resource.<id>.filter and --table */
    const char *a1[] = {"backfill", "-X", "resource.a.table=public.acct", "-X", "resource.a.filter=id % 10 = 0", "-X",
                        "resource.o.table=public.other", "-X", sf, "--table", "public.acct", NULL};
    char *out = NULL, *err = NULL;
    cr_assert_eq(it_run_crwatch(db, a1, RUN_TIMEOUT, &out, &err), 0, "%s", err);
    int lines = 0;
    for (char *s = out; (s = strchr(s, '\n')); s++)
        lines++;
    cr_expect_eq(lines, 10, "ids 10, 20, ... 100 only: %d lines", lines);
    cr_expect(!strstr(out, "public/other"), "--table leaves the other table out");
    free(out);
    free(err);

    /* Values as the stream renders them, SYNC type, the snapshot's LSN */
    const char *a2[] = {"backfill", "-X", "tables=public.other", "-X", sf, NULL};
    cr_assert_eq(it_run_crwatch(db, a2, RUN_TIMEOUT, &out, &err), 0, "%s", err);
    json_object *ev = json_tokener_parse(out);
    cr_assert(ev, "first line is JSON: %s", out);
    it_expect_str(ev, "type", "crwatch.other.sync");
    it_expect_str(ev, "data.type", "SYNC");
    it_expect_str(ev, "data.object.k", "a");
    it_expect_str(ev, "data.object.v.x.1", "2");
    cr_expect(!it_json_exists(ev, "data.oldObject"), "a SYNC has no oldObject");
    cr_expect(strstr(it_json_str(ev, "id"), "/sync/a"), "id names the key: %s", it_json_str(ev, "id"));
    cr_expect(it_json_str(ev, "pglsn") != NULL);
    json_object_put(ev);
    free(out);
    free(err);

    /* Debezium: op "r", source.snapshot "true" */
    const char *a3[] = {"backfill", "-X", "tables=public.other", "-X", "event.format=debezium", "-X", sf, NULL};
    cr_assert_eq(it_run_crwatch(db, a3, RUN_TIMEOUT, &out, &err), 0, "%s", err);
    ev = json_tokener_parse(out);
    cr_assert(ev, "%s", out);
    it_expect_str(ev, "op", "r");
    it_expect_str(ev, "source.snapshot", "true");
    it_expect_str(ev, "after.k", "a");
    json_object_put(ev);
    free(out);
    free(err);
    bf_close(&b);
}

Test(backfill, refusals_exit_2_naming_what_is_wrong) {
    bf_t b;
    bf_open(&b, "bfbad", 10);
    PGconn *c = b.c;
    const char *db = b.db, *sf = b.sf;
    struct {
        const char *const args[12];
        const char *says;
    } cases[] = {
        {{"backfill", "-X", "resource.a.table=public.acct", "-X", "resource.a.filter=nosuch = 1", "-X", sf, NULL},
         "resource.a.filter"},
        {{"backfill", "-X", "tables=public.acct", "--table", "public.nope", "-X", sf, NULL}, "--table public.nope"},
        {{"backfill", "-X", sf, NULL}, "nothing to read"},
        {{"stream", "--resume", NULL}, "--resume"},
        {{"backfill", "-X", "snapshot.workers=0", NULL}, "snapshot.workers"},
        {{"backfill", "-X", "snapshot.chunking=pages", NULL}, "snapshot.chunking"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *err = NULL;
        int st = it_run_crwatch(db, cases[i].args, RUN_TIMEOUT, NULL, &err);
        cr_expect_eq(st, 2, "case %zu exits 2 (%d): %s", i, st, err);
        cr_expect(strstr(err, cases[i].says), "case %zu names %s: %s", i, cases[i].says, err);
        free(err);
    }
    /* --resume of a state file written for other tables */
    const char *first[] = {"backfill", "-X", "tables=public.acct", "-X", sf, NULL};
    cr_assert_eq(it_run_crwatch(db, first, RUN_TIMEOUT, NULL, NULL), 0);
    it_exec(c, "CREATE TABLE t2 (id int PRIMARY KEY)");
    const char *other[] = {"backfill", "-X", "tables=public.t2", "-X", sf, "--resume", NULL};
    char *err = NULL;
    cr_expect_eq(it_run_crwatch(db, other, RUN_TIMEOUT, NULL, &err), 2);
    cr_expect(strstr(err, "other tables"), "%s", err);
    free(err);
    /* ... or with the other chunking: its bounds would be read as keys */
    const char *rechunk[] = {"backfill", "-X", "tables=public.acct", "-X", sf, "-X", "snapshot.chunking=key",
                             "--resume", NULL};
    cr_expect_eq(it_run_crwatch(db, rechunk, RUN_TIMEOUT, NULL, &err), 2);
    cr_expect(strstr(err, "chunking"), "%s", err);
    free(err);
    bf_close(&b);
}

/* ---- stream with snapshot.mode=initial --------------------------------- */

/* The state per key that a consumer of the events builds: bal, or -1 when the key is deleted or never seen. */
typedef struct {
    int n;
    int *bal;
    long sync;
} fold_t;

static void fold_line(fold_t *f, const char *line) {
    json_object *ev = json_tokener_parse(line);
    if (!ev)
        return;
    const char *type = it_json_str(ev, "data.type"), *key = it_json_str(ev, "data.key");
    int id = key ? atoi(key) : 0;
    if (type && id >= 1 && id <= f->n) {
        if (!strcmp(type, "DELETED"))
            f->bal[id] = -1;
        else {
            const char *bal = it_json_str(ev, "data.object.bal");
            f->bal[id] = bal ? atoi(bal) : -2;
        }
        f->sync += !strcmp(type, "SYNC");
    }
    json_object_put(ev);
}

static it_proc_t *start_initial(const char *db, const char *sf, const char *extra) {
    const char *const base[] = {"tables=public.acct", "snapshot.mode=initial", "snapshot.chunk.rows=500", sf, extra,
                                NULL};
    return it_crwatch_stream(db, base, NULL);
}

Test(initial, sync_of_every_row_then_the_stream_with_writers_running, .timeout = 180) {
    bf_t b;
    const int n = 20000;
    bf_open(&b, "bfinit", n);
    it_exec(b.c, "ALTER TABLE acct REPLICA IDENTITY FULL");
    writer_t w[2] = {{b.db, 0, n, 0}, {b.db, 0, n, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, writer, &w[i]);
    it_sleep_ms(200);
    it_proc_t *p = start_initial(b.db, b.sf, NULL);
    it_sleep_ms(1000);
    for (int i = 0; i < 2; i++) {
        w[i].stop = 1;
        pthread_join(th[i], NULL);
    }
    /* deletes after the snapshot, then a fence: everything committed before it has come once it has */
    it_exec(b.c, "DELETE FROM acct WHERE id <= 10");
    it_exec(b.c, "UPDATE acct SET pad = 'fence' WHERE id = %d", n);
    fold_t f = {n, calloc((size_t)n + 1, sizeof(int)), 0};
    for (int i = 0; i <= n; i++)
        f.bal[i] = -1;
    int fence_seen = 0;
    char *line;
    while (fence_seen < 1 && (line = it_proc_read_line(p, 30000))) {
        if (strstr(line, "\"fence\""))
            fence_seen++;
        fold_line(&f, line);
        free(line);
    }
    cr_assert_eq(fence_seen, 1, "the stream reached the fence");
    cr_expect(w[0].transfers + w[1].transfers > 20, "writers ran (%ld)", w[0].transfers + w[1].transfers);
    cr_expect_eq(f.sync, n, "one SYNC per row present at the start (%ld)", f.sync);
    PGresult *r = it_query(b.c, "SELECT g, coalesce(a.bal, -1) FROM generate_series(1, %d) g LEFT JOIN acct a ON a.id = g "
                                "ORDER BY g",
                           n);
    int wrong = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        int id = atoi(PQgetvalue(r, i, 0)), bal = atoi(PQgetvalue(r, i, 1));
        if (f.bal[id] != bal && wrong++ < 5)
            cr_log_error("key %d: the events say %d, the table %d", id, f.bal[id], bal);
    }
    PQclear(r);
    cr_expect_eq(wrong, 0, "%d keys end in another state than the table's", wrong);
    free(f.bal);
    it_crwatch_stop(p, 10000);
    /* A restart goes on from the slot: no second snapshot. */
    p = start_initial(b.db, b.sf, NULL);
    cr_expect(it_proc_no_line_within(p, 1500), "no SYNC again after a restart");
    it_crwatch_stop(p, 10000);
    bf_close(&b);
}

Test(initial, an_interrupted_initial_snapshot_is_taken_again, .timeout = 180) {
    bf_t b;
    const int n = 60000;
    bf_open(&b, "bfinitk", n);
    const char *args[] = {"stream", "-X", "tables=public.acct", "-X", "snapshot.mode=initial", "-X",
                          "snapshot.chunk.rows=500", "-X", b.sf, "-X", "slot.name=bfinitk", NULL};
    it_proc_t *p = it_crwatch_start(b.db, args);
    /* Read a little, then let the pipe fill: the initial snapshot waits for its reader, half done. */
    for (int i = 0; i < 100; i++) {
        char *line = it_proc_read_line(p, 30000);
        cr_assert(line);
        free(line);
    }
    it_sleep_ms(500);
    cr_assert(it_proc_running(p));
    kill(it_proc_pid(p), SIGKILL);
    it_proc_wait(p, 10000);
    it_proc_free(p);
    cr_assert(it_wait_sql_true(b.c, 10000, "SELECT NOT active FROM pg_replication_slots WHERE slot_name = 'bfinitk'"),
              "the killed stream's slot is released");
    it_exec(b.c, "UPDATE acct SET bal = 5 WHERE id = 1");
    p = it_crwatch_start(b.db, args);
    tally_t t;
    tally_init(&t, n);
    tally_until(&t, p, n);
    expect_each_once(&t);
    cr_expect_eq(t.sum, 100LL * n - 95, "the new snapshot has the update made while crwatch was down");
    char *err = it_proc_stderr(p);
    cr_expect(strstr(err, "did not finish: the slot is dropped"), "%s", err);
    free(err);
    it_crwatch_stop(p, 10000);
    free(t.seen);
    bf_close(&b);
}

Test(initial, with_polling_the_first_watermark_is_the_snapshot, .timeout = 120) {
    bf_t b;
    bf_open(&b, "bfinitp", 0);
    it_apply_sql(b.db, "sql/crwatch.sql");
    it_exec(b.c, "CREATE TABLE jobs (" IT_CONVENTION_COLUMNS ", PRIMARY KEY (namespace, name))");
    it_exec(b.c, "SELECT crwatch.manage('public.jobs')");
    it_exec(b.c, "INSERT INTO jobs (name, uid, generation, resource_version, spec, created_at, updated_at) "
                 "SELECT 'j' || g, gen_random_uuid(), 1, g, '{}', now(), now() FROM generate_series(1, 300) g");
    const char *const base[] = {"source=poll", "tables=public.jobs", "snapshot.mode=initial", "poll.interval.ms=100",
                                b.sf, NULL};
    it_proc_t *p = it_crwatch_stream(b.db, base, NULL);
    int sync = 0;
    for (int i = 0; i < 300; i++) {
        json_object *ev = it_proc_expect_event(p, 15000);
        sync += !strcmp(it_json_str(ev, "data.type"), "SYNC");
        json_object_put(ev);
    }
    cr_expect_eq(sync, 300);
    it_exec(b.c, "UPDATE jobs SET spec = '{\"v\":1}' WHERE name = 'j7'");
    json_object *ev = it_proc_expect_event(p, 15000);
    it_expect_str(ev, "data.type", "MODIFIED");
    it_expect_str(ev, "subject", "default/j7");
    json_object_put(ev);
    it_crwatch_stop(p, 10000);
    bf_close(&b);
}

/* ---- incremental snapshots (DBLog) -------------------------------------------- */

Test(incremental, four_writers_never_leave_a_row_older_than_the_table, .timeout = 180) {
    bf_t b;
    const int n = 20000;
    bf_open(&b, "bfincr", n);
    const char *const base[] = {"tables=public.acct", "snapshot.chunk.rows=500", NULL};
    it_proc_t *p = it_crwatch_stream(b.db, base, NULL);
    writer_t w[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (writer_t){b.db, 0, n, 0};
        pthread_create(&th[i], NULL, writer, &w[i]);
    }
    it_sleep_ms(300);
    char slot[128];
    snprintf(slot, sizeof slot, "slot.name=%s", b.db);
    const char *req[] = {"snapshot", "-X", "tables=public.acct", "-X", slot, "public.acct", NULL};
    char *out = NULL, *err = NULL;
    cr_assert_eq(it_run_crwatch(b.db, req, 30000, &out, &err), 0, "%s", err);
    cr_expect(strstr(out, "\"requested\":true"), "%s", out);
    free(out);
    free(err);
    fold_t f = {n, calloc((size_t)n + 1, sizeof(int)), 0};
    for (int i = 0; i <= n; i++)
        f.bal[i] = -1;
    /* Read while the writers go on; note the changes that come between the first and the last SYNC. */
    long between = 0, modified_since_sync = 0;
    char *line;
    bool stopped = false;
    int fence_seen = 0;
    while ((line = it_proc_read_line(p, 30000))) {
        bool sync = strstr(line, "\"data\":{\"type\":\"SYNC\"") != NULL;
        if (sync) {
            between += modified_since_sync;
            modified_since_sync = 0;
        } else if (f.sync > 0)
            modified_since_sync++;
        if (strstr(line, "\"fence\""))
            fence_seen++;
        fold_line(&f, line);
        free(line);
        if (!stopped && it_proc_stderr_wait(p, "incremental snapshot of public.acct done", 0)) {
            for (int i = 0; i < 4; i++) {
                w[i].stop = 1;
                pthread_join(th[i], NULL);
            }
            stopped = true;
            it_exec(b.c, "UPDATE acct SET pad = 'fence' WHERE id = 1");
        }
        if (fence_seen)
            break;
    }
    cr_assert(stopped && fence_seen, "the snapshot finished and the stream reached the fence");
    long transfers = 0;
    for (int i = 0; i < 4; i++)
        transfers += w[i].transfers;
    cr_expect(between > 0, "the stream kept flowing during the snapshot (%ld changes between its chunks, %ld transfers)",
              between, transfers);
    cr_expect(f.sync > n / 2 && f.sync <= n, "%ld SYNC events: rows changed inside their window are left out", f.sync);
    PGresult *r = it_query(b.c, "SELECT id, bal FROM acct ORDER BY id");
    int wrong = 0, unseen = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        int id = atoi(PQgetvalue(r, i, 0)), bal = atoi(PQgetvalue(r, i, 1));
        unseen += f.bal[id] == -1;
        if (f.bal[id] != bal && wrong++ < 5)
            cr_log_error("key %d: the events end at %d, the table at %d", id, f.bal[id], bal);
    }
    PQclear(r);
    cr_expect_eq(unseen, 0, "%d rows got no event at all", unseen);
    cr_expect_eq(wrong, 0, "%d rows end in an older state than the table's", wrong);
    free(f.bal);
    it_crwatch_stop(p, 10000);
    bf_close(&b);
}

Test(incremental, refusals) {
    bf_t b;
    bf_open(&b, "bfincrbad", 10);
    const char *a1[] = {"snapshot", "-X", "tables=public.acct", "public.nope", NULL};
    const char *a2[] = {"stream", "-X", "tables=public.acct", "-X", "source=poll", "-X", "snapshot.mode=incremental",
                        NULL};
    const char *const *cases[] = {a1, a2};
    const char *says[] = {"public.nope", "snapshot.mode=incremental"};
    for (int i = 0; i < 2; i++) {
        char *err = NULL;
        cr_expect_eq(it_run_crwatch(b.db, cases[i], 30000, NULL, &err), 2, "%s", err);
        cr_expect(strstr(err, says[i]), "%s", err);
        free(err);
    }
    bf_close(&b);
}

Test(initial, a_failed_initial_snapshot_stops_and_the_next_start_takes_it_again, .timeout = 180) {
    bf_t b;
    const int n = 60000;
    bf_open(&b, "bfinitf", n);
    const char *args[] = {"stream", "-X", "tables=public.acct", "-X", "snapshot.mode=initial", "-X",
                          "snapshot.chunk.rows=500", "-X", b.sf, "-X", "slot.name=bfinitf", NULL};
    it_proc_t *p = it_crwatch_start(b.db, args);
    tally_t t;
    tally_init(&t, n);
    tally_some(&t, p, 100);
    it_sleep_ms(300); /* the snapshot waits for its reader */
    char *killed = it_query_value(b.c, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                                       "datname = current_database() AND application_name = 'crwatch' AND "
                                       "backend_type = 'client backend'");
    cr_assert(killed && atoi(killed) >= 2, "terminated %s", killed ? killed : "none");
    free(killed);
    tally_all(&t, p);
    cr_expect_eq(it_proc_wait(p, 30000), 1, "a lost snapshot is not streamed over: crwatch stops");
    char *err = it_proc_stderr(p);
    cr_expect(strstr(err, "the initial snapshot did not finish") && !strstr(err, "streaming from slot"), "%s", err);
    free(err);
    it_proc_free(p);
    cr_expect(t.events < n, "it stopped before the end (%ld)", t.events);
    free(t.seen);
    p = it_crwatch_start(b.db, args);
    tally_init(&t, n);
    tally_until(&t, p, n);
    expect_each_once(&t);
    err = it_proc_stderr(p);
    cr_expect(strstr(err, "did not finish: the slot is dropped"), "%s", err);
    free(err);
    it_crwatch_stop(p, 10000);
    free(t.seen);
    bf_close(&b);
}
