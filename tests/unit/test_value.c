/*
 * test_value.c — PostgreSQL text output -> JSON (src/map/value.c).
 *
 * Inputs are what a PostgreSQL 15.18 server printed with DateStyle=ISO,
 * IntervalStyle=iso_8601, TimeZone=UTC (or the zone named in the test),
 * extra_float_digits=3, bytea_output=hex/escape.  Every rendering is compared
 * byte for byte and must also parse as one complete JSON value with json-c
 * in strict mode with UTF-8 validation.
 */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "map/value.h"
#include "json_assert.h"

static const crw_typeinfo_t T_INT = {CRW_TC_INT, false, ','};
static const crw_typeinfo_t T_FLOAT = {CRW_TC_FLOAT, false, ','};
static const crw_typeinfo_t T_NUMERIC = {CRW_TC_NUMERIC, false, ','};
static const crw_typeinfo_t T_BOOL = {CRW_TC_BOOL, false, ','};
static const crw_typeinfo_t T_JSON = {CRW_TC_JSON, false, ','};
static const crw_typeinfo_t T_JSONB = {CRW_TC_JSONB, false, ','};
static const crw_typeinfo_t T_BYTEA = {CRW_TC_BYTEA, false, ','};
static const crw_typeinfo_t T_DATE = {CRW_TC_DATE, false, ','};
static const crw_typeinfo_t T_TIME = {CRW_TC_TIME, false, ','};
static const crw_typeinfo_t T_TIMETZ = {CRW_TC_TIMETZ, false, ','};
static const crw_typeinfo_t T_TS = {CRW_TC_TIMESTAMP, false, ','};
static const crw_typeinfo_t T_TSTZ = {CRW_TC_TIMESTAMPTZ, false, ','};
static const crw_typeinfo_t T_INTERVAL = {CRW_TC_INTERVAL, false, ','};
static const crw_typeinfo_t T_UUID = {CRW_TC_UUID, false, ','};
static const crw_typeinfo_t T_TEXT = {CRW_TC_TEXT, false, ','};

static const crw_typeinfo_t A_INT = {CRW_TC_INT, true, ','};
static const crw_typeinfo_t A_FLOAT = {CRW_TC_FLOAT, true, ','};
static const crw_typeinfo_t A_NUMERIC = {CRW_TC_NUMERIC, true, ','};
static const crw_typeinfo_t A_BOOL = {CRW_TC_BOOL, true, ','};
static const crw_typeinfo_t A_JSON = {CRW_TC_JSON, true, ','};
static const crw_typeinfo_t A_JSONB = {CRW_TC_JSONB, true, ','};
static const crw_typeinfo_t A_BYTEA = {CRW_TC_BYTEA, true, ','};
static const crw_typeinfo_t A_DATE = {CRW_TC_DATE, true, ','};
static const crw_typeinfo_t A_TSTZ = {CRW_TC_TIMESTAMPTZ, true, ','};
static const crw_typeinfo_t A_TIMETZ = {CRW_TC_TIMETZ, true, ','};
static const crw_typeinfo_t A_INTERVAL = {CRW_TC_INTERVAL, true, ','};
static const crw_typeinfo_t A_UUID = {CRW_TC_UUID, true, ','};
static const crw_typeinfo_t A_TEXT = {CRW_TC_TEXT, true, ','};
static const crw_typeinfo_t A_BOX = {CRW_TC_TEXT, true, ';'};

/* Renders in[0..n) after a prefix (rendering appends) and checks the result. */
static void check_n(const crw_typeinfo_t *ti, const char *in, size_t n, const char *want) {
    crw_buf_t b = CRW_BUF_INIT;
    crw_buf_puts(&b, "pre:");
    int rc = crw_value_render(&b, ti, in, n);
    cr_assert_eq(rc, 0, "render of <%.*s> (class %d) failed", (int)n, in, (int)ti->cls);
    cr_assert_eq(memcmp(b.data, "pre:", 4), 0);
    cr_assert_eq(strlen(b.data), b.len, "NUL inside or not at the end");
    cr_assert_str_eq(b.data + 4, want, "input <%.*s>", (int)n, in);
    assert_json(b.data + 4, b.len - 4);
    crw_buf_free(&b);
}

static void check(const crw_typeinfo_t *ti, const char *in, const char *want) { check_n(ti, in, strlen(in), want); }

/* Malformed input: -1, and the buffer is exactly as before. */
static void check_bad(const crw_typeinfo_t *ti, const char *in) {
    crw_buf_t b = CRW_BUF_INIT;
    crw_buf_puts(&b, "pre:");
    int rc = crw_value_render(&b, ti, in, strlen(in));
    cr_assert_eq(rc, -1, "<%s> (class %d) accepted as <%s>", in, (int)ti->cls, b.data);
    cr_assert_eq(b.len, 4);
    cr_assert_str_eq(b.data, "pre:");
    crw_buf_free(&b);
}

/* Decodes a padded standard base64 JSON string ("...") into out; returns length. */
static size_t b64_decode(const char *json, unsigned char *out) {
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(json);
    cr_assert(n >= 2 && json[0] == '"' && json[n - 1] == '"');
    const char *s = json + 1;
    n -= 2;
    cr_assert_eq(n % 4, 0, "base64 not padded: %s", json);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            v <<= 6;
            if (s[i + j] == '=') {
                cr_assert(i + 4 == n && j >= 2, "misplaced padding in %s", json);
                pad++;
                continue;
            }
            const char *p = strchr(alpha, s[i + j]);
            cr_assert(p && *p, "bad base64 char in %s", json);
            v |= (uint32_t)(p - alpha);
        }
        out[o++] = (unsigned char)(v >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(v >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)v;
    }
    return o;
}

/* ---- integers --------------------------------------------------------- */

Test(value_int, values) {
    check(&T_INT, "0", "0");
    check(&T_INT, "42", "42");
    check(&T_INT, "-1", "-1");
    check(&T_INT, "9223372036854775807", "9223372036854775807");
    check(&T_INT, "-9223372036854775808", "-9223372036854775808");
    check(&T_INT, "18446744073709551615", "18446744073709551615"); /* xid8 max */
    check(&T_INT, "-32768", "-32768");
}

Test(value_int, malformed) {
    check_bad(&T_INT, "");
    check_bad(&T_INT, "-");
    check_bad(&T_INT, "12a");
    check_bad(&T_INT, "007");
    check_bad(&T_INT, "+1");
    check_bad(&T_INT, " 1");
    check_bad(&T_INT, "1.0");
}

/* ---- floats ----------------------------------------------------------- */

Test(value_float, numbers_as_printed) {
    check(&T_FLOAT, "-0", "-0");
    check(&T_FLOAT, "1e-310", "1e-310"); /* subnormal */
    check(&T_FLOAT, "1.7976931348623157e+308", "1.7976931348623157e+308");
    check(&T_FLOAT, "2.2250738585072014e-308", "2.2250738585072014e-308");
    check(&T_FLOAT, "1e+30", "1e+30");
    check(&T_FLOAT, "1e-05", "1e-05");
    check(&T_FLOAT, "0.1", "0.1");
    check(&T_FLOAT, "1.2345679e+11", "1.2345679e+11"); /* float4 */
    check(&T_FLOAT, "-3.14", "-3.14");
    check(&T_FLOAT, "0", "0");
}

Test(value_float, specials_as_strings) {
    check(&T_FLOAT, "NaN", "\"NaN\"");
    check(&T_FLOAT, "Infinity", "\"Infinity\"");
    check(&T_FLOAT, "-Infinity", "\"-Infinity\"");
}

Test(value_float, malformed) {
    check_bad(&T_FLOAT, "");
    check_bad(&T_FLOAT, "nan");
    check_bad(&T_FLOAT, "inf");
    check_bad(&T_FLOAT, "1.");
    check_bad(&T_FLOAT, ".5");
    check_bad(&T_FLOAT, "1e");
    check_bad(&T_FLOAT, "01");
    check_bad(&T_FLOAT, "+1");
}

/* ---- numeric ---------------------------------------------------------- */

Test(value_numeric, exact_strings) {
    check(&T_NUMERIC, "1.50", "\"1.50\"");
    check(&T_NUMERIC, "12.3400", "\"12.3400\"");
    check(&T_NUMERIC, "0", "\"0\"");
    check(&T_NUMERIC, "-0.000001", "\"-0.000001\"");
    check(&T_NUMERIC, "1234567890123456789012345678901234567890", "\"1234567890123456789012345678901234567890\"");
    check(&T_NUMERIC, "1234567890123456789012345678901234567890.5",
          "\"1234567890123456789012345678901234567890.5\"");
    check(&T_NUMERIC, "NaN", "\"NaN\"");
    check(&T_NUMERIC, "Infinity", "\"Infinity\"");
    check(&T_NUMERIC, "-Infinity", "\"-Infinity\"");
}

Test(value_numeric, malformed) {
    check_bad(&T_NUMERIC, "");
    check_bad(&T_NUMERIC, "abc");
    check_bad(&T_NUMERIC, "1..2");
    check_bad(&T_NUMERIC, "1\"");
}

/* ---- bool ------------------------------------------------------------- */

Test(value_bool, values) {
    check(&T_BOOL, "t", "true");
    check(&T_BOOL, "f", "false");
    check_bad(&T_BOOL, "true");
    check_bad(&T_BOOL, "T");
    check_bad(&T_BOOL, "");
}

/* ---- json / jsonb ----------------------------------------------------- */

Test(value_jsonb, compact_with_every_digit) {
    /* jsonb_out's ", " and ": " go; a 30-digit number keeps every digit (never parsed). */
    check(&T_JSONB, "{\"a\": 123456789012345678901234567890, \"b\": [1, 2], \"c\": \"x\\ny z\"}",
          "{\"a\":123456789012345678901234567890,\"b\":[1,2],\"c\":\"x\\ny z\"}");
    check(&T_JSONB, "{\"a\": \"\xc3\xa9\"}", "{\"a\":\"\xc3\xa9\"}");
    check(&T_JSONB, "\"s\"", "\"s\"");
    check(&T_JSONB, "null", "null");
    check(&T_JSONB, "true", "true");
    check(&T_JSONB, "3.000", "3.000");
    check(&T_JSONB, "[]", "[]");
    check_bad(&T_JSONB, "");
}

Test(value_json, whitespace_outside_strings_removed) {
    /* Exactly as json_out returned '{"a" : 1,\n\t"b": "x  y\"z" }'. */
    check(&T_JSON, "{\"a\" : 1,\n\t\"b\": \"x  y\\\"z\" }", "{\"a\":1,\"b\":\"x  y\\\"z\"}");
    check(&T_JSON, "  \"x\"  ", "\"x\"");
    check(&T_JSON, "[ ]", "[]");
    check(&T_JSON, "\r\n[ 1 ,\r\n 2 ]\n", "[1,2]");
    check(&T_JSON, "{\"a\":\"\\u00e9\\u0000\"}", "{\"a\":\"\\u00e9\\u0000\"}");
    /* An escaped backslash right before the closing quote ends the string. */
    check(&T_JSON, "[\"a\\\\\" , \" b \\t\" ]", "[\"a\\\\\",\" b \\t\"]");
    check(&T_JSON, "{\"n\": 123456789012345678901234567890}", "{\"n\":123456789012345678901234567890}");
}

Test(value_json, malformed) {
    check_bad(&T_JSON, "");
    check_bad(&T_JSON, " \n\t ");
    check_bad(&T_JSON, "\"unterminated");
    check_bad(&T_JSON, "\"ends in escape\\");
    check_bad(&T_JSON, "\"raw\nnewline\"");
}

#define FFFD "\xef\xbf\xbd"

Test(value_json, invalid_utf8_in_strings_becomes_replacement_characters) {
    /* What a SQL_ASCII database stores and sends: E'{"k":"\\xff"}', no encoding checked. */
    check(&T_JSONB, "{\"k\": \"\xff\"}", "{\"k\":\"" FFFD "\"}");
    check(&T_JSON, "{\"\xfe\" : \"a\x80z\"}", "{\"" FFFD "\":\"a" FFFD "z\"}"); /* keys too */
    check(&T_JSON, "[\"\xc0\xaf\", \"\xed\xa0\x80\", \"\xe2\x82\"]",
          "[\"" FFFD FFFD "\",\"" FFFD FFFD FFFD "\",\"" FFFD FFFD "\"]"); /* overlong, surrogate, cut short */
    check(&T_JSONB, "\"\xe2(\xa1\"", "\"" FFFD "(" FFFD "\"");
    /* Valid UTF-8 and escapes stay as they are. */
    check(&T_JSONB, "{\"\xe2\x82\xac\": \"\xf0\x9f\x98\x80\\u00e9\"}", "{\"\xe2\x82\xac\":\"\xf0\x9f\x98\x80\\u00e9\"}");
}

Test(value_json, many_replacements_outgrow_the_reserved_room) {
    /* Each invalid byte takes three: the output is about three times the input. */
    crw_buf_t in = CRW_BUF_INIT, want = CRW_BUF_INIT;
    crw_buf_puts(&in, "{\"a\": \"");
    crw_buf_puts(&want, "{\"a\":\"");
    for (int i = 0; i < 5000; i++) {
        crw_buf_putc(&in, i % 3 ? (char)0xff : 'x');
        crw_buf_puts(&want, i % 3 ? FFFD : "x");
    }
    crw_buf_puts(&in, "\"}");
    crw_buf_puts(&want, "\"}");
    check_n(&T_JSONB, in.data, in.len, want.data);
    crw_buf_free(&in);
    crw_buf_free(&want);
}

Test(value_json, bytes_json_cannot_hold_are_malformed) {
    /* Outside strings, and after a backslash, only JSON's own characters; the caller then falls back to a
     * string of the text, which crw_buf_put_json_str makes valid. */
    check_bad(&T_JSON, "{\"a\": \xff}");
    check_bad(&T_JSON, "\x01[]");
    check_bad(&T_JSON, "\"\\\xff\"");
    check_bad(&T_JSON, "\"\\x\"");
    check_bad(&T_JSON, "\"\\u12\"");
    check_bad(&T_JSON, "\"\\u12g4\"");
    check(&T_JSON, "\"\\/\\b\\f\\uABcd\"", "\"\\/\\b\\f\\uABcd\"");
}

Test(value_array, invalid_utf8_in_json_elements) {
    check(&A_JSONB, "{\"{\\\"k\\\": \\\"\xff\\\"}\",\"\\\"\xc3\\\"\",NULL}",
          "[{\"k\":\"" FFFD "\"},\"" FFFD "\",null]");
    check(&A_JSON, "{\"[\\\"\x80\xc3\xa9\\\"]\"}", "[[\"" FFFD "\xc3\xa9\"]]");
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

/* String bodies of plain text, escapes and raw bytes at random places: kept, but for U+FFFD where not UTF-8. */
Test(value_json, string_bodies_match_the_obvious_rendering) {
    static const char *pieces[] = {"\\\"", "\\\\", "\\n", "\\u00e9", "\\/", "\xc3\xa9", "\xe2\x82\xac",
                                   "\xf0\x9f\x98\x80", "\xff", "\xc3", "\xe0\x80\xaf", "\xed\xa0\x80", "\xe2\x82", " ", "{"};
    uint32_t x = 0x6b43a9b5u;
    crw_buf_t body = CRW_BUF_INIT, in = CRW_BUF_INIT, want = CRW_BUF_INIT;
    for (int round = 0; round < 2000; round++) {
        crw_buf_reset(&body);
        int len = (int)(x % 120);
        for (int i = 0; i < len; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if (x % 7 == 0)
                crw_buf_puts(&body, pieces[(x >> 8) % (sizeof pieces / sizeof pieces[0])]);
            else
                crw_buf_putc(&body, (char)('#' + (x >> 8) % 57)); /* '#'..'[': neither '"' nor '\\' */
        }
        crw_buf_reset(&in);
        crw_buf_printf(&in, "{\"k\": \"%s\", \"n\": [1, \"%s\"]}", body.data ? body.data : "",
                       body.data ? body.data : "");
        crw_buf_reset(&want);
        for (int copy = 0; copy < 2; copy++) {
            crw_buf_puts(&want, copy ? "\",\"n\":[1,\"" : "{\"k\":\"");
            const unsigned char *u = (const unsigned char *)(body.data ? body.data : "");
            for (size_t i = 0, l; i < body.len;) {
                if (u[i] < 0x80)
                    crw_buf_putc(&want, (char)u[i++]);
                else if ((l = ref_seq_len(u + i, body.len - i))) {
                    crw_buf_put(&want, u + i, l);
                    i += l;
                } else {
                    crw_buf_puts(&want, FFFD);
                    i++;
                }
            }
        }
        crw_buf_puts(&want, "\"]}");
        check_n(&T_JSONB, in.data, in.len, want.data);
    }
    crw_buf_free(&body);
    crw_buf_free(&in);
    crw_buf_free(&want);
}

/* ---- bytea ------------------------------------------------------------ */

Test(value_bytea, hex_form) {
    check(&T_BYTEA, "\\x", "\"\"");
    check(&T_BYTEA, "\\x41", "\"QQ==\"");
    check(&T_BYTEA, "\\x4142", "\"QUI=\"");
    check(&T_BYTEA, "\\x00ff0a", "\"AP8K\"");
    check(&T_BYTEA, "\\x00FF0A", "\"AP8K\"");
}

Test(value_bytea, escape_form) {
    /* bytea_output=escape printed '\x00ff5c41200a' as this. */
    check(&T_BYTEA, "\\000\\377\\\\A \\012", "\"AP9cQSAK\"");
    check(&T_BYTEA, "", "\"\"");
    check(&T_BYTEA, "A", "\"QQ==\"");
}

Test(value_bytea, all_byte_values_round_trip) {
    char hex[2 + 512 + 1] = "\\x";
    char esc[256 * 4 + 1];
    size_t el = 0;
    for (int i = 0; i < 256; i++) {
        snprintf(hex + 2 + 2 * i, 3, "%02x", i);
        if (i == '\\')
            el += (size_t)snprintf(esc + el, 5, "\\\\");
        else if (i < 0x20 || i > 0x7e)
            el += (size_t)snprintf(esc + el, 5, "\\%03o", i);
        else
            esc[el++] = (char)i;
    }
    esc[el] = '\0';
    const char *forms[] = {hex, esc};
    for (int f = 0; f < 2; f++) {
        crw_buf_t b = CRW_BUF_INIT;
        cr_assert_eq(crw_value_render(&b, &T_BYTEA, forms[f], strlen(forms[f])), 0);
        assert_json(b.data, b.len);
        cr_assert_eq(b.len, 2 + (256 + 2) / 3 * 4);
        unsigned char dec[300];
        cr_assert_eq(b64_decode(b.data, dec), 256);
        for (int i = 0; i < 256; i++)
            cr_assert_eq(dec[i], i, "form %d byte %d", f, i);
        crw_buf_free(&b);
    }
    /* Lengths 0..5 cover every padding case. */
    for (size_t n = 0; n < 6; n++) {
        crw_buf_t b = CRW_BUF_INIT;
        cr_assert_eq(crw_value_render(&b, &T_BYTEA, hex, 2 + 2 * n), 0);
        unsigned char dec[8];
        cr_assert_eq(b64_decode(b.data, dec), n);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(dec[i], i);
        crw_buf_free(&b);
    }
}

Test(value_bytea, malformed) {
    check_bad(&T_BYTEA, "\\x0");
    check_bad(&T_BYTEA, "\\x0g");
    check_bad(&T_BYTEA, "\\9");
    check_bad(&T_BYTEA, "\\01");
    check_bad(&T_BYTEA, "\\400");
    check_bad(&T_BYTEA, "ab\\");
}

/* ---- dates ------------------------------------------------------------ */

Test(value_date, values) {
    check(&T_DATE, "2026-11-24", "\"2026-11-24\"");
    check(&T_DATE, "2024-02-29", "\"2024-02-29\"");
    check(&T_DATE, "0001-01-01", "\"0001-01-01\"");
    /* BC -> astronomical year: 1 BC is 0, 44 BC is -43. */
    check(&T_DATE, "0044-03-15 BC", "\"-0043-03-15\"");
    check(&T_DATE, "0001-01-01 BC", "\"0000-01-01\"");
    check(&T_DATE, "0002-12-31 BC", "\"-0001-12-31\"");
    check(&T_DATE, "4713-01-01 BC", "\"-4712-01-01\""); /* the earliest date */
    check(&T_DATE, "10001-01-01 BC", "\"-10000-01-01\"");
    /* Years past 9999 stay as printed (no ISO '+'). */
    check(&T_DATE, "12345-01-01", "\"12345-01-01\"");
    check(&T_DATE, "5874897-12-31", "\"5874897-12-31\""); /* the latest date */
    check(&T_DATE, "infinity", "\"infinity\"");
    check(&T_DATE, "-infinity", "\"-infinity\"");
}

Test(value_date, malformed) {
    check_bad(&T_DATE, "");
    check_bad(&T_DATE, "26-01-01");
    check_bad(&T_DATE, "2026-13-01");
    check_bad(&T_DATE, "2026-01-00");
    check_bad(&T_DATE, "2026-01-01 AD");
    check_bad(&T_DATE, "2026-01-01 ");
    check_bad(&T_DATE, "0000-01-01 BC");
    check_bad(&T_DATE, "Infinity");
    check_bad(&T_DATE, "2026/01/01");
}

/* ---- timestamps ------------------------------------------------------- */

Test(value_timestamp, values) {
    check(&T_TS, "2026-11-24 10:00:00.123456", "\"2026-11-24T10:00:00.123456\"");
    check(&T_TS, "2026-11-24 10:00:00", "\"2026-11-24T10:00:00\"");
    check(&T_TS, "0044-03-15 10:00:00.5 BC", "\"-0043-03-15T10:00:00.5\"");
    check(&T_TS, "0001-01-01 00:00:00 BC", "\"0000-01-01T00:00:00\"");
    check(&T_TS, "12345-01-01 00:00:00", "\"12345-01-01T00:00:00\"");
    check(&T_TS, "infinity", "\"infinity\"");
    check(&T_TS, "-infinity", "\"-infinity\"");
}

Test(value_timestamp, malformed) {
    check_bad(&T_TS, "2026-11-24T10:00:00");
    check_bad(&T_TS, "2026-11-24 10:00");
    check_bad(&T_TS, "2026-11-24 10:00:00.");
    check_bad(&T_TS, "2026-11-24 24:00:00");
    check_bad(&T_TS, "2026-11-24");
    check_bad(&T_TS, "2026-11-24 10:00:00+00");
}

Test(value_timestamptz, utc) {
    check(&T_TSTZ, "2026-11-24 10:00:00.123456+00", "\"2026-11-24T10:00:00.123456Z\"");
    check(&T_TSTZ, "2026-11-24 10:00:00+00", "\"2026-11-24T10:00:00Z\"");
    check(&T_TSTZ, "0044-03-15 10:00:00.5+00 BC", "\"-0043-03-15T10:00:00.5Z\"");
    check(&T_TSTZ, "4714-11-24 00:00:00+00 BC", "\"-4713-11-24T00:00:00Z\"");
    check(&T_TSTZ, "294276-12-31 23:59:59.999999+00", "\"294276-12-31T23:59:59.999999Z\"");
    check(&T_TSTZ, "infinity", "\"infinity\"");
    check(&T_TSTZ, "-infinity", "\"-infinity\"");
}

Test(value_timestamptz, offsets_converted_to_utc) {
    /* Printed with TimeZone=Asia/Kolkata. */
    check(&T_TSTZ, "2026-11-24 15:30:00.123456+05:30", "\"2026-11-24T10:00:00.123456Z\"");
    check(&T_TSTZ, "1850-01-01 05:53:28+05:53:28", "\"1850-01-01T00:00:00Z\""); /* LMT */
    check(&T_TSTZ, "2024-02-29 06:30:00+05:30", "\"2024-02-29T01:00:00Z\"");
    check(&T_TSTZ, "0044-03-15 10:00:00+05:53:28 BC", "\"-0043-03-15T04:06:32Z\"");
    /* Printed with TimeZone=America/Los_Angeles. */
    check(&T_TSTZ, "2024-02-29 19:00:00.5-08", "\"2024-03-01T03:00:00.5Z\"");
    check(&T_TSTZ, "2023-12-31 12:00:00-08", "\"2023-12-31T20:00:00Z\"");
    check(&T_TSTZ, "1799-12-31 16:07:02-07:52:58", "\"1800-01-01T00:00:00Z\"");
    /* 1 BC Dec 31 local is AD 1 Jan 1 in UTC: era and year roll together. */
    check(&T_TSTZ, "0001-12-31 18:07:02-07:52:58 BC", "\"0001-01-01T02:00:00Z\"");
}

Test(value_timestamptz, rollover) {
    /* Forward into a leap day, and past one. */
    check(&T_TSTZ, "2024-02-28 20:00:00-08", "\"2024-02-29T04:00:00Z\"");
    check(&T_TSTZ, "2023-02-28 20:00:00-08", "\"2023-03-01T04:00:00Z\"");
    check(&T_TSTZ, "2000-02-28 20:00:00-08", "\"2000-02-29T04:00:00Z\"");
    check(&T_TSTZ, "1900-02-28 20:00:00-08", "\"1900-03-01T04:00:00Z\"");
    /* Backward into a leap day. */
    check(&T_TSTZ, "2024-03-01 02:00:00+05:30", "\"2024-02-29T20:30:00Z\"");
    /* Year boundaries both ways. */
    check(&T_TSTZ, "2023-12-31 20:00:00.000001-08", "\"2024-01-01T04:00:00.000001Z\"");
    check(&T_TSTZ, "2024-01-01 01:00:00+05:30", "\"2023-12-31T19:30:00Z\"");
    check(&T_TSTZ, "9999-12-31 23:00:00-01", "\"10000-01-01T00:00:00Z\"");
    check(&T_TSTZ, "0001-01-01 00:30:00+01 BC", "\"-0001-12-31T23:30:00Z\"");
    /* Large offsets (the range is +-15:59:59). */
    check(&T_TSTZ, "2026-01-01 00:00:00+15:59:59", "\"2025-12-31T08:00:01Z\"");
    check(&T_TSTZ, "2026-12-31 23:59:59-15:59:59", "\"2027-01-01T15:59:58Z\"");
}

Test(value_timestamptz, malformed) {
    check_bad(&T_TSTZ, "2026-11-24 10:00:00");
    check_bad(&T_TSTZ, "2026-11-24 10:00:00+5");
    check_bad(&T_TSTZ, "2026-11-24 10:00:00+05:");
    check_bad(&T_TSTZ, "2026-11-24 10:00:00+05:30:");
    check_bad(&T_TSTZ, "2026-11-24 10:00:00Z");
    check_bad(&T_TSTZ, "2026-11-24 10:00:00+00 AD");
}

/* ---- times and intervals ---------------------------------------------- */

Test(value_time, as_sent) {
    check(&T_TIME, "10:00:00", "\"10:00:00\"");
    check(&T_TIME, "10:00:00.123", "\"10:00:00.123\"");
    check(&T_TIME, "24:00:00", "\"24:00:00\"");
}

Test(value_timetz, offset_as_hh_mm) {
    check(&T_TIMETZ, "10:00:00+05", "\"10:00:00+05:00\"");
    check(&T_TIMETZ, "10:00:00+00", "\"10:00:00+00:00\"");
    check(&T_TIMETZ, "10:00:00.25-08:30", "\"10:00:00.25-08:30\"");
    check(&T_TIMETZ, "10:00:00-08", "\"10:00:00-08:00\"");
    check(&T_TIMETZ, "10:00:00+05:53:28", "\"10:00:00+05:53:28\"");
    check(&T_TIMETZ, "24:00:00-15:59", "\"24:00:00-15:59\"");
    check_bad(&T_TIMETZ, "10:00:00");
    check_bad(&T_TIMETZ, "10:00:00+5");
    check_bad(&T_TIMETZ, "10:00+05");
    check_bad(&T_TIMETZ, "10:00:00+05 ");
}

Test(value_interval, iso_8601) {
    check(&T_INTERVAL, "P1Y2M3DT4H5M6.5S", "\"P1Y2M3DT4H5M6.5S\"");
    check(&T_INTERVAL, "PT0S", "\"PT0S\"");
    check(&T_INTERVAL, "P-1DT2H", "\"P-1DT2H\"");
    check(&T_INTERVAL, "P-1Y-2M", "\"P-1Y-2M\"");
}

/* ---- uuid and text ---------------------------------------------------- */

Test(value_uuid, string) {
    check(&T_UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"");
}

Test(value_text, escaping) {
    check(&T_TEXT, "", "\"\"");
    check(&T_TEXT, "plain", "\"plain\"");
    check(&T_TEXT, "a\"b\\c", "\"a\\\"b\\\\c\"");
    check(&T_TEXT, "l1\nl2\r\tx\b\f\x01\x1f", "\"l1\\nl2\\r\\tx\\b\\f\\u0001\\u001f\"");
    check(&T_TEXT, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
    /* Invalid UTF-8 becomes U+FFFD so the document stays valid. */
    check(&T_TEXT, "a\xff" "b", "\"a\xef\xbf\xbd" "b\"");
    check(&T_TEXT, "\xc3", "\"\xef\xbf\xbd\"");
    check(&T_TEXT, "\xed\xa0\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""); /* a surrogate */
    check_n(&T_TEXT, "a\0b", 3, "\"a\\u0000b\"");
    check(&T_TEXT, "$12.50", "\"$12.50\""); /* money */
}

Test(value_text, render_text_fallback) {
    crw_buf_t b = CRW_BUF_INIT;
    crw_value_render_text(&b, "2026-13-45 \"x\"", 14);
    cr_assert_str_eq(b.data, "\"2026-13-45 \\\"x\\\"\"");
    assert_json(b.data, b.len);
    crw_buf_free(&b);
}

/* ---- arrays ----------------------------------------------------------- */

Test(value_array, int_shapes) {
    check(&A_INT, "{1,2,NULL}", "[1,2,null]");
    check(&A_INT, "{}", "[]");
    check(&A_INT, "{{1,2},{3,4}}", "[[1,2],[3,4]]");
    check(&A_INT, "{{{1,2},{3,4}},{{5,NULL},{7,8}}}", "[[[1,2],[3,4]],[[5,null],[7,8]]]");
    check(&A_INT, "{{{{{{1}}}}}}", "[[[[[[1]]]]]]"); /* MAXDIM */
    check(&A_INT, "[0:2]={1,2,3}", "[1,2,3]");
    check(&A_INT, "[1:1][-2:-1]={{1,2}}", "[[1,2]]");
    check(&A_INT, "{null,Null,nULL}", "[null,null,null]");
    check(&A_INT, "{-9223372036854775808,9223372036854775807}", "[-9223372036854775808,9223372036854775807]");
    check(&A_INT, " { 1 , 2 } ", "[1,2]"); /* array_in's whitespace */
}

Test(value_array, int_malformed) {
    check_bad(&A_INT, "");
    check_bad(&A_INT, "{1,2");
    check_bad(&A_INT, "{1,,2}");
    check_bad(&A_INT, "{1,}");
    check_bad(&A_INT, "1,2");
    check_bad(&A_INT, "{1,2}x");
    check_bad(&A_INT, "{1,{2}}");
    check_bad(&A_INT, "{{1},2}");
    check_bad(&A_INT, "{1,x}");
    check_bad(&A_INT, "{\"1\",\"x\"}");
    check_bad(&A_INT, "[0:2]{1}");
    check_bad(&A_INT, "[0:2]=");
    check_bad(&A_INT, "{\"1}");
    check_bad(&A_INT, "{1\"2\"}");
    check_bad(&A_INT, "{{{{{{{{{{{{{{{{{{1}}}}}}}}}}}}}}}}}}"); /* beyond the depth bound */
}

Test(value_array, text_quoting) {
    /* As array_out printed these. */
    check(&A_TEXT, "{\"a b\",\"c\\\"d\",\"NULL\",NULL,\"x\\\\y\",\"{a}\",\"a,b\",\"\"}",
          "[\"a b\",\"c\\\"d\",\"NULL\",null,\"x\\\\y\",\"{a}\",\"a,b\",\"\"]");
    check(&A_TEXT, "{\"a\\\"b\\\\c\",\"x{y}\",semi;colon,\"tab\there\",\"\"}",
          "[\"a\\\"b\\\\c\",\"x{y}\",\"semi;colon\",\"tab\\there\",\"\"]");
    check(&A_TEXT, "{\"line\nbreak\"}", "[\"line\\nbreak\"]");
    check(&A_TEXT, "{\"a b\",\" lead\",\"null\",\"Null\"}", "[\"a b\",\" lead\",\"null\",\"Null\"]");
    /* array_in style input: unquoted elements are trimmed. */
    check(&A_TEXT, "{a,  b  , \" c \" }", "[\"a\",\"b\",\" c \"]");
    /* A backslash-escaped NULL is the string, not SQL NULL. */
    check(&A_TEXT, "{\\NULL,N\\ULL}", "[\"NULL\",\"NULL\"]");
    check(&A_TEXT, "{{a,b},{\"}\",\"{\"}}", "[[\"a\",\"b\"],[\"}\",\"{\"]]");
    check(&A_TEXT, "{\"caf\xc3\xa9\",\"\xff\"}", "[\"caf\xc3\xa9\",\"\xef\xbf\xbd\"]");
}

Test(value_array, box_uses_semicolon) {
    check(&A_BOX, "{(1,2),(0,0);(3,3),(1,1)}", "[\"(1,2),(0,0)\",\"(3,3),(1,1)\"]");
    check_bad(&A_BOX, "{(1,2),(0,0);(3,3),(1,1)");
}

Test(value_array, jsonb_and_json) {
    check(&A_JSONB, "{\"{\\\"a\\\": 1}\",\"[1, 2]\",\"\\\"s\\\"\",\"null\",3,NULL}",
          "[{\"a\":1},[1,2],\"s\",null,3,null]");
    check(&A_JSONB, "{\"{\\\"n\\\": 123456789012345678901234567890}\"}", "[{\"n\":123456789012345678901234567890}]");
    /* json[] as array_out printed it: the newline inside the element is raw. */
    check(&A_JSON, "{\"{\\\"a\\\" : 1,\n \\\"b\\\": \\\" x \\\"}\"}", "[{\"a\":1,\"b\":\" x \"}]");
    check(&A_JSON, "{\"{\\\"a\\\" :\n 1}\"}", "[{\"a\":1}]");
}

Test(value_array, other_classes) {
    check(&A_BOOL, "{t,f}", "[true,false]");
    check(&A_BOOL, "{t,NULL}", "[true,null]");
    check(&A_BYTEA, "{\"\\\\x01\",\"\\\\x\"}", "[\"AQ==\",\"\"]");
    check(&A_BYTEA, "{\"\\\\\\\\\\\\001\"}", "[\"XAE=\"]"); /* escape form inside an array */
    check(&A_TSTZ, "{\"2026-01-01 10:00:00+00\",NULL}", "[\"2026-01-01T10:00:00Z\",null]");
    check(&A_TSTZ, "{\"2024-02-28 20:00:00-08\",-infinity}", "[\"2024-02-29T04:00:00Z\",\"-infinity\"]");
    check(&A_NUMERIC, "{1.5,NaN,1.50}", "[\"1.5\",\"NaN\",\"1.50\"]");
    check(&A_FLOAT, "{NaN,1e+30,-Infinity,-0}", "[\"NaN\",1e+30,\"-Infinity\",-0]");
    check(&A_DATE, "{\"0044-03-15 BC\",infinity}", "[\"-0043-03-15\",\"infinity\"]");
    check(&A_TIMETZ, "{10:00:00+05}", "[\"10:00:00+05:00\"]");
    check(&A_INTERVAL, "{P1D,PT1S}", "[\"P1D\",\"PT1S\"]");
    check(&A_UUID, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}", "[\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\",null]");
    check_bad(&A_BOOL, "{t,x}");
    check_bad(&A_DATE, "{\"0044-03-15 AD\"}");
}

Test(value_array, large_escaped_elements_reuse_scratch) {
    /* Elements longer than any initial scratch size, each with escapes. */
    crw_buf_t in = CRW_BUF_INIT, want = CRW_BUF_INIT;
    crw_buf_putc(&in, '{');
    crw_buf_putc(&want, '[');
    for (int e = 0; e < 20; e++) {
        if (e) {
            crw_buf_putc(&in, ',');
            crw_buf_putc(&want, ',');
        }
        crw_buf_putc(&in, '"');
        crw_buf_putc(&want, '"');
        for (int i = 0; i < 300 * (e + 1); i++) {
            crw_buf_puts(&in, i % 7 ? "x" : "\\\"");
            crw_buf_puts(&want, i % 7 ? "x" : "\\\"");
        }
        crw_buf_putc(&in, '"');
        crw_buf_putc(&want, '"');
    }
    crw_buf_putc(&in, '}');
    crw_buf_putc(&want, ']');
    check_n(&A_TEXT, in.data, in.len, want.data);
    crw_value_thread_cleanup();
    check_n(&A_TEXT, in.data, in.len, want.data); /* usable after cleanup */
    crw_value_thread_cleanup();
    crw_buf_free(&in);
    crw_buf_free(&want);
}

Test(value_render, failure_restores_the_buffer) {
    /* A failure deep inside an array, after output was appended, leaves the
     * buffer exactly as it was so the caller can fall back to text. */
    crw_buf_t b = CRW_BUF_INIT;
    crw_buf_puts(&b, "{\"a\":");
    const char *bad = "{{1,2},{3,4},{5,\"6x\"}}";
    cr_assert_eq(crw_value_render(&b, &A_INT, bad, strlen(bad)), -1);
    cr_assert_eq(b.len, 5);
    cr_assert_str_eq(b.data, "{\"a\":");
    crw_value_render_text(&b, bad, strlen(bad));
    crw_buf_putc(&b, '}');
    cr_assert_str_eq(b.data, "{\"a\":\"{{1,2},{3,4},{5,\\\"6x\\\"}}\"}");
    assert_json(b.data, b.len);
    crw_buf_free(&b);
}

Test(value_render, not_nul_terminated_input) {
    /* Values are (ptr,len) slices of the wire buffer: never read past len. */
    const char *wire = "2026-11-24 10:00:00+00|t|{1,2}x";
    check_n(&T_TSTZ, wire, 22, "\"2026-11-24T10:00:00Z\"");
    check_n(&T_BOOL, wire + 23, 1, "true");
    check_n(&A_INT, wire + 25, 5, "[1,2]");
    check_n(&T_INT, "12345", 2, "12");
}

/* A json value that is not one RFC 8259 value (damaged: PostgreSQL's own never is) comes out as a string. */
Test(value_json, text_that_is_not_json_becomes_a_string) {
    static const char *const bad[] = {":1", "{\"a\" 1}", "[1,]", "01", "tru", "1 2", "{,}", "{\"a\":}", "[}",
                                      "-", "1.", "1e", "+1", "{\"a\":1,}", "[[1]", "\"open", "nul", "[1 2]",
                                      "{1:2}", "{\"a\":1 \"b\":2}", "]", ",", ""};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        crw_buf_t b = CRW_BUF_INIT;
        if (crw_value_render(&b, &T_JSON, bad[k], strlen(bad[k])) < 0) {
            crw_buf_reset(&b);
            crw_value_render_text(&b, bad[k], strlen(bad[k]));
        }
        json_object *o = json_tokener_parse(b.data ? b.data : "");
        cr_expect(o && json_object_is_type(o, json_type_string), "'%s' gave %s", bad[k], b.data ? b.data : "(nothing)");
        json_object_put(o);
        crw_buf_free(&b);
    }
    static const char *const good[][2] = {
        {"{\"a\": [1, -2.5e+3, 0, true, false, null, {}, []], \"b\": {\"c\": \"d\"}}",
         "{\"a\":[1,-2.5e+3,0,true,false,null,{},[]],\"b\":{\"c\":\"d\"}}"},
        {" 0 ", "0"}, {"\"s\"", "\"s\""}, {"[[[[]]]]", "[[[[]]]]"}, {"-0.5E-7", "-0.5E-7"}};
    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
        crw_buf_t b = CRW_BUF_INIT;
        cr_expect_eq(crw_value_render(&b, &T_JSON, good[k][0], strlen(good[k][0])), 0, "%s", good[k][0]);
        cr_expect_str_eq(b.data ? b.data : "", good[k][1]);
        crw_buf_free(&b);
    }
}
