/*
 * sources.c — the registry of source kinds (see source.h).
 */
#include <stdio.h>

#include "core/err.h"
#include "source/source.h"

/* The registry: a new source kind is one file defining its constructor, and one line in each list below. */
CRW_SOURCE_CONSTRUCTOR(crw_source_logical_new);

static const struct {
    crw_source_kind_t kind;
    crw_source_new_fn open;
} registry[] = {
    {CRW_SOURCE_LOGICAL, crw_source_logical_new},
};

/* What `source` asks for: auto is logical replication (the polling fallback is not built yet). */
static crw_source_kind_t wanted(const crw_config_t *conf) {
    return conf->source == CRW_SOURCE_AUTO ? CRW_SOURCE_LOGICAL : conf->source;
}

static crw_source_new_fn lookup(crw_source_kind_t kind) {
    for (size_t i = 0; i < sizeof registry / sizeof registry[0]; i++)
        if (registry[i].kind == kind)
            return registry[i].open;
    return NULL;
}

int crw_sources_check(const crw_config_t *conf, char *errstr, size_t n) {
    if (lookup(wanted(conf)))
        return 0;
    snprintf(errstr, n, "source=%s is not available in this version of crwatch", crw_config_source_name(conf->source));
    return CRW_ERR_CONFIG;
}

crw_source_t *crw_source_open(const crw_config_t *conf, const crw_source_opts_t *opts, const crw_source_events_t *ev,
                              int *err, char *errstr, size_t n) {
    *err = crw_sources_check(conf, errstr, n);
    if (*err < 0)
        return NULL;
    *err = CRW_ERR_INTERNAL;
    return lookup(wanted(conf))(conf, opts, ev, err, errstr, n);
}
