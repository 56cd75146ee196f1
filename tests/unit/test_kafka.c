/*
 * test_kafka.c — the Kafka sink's pure parts: topic templates and the
 * CloudEvents binary-mode header names (no broker needed).
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

/* CloudEvents Kafka binding, binary content mode: ce_<attribute>, and content-type for datacontenttype. */
Test(kafka_ce, header_names) {
    char h[64];
    crw_kafka_ce_header_name(h, sizeof h, "subject", 7);
    cr_assert_str_eq(h, "ce_subject");
    crw_kafka_ce_header_name(h, sizeof h, "datacontenttype", 15);
    cr_assert_str_eq(h, "content-type");
    crw_kafka_ce_header_name(h, sizeof h, "pgxid", 5);
    cr_assert_str_eq(h, "ce_pgxid");
    crw_kafka_ce_header_name(h, sizeof h, "specversionXX", 11);
    cr_assert_str_eq(h, "ce_specversion");
}
