/*
 * test_metrics.c — core/metrics.c: counters, gauges, events by kind and
 * type, the commit-to-ack histogram, and their Prometheus text.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/metrics.h"
#include "prom_sample.h"

static char *render(void) {
    crw_buf_t b = CRW_BUF_INIT;
    crw_metrics_render(&b);
    return b.data;
}

static void setup(void) { crw_metrics_reset(); }

TestSuite(metrics, .init = setup);

Test(metrics, scalars_render_with_help_and_type) {
    crw_metric_add(CRW_M_RECONNECTS, 2);
    crw_metric_add(CRW_M_RECONNECTS, 1);
    crw_metric_set(CRW_M_SLOT_RETAINED_WAL, 123456789012);
    crw_metric_set(CRW_M_SOURCE_LAG_US, 1500);
    char *page = render();
    cr_expect_eq(prom_sample(page, "crwatch_reconnects_total"), 3);
    cr_expect(strstr(page, "crwatch_slot_retained_wal_bytes 123456789012\n"), "%s", page);
    cr_expect(strstr(page, "crwatch_source_lag_seconds 0.001500\n"), "microseconds as seconds: %s", page);
    cr_expect(strstr(page, "# TYPE crwatch_reconnects_total counter\n"), "%s", page);
    cr_expect(strstr(page, "# TYPE crwatch_active gauge\n"), "%s", page);
    cr_expect(strstr(page, "# HELP crwatch_events_total "), "%s", page);
    free(page);
}

Test(metrics, events_by_kind_and_type_with_escaped_labels) {
    for (int i = 0; i < 5; i++)
        crw_metric_event("VideoTranscodingJob", "ADDED");
    crw_metric_event("VideoTranscodingJob", "DELETED");
    crw_metric_event("odd\"kind\\", "SYNC");
    char *page = render();
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"VideoTranscodingJob\",type=\"ADDED\"}"), 5, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"VideoTranscodingJob\",type=\"DELETED\"}"), 1, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"odd\\\"kind\\\\\",type=\"SYNC\"}"), 1, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"VideoTranscodingJob\",type=\"MODIFIED\"}"), -1);
    free(page);
}

Test(metrics, histogram_buckets_are_cumulative) {
    crw_metric_commit_to_ack(300);     /* 0.3 ms */
    crw_metric_commit_to_ack(3000);    /* 3 ms */
    crw_metric_commit_to_ack(3000);
    crw_metric_commit_to_ack(90000000); /* 90 s: past every bound */
    crw_metric_commit_to_ack(-5);      /* clocks apart: counted as 0 */
    char *page = render();
    cr_expect_eq(prom_sample(page, "crwatch_commit_to_ack_seconds_bucket{le=\"0.0005\"}"), 2, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_commit_to_ack_seconds_bucket{le=\"0.0025\"}"), 2, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_commit_to_ack_seconds_bucket{le=\"0.005\"}"), 4, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_commit_to_ack_seconds_bucket{le=\"60\"}"), 4, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_commit_to_ack_seconds_bucket{le=\"+Inf\"}"), 5, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_commit_to_ack_seconds_count"), 5, "%s", page);
    cr_expect_float_eq(prom_sample(page, "crwatch_commit_to_ack_seconds_sum"), 90.0063, 1e-6, "%s", page);
    free(page);
}

Test(metrics, sink_step_histograms_have_their_own_finer_buckets) {
    crw_metric_observe(CRW_H_KAFKA_DELIVERY, 80);   /* 0.08 ms */
    crw_metric_observe(CRW_H_KAFKA_DELIVERY, 300);  /* 0.3 ms */
    crw_metric_observe(CRW_H_KAFKA_DELIVERY, 7000); /* 7 ms */
    crw_metric_observe(CRW_H_KAFKA_TXN_COMMIT, 2000);
    crw_metric_commit_to_ack(400);
    char *page = render();
    cr_expect(strstr(page, "# TYPE crwatch_kafka_delivery_seconds histogram\n"), "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_kafka_delivery_seconds_bucket{le=\"0.0001\"}"), 1, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_kafka_delivery_seconds_bucket{le=\"0.0005\"}"), 2, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_kafka_delivery_seconds_bucket{le=\"0.01\"}"), 3, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_kafka_delivery_seconds_bucket{le=\"+Inf\"}"), 3, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_kafka_delivery_seconds_count"), 3, "%s", page);
    cr_expect_float_eq(prom_sample(page, "crwatch_kafka_delivery_seconds_sum"), 0.00738, 1e-9, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_kafka_transaction_commit_seconds_bucket{le=\"0.0025\"}"), 1, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_kafka_transaction_commit_seconds_count"), 1, "%s", page);
    /* the commit-to-ack histogram keeps its buckets, and counts only its own */
    cr_expect_eq(prom_sample(page, "crwatch_commit_to_ack_seconds_bucket{le=\"0.0001\"}"), -1, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_commit_to_ack_seconds_count"), 1, "%s", page);
    free(page);
    crw_metrics_reset();
    page = render();
    cr_expect_eq(prom_sample(page, "crwatch_kafka_delivery_seconds_count"), 0, "reset: %s", page);
    free(page);
}

Test(metrics, wal_status_marks_one) {
    crw_metric_wal_status("unreserved");
    char *page = render();
    cr_expect_eq(prom_sample(page, "crwatch_slot_wal_status{status=\"unreserved\"}"), 1);
    cr_expect_eq(prom_sample(page, "crwatch_slot_wal_status{status=\"reserved\"}"), 0);
    free(page);
    crw_metric_wal_status(NULL);
    page = render();
    cr_expect_eq(prom_sample(page, "crwatch_slot_wal_status{status=\"unreserved\"}"), 0);
    free(page);
}

static void *count_events(void *arg) {
    for (int i = 0; i < 10000; i++)
        crw_metric_event((const char *)arg, "ADDED");
    return NULL;
}

Test(metrics, events_from_threads_are_all_counted) {
    pthread_t t[4];
    const char *kinds[4] = {"a", "b", "a", "b"};
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, count_events, (void *)kinds[i]);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    char *page = render();
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"a\",type=\"ADDED\"}"), 20000, "%s", page);
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"b\",type=\"ADDED\"}"), 20000, "%s", page);
    free(page);
}

Test(metrics, events_of_a_thousand_kinds_are_all_counted) {
    /* 1000 tables watched as rows are 1000 kinds: 3000 kind/type pairs, each counted on its own */
    static const char *const types[3] = {"ADDED", "MODIFIED", "DELETED"};
    char kind[32];
    for (int round = 0; round < 2; round++)
        for (int k = 0; k < 1000; k++)
            for (int t = 0; t < 3; t++) {
                snprintf(kind, sizeof kind, "t%d", k);
                for (int i = 0; i <= t; i++)
                    crw_metric_event(kind, types[t]);
            }
    char *page = render();
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"t0\",type=\"ADDED\"}"), 2, "%.300s", page);
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"t999\",type=\"DELETED\"}"), 6);
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"t500\",type=\"MODIFIED\"}"), 4);
    int lines = 0;
    for (const char *p = page; (p = strstr(p, "\ncrwatch_events_total{")); p++)
        lines++;
    cr_expect_eq(lines, 3000, "one sample per pair");
    free(page);
}

Test(metrics, events_past_the_pool_are_left_out, .fini = crw_metrics_reset) {
    char kind[32];
    for (int k = 0; k < 5000; k++) {
        snprintf(kind, sizeof kind, "k%d", k);
        crw_metric_event(kind, "SYNC");
        crw_metric_event(kind, "SYNC");
    }
    char *page = render();
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"k0\",type=\"SYNC\"}"), 2);
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"k4095\",type=\"SYNC\"}"), 2);
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"k4096\",type=\"SYNC\"}"), -1, "past the pool");
    free(page);
    crw_metrics_reset();
    crw_metric_event("k4096", "SYNC");
    page = render();
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"k4096\",type=\"SYNC\"}"), 1, "reset empties it");
    cr_expect_eq(prom_sample(page, "crwatch_events_total{kind=\"k0\",type=\"SYNC\"}"), -1, "reset empties it");
    free(page);
}

Test(metrics, health_beat_and_ready) {
    cr_expect_eq(crw_health_age_ms(), 0, "no beat yet");
    crw_health_beat();
    cr_expect_lt(crw_health_age_ms(), 1000);
    crw_health_set_ready(1);
    cr_expect_eq(crw_health_ready(), 1);
    cr_expect_eq(crw_metric_get(CRW_M_ACTIVE), 1);
    crw_health_set_ready(0);
    cr_expect_eq(crw_metric_get(CRW_M_ACTIVE), 0);
}
