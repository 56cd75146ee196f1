/*
 * slotguard.h — slot safety for the logical source (docs/operations.md,
 * "Slot safety"), on the source's SQL session beside the walsender:
 *
 *   the mark      what this crwatch last confirmed (system identifier,
 *                 timeline, position), kept in crwatch.offsets under
 *                 "logical:<slot.name>", always at or ahead of the flush
 *                 position the server was told; at start a slot that is
 *                 gone, invalidated, or starts past the mark is a gap, never
 *                 streamed over (CRW_ERR_SLOT_LOST, exit 3)
 *   heartbeat     a transactional pg_logical_emit_message through the slot
 *                 after heartbeat.interval.ms without a transaction; it must
 *                 come back within heartbeat.timeout.ms unless the server
 *                 still answers, else the stream is stalled (rebuilt)
 *   slot status   retained WAL and wal_status every status.interval.ms
 *                 (metrics; a warning above slot.max.retained.bytes and at
 *                 unreserved; lost is CRW_ERR_SLOT_LOST)
 *
 * Its queries run on the session holding the slot's advisory lock (s->ops,
 * crw_session_lock_slot), one at a time, asynchronously: tick() collects the
 * one in flight and starts the next due, so the stream never waits on them
 * and a lost lock session is noticed within status.interval.ms.
 * Single-threaded (the driver's).
 */
#ifndef CRW_SLOTGUARD_H
#define CRW_SLOTGUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/conf.h"
#include "source/session.h"

#define CRW_HEARTBEAT_PREFIX "crwatch.heartbeat"

typedef struct crw_guard {
    const crw_config_t *conf;
    bool store;              /* crwatch.offsets keeps the mark */
    bool store_checked;      /* looked for it (once per process) */
    bool had_mark;           /* crw_guard_start found one, and the slot is at or before it (saved) */
    bool check_only;         /* crwatch check: crw_guard_start compares, and writes nothing */
    bool flush_moved;        /* a store completed: the flush position may be sent (the source clears it) */
    uint64_t saved;          /* the mark stored */
    uint64_t saving;         /* being stored by the query in flight */
    int pending;             /* the query in flight (0: none) */
    uint64_t hb_seq;         /* heartbeats written */
    uint64_t hb_waiting;     /* the heartbeat awaited back (0: none) */
    int64_t hb_sent_us, ask_us, last_frame_us, last_activity_us, last_status_us, last_mark_us; /* monotonic */
    int64_t timeout_us;      /* the liveness bound: doubles after a stall, until a heartbeat comes back */
    int64_t hb_paused_until_us; /* a heartbeat failed: the next one waits until then */
    bool over_limit, unreserved; /* warned (once per crossing) */
} crw_guard_t;

void crw_guard_init(crw_guard_t *g, const crw_config_t *conf);

/*
 * At start (and for crwatch check), once the slot was looked up (start: its confirmed position;
 * missing: it does not exist): finds the mark and compares it with the slot
 * and the server (s->sysid, s->timeline).  @returns 0, CRW_ERR_SLOT_LOST
 * with errstr naming the slot, the gap and the fix, or an error.
 */
int crw_guard_start(crw_guard_t *g, crw_session_t *s, uint64_t start, bool missing, char *errstr, size_t errstr_size);

/* The flush position that may be reported to the server: confirmed, held back to the mark stored. */
uint64_t crw_guard_flush(const crw_guard_t *g, uint64_t confirmed);

/*
 * Each time round: collects the query in flight, starts the next one due.
 * @returns 0, CRW_ERR_CONN (the lock session went), CRW_ERR_SLOT_LOST
 * (wal_status lost), with errstr.
 */
int crw_guard_tick(crw_guard_t *g, crw_session_t *s, uint64_t confirmed, char *errstr, size_t errstr_size);

/* Stores confirmed now, waiting (the final flush).  @returns 0 or an error (logged). */
int crw_guard_save(crw_guard_t *g, crw_session_t *s, uint64_t confirmed);

/* A frame came from the server. */
void crw_guard_frame(crw_guard_t *g);
/* A transaction came through the stream. */
void crw_guard_activity(crw_guard_t *g);

/* A "crwatch.heartbeat" message: true when it is this stream's awaited one; commit_time: its transaction's. */
bool crw_guard_heartbeat_back(crw_guard_t *g, const char *content, size_t len, int64_t commit_time);

/*
 * The server sent nothing while the driver waited: *ask_reply is set when a
 * status update asking for a reply should go out.  @returns 0, or
 * CRW_ERR_CONN with errstr when the stream is stalled.
 */
int crw_guard_silence(crw_guard_t *g, bool *ask_reply, char *errstr, size_t errstr_size);

/* Drops the query in flight (the connections closed). */
void crw_guard_reset(crw_guard_t *g);

/* Stores position as the mark at once (slot.lost=resync accepted the slot as it is).  @returns 0 or an error. */
int crw_guard_accept(crw_session_t *s, uint64_t position, char *errstr, size_t errstr_size);

/* Forgets the mark (the slot was dropped on purpose: the next start is a first start).  @returns true when one went. */
bool crw_guard_forget(crw_session_t *s);

#endif
