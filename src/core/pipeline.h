/*
 * pipeline.h — acknowledgement bookkeeping: the only code that decides the
 * confirmed position (docs/architecture.md, "The ack rule": Bottled Water's rule).
 *
 * Each source transaction gets a sequence number.  Sinks hold deliveries
 * against it and release them when acknowledged; the transaction is closed
 * with its end LSN at commit.  The confirmed LSN is the end LSN of the
 * longest prefix of closed transactions with nothing outstanding — never
 * more.  When nothing is in flight, it may follow the server's position so
 * idle slots do not pin WAL.
 *
 * Thread-safety: single-threaded; sinks with delivery threads report acks
 * on the main thread (librdkafka's poll, a handler's reply).
 */
#ifndef CRW_PIPELINE_H
#define CRW_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct crw_pipeline crw_pipeline_t;

/* start_lsn: what the slot has confirmed already. */
crw_pipeline_t *crw_pipeline_new(uint64_t start_lsn);
void crw_pipeline_destroy(crw_pipeline_t *p);

/* Opens a transaction; returns its sequence number. */
uint64_t crw_pipeline_begin(crw_pipeline_t *p);
/* n more deliveries of transaction seq are outstanding. */
void crw_pipeline_hold(crw_pipeline_t *p, uint64_t seq, uint32_t n);
/* n deliveries of transaction seq were acknowledged. */
void crw_pipeline_release(crw_pipeline_t *p, uint64_t seq, uint32_t n);
/* Transaction seq is complete: no more holds; confirming it confirms end_lsn. */
void crw_pipeline_commit(crw_pipeline_t *p, uint64_t seq, uint64_t end_lsn);
/* Drops an open transaction that will be delivered again (connection lost mid-transaction). */
void crw_pipeline_abandon(crw_pipeline_t *p, uint64_t seq);

/* The LSN that may be reported as flushed to PostgreSQL. */
uint64_t crw_pipeline_confirmed(const crw_pipeline_t *p);
/* Nothing open and nothing outstanding. */
bool crw_pipeline_idle(const crw_pipeline_t *p);
/* When idle, moves the confirmed LSN forward to lsn (a server keepalive position). */
void crw_pipeline_follow(crw_pipeline_t *p, uint64_t lsn);
/* Transactions open or awaiting acknowledgement. */
uint32_t crw_pipeline_in_flight(const crw_pipeline_t *p);
/* Deliveries held and not released yet (the crwatch_queue_events gauge). */
uint64_t crw_pipeline_outstanding(const crw_pipeline_t *p);
/* Transaction seq committed in the source at commit_time (PostgreSQL epoch us): when confirmed, the time
 * from that commit to the acknowledgement goes to crwatch_commit_to_ack_seconds (core/metrics.h). */
void crw_pipeline_stamp(crw_pipeline_t *p, uint64_t seq, int64_t commit_time);

#endif
