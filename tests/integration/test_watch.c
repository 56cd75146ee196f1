/*
 * test_watch.c — the watch API (watch.listen, src/app/watchapi.c,
 * docs/watch.md) against a real PostgreSQL, read with curl and a raw
 * socket: lists, one object, watches from a resourceVersion, 410 Gone,
 * label and field selectors, Server-Sent Events resumed with Last-Event-ID,
 * a resume across a restart through bookmarks, 100 watchers at once, a
 * stalled watcher cut off while the stream goes on, and the ack rule.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "support/itest.h"

#define EV_TIMEOUT 15000
#define JOBS "/apis/media.example.com/v1/namespaces/default/videotranscodingjobs"

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A database with sql/crwatch.sql and a managed table jobs in its convention. */
static PGconn *jobs_db(const char *prefix, char *db, size_t n) {
    PGconn *c = it_db_create(prefix, db, n);
    it_apply_sql(db, "sql/crwatch.sql");
    it_exec(c, "CREATE TABLE jobs (" IT_CONVENTION_COLUMNS ", PRIMARY KEY (namespace, name));"
               "SELECT crwatch.manage('public.jobs')");
    return c;
}

static void add_job(PGconn *c, const char *name, const char *team) {
    it_exec(c, "INSERT INTO jobs (name, spec, labels) VALUES ('%s', '{\"preset\":\"1080p\"}', '{\"team\":\"%s\"}')",
            name, team);
}

/* crwatch stream serving the watch API on a free port; extra: more settings (may be NULL). */
static it_proc_t *serve(const char *db, const char *const *extra, int *port) {
    const char *const base[] = {"resource.j.table=public.jobs", "resource.j.kind=VideoTranscodingJob",
                                "resource.j.shape=crd", "resource.j.api.version=media.example.com/v1",
                                "watch.listen=127.0.0.1:0", NULL};
    it_proc_t *p = it_crwatch_stream(db, base, extra);
    const char *needle = "the watch API on 127.0.0.1:";
    cr_assert(it_proc_stderr_wait(p, needle, EV_TIMEOUT), "no watch API");
    char *err = it_proc_stderr(p);
    *port = atoi(strstr(err, needle) + strlen(needle));
    free(err);
    return p;
}

/* GET path: the status code; the body in *body (malloc'd) when body is not NULL. */
static int get(int port, const char *path, const char *header, char **body) {
    char url[1024];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    const char *argv[] = {"curl", "-s", "-N", "-m", "20", "-w", "\n%{http_code}", url, NULL, NULL, NULL};
    if (header) {
        argv[7] = "-H";
        argv[8] = header;
        argv[9] = url;
    }
    char *out = NULL;
    int rc = it_run("/usr/bin/curl", argv, 30000, &out, NULL);
    cr_assert_eq(rc, 0, "curl %s: %d", url, rc);
    char *nl = strrchr(out, '\n');
    int code = atoi(nl + 1);
    *nl = '\0';
    if (body)
        *body = out;
    else
        free(out);
    return code;
}

/* A watch in the background (curl): its lines come through it_proc_read_line. */
static it_proc_t *watch(int port, const char *query, const char *header) {
    char url[1024];
    snprintf(url, sizeof url, "http://127.0.0.1:%d" JOBS "?%s", port, query);
    const char *argv[] = {"curl", "-s", "-N", url, NULL, NULL, NULL};
    if (header) {
        argv[3] = "-H";
        argv[4] = header;
        argv[5] = url;
    }
    return it_proc_spawn("/usr/bin/curl", argv);
}

static char *list_rv(int port, int *items) {
    char *body = NULL;
    cr_assert_eq(get(port, JOBS, NULL, &body), 200, "%s", body);
    json_object *l = json_tokener_parse(body);
    cr_assert(l, "%s", body);
    it_expect_str(l, "kind", "VideoTranscodingJobList");
    it_expect_str(l, "apiVersion", "media.example.com/v1");
    char *rv = strdup(it_json_str(l, "metadata.resourceVersion"));
    *items = (int)json_object_array_length(it_json_get(l, "items"));
    json_object_put(l);
    free(body);
    return rv;
}

/* The next watch event: its type and object name ("MODIFIED job-1"), or NULL on timeout. */
static char *next_event(it_proc_t *w, int timeout_ms) {
    char *line = it_proc_read_line(w, timeout_ms);
    if (!line)
        return NULL;
    json_object *e = json_tokener_parse(line);
    cr_assert(e, "not JSON: %s", line);
    char *s = NULL;
    if (asprintf(&s, "%s %s", it_json_str(e, "type"),
                 it_json_str(e, "object.metadata.name") ? it_json_str(e, "object.metadata.name") : "-") < 0)
        s = NULL;
    json_object_put(e);
    free(line);
    return s;
}

static void expect_event(it_proc_t *w, const char *want) {
    char *got = next_event(w, EV_TIMEOUT);
    cr_assert(got, "no event (want %s)", want);
    cr_expect_str_eq(got, want);
    free(got);
}

Test(watch, list_get_and_watch_with_selectors, .timeout = 120) {
    char db[64];
    PGconn *c = jobs_db("wlist", db, sizeof db);
    add_job(c, "job-1", "a"); /* before crwatch: known through the listing at start */
    int port;
    it_proc_t *p = serve(db, NULL, &port);
    add_job(c, "job-2", "b");
    json_object_put(it_proc_expect_event(p, EV_TIMEOUT)); /* on stdout: the sinks have it */
    usleep(300 * 1000);
    int items;
    char *rv = list_rv(port, &items);
    cr_expect_eq(items, 2);
    char *body = NULL;
    cr_expect_eq(get(port, JOBS "/job-2", NULL, &body), 200);
    json_object *o = json_tokener_parse(body);
    it_expect_str(o, "metadata.name", "job-2");
    it_expect_str(o, "metadata.labels.team", "b");
    cr_expect(strtoull(it_json_str(o, "metadata.resourceVersion"), NULL, 10) <= strtoull(rv, NULL, 10),
              "an object newer (%s) than its list (%s)", it_json_str(o, "metadata.resourceVersion"), rv);
    json_object_put(o);
    free(body);
    cr_expect_eq(get(port, JOBS "/nope", NULL, &body), 404);
    cr_expect(strstr(body, "\"kind\":\"Status\"") && strstr(body, "\"reason\":\"NotFound\""), "%s", body);
    free(body);
    cr_expect_eq(get(port, "/apis/media.example.com/v1/namespaces/default/other", NULL, NULL), 404);
    cr_expect_eq(get(port, JOBS "?labelSelector=team%20in%20(", NULL, NULL), 400);

    char q[256];
    snprintf(q, sizeof q, "watch=1&resourceVersion=%s", rv);
    it_proc_t *all = watch(port, q, NULL);
    snprintf(q, sizeof q, "watch=1&resourceVersion=%s&labelSelector=team%%3Da", rv);
    it_proc_t *team_a = watch(port, q, NULL);
    snprintf(q, sizeof q, "watch=1&resourceVersion=%s&fieldSelector=metadata.name%%3Djob-2", rv);
    it_proc_t *job2 = watch(port, q, NULL);
    snprintf(q, sizeof q, "watch=1&resourceVersion=%s&labelSelector=team%%20notin%%20(a),!missing", rv);
    it_proc_t *not_a = watch(port, q, NULL);
    usleep(300 * 1000);
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Running\"}' WHERE name = 'job-1'");
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Running\"}' WHERE name = 'job-2'");
    it_exec(c, "DELETE FROM jobs WHERE name = 'job-1'");
    expect_event(all, "MODIFIED job-1");
    expect_event(all, "MODIFIED job-2");
    expect_event(all, "DELETED job-1");
    expect_event(team_a, "MODIFIED job-1");
    expect_event(team_a, "DELETED job-1");
    expect_event(job2, "MODIFIED job-2");
    expect_event(not_a, "MODIFIED job-2");
    cr_expect(it_proc_no_line_within(job2, 500) && it_proc_no_line_within(not_a, 100), "filtered events came");
    /* Without a resourceVersion: the current objects as ADDED first. */
    it_proc_t *fresh = watch(port, "watch=1", NULL);
    expect_event(fresh, "ADDED job-2");
    it_proc_free(all);
    it_proc_free(team_a);
    it_proc_free(job2);
    it_proc_free(not_a);
    it_proc_free(fresh);
    free(rv);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(watch, a_resource_version_older_than_the_history_is_410_gone, .timeout = 120) {
    char db[64];
    PGconn *c = jobs_db("wgone", db, sizeof db);
    int port;
    const char *const extra[] = {"watch.history.events=3", NULL};
    it_proc_t *p = serve(db, extra, &port);
    add_job(c, "job-0", "a");
    json_object_put(it_proc_expect_event(p, EV_TIMEOUT));
    usleep(300 * 1000);
    int items;
    char *rv = list_rv(port, &items);
    for (int i = 1; i <= 5; i++) {
        char name[16];
        snprintf(name, sizeof name, "job-%d", i);
        add_job(c, name, "a");
    }
    for (int i = 0; i < 5; i++)
        json_object_put(it_proc_expect_event(p, EV_TIMEOUT));
    usleep(300 * 1000);
    char path[512], *body = NULL;
    snprintf(path, sizeof path, JOBS "?watch=1&resourceVersion=%s", rv);
    cr_expect_eq(get(port, path, NULL, &body), 410, "%s", body);
    cr_expect(strstr(body, "\"reason\":\"Expired\"") && strstr(body, "\"code\":410"), "%s", body);
    free(body);
    cr_expect_eq(get(port, JOBS "?watch=1&resourceVersion=1", NULL, NULL), 410, "before the stream's start");
    cr_expect_eq(get(port, JOBS "?watch=1&resourceVersion=x1", NULL, NULL), 400);
    /* A relist gives a resourceVersion the history covers. */
    free(rv);
    rv = list_rv(port, &items);
    cr_expect_eq(items, 6);
    snprintf(path, sizeof path, JOBS "?watch=1&resourceVersion=%s&timeoutSeconds=1", rv);
    cr_expect_eq(get(port, path, NULL, NULL), 200);
    free(rv);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(watch, server_sent_events_resume_with_last_event_id, .timeout = 120) {
    char db[64];
    PGconn *c = jobs_db("wsse", db, sizeof db);
    int port;
    it_proc_t *p = serve(db, NULL, &port);
    char path[512], *body = NULL;
    snprintf(path, sizeof path, JOBS "?timeoutSeconds=3");
    it_proc_t *sse = watch(port, "timeoutSeconds=4", "Accept: text/event-stream");
    usleep(300 * 1000);
    add_job(c, "job-1", "a");
    add_job(c, "job-2", "a");
    /* id:, event:, data:, blank */
    char *first_id = NULL;
    int events = 0;
    for (char *l; events < 2 && (l = it_proc_read_line(sse, EV_TIMEOUT));) {
        if (!strncmp(l, "id: ", 4) && !first_id)
            first_id = strdup(l + 4);
        if (!strncmp(l, "event: ", 7)) {
            cr_expect_str_eq(l + 7, "ADDED");
            events++;
        }
        if (!strncmp(l, "data: ", 6)) {
            json_object *o = json_tokener_parse(l + 6);
            cr_expect(o && it_json_str(o, "metadata.name"), "%s", l);
            json_object_put(o);
        }
        free(l);
    }
    cr_assert_eq(events, 2);
    cr_assert(first_id);
    /* A browser's EventSource comes back with the last id it saw: only what came after. */
    char hdr[128];
    snprintf(hdr, sizeof hdr, "Last-Event-ID: %s", first_id);
    snprintf(path, sizeof path, JOBS "?timeoutSeconds=1");
    char accept_and_id[256];
    snprintf(accept_and_id, sizeof accept_and_id, "%s", hdr);
    char url[1024];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    const char *argv[] = {"curl", "-s", "-N", "-H", "Accept: text/event-stream", "-H", accept_and_id, url, NULL};
    cr_assert_eq(it_run("/usr/bin/curl", argv, 20000, &body, NULL), 0);
    cr_expect(strstr(body, "\"name\":\"job-2\"") && !strstr(body, "\"name\":\"job-1\""), "%s", body);
    free(body);
    free(first_id);
    it_proc_free(sse);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(watch, a_watch_resumes_across_a_restart_from_its_last_bookmark, .timeout = 120) {
    char db[64];
    PGconn *c = jobs_db("wrest", db, sizeof db);
    int port;
    it_proc_t *p = serve(db, NULL, &port);
    add_job(c, "job-1", "a");
    json_object_put(it_proc_expect_event(p, EV_TIMEOUT));
    usleep(300 * 1000);
    int items;
    char *rv = list_rv(port, &items);
    char q[256];
    snprintf(q, sizeof q, "watch=1&resourceVersion=%s&allowWatchBookmarks=true", rv);
    it_proc_t *w = watch(port, q, NULL);
    usleep(300 * 1000);
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Running\"}' WHERE name = 'job-1'");
    expect_event(w, "MODIFIED job-1");
    /* crwatch stops: the watch ends with a bookmark, where a client resumes. */
    it_crwatch_stop(p, 10000);
    char *last = NULL;
    for (char *l; (l = it_proc_read_line(w, 5000));) {
        json_object *e = json_tokener_parse(l);
        if (e && !strcmp(it_json_str(e, "type"), "BOOKMARK")) {
            free(last);
            last = strdup(it_json_str(e, "object.metadata.resourceVersion"));
        }
        json_object_put(e);
        free(l);
    }
    cr_assert(last, "no bookmark at the end");
    it_proc_free(w);
    /* While crwatch is away, more changes. */
    add_job(c, "job-2", "b");
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Done\"}' WHERE name = 'job-1'");
    p = serve(db, NULL, &port);
    snprintf(q, sizeof q, "watch=1&resourceVersion=%s", last);
    w = watch(port, q, NULL);
    expect_event(w, "ADDED job-2");
    expect_event(w, "MODIFIED job-1");
    cr_expect(it_proc_no_line_within(w, 500), "more than what changed");
    it_proc_free(w);
    free(last);
    free(rv);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(watch, a_hundred_watchers_see_the_same_sequence, .timeout = 180) {
    char db[64];
    PGconn *c = jobs_db("w100", db, sizeof db);
    int port;
    it_proc_t *p = serve(db, NULL, &port);
    enum { W = 100, N = 20 };
    it_proc_t *w[W];
    for (int i = 0; i < W; i++)
        w[i] = watch(port, "watch=1&timeoutSeconds=30", NULL);
    usleep(1500 * 1000);
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "job-%d", i);
        add_job(c, name, i % 2 ? "a" : "b");
    }
    char want[N][32];
    for (int i = 0; i < N; i++)
        snprintf(want[i], sizeof want[i], "ADDED job-%d", i);
    for (int k = 0; k < W; k++)
        for (int i = 0; i < N; i++) {
            char *got = next_event(w[k], EV_TIMEOUT);
            cr_assert(got, "watcher %d: event %d missing", k, i);
            cr_assert_str_eq(got, want[i], "watcher %d, event %d", k, i);
            free(got);
        }
    for (int k = 0; k < W; k++)
        it_proc_free(w[k]);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(watch, a_stalled_watcher_is_cut_off_and_the_stream_goes_on, .timeout = 180) {
    char db[64];
    PGconn *c = jobs_db("wstall", db, sizeof db);
    int port;
    const char *const extra[] = {"watch.history.events=100", NULL};
    it_proc_t *p = serve(db, extra, &port);
    /* A watcher that reads nothing (a small receive buffer, never drained). */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert_eq(connect(s, (struct sockaddr *)&a, sizeof a), 0);
    char req[512];
    int rl = snprintf(req, sizeof req, "GET " JOBS "?watch=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    cr_assert_eq(write(s, req, (size_t)rl), rl);
    it_proc_t *live = watch(port, "watch=1&timeoutSeconds=60", NULL);
    usleep(500 * 1000);
    /* 400 changes of 32 KiB objects, 10 per transaction: far more than the stalled one's buffers and the
     * history, at a pace a reading watcher keeps up with. */
    for (int t = 0; t < 40; t++) {
        it_exec(c, "INSERT INTO jobs (name, spec) SELECT 'big-' || g, jsonb_build_object('pad', repeat(md5(g::text), "
                   "1000)) FROM generate_series(%d, %d) g",
                t * 10 + 1, t * 10 + 10);
        for (int i = 0; i < 10; i++) /* crwatch's stdout first: a full pipe would hold the stream up */
            json_object_put(it_proc_expect_event(p, EV_TIMEOUT));
        for (int i = 0; i < 10; i++) {
            char *got = next_event(live, EV_TIMEOUT);
            cr_assert(got, "the live watcher stopped at %d", t * 10 + i);
            free(got);
        }
    }
    /* Now read the stalled one: what fit, then an ERROR 410 Expired, then the end. */
    struct timeval rto = {2, 0}; /* the connection stays open (keep-alive) after the watch ends */
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &rto, sizeof rto);
    char buf[65536];
    size_t total = 0;
    bool expired = false;
    char tail[256] = "";
    int64_t until = now_ms() + 20000;
    for (ssize_t r; now_ms() < until && (r = read(s, buf, sizeof buf)) > 0;) {
        total += (size_t)r;
        size_t keep = (size_t)r < sizeof tail - 1 ? (size_t)r : sizeof tail - 1;
        memcpy(tail, buf + r - (ssize_t)keep, keep);
        tail[keep] = '\0';
        expired = expired || strstr(tail, "\"reason\":\"Expired\"");
    }
    close(s);
    cr_expect(expired, "no 410 Expired for the stalled watcher (%zu bytes read; ends with %s)", total, tail);
    it_proc_free(live);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(watch, a_watcher_sees_only_what_the_sinks_acknowledged, .timeout = 120) {
    char db[64], flag[128], cmd[256];
    PGconn *c = jobs_db("wack", db, sizeof db);
    snprintf(flag, sizeof flag, "/tmp/crw-it-%s.ok", db);
    unlink(flag);
    /* The handler asks for a retry until the flag file exists: nothing is acknowledged before. */
    snprintf(cmd, sizeof cmd, "exec.command=test -f %s || exit 75", flag);
    const char *const extra[] = {"sink=exec", "exec.mode=per-event", cmd, "retry.max=-1",
                                 "retry.backoff.initial.ms=50", "retry.backoff.max.ms=100", NULL};
    int port;
    it_proc_t *p = serve(db, extra, &port);
    it_proc_t *w = watch(port, "watch=1&timeoutSeconds=30", NULL);
    usleep(300 * 1000);
    add_job(c, "job-1", "a");
    cr_expect(it_proc_no_line_within(w, 1500), "a watcher saw a change no sink acknowledged");
    FILE *f = fopen(flag, "w");
    cr_assert(f);
    fclose(f);
    expect_event(w, "ADDED job-1");
    unlink(flag);
    it_proc_free(w);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(watch, the_example_page_shows_a_job_created_after_it_loaded, .timeout = 120) {
    char db[64];
    PGconn *c = jobs_db("wpage", db, sizeof db);
    add_job(c, "job-1", "a");
    int port;
    it_proc_t *p = serve(db, NULL, &port);
    char url[512];
    snprintf(url, sizeof url, "file://%s/examples/watch.html?api=http://127.0.0.1:%d&until=late-1", CRW_SOURCE_DIR,
             port);
    /* Headless Chromium (Debian's chromium): it prints the page once nothing is pending, i.e. after the page saw
     * late-1 and closed its EventSource. */
    const char *argv[] = {"chromium",  "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=60000",
                          "--dump-dom", url,         NULL};
    it_proc_t *browser = it_proc_spawn("/usr/bin/chromium", argv);
    usleep(3000 * 1000); /* the page has loaded, listed and is watching */
    cr_assert(it_proc_running(browser), "chromium exited before the job was created");
    it_exec(c, "INSERT INTO jobs (name, spec, status) VALUES ('late-1', '{}', '{\"phase\":\"Pending\"}')");
    cr_assert_eq(it_proc_wait(browser, 60000), 0, "chromium did not finish");
    char dom[65536] = "";
    size_t used = 0;
    for (char *l; (l = it_proc_read_line(browser, 100));) {
        used += (size_t)snprintf(dom + used, sizeof dom - used, "%s\n", l);
        free(l);
        if (used >= sizeof dom - 1)
            break;
    }
    cr_expect(strstr(dom, "<tr id=\"job-late-1\" data-phase=\"Pending\">"), "the page did not show late-1: %s", dom);
    cr_expect(strstr(dom, "<tr id=\"job-job-1\""), "the page did not list job-1: %s", dom);
    cr_expect(strstr(dom, "saw late-1"), "%s", dom);
    it_proc_free(browser);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(watch, deletes_reach_label_filtered_watchers_with_their_labels, .timeout = 120) {
    char db[64];
    PGconn *c = jobs_db("wdel", db, sizeof db);
    int port;
    /* A one-entry cache: the delete of job-1 finds no old object there, only its key in the WAL. */
    const char *const extra[] = {"cache.max.entries=1", NULL};
    it_proc_t *p = serve(db, extra, &port);
    add_job(c, "job-1", "a");
    add_job(c, "job-2", "a");
    add_job(c, "job-3", "b");
    for (int i = 0; i < 3; i++)
        json_object_put(it_proc_expect_event(p, EV_TIMEOUT));
    usleep(300 * 1000);
    int items;
    char *rv = list_rv(port, &items);
    char q[256];
    snprintf(q, sizeof q, "watch=1&resourceVersion=%s&labelSelector=team%%3Da", rv);
    it_proc_t *w = watch(port, q, NULL);
    usleep(300 * 1000);
    it_exec(c, "DELETE FROM jobs WHERE name = 'job-1'");
    char *line = it_proc_read_line(w, EV_TIMEOUT);
    cr_assert(line, "no DELETED for the filtered watcher");
    json_object *e = json_tokener_parse(line);
    it_expect_str(e, "type", "DELETED");
    it_expect_str(e, "object.metadata.name", "job-1");
    it_expect_str(e, "object.metadata.labels.team", "a");
    json_object_put(e);
    free(line);
    it_exec(c, "TRUNCATE jobs");
    expect_event(w, "DELETED job-2");
    cr_expect(it_proc_no_line_within(w, 500), "job-3 is team b");
    char *after = list_rv(port, &items);
    cr_expect_eq(items, 0, "the store is empty after the TRUNCATE");
    free(after);
    it_proc_free(w);
    free(rv);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(watch, a_change_sent_again_after_a_reconnect_is_shown_once, .timeout = 120) {
    char db[64];
    PGconn *c = jobs_db("wdup", db, sizeof db);
    int port;
    /* Each delivery takes a second: the walsender is ended before the change is acknowledged. */
    const char *const extra[] = {"sink=exec", "exec.mode=per-event", "exec.command=sleep 1", NULL};
    it_proc_t *p = serve(db, extra, &port);
    it_proc_t *w = watch(port, "watch=1&timeoutSeconds=30", NULL);
    usleep(300 * 1000);
    add_job(c, "job-1", "a");
    usleep(300 * 1000);
    it_exec(c, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '%s'", db);
    cr_assert(it_proc_stderr_wait(p, "reconnecting", EV_TIMEOUT), "no reconnect");
    expect_event(w, "ADDED job-1");
    cr_expect(it_proc_no_line_within(w, 4000), "the change sent again came twice");
    it_proc_free(w);
    it_crwatch_stop(p, 15000);
    PQfinish(c);
    it_db_drop(NULL, db);
}
