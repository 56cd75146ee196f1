/* test_conf.c — the configuration table: defaults, files, -X, errors. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/conf.h"
#include "core/err.h"

static char err[1024];

static crw_config_t *conf_from(const char *const *pairs) {
    crw_config_t *c = crw_config_new();
    for (; *pairs; pairs++)
        cr_assert_eq(crw_config_set_pair(c, *pairs, err, sizeof err), 0, "%s: %s", *pairs, err);
    return c;
}

static char *write_tmp(const char *text) {
    static char path[] = "/tmp/crw-conf-XXXXXX";
    strcpy(path, "/tmp/crw-conf-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

Test(conf, defaults_match_the_design) {
    crw_config_t *c = crw_config_new();
    cr_assert_eq(c->source, CRW_SOURCE_AUTO);
    cr_assert_str_eq(c->slot_name, "crwatch");
    cr_assert_str_eq(c->publication_name, "crwatch");
    cr_assert(c->slot_create);
    cr_assert(c->publication_create);
    cr_assert_eq(c->sinks.n, 1);
    cr_assert_str_eq(c->sinks.v[0], "stdout");
    cr_assert_str_eq(c->topic_template, "crwatch.{schema}.{table}");
    cr_assert_eq(c->event_format, CRW_FORMAT_CLOUDEVENTS);
    cr_assert_eq(c->delivery, CRW_DELIVERY_AT_LEAST_ONCE);
    cr_assert_eq(c->poll_interval_ms, 1000);
    cr_assert_eq(c->exec_mode, CRW_EXEC_STREAM);
    crw_config_destroy(c);
}

Test(conf, tables_shorthand_expands_to_row_resources) {
    const char *p[] = {"tables = public.jobs, app.things ,plain", NULL};
    crw_config_t *c = conf_from(p);
    cr_assert_eq(crw_config_finalize(c, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c->nresources, 3);
    cr_assert_str_eq(c->resources[0].schema, "public");
    cr_assert_str_eq(c->resources[0].table, "jobs");
    cr_assert_str_eq(c->resources[0].kind, "jobs");
    cr_assert_str_eq(c->resources[1].schema, "app");
    cr_assert_str_eq(c->resources[1].table, "things");
    cr_assert_str_eq(c->resources[2].schema, "public");
    cr_assert_str_eq(c->resources[2].table, "plain");
    crw_config_destroy(c);
}

Test(conf, resource_keys) {
    const char *p[] = {"resource.jobs.table=public.video_jobs", "resource.jobs.kind=VideoTranscodingJob",
                       "resource.jobs.key=namespace,name", NULL};
    crw_config_t *c = conf_from(p);
    cr_assert_eq(crw_config_finalize(c, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c->nresources, 1);
    cr_assert_str_eq(c->resources[0].id, "jobs");
    cr_assert_str_eq(c->resources[0].table, "video_jobs");
    cr_assert_str_eq(c->resources[0].kind, "VideoTranscodingJob");
    cr_assert_eq(c->resources[0].key.n, 2);
    cr_assert_str_eq(c->resources[0].key.v[1], "name");
    crw_config_destroy(c);
}

Test(conf, kafka_properties_pass_through) {
    const char *p[] = {"kafka.bootstrap.servers=a:9092", "kafka.sasl.password=s3cret", "kafka.bootstrap.servers=b:1",
                       NULL};
    crw_config_t *c = conf_from(p);
    cr_assert_eq(c->nkafka, 2);
    cr_assert_str_eq(c->kafka[0].key, "bootstrap.servers");
    cr_assert_str_eq(c->kafka[0].value, "b:1");
    crw_config_destroy(c);
}

struct bad {
    const char *pair;
    const char *mention;
};

Test(conf, bad_values_name_the_key) {
    static const struct bad cases[] = {
        {"nosuch.key=1", "nosuch.key"},
        {"source=kafka", "source"},
        {"slot.create=maybe", "slot.create"},
        {"poll.interval.ms=-5", "poll.interval.ms"},
        {"poll.interval.ms=12abc", "poll.interval.ms"},
        {"sink=", "sink"},
        {"sink=stdout,,kafka", "sink"},
        {"tables=a,,b", "tables"},
        {"resource.x.colour=red", "colour"},
        {"resource..table=t", "resource..table"},
        {"kafka.=x", "kafka."},
        {"log.level=loud", "log.level"},
        {"justakey", "justakey"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        crw_config_t *c = crw_config_new();
        err[0] = '\0';
        cr_assert_eq(crw_config_set_pair(c, cases[i].pair, err, sizeof err), CRW_ERR_CONFIG, "%s accepted",
                     cases[i].pair);
        cr_assert(strstr(err, cases[i].mention), "error for %s does not name %s: %s", cases[i].pair,
                  cases[i].mention, err);
        crw_config_destroy(c);
    }
}

Test(conf, finalize_rejects_incomplete_and_duplicate_resources) {
    const char *p1[] = {"resource.a.kind=K", NULL};
    crw_config_t *c = conf_from(p1);
    cr_assert_eq(crw_config_finalize(c, err, sizeof err), CRW_ERR_CONFIG);
    cr_assert(strstr(err, "resource.a"), "%s", err);
    crw_config_destroy(c);

    const char *p2[] = {"resource.a.table=public.t", "tables=t", NULL};
    c = conf_from(p2);
    cr_assert_eq(crw_config_finalize(c, err, sizeof err), CRW_ERR_CONFIG);
    cr_assert(strstr(err, "public.t"), "%s", err);
    crw_config_destroy(c);

    const char *p3[] = {"slot.name=Bad-Name", NULL};
    c = conf_from(p3);
    cr_assert_eq(crw_config_finalize(c, err, sizeof err), CRW_ERR_CONFIG);
    cr_assert(strstr(err, "slot.name"), "%s", err);
    crw_config_destroy(c);
}

Test(conf, file_comments_blanks_and_errors_with_line_numbers) {
    char *path = write_tmp("# a comment\n\n! another\nslot.name = s1\n  tables=public.t  \n");
    crw_config_t *c = crw_config_new();
    cr_assert_eq(crw_config_load_file(c, path, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(c->slot_name, "s1");
    cr_assert_eq(c->tables.n, 1);
    crw_config_destroy(c);
    unlink(path);

    path = write_tmp("slot.name = ok\nthis line is wrong\n");
    c = crw_config_new();
    cr_assert_eq(crw_config_load_file(c, path, err, sizeof err), CRW_ERR_CONFIG);
    cr_assert(strstr(err, ":2:"), "no line number: %s", err);
    crw_config_destroy(c);
    unlink(path);

    path = write_tmp("slot.name = ok\n\ndelivery = twice\n");
    c = crw_config_new();
    cr_assert_eq(crw_config_load_file(c, path, err, sizeof err), CRW_ERR_CONFIG);
    cr_assert(strstr(err, ":3:") && strstr(err, "delivery"), "%s", err);
    crw_config_destroy(c);
    unlink(path);

    c = crw_config_new();
    cr_assert_eq(crw_config_load_file(c, "/nonexistent/crwatch.properties", err, sizeof err), CRW_ERR_CONFIG);
    cr_assert(strstr(err, "/nonexistent/crwatch.properties"), "%s", err);
    crw_config_destroy(c);
}
