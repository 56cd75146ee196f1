/*
 * resync.h — `crwatch resync` (docs/snapshots.md, "crwatch resync"): what a
 * sink holds (a JSON-lines file of CloudEvents, resync.from) against the
 * tables read in one snapshot, by key and resourceVersion (crd shape) or the
 * object's content (row shape); only the corrections go to the sinks:
 * ADDED for a key the sink lacks, MODIFIED for a stale one, DELETED for a
 * key whose row is gone.  A summary line at the end.
 */
#ifndef CRW_RESYNC_H
#define CRW_RESYNC_H

#include <signal.h>
#include <stdbool.h>

#include "core/conf.h"

typedef struct crw_resync_opts {
    const char *conninfo;        /* NULL: PG* environment */
    volatile sig_atomic_t *stop;
    bool dry_run;                /* the corrections to stdout only (the caller set sink=stdout) */
    const crw_strlist_t *tables; /* --table: only these (NULL or empty: every watched table) */
} crw_resync_opts_t;

/* @returns 0 or a negative crw_err_t with errstr (a view that cannot be read: CRW_ERR_CONFIG / CRW_ERR_IO). */
int crw_resync_run(const crw_config_t *conf, const crw_resync_opts_t *opts, char *errstr, size_t errstr_size);

#endif
