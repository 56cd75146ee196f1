/*
 * poll_stamp.h — the polling source's timestamp mode (poll_stamp.c;
 * docs/poll.md, "Tables outside the convention"): a table that cannot be
 * managed is read by a column every write sets (resource.<id>.poll.column),
 * re-reading poll.lag.ms back each poll, and reconciled whole every
 * resync.interval.ms.  What was emitted of each row is kept in memory (its
 * key and a digest of its text), so a poll emits only what changed, and a
 * reconciliation emits what the window missed: rows changed outside it, and
 * rows gone (DELETED).  Nothing is stored in the database: every start lists
 * the table again, each row as ADDED.  Thread-safety: one thread.
 */
#ifndef CRW_POLL_STAMP_H
#define CRW_POLL_STAMP_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "core/conf.h"
#include "decode/change.h"

typedef struct crw_stamp crw_stamp_t;

/* Takes one change for the poll's batch.  @returns 0 or a negative crw_err_t (the read stops). */
typedef int (*crw_stamp_emit_fn)(void *opaque, const crw_change_t *ch);

crw_stamp_t *crw_stamp_new(const crw_config_t *conf, const crw_resource_conf_t *rs);
void crw_stamp_destroy(crw_stamp_t *s);

/*
 * Binds s to rel as it is described now (again after an ALTER TABLE):
 * builds its queries on c's quoting; key: the columns identifying a row.
 * @returns 0, or CRW_ERR_PREREQ naming a key column or poll.column rel lacks.
 */
int crw_stamp_prepare(crw_stamp_t *s, PGconn *c, const crw_relation_t *rel, const char *const *key, int nkey,
                      char *errstr, size_t errstr_size);

/*
 * A reconnect: what was in flight may not have arrived.  Keeps the keys but
 * forgets what was sent of them, so the next read lists the table again:
 * every row comes again, and a key gone since (its DELETED perhaps lost)
 * is DELETED again.
 */
void crw_stamp_forget(crw_stamp_t *s);

/* The poll a read is part of. */
typedef struct crw_stamp_poll {
    int64_t before_us;   /* monotonic, before its transaction began */
    int64_t after_us;    /* monotonic, after its snapshot was taken */
    uint64_t position;   /* its batch */
    uint64_t confirmed;  /* what every sink has acknowledged */
} crw_stamp_poll_t;

/*
 * This poll's part, inside the batch's REPEATABLE READ transaction on c:
 * the listing (first read), a reconciliation (when due), or the window.
 * @returns 0, emit's error, CRW_ERR_CONN (the connection went, or a query
 * failed: the tables are described again).
 */
int crw_stamp_read(crw_stamp_t *s, PGconn *c, const crw_stamp_poll_t *poll, crw_stamp_emit_fn emit, void *opaque,
                   char *errstr, size_t errstr_size);

#endif
