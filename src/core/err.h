/*
 * err.h — negative error codes shared by every module.
 *
 * Functions return 0 (or a non-negative count) on success and a negative
 * crw_err_t on failure; details go to an errstr buffer at API boundaries.
 * Retriable errors (the connection dropped, a slot still held) are
 * distinguished from fatal ones by crw_err_retriable().
 */
#ifndef CRW_ERR_H
#define CRW_ERR_H

#include <stdbool.h>

typedef enum {
    CRW_OK = 0,
    CRW_ERR_CONFIG = -1,      /* bad configuration or usage: exit 2 */
    CRW_ERR_PREREQ = -2,      /* a database prerequisite is missing: exit 3 */
    CRW_ERR_CONN = -3,        /* connection lost or refused: retriable */
    CRW_ERR_PROTOCOL = -4,    /* malformed data from the server */
    CRW_ERR_IO = -5,          /* local I/O (stdout, spool file) failed */
    CRW_ERR_SINK = -6,        /* a sink failed permanently */
    CRW_ERR_SLOT_BUSY = -7,   /* the slot is active for another process: retriable */
    CRW_ERR_SLOT_LOST = -8,   /* the slot vanished while we used it: exit 3 */
    CRW_ERR_INTERNAL = -9,
    CRW_ERR_STOPPED = -10,    /* a stop was requested (signal, endpos) */
    CRW_ERR_UNMAPPED = -11,   /* one change cannot be mapped: dead-letter it, the stream goes on */
    CRW_ERR_STANDBY = -12,    /* another instance streams this slot: stand by and try again */
    CRW_ERR_AUTH = -13,       /* the server refused the login (password, role, database): exit 3 */
} crw_err_t;

const char *crw_err_str(int err);

static inline bool crw_err_retriable(int err) {
    return err == CRW_ERR_CONN || err == CRW_ERR_SLOT_BUSY || err == CRW_ERR_STANDBY;
}

/* Process exit code for an error (docs/usage.md): 0, 1, 2 or 3. */
int crw_err_exit_code(int err);

#endif
