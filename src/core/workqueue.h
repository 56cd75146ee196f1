/*
 * workqueue.h — a keyed work queue with worker threads, the delivery engine
 * of every local handler (exec, plugin, embedded callbacks; docs/handlers.md).
 *
 * Semantics follow client-go's workqueue + rate limiter:
 *   - items are queued per key; at most one item of a key is in flight, and
 *     a key's items are handed out in the order they were added, while
 *     different keys proceed in parallel on `workers` threads;
 *   - a handler answers OK, RETRY or FAIL.  RETRY puts the item back at the
 *     head of its key after an exponential backoff with jitter (the key is
 *     blocked meanwhile, so order still holds); after retry_max retries the
 *     item is finished as DEAD with the reason.  FAIL finishes it as DEAD
 *     at once (the handler says it can never succeed);
 *   - an optional token bucket limits handler calls (attempts, retries
 *     included) to rate_limit per second across every worker;
 *   - with coalesce, an item added behind another not yet attempted item of
 *     the same key replaces it (a level-triggered handler only needs the
 *     latest state): the caller's merge() moves the replaced item's
 *     acknowledgements onto the survivor and frees it.
 *
 * The queue knows nothing about events or the pipeline: items are the
 * caller's structs embedding a crw_wq_node_t, and finished items go back to
 * the caller through done().
 *
 * Threads: crw_wq_new, crw_wq_add, crw_wq_len and crw_wq_destroy are called
 * from one owner thread.  handle() and done() run on worker threads, never
 * under the queue's lock, so they may block (done() must not call back into
 * the queue).  merge() runs on the owner thread inside crw_wq_add, under
 * the lock: it must be quick and must not call back into the queue.
 */
#ifndef CRW_WORKQUEUE_H
#define CRW_WORKQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct crw_wq crw_wq_t;

/* Embedded in every queued item; the queue owns it while the item is queued. */
typedef struct crw_wq_node {
    struct crw_wq_node *next; /* queue-private */
    const char *key;          /* set by the caller; must live as long as the item */
    size_t keylen;
    uint32_t attempts;        /* handler calls made so far (queue-maintained) */
} crw_wq_node_t;

typedef enum {
    CRW_WQ_OK = 0,    /* handled: finish the item */
    CRW_WQ_RETRY = 1, /* transient failure: back off and call again */
    CRW_WQ_FAIL = 2,  /* permanent failure: finish as DEAD at once */
} crw_wq_result_t;

typedef enum {
    CRW_WQ_DONE = 0, /* the handler succeeded */
    CRW_WQ_DEAD = 1, /* FAIL, or RETRY after retry_max retries: reason says which */
} crw_wq_outcome_t;

typedef struct crw_wq_opts {
    int workers;            /* >= 1 */
    int retry_max;          /* retries after the first attempt; -1: retry forever */
    int backoff_initial_ms; /* first retry delay (before jitter) */
    int backoff_max_ms;     /* cap of the doubling delay */
    int rate_limit;         /* handler calls per second over all workers; 0: unlimited */
    int rate_burst;         /* calls allowed back to back (>= 1) */
    bool coalesce;

    /* Called on worker `worker` (0..workers-1) for each attempt; node->attempts
     * already counts this one.  Writes a reason (NUL-terminated) for RETRY/FAIL. */
    crw_wq_result_t (*handle)(void *opaque, int worker, crw_wq_node_t *node, char *reason, size_t reason_size);
    /* The item is finished and no longer the queue's (worker thread). */
    void (*done)(void *opaque, crw_wq_node_t *node, crw_wq_outcome_t outcome, const char *reason);
    /* Coalescing: newer replaces older (owner thread, under the lock); may be NULL without coalesce. */
    void (*merge)(void *opaque, crw_wq_node_t *newer, crw_wq_node_t *older);
    /* Shutdown: wake handlers blocked in handle() (any thread); may be NULL. */
    void (*interrupt)(void *opaque);
    /* Shutdown: an unfinished item the queue gives back (owner thread); may be NULL. */
    void (*drop)(void *opaque, crw_wq_node_t *node);
    void *opaque;
} crw_wq_opts_t;

/*
 * Starts opts->workers threads.  The threads block SIGPIPE so that a write
 * to a dead child fails with EPIPE instead of killing the process.
 * @returns the queue, or NULL with errstr (bad options, thread creation failed).
 */
crw_wq_t *crw_wq_new(const crw_wq_opts_t *opts, char *errstr, size_t errstr_size);

/*
 * Queues node under its key (node->key/keylen set by the caller); the queue
 * owns it until done() or drop().  With coalesce, may call merge() first.
 * Never blocks: bounding the queue is the caller's business (crw_wq_len).
 */
void crw_wq_add(crw_wq_t *wq, crw_wq_node_t *node);

/* Items queued, waiting for a retry, or in flight. */
size_t crw_wq_len(crw_wq_t *wq);

/* True once shutdown began (handlers use it to give up blocking waits). */
bool crw_wq_stopping(crw_wq_t *wq);

/*
 * Stops the workers: sets the stopping flag, calls interrupt(), joins the
 * threads (waiting for handle() calls in progress to return), then gives
 * every unfinished item to drop().  An item whose handle() returned while
 * stopping is neither done nor retried: it is dropped.  NULL is a no-op.
 */
void crw_wq_destroy(crw_wq_t *wq);

/*
 * The delay before retry number `retry` (1-based): b = min(initial * 2^(retry-1), max),
 * jittered uniformly into [b/2, b] with r (a uniform random 32-bit value).
 */
int crw_wq_backoff_ms(int initial_ms, int max_ms, uint32_t retry, uint32_t r);

#endif
