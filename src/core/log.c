/*
 * log.c — stderr logging and never-NULL allocation helpers.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

int crw_log_level = CRW_LOG_INFO;

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void crw_log_write(crw_log_level_t lvl, const char *fmt, ...) {
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof line - (size_t)n, ".%03dZ crwatch %s: ", (int)(tv.tv_usec / 1000),
                  level_names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += m;
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    /* One write per line so concurrent writers never interleave inside a line. */
    fwrite(line, 1, (size_t)n, stderr);
}

void crw_log_oom(size_t n) {
    fprintf(stderr, "crwatch ERROR: out of memory allocating %zu bytes\n", n);
    abort();
}

int crw_log_level_parse(const char *s) {
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return CRW_LOG_WARN;
    return -1;
}

void *crw_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p)
        crw_log_oom(n);
    return p;
}

void *crw_calloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p)
        crw_log_oom(n * sz);
    return p;
}

void *crw_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q)
        crw_log_oom(n);
    return q;
}

char *crw_strdup(const char *s) { return crw_strndup(s, strlen(s)); }

char *crw_strndup(const char *s, size_t n) {
    char *p = crw_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}
