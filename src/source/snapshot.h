/*
 * snapshot.h — the snapshot source (docs/snapshots.md): every current row of
 * the watched tables, read in one consistent snapshot, as CRW_OP_READ
 * changes (the mapper makes SYNC events of them).  `crwatch backfill` runs
 * the stream driver on it; it ends (at_end) when every row was delivered.
 *
 * One snapshot: a control connection takes it (REPEATABLE READ,
 * pg_export_snapshot(), or imports one it is given: a new slot's), and
 * snapshot.workers connections import it.  Each table is read in chunks of
 * snapshot.chunk.rows along its primary key, (lo, hi], each chunk by one
 * worker with COPY ... TO STDOUT; a chunk is one source transaction, whose
 * position is a counter that only grows.  Workers read ahead into bounded
 * buffers while the chunk being delivered drains, so memory is bounded
 * whatever the table's size.  A table without a primary key is one chunk.
 *
 * Progress is an append-only file (snapshot.state.file): each chunk's range
 * when it is cut, its position before its first row is delivered, and the
 * confirmed position.  `--resume` reads it back: confirmed chunks are done,
 * the others are read again, in a new snapshot.
 *
 * Thread-safety: one thread, the driver's.
 */
#ifndef CRW_SNAPSHOT_H
#define CRW_SNAPSHOT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/conf.h"
#include "source/source.h"

typedef struct crw_snapshot_opts {
    const char *snapshot;      /* a snapshot exported elsewhere to read in; NULL: take one */
    uint64_t snapshot_lsn;     /* where that snapshot stands (events' pglsn) */
    const char *state_file;    /* progress kept here; NULL: none (nothing to resume) */
    bool resume;               /* continue from state_file */
    const crw_strlist_t *only; /* read only these schema.table (NULL or empty: every watched table) */
    uint64_t position;         /* nonzero: every chunk stands at it (an initial snapshot: where the stream starts) */
    const char *tag;           /* events' ids are "<snapshot LSN>/<tag>/<key>"; NULL: "sync" */
    bool whole;                /* every row, resource.<id>.filter left aside (resync compares whole tables) */
} crw_snapshot_opts_t;

/* A snapshot source over conf's watched tables (connects nothing yet). */
crw_source_t *crw_source_snapshot_new(const crw_config_t *conf, const crw_source_opts_t *opts,
                                      const crw_snapshot_opts_t *so, const crw_source_events_t *ev, int *err,
                                      char *errstr, size_t errstr_size);

/* Where one table stands. */
typedef struct crw_snapshot_table {
    const char *schema, *table;
    int64_t rows;      /* rows delivered so far */
    int64_t estimate;  /* rows expected (reltuples, or a count); -1 unknown */
    bool done;         /* every chunk delivered */
} crw_snapshot_table_t;

/* The tables of s (a snapshot source) and their progress: valid until s is destroyed. */
int crw_snapshot_tables(const crw_source_t *s, const crw_snapshot_table_t **tables);

/* True when a resumed snapshot found every chunk confirmed already. */
bool crw_snapshot_finished_before(const crw_source_t *s);

#endif
