/*
 * test_buf.c — the output buffer (core/buf.c): growth, numbers, LSNs, and
 * the JSON string escaper that must give valid UTF-8 JSON for any bytes.
 */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"

static crw_buf_t b = CRW_BUF_INIT;

static void fini(void) { crw_buf_free(&b); }

TestSuite(buf, .fini = fini);

/* Escapes s[0..n) and requires exactly want (quotes included). */
static void esc(const char *s, size_t n, const char *want) {
    crw_buf_reset(&b);
    crw_buf_put_json_str(&b, s, n);
    cr_assert_eq(b.len, strlen(want), "%s -> %s", want, b.data);
    cr_assert_str_eq(b.data, want);
}

Test(buf, grows_and_stays_terminated) {
    for (int i = 0; i < 10000; i++)
        crw_buf_putc(&b, (char)('a' + i % 26));
    cr_assert_eq(b.len, 10000);
    cr_assert_eq(b.data[b.len], '\0');
    cr_assert_geq(b.cap, b.len + 1);
    size_t cap = b.cap;
    crw_buf_reset(&b);
    cr_assert_eq(b.len, 0);
    cr_assert_str_eq(b.data, "");
    cr_assert_eq(b.cap, cap, "reset keeps the allocation");
    crw_buf_printf(&b, "%s-%d", "x", 42);
    crw_buf_printf(&b, "%0300d", 7); /* longer than the first guess */
    cr_assert_eq(b.len, 4 + 300);
    cr_assert_eq(strncmp(b.data, "x-42000", 7), 0);
}

Test(buf, numbers_and_lsns) {
    crw_buf_put_u64(&b, 0);
    crw_buf_putc(&b, ' ');
    crw_buf_put_u64(&b, UINT64_MAX);
    crw_buf_putc(&b, ' ');
    crw_buf_put_i64(&b, INT64_MIN);
    crw_buf_putc(&b, ' ');
    crw_buf_put_i64(&b, -1);
    crw_buf_putc(&b, ' ');
    crw_buf_put_lsn(&b, 0x16B374D848ULL);
    cr_assert_str_eq(b.data, "0 18446744073709551615 -9223372036854775808 -1 16/B374D848");
}

Test(buf, json_escapes_what_json_requires) {
    esc("plain", 5, "\"plain\"");
    esc("q\"b\\s/", 6, "\"q\\\"b\\\\s/\"");
    esc("\n\r\t\b\f", 5, "\"\\n\\r\\t\\b\\f\"");
    esc("\x01\x1f\x7f", 3, "\"\\u0001\\u001f\x7f\"");
    esc("a\0b", 3, "\"a\\u0000b\"");
    esc("", 0, "\"\"");
}

Test(buf, valid_utf8_is_kept) {
    esc("\xc3\xa9", 2, "\"\xc3\xa9\"");                 /* é */
    esc("\xe2\x82\xac", 3, "\"\xe2\x82\xac\"");         /* € */
    esc("\xf0\x9f\x98\x80", 4, "\"\xf0\x9f\x98\x80\""); /* U+1F600 */
    esc("\xf4\x8f\xbf\xbf", 4, "\"\xf4\x8f\xbf\xbf\""); /* U+10FFFF, the last code point */
}

#define FFFD "\xef\xbf\xbd"

Test(buf, invalid_utf8_becomes_replacement_characters) {
    esc("\xff", 1, "\"" FFFD "\"");
    esc("a\x80z", 3, "\"a" FFFD "z\"");                       /* a lone continuation byte */
    esc("\xc0\xaf", 2, "\"" FFFD FFFD "\"");                   /* overlong '/' */
    esc("\xe0\x80\xaf", 3, "\"" FFFD FFFD FFFD "\"");          /* overlong, 3 bytes */
    esc("\xed\xa0\x80", 3, "\"" FFFD FFFD FFFD "\"");          /* a UTF-16 surrogate */
    esc("\xf4\x90\x80\x80", 4, "\"" FFFD FFFD FFFD FFFD "\""); /* above U+10FFFF */
    esc("\xe2\x82", 2, "\"" FFFD FFFD "\"");                   /* cut short at the end */
    esc("\xe2(\xa1", 3, "\"" FFFD "(" FFFD "\"");               /* a bad continuation */
}

/* Whatever the bytes, the result parses as JSON and is valid UTF-8. */
Test(buf, any_bytes_give_parseable_json) {
    unsigned char in[512];
    uint32_t x = 0x9e3779b9u;
    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof in; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            in[i] = (unsigned char)x;
        }
        crw_buf_reset(&b);
        crw_buf_put_json_str(&b, (const char *)in, sizeof in);
        json_tokener *tok = json_tokener_new();
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        json_object *o = json_tokener_parse_ex(tok, b.data, (int)b.len);
        cr_assert(o && json_object_is_type(o, json_type_string), "round %d: %s", round,
                  json_tokener_error_desc(json_tokener_get_error(tok)));
        json_object_put(o);
        json_tokener_free(tok);
    }
}

/* A large value needs about its own size, not the six times its worst case would. */
Test(buf, json_string_reserves_what_plain_text_needs) {
    size_t n = 4 << 20;
    char *in = malloc(n);
    cr_assert(in);
    memset(in, 'x', n);
    crw_buf_free(&b);
    crw_buf_put_json_str(&b, in, n);
    cr_assert_eq(b.len, n + 2);
    cr_assert(b.cap < 2 * n, "%zu bytes of room for %zu", b.cap, n + 2);
    cr_assert(b.data[0] == '"' && b.data[n + 1] == '"' && b.data[n + 2] == '\0');
    free(in);
}

/* Escapes and replacements past the room first reserved: every one of them is made room for. */
Test(buf, json_string_grows_for_escapes_and_replacements) {
    const char *pieces[] = {"\x01", "\xff", "\"", "a", "\xc3\xa9"};
    const char *outs[] = {"\\u0001", FFFD, "\\\"", "a", "\xc3\xa9"};
    for (int prefix = 0; prefix < 3; prefix++) {
        crw_buf_t in = CRW_BUF_INIT, want = CRW_BUF_INIT;
        crw_buf_putc(&want, '"');
        for (int i = 0; i < 20000; i++) {
            int k = (i * 7 + prefix) % 5;
            crw_buf_puts(&in, pieces[k]);
            crw_buf_puts(&want, outs[k]);
        }
        crw_buf_putc(&want, '"');
        crw_buf_free(&b);
        crw_buf_puts(&b, prefix == 0 ? "" : prefix == 1 ? "[" : "{\"some\":\"prefix\",\"v\":");
        size_t at = b.len;
        crw_buf_put_json_str(&b, in.data, in.len);
        cr_assert_eq(b.len - at, want.len);
        cr_assert_eq(memcmp(b.data + at, want.data, want.len), 0);
        cr_assert_eq(b.data[b.len], '\0');
        crw_buf_free(&in);
        crw_buf_free(&want);
    }
}

/* The length of the valid UTF-8 sequence at s (RFC 3629), or 0: the test's own, apart from core/utf8.c. */
static size_t ref_seq_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!len || len > n)
        return 0;
    uint32_t cp = c & (0x7f >> len);
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[k] & 0x3f);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    return cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ? 0 : len;
}

/* The escaper written the slow and obvious way, one byte or sequence at a time. */
static void ref_escape(crw_buf_t *out, const unsigned char *s, size_t n) {
    crw_buf_putc(out, '"');
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t l;
        if (c == '"' || c == '\\') {
            crw_buf_putc(out, '\\');
            crw_buf_putc(out, (char)c);
            i++;
        } else if (c < 0x20) {
            const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\b' ? "\\b"
                                : c == '\f' ? "\\f" : NULL;
            if (named)
                crw_buf_puts(out, named);
            else
                crw_buf_printf(out, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            crw_buf_putc(out, (char)c);
            i++;
        } else if ((l = ref_seq_len(s + i, n - i))) {
            crw_buf_put(out, s + i, l);
            i += l;
        } else {
            crw_buf_puts(out, FFFD);
            i++;
        }
    }
    crw_buf_putc(out, '"');
}

/* Mostly plain text with what needs a look of its own at random places: every run length, every alignment. */
Test(buf, json_string_matches_the_obvious_escaper) {
    static const char *specials[] = {"\"", "\\", "\n", "\x01", "\x1f", "\x7f", "\xc3\xa9", "\xe2\x82\xac",
                                     "\xf0\x9f\x98\x80", "\xff", "\xc3", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                     "\xe2\x82", " ", "~"};
    uint32_t x = 0x2545f491u;
    crw_buf_t in = CRW_BUF_INIT, want = CRW_BUF_INIT;
    for (int round = 0; round < 2000; round++) {
        crw_buf_reset(&in);
        int len = (int)(x % 200);
        for (int i = 0; i < len; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if (x % 9 == 0)
                crw_buf_puts(&in, specials[(x >> 8) % (sizeof specials / sizeof specials[0])]);
            else
                crw_buf_putc(&in, (char)(' ' + (x >> 8) % 95));
        }
        crw_buf_reset(&want);
        ref_escape(&want, (const unsigned char *)(in.data ? in.data : ""), in.len);
        crw_buf_reset(&b);
        crw_buf_putc(&b, '>');
        crw_buf_put_json_str(&b, in.data ? in.data : "", in.len);
        cr_assert_eq(b.len - 1, want.len, "round %d: %s -> %s, want %s", round, in.data, b.data + 1, want.data);
        cr_assert_eq(memcmp(b.data + 1, want.data, want.len), 0, "round %d: %s, want %s", round, b.data + 1,
                     want.data);
    }
    crw_buf_free(&in);
    crw_buf_free(&want);
}

/*
 * A large value escaped with its pages handed back: the same JSON as the
 * plain escaper's, sequences and escapes across the 1 MiB steps included,
 * and the input's pages behind the last step read as zeros (given back).
 */
Test(buf, json_string_discard_gives_the_same_json_and_gives_the_pages_back) {
    static const char *specials[] = {"\"", "\\", "\n", "\x01", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xff",
                                     "\xe2\x82"};
    const size_t n = (5u << 20) + 12345, step = 1u << 20;
    char *in = malloc(n), *copy = malloc(n);
    cr_assert(in && copy);
    uint32_t x = 0x9e3779b9u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        in[i] = (char)(' ' + (x >> 8) % 95);
    }
    for (size_t s = step; s < n; s += step) /* every special at every offset around each step */
        for (size_t k = 0; k < sizeof specials / sizeof specials[0]; k++) {
            size_t at = s - 16 + k * 4 + (s / step) % 3, len = strlen(specials[k]);
            memcpy(in + at, specials[k], len);
        }
    for (size_t i = 1000; i < n; i += 77777) /* and their first bytes alone here and there */
        in[i] = specials[i % (sizeof specials / sizeof specials[0])][0];
    memcpy(copy, in, n);
    crw_buf_t want = CRW_BUF_INIT;
    ref_escape(&want, (const unsigned char *)in, n);
    crw_buf_reset(&b);
    crw_buf_puts(&b, "{\"v\":");
    crw_buf_put_json_str_discard(&b, copy, n);
    cr_assert_eq(b.len - 5, want.len);
    cr_assert_eq(memcmp(b.data + 5, want.data, want.len), 0, "the discarding escaper differs");
    /* a page well inside the first steps is given back; the tail after the last step is kept */
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const char *given = (const char *)(((uintptr_t)copy + step / 2) & ~(page - 1));
    size_t nonzero = 0;
    for (size_t i = 0; i < page; i++)
        nonzero += given[i] != 0;
    cr_assert_eq(nonzero, 0, "the pages escaped were not given back");
    cr_assert_eq(memcmp(copy + n - 100, in + n - 100, 100), 0);
    crw_buf_free(&want);
    free(in);
    free(copy);
}
