/*
 * test_buf.c — the output buffer (core/buf.c): growth, numbers, LSNs, and
 * the JSON string escaper that must give valid UTF-8 JSON for any bytes.
 */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <string.h>

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
