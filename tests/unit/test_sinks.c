/*
 * test_sinks.c — the sink registry (sink/sinks.c): the kinds of the `sink`
 * list are checked before anything is opened, and an unknown one is named.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "core/conf.h"
#include "core/err.h"
#include "sink/sinks.h"

static char err[512];

static int check(const char *sinks) {
    crw_config_t *c = crw_config_new();
    cr_assert_eq(crw_config_set(c, "sink", sinks, err, sizeof err), 0, "%s", err);
    err[0] = '\0';
    int rc = crw_sinks_check(c, err, sizeof err);
    crw_config_destroy(c);
    return rc;
}

Test(sinks, every_built_sink_is_known) {
    cr_assert_eq(check("stdout"), 0, "%s", err);
    cr_assert_eq(check("stdout,kafka,exec,plugin"), 0, "%s", err);
    cr_assert_eq(check("plugin,stdout"), 0, "%s", err);
}

Test(sinks, an_unknown_sink_is_named_with_the_known_ones) {
    cr_assert_eq(check("stdout,carrier-pigeon"), CRW_ERR_CONFIG);
    cr_assert(strstr(err, "carrier-pigeon"), "%s", err);
    cr_assert(strstr(err, "stdout") && strstr(err, "kafka") && strstr(err, "exec") && strstr(err, "plugin"), "%s",
              err);
}

Test(sinks, the_list_keeps_its_order) {
    crw_config_t *c = crw_config_new();
    cr_assert_eq(crw_config_set(c, "sink", "exec, stdout", err, sizeof err), 0, "%s", err);
    cr_assert_eq(c->sinks.n, 2);
    cr_assert_str_eq(c->sinks.v[0], "exec");
    cr_assert_str_eq(c->sinks.v[1], "stdout");
    crw_config_destroy(c);
}
