/*
 * test_log.c — the log lines (core/log.c) as they reach stderr: the text
 * format unchanged, and log.format=json always one valid JSON object a line,
 * whatever bytes the message carries and however long it is.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "json_assert.h"

static char out[65536];
static size_t out_len;
static int saved_fd = -1, cap_fd = -1;

/* stderr goes to a temporary file (dup2, not freopen: crw_log_write keeps using the same FILE). */
static void capture_begin(void) {
    char path[] = "/tmp/crw-log-XXXXXX";
    cap_fd = mkstemp(path);
    cr_assert(cap_fd >= 0);
    unlink(path);
    fflush(stderr);
    saved_fd = dup(STDERR_FILENO);
    cr_assert(saved_fd >= 0);
    cr_assert(dup2(cap_fd, STDERR_FILENO) >= 0);
}

/* Puts stderr back and reads what was written into out (NUL-terminated). */
static const char *capture_end(void) {
    fflush(stderr);
    dup2(saved_fd, STDERR_FILENO);
    close(saved_fd);
    saved_fd = -1;
    off_t size = lseek(cap_fd, 0, SEEK_END);
    cr_assert(size >= 0 && (size_t)size < sizeof out, "captured %lld bytes", (long long)size);
    ssize_t r = pread(cap_fd, out, (size_t)size, 0);
    cr_assert_eq(r, size);
    close(cap_fd);
    cap_fd = -1;
    out_len = (size_t)size;
    out[out_len] = '\0';
    return out;
}

static void fini(void) {
    if (saved_fd >= 0) { /* an assertion failed mid-capture */
        dup2(saved_fd, STDERR_FILENO);
        close(saved_fd);
        saved_fd = -1;
    }
    crw_log_set_field("slot", NULL);
    crw_log_set_field("pid", NULL);
    crw_log_set_field("a", NULL);
    crw_log_set_format(CRW_LOG_TEXT);
    crw_log_level = CRW_LOG_INFO;
}

TestSuite(log, .fini = fini);

/* Requires out to be exactly one line, valid strict JSON; returns it parsed (the caller puts it). */
static json_object *one_json_line(void) {
    cr_assert_gt(out_len, 1);
    cr_assert_eq(out[out_len - 1], '\n', "<%s> ends with a newline", out);
    cr_assert_eq(memchr(out, '\n', out_len - 1), NULL, "<%s> is one line", out);
    out[out_len - 1] = '\0'; /* assert_json reads the NUL that ends its input */
    assert_json(out, out_len - 1);
    json_object *o = json_tokener_parse(out);
    cr_assert_not_null(o, "json_tokener_parse(<%s>)", out);
    out[out_len - 1] = '\n';
    cr_assert(json_object_is_type(o, json_type_object));
    return o;
}

static const char *str_field(json_object *o, const char *key) {
    json_object *v;
    cr_assert(json_object_object_get_ex(o, key, &v), "no %s in <%s>", key, out);
    cr_assert(json_object_is_type(v, json_type_string), "%s is not a string in <%s>", key, out);
    return json_object_get_string(v);
}

/* "2026-12-01T14:08:41.123Z" */
static void assert_ts(const char *ts) {
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    cr_assert_eq(strlen(ts), strlen(shape), "ts <%s>", ts);
    for (size_t i = 0; shape[i]; i++)
        cr_assert(shape[i] == 'd' ? isdigit((unsigned char)ts[i]) != 0 : ts[i] == shape[i], "ts <%s>", ts);
}

Test(log, text_format_is_unchanged) {
    crw_log_set_field("slot", "crwatch"); /* fields are for JSON lines only */
    capture_begin();
    crw_info("hello %d", 42);
    capture_end();
    const char *tail = " crwatch INFO: hello 42\n";
    cr_assert_eq(out_len, 24 + strlen(tail), "<%s>", out);
    cr_assert_str_eq(out + 24, tail);
    out[24] = '\0';
    assert_ts(out);
}

Test(log, json_line_has_ts_level_msg_and_fields_in_order) {
    crw_log_set_format(CRW_LOG_JSON);
    crw_log_set_field("slot", "crwatch");
    crw_log_set_field("pid", "12\"3"); /* values are escaped too */
    capture_begin();
    crw_info("hello %d", 42);
    capture_end();
    json_object *o = one_json_line();
    assert_ts(str_field(o, "ts"));
    cr_assert_str_eq(str_field(o, "level"), "info");
    cr_assert_str_eq(str_field(o, "msg"), "hello 42");
    cr_assert_str_eq(str_field(o, "slot"), "crwatch");
    cr_assert_str_eq(str_field(o, "pid"), "12\"3");
    cr_assert_eq(json_object_object_length(o), 5);
    json_object_put(o);
    /* The documented shape, byte for byte after the timestamp. */
    const char *want = "\",\"level\":\"info\",\"msg\":\"hello 42\",\"slot\":\"crwatch\",\"pid\":\"12\\\"3\"}\n";
    cr_assert_eq(strncmp(out, "{\"ts\":\"", 7), 0, "<%s>", out);
    cr_assert_str_eq(out + 7 + 24, want);
}

Test(log, json_levels_are_lower_case) {
    crw_log_set_format(CRW_LOG_JSON);
    crw_log_level = CRW_LOG_DEBUG;
    const char *want[] = {"error", "warn", "info", "debug"};
    for (int l = CRW_LOG_ERROR; l <= CRW_LOG_DEBUG; l++) {
        capture_begin();
        CRW_LOG((crw_log_level_t)l, "at %d", l);
        capture_end();
        json_object *o = one_json_line();
        cr_assert_str_eq(str_field(o, "level"), want[l]);
        json_object_put(o);
    }
}

Test(log, a_field_set_to_null_is_removed_and_a_reset_one_keeps_its_place) {
    crw_log_set_format(CRW_LOG_JSON);
    crw_log_set_field("slot", "s1");
    crw_log_set_field("a", "1");
    crw_log_set_field("slot", "s2");
    capture_begin();
    crw_info("x");
    capture_end();
    cr_assert_neq(strstr(out, "\"msg\":\"x\",\"slot\":\"s2\",\"a\":\"1\"}\n"), NULL, "<%s>", out);

    crw_log_set_field("slot", NULL);
    crw_log_set_field("never-set", NULL); /* removing what is not there is harmless */
    capture_begin();
    crw_info("y");
    capture_end();
    json_object *o = one_json_line();
    json_object *v;
    cr_assert_not(json_object_object_get_ex(o, "slot", &v), "<%s>", out);
    cr_assert_str_eq(str_field(o, "a"), "1");
    json_object_put(o);

    crw_log_set_field("a", NULL);
    capture_begin();
    crw_info("z");
    capture_end();
    o = one_json_line();
    cr_assert_eq(json_object_object_length(o), 3, "<%s>", out);
    json_object_put(o);
}

Test(log, reserved_and_extra_fields_are_refused) {
    crw_log_set_format(CRW_LOG_JSON);
    capture_begin();
    crw_log_set_field("msg", "shadow");
    char key[16][8];
    for (int i = 0; i < 9; i++) {
        snprintf(key[i], sizeof key[i], "k%d", i);
        crw_log_set_field(key[i], "v");
    }
    crw_info("x");
    capture_end();
    /* Two warnings (reserved, ninth field) then the line; every one valid JSON. */
    char *line = out, *nl;
    int lines = 0;
    json_object *last = NULL;
    while ((nl = strchr(line, '\n'))) {
        *nl = '\0';
        assert_json(line, (size_t)(nl - line));
        json_object_put(last);
        last = json_tokener_parse(line);
        line = nl + 1;
        lines++;
    }
    cr_assert_eq(lines, 3, "<%s>", out);
    cr_assert_str_eq(json_object_get_string(json_object_object_get(last, "msg")), "x");
    cr_assert_eq(json_object_object_length(last), 3 + 8);
    cr_assert_null(json_object_object_get(last, "k8"));
    json_object_put(last);
    for (int i = 0; i < 9; i++)
        crw_log_set_field(key[i], NULL);
}

Test(log, json_escapes_and_replaces_invalid_utf8) {
    crw_log_set_format(CRW_LOG_JSON);
    const char *msg = "say \"hi\" \\ a\nb\tc\rd \x01 e \x1f bad \xff\xfe é 日本 \x7f";
    capture_begin();
    crw_error("%s", msg);
    capture_end();
    json_object *o = one_json_line();
    cr_assert_str_eq(str_field(o, "msg"),
                     "say \"hi\" \\ a\nb\tc\rd \x01 e \x1f bad \xef\xbf\xbd\xef\xbf\xbd é 日本 \x7f");
    json_object_put(o);
    /* The escapes themselves; valid UTF-8 goes out as is, not as \u escapes. */
    cr_assert_neq(strstr(out, "say \\\"hi\\\" \\\\ a\\nb\\tc\\rd \\u0001 e \\u001f bad \\ufffd\\ufffd é 日本 \x7f\""),
                  NULL, "<%s>", out);
}

Test(log, json_replaces_each_byte_of_overlongs_surrogates_and_cut_sequences) {
    crw_log_set_format(CRW_LOG_JSON);
    struct {
        const char *in, *want;
    } cases[] = {
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                                 /* overlong '/' */
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},                 /* a surrogate */
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* past U+10FFFF */
        {"x\xe6\x97", "x\xef\xbf\xbd\xef\xbf\xbd"},                               /* cut at the end */
        {"\xe6\x97x", "\xef\xbf\xbd\xef\xbf\xbdx"},                               /* cut in the middle */
        {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"},                                 /* a 4-byte emoji is fine */
        {"key=value other=\"x\"", "key=value other=\"x\""},                       /* not parsed into fields */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        capture_begin();
        crw_info("%s", cases[i].in);
        capture_end();
        json_object *o = one_json_line();
        cr_assert_str_eq(str_field(o, "msg"), cases[i].want, "case %zu: <%s>", i, out);
        cr_assert_eq(json_object_object_length(o), 3, "case %zu: <%s>", i, out);
        json_object_put(o);
    }
}

/* Logs n copies of unit; requires one valid line whose msg is a cut copy of the message, decoded, with at least min
 * copies (whole ones when whole: the unit is one character). */
static void long_message(const char *unit, const char *decoded, size_t n, size_t min, bool whole) {
    size_t ul = strlen(unit), dl = strlen(decoded);
    char *msg = malloc(n * ul + 1);
    cr_assert_not_null(msg);
    for (size_t i = 0; i < n; i++)
        memcpy(msg + i * ul, unit, ul);
    msg[n * ul] = '\0';
    capture_begin();
    crw_info("%s", msg);
    capture_end();
    free(msg);
    cr_assert_leq(out_len, 4096, "%zu bytes", out_len);
    json_object *o = one_json_line();
    const char *m = str_field(o, "msg");
    size_t ml = strlen(m);
    if (whole)
        cr_assert_eq(ml % dl, 0, "msg ends inside <%s>: %zu bytes", unit, ml);
    cr_assert_geq(ml / dl, min, "only %zu copies of <%s>", ml / dl, unit);
    cr_assert_lt(ml / dl, n);
    for (size_t i = 0; i < ml; i++)
        cr_assert_eq(m[i], decoded[i % dl], "byte %zu of <%s>", i, unit);
    cr_assert_str_eq(str_field(o, "slot"), "crwatch", "the fields survive the cut");
    json_object_put(o);
}

Test(log, a_long_json_message_is_cut_into_one_valid_line) {
    crw_log_set_format(CRW_LOG_JSON);
    crw_log_set_field("slot", "crwatch");
    long_message("a", "a", 10000, 3000, true);
    long_message("\x01", "\x01", 10000, 600, true);  /* 6-byte escapes */
    long_message("\"", "\"", 10000, 1500, true);     /* 2-byte escapes */
    long_message("日", "日", 10000 / 3, 1000, true); /* 3-byte sequences */
    long_message("\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80", 2500, 700, true);
    long_message("\xff", "\xef\xbf\xbd", 10000, 600, true); /* \ufffd */
    /* Mixed units: the cut may fall at any of their characters. */
    long_message("a\x02", "a\x02", 5000, 500, false);
    long_message("ab\x02日", "ab\x02日", 1500, 300, false);
}

Test(log, a_long_text_message_is_still_cut_at_2048) {
    char msg[10001];
    memset(msg, 'a', sizeof msg - 1);
    msg[sizeof msg - 1] = '\0';
    capture_begin();
    crw_info("%s", msg);
    capture_end();
    cr_assert_eq(out_len, 2047);
    cr_assert_eq(out[out_len - 1], '\n');
    cr_assert_eq(memchr(out, '\n', out_len - 1), NULL);
}
