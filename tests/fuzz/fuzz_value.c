/*
 * fuzz_value.c — the typed-value renderers: crwatch's own (src/map/value.c)
 * and Debezium's (src/map/debezium_value.c), the COPY text row parser
 * (src/decode/copytext.c) that feeds them in snapshots and polling, and the
 * type cache (src/decode/types.c) that picks the renderer.
 *
 * Input: byte 0 picks a type (tys[] below: every built-in class, its
 * array, and the OIDs Debezium treats by themselves), byte 1 its typmod,
 * byte 2 the mode, the rest is the text:
 *   mode & 0x80   the text is a script for the type cache (see typecache_script)
 *   mode & 0x01   the text is one COPY row of 1 + (mode >> 1 & 7) columns, each rendered
 *   otherwise     the text is one column's value, rendered
 *
 * Invariants, beyond ASan/UBSan: a successful rendering is one valid JSON
 * value in valid UTF-8 (fuzz_common.h's own checks and json-c strict); a
 * failed one leaves the buffer as it was, and the text fallback is JSON;
 * COPY rows re-escaped parse back to the same values; the type cache
 * agrees with the catalog it was given, through lookups, forgets and growth.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "decode/copytext.h"
#include "decode/pgoutput.h"
#include "decode/types.h"
#include "fuzz_common.h"
#include "map/debezium_value.h"
#include "map/value.h"

static const uint32_t tys[] = {
    16,   1000, 17,   1001, 18,   1002, 19,   1003, 20,   1016, 21,   1005, 23,   1007, 25,   1009, 26,   1028,
    28,   1011, 29,   1012, 114,  199,  142,  143,  603,  1020, 700,  1021, 701,  1022, 790,  791,  1042, 1014,
    1043, 1015, 1082, 1182, 1083, 1183, 1114, 1115, 1184, 1185, 1186, 1187, 1266, 1270, 1560, 1561, 1562, 1563,
    1700, 1231, 2950, 2951, 3802, 3807, 5069, 271,  600,  1017, 0,    16385,
};
static const int32_t typmods[] = {-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 64};

/* Builds the renderers' view of a column: the class of a built-in, text otherwise. */
static void column_of(uint8_t ty, uint8_t tm, crw_dbz_col_t *col) {
    col->typoid = tys[ty % (sizeof tys / sizeof tys[0])];
    col->typmod = typmods[tm % (sizeof typmods / sizeof typmods[0])];
    if (!crw_type_builtin(col->typoid, &col->ti))
        col->ti = (crw_typeinfo_t){CRW_TC_TEXT, false, ','};
}

/* A failed rendering must leave out exactly as it was: the prefix and nothing after it. */
static void check_restored(const char *what, const crw_buf_t *out, const char *prefix, const char *text, size_t n) {
    size_t pl = strlen(prefix);
    FZ_ASSERT(out->len == pl && !memcmp(out->data, prefix, pl) && out->data[pl] == '\0', what, text, n);
}

static void render_one(const crw_dbz_col_t *col, const char *text, size_t n) {
    static crw_buf_t out;
    static const char prefix[] = "[\"prefix\",";
    char what[96];

    /* crwatch's own rendering, or its text fallback (cloudevents.c's order) */
    crw_buf_reset(&out);
    crw_buf_puts(&out, prefix);
    snprintf(what, sizeof what, "value type %u class %d%s", col->typoid, col->ti.cls, col->ti.is_array ? "[]" : "");
    if (crw_value_render(&out, &col->ti, text, n) < 0) {
        check_restored("value: a failed rendering changed the buffer", &out, prefix, text, n);
        crw_value_render_text(&out, text, n);
    }
    fz_check_json(what, out.data + strlen(prefix), out.len - strlen(prefix));

    /* Debezium's, or its text fallback (debezium.c's order) */
    crw_buf_reset(&out);
    crw_buf_puts(&out, prefix);
    snprintf(what, sizeof what, "debezium type %u typmod %d class %d%s", col->typoid, col->typmod, col->ti.cls,
             col->ti.is_array ? "[]" : "");
    if (crw_debezium_render_value(&out, col, text, n) < 0) {
        check_restored("debezium: a failed rendering changed the buffer", &out, prefix, text, n);
        crw_value_render_text(&out, text, n);
    }
    fz_check_json(what, out.data + strlen(prefix), out.len - strlen(prefix));
}

/* ---- COPY rows -------------------------------------------------------------------------- */

/* CopyAttributeOutText's escaping: what COPY TO writes for one value. */
static void copy_escape(crw_buf_t *b, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        switch (c) {
        case '\\': crw_buf_puts(b, "\\\\"); break;
        case '\t': crw_buf_puts(b, "\\t"); break;
        case '\n': crw_buf_puts(b, "\\n"); break;
        case '\r': crw_buf_puts(b, "\\r"); break;
        default: crw_buf_putc(b, c);
        }
    }
}

#define MAX_COLS 8

static void copy_row(uint8_t ty, uint8_t tm, int ncols, const char *line, size_t n) {
    static crw_buf_t scratch, scratch2, again;
    crw_pgo_col_t cols[MAX_COLS], cols2[MAX_COLS];
    if (crw_copytext_row(line, n, ncols, cols, &scratch) < 0)
        return;
    crw_buf_reset(&again);
    for (int i = 0; i < ncols; i++) {
        const crw_pgo_col_t *c = &cols[i];
        if (i)
            crw_buf_putc(&again, '\t');
        if (c->kind == CRW_PGO_COL_NULL) {
            FZ_ASSERT(!c->data && c->len == 0, "copytext: a NULL with data", line, n);
            crw_buf_puts(&again, "\\N");
            continue;
        }
        FZ_ASSERT(c->kind == CRW_PGO_COL_TEXT, "copytext: a column neither text nor NULL", line, n);
        bool in_line = c->data >= line && c->data <= line + n && c->len <= (size_t)(line + n - c->data);
        bool in_scratch = scratch.data && c->data >= scratch.data && c->data <= scratch.data + scratch.len &&
                          c->len <= (size_t)(scratch.data + scratch.len - c->data);
        FZ_ASSERT(in_line || in_scratch, "copytext: a value outside the line and the scratch", line, n);
        copy_escape(&again, c->data, c->len);
    }
    /* The values, escaped again, are a row of the same values. */
    FZ_ASSERT(crw_copytext_row(again.data ? again.data : "", again.len, ncols, cols2, &scratch2) == 0,
              "copytext: re-escaped values do not parse", again.data, again.len);
    for (int i = 0; i < ncols; i++)
        FZ_ASSERT(cols[i].kind == cols2[i].kind && cols[i].len == cols2[i].len &&
                      (cols[i].len == 0 || !memcmp(cols[i].data, cols2[i].data, cols[i].len)),
                  "copytext: re-escaped values parse into other values", again.data, again.len);
    for (int i = 0; i < ncols; i++) {
        if (cols[i].kind == CRW_PGO_COL_NULL)
            continue;
        crw_dbz_col_t col;
        column_of((uint8_t)(ty + i), tm, &col);
        /* An exactly sized copy, so ASan sees a read past the value's end. */
        char *v = fz_strndup(cols[i].data, cols[i].len);
        render_one(&col, v, cols[i].len);
        free(v);
    }
}

/* ---- the type cache against a model ------------------------------------------------------- */

/*
 * A made-up catalog of NUSER user types, OIDs USER0.., whose rows the
 * script's first NUSER bytes choose: a domain or an array over a built-in
 * or an earlier user type (at most MAXCHAIN deep, so the cache's depth
 * bound never cuts a chain), an enum, a composite, or a type whose lookup
 * fails.  The rest of the script gets and forgets OIDs; every get must
 * agree with the uncached resolution.
 */
#define NUSER 160
#define USER0 16384u
#define MAXCHAIN 6

typedef struct {
    crw_pgtype_row_t rows[NUSER];
    bool fails[NUSER];
    int lookups;
} catalog_t;

static uint32_t builtin_of(uint8_t b) {
    uint32_t oid = tys[b % (sizeof tys / sizeof tys[0])];
    return oid >= USER0 ? 25 : oid;
}

static int lookup(void *opaque, uint32_t oid, crw_pgtype_row_t *row) {
    catalog_t *c = opaque;
    c->lookups++;
    if (oid < USER0 || oid >= USER0 + NUSER || c->fails[oid - USER0])
        return -1;
    *row = c->rows[oid - USER0];
    return 0;
}

/* types.c's resolution, without a cache. */
static crw_typeinfo_t model(const catalog_t *c, uint32_t oid) {
    crw_typeinfo_t ti = {CRW_TC_TEXT, false, ','};
    if (oid == 0 || crw_type_builtin(oid, &ti))
        return ti;
    if (oid < USER0 || oid >= USER0 + NUSER || c->fails[oid - USER0])
        return ti;
    const crw_pgtype_row_t *r = &c->rows[oid - USER0];
    char delim = r->typdelim ? r->typdelim : ',';
    crw_typeinfo_t text = {CRW_TC_TEXT, false, delim};
    if (r->typtype == 'd')
        return r->typbasetype ? model(c, r->typbasetype) : text;
    if (r->typtype == 'e')
        return text;
    if (r->typcategory == 'A' && r->typelem) {
        crw_typeinfo_t el = model(c, r->typelem);
        return (crw_typeinfo_t){el.is_array ? CRW_TC_TEXT : el.cls, true, el.delim ? el.delim : ','};
    }
    return text;
}

static void typecache_script(const uint8_t *s, size_t n) {
    static catalog_t cat;
    memset(&cat, 0, sizeof cat);
    int depth[NUSER];
    for (uint32_t k = 0; k < NUSER; k++) {
        uint8_t b = k < n ? s[k] : 0, b2 = k + NUSER < n ? s[k + NUSER] : 0;
        crw_pgtype_row_t *r = &cat.rows[k];
        r->oid = USER0 + k;
        r->typdelim = (b2 & 3) == 3 ? ';' : (b2 & 3) == 2 ? 0 : ',';
        /* what it points at: a built-in, or an earlier user type not too deep */
        uint32_t target = builtin_of(b2 >> 2);
        int d = 0;
        if ((b & 8) && k > 0) {
            uint32_t j = (uint32_t)(b2 >> 2) % k;
            if (depth[j] < MAXCHAIN) {
                target = USER0 + j;
                d = depth[j] + 1;
            }
        }
        depth[k] = 0;
        switch (b & 7) {
        case 0: r->typtype = 'd', r->typbasetype = target, depth[k] = d; break;
        case 1: r->typtype = 'b', r->typcategory = 'A', r->typelem = target, depth[k] = d; break;
        case 2: r->typtype = 'e', r->typcategory = 'E'; break;
        case 3: r->typtype = 'c', r->typcategory = 'C'; break;
        case 4: cat.fails[k] = true; break;
        case 5: r->typtype = 'd', r->typbasetype = 0; break;
        case 6: r->typtype = 'r', r->typcategory = 'A', r->typelem = 0; break;
        default: r->typtype = 'b', r->typcategory = 'U'; break;
        }
    }
    crw_typecache_t *tc = crw_typecache_new(lookup, &cat);
    for (size_t i = 2 * NUSER; i + 1 < n; i += 2) {
        /* s[i + 1]: 0x40 a built-in, 0x80 an OID the catalog lacks, else a user type; 0x20 forget it */
        uint32_t oid = s[i + 1] & 0x40   ? builtin_of(s[i])
                       : s[i + 1] & 0x80 ? USER0 + NUSER + s[i]
                                         : USER0 + ((uint32_t)s[i] | (uint32_t)(s[i + 1] & 1) << 8) % NUSER;
        if (s[i + 1] & 0x20) {
            crw_typecache_forget(tc, oid);
            continue;
        }
        crw_typeinfo_t got = crw_typecache_get(tc, oid), want = model(&cat, oid);
        FZ_ASSERT(got.cls == want.cls && got.is_array == want.is_array && got.delim == want.delim,
                  "typecache: a resolution differs from the catalog's", s, n);
        /* A second get is answered from the cache: no lookup. */
        int before = cat.lookups;
        got = crw_typecache_get(tc, oid);
        FZ_ASSERT(cat.lookups == before && got.cls == want.cls, "typecache: a cached type was looked up again", s,
                  n);
    }
    crw_typecache_destroy(tc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3)
        return 0;
    uint8_t ty = data[0], tm = data[1], mode = data[2];
    const char *text = (const char *)data + 3;
    size_t n = size - 3;
    if (mode & 0x80)
        typecache_script(data + 3, n);
    else if (mode & 1)
        copy_row(ty, tm, 1 + (mode >> 1 & 7), text, n);
    else {
        crw_dbz_col_t col;
        column_of(ty, tm, &col);
        render_one(&col, text, n);
    }
    return 0;
}
