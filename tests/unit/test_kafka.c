/*
 * test_kafka.c — the Kafka sink's pure parts: topic templates and the
 * CloudEvents structured -> binary split (no broker needed).
 */
#include <criterion/criterion.h>
#include <string.h>

#include "sink/kafka.h"

Test(kafka_template, accepts_the_placeholders_and_kafka_characters) {
    char err[256];
    cr_assert_eq(crw_kafka_template_check("crwatch.{schema}.{table}", err, sizeof err), 0);
    cr_assert_eq(crw_kafka_template_check("{kind}_events-v2", err, sizeof err), 0);
}

Test(kafka_template, names_what_is_wrong) {
    char err[256];
    cr_assert_eq(crw_kafka_template_check("crwatch.{schema}.{nope}", err, sizeof err), -1);
    cr_assert(strstr(err, "topic.template") && strstr(err, "{nope}"), "%s", err);
    cr_assert_eq(crw_kafka_template_check("crwatch {table}", err, sizeof err), -1);
    cr_assert(strstr(err, "' '"), "%s", err);
    cr_assert_eq(crw_kafka_template_check("", err, sizeof err), -1);
    cr_assert_eq(crw_kafka_template_check("a{", err, sizeof err), -1);
}

Test(kafka_template, expansion_keeps_topic_names_valid) {
    crw_buf_t b = CRW_BUF_INIT;
    crw_kafka_topic_expand(&b, "crwatch.{schema}.{table}", "public", "video_jobs", "Job");
    cr_assert_str_eq(b.data, "crwatch.public.video_jobs");
    crw_kafka_topic_expand(&b, "{kind}.{kind}", "s", "t", "Vid\xc3\xa9o Job");
    cr_assert_str_eq(b.data, "Vid__o_Job.Vid__o_Job", "got %s", b.data);
    crw_kafka_topic_expand(&b, "fixed", "s", "t", "k");
    cr_assert_str_eq(b.data, "fixed");
    crw_buf_free(&b);
}

typedef struct {
    char names[16][32];
    char values[16][128];
    int n;
} attrs_t;

static void collect(void *opaque, const char *name, size_t namelen, const char *value, size_t len) {
    attrs_t *a = opaque;
    cr_assert_lt(a->n, 16);
    snprintf(a->names[a->n], sizeof a->names[0], "%.*s", (int)namelen, name);
    snprintf(a->values[a->n], sizeof a->values[0], "%.*s", (int)len, value);
    a->n++;
}

static const char *attr(const attrs_t *a, const char *name) {
    for (int i = 0; i < a->n; i++)
        if (!strcmp(a->names[i], name))
            return a->values[i];
    return NULL;
}

Test(kafka_ce, splits_attributes_and_data) {
    const char *ev = "{\"specversion\":\"1.0\",\"id\":\"0/1A2B/3\",\"source\":\"/crwatch/db/public/t\","
                     "\"type\":\"crwatch.T.modified\",\"subject\":\"a\\\"b\\\\c\\/d\",\"time\":\"2026-11-24T10:00:00Z\","
                     "\"datacontenttype\":\"application/json\",\"pglsn\":\"0/1A2B\",\"pgxid\":7412,"
                     "\"data\":{\"type\":\"MODIFIED\",\"s\":\"} ] \\\" {\",\"o\":{\"a\":[1,{\"b\":null}]}}}";
    crw_buf_t scratch = CRW_BUF_INIT;
    attrs_t a = {0};
    const char *data;
    size_t len;
    cr_assert_eq(crw_kafka_ce_split(ev, strlen(ev), &scratch, collect, &a, &data, &len), 0);
    cr_assert_eq(a.n, 9);
    cr_assert_str_eq(attr(&a, "specversion"), "1.0");
    cr_assert_str_eq(attr(&a, "subject"), "a\"b\\c/d", "unescaped: %s", attr(&a, "subject"));
    cr_assert_str_eq(attr(&a, "pgxid"), "7412");
    cr_assert_str_eq(attr(&a, "datacontenttype"), "application/json");
    cr_assert_null(attr(&a, "data"));
    const char *want = "{\"type\":\"MODIFIED\",\"s\":\"} ] \\\" {\",\"o\":{\"a\":[1,{\"b\":null}]}}";
    cr_assert_eq(len, strlen(want));
    cr_assert(!memcmp(data, want, len), "data: %.*s", (int)len, data);
    crw_buf_free(&scratch);
}

Test(kafka_ce, unicode_escapes_become_utf8) {
    const char *ev = "{\"subject\":\"\\u00e9\\ud83d\\ude00\\ud800x\",\"data\":null}";
    crw_buf_t scratch = CRW_BUF_INIT;
    attrs_t a = {0};
    const char *data;
    size_t len;
    cr_assert_eq(crw_kafka_ce_split(ev, strlen(ev), &scratch, collect, &a, &data, &len), 0);
    /* é, U+1F600, and a lone surrogate replaced by U+FFFD */
    cr_assert_str_eq(attr(&a, "subject"), "\xc3\xa9\xf0\x9f\x98\x80\xef\xbf\xbdx");
    cr_assert_eq(len, 4);
    cr_assert(!memcmp(data, "null", 4));
    crw_buf_free(&scratch);
}

Test(kafka_ce, malformed_input_is_refused) {
    static const char *const bad[] = {
        "", "[]", "{\"a\":1", "{\"a\" 1}", "{\"a\":\"x}", "{\"a\":1}x", "{\"data\":{\"a\":1}", "{\"a\":\"\\q\"}",
        "{a:1}",
    };
    crw_buf_t scratch = CRW_BUF_INIT;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        attrs_t a = {0};
        const char *data;
        size_t len;
        cr_assert_eq(crw_kafka_ce_split(bad[i], strlen(bad[i]), &scratch, collect, &a, &data, &len), -1,
                     "accepted: %s", bad[i]);
    }
    attrs_t a = {0};
    const char *data;
    size_t len;
    cr_assert_eq(crw_kafka_ce_split("{ }", 3, &scratch, collect, &a, &data, &len), 0);
    cr_assert_null(data);
    crw_buf_free(&scratch);
}
