/*
 * source.h — where changes come from: one interface, several kinds
 * (docs/architecture.md, "The source interface").  The driver uses a
 * source without knowing its kind:
 *
 *   start -> [poll ...] -> finish          (close + start again after a lost connection)
 *
 * and the source calls the driver back, in commit order, whole
 * transactions at a time:
 *
 *   begin(position, xid, commit time) -> change ... -> commit(end position)
 *   tick(position)                       nothing open, everything up to position was sent
 *
 * A position is a 64-bit number that only grows: an LSN for logical
 * replication, a watermark for polling.  The driver tells the source, with
 * confirm(), the highest position every sink acknowledged (the pipeline
 * decides it, core/pipeline.h); the source makes it durable where it lives
 * (the slot's flush position, or the stored watermark) and never more.
 *
 * Kinds: logical replication (replication.c) and polling (poll.c); a new
 * kind is one file behind this interface and one line in sources.c's registry.
 * Thread-safety: one thread, the driver's.
 */
#ifndef CRW_SOURCE_H
#define CRW_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/conf.h"
#include "decode/change.h"
#include "source/catalog.h"

/* What a source transaction's changes share. */
typedef struct crw_src_txn {
    uint64_t position;   /* its commit position: the commit LSN, or the poll batch */
    uint64_t lsn;        /* the WAL position events name (pglsn): the commit LSN, or where a poll read */
    uint32_t xid;
    int64_t commit_time; /* PostgreSQL epoch microseconds */
} crw_src_txn_t;

/* Where a source's changes continue from, for reading the tables as of that point. */
typedef struct crw_src_snapshot {
    const char *name;  /* an exported snapshot the changes continue from exactly; NULL: none (the current state) */
    uint64_t position; /* the position changes continue from: what is read in the snapshot stands there */
    uint64_t lsn;      /* its WAL position (events' pglsn); 0: unknown */
    uint64_t read_at;  /* no name: the WAL position when the current state was read (changes before it are older
                        * than what is read); 0: unknown */
    bool whole_old_rows; /* an update of a REPLICA IDENTITY FULL table brings the whole old row (logical) */
} crw_src_snapshot_t;

/*
 * The driver's callbacks.  Each returns 0, or a negative crw_err_t that
 * stops the source's poll() and is returned by it (CRW_ERR_STOPPED: cleanly).
 */
typedef struct crw_source_events {
    int (*begin)(void *opaque, const crw_src_txn_t *txn);
    /* One change of the open transaction (a truncate: one per relation). */
    int (*change)(void *opaque, const crw_change_t *ch);
    int (*commit)(void *opaque, uint64_t end_position);
    /* Position-only: nothing is open and everything up to position was sent. */
    void (*tick)(void *opaque, uint64_t position);
    /* Type typoid changed: what was derived from column types must be derived again. */
    void (*invalidate)(void *opaque, uint32_t typoid);
    /*
     * May be NULL.  Called once, before the first change, with the catalog
     * inside the snapshot the changes continue from when there is one (the
     * logical source created its slot, polling starts its first watermark;
     * snap->name names it, exported), else on the current state: to read the
     * tables as of the start (snapshot.mode=initial, the cache's listing).
     */
    int (*snapshot)(void *opaque, crw_catalog_t *cat, const crw_src_snapshot_t *snap);
    /*
     * May be NULL.  A logical decoding message whose prefix starts with
     * "crwatch" (pg_logical_emit_message: incremental snapshot watermarks and
     * requests), in commit order; a transactional one inside its transaction.
     */
    int (*message)(void *opaque, const char *prefix, const char *content, size_t len);
    void *opaque;
} crw_source_events_t;

typedef struct crw_source crw_source_t;

typedef struct crw_source_ops {
    const char *name;
    /*
     * Connects, checks prerequisites, creates what is missing and allowed,
     * and starts delivering.  @returns 0; CRW_ERR_PREREQ or CRW_ERR_SLOT_LOST
     * (exit 3); CRW_ERR_CONN or CRW_ERR_SLOT_BUSY (retry later); with errstr.
     */
    int (*start)(crw_source_t *s, char *errstr, size_t errstr_size);
    /* Delivers what has arrived, waiting up to timeout_ms for more.  @returns 0, a callback's error, or
     * CRW_ERR_CONN when the connection dropped. */
    int (*poll)(crw_source_t *s, int timeout_ms, char *errstr, size_t errstr_size);
    /* Everything up to position is in every sink: it may be made durable. */
    void (*confirm)(crw_source_t *s, uint64_t position);
    /* Keeps the connection alive while the driver cannot poll (a sink is blocked). */
    void (*keepalive)(crw_source_t *s);
    /* Delivers nothing after the next commit (at_end turns true then). */
    void (*stop_after_commit)(crw_source_t *s);
    /* Nothing more will come (endpos reached, or stop_after_commit done). */
    bool (*at_end)(const crw_source_t *s);
    /* A begin was delivered without its commit. */
    bool (*in_txn)(const crw_source_t *s);
    /* Ends cleanly: the confirmed position reaches the server (at most timeout_ms); then closes. */
    int (*finish)(crw_source_t *s, int timeout_ms);
    /* Drops the connections and what was received but not delivered (it comes again). */
    void (*close)(crw_source_t *s);
    /* The database the source reads. */
    const char *(*dbname)(const crw_source_t *s);
    /* The catalog of the source's database (valid while started). */
    crw_catalog_t *(*catalog)(crw_source_t *s);
    /*
     * The sinks hold everything up to position already (a sink's checkpoint,
     * after start): deliver only what comes after it.  The logical source
     * lets the driver skip what the server sends again; polling moves its
     * watermark there.  @returns 0, or CRW_ERR_PREREQ when the position
     * cannot be resumed from (a gap it will not guess over).
     */
    int (*seek)(crw_source_t *s, uint64_t position, char *errstr, size_t errstr_size);
    /* A position as people read it ("0/16B3748", "poll batch 12"), into buf. */
    void (*format_position)(const crw_source_t *s, uint64_t position, char *buf, size_t n);
    void (*destroy)(crw_source_t *s);
} crw_source_ops_t;

struct crw_source {
    const crw_source_ops_t *ops;
};

/* Where a source reads and until when. */
typedef struct crw_source_opts {
    const char *conninfo; /* libpq conninfo or URI; NULL or "": the PG* environment */
    uint64_t endpos;      /* 0: no end */
} crw_source_opts_t;

/* A source constructor: connects nothing yet. */
typedef crw_source_t *(*crw_source_new_fn)(const crw_config_t *conf, const crw_source_opts_t *opts,
                                           const crw_source_events_t *ev, int *err, char *errstr,
                                           size_t errstr_size);

#define CRW_SOURCE_CONSTRUCTOR(fn)                                                                                     \
    crw_source_t *fn(const crw_config_t *conf, const crw_source_opts_t *opts, const crw_source_events_t *ev, int *err, \
                     char *errstr, size_t errstr_size)

/* Checks that conf->source is a kind of this build: 0, or CRW_ERR_CONFIG naming it (before anything connects). */
int crw_sources_check(const crw_config_t *conf, char *errstr, size_t errstr_size);

/*
 * The kind conf->source resolves to against the database conninfo names:
 * itself, or for source=auto logical replication when the database allows it
 * (wal_level=logical, a role that may replicate) and polling otherwise.  why
 * says why.  @returns 0, or CRW_ERR_CONN / CRW_ERR_PREREQ with why the error.
 */
int crw_source_choose(const crw_config_t *conf, const char *conninfo, crw_source_kind_t *kind, char *why,
                      size_t why_size);

/*
 * Opens the source kind conf->source names (sources.c), calling ev back.
 * Connects nothing yet.  @returns the source, or NULL with errstr and *err
 * (CRW_ERR_CONFIG: a kind this build lacks).
 */
crw_source_t *crw_source_open(const crw_config_t *conf, const crw_source_opts_t *opts, const crw_source_events_t *ev,
                              int *err, char *errstr, size_t errstr_size);

static inline int crw_source_start(crw_source_t *s, char *errstr, size_t n) { return s->ops->start(s, errstr, n); }
static inline int crw_source_poll(crw_source_t *s, int timeout_ms, char *errstr, size_t n) {
    return s->ops->poll(s, timeout_ms, errstr, n);
}
static inline void crw_source_confirm(crw_source_t *s, uint64_t position) { s->ops->confirm(s, position); }
static inline void crw_source_keepalive(crw_source_t *s) { s->ops->keepalive(s); }
static inline void crw_source_stop_after_commit(crw_source_t *s) { s->ops->stop_after_commit(s); }
static inline bool crw_source_at_end(const crw_source_t *s) { return s->ops->at_end(s); }
static inline bool crw_source_in_txn(const crw_source_t *s) { return s->ops->in_txn(s); }
static inline int crw_source_finish(crw_source_t *s, int timeout_ms) { return s->ops->finish(s, timeout_ms); }
static inline void crw_source_close(crw_source_t *s) { s->ops->close(s); }
static inline const char *crw_source_dbname(const crw_source_t *s) { return s->ops->dbname(s); }
static inline crw_catalog_t *crw_source_catalog(crw_source_t *s) { return s->ops->catalog(s); }
static inline int crw_source_seek(crw_source_t *s, uint64_t position, char *errstr, size_t n) {
    return s->ops->seek(s, position, errstr, n);
}
static inline void crw_source_format_position(const crw_source_t *s, uint64_t position, char *buf, size_t n) {
    s->ops->format_position(s, position, buf, n);
}
static inline void crw_source_destroy(crw_source_t *s) {
    if (s)
        s->ops->destroy(s);
}

#endif
