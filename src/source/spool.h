/*
 * spool.h — streamed in-progress transactions (pgoutput protocol 2) wait
 * here, on disk, until their Stream Commit; an abort discards them without
 * a trace.  Memory stays bounded whatever the transaction's size.
 *
 * Subtransactions follow PostgreSQL's apply worker (worker.c): each
 * subtransaction's changes start at a known file offset and come after its
 * parent's, so aborting one truncates the file back to that offset.
 */
#ifndef CRW_SPOOL_H
#define CRW_SPOOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct crw_spool crw_spool_t;

/* Spool files are created (and unlinked at once) in dir. */
crw_spool_t *crw_spool_new(const char *dir);
void crw_spool_destroy(crw_spool_t *sp);

/* Appends one raw pgoutput message of (sub)transaction subxid to top_xid's spool. */
int crw_spool_append(crw_spool_t *sp, uint32_t top_xid, uint32_t subxid, const char *msg, size_t len);

/* Stream Abort: subxid == top_xid drops the whole transaction, else that subtransaction onward. */
int crw_spool_abort(crw_spool_t *sp, uint32_t top_xid, uint32_t subxid);

typedef int (*crw_spool_cb)(void *opaque, const char *msg, size_t len);

/*
 * Stream Commit: calls cb for every spooled message of top_xid in order
 * (stopping at the first negative return, which is returned), then drops
 * the spool.  A transaction with nothing spooled replays nothing.
 */
int crw_spool_replay(crw_spool_t *sp, uint32_t top_xid, crw_spool_cb cb, void *opaque);

/* Drops every spool (the connection was lost; the server will resend). */
void crw_spool_reset(crw_spool_t *sp);

/* What the last call that failed (CRW_ERR_IO) found: "spool (spool.dir=...): ...". */
const char *crw_spool_error(const crw_spool_t *sp);

/* Bytes currently spooled (all transactions). */
uint64_t crw_spool_bytes(const crw_spool_t *sp);

#endif
