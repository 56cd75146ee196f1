/*
 * copytext.c — COPY text format rows into text tuples (see copytext.h).
 */
#include "decode/copytext.h"

#include <stdint.h>
#include <string.h>

static int octval(char c) { return c >= '0' && c <= '7' ? c - '0' : -1; }

/* Decodes the escaped field f[0..n) onto the end of out. */
static void unescape(const char *f, size_t n, crw_buf_t *out) {
    crw_buf_grow(out, n); /* never longer than its escaped form */
    char *d = out->data + out->len;
    for (size_t i = 0; i < n; i++) {
        char c = f[i];
        if (c != '\\' || i + 1 == n) {
            *d++ = c;
            continue;
        }
        c = f[++i];
        switch (c) {
        case 'b': *d++ = '\b'; break;
        case 'f': *d++ = '\f'; break;
        case 'n': *d++ = '\n'; break;
        case 'r': *d++ = '\r'; break;
        case 't': *d++ = '\t'; break;
        case 'v': *d++ = '\v'; break;
        case 'x':
            if (i + 1 < n && crw_hexval(f[i + 1]) >= 0) {
                int v = crw_hexval(f[++i]);
                if (i + 1 < n && crw_hexval(f[i + 1]) >= 0)
                    v = v * 16 + crw_hexval(f[++i]);
                *d++ = (char)v;
            } else
                *d++ = 'x';
            break;
        default:
            if (octval(c) >= 0) {
                int v = octval(c);
                for (int k = 0; k < 2 && i + 1 < n && octval(f[i + 1]) >= 0; k++)
                    v = v * 8 + octval(f[++i]);
                *d++ = (char)(v & 0xff);
            } else
                *d++ = c; /* \\ and any other character: itself */
        }
    }
    out->len = (size_t)(d - out->data);
    out->data[out->len] = '\0';
}

int crw_copytext_row(const char *line, size_t len, int ncols, crw_pgo_col_t *cols, crw_buf_t *scratch) {
    if (len && line[len - 1] == '\n')
        len--;
    crw_buf_reset(scratch);
    if (ncols == 0)
        return len == 0 ? 0 : -1;
    size_t pos = 0;
    for (int i = 0; i < ncols; i++) {
        if (pos > len)
            return -1; /* fewer columns than expected */
        const char *f = line + pos;
        size_t rest = len - pos;
        const char *tab = memchr(f, '\t', rest);
        size_t flen = tab ? (size_t)(tab - f) : rest;
        if (!tab && i + 1 < ncols)
            return -1;
        if (flen == 2 && f[0] == '\\' && f[1] == 'N') {
            cols[i] = (crw_pgo_col_t){CRW_PGO_COL_NULL, 0, NULL};
        } else if (!memchr(f, '\\', flen)) {
            cols[i] = (crw_pgo_col_t){CRW_PGO_COL_TEXT, (uint32_t)flen, f};
        } else {
            size_t off = scratch->len;
            unescape(f, flen, scratch);
            /* data is fixed up below: scratch may move while it grows */
            cols[i] = (crw_pgo_col_t){CRW_PGO_COL_BINARY, (uint32_t)(scratch->len - off), (const char *)(uintptr_t)off};
        }
        pos += flen + 1;
    }
    if (pos <= len)
        return -1; /* more columns than expected */
    for (int i = 0; i < ncols; i++)
        if (cols[i].kind == CRW_PGO_COL_BINARY) {
            cols[i].kind = CRW_PGO_COL_TEXT;
            cols[i].data = scratch->data + (uintptr_t)cols[i].data;
        }
    return 0;
}
