/*
 * types.c — type classes of built-in PostgreSQL types and the cache of
 * resolved user types (domains, enums, arrays of them).
 *
 * Built-ins are a compile-time table (OIDs are fixed by pg_type.dat and
 * never change across releases), so the common case costs one switch.
 * User types are resolved once through the caller's catalog lookup and kept
 * in an open-addressing hash map keyed by OID; a lookup never allocates.
 * Thread-safety: a crw_typecache_t belongs to one thread (the decoder).
 */
#include "decode/types.h"

#include <stdlib.h>

#include "core/log.h"

/*
 * The built-in table: X(oid, array oid, class, typdelim).  Every OID was
 * checked against PostgreSQL 15's pg_type (pg_type.dat / a live catalog).
 * box is listed only for its delimiter: its array_out separates elements by
 * ';' because the box text form itself contains commas.
 */
#define CRW_BUILTIN_TYPES(X)                                                                                           \
    X(16, 1000, CRW_TC_BOOL, ',')        /* bool */                                                                    \
    X(17, 1001, CRW_TC_BYTEA, ',')       /* bytea */                                                                   \
    X(18, 1002, CRW_TC_TEXT, ',')        /* "char" */                                                                  \
    X(19, 1003, CRW_TC_TEXT, ',')        /* name */                                                                    \
    X(20, 1016, CRW_TC_INT, ',')         /* int8 */                                                                    \
    X(21, 1005, CRW_TC_INT, ',')         /* int2 */                                                                    \
    X(23, 1007, CRW_TC_INT, ',')         /* int4 */                                                                    \
    X(25, 1009, CRW_TC_TEXT, ',')        /* text */                                                                    \
    X(26, 1028, CRW_TC_INT, ',')         /* oid */                                                                     \
    X(28, 1011, CRW_TC_INT, ',')         /* xid */                                                                     \
    X(29, 1012, CRW_TC_INT, ',')         /* cid */                                                                     \
    X(114, 199, CRW_TC_JSON, ',')        /* json */                                                                    \
    X(142, 143, CRW_TC_TEXT, ',')        /* xml */                                                                     \
    X(603, 1020, CRW_TC_TEXT, ';')       /* box */                                                                     \
    X(700, 1021, CRW_TC_FLOAT, ',')      /* float4 */                                                                  \
    X(701, 1022, CRW_TC_FLOAT, ',')      /* float8 */                                                                  \
    X(790, 791, CRW_TC_TEXT, ',')        /* money: locale-formatted, "$12.50" */                                       \
    X(1042, 1014, CRW_TC_TEXT, ',')      /* bpchar */                                                                  \
    X(1043, 1015, CRW_TC_TEXT, ',')      /* varchar */                                                                 \
    X(1082, 1182, CRW_TC_DATE, ',')      /* date */                                                                    \
    X(1083, 1183, CRW_TC_TIME, ',')      /* time */                                                                    \
    X(1114, 1115, CRW_TC_TIMESTAMP, ',') /* timestamp */                                                               \
    X(1184, 1185, CRW_TC_TIMESTAMPTZ, ',') /* timestamptz */                                                           \
    X(1186, 1187, CRW_TC_INTERVAL, ',')  /* interval */                                                                \
    X(1266, 1270, CRW_TC_TIMETZ, ',')    /* timetz */                                                                  \
    X(1560, 1561, CRW_TC_TEXT, ',')      /* bit */                                                                     \
    X(1562, 1563, CRW_TC_TEXT, ',')      /* varbit */                                                                  \
    X(1700, 1231, CRW_TC_NUMERIC, ',')   /* numeric */                                                                 \
    X(2950, 2951, CRW_TC_UUID, ',')      /* uuid */                                                                    \
    X(3802, 3807, CRW_TC_JSONB, ',')     /* jsonb */                                                                   \
    X(5069, 271, CRW_TC_INT, ',')        /* xid8 */

bool crw_type_builtin(uint32_t oid, crw_typeinfo_t *ti) {
    /* A switch lets the compiler build the search; the table stays one list. */
    switch (oid) {
#define X(o, arr, c, d)                                                                                                \
    case (o):                                                                                                          \
        *ti = (crw_typeinfo_t){(c), false, (d)};                                                                       \
        return true;                                                                                                   \
    case (arr):                                                                                                        \
        *ti = (crw_typeinfo_t){(c), true, (d)};                                                                        \
        return true;
        CRW_BUILTIN_TYPES(X)
#undef X
    default:
        return false;
    }
}

/* PostgreSQL domains cannot form cycles, but a broken lookup could: bound the chase. */
#define MAX_RESOLVE_DEPTH 16
#define INITIAL_CAP 64 /* power of two */

typedef struct entry {
    uint32_t oid; /* 0 (InvalidOid) marks an empty slot */
    crw_typeinfo_t ti;
} entry_t;

struct crw_typecache {
    crw_type_lookup_fn lookup;
    void *opaque;
    entry_t *slots;
    size_t cap; /* power of two */
    size_t count;
};

/* Fibonacci hashing: user OIDs are dense and sequential, so spread them. */
static size_t home_of(uint32_t oid, size_t cap) {
    return (size_t)(((uint64_t)oid * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

static size_t slot_of(const crw_typecache_t *tc, uint32_t oid) { return home_of(oid, tc->cap); }

static entry_t *find(const crw_typecache_t *tc, uint32_t oid) {
    for (size_t i = slot_of(tc, oid);; i = (i + 1) & (tc->cap - 1)) {
        if (tc->slots[i].oid == oid)
            return &tc->slots[i];
        if (tc->slots[i].oid == 0)
            return NULL;
    }
}

static void insert_slot(entry_t *slots, size_t cap, uint32_t oid, crw_typeinfo_t ti) {
    size_t i = home_of(oid, cap);
    while (slots[i].oid != 0 && slots[i].oid != oid)
        i = (i + 1) & (cap - 1);
    slots[i].oid = oid;
    slots[i].ti = ti;
}

static void put(crw_typecache_t *tc, uint32_t oid, crw_typeinfo_t ti) {
    entry_t *e = find(tc, oid);
    if (e) {
        e->ti = ti;
        return;
    }
    /* Keep the load factor at or below 1/2 so probe chains stay short. */
    if ((tc->count + 1) * 2 > tc->cap) {
        size_t ncap = tc->cap * 2;
        entry_t *ns = crw_calloc(ncap, sizeof *ns);
        for (size_t i = 0; i < tc->cap; i++)
            if (tc->slots[i].oid != 0)
                insert_slot(ns, ncap, tc->slots[i].oid, tc->slots[i].ti);
        free(tc->slots);
        tc->slots = ns;
        tc->cap = ncap;
    }
    insert_slot(tc->slots, tc->cap, oid, ti);
    tc->count++;
}

crw_typecache_t *crw_typecache_new(crw_type_lookup_fn lookup, void *opaque) {
    crw_typecache_t *tc = crw_calloc(1, sizeof *tc);
    tc->lookup = lookup;
    tc->opaque = opaque;
    tc->cap = INITIAL_CAP;
    tc->slots = crw_calloc(tc->cap, sizeof *tc->slots);
    return tc;
}

void crw_typecache_destroy(crw_typecache_t *tc) {
    if (!tc)
        return;
    free(tc->slots);
    free(tc);
}

static crw_typeinfo_t resolve(crw_typecache_t *tc, uint32_t oid, int depth);

/* Resolves one catalog row to a typeinfo (not cached here). */
static crw_typeinfo_t from_row(crw_typecache_t *tc, const crw_pgtype_row_t *row, int depth) {
    char delim = row->typdelim ? row->typdelim : ',';
    crw_typeinfo_t text = {CRW_TC_TEXT, false, delim};
    /* Domains first: a domain over an array also has typcategory 'A'. */
    if (row->typtype == 'd')
        return row->typbasetype ? resolve(tc, row->typbasetype, depth + 1) : text;
    if (row->typtype == 'e')
        return text;
    if (row->typcategory == 'A' && row->typelem != 0) {
        crw_typeinfo_t el = resolve(tc, row->typelem, depth + 1);
        /* An element that is itself an array (a domain over an array) is
         * printed by array_out as a quoted "{...}" string: keep it text. */
        crw_typeinfo_t arr = {el.is_array ? CRW_TC_TEXT : el.cls, true, el.delim ? el.delim : ','};
        return arr;
    }
    /* Composite, range, multirange, pseudo and unknown base types. */
    return text;
}

static crw_typeinfo_t resolve(crw_typecache_t *tc, uint32_t oid, int depth) {
    crw_typeinfo_t ti = {CRW_TC_TEXT, false, ','};
    /* 0 first: it is also the empty-slot marker of the hash map. */
    if (oid == 0 || crw_type_builtin(oid, &ti))
        return ti;
    entry_t *e = find(tc, oid);
    if (e)
        return e->ti;
    if (!tc->lookup)
        return ti;
    if (depth >= MAX_RESOLVE_DEPTH) {
        crw_warn("type %u: domain/array chain deeper than %d, rendering as text", oid, MAX_RESOLVE_DEPTH);
        return ti;
    }
    crw_pgtype_row_t row = {0};
    if (tc->lookup(tc->opaque, oid, &row) == 0)
        ti = from_row(tc, &row, depth);
    else
        crw_debug("type %u: catalog lookup failed, rendering as text", oid);
    /* Failures are cached too: a failing catalog must not be queried once per
     * value on the hot path.  crw_typecache_forget re-arms the lookup. */
    put(tc, oid, ti);
    return ti;
}

crw_typeinfo_t crw_typecache_get(crw_typecache_t *tc, uint32_t oid) {
    return resolve(tc, oid, 0);
}

/* Only this OID is dropped: a cached array of a changed domain keeps its old
 * resolution until it is forgotten too (pgoutput announces each type). */
void crw_typecache_forget(crw_typecache_t *tc, uint32_t oid) {
    if (!tc || oid == 0)
        return;
    entry_t *e = find(tc, oid);
    if (!e)
        return;
    /* Backward-shift deletion: linear probing stays tombstone-free, so a
     * long-running stream of Type messages cannot degrade the probes. */
    size_t mask = tc->cap - 1;
    size_t hole = (size_t)(e - tc->slots);
    size_t i = hole;
    for (;;) {
        i = (i + 1) & mask;
        if (tc->slots[i].oid == 0)
            break;
        size_t home = slot_of(tc, tc->slots[i].oid);
        /* Move slot i into the hole unless its home lies cyclically in (hole, i]. */
        bool stays = hole <= i ? (home > hole && home <= i) : (home > hole || home <= i);
        if (!stays) {
            tc->slots[hole] = tc->slots[i];
            hole = i;
        }
    }
    tc->slots[hole].oid = 0;
    tc->count--;
}
