/*
 * catalog.h — what the driver asks the source's database about the watched
 * tables, over the source's plain SQL session: types (for value
 * rendering), primary keys (for resource keys), descriptions of tables
 * before any Relation message arrives, and row-by-row reads (the resource
 * cache's listing, and later snapshots).
 *
 * Relations described here enter the source's relation cache (decode/
 * relcache.h) exactly as pgoutput would describe them (no dropped or
 * generated columns), so a later Relation message replaces them in place.
 * Thread-safety: one thread; the session must not be in COPY mode.
 */
#ifndef CRW_CATALOG_H
#define CRW_CATALOG_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "core/conf.h"
#include "decode/pgoutput.h"
#include "decode/relcache.h"
#include "decode/types.h"

typedef struct crw_catalog crw_catalog_t;

/* A catalog entering relations into rels (not owned); no session until crw_catalog_set_conn. */
crw_catalog_t *crw_catalog_new(crw_relcache_t *rels);
void crw_catalog_destroy(crw_catalog_t *cat);
/* The session to ask (NULL: none; look-ups then fail). */
void crw_catalog_set_conn(crw_catalog_t *cat, PGconn *sql);

/* A crw_type_lookup_fn (decode/types.h): opaque is the catalog. */
int crw_catalog_type(void *cat, uint32_t oid, crw_pgtype_row_t *row);

/* The primary key column names of relid, in key order, into out (replaced).  @returns 0, or -1 (logged). */
int crw_catalog_primary_key(crw_catalog_t *cat, uint32_t relid, crw_strlist_t *out);

/*
 * Describes schema.table from the catalog and enters it in the relation
 * cache.  @returns the relation, or NULL with errstr (missing, not readable).
 */
const crw_relation_t *crw_catalog_describe(crw_catalog_t *cat, const char *schema, const char *table, char *errstr,
                                           size_t errstr_size);

/* Called for each row read: its columns as text tuples; a negative return stops the read. */
typedef int (*crw_catalog_row_fn)(void *opaque, const crw_pgo_tuple_t *row);

/*
 * Reads every row of rel (its columns in its order), one at a time so the
 * table is never held in memory, calling fn for each.
 * @returns the rows read; a negative fn return as is; CRW_ERR_PREREQ or CRW_ERR_CONN with errstr (the query failed).
 */
long crw_catalog_scan(crw_catalog_t *cat, const crw_relation_t *rel, crw_catalog_row_fn fn, void *opaque,
                      char *errstr, size_t errstr_size);

#endif
