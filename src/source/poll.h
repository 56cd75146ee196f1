/*
 * poll.h — what the polling source (poll.c, docs/poll.md) needs of the
 * database, for `crwatch check` as for its own start.
 */
#ifndef CRW_POLL_H
#define CRW_POLL_H

#include <stddef.h>

#include "source/session.h"

/*
 * The watched tables (ses->conf) exist, are readable and are managed for
 * polling (the txid column, its index, crwatch's triggers), and the role
 * may keep crwatch.offsets and read crwatch.tombstones.  ses->sql is open.
 * @returns 0; CRW_ERR_CONFIG (no tables); CRW_ERR_PREREQ naming the fix;
 * CRW_ERR_CONN.
 */
int crw_poll_check(crw_session_t *ses, char *errstr, size_t errstr_size);

/* How many watched tables are polled by txid (managed), not by a column (resource.<id>.poll.column). */
int crw_poll_txid_tables(const crw_config_t *conf);

#endif
