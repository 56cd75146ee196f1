/*
 * backfill.h — `crwatch backfill` (docs/snapshots.md): every current row of
 * the watched tables as a SYNC event, read in one snapshot
 * (source/snapshot.h) and delivered through the stream driver (app/stream.h),
 * so the sinks, the acknowledgement rule and exactly-once are the stream's.
 * Progress on stderr; a summary line at the end.
 */
#ifndef CRW_BACKFILL_H
#define CRW_BACKFILL_H

#include <signal.h>
#include <stdbool.h>

#include "core/conf.h"

typedef struct crw_backfill_opts {
    const char *conninfo;        /* NULL: PG* environment */
    volatile sig_atomic_t *stop; /* Ctrl-C: finish the chunk being delivered, confirm, return */
    bool resume;                 /* continue from snapshot.state.file */
    const crw_strlist_t *tables; /* --table: only these (NULL or empty: every watched table) */
} crw_backfill_opts_t;

/* @returns 0 (done, or stopped cleanly) or a negative crw_err_t with errstr. */
int crw_backfill_run(const crw_config_t *conf, const crw_backfill_opts_t *opts, char *errstr, size_t errstr_size);

#endif
