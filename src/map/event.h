/*
 * event.h — the mapper: decoded row changes to typed change events
 * (design.md §4-5), CloudEvents 1.0 structured JSON, one object per change.
 *
 * Shapes: `row` (the typed row, keyed by column name) and `crd` (the sql/
 * convention as {apiVersion, kind, metadata{...}, spec, status}).  Fields
 * that cannot be known (an unchanged TOAST value with no old row and no
 * cached object; the non-key columns of a key-only old tuple) are left out
 * and named in data.unknown as JSON pointers; a placeholder never appears.
 *
 * Hot path: encoding appends into caller-owned buffers and the mapper's
 * scratch buffers, all reset rather than freed between rows.
 * Thread-safety: a mapper is used by one thread.
 */
#ifndef CRW_EVENT_H
#define CRW_EVENT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/lsn.h"
#include "decode/pgoutput.h"
#include "decode/relcache.h"
#include "map/cache.h"

struct crw_resource_conf;

/* What every event of one source transaction shares. */
typedef struct crw_txn_ctx {
    uint64_t commit_lsn;
    uint32_t xid;
    int64_t commit_time;  /* PostgreSQL epoch microseconds */
    uint32_t ordinal;     /* changes seen so far in this transaction */
    char time_str[40];    /* commit time, ISO-8601 UTC */
    char lsn_str[CRW_LSN_BUFSIZE]; /* commit LSN, %X/%X */
} crw_txn_ctx_t;

/* Starts a transaction context (ordinal 0). */
void crw_event_txn_init(crw_txn_ctx_t *tx, uint64_t commit_lsn, uint32_t xid, int64_t commit_time);

/* Formats PostgreSQL-epoch microseconds as YYYY-MM-DDTHH:MM:SS.ffffffZ into buf (>= 32 bytes). */
void crw_event_format_time(char *buf, size_t n, int64_t pg_us);

typedef struct crw_mapper crw_mapper_t;

/* cache: may be NULL (no resource cache); not owned.  patch: add data.patch. */
crw_mapper_t *crw_mapper_new(crw_cache_t *cache, bool patch);
void crw_mapper_destroy(crw_mapper_t *mp);

/*
 * Prepares rel for mapping: its variants (one per matched resource; several
 * for a shared table with a kind column), shape, where each column lands in
 * the object, and the key columns (resource key, else for crd namespace and
 * name, else pk[], else the replica identity, else every column).
 * rel->source must be set.  @returns 0, or CRW_ERR_CONFIG with errstr
 * (a configured column the table lacks).
 */
int crw_mapper_prepare(crw_relation_t *rel, const struct crw_resource_conf *const *res, int nres,
                       const char *const *pk, int npk, char *errstr, size_t errstr_size);

/*
 * Encodes an Insert, Update or Delete of rel as one CloudEvents JSON object
 * (no trailing newline) into out, the resource key into key, and points
 * *type at "ADDED", "MODIFIED" or "DELETED" and *kind at the change's kind.  Keeps the cache current.
 * tx->ordinal must already count this change.
 * @returns 0, or -1 with errstr when the change cannot be mapped (the
 *          caller dead-letters it).
 */
int crw_mapper_change(crw_mapper_t *mp, crw_buf_t *out, crw_buf_t *key, const char **type, const char **kind,
                      const crw_relation_t *rel,
                      const crw_pgo_msg_t *m, const crw_txn_ctx_t *tx, char *errstr, size_t errstr_size);

/* Encodes a TRUNCATED event for rel (no key, no object) and forgets rel's cached objects. */
void crw_mapper_truncate(crw_mapper_t *mp, crw_buf_t *out, const crw_relation_t *rel, const crw_txn_ctx_t *tx);

/* Renders a whole row (read outside replication) as its object and key and caches it (cache seeding). */
int crw_mapper_seed(crw_mapper_t *mp, const crw_relation_t *rel, const crw_pgo_tuple_t *row, char *errstr,
                    size_t errstr_size);

/*
 * Encodes the raw change for the dead-letter record: {"schema","table","op",
 * "new":{col:text|null},"old":{...}} with every value as its text form, so
 * nothing a mapping rule could misread is lost.
 */
void crw_event_encode_raw(crw_buf_t *out, const crw_relation_t *rel, const crw_pgo_msg_t *m);

#endif
