/*
 * test_types.c — built-in type table and the user-type cache (src/decode/types.c).
 *
 * The catalog is faked by a small pg_type table behind the lookup callback,
 * which also counts calls so the tests can see what was cached.
 */
#include <criterion/criterion.h>

#include "decode/types.h"

/* ---- built-ins -------------------------------------------------------- */

typedef struct builtin_case {
    uint32_t oid, array_oid;
    crw_typeclass_t cls;
    char delim;
} builtin_case_t;

/* OIDs as a live PostgreSQL 15.18 catalog reports them
 * (select oid, typarray, typdelim from pg_type). */
static const builtin_case_t builtins[] = {
    {16, 1000, CRW_TC_BOOL, ','},         {17, 1001, CRW_TC_BYTEA, ','},      {18, 1002, CRW_TC_TEXT, ','},
    {19, 1003, CRW_TC_TEXT, ','},         {20, 1016, CRW_TC_INT, ','},        {21, 1005, CRW_TC_INT, ','},
    {23, 1007, CRW_TC_INT, ','},          {25, 1009, CRW_TC_TEXT, ','},       {26, 1028, CRW_TC_INT, ','},
    {28, 1011, CRW_TC_INT, ','},          {29, 1012, CRW_TC_INT, ','},        {114, 199, CRW_TC_JSON, ','},
    {142, 143, CRW_TC_TEXT, ','},         {603, 1020, CRW_TC_TEXT, ';'},      {700, 1021, CRW_TC_FLOAT, ','},
    {701, 1022, CRW_TC_FLOAT, ','},       {790, 791, CRW_TC_TEXT, ','},       {1042, 1014, CRW_TC_TEXT, ','},
    {1043, 1015, CRW_TC_TEXT, ','},       {1082, 1182, CRW_TC_DATE, ','},     {1083, 1183, CRW_TC_TIME, ','},
    {1114, 1115, CRW_TC_TIMESTAMP, ','},  {1184, 1185, CRW_TC_TIMESTAMPTZ, ','}, {1186, 1187, CRW_TC_INTERVAL, ','},
    {1266, 1270, CRW_TC_TIMETZ, ','},     {1560, 1561, CRW_TC_TEXT, ','},     {1562, 1563, CRW_TC_TEXT, ','},
    {1700, 1231, CRW_TC_NUMERIC, ','},    {2950, 2951, CRW_TC_UUID, ','},     {3802, 3807, CRW_TC_JSONB, ','},
    {5069, 271, CRW_TC_INT, ','},
};

Test(types_builtin, every_scalar_and_array_oid) {
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++) {
        const builtin_case_t *b = &builtins[i];
        crw_typeinfo_t ti;
        cr_assert(crw_type_builtin(b->oid, &ti), "oid %u", b->oid);
        cr_assert_eq(ti.cls, b->cls, "oid %u", b->oid);
        cr_assert_not(ti.is_array, "oid %u", b->oid);
        cr_assert(crw_type_builtin(b->array_oid, &ti), "array oid %u", b->array_oid);
        cr_assert_eq(ti.cls, b->cls, "array oid %u", b->array_oid);
        cr_assert(ti.is_array, "array oid %u", b->array_oid);
        cr_assert_eq(ti.delim, b->delim, "array oid %u", b->array_oid);
    }
}

Test(types_builtin, spot_checks) {
    crw_typeinfo_t ti;
    cr_assert(crw_type_builtin(1007, &ti));
    cr_assert(ti.is_array && ti.cls == CRW_TC_INT && ti.delim == ',');
    cr_assert(crw_type_builtin(1020, &ti)); /* _box */
    cr_assert(ti.is_array && ti.cls == CRW_TC_TEXT && ti.delim == ';');
    cr_assert(crw_type_builtin(3807, &ti)); /* _jsonb */
    cr_assert(ti.is_array && ti.cls == CRW_TC_JSONB);
    cr_assert(crw_type_builtin(790, &ti)); /* money prints "$12.50": text */
    cr_assert(!ti.is_array && ti.cls == CRW_TC_TEXT);
}

Test(types_builtin, unknown_oids) {
    crw_typeinfo_t ti = {CRW_TC_INT, true, 'x'};
    cr_assert_not(crw_type_builtin(0, &ti));
    cr_assert_not(crw_type_builtin(600, &ti)); /* point: not in the table */
    cr_assert_not(crw_type_builtin(16384, &ti));
    cr_assert_not(crw_type_builtin(UINT32_MAX, &ti));
    /* *ti is left alone when the type is unknown. */
    cr_assert(ti.cls == CRW_TC_INT && ti.is_array && ti.delim == 'x');
}

/* ---- fake catalog ----------------------------------------------------- */

#define MAX_ROWS 4096

typedef struct fake_catalog {
    crw_pgtype_row_t rows[MAX_ROWS];
    int nrows;
    int calls;
    int calls_for[MAX_ROWS]; /* by row index */
} fake_catalog_t;

static fake_catalog_t cat;

static void add_row(uint32_t oid, char typtype, uint32_t base, uint32_t elem, char category, char delim) {
    cr_assert_lt(cat.nrows, MAX_ROWS);
    cat.rows[cat.nrows++] = (crw_pgtype_row_t){oid, typtype, base, elem, category, delim};
}

static crw_pgtype_row_t *row_of(uint32_t oid) {
    for (int i = 0; i < cat.nrows; i++)
        if (cat.rows[i].oid == oid)
            return &cat.rows[i];
    return NULL;
}

static int fake_lookup(void *opaque, uint32_t oid, crw_pgtype_row_t *row) {
    cr_assert_eq(opaque, &cat);
    cat.calls++;
    crw_pgtype_row_t *r = row_of(oid);
    if (!r)
        return -1;
    cat.calls_for[r - cat.rows]++;
    *row = *r;
    return 0;
}

static int calls_for(uint32_t oid) {
    crw_pgtype_row_t *r = row_of(oid);
    return r ? cat.calls_for[r - cat.rows] : 0;
}

/* User OIDs as a fresh database hands them out. */
enum {
    D_POSINT = 16385,   /* domain over int4 */
    D_SMALLPOS = 16386, /* domain over D_POSINT */
    D_TINYPOS = 16387,  /* domain over D_SMALLPOS */
    E_MOOD = 16390,     /* enum */
    A_MOOD = 16389,     /* _mood */
    A_TINYPOS = 16388,  /* _tinypos: array of a domain */
    C_PAIR = 16392,     /* composite */
    R_SPAN = 16395,     /* range */
    D_CYC_A = 16400,    /* domains that point at each other */
    D_CYC_B = 16401,
    D_SELF = 16402,
    D_INTARR = 16403,   /* domain over int4[] */
    A_INTARR = 16404,   /* array of that domain */
    B_POINTLIKE = 16405, /* a base type with its own delimiter */
    A_POINTLIKE = 16406,
    D_TSTZ = 16407,
    A_D_TSTZ = 16408,
    A_DANGLING = 16409, /* array whose element the catalog does not know */
};

static void setup_catalog(void) {
    memset(&cat, 0, sizeof cat);
    add_row(D_POSINT, 'd', 23, 0, 'N', ',');
    add_row(D_SMALLPOS, 'd', D_POSINT, 0, 'N', ',');
    add_row(D_TINYPOS, 'd', D_SMALLPOS, 0, 'N', ',');
    add_row(A_TINYPOS, 'b', 0, D_TINYPOS, 'A', ',');
    add_row(E_MOOD, 'e', 0, 0, 'E', ',');
    add_row(A_MOOD, 'b', 0, E_MOOD, 'A', ',');
    add_row(C_PAIR, 'c', 0, 0, 'C', ',');
    add_row(R_SPAN, 'r', 0, 0, 'R', ',');
    add_row(D_CYC_A, 'd', D_CYC_B, 0, 'N', ',');
    add_row(D_CYC_B, 'd', D_CYC_A, 0, 'N', ',');
    add_row(D_SELF, 'd', D_SELF, 0, 'N', ',');
    add_row(D_INTARR, 'd', 1007, 0, 'A', ',');
    add_row(A_INTARR, 'b', 0, D_INTARR, 'A', ',');
    add_row(B_POINTLIKE, 'b', 0, 0, 'G', ';');
    add_row(A_POINTLIKE, 'b', 0, B_POINTLIKE, 'A', ',');
    add_row(D_TSTZ, 'd', 1184, 0, 'D', ',');
    add_row(A_D_TSTZ, 'b', 0, D_TSTZ, 'A', ',');
    add_row(A_DANGLING, 'b', 0, 99999, 'A', ',');
}

TestSuite(typecache, .init = setup_catalog);

/* A macro, so a failure names the line of the call. */
#define assert_ti(expr, cls_, arr_, delim_)                                                                            \
    do {                                                                                                               \
        crw_typeinfo_t ti_ = (expr);                                                                                   \
        cr_assert(ti_.cls == (cls_) && ti_.is_array == (arr_) && ti_.delim == (delim_),                                \
                  "%s: got cls=%d is_array=%d delim=%d", #expr, (int)ti_.cls, (int)ti_.is_array, (int)ti_.delim);      \
    } while (0)

Test(typecache, builtins_need_no_lookup) {
    crw_typecache_t *tc = crw_typecache_new(fake_lookup, &cat);
    assert_ti(crw_typecache_get(tc, 1184), CRW_TC_TIMESTAMPTZ, false, ',');
    assert_ti(crw_typecache_get(tc, 3807), CRW_TC_JSONB, true, ',');
    cr_assert_eq(cat.calls, 0);
    crw_typecache_destroy(tc);
}

Test(typecache, domain_over_domain_over_int4) {
    crw_typecache_t *tc = crw_typecache_new(fake_lookup, &cat);
    assert_ti(crw_typecache_get(tc, D_TINYPOS), CRW_TC_INT, false, ',');
    cr_assert_eq(cat.calls, 3);
    /* Cached: the whole chain, and each link on its own. */
    assert_ti(crw_typecache_get(tc, D_TINYPOS), CRW_TC_INT, false, ',');
    assert_ti(crw_typecache_get(tc, D_SMALLPOS), CRW_TC_INT, false, ',');
    assert_ti(crw_typecache_get(tc, D_POSINT), CRW_TC_INT, false, ',');
    cr_assert_eq(cat.calls, 3);
    crw_typecache_destroy(tc);
}

Test(typecache, enum_and_array_of_enum) {
    crw_typecache_t *tc = crw_typecache_new(fake_lookup, &cat);
    assert_ti(crw_typecache_get(tc, E_MOOD), CRW_TC_TEXT, false, ',');
    assert_ti(crw_typecache_get(tc, A_MOOD), CRW_TC_TEXT, true, ',');
    crw_typecache_destroy(tc);
}

Test(typecache, array_of_domain) {
    crw_typecache_t *tc = crw_typecache_new(fake_lookup, &cat);
    assert_ti(crw_typecache_get(tc, A_TINYPOS), CRW_TC_INT, true, ',');
    assert_ti(crw_typecache_get(tc, A_D_TSTZ), CRW_TC_TIMESTAMPTZ, true, ',');
    crw_typecache_destroy(tc);
}

Test(typecache, array_takes_the_element_delimiter) {
    crw_typecache_t *tc = crw_typecache_new(fake_lookup, &cat);
    assert_ti(crw_typecache_get(tc, A_POINTLIKE), CRW_TC_TEXT, true, ';');
    crw_typecache_destroy(tc);
}

Test(typecache, domain_over_array) {
    crw_typecache_t *tc = crw_typecache_new(fake_lookup, &cat);
    assert_ti(crw_typecache_get(tc, D_INTARR), CRW_TC_INT, true, ',');
    /* Its array prints elements as quoted "{1,2}": those stay text. */
    assert_ti(crw_typecache_get(tc, A_INTARR), CRW_TC_TEXT, true, ',');
    crw_typecache_destroy(tc);
}

Test(typecache, composite_range_unknown_are_text) {
    crw_typecache_t *tc = crw_typecache_new(fake_lookup, &cat);
    assert_ti(crw_typecache_get(tc, C_PAIR), CRW_TC_TEXT, false, ',');
    assert_ti(crw_typecache_get(tc, R_SPAN), CRW_TC_TEXT, false, ',');
    assert_ti(crw_typecache_get(tc, 77777), CRW_TC_TEXT, false, ',');
    assert_ti(crw_typecache_get(tc, A_DANGLING), CRW_TC_TEXT, true, ',');
    assert_ti(crw_typecache_get(tc, 0), CRW_TC_TEXT, false, ',');
    crw_typecache_destroy(tc);
}

Test(typecache, failed_lookup_is_cached) {
    crw_typecache_t *tc = crw_typecache_new(fake_lookup, &cat);
    for (int i = 0; i < 5; i++)
        assert_ti(crw_typecache_get(tc, 77777), CRW_TC_TEXT, false, ',');
    cr_assert_eq(cat.calls, 1);
    crw_typecache_destroy(tc);
}

Test(typecache, cycle_guard) {
    crw_typecache_t *tc = crw_typecache_new(fake_lookup, &cat);
    assert_ti(crw_typecache_get(tc, D_CYC_A), CRW_TC_TEXT, false, ',');
    assert_ti(crw_typecache_get(tc, D_CYC_B), CRW_TC_TEXT, false, ',');
    assert_ti(crw_typecache_get(tc, D_SELF), CRW_TC_TEXT, false, ',');
    /* Bounded: the chase stops at the depth limit, not at a stack overflow. */
    cr_assert_lt(cat.calls, 40);
    int before = cat.calls;
    crw_typecache_get(tc, D_CYC_A);
    crw_typecache_get(tc, D_SELF);
    cr_assert_eq(cat.calls, before);
    crw_typecache_destroy(tc);
}

Test(typecache, forget_rereads_the_catalog) {
    crw_typecache_t *tc = crw_typecache_new(fake_lookup, &cat);
    assert_ti(crw_typecache_get(tc, D_POSINT), CRW_TC_INT, false, ',');
    cr_assert_eq(calls_for(D_POSINT), 1);
    /* ALTER DOMAIN cannot change the base type, but a dropped and recreated
     * OID-reusing type can: model it by editing the catalog row. */
    row_of(D_POSINT)->typbasetype = 1700;
    assert_ti(crw_typecache_get(tc, D_POSINT), CRW_TC_INT, false, ',');
    cr_assert_eq(calls_for(D_POSINT), 1);
    crw_typecache_forget(tc, D_POSINT);
    assert_ti(crw_typecache_get(tc, D_POSINT), CRW_TC_NUMERIC, false, ',');
    cr_assert_eq(calls_for(D_POSINT), 2);
    /* Forgetting an unknown or built-in OID is harmless. */
    crw_typecache_forget(tc, 424242);
    crw_typecache_forget(tc, 23);
    crw_typecache_forget(tc, 0);
    crw_typecache_forget(NULL, D_POSINT);
    assert_ti(crw_typecache_get(tc, D_POSINT), CRW_TC_NUMERIC, false, ',');
    cr_assert_eq(calls_for(D_POSINT), 2);
    crw_typecache_destroy(tc);
}

Test(typecache, many_types_grow_and_forget) {
    /* Enough domains to force several rehashes, then forget every other one:
     * the survivors must still be found (backward-shift deletion keeps probe
     * chains intact) and the forgotten must be looked up again. */
    memset(&cat, 0, sizeof cat);
    const uint32_t first = 20000;
    const int n = 3000;
    for (int i = 0; i < n; i++)
        add_row(first + (uint32_t)i, 'd', (i % 2) ? 20 : 1082, 0, 'N', ',');
    crw_typecache_t *tc = crw_typecache_new(fake_lookup, &cat);
    for (int i = 0; i < n; i++)
        crw_typecache_get(tc, first + (uint32_t)i);
    cr_assert_eq(cat.calls, n);
    for (int i = 0; i < n; i += 2)
        crw_typecache_forget(tc, first + (uint32_t)i);
    for (int i = 1; i < n; i += 2)
        assert_ti(crw_typecache_get(tc, first + (uint32_t)i), CRW_TC_INT, false, ',');
    cr_assert_eq(cat.calls, n);
    for (int i = 0; i < n; i += 2)
        assert_ti(crw_typecache_get(tc, first + (uint32_t)i), CRW_TC_DATE, false, ',');
    cr_assert_eq(cat.calls, n + n / 2);
    crw_typecache_destroy(tc);
}

Test(typecache, null_lookup_means_text) {
    crw_typecache_t *tc = crw_typecache_new(NULL, NULL);
    assert_ti(crw_typecache_get(tc, D_POSINT), CRW_TC_TEXT, false, ',');
    assert_ti(crw_typecache_get(tc, 23), CRW_TC_INT, false, ',');
    crw_typecache_destroy(tc);
    crw_typecache_destroy(NULL);
}
