/*
 * prom_sample.h — reading one sample out of a Prometheus text page (the
 * operations endpoint's /metrics, core/metrics.c's rendering), for tests.
 */
#ifndef CRW_TEST_PROM_SAMPLE_H
#define CRW_TEST_PROM_SAMPLE_H

#include <stdlib.h>
#include <string.h>

/* The value of the sample named exactly name (labels included: `x_total{a="b"}`); -1 when absent. */
static inline double prom_sample(const char *page, const char *name) {
    size_t n = strlen(name);
    for (const char *l = page; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (!strncmp(l, name, n) && l[n] == ' ')
            return atof(l + n + 1);
    return -1;
}

#endif
