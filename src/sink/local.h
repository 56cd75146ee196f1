/*
 * local.h — the local handler sinks (docs/handlers.md): exec, plugin
 * and the embedding API's callbacks share one sink body built on the
 * workqueue (core/workqueue.h).
 *
 * The body does what sink.h asks of an asynchronous sink:
 *   - emit() copies the event, holds 1 delivery of ev->txn in the
 *     pipeline and queues the copy under its key (the table's source and
 *     the resource key), so one resource's changes reach the handler one at
 *     a time, in commit order;
 *   - worker threads call the handler and push finished events to a
 *     mutex-protected completion list; they never touch the pipeline or the
 *     dead-letter file;
 *   - poll() and drain(), on the main thread, write a dead-letter record for
 *     each event the handler failed (FAIL, or retry.max exhausted) and then
 *     release every finished event's hold — so the confirmed LSN passes a
 *     change only once the handler took it or it is durably dead-lettered;
 *   - backpressure: while queue.max.events events (or queue.max.bytes bytes)
 *     are unfinished, emit() waits, applying completions and calling
 *     env->keepalive at least every 100 ms.  Nothing is ever dropped.
 *   - coalesce: a change replacing a queued one of the same key takes over
 *     its hold, so both are acknowledged when the survivor is.
 *
 * Threads: the sink ops run on the main thread (sink.h).  A handler's
 * deliver() runs on the worker threads (up to `workers` at once, never two
 * of one key at once); interrupt() may run on any thread.
 */
#ifndef CRW_SINK_LOCAL_H
#define CRW_SINK_LOCAL_H

#include <signal.h>
#include <stdbool.h>

#include <crwatch/handler.h>

#include "sink/sink.h"

/* One handler implementation plugged into the shared body. */
typedef struct crw_local_impl {
    const char *name; /* "exec", "plugin", "callbacks": logs and dead-letter reasons */
    /* Fill ev->object and ev->old_object (copies of the event's spans) before deliver(). */
    bool wants_objects;
    /* Delivers one event on worker thread ev->worker; returns a crw_handler_result_t
     * and, for RETRY/FAIL, a reason. */
    int (*deliver)(void *impl, const crw_handler_event_t *ev, char *reason, size_t reason_size);
    /* Shutdown began: make blocked deliver() calls return soon (any thread); may be NULL. */
    void (*interrupt)(void *impl);
    /* Frees impl, after every worker stopped (main thread); may be NULL. */
    void (*destroy)(void *impl);
    void *impl;
} crw_local_impl_t;

/*
 * Creates a handler sink over impl (copied; impl->impl is owned by the sink
 * from here on, even on failure, when impl->destroy is set).  Reads workers,
 * retry.*, rate.*, coalesce and queue.* from env->conf.  stop (may be NULL):
 * when set, a emit() waiting for room gives up with CRW_ERR_STOPPED.
 * @returns the sink, or NULL with errstr and *err (CRW_ERR_CONFIG for a bad
 *          setting, CRW_ERR_SINK otherwise).
 */
crw_sink_t *crw_local_sink_new(const crw_sink_env_t *env, const crw_local_impl_t *impl, volatile sig_atomic_t *stop,
                               int *err, char *errstr, size_t errstr_size);

#endif
