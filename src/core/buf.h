/*
 * buf.h — growable byte buffer, the output arena of the hot path.
 *
 * A crw_buf_t is reused across rows: crw_buf_reset() keeps the allocation,
 * so steady-state encoding does no malloc at all.  Allocation failure is
 * fatal (the process logs and aborts), as in Redis' zmalloc: there is no
 * sensible way to continue a change stream without memory.
 */
#ifndef CRW_BUF_H
#define CRW_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/utf8.h"

typedef struct crw_buf {
    char *data;  /* NUL-terminated whenever len < cap (always, after any put) */
    size_t len;
    size_t cap;
} crw_buf_t;

#define CRW_BUF_INIT {NULL, 0, 0}

void crw_buf_init(crw_buf_t *b);
/* Frees the storage; the buffer may be reused after crw_buf_init(). */
void crw_buf_free(crw_buf_t *b);
/* Ensures room for extra more bytes plus a terminating NUL. */
void crw_buf_grow(crw_buf_t *b, size_t extra);

static inline void crw_buf_reset(crw_buf_t *b) {
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static inline void crw_buf_put(crw_buf_t *b, const void *p, size_t n) {
    if (b->len + n + 1 > b->cap)
        crw_buf_grow(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static inline void crw_buf_putc(crw_buf_t *b, char c) {
    if (b->len + 2 > b->cap)
        crw_buf_grow(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

static inline void crw_buf_puts(crw_buf_t *b, const char *s) { crw_buf_put(b, s, strlen(s)); }

void crw_buf_printf(crw_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void crw_buf_vprintf(crw_buf_t *b, const char *fmt, va_list ap);

/* Appends s[0..n) as a JSON string literal: quoted, escaped per RFC 8259.
 * Invalid UTF-8 bytes are replaced by U+FFFD so the output is always valid JSON. */
void crw_buf_put_json_str(crw_buf_t *b, const char *s, size_t n);
/*
 * crw_buf_put_json_str for a large value that nothing reads again: as it is
 * escaped, the whole pages of s behind go back to the system (madvise
 * MADV_DONTNEED), so the value and its JSON are not resident whole at once.
 * s must be private memory of the caller's (a malloc'd buffer), and reads
 * as zeros after.
 */
void crw_buf_put_json_str_discard(crw_buf_t *b, const char *s, size_t n);

/*
 * crw_utf8_seq_len for the hot paths: the two- and three-byte sequences
 * most non-ASCII text is made of are checked here, inline; E0 and ED leads
 * (overlongs, surrogates), four-byte sequences and every invalid byte go to
 * crw_utf8_seq_len.  s[0] is 0x80 or more.
 */
static inline size_t crw_buf_utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c >= 0xC2 && c <= 0xDF && n >= 2 && (s[1] & 0xC0) == 0x80)
        return 2;
    if (c >= 0xE1 && c <= 0xEF && c != 0xED && n >= 3 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80)
        return 3;
    return crw_utf8_seq_len(s, n);
}

/*
 * True when none of the eight bytes in x needs a look of its own inside a
 * JSON string: no control character, no '"', no '\\', nothing past ASCII.
 * A false "no" (a borrow crossing into the next byte) only sends the bytes
 * the slow way; a byte that needs a look is never missed.
 */
static inline bool crw_buf_plain8(uint64_t x) {
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    uint64_t q = x ^ (ones * '"'), bs = x ^ (ones * '\\');
    uint64_t ctl = (x - ones * 0x20) & ~x; /* bytes below 0x20 */
    q = (q - ones) & ~q;                    /* bytes equal to '"' */
    bs = (bs - ones) & ~bs;                 /* bytes equal to '\\' */
    return !((x | ctl | q | bs) & highs);
}

/* The value of hexadecimal digit c, or -1. */
static inline int crw_hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Writes v in decimal with a NUL into out (21 bytes or more); returns its length. */
size_t crw_u64_format(char *out, uint64_t v);

/* Appends v in decimal. */
void crw_buf_put_u64(crw_buf_t *b, uint64_t v);
void crw_buf_put_i64(crw_buf_t *b, int64_t v);

/* Appends an LSN as PostgreSQL prints it: %X/%X. */
void crw_buf_put_lsn(crw_buf_t *b, uint64_t lsn);

#endif
