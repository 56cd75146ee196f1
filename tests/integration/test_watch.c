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
    /* first the bookmark where the (empty) initial objects stand, then the two ADDED */
    char id[64] = "";
    bool bookmark = false, in_bookmark = false;
    for (char *l; events < 2 && (l = it_proc_read_line(sse, EV_TIMEOUT));) {
        if (!strncmp(l, "id: ", 4))
            snprintf(id, sizeof id, "%s", l + 4);
        bool is_bookmark = false;
        if (!strncmp(l, "event: ", 7) && !strcmp(l + 7, "BOOKMARK")) {
            cr_expect(!bookmark && events == 0, "one bookmark, before the changes");
            bookmark = is_bookmark = true;
        } else if (!strncmp(l, "event: ", 7)) {
            cr_expect_str_eq(l + 7, "ADDED");
            if (!first_id)
                first_id = strdup(id);
            events++;
        }
        in_bookmark = is_bookmark || (in_bookmark && strncmp(l, "event: ", 7));
        if (!strncmp(l, "data: ", 6)) {
            json_object *o = json_tokener_parse(l + 6);
            cr_expect(o && (in_bookmark ? it_json_str(o, "metadata.resourceVersion") : it_json_str(o, "metadata.name")),
                      "%s", l);
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

/*
 * As the Kubernetes API does for a label-filtered watch: a label change that
 * takes an object out of the selection is a DELETED (its last matching
 * version, at the change's resourceVersion), one that brings it in an ADDED.
 */
Test(watch, a_label_change_leaves_or_enters_a_selection_as_deleted_or_added, .timeout = 120) {
    char db[64];
    PGconn *c = jobs_db("wlab", db, sizeof db);
    int port;
    it_proc_t *p = serve(db, NULL, &port);
    add_job(c, "job-1", "a");
    json_object_put(it_proc_expect_event(p, EV_TIMEOUT));
    usleep(300 * 1000);
    int items;
    char *rv = list_rv(port, &items);
    char q[256];
    snprintf(q, sizeof q, "watch=1&resourceVersion=%s&labelSelector=team%%3Da", rv);
    it_proc_t *a = watch(port, q, NULL);
    snprintf(q, sizeof q, "watch=1&resourceVersion=%s&labelSelector=team%%3Db", rv);
    it_proc_t *b = watch(port, q, NULL);
    usleep(300 * 1000);
    it_exec(c, "UPDATE jobs SET labels = '{\"team\":\"b\"}' WHERE name = 'job-1'");
    json_object *moved = it_proc_expect_event(p, EV_TIMEOUT);
    unsigned hi, lo;
    cr_assert_eq(sscanf(it_json_str(moved, "pglsn"), "%X/%X", &hi, &lo), 2);
    char want_rv[32];
    snprintf(want_rv, sizeof want_rv, "%llu", (unsigned long long)hi << 32 | lo);
    json_object_put(moved);
    char *line = it_proc_read_line(a, EV_TIMEOUT);
    cr_assert(line, "team a's watcher did not hear job-1 leave");
    json_object *e = json_tokener_parse(line);
    it_expect_str(e, "type", "DELETED");
    it_expect_str(e, "object.metadata.name", "job-1");
    it_expect_str(e, "object.metadata.labels.team", "a"); /* the version that matched */
    it_expect_str(e, "object.metadata.resourceVersion", want_rv);
    json_object_put(e);
    free(line);
    expect_event(b, "ADDED job-1");
    /* a change that keeps the labels is MODIFIED for the selection that has it, nothing for the other */
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Running\"}' WHERE name = 'job-1'");
    expect_event(b, "MODIFIED job-1");
    cr_expect(it_proc_no_line_within(a, 500), "team a heard of a team b job");
    it_proc_free(a);
    it_proc_free(b);
    free(rv);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* A BOOKMARK annotated as the end of the initial events ("k8s.io/initial-events-end": "true"). */
static void expect_initial_events_end(json_object *e) {
    json_object *ann = it_json_get(e, "object.metadata.annotations"), *v;
    cr_expect(ann && json_object_object_get_ex(ann, "k8s.io/initial-events-end", &v) &&
                  !strcmp(json_object_get_string(v), "true"),
              "not annotated: %s", json_object_to_json_string(e));
}

/*
 * client-go's streaming list (sendInitialEvents=true): the current objects,
 * then a BOOKMARK annotated k8s.io/initial-events-end, also when there are
 * none; and an SSE watcher cut off with 410 gets its ERROR without an id, so
 * an EventSource does not resume past what it missed.
 */
Test(watch, initial_events_end_with_the_annotated_bookmark_and_a_410_has_no_sse_id, .timeout = 120) {
    char db[64];
    PGconn *c = jobs_db("wini", db, sizeof db);
    int port;
    const char *const extra[] = {"watch.history.events=3", NULL};
    it_proc_t *p = serve(db, extra, &port);
    usleep(300 * 1000);
    const char *q = "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true";
    it_proc_t *empty = watch(port, q, NULL);
    char *line = it_proc_read_line(empty, EV_TIMEOUT);
    cr_assert(line, "no bookmark for an empty collection");
    json_object *e = json_tokener_parse(line);
    it_expect_str(e, "type", "BOOKMARK");
    expect_initial_events_end(e);
    json_object_put(e);
    free(line);
    it_proc_free(empty);

    add_job(c, "job-1", "a");
    add_job(c, "job-2", "a");
    for (int i = 0; i < 2; i++)
        json_object_put(it_proc_expect_event(p, EV_TIMEOUT));
    usleep(300 * 1000);
    it_proc_t *two = watch(port, q, NULL);
    int added = 0;
    for (int i = 0; i < 3; i++) {
        line = it_proc_read_line(two, EV_TIMEOUT);
        cr_assert(line, "event %d missing", i);
        e = json_tokener_parse(line);
        if (i < 2) {
            it_expect_str(e, "type", "ADDED");
            added++;
        } else {
            it_expect_str(e, "type", "BOOKMARK");
            expect_initial_events_end(e);
        }
        json_object_put(e);
        free(line);
    }
    cr_expect_eq(added, 2);
    it_proc_free(two);

    int items;
    char *rv = list_rv(port, &items);
    char sq[256];
    snprintf(sq, sizeof sq, "watch=1&resourceVersion=%s&timeoutSeconds=20", rv);
    it_proc_t *sse = watch(port, sq, "Accept: text/event-stream");
    usleep(300 * 1000);
    it_exec(c, "INSERT INTO jobs (name, spec) SELECT 'bulk-' || g, '{}' FROM generate_series(1, 5) g");
    char last_id[64] = "";
    bool error = false, error_had_id = false;
    for (char *l; !error && (l = it_proc_read_line(sse, EV_TIMEOUT));) {
        if (!strncmp(l, "id: ", 4))
            snprintf(last_id, sizeof last_id, "%s", l + 4);
        else if (!strcmp(l, "event: ERROR")) {
            error = true;
            error_had_id = last_id[0] != '\0';
        } else if (!*l)
            last_id[0] = '\0'; /* an event ends: the next one's id, if any, comes next */
        free(l);
    }
    cr_assert(error, "no ERROR for a watcher the history left behind");
    cr_expect(!error_had_id, "the ERROR carries an id (%s): an EventSource would resume past the gap", last_id);
    it_proc_free(sse);
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

/* ---- examples/informer.py: a list-and-watch client after client-go's reflector ------------------------ */

#include <signal.h>

#define INF_MAX_LINES 1024

/* A running examples/informer.py and every line it printed so far, parsed. */
typedef struct {
    it_proc_t *p;
    json_object *lines[INF_MAX_LINES];
    int n;
    int watch; /* the number of the watch the last line came in (its {"watch": n} line), 0 before the first */
} informer_t;

/* examples/informer.py on the jobs of namespace default; extra: more arguments (NULL-terminated). */
static informer_t *informer(int port, const char *const *extra) {
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    const char *argv[40] = {"python3", CRW_SOURCE_DIR "/examples/informer.py", base, "--group", "media.example.com",
                            "--version", "v1", "--plural", "videotranscodingjobs", "--namespace", "default"};
    int n = 11;
    for (; extra && *extra && n < 38; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    informer_t *inf = calloc(1, sizeof *inf);
    cr_assert(inf);
    inf->p = it_proc_spawn("/usr/bin/python3", argv);
    return inf;
}

static void informer_free(informer_t *inf) {
    for (int i = 0; i < inf->n; i++)
        json_object_put(inf->lines[i]);
    it_proc_free(inf->p);
    free(inf);
}

/* The next line (kept in inf->lines), or NULL after timeout_ms or at the end. */
static json_object *informer_line(informer_t *inf, int timeout_ms) {
    char *l = it_proc_read_line(inf->p, timeout_ms);
    if (!l)
        return NULL;
    json_object *o = json_tokener_parse(l);
    cr_assert(o && json_object_is_type(o, json_type_object), "examples/informer.py printed: %s", l);
    free(l);
    cr_assert_lt(inf->n, INF_MAX_LINES, "examples/informer.py printed too much");
    inf->lines[inf->n++] = o;
    if (it_json_get(o, "watch"))
        inf->watch = atoi(it_json_str(o, "watch"));
    return o;
}

/* A change line of the informer ("MODIFIED default/job-1 <rv> <phase or ->", phase - for DELETED) into buf,
 * via "watch" or "list"; NULL when o is no such line. */
static const char *informer_change(json_object *o, const char *via, char *buf, size_t n) {
    const char *type = it_json_str(o, "type"), *v = it_json_str(o, "via");
    if (!type || !v || strcmp(v, via) || (strcmp(type, "ADDED") && strcmp(type, "MODIFIED") && strcmp(type, "DELETED")))
        return NULL;
    const char *phase = strcmp(type, "DELETED") ? it_json_str(o, "phase") : NULL;
    snprintf(buf, n, "%s %s %s %s", type, it_json_str(o, "key"), it_json_str(o, "resourceVersion"),
             phase ? phase : "-");
    return buf;
}

/* Reads lines until one whose field (top level) is want (NULL: present), or whose change line via the watch starts
 * with want when field is "change"; aborts the test after EV_TIMEOUT. */
static json_object *informer_until(informer_t *inf, const char *field, const char *want) {
    char buf[256];
    for (json_object *o; (o = informer_line(inf, EV_TIMEOUT));) {
        if (!strcmp(field, "change")) {
            if (informer_change(o, "watch", buf, sizeof buf) && !strncmp(buf, want, strlen(want)))
                return o;
            continue;
        }
        const char *v = it_json_str(o, field);
        if (v && (!want || !strncmp(v, want, strlen(want))))
            return o;
    }
    it_proc_dump_stderr(inf->p);
    cr_assert_fail("examples/informer.py: no line with %s %s", field, want ? want : "");
    return NULL;
}

/* Waits for the informer's exit (0) and returns its last line, the store. */
static json_object *informer_end(informer_t *inf, int timeout_ms) {
    int rc = it_proc_wait(inf->p, timeout_ms);
    if (rc != 0)
        it_proc_dump_stderr(inf->p);
    cr_assert_eq(rc, 0, "examples/informer.py exited with %d", rc);
    while (informer_line(inf, 1000))
        ;
    cr_assert(inf->n > 0 && it_json_get(inf->lines[inf->n - 1], "store"), "examples/informer.py: no store at the end");
    return inf->lines[inf->n - 1];
}

/* One change as crwatch's stdout sink has it: "TYPE key rv phase" (rv: the commit LSN as a number), its xid. */
typedef struct {
    char s[256], key[128], xid[24], rv[24];
} sunk_t;

static void sunk(it_proc_t *p, sunk_t *ch) {
    json_object *e = it_proc_expect_event(p, EV_TIMEOUT);
    unsigned hi, lo;
    cr_assert_eq(sscanf(it_json_str(e, "pglsn"), "%X/%X", &hi, &lo), 2, "pglsn %s", it_json_str(e, "pglsn"));
    snprintf(ch->rv, sizeof ch->rv, "%llu", (unsigned long long)hi << 32 | lo);
    const char *type = it_json_str(e, "data.type");
    const char *phase = strcmp(type, "DELETED") ? it_json_str(e, "data.object.status.phase") : NULL;
    snprintf(ch->key, sizeof ch->key, "%s", it_json_str(e, "data.key"));
    snprintf(ch->s, sizeof ch->s, "%s %s %s %s", type, ch->key, ch->rv, phase ? phase : "-");
    snprintf(ch->xid, sizeof ch->xid, "%s", it_json_str(e, "pgxid"));
    json_object_put(e);
}

/* The informer's final store against the table's rows (where: an SQL condition): the same keys, each at the
 * resourceVersion of the transaction that last wrote its row (its txid, through the sink's pgxid). */
static void expect_store_is_table(PGconn *c, const char *where, json_object *final, const sunk_t *ch, int nch) {
    json_object *store = it_json_get(final, "store");
    cr_assert(store && json_object_is_type(store, json_type_object));
    PGresult *r = it_query(c, "SELECT namespace || '/' || name, (txid::text::bigint %% 4294967296)::text FROM jobs "
                              "WHERE %s ORDER BY 1",
                           where);
    cr_expect_eq(json_object_object_length(store), PQntuples(r), "the store has %d objects, the table %d rows: %s",
                 json_object_object_length(store), PQntuples(r), json_object_to_json_string(final));
    for (int i = 0; i < PQntuples(r); i++) {
        const char *key = PQgetvalue(r, i, 0), *xid = PQgetvalue(r, i, 1), *want = NULL;
        for (int j = 0; j < nch; j++)
            if (!strcmp(ch[j].xid, xid))
                want = ch[j].rv;
        cr_assert(want, "row %s: its transaction %s is not among the sink's changes", key, xid);
        json_object *got;
        cr_expect(json_object_object_get_ex(store, key, &got) && !strcmp(json_object_get_string(got), want),
                  "row %s at %s: the store has %s", key, want,
                  json_object_object_get_ex(store, key, &got) ? json_object_get_string(got) : "nothing");
    }
    PQclear(r);
}

Test(watch, the_example_informer_follows_every_change_across_rewatches, .timeout = 120) {
    char db[64];
    PGconn *c = jobs_db("winf", db, sizeof db);
    add_job(c, "job-0", "a"); /* before crwatch: the informer has it from its list */
    int port;
    it_proc_t *p = serve(db, NULL, &port);
    /* Watches of 2 s: it watches again from its last resourceVersion (a bookmark's) several times. */
    const char *const args[] = {"--timeout-seconds", "2", "--max-seconds", "18", "--label-selector", "team=a", NULL};
    informer_t *inf = informer(port, args);
    json_object *l = informer_until(inf, "list", "start");
    cr_expect_str_eq(it_json_str(l, "items"), "1");
    char buf[256];
    l = informer_until(inf, "type", "ADDED");
    cr_expect(informer_change(l, "list", buf, sizeof buf) && !strncmp(buf, "ADDED default/job-0 ", 20), "%s",
              json_object_to_json_string(l));
    informer_until(inf, "watch", "1");

    sunk_t ch[16];
    int nch = 0;
    add_job(c, "job-1", "a");
    add_job(c, "other-1", "b"); /* not team a: the informer never hears of it */
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Running\"}' WHERE name = 'job-0'");
    for (int i = 0; i < 3; i++)
        sunk(p, &ch[nch++]);
    informer_until(inf, "change", "MODIFIED default/job-0");
    int first_watch = inf->watch;
    /* A new watch (the last one timed out), from where the last one ended: the next changes come in it. */
    snprintf(buf, sizeof buf, "%d", first_watch + 1);
    informer_until(inf, "watch", buf);
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Running\"}' WHERE name = 'job-1'");
    add_job(c, "job-2", "a");
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Running\"}' WHERE name = 'other-1'");
    /* One transaction, two changes at one resourceVersion. */
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Done\"}' WHERE name = 'job-0';"
               "DELETE FROM jobs WHERE name = 'job-1'");
    for (int i = 0; i < 5; i++)
        sunk(p, &ch[nch++]);
    json_object *final = informer_end(inf, 30000);

    /* Every change to a team-a job, in the sink's order, with its resourceVersion and phase. */
    const char *want[16];
    int nwant = 0;
    for (int i = 0; i < nch; i++)
        if (strcmp(ch[i].key, "default/other-1"))
            want[nwant++] = ch[i].s;
    int ngot = 0, later = 0;
    for (int i = 0, watch = 0; i < inf->n; i++) {
        if (it_json_get(inf->lines[i], "watch"))
            watch = atoi(it_json_str(inf->lines[i], "watch"));
        if (!informer_change(inf->lines[i], "watch", buf, sizeof buf))
            continue;
        cr_expect(ngot < nwant && !strcmp(buf, want[ngot]), "change %d: got %s, want %s", ngot, buf,
                  ngot < nwant ? want[ngot] : "nothing more");
        if (ngot >= 2)
            later += watch > first_watch; /* the changes made after the re-watch came in a later watch */
        ngot++;
    }
    cr_expect_eq(ngot, nwant, "%d changes seen, %d made", ngot, nwant);
    /* Each watch ended with a BOOKMARK, and the next one started from it. */
    for (int i = 1; i < inf->n; i++) {
        if (!it_json_get(inf->lines[i], "watch") || !strcmp(it_json_str(inf->lines[i], "watch"), "1"))
            continue;
        const char *prev = it_json_str(inf->lines[i - 1], "type");
        cr_expect(prev && !strcmp(prev, "BOOKMARK"), "watch %s: the one before ended with %s",
                  it_json_str(inf->lines[i], "watch"), json_object_to_json_string(inf->lines[i - 1]));
        cr_expect_str_eq(it_json_str(inf->lines[i], "resourceVersion"),
                         it_json_str(inf->lines[i - 1], "resourceVersion"), "watch %s",
                         it_json_str(inf->lines[i], "watch"));
    }
    cr_expect_eq(later, nwant - 2, "changes after the re-watch outside a later watch");
    cr_expect_str_eq(it_json_str(final, "relists"), "0", "listed again, with nothing expired");
    cr_expect_geq(atoi(it_json_str(final, "watches")), 3, "%s", json_object_to_json_string(final));
    expect_store_is_table(c, "labels->>'team' = 'a'", final, ch, nch);
    informer_free(inf);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(watch, the_example_informer_lists_again_after_410_gone, .timeout = 120) {
    char db[64];
    PGconn *c = jobs_db("winfgone", db, sizeof db);
    int port;
    const char *const extra[] = {"watch.history.events=3", NULL};
    it_proc_t *p = serve(db, extra, &port);
    sunk_t ch[16];
    int nch = 0;
    for (int i = 1; i <= 4; i++) {
        char name[16];
        snprintf(name, sizeof name, "job-%d", i);
        add_job(c, name, "a");
        sunk(p, &ch[nch++]);
    }
    /* A client resuming from a resourceVersion before the stream's start: 410 Gone, so it lists. One long watch
     * afterwards, so that what expires next expires while it is being served. */
    const char *const args[] = {"--resource-version", "1", "--timeout-seconds", "60", NULL};
    informer_t *inf = informer(port, args);
    json_object *l = informer_line(inf, EV_TIMEOUT);
    cr_assert(l, "examples/informer.py printed nothing");
    cr_expect_str_eq(it_json_str(l, "list") ? it_json_str(l, "list") : "(not a list)", "410 Gone",
                     "its first line: %s", json_object_to_json_string(l));
    cr_expect_str_eq(it_json_str(l, "items"), "4");
    informer_until(inf, "watch", NULL);
    /* One transaction of more changes than the history holds: the watcher falls behind it while it is served, an
     * ERROR event with a 410 Status ends the watch, and the informer lists again. */
    it_exec(c, "INSERT INTO jobs (name, spec, labels) SELECT 'bulk-' || g, '{}', '{\"team\":\"a\"}' "
               "FROM generate_series(1, 5) g");
    for (int i = 0; i < 5; i++)
        sunk(p, &ch[nch++]);
    l = informer_until(inf, "type", "ERROR");
    cr_expect_str_eq(it_json_str(l, "code"), "410");
    l = informer_until(inf, "list", NULL);
    cr_expect_str_eq(it_json_str(l, "list"), "ERROR event 410 Expired");
    cr_expect_str_eq(it_json_str(l, "items"), "9");
    informer_until(inf, "watch", NULL);
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Done\"}' WHERE name = 'job-1'");
    it_exec(c, "DELETE FROM jobs WHERE name = 'bulk-2'");
    for (int i = 0; i < 2; i++)
        sunk(p, &ch[nch++]);
    l = informer_until(inf, "change", "MODIFIED default/job-1");
    char buf[256];
    cr_expect_str_eq(informer_change(l, "watch", buf, sizeof buf), ch[nch - 2].s);
    l = informer_until(inf, "change", "DELETED default/bulk-2");
    cr_expect_str_eq(informer_change(l, "watch", buf, sizeof buf), ch[nch - 1].s);
    /* SIGTERM ends it as --max-seconds does: with the store. */
    cr_assert_eq(kill(it_proc_pid(inf->p), SIGTERM), 0);
    json_object *final = informer_end(inf, 10000);
    cr_expect_geq(atoi(it_json_str(final, "relists")), 2, "%s", json_object_to_json_string(final));
    expect_store_is_table(c, "true", final, ch, nch);
    informer_free(inf);
    it_crwatch_stop(p, 10000);
    PQfinish(c);
    it_db_drop(NULL, db);
}
