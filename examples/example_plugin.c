/*
 * example_plugin.c — a handler plugin for `crwatch stream -X sink=plugin`.
 *
 * Build (CMake does it: build/example_plugin.so):
 *   cc -shared -fPIC -I include -o example_plugin.so examples/example_plugin.c
 * Use:
 *   crwatch stream -X sink=plugin -X plugin.path=./example_plugin.so \
 *                  -X plugin.config=file=/tmp/events.tsv -X tables=public.jobs
 *
 * plugin.config is a comma list of options:
 *   file=PATH       append one line per call: attempt, type, kind, key, id, object (tab-separated)
 *   retry_first=N   answer RETRY to the first N attempts of every event (shows retries and backoff)
 *   fail_key=KEY    answer FAIL (dead-letter at once) for events of this resource key
 * With no option it only counts events (printed to stderr at exit).
 *
 * It shows what a plugin must do: export `crw_handler` with the ABI version
 * first, refuse a bad config in init(), be thread-safe in on_event() (with
 * workers > 1 it runs on several threads: here one write(2) per line to an
 * O_APPEND file and an atomic counter need no lock), clean up in fini().
 */
#include <crwatch/handler.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The tests build this file a second time with another version, to see it refused. */
#ifndef EXAMPLE_PLUGIN_ABI_VERSION
#define EXAMPLE_PLUGIN_ABI_VERSION CRW_HANDLER_ABI_VERSION
#endif

typedef struct {
    int fd;               /* -1: no file */
    unsigned retry_first;
    char *fail_key;
    atomic_ulong events;
} state_t;

static void state_free(state_t *st) {
    if (!st)
        return;
    if (st->fd >= 0)
        close(st->fd);
    free(st->fail_key);
    free(st);
}

static int example_init(const crw_handler_init_t *init, void **state, char *errstr, size_t errstr_size) {
    state_t *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    st->fd = -1;
    atomic_init(&st->events, 0);
    char *cfg = strdup(init->config), *save = NULL;
    int rc = 0;
    for (char *opt = strtok_r(cfg, ",", &save); opt; opt = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(opt, '=');
        if (!eq) {
            snprintf(errstr, errstr_size, "option '%s' is not name=value", opt);
            rc = -1;
            break;
        }
        *eq = '\0';
        const char *val = eq + 1;
        if (!strcmp(opt, "file")) {
            if (st->fd >= 0)
                close(st->fd);
            st->fd = open(val, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (st->fd < 0) {
                snprintf(errstr, errstr_size, "file=%s: %s", val, strerror(errno));
                rc = -1;
                break;
            }
        } else if (!strcmp(opt, "retry_first"))
            st->retry_first = (unsigned)strtoul(val, NULL, 10);
        else if (!strcmp(opt, "fail_key")) {
            free(st->fail_key);
            st->fail_key = strdup(val);
        } else {
            snprintf(errstr, errstr_size, "unknown option '%s' (file, retry_first, fail_key)", opt);
            rc = -1;
            break;
        }
    }
    free(cfg);
    if (rc != 0) {
        state_free(st);
        return rc;
    }
    *state = st;
    return 0;
}

static int example_on_event(void *state, const crw_handler_event_t *ev, char *reason, size_t reason_size) {
    state_t *st = state;
    if (st->fd >= 0) {
        size_t cap = ev->key_len + ev->object_len + strlen(ev->kind) + 128;
        char *line = malloc(cap);
        if (!line) {
            snprintf(reason, reason_size, "out of memory");
            return CRW_HANDLER_RETRY;
        }
        int len = snprintf(line, cap, "%u\t%s\t%s\t%s\t%s\t%s\n", ev->attempt, ev->type, ev->kind, ev->key, ev->id,
                           ev->object ? ev->object : "null");
        ssize_t w = write(st->fd, line, (size_t)len); /* one write: lines never interleave */
        free(line);
        if (w != len) {
            snprintf(reason, reason_size, "write: %s", w < 0 ? strerror(errno) : "short write");
            return CRW_HANDLER_RETRY;
        }
    }
    if (st->fail_key && !strcmp(st->fail_key, ev->key)) {
        snprintf(reason, reason_size, "example_plugin: key %s is configured to fail", ev->key);
        return CRW_HANDLER_FAIL;
    }
    if (ev->attempt <= st->retry_first) {
        snprintf(reason, reason_size, "example_plugin: attempt %u of %u that are told to retry", ev->attempt,
                 st->retry_first);
        return CRW_HANDLER_RETRY;
    }
    atomic_fetch_add(&st->events, 1);
    return CRW_HANDLER_OK;
}

static void example_fini(void *state) {
    state_t *st = state;
    fprintf(stderr, "example_plugin: %lu events handled\n", (unsigned long)atomic_load(&st->events));
    state_free(st);
}

CRW_HANDLER_EXPORT const crw_handler_t crw_handler = {
    .abi_version = EXAMPLE_PLUGIN_ABI_VERSION,
    .name = "example_plugin",
    .init = example_init,
    .on_event = example_on_event,
    .fini = example_fini,
};
