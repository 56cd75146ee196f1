/*
 * stream.h — the `crwatch stream` service: a source (source/source.h)
 * through the mapper (map/mapper.h) to the sinks (sink/sinks.h), with the
 * pipeline (core/pipeline.h) deciding what is confirmed.  See
 * docs/architecture.md.
 */
#ifndef CRW_STREAM_H
#define CRW_STREAM_H

#include <signal.h>
#include <stdint.h>

#include "core/conf.h"
#include "core/event.h"
#include "sink/sink.h"
#include "source/source.h"

/* What reaches the sinks of one event (crw_stream_opts_t.verdict). */
typedef enum {
    CRW_VERDICT_EMIT,     /* as mapped */
    CRW_VERDICT_SKIP,     /* nothing */
    CRW_VERDICT_ADDED,    /* the change mapped again as an insert */
    CRW_VERDICT_MODIFIED, /* the change mapped again as an update (no old row) */
} crw_stream_verdict_t;

typedef struct crw_stream_opts {
    const char *conninfo;        /* NULL: PG* environment */
    uint64_t endpos;             /* 0: run until stopped */
    volatile sig_atomic_t *stop; /* set by a signal handler: drain, confirm, return */
    /* An extra sink beside the configured ones (the embedding API's callbacks); may be NULL. */
    crw_sink_t *(*extra_sink_new)(const crw_sink_env_t *env, void *arg, char *errstr, size_t errstr_size);
    void *extra_sink_arg;
    /* Another source than conf's (a backfill's snapshot); NULL: crw_source_open. */
    crw_source_t *(*source_new)(void *arg, const crw_config_t *conf, const crw_source_opts_t *opts,
                                const crw_source_events_t *ev, int *err, char *errstr, size_t errstr_size);
    /* Called after each round of the loop (a backfill's progress line); may be NULL. */
    void (*progress)(void *arg, crw_source_t *src);
    /* Called once at the end, before the source is destroyed; may be NULL. */
    void (*finished)(void *arg, crw_source_t *src);
    /*
     * Decides, for each event mapped from the source, what reaches the sinks
     * (crwatch resync: only corrections); NULL: every event as it is.
     */
    crw_stream_verdict_t (*verdict)(void *arg, const crw_event_t *ev);
    /*
     * Called once when the source is at its end, before the final drain:
     * emit(emit_ctx, ev) hands more events to the sinks in one last
     * transaction (resync's DELETED).  May be NULL.
     */
    int (*at_end)(void *arg, int (*emit)(void *emit_ctx, crw_event_t *ev), void *emit_ctx);
    void *arg;                   /* of source_new, progress, finished, verdict and at_end */
    const char *checkpoint_id;   /* the sinks' checkpoint name (crw_sink_env_t); NULL: slot.name */
    /* slot.lost=resync: corrects the sinks against the tables (crwatch resync, app/resync.h); NULL: not here. */
    int (*resync)(const crw_config_t *conf, const char *conninfo, volatile sig_atomic_t *stop, char *errstr,
                  size_t errstr_size);
} crw_stream_opts_t;

/*
 * Runs the change stream until *stop, endpos, or a fatal error.
 * Connection losses are retried with capped exponential backoff and jitter.
 * @returns 0 (stopped cleanly) or a negative crw_err_t (crw_err_exit_code
 *          maps it to the process exit code); errstr says why.
 */
int crw_stream_run(const crw_config_t *conf, const crw_stream_opts_t *opts, char *errstr, size_t errstr_size);

#endif
