/*
 * buf.c — growable byte buffer and the JSON string escaper.
 */
#include "core/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

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
    /* Doubling keeps appends amortized; one put larger than that gets what
     * it needs, not up to twice as much. */
    size_t cap = b->cap ? b->cap * 2 : 256;
    if (cap < need)
        cap = need;
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


/*
 * Makes room at o (inside b) for k bytes of output plus, at one byte each,
 * the rest bytes of input after them and the closing quote; returns o in
 * the (possibly moved) buffer.
 */
static char *json_str_room(crw_buf_t *b, char *o, size_t k, size_t rest) {
    size_t off = (size_t)(o - b->data);
    if (off + k + rest + 2 > b->cap)
        crw_buf_grow(b, off - b->len + k + rest + 1);
    return b->data + off;
}

/* How much of a value crw_buf_put_json_str_discard escapes between two hand-backs of its pages. */
#define DISCARD_STEP ((size_t)1 << 20)

/* Hands the whole pages of [*from, to) back to the system (they read as zeros after); *from moves to the last. */
static void discard_pages(const unsigned char **from, const unsigned char *to) {
    static uintptr_t page;
    if (!page)
        page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)*from + page - 1) & ~(page - 1), z = (uintptr_t)to & ~(page - 1);
    if (z <= a)
        return;
    madvise((void *)a, z - a, MADV_DONTNEED); /* a failure only keeps the memory */
    *from = (const unsigned char *)z;
}

/*
 * The escaper.  discard: every DISCARD_STEP bytes, the pages of s already
 * escaped go back to the system.  Inlined into both callers, so the plain
 * one has no trace of it.
 */
static inline __attribute__((always_inline)) void put_json_str(crw_buf_t *b, const char *s, size_t n, bool discard) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *kept = p;
    /* the plain runs stop at lim, where the pages behind are handed back */
    size_t lim = discard && n > DISCARD_STEP ? DISCARD_STEP : n;
    /* Room for the text as it is: most text needs no escape, and the worst
     * case (six bytes for one) reserved up front would ask for six times a
     * large value.  An escape or a replacement makes more room when the rest
     * might not fit. */
    crw_buf_grow(b, n + 2);
    char *o = b->data + b->len;
    *o++ = '"';
    size_t i = 0;
    while (i < n) {
        /* Plain text eight bytes at a time, then one byte or sequence. */
        uint64_t w;
        while (i + 8 <= lim && (memcpy(&w, p + i, 8), crw_buf_plain8(w))) {
            memcpy(o, &w, 8);
            o += 8;
            i += 8;
        }
        if (i == n)
            break;
        if (discard && i + 8 > lim && lim < n) {
            discard_pages(&kept, p + i);
            lim = n - lim > DISCARD_STEP ? lim + DISCARD_STEP : n;
            continue;
        }
        unsigned char c = p[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *o++ = (char)c;
            i++;
            continue;
        }
        if (c < 0x80) {
            o = json_str_room(b, o, 6, n - i - 1);
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
        size_t l = crw_buf_utf8_len(p + i, n - i);
        if (l == 0) {
            /* U+FFFD REPLACEMENT CHARACTER: three bytes for one. */
            o = json_str_room(b, o, 3, n - i - 1);
            *o++ = (char)0xEF;
            *o++ = (char)0xBF;
            *o++ = (char)0xBD;
            i++;
            continue;
        }
        for (size_t k = 0; k < l; k++) /* two to four bytes: not worth a call to memcpy */
            *o++ = (char)p[i++];
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
}

void crw_buf_put_json_str(crw_buf_t *b, const char *s, size_t n) { put_json_str(b, s, n, false); }

void crw_buf_put_json_str_discard(crw_buf_t *b, const char *s, size_t n) { put_json_str(b, s, n, true); }

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
