/*
 * buf.c — growable byte buffer and the JSON string escaper.
 */
#include "core/buf.h"

#include "core/utf8.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"
#include "core/lsn.h"

void crw_buf_init(crw_buf_t *b) {
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void crw_buf_free(crw_buf_t *b) {
    free(b->data);
    crw_buf_init(b);
}

void crw_buf_grow(crw_buf_t *b, size_t extra) {
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        crw_log_oom(cap);
    b->data = p;
    b->cap = cap;
}

void crw_buf_vprintf(crw_buf_t *b, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    crw_buf_grow(b, 64);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    if (n >= 0 && (size_t)n >= b->cap - b->len) {
        crw_buf_grow(b, (size_t)n);
        n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
    }
    va_end(ap2);
    if (n > 0)
        b->len += (size_t)n;
}

void crw_buf_printf(crw_buf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    crw_buf_vprintf(b, fmt, ap);
    va_end(ap);
}


void crw_buf_put_json_str(crw_buf_t *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    /* Worst case every byte becomes \u00XX (6 bytes); reserve once. */
    crw_buf_grow(b, n * 6 + 2);
    char *o = b->data + b->len;
    *o++ = '"';
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *o++ = (char)c;
            i++;
            continue;
        }
        if (c < 0x80) {
            *o++ = '\\';
            switch (c) {
            case '"': *o++ = '"'; break;
            case '\\': *o++ = '\\'; break;
            case '\n': *o++ = 'n'; break;
            case '\r': *o++ = 'r'; break;
            case '\t': *o++ = 't'; break;
            case '\b': *o++ = 'b'; break;
            case '\f': *o++ = 'f'; break;
            default:
                *o++ = 'u';
                *o++ = '0';
                *o++ = '0';
                *o++ = hex[c >> 4];
                *o++ = hex[c & 15];
            }
            i++;
            continue;
        }
        size_t l = crw_utf8_seq_len(p + i, n - i);
        if (l == 0) {
            /* U+FFFD REPLACEMENT CHARACTER, 3 bytes: fits in the 6 reserved. */
            *o++ = (char)0xEF;
            *o++ = (char)0xBF;
            *o++ = (char)0xBD;
            i++;
            continue;
        }
        memcpy(o, p + i, l);
        o += l;
        i += l;
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
}

size_t crw_u64_format(char *out, uint64_t v) {
    char tmp[24];
    char *e = tmp + sizeof tmp, *q = e;
    do {
        *--q = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    size_t n = (size_t)(e - q);
    memcpy(out, q, n);
    out[n] = '\0';
    return n;
}

void crw_buf_put_u64(crw_buf_t *b, uint64_t v) {
    char tmp[24];
    crw_buf_put(b, tmp, crw_u64_format(tmp, v));
}

void crw_buf_put_i64(crw_buf_t *b, int64_t v) {
    if (v < 0) {
        crw_buf_putc(b, '-');
        crw_buf_put_u64(b, (uint64_t)0 - (uint64_t)v);
    } else
        crw_buf_put_u64(b, (uint64_t)v);
}

void crw_buf_put_lsn(crw_buf_t *b, uint64_t lsn) {
    crw_buf_grow(b, CRW_LSN_BUFSIZE);
    b->len += crw_lsn_format(b->data + b->len, lsn);
}
