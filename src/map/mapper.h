/*
 * mapper.h — row changes to change events (docs/events.md): the one place
 * an event's bytes are rendered.  The format (event.format) is chosen here,
 * so the drivers hand every change to crw_mapper_change whatever it is:
 * CloudEvents 1.0 structured JSON (map/cloudevents.c) or Debezium's
 * envelope (map/debezium.c).
 *
 * What comes out is a crw_event_t (core/event.h) per record, pointing into
 * the mapper's buffers: valid until the next call.  The sinks need nothing
 * else, so none of them parses what is rendered here.
 * Hot path: buffers are reset, never freed, between changes.
 * Thread-safety: a mapper is used by one thread.
 */
#ifndef CRW_MAPPER_H
#define CRW_MAPPER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/conf.h"
#include "core/event.h"
#include "core/lsn.h"
#include "decode/change.h"
#include "map/cache.h"
#include "map/relmap.h"

/* What every event of one source transaction shares. */
typedef struct crw_txn_ctx {
    uint64_t position;    /* the source's commit position (what the pipeline confirms) */
    uint64_t commit_lsn;  /* the WAL position events name (pglsn) */
    uint32_t xid;
    int64_t commit_time;  /* PostgreSQL epoch microseconds */
    uint32_t ordinal;     /* changes seen so far in this transaction (the driver counts them) */
    uint64_t last_end;    /* end position of the transaction before this one; 0: unknown (Debezium's sequence) */
    char time_str[40];    /* commit time, ISO-8601 UTC */
    char lsn_str[CRW_LSN_BUFSIZE]; /* commit LSN, %X/%X */
} crw_txn_ctx_t;

/* Starts a transaction context (ordinal 0) at position commit_lsn; last_end is left as it was. */
void crw_txn_init(crw_txn_ctx_t *tx, uint64_t commit_lsn, uint32_t xid, int64_t commit_time);

/* The records of one change: up to three (Debezium: a delete and its tombstone; a key change: d, tombstone, c). */
#define CRW_MAPPED_MAX 3
typedef struct crw_mapped {
    int n;
    crw_event_t ev[CRW_MAPPED_MAX]; /* txn left 0: the driver sets it */
} crw_mapped_t;

typedef struct crw_mapper crw_mapper_t;

/*
 * A mapper for conf's event.format, event.patch and debezium.name.  cache:
 * the resource cache (NULL: none); not owned.  The mapper keeps it current.
 */
crw_mapper_t *crw_mapper_new(const crw_config_t *conf, crw_cache_t *cache);
void crw_mapper_destroy(crw_mapper_t *mp);

/*
 * Maps change ch of the watched relation ri (tx->ordinal counts it already)
 * into *out.  @returns 0, or CRW_ERR_UNMAPPED with errstr when the change
 * cannot be mapped (a NULL key, a crd spec that is no object, a kind no
 * resource names): the caller dead-letters it.  With ch->values_once, a
 * CloudEvents object rendered straight into its event gives a large text
 * value's memory back as it goes (crw_buf_put_json_str_discard): ch's values
 * are spent after a 0, intact after CRW_ERR_UNMAPPED (every such check comes
 * before them).
 */
int crw_mapper_change(crw_mapper_t *mp, const crw_relinfo_t *ri, const crw_change_t *ch, const crw_txn_ctx_t *tx,
                      crw_mapped_t *out, char *errstr, size_t errstr_size);

/*
 * Lets go of the buffers an outsized event left (over CRW_MAPPER_KEEP),
 * once the sinks have it: kept, they would hold that much resident through
 * the next large row's read.  The events of *out go with them (out->n 0).
 */
#define CRW_MAPPER_KEEP (4u << 20)
void crw_mapper_trim(crw_mapper_t *mp, crw_mapped_t *out);

/* Renders a whole row read outside replication as its object and caches it (cache seeding). */
/* The cache's listing read the current state at WAL position lsn (map/cloudevents.h's crw_ce_cache_horizon). */
void crw_mapper_cache_horizon(crw_mapper_t *mp, uint64_t lsn);
int crw_mapper_seed(crw_mapper_t *mp, const crw_relinfo_t *ri, const crw_pgo_tuple_t *row, char *errstr,
                    size_t errstr_size);

/*
 * The raw change for a dead-letter record, into out (reset first):
 * {"schema","table","op","new":{col:text|null},"old":{...}}, every value as
 * its text form, so nothing a mapping rule could misread is lost.
 */
void crw_mapper_raw(crw_buf_t *out, const crw_change_t *ch);

#endif
