/*
 * cloudevents.h — event.format=cloudevents: one CloudEvents 1.0 structured
 * JSON object per change (docs/events.md).
 *
 * Shapes: `row` (the typed row, keyed by column name) and `crd` (the sql/
 * convention as {apiVersion, kind, metadata{...}, spec, status}).  Fields
 * that cannot be known (an unchanged TOAST value with no old row and no
 * cached object; the non-key columns of a key-only old tuple) are left out
 * and named in data.unknown as JSON pointers; a placeholder never appears.
 * oldObject comes from the old row (REPLICA IDENTITY FULL) or the resource
 * cache, which the encoder keeps current.
 * Thread-safety: an encoder is used by one thread.
 */
#ifndef CRW_CLOUDEVENTS_H
#define CRW_CLOUDEVENTS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/event.h"
#include "map/cache.h"
#include "map/mapper.h"
#include "map/relmap.h"

typedef struct crw_ce crw_ce_t;

/* cache: may be NULL; not owned.  patch: add data.patch (RFC 6902). */
crw_ce_t *crw_ce_new(crw_cache_t *cache, bool patch);
void crw_ce_destroy(crw_ce_t *ce);

/*
 * Encodes an insert, update or delete as one event (no trailing newline)
 * into out, its key into key, and sets ev's type, kind, key, value, spans
 * and attributes (the rest is the caller's).  Keeps the cache current.
 * @returns 0, or CRW_ERR_UNMAPPED with errstr.
 */
int crw_ce_change(crw_ce_t *ce, crw_buf_t *out, crw_buf_t *key, crw_event_t *ev, const crw_relinfo_t *ri,
                  const crw_change_t *ch, const crw_txn_ctx_t *tx, char *errstr, size_t errstr_size);

/* A TRUNCATED event for ri (no key, no object); forgets ri's cached objects. */
void crw_ce_truncate(crw_ce_t *ce, crw_buf_t *out, crw_event_t *ev, const crw_relinfo_t *ri, const crw_txn_ctx_t *tx);

/* Renders a whole row (read outside replication) as its object and caches it. */
/* The cache was listed from the tables' current state at WAL position lsn: changes committed before it do not
 * take an old object (or unchanged values) from it; they say oldObjectUnknown.  0: no such horizon. */
void crw_ce_cache_horizon(crw_ce_t *ce, uint64_t lsn);
int crw_ce_seed(crw_ce_t *ce, const crw_relinfo_t *ri, const crw_pgo_tuple_t *row, char *errstr, size_t errstr_size);

#endif
