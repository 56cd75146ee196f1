/*
 * event.h — turns decoded row changes into typed change events
 * (design.md §4): CloudEvents 1.0 structured JSON, one object per change.
 *
 * Row shape: the object is the typed row, keyed by column name.  The event
 * names fields it could not fill (an unchanged TOAST value with no old row,
 * the non-key columns of a key-only old tuple) in data.unknown as JSON
 * pointers; a placeholder never appears inside an object.
 *
 * Hot path: encoding appends into caller-owned buffers that are reset, not
 * freed, between rows.  No allocation per row in steady state.
 */
#ifndef CRW_EVENT_H
#define CRW_EVENT_H

#include <stdint.h>

#include "core/buf.h"
#include "decode/pgoutput.h"
#include "decode/relcache.h"

/* What every event of one source transaction shares. */
typedef struct crw_txn_ctx {
    uint64_t commit_lsn;
    uint32_t xid;
    int64_t commit_time;  /* PostgreSQL epoch microseconds */
    uint32_t ordinal;     /* changes seen so far in this transaction */
    char time_str[40];    /* commit time, ISO-8601 UTC */
    char lsn_str[24];     /* commit LSN, %X/%X */
} crw_txn_ctx_t;

/* Starts a transaction context (ordinal 0). */
void crw_event_txn_init(crw_txn_ctx_t *tx, uint64_t commit_lsn, uint32_t xid, int64_t commit_time);

/* Formats PostgreSQL-epoch microseconds as YYYY-MM-DDTHH:MM:SS.ffffffZ into buf (>= 32 bytes). */
void crw_event_format_time(char *buf, size_t n, int64_t pg_us);

/* Frees the calling thread's encoding scratch buffers (call before the thread exits). */
void crw_event_thread_cleanup(void);

/* Fills rel's pre-escaped strings from rel->kind and rel->source (after they are set). */
void crw_event_prepare_relation(crw_relation_t *rel);

/*
 * Encodes an Insert, Update or Delete of rel as one CloudEvents JSON object
 * (no trailing newline) into out, and the resource key into key.
 * tx->ordinal must already count this change.
 * @returns 0, or -1 with errstr when the change cannot be mapped (the
 *          caller dead-letters it).
 */
int crw_event_encode_change(crw_buf_t *out, crw_buf_t *key, const crw_relation_t *rel, const crw_pgo_msg_t *m,
                            const crw_txn_ctx_t *tx, char *errstr, size_t errstr_size);

/*
 * Encodes the raw change for the dead-letter record: {"schema","table","op",
 * "new":{col:text|null},"old":{...}} with every value as its text form, so
 * nothing a mapping rule could misread is lost.
 */
void crw_event_encode_raw(crw_buf_t *out, const crw_relation_t *rel, const crw_pgo_msg_t *m);

/* Encodes a TRUNCATED event for rel (no key, no object). */
void crw_event_encode_truncate(crw_buf_t *out, const crw_relation_t *rel, const crw_txn_ctx_t *tx);

#endif
