/*
 * replication.h — the logical replication source: libpq in replication
 * mode, pgoutput, standby status updates (pg_recvlogical.c's loop).
 *
 * Two connections: a walsender (replication=database) carrying the stream,
 * and a plain SQL session for prerequisites, publication and catalog look-ups
 * (a walsender in COPY mode cannot answer queries).
 *
 * Messages reach the handler in commit order, whole transactions at a time:
 * protocol-2 streamed transactions are spooled and replayed at their Stream
 * Commit between a synthesized Begin and Commit, and vanish on abort.
 * Thread-safety: one thread.
 */
#ifndef CRW_REPLICATION_H
#define CRW_REPLICATION_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/conf.h"
#include "core/pipeline.h"
#include "decode/pgoutput.h"

typedef struct crw_repl crw_repl_t;

/* Returns 0, or a negative crw_err_t to stop the stream (CRW_ERR_STOPPED: stop cleanly). */
typedef int (*crw_repl_msg_fn)(void *opaque, const crw_pgo_msg_t *m);

/*
 * Creates a source for conf reading through conninfo (libpq conninfo or
 * URI; NULL or "" uses the PG* environment).  The pipeline supplies the
 * flush position reported to the server.  endpos 0: none.
 */
crw_repl_t *crw_repl_new(const crw_config_t *conf, const char *conninfo, crw_pipeline_t *p, uint64_t endpos,
                         crw_repl_msg_fn fn, void *opaque);
void crw_repl_destroy(crw_repl_t *r);

/*
 * Called once, on the first successful start, with the SQL session just
 * before streaming begins.  When crwatch created the slot, the session is
 * inside a REPEATABLE READ transaction on the slot's exported snapshot, so
 * what it reads is exactly the state the stream continues from; otherwise
 * it reads the current state.
 */
typedef int (*crw_repl_seed_fn)(void *opaque, PGconn *sql, bool in_slot_snapshot);
void crw_repl_set_seed(crw_repl_t *r, crw_repl_seed_fn fn, void *opaque);

/*
 * Connects both sessions, checks prerequisites, creates the publication and
 * slot when missing and allowed, and starts replication from the slot.
 * @returns 0; CRW_ERR_PREREQ or CRW_ERR_SLOT_LOST (exit 3); CRW_ERR_CONN or
 *          CRW_ERR_SLOT_BUSY (retry later); with errstr.
 */
int crw_repl_start(crw_repl_t *r, char *errstr, size_t errstr_size);

/*
 * Reads and dispatches what has arrived, waiting up to timeout_ms for more;
 * sends a status update when due or asked.  @returns 0, a negative crw_err_t
 * from the handler, or CRW_ERR_CONN when the connection dropped.
 */
int crw_repl_poll(crw_repl_t *r, int timeout_ms, char *errstr, size_t errstr_size);

/* Sends a standby status update now with the pipeline's confirmed LSN. */
int crw_repl_send_status(crw_repl_t *r, bool reply_requested);

/*
 * Ends the stream cleanly: a last status update, CopyDone, and waiting (at
 * most timeout_ms) until the server ends the stream, which proves it took
 * the flush position.  Closes both sessions.
 */
int crw_repl_finish(crw_repl_t *r, int timeout_ms);

/* Sends a status update if one is due (for sinks blocked by backpressure). */
void crw_repl_keepalive(crw_repl_t *r);

/* True once every change up to endpos was received (the handler saw them all). */
bool crw_repl_at_endpos(const crw_repl_t *r);

/* A Begin was dispatched without its Commit. */
bool crw_repl_in_txn(const crw_repl_t *r);

/* Hands nothing on after the next Commit (crw_repl_at_endpos turns true then). */
void crw_repl_stop_after_commit(crw_repl_t *r);

/* Closes both sessions and drops spooled transactions (the server resends them). */
void crw_repl_close(crw_repl_t *r);

/* The SQL session (for catalog look-ups by the mapper); NULL when closed. */
PGconn *crw_repl_sql(crw_repl_t *r);

/* The database name IDENTIFY_SYSTEM reported. */
const char *crw_repl_dbname(const crw_repl_t *r);

/*
 * `crwatch check`: connects, checks every prerequisite without changing
 * anything, and writes one line per item to out ("ok", "warn", "FAIL").
 * @returns 0, or the code of the first failure (CRW_ERR_PREREQ: exit 3).
 */
int crw_repl_check(crw_repl_t *r, FILE *out, char *errstr, size_t errstr_size);

/* `crwatch slot status|create|drop`: one JSON line to out. */
int crw_repl_slot(crw_repl_t *r, const char *verb, FILE *out, char *errstr, size_t errstr_size);

#endif
