/*
 * sinks.h — the configured sinks as one: the registry of sink kinds
 * (`sink = stdout,kafka,...`) and the fan-out a driver talks to.  A change
 * is acknowledged when every sink acknowledged it (sink.h's contract, per
 * sink).  Thread-safety: the driver's thread.
 */
#ifndef CRW_SINKS_H
#define CRW_SINKS_H

#include <stddef.h>
#include <stdint.h>

#include "sink/sink.h"

typedef struct crw_sinks {
    crw_sink_t **v;
    int n, cap;
} crw_sinks_t;

/* Checks that every name in conf->sinks is a sink of this build: 0, or CRW_ERR_CONFIG naming the others. */
int crw_sinks_check(const crw_config_t *conf, char *errstr, size_t errstr_size);

/*
 * Opens the sinks env->conf->sinks names, in that order, each once (none: an embedding
 * adds its own with crw_sinks_add).  @returns 0 or a negative crw_err_t with
 * errstr; on failure the sinks opened so far stay in ss for crw_sinks_close.
 */
int crw_sinks_open(crw_sinks_t *ss, const crw_sink_env_t *env, char *errstr, size_t errstr_size);
/* Adds s (owned from here on) after the configured sinks. */
void crw_sinks_add(crw_sinks_t *ss, crw_sink_t *s);

int crw_sinks_emit(crw_sinks_t *ss, const crw_event_t *ev);
int crw_sinks_commit(crw_sinks_t *ss, uint64_t txn);
int crw_sinks_poll(crw_sinks_t *ss, int timeout_ms);
int crw_sinks_drain(crw_sinks_t *ss, int timeout_ms);
/* The highest resume position any sink reports (0 when none does). */
int crw_sinks_resume_position(crw_sinks_t *ss, uint64_t *position);
/* Destroys every sink; ss may be opened again. */
void crw_sinks_close(crw_sinks_t *ss);

#endif
