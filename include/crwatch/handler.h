/*
 * crwatch/handler.h — the handler plugin ABI (sink=plugin), and the event
 * every in-process handler receives (plugins and crwatch.h callbacks).
 *
 * A plugin is a shared object that exports one data symbol, `crw_handler`
 * (CRW_HANDLER_SYMBOL), a crw_handler_t whose first member is the ABI
 * version the plugin was compiled against:
 *
 *     #include <crwatch/handler.h>
 *     static int my_event(void *state, const crw_handler_event_t *ev, char *reason, size_t reason_size) {...}
 *     CRW_HANDLER_EXPORT const crw_handler_t crw_handler = {
 *         .abi_version = CRW_HANDLER_ABI_VERSION, .name = "mine", .on_event = my_event};
 *
 * crwatch loads it with dlopen(plugin.path, RTLD_NOW | RTLD_LOCAL) before
 * it connects to PostgreSQL, reads abi_version first and refuses any other
 * version than its own (exit 2, nothing touched): rebuild the plugin
 * against the new header.  The plugin needs nothing from crwatch at link
 * time (no libcrwatch): everything it gets comes through these structs.
 *
 * Versioning: CRW_HANDLER_ABI_VERSION is bumped whenever the layout or the
 * meaning of crw_handler_t, crw_handler_init_t or crw_handler_event_t
 * changes.  abi_version stays the first member of crw_handler_t forever.
 *
 * Threads: init() and fini() run on crwatch's main thread, once each.
 * on_event() runs on crwatch's handler worker threads: with workers = N it
 * may be called from N threads at the same time, for different keys (never
 * two events of one key at once: they come one after the other, in commit
 * order).  ev->worker (0..N-1) names the calling thread, so per-worker state
 * needs no lock.  on_event() should return in bounded time: at shutdown
 * crwatch waits for calls in progress.
 */
#ifndef CRWATCH_HANDLER_H
#define CRWATCH_HANDLER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CRW_HANDLER_ABI_VERSION 1u
#define CRW_HANDLER_SYMBOL "crw_handler"

#if defined(__GNUC__)
#define CRW_HANDLER_EXPORT __attribute__((visibility("default")))
#else
#define CRW_HANDLER_EXPORT
#endif

/* What a handler answers for one event. */
typedef enum crw_handler_result {
    CRW_HANDLER_OK = 0,    /* done: crwatch may acknowledge the change */
    CRW_HANDLER_RETRY = 1, /* transient failure: call again after a backoff (retry.*) */
    CRW_HANDLER_FAIL = 2,  /* permanent failure: dead-letter the event with the reason, do not retry */
} crw_handler_result_t;

/*
 * One change event.  Every pointer is borrowed for the duration of the call
 * only; every string is NUL-terminated, and its length (without the NUL) is
 * given too.
 */
typedef struct crw_handler_event {
    const char *type;       /* "ADDED", "MODIFIED", "DELETED", "TRUNCATED" or "SYNC" */
    const char *kind;       /* the resource kind */
    const char *key;        /* the resource key ("" for TRUNCATED) */
    size_t key_len;
    const char *event;      /* the whole event JSON, exactly as sink=stdout prints it (no newline) */
    size_t event_len;
    const char *object;     /* data.object (Debezium: after); NULL when the event has none */
    size_t object_len;
    const char *old_object; /* data.oldObject (Debezium: before); NULL when unknown */
    size_t old_object_len;
    const char *id;         /* the event id: commit LSN / ordinal ("0/1A2B3C4/3"), stable across redelivery */
    uint64_t commit_lsn;    /* the source transaction's commit LSN (source=poll: the WAL position the poll read at) */
    uint32_t ordinal;       /* position of the change in its transaction (1-based) */
    uint32_t attempt;       /* 1 on the first delivery, 2 on the first retry, ... */
    int worker;             /* the calling worker thread, 0..workers-1 */
} crw_handler_event_t;

/* Given to init(). */
typedef struct crw_handler_init {
    const char *config; /* the plugin.config value, verbatim ("" when unset) */
    int workers;        /* on_event() may run on this many threads at once */
} crw_handler_init_t;

typedef struct crw_handler {
    /* CRW_HANDLER_ABI_VERSION as the plugin saw it.  Always the first member. */
    uint32_t abi_version;
    /* For log lines and dead-letter reasons. */
    const char *name;
    /*
     * Called once before any event, on the main thread; may be NULL.
     * Stores the plugin's state in *state (handed to on_event and fini).
     * @returns 0, or non-zero with a message in errstr: crwatch then exits 2
     *          (a configuration error) without connecting.
     */
    int (*init)(const crw_handler_init_t *init, void **state, char *errstr, size_t errstr_size);
    /*
     * Handles one event; returns a crw_handler_result_t.  For RETRY and
     * FAIL, may write a reason (NUL-terminated, at most reason_size bytes)
     * that goes to the log and the dead-letter record.
     */
    int (*on_event)(void *state, const crw_handler_event_t *ev, char *reason, size_t reason_size);
    /* Called once after the last on_event() returned, on the main thread; may be NULL. */
    void (*fini)(void *state);
} crw_handler_t;

#ifdef __cplusplus
}
#endif

#endif
