/*
 * log.h — leveled logging to stderr.  stdout carries data only.
 *
 * The macros test the level before evaluating their arguments, so a
 * disabled debug line costs one comparison (as Redis' serverLog does).
 * Thread-safety: crw_log_write may be called from any thread; the level,
 * the format and the fields are set once at start-up, before threads exist.
 */
#ifndef CRW_LOG_H
#define CRW_LOG_H

#include <stddef.h>

typedef enum { CRW_LOG_ERROR = 0, CRW_LOG_WARN = 1, CRW_LOG_INFO = 2, CRW_LOG_DEBUG = 3 } crw_log_level_t;

typedef enum { CRW_LOG_TEXT = 0, CRW_LOG_JSON = 1 } crw_log_format_t;

extern int crw_log_level;

/* Sets the line format (text: the default). Call at start-up, before threads exist. */
void crw_log_set_format(crw_log_format_t f);
/* A field every later JSON line carries ("key":"value"), e.g. slot; value NULL removes it. At most 8 fields; set at
 * start-up before threads. Text lines are unchanged. */
void crw_log_set_field(const char *key, const char *value);

void crw_log_write(crw_log_level_t lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Logs an allocation failure of n bytes and aborts. */
void crw_log_oom(size_t n) __attribute__((noreturn));
/* Parses "error|warn|info|debug"; returns -1 when unknown. */
int crw_log_level_parse(const char *s);

#define CRW_LOG(lvl, ...)                                                                                              \
    do {                                                                                                               \
        if ((int)(lvl) <= crw_log_level)                                                                               \
            crw_log_write((lvl), __VA_ARGS__);                                                                         \
    } while (0)
#define crw_error(...) CRW_LOG(CRW_LOG_ERROR, __VA_ARGS__)
#define crw_warn(...) CRW_LOG(CRW_LOG_WARN, __VA_ARGS__)
#define crw_info(...) CRW_LOG(CRW_LOG_INFO, __VA_ARGS__)
#define crw_debug(...) CRW_LOG(CRW_LOG_DEBUG, __VA_ARGS__)

/* Allocation helpers that never return NULL (they call crw_log_oom). */
void *crw_malloc(size_t n);
void *crw_calloc(size_t n, size_t sz);
void *crw_realloc(void *p, size_t n);
char *crw_strdup(const char *s);
char *crw_strndup(const char *s, size_t n);

#endif
