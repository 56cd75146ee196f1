/*
 * types.h — what crwatch knows of a PostgreSQL type: the class that picks
 * its JSON rendering.  Built-in types are known by OID with no I/O; user
 * types (domains, enums, arrays of them) are resolved once through a
 * caller-supplied lookup (the catalog query lives in src/source/) and cached.
 */
#ifndef CRW_TYPES_H
#define CRW_TYPES_H

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    CRW_TC_TEXT = 0,     /* fallback: the PostgreSQL text form as a JSON string */
    CRW_TC_INT,          /* int2/4/8, oid, xid, xid8, cid: JSON number as sent */
    CRW_TC_FLOAT,        /* float4/8: JSON number; NaN/Infinity/-Infinity as strings */
    CRW_TC_NUMERIC,      /* numeric: JSON string, exactly as sent (no precision loss) */
    CRW_TC_BOOL,         /* t/f -> true/false */
    CRW_TC_JSON,         /* json: embedded, whitespace outside strings removed */
    CRW_TC_JSONB,        /* jsonb: embedded, compacted like json; numbers keep every digit */
    CRW_TC_BYTEA,        /* hex (\x...) or escape form -> base64 string */
    CRW_TC_DATE,         /* YYYY-MM-DD; BC as ISO-8601 expanded year; infinities as strings */
    CRW_TC_TIME,         /* HH:MM:SS[.ffffff] */
    CRW_TC_TIMETZ,       /* HH:MM:SS[.ffffff]+HH[:MM] -> offset as +HH:MM */
    CRW_TC_TIMESTAMP,    /* YYYY-MM-DDTHH:MM:SS[.ffffff] (no zone) */
    CRW_TC_TIMESTAMPTZ,  /* in UTC: YYYY-MM-DDTHH:MM:SS[.ffffff]Z */
    CRW_TC_INTERVAL,     /* ISO-8601 duration as IntervalStyle=iso_8601 prints it */
    CRW_TC_UUID,         /* string */
} crw_typeclass_t;

typedef struct crw_typeinfo {
    crw_typeclass_t cls; /* class of the value, or of the elements for an array */
    bool is_array;
    char delim;          /* array element delimiter (',' except box: ';') */
} crw_typeinfo_t;

/* Built-in type: fills *ti and returns true when oid is a built-in crwatch knows. */
bool crw_type_builtin(uint32_t oid, crw_typeinfo_t *ti);

/* What the catalog says of a user type (pg_type columns). */
typedef struct crw_pgtype_row {
    uint32_t oid;
    char typtype;         /* b base, d domain, e enum, c composite, r range, m multirange, p pseudo */
    uint32_t typbasetype; /* domains */
    uint32_t typelem;     /* arrays (typcategory 'A') */
    char typcategory;
    char typdelim;
} crw_pgtype_row_t;

/* Looks up one pg_type row; returns 0 and fills *row, or -1 when unknown/failed. */
typedef int (*crw_type_lookup_fn)(void *opaque, uint32_t oid, crw_pgtype_row_t *row);

typedef struct crw_typecache crw_typecache_t;

/* lookup may be NULL (then every non-built-in type renders as text). */
crw_typecache_t *crw_typecache_new(crw_type_lookup_fn lookup, void *opaque);
void crw_typecache_destroy(crw_typecache_t *tc);

/*
 * Resolves oid to a typeinfo: built-ins directly; domains to their base
 * type (recursively); enums to text; arrays to their (resolved) element
 * class; anything else to text.  Results are cached.  Never fails: an
 * unresolvable type is text.
 */
crw_typeinfo_t crw_typecache_get(crw_typecache_t *tc, uint32_t oid);

/* Forgets a cached user type (a Type message announced a change). */
void crw_typecache_forget(crw_typecache_t *tc, uint32_t oid);

#endif
