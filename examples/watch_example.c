/*
 * watch_example.c — a program embedding crwatch (include/crwatch/crwatch.h):
 * informer-style callbacks for added / modified / deleted resources.
 *
 *   crwatch-watch-example [-c FILE] [-X key=value ...] [-k KIND] [-n COUNT] [CONNINFO]
 *
 * Prints one tab-separated line per change on stdout:
 *   TYPE  KIND  KEY  ID  OBJECT-JSON  [OLD-OBJECT-JSON, for MODIFIED when known]
 * and stops after COUNT changes (-n), or on SIGINT / SIGTERM, confirming what
 * it printed.  -k registers the callbacks for one kind only (default: all).
 *
 * Built by CMake (build/crwatch-watch-example), linked against libcrwatch:
 *   cc -I include prog.c libcrwatch.a $(pkg-config --libs libpq json-c rdkafka) -lpthread -ldl -lm
 *
 * Callbacks run on crwatch's worker threads (`workers`, default 1), so the
 * shared counter is atomic and printing takes a lock.
 */
#include <crwatch/crwatch.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    crw_watch_t *w;
    pthread_mutex_t out;
    atomic_long seen;
    long stop_after; /* 0: never */
} app_t;

static crw_watch_t *signal_watch;

static void on_signal(int sig) {
    (void)sig;
    crw_watch_stop(signal_watch); /* async-signal-safe */
}

static int print_change(const crw_handler_event_t *ev, app_t *app, const char *extra) {
    pthread_mutex_lock(&app->out);
    printf("%s\t%s\t%s\t%s\t%s%s%s\n", ev->type, ev->kind, ev->key, ev->id, ev->object ? ev->object : "null",
           extra ? "\t" : "", extra ? extra : "");
    fflush(stdout);
    pthread_mutex_unlock(&app->out);
    long seen = atomic_fetch_add(&app->seen, 1) + 1;
    if (app->stop_after && seen == app->stop_after)
        crw_watch_stop(app->w); /* from a callback: run() returns once in-flight changes are done */
    return CRW_HANDLER_OK;
}

static int added(const crw_handler_event_t *ev, void *opaque, char *reason, size_t n) {
    (void)reason;
    (void)n;
    return print_change(ev, opaque, NULL);
}

static int modified(const crw_handler_event_t *ev, void *opaque, char *reason, size_t n) {
    (void)reason;
    (void)n;
    return print_change(ev, opaque, ev->old_object);
}

static int deleted(const crw_handler_event_t *ev, void *opaque, char *reason, size_t n) {
    (void)reason;
    (void)n;
    return print_change(ev, opaque, NULL);
}

static void usage(void) {
    fprintf(stderr, "usage: crwatch-watch-example [-c FILE] [-X key=value ...] [-k KIND] [-n COUNT] [CONNINFO]\n");
    exit(2);
}

int main(int argc, char **argv) {
    char err[1024];
    app_t app = {.stop_after = 0};
    pthread_mutex_init(&app.out, NULL);
    atomic_init(&app.seen, 0);
    const char *kind = NULL;
    crw_watch_t *w = crw_watch_new();
    app.w = w;
    int opt, rc = 0;
    while (rc == 0 && (opt = getopt(argc, argv, "c:X:k:n:")) != -1) {
        switch (opt) {
        case 'c': rc = crw_watch_load_file(w, optarg, err, sizeof err); break;
        case 'X': {
            char *eq = strchr(optarg, '=');
            if (!eq)
                usage();
            *eq = '\0';
            rc = crw_watch_set(w, optarg, eq + 1, err, sizeof err);
            break;
        }
        case 'k': kind = optarg; break;
        case 'n': app.stop_after = atol(optarg); break;
        default: usage();
        }
    }
    if (rc == 0 && optind < argc)
        rc = crw_watch_set(w, "conninfo", argv[optind], err, sizeof err);
    crw_watch_handlers_t h = {.on_added = added, .on_modified = modified, .on_deleted = deleted};
    if (rc == 0)
        rc = crw_watch_add_handlers(w, kind, &h, &app, err, sizeof err);
    if (rc == 0) {
        signal_watch = w;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        rc = crw_watch_run(w, err, sizeof err);
    }
    if (rc != 0)
        fprintf(stderr, "crwatch-watch-example: %s: %s\n", crw_watch_err_str(rc), err);
    else
        fprintf(stderr, "crwatch-watch-example: stopped after %ld changes\n", (long)atomic_load(&app.seen));
    crw_watch_destroy(w);
    pthread_mutex_destroy(&app.out);
    return crw_watch_exit_code(rc);
}
