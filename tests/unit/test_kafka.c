/*
 * test_kafka.c — the Kafka sink's pure parts: topic templates, the
 * CloudEvents binary-mode header names, and when an idle stream's batches
 * count as forming (no broker needed).
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

/* An idle stream sends at once, unless many events came in a short time (a bulk load, a stream catching up). */
Test(kafka_idle, batches_form_only_when_many_events_come_quickly) {
    cr_assert_not(crw_kafka_batch_forming(0, 0));
    cr_assert_not(crw_kafka_batch_forming(1, 400), "one change of a 2,000/s stream");
    cr_assert_not(crw_kafka_batch_forming(CRW_KAFKA_IDLE_BATCH_EVENTS, 1000));
    cr_assert(crw_kafka_batch_forming(CRW_KAFKA_IDLE_BATCH_EVENTS + 1, 1000));
    cr_assert(crw_kafka_batch_forming(1000, 10000), "a 1000-row transaction every 10 ms");
    int64_t window_us = (int64_t)CRW_KAFKA_IDLE_BATCH_WINDOW_MS * 1000;
    cr_assert(crw_kafka_batch_forming(200, window_us - 1));
    cr_assert_not(crw_kafka_batch_forming(200, window_us), "a poll batch of 200 rows every 100 ms");
    cr_assert_not(crw_kafka_batch_forming(100000, INT64_MAX / 2), "one big transaction after a quiet hour");
}
