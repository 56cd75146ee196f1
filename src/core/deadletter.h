/*
 * deadletter.h — where a change goes when it cannot be mapped or delivered
 * (docs/events.md, "Dead letters"): the stream continues and confirms past it, so the record
 * is made durable (fsync) before the call returns.
 *
 * A record is one JSON line:
 *   {"time":"...","reason":"...","source":"/crwatch/db/schema/table","pglsn":"0/..","pgxid":N,
 *    "ordinal":N,"payload":<the event, or the raw row when no event could be made>}
 * The file is opened on first use, so a run with nothing to dead-letter
 * creates nothing.  Thread-safety: one thread at a time (callers serialise).
 */
#ifndef CRW_DEADLETTER_H
#define CRW_DEADLETTER_H

#include <stddef.h>
#include <stdint.h>

typedef struct crw_deadletter crw_deadletter_t;

/* path: the file (appended to). Never fails: errors surface on write. */
crw_deadletter_t *crw_deadletter_new(const char *path);
void crw_deadletter_destroy(crw_deadletter_t *dl);

typedef struct crw_deadletter_rec {
    const char *reason;
    const char *source;  /* may be NULL */
    const char *pglsn;   /* may be NULL */
    uint32_t xid;
    uint32_t ordinal;
    const char *payload; /* a JSON value; may be NULL */
    size_t payload_len;
} crw_deadletter_rec_t;

/* Appends rec and fsyncs. @returns 0 or CRW_ERR_IO (the caller must then stop: nothing may be lost). */
int crw_deadletter_write(crw_deadletter_t *dl, const crw_deadletter_rec_t *rec);

/* Records written so far. */
uint64_t crw_deadletter_count(const crw_deadletter_t *dl);

#endif
