/*
 * admin.h — the verbs that look at (or change) the database's side of the
 * logical source without streaming: `crwatch check` and `crwatch slot`.
 */
#ifndef CRW_ADMIN_H
#define CRW_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "core/conf.h"

/*
 * `crwatch check`: connects, checks every prerequisite without changing
 * anything, and writes one line per item to out ("ok", "warn", "FAIL").
 * @returns 0, or the code of the first failure (CRW_ERR_PREREQ: exit 3).
 */
int crw_admin_check(const crw_config_t *conf, const char *conninfo, FILE *out, char *errstr, size_t errstr_size);

/* `crwatch slot status|create|drop`: one JSON line to out. */
int crw_admin_slot(const crw_config_t *conf, const char *conninfo, const char *verb, FILE *out, char *errstr,
                   size_t errstr_size);

/*
 * Forgets where the stream continues from, so that its next start is a
 * first start: drops the slot (logical replication) or the poll watermark's
 * row in crwatch.offsets (polling); what was not there is no error.  *what
 * says which it was.  @returns 0, or an error with errstr (a slot in use:
 * CRW_ERR_SLOT_BUSY).
 */
int crw_admin_forget(const crw_config_t *conf, const char *conninfo, const char **what, char *errstr,
                     size_t errstr_size);

/*
 * slot.lost=resync (docs/operations.md): before the resync (accept false), a
 * slot that is gone or invalidated is created again, so that the stream
 * continues from before what the resync reads; after it (accept true), the
 * stored position becomes the slot's, so the next start streams from it.
 * @returns 0, or an error with errstr.
 */
int crw_admin_slot_recover(const crw_config_t *conf, const char *conninfo, bool accept, char *errstr,
                           size_t errstr_size);

#endif
