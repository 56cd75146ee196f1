/*
 * incremental.h — the chunk reader of incremental snapshots
 * (snapshot.mode=incremental, `crwatch snapshot`; docs/snapshots.md): the
 * DBLog algorithm's database side.  For each chunk it writes a low
 * watermark through the slot (a transactional pg_logical_emit_message,
 * prefix "crwatch.snapshot", content "<slot.name>:low:<window>"), reads the
 * next snapshot.chunk.rows rows of the table in primary-key order after its
 * cursor, and writes the high watermark ("<slot.name>:high:<window>").  The
 * stream driver sees both in the stream, in commit order: it drops the rows
 * whose keys changed between them and emits the rest at the high one.
 *
 * Its own SQL session (autocommit), apart from the source's.
 * pg_logical_emit_message is executable by PUBLIC in PostgreSQL 15: no grant.
 * Thread-safety: one thread, the driver's.
 */
#ifndef CRW_INCREMENTAL_H
#define CRW_INCREMENTAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/conf.h"
#include "decode/pgoutput.h"
#include "decode/relcache.h"

#define CRW_INCR_PREFIX "crwatch.snapshot"

typedef struct crw_incr crw_incr_t;

/* A reader over conf's database (conninfo as the source's); connects when first used. */
crw_incr_t *crw_incr_new(const crw_config_t *conf, const char *conninfo);
void crw_incr_destroy(crw_incr_t *in);

/* Queues rel (a watched table, as the source describes it) to be read again from its first key. */
int crw_incr_queue(crw_incr_t *in, const crw_relation_t *rel, char *errstr, size_t errstr_size);

/* The table being read or next to be (NULL: nothing queued). */
const crw_relation_t *crw_incr_table(const crw_incr_t *in);

/*
 * Reads the next chunk of the current table between its two watermarks, in
 * a snapshot that sees every one of the xids (32-bit, as the stream gives
 * them) of the transactions the stream delivered last: a commit can be
 * streamed a moment before it is visible, and a chunk that missed it would
 * be older than the stream.  *window: the window's number (0: nothing was
 * queued).  @returns 0, or an error with errstr.
 */
int crw_incr_next(crw_incr_t *in, const uint32_t *xids, int nxids, uint64_t *window, char *errstr,
                  size_t errstr_size);

/* Row i of the last chunk (0 <= i < crw_incr_nrows) as a text tuple of crw_incr_table's columns. */
int crw_incr_nrows(const crw_incr_t *in);
const crw_pgo_tuple_t *crw_incr_row(crw_incr_t *in, int i);

/* The last chunk was delivered at its high watermark: the cursor moves past it. */
void crw_incr_advance(crw_incr_t *in);

/* The last chunk was lost (a reconnect): it is read again. */
void crw_incr_forget(crw_incr_t *in);

/* Writes the request to re-read schema.table into the stream of conf's slot (`crwatch snapshot`). */
int crw_incr_request(const crw_config_t *conf, const char *conninfo, const char *schema, const char *table,
                     char *errstr, size_t errstr_size);

#endif
