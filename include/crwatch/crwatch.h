/*
 * crwatch/crwatch.h — embedding crwatch in a C program: watch PostgreSQL
 * resource tables and have your own functions called for every committed
 * change, informer-style (client-go's ResourceEventHandlerFuncs).
 *
 *     char err[512];
 *     crw_watch_t *w = crw_watch_new();
 *     crw_watch_set(w, "conninfo", "dbname=app", err, sizeof err);
 *     crw_watch_set(w, "tables", "public.video_jobs", err, sizeof err);
 *     crw_watch_handlers_t h = {.on_added = added, .on_modified = modified, .on_deleted = deleted};
 *     crw_watch_add_handlers(w, "video_jobs", &h, my_state, err, sizeof err);
 *     int rc = crw_watch_run(w, err, sizeof err);   // blocks until crw_watch_stop()
 *     crw_watch_destroy(w);
 *
 * Configuration is crwatch's own (`crwatch --help` lists every key;
 * docs/configuration.md and docs/handlers.md), set key by key or as
 * properties text, plus three keys only the embedding API has:
 *   conninfo   libpq conninfo or URI (as crwatch -d); default: PG* environment
 *   endpos     an LSN: return once every change up to it was handled and confirmed
 *   sink       as for crwatch, but by default empty: the callbacks are the only
 *              sink.  Set it (e.g. "stdout") to have those sinks as well.
 *
 * Delivery follows the local handler rules (docs/handlers.md): each
 * callback returns CRW_HANDLER_OK, CRW_HANDLER_RETRY (called again after an
 * exponential backoff; dead-lettered after retry.max retries) or
 * CRW_HANDLER_FAIL (dead-lettered at once).  A change is confirmed to
 * PostgreSQL only once the callbacks returned OK for it or it was written to
 * the dead-letter file, so after a crash or a stop it is delivered again:
 * callbacks must tolerate seeing an event twice (ev->id is stable).
 *
 * Threads:
 *   - crw_watch_new/set/load/add_handlers/run/destroy: the program's thread
 *     that owns the watch (one at a time); crw_watch_run blocks that thread.
 *   - callbacks run on crwatch's worker threads (`workers`, default 1): with
 *     workers > 1 different keys are handled in parallel, never two changes
 *     of one key at once, and one key's changes arrive in commit order.
 *   - crw_watch_stop: any thread, a callback, or a signal handler
 *     (async-signal-safe: it sets a flag).
 * Logging goes to stderr at log.level.
 */
#ifndef CRWATCH_CRWATCH_H
#define CRWATCH_CRWATCH_H

#include <stddef.h>

#include <crwatch/handler.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct crw_watch crw_watch_t;

/*
 * A callback: ev is valid during the call only (see crw_handler_event_t).
 * opaque is the pointer given to crw_watch_add_handlers.  Returns a
 * crw_handler_result_t; for RETRY and FAIL it may write a reason.
 */
typedef int (*crw_watch_cb_t)(const crw_handler_event_t *ev, void *opaque, char *reason, size_t reason_size);

/* Per-kind callbacks; any may be NULL (that type of change is then acknowledged unseen). */
typedef struct crw_watch_handlers {
    crw_watch_cb_t on_added;     /* ADDED (insert) and SYNC (backfill read) */
    crw_watch_cb_t on_modified;  /* MODIFIED: ev->object, and ev->old_object when known */
    crw_watch_cb_t on_deleted;   /* DELETED: ev->object is the deleted row as known (Debezium: ev->old_object) */
    crw_watch_cb_t on_truncated; /* TRUNCATED: the whole table was emptied (ev->key is "") */
} crw_watch_handlers_t;

/* Error codes (negative; 0 is success).  crw_watch_exit_code maps them to crwatch's exit codes. */
enum {
    CRW_WATCH_ERR_CONFIG = -1,   /* bad configuration: a key, a plugin, no handler (exit 2) */
    CRW_WATCH_ERR_PREREQ = -2,   /* a database prerequisite is missing (exit 3) */
    CRW_WATCH_ERR_CONN = -3,     /* connection failure */
    CRW_WATCH_ERR_IO = -5,       /* local I/O, e.g. the dead-letter file could not be written */
    CRW_WATCH_ERR_SINK = -6,     /* a sink failed */
    CRW_WATCH_ERR_SLOT_LOST = -8, /* the slot vanished while in use (exit 3) */
    CRW_WATCH_ERR_AUTH = -13      /* the server refused the login: password, role, database (exit 3) */
};

/* Creates a watch holding crwatch's defaults.  Never NULL (allocation failure aborts). */
crw_watch_t *crw_watch_new(void);

/* Destroys a watch that is not running.  NULL is a no-op. */
void crw_watch_destroy(crw_watch_t *w);

/*
 * Sets one configuration key (see above).
 * @returns 0, or CRW_WATCH_ERR_CONFIG with errstr naming the key.
 */
int crw_watch_set(crw_watch_t *w, const char *key, const char *value, char *errstr, size_t errstr_size);

/*
 * Sets every `key = value` line of properties text (`#` and `!` comments,
 * blank lines).  @returns 0, or CRW_WATCH_ERR_CONFIG with errstr naming the line.
 */
int crw_watch_load(crw_watch_t *w, const char *text, char *errstr, size_t errstr_size);

/* As crw_watch_load, for a properties file. */
int crw_watch_load_file(crw_watch_t *w, const char *path, char *errstr, size_t errstr_size);

/*
 * Registers callbacks for changes of one kind (kind NULL or "*": every
 * kind).  h is copied; opaque is passed to each call.  Several
 * registrations may match one change: they are called in registration
 * order, and the first that does not return OK decides for the change.
 * Only before crw_watch_run.  @returns 0 or CRW_WATCH_ERR_CONFIG.
 */
int crw_watch_add_handlers(crw_watch_t *w, const char *kind, const crw_watch_handlers_t *h, void *opaque,
                           char *errstr, size_t errstr_size);

/*
 * Checks the configuration, connects and delivers changes until
 * crw_watch_stop() (or endpos); then lets callbacks in progress finish (up
 * to 10 s), confirms what was handled and returns.  A lost connection is
 * retried with backoff inside.  A watch runs once.
 * @returns 0 when stopped, or a negative error code with errstr.
 */
int crw_watch_run(crw_watch_t *w, char *errstr, size_t errstr_size);

/* Asks a running (or about to run) watch to stop.  Any thread; async-signal-safe. */
void crw_watch_stop(crw_watch_t *w);

/* A short name for an error code. */
const char *crw_watch_err_str(int err);

/* crwatch's process exit code for an error code: 0, 1, 2 or 3. */
int crw_watch_exit_code(int err);

#ifdef __cplusplus
}
#endif

#endif
