/*
 * test_driver.c — the stream driver's rules (src/app/stream.c) in process,
 * against the real test server: crw_stream_run with an in-process sink
 * behind the sink interface, so what the driver does with a sink's answer
 * is seen directly.
 *
 * - A sink's error stops the stream with that error: it is never taken for
 *   an unmappable change and dead-lettered (they once shared the value -1).
 * - One table may hold more kinds than any fixed bound (here 70 resources on
 *   one shared table): every kind maps.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/stream.h"
#include "core/conf.h"
#include "core/err.h"
#include "core/log.h"
#include "support/itest.h"

/* A sink that keeps copies of the events it got and answers emit() with `answer`. */
typedef struct {
    crw_sink_t base;
    int answer;
    int emitted;
    char types[128][16];
    char kinds[128][16];
} probe_t;

static int probe_emit(crw_sink_t *s, const crw_event_t *ev) {
    probe_t *p = (probe_t *)s;
    if (p->emitted < 128) {
        snprintf(p->types[p->emitted], sizeof p->types[0], "%s", ev->type);
        snprintf(p->kinds[p->emitted], sizeof p->kinds[0], "%s", ev->kind);
    }
    p->emitted++;
    return p->answer;
}
static int probe_commit(crw_sink_t *s, uint64_t txn) {
    (void)s;
    (void)txn;
    return 0;
}
static void probe_destroy(crw_sink_t *s) { (void)s; /* the test owns it */ }
static const crw_sink_ops_t probe_ops = {.name = "probe", .emit = probe_emit, .commit = probe_commit,
                                         .destroy = probe_destroy};

static probe_t probe;

static crw_sink_t *probe_new(const crw_sink_env_t *env, void *arg, char *errstr, size_t n) {
    (void)arg;
    (void)errstr;
    (void)n;
    probe.base.ops = &probe_ops;
    probe.base.env = env;
    return &probe.base;
}

typedef struct {
    crw_config_t *conf;
    crw_stream_opts_t opts;
    volatile sig_atomic_t stop;
    int rc;
    char err[1024];
} run_t;

static void *run_main(void *arg) {
    run_t *r = arg;
    r->rc = crw_stream_run(r->conf, &r->opts, r->err, sizeof r->err);
    return NULL;
}

static char conninfo[128], dlpath[256];

/* A config for db from settings (NULL-terminated key=value), finalized; no sink but the probe. */
static crw_config_t *config(const char *db, const char *const *settings) {
    crw_config_t *c = crw_config_new();
    char err[512], slot[128];
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    snprintf(dlpath, sizeof dlpath, "/tmp/%s-deadletter.jsonl", db);
    unlink(dlpath);
    char dl[300];
    snprintf(dl, sizeof dl, "deadletter.file=%s", dlpath);
    const char *fixed[] = {slot, dl, "status.interval.ms=100", NULL};
    for (int i = 0; fixed[i]; i++)
        cr_assert_eq(crw_config_set_pair(c, fixed[i], err, sizeof err), 0, "%s", err);
    for (int i = 0; settings[i]; i++)
        cr_assert_eq(crw_config_set_pair(c, settings[i], err, sizeof err), 0, "%s: %s", settings[i], err);
    cr_assert_eq(crw_config_finalize(c, err, sizeof err), 0, "%s", err);
    crw_strlist_clear(&c->sinks); /* the probe is the only sink */
    return c;
}

/* Starts the stream on db in a thread and waits until its slot is streaming. */
static void start(run_t *r, PGconn *c, const char *db, crw_config_t *conf) {
    memset(&probe, 0, sizeof probe);
    snprintf(conninfo, sizeof conninfo, "dbname=%s", db);
    r->conf = conf;
    r->opts = (crw_stream_opts_t){conninfo, 0, &r->stop, probe_new, NULL};
    r->rc = 1;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, run_main, r), 0);
    pthread_detach(t);
    /* Active is not enough: a slot being created is active before its consistent point, and a change committed
     * then is not the slot's.  START_REPLICATION puts its walsender in catchup, then streaming. */
    cr_assert(it_wait_sql_true(c, 15000,
                               "SELECT count(*) = 1 FROM pg_replication_slots s JOIN pg_stat_replication r ON "
                               "r.pid = s.active_pid WHERE s.slot_name = '%s' AND r.state IN ('catchup', 'streaming')",
                               db),
              "the stream did not start");
}

/* Waits (up to ms) for the run to return; true when it did. */
static bool finished(run_t *r, int ms) {
    for (int i = 0; i < ms / 20 && r->rc == 1; i++)
        usleep(20000);
    return r->rc != 1;
}

static void test_sink_error_stops_the_stream(const char *format) {
    char db[64], fmt[64];
    PGconn *c = it_db_create("drvsink", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    snprintf(fmt, sizeof fmt, "event.format=%s", format);
    const char *settings[] = {"tables=public.t", fmt, NULL};
    crw_config_t *conf = config(db, settings);
    run_t r = {0};
    start(&r, c, db, conf);
    probe.answer = CRW_ERR_CONFIG; /* the value an unmappable change once had */
    char *before = it_query_value(c, "SELECT pg_current_wal_lsn()");
    it_exec(c, "INSERT INTO t VALUES (1, 'a')");
    it_exec(c, "INSERT INTO t VALUES (2, 'b')");
    bool done = finished(&r, 15000);
    if (!done) {
        r.stop = 1; /* the stream went on: stop it before failing */
        finished(&r, 15000);
    }
    cr_assert(done, "%s: a sink's error did not stop the stream (it emitted %d events)", format, probe.emitted);
    cr_assert_eq(r.rc, CRW_ERR_CONFIG, "%s: the run must return the sink's error, got %d (%s)", format, r.rc, r.err);
    cr_assert_eq(probe.emitted, 1, "%s: nothing after the failed emit", format);
    cr_assert_neq(access(dlpath, F_OK), 0, "%s: a sink's error was dead-lettered", format);
    char *past = it_query_value(c, "SELECT confirmed_flush_lsn > '%s' FROM pg_replication_slots WHERE slot_name = '%s'",
                                before, db);
    cr_assert_str_eq(past, "f", "%s: the slot was confirmed past the change no sink took", format);
    free(past);
    free(before);
    crw_config_destroy(conf);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(driver, a_sink_error_is_not_a_dead_letter_cloudevents, .timeout = 120) {
    test_sink_error_stops_the_stream("cloudevents");
}

Test(driver, a_sink_error_is_not_a_dead_letter_debezium, .timeout = 120) {
    test_sink_error_stops_the_stream("debezium");
}

/* 70 kinds in one shared table: the last one maps like the first. */
Test(driver, a_shared_table_of_seventy_kinds, .timeout = 120) {
    char db[64];
    PGconn *c = it_db_create("drvkinds", db, sizeof db);
    it_exec(c, "CREATE TABLE res (kind text, name text, v int, PRIMARY KEY (kind, name))");
    enum { NKINDS = 70 };
    static char keys[NKINDS * 3][64];
    const char *settings[NKINDS * 3 + 1];
    int n = 0;
    for (int k = 0; k < NKINDS; k++) {
        snprintf(keys[n], sizeof keys[0], "resource.k%d.table=public.res", k);
        settings[n] = keys[n];
        n++;
        snprintf(keys[n], sizeof keys[0], "resource.k%d.kind=K%d", k, k);
        settings[n] = keys[n];
        n++;
        snprintf(keys[n], sizeof keys[0], "resource.k%d.kind.column=kind", k);
        settings[n] = keys[n];
        n++;
    }
    settings[n] = NULL;
    crw_config_t *conf = config(db, settings);
    run_t r = {0};
    start(&r, c, db, conf);
    it_exec(c, "INSERT INTO res VALUES ('K0', 'a', 1), ('K63', 'b', 1), ('K64', 'c', 1), ('K69', 'd', 1)");
    for (int i = 0; i < 750 && probe.emitted < 4; i++)
        usleep(20000);
    r.stop = 1;
    cr_assert(finished(&r, 15000), "the stream did not stop");
    cr_assert_eq(r.rc, 0, "%s", r.err);
    cr_assert_eq(probe.emitted, 4, "every kind maps: %d events", probe.emitted);
    const char *want[4] = {"K0", "K63", "K64", "K69"};
    for (int i = 0; i < 4; i++) {
        cr_assert_str_eq(probe.types[i], "ADDED");
        cr_assert_str_eq(probe.kinds[i], want[i]);
    }
    cr_assert_neq(access(dlpath, F_OK), 0, "nothing was dead-lettered");
    crw_config_destroy(conf);
    PQfinish(c);
    it_db_drop(NULL, db);
}
