/*
 * log.c — stderr logging and never-NULL allocation helpers.
 */
#include "core/log.h"

#include "core/utf8.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

int crw_log_level = CRW_LOG_INFO;

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
static const char *const level_json[] = {"error", "warn", "info", "debug"};

static crw_log_format_t log_format = CRW_LOG_TEXT;

#define LOG_MAX_FIELDS 8
static struct { char *key, *value; } fields[LOG_MAX_FIELDS];
static int nfields;
/* The fields, escaped once when set (,"k":"v",...), so a line only copies them. */
static char json_fields[1024];
static size_t json_fields_len;

/* "2026-12-01T14:08:41.123Z" (UTC, milliseconds) into dst; returns its length. */
static int format_ts(char *dst, size_t cap) {
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = (int)strftime(dst, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(dst + n, cap - (size_t)n, ".%03dZ", (int)(tv.tv_usec / 1000));
    return n;
}

/*
 * Writes s[0..n) as JSON string content (no quotes) into dst[0..cap).  It
 * stops before the first character whose escape or UTF-8 sequence does not
 * fit, so a truncated string is still valid; a byte that is not valid UTF-8
 * becomes \ufffd.  Returns the bytes written; *used gets the bytes of s read.
 */
static size_t json_escape(char *dst, size_t cap, const char *s, size_t n, size_t *used) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0, i = 0;
    while (i < n) {
        unsigned char c = p[i];
        char esc[6];
        const char *unit = esc;
        size_t k, adv = 1;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            esc[0] = (char)c;
            k = 1;
        } else if (c == '"' || c == '\\' || c == '\n' || c == '\t' || c == '\r') {
            esc[0] = '\\';
            esc[1] = c == '\n' ? 'n' : c == '\t' ? 't' : c == '\r' ? 'r' : (char)c;
            k = 2;
        } else if (c < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            k = 6;
        } else if ((adv = crw_utf8_seq_len(p + i, n - i)) > 0) {
            unit = s + i; /* valid UTF-8 goes out unchanged */
            k = adv;
        } else {
            unit = "\\ufffd";
            k = 6;
            adv = 1;
        }
        if (k > cap - o)
            break;
        memcpy(dst + o, unit, k);
        o += k;
        i += adv;
    }
    if (used)
        *used = i;
    return o;
}

__attribute__((format(printf, 2, 0))) static void write_text(crw_log_level_t lvl, const char *fmt, va_list ap) {
    char line[2048];
    int n = format_ts(line, sizeof line);
    n += snprintf(line + n, sizeof line - (size_t)n, " crwatch %s: ", level_names[lvl]);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    n += m;
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    /* One write per line so concurrent writers never interleave inside a line. */
    fwrite(line, 1, (size_t)n, stderr);
}

__attribute__((format(printf, 2, 0))) static void write_json(crw_log_level_t lvl, const char *fmt, va_list ap) {
    char line[4096];
    /* As big as the line: escaping never shrinks text, so the cut vsnprintf makes (maybe inside a UTF-8 sequence)
     * lies past what fits and never shows; json_escape makes the only, clean, cut. */
    char msg[sizeof line];
    _Static_assert(sizeof json_fields + 64 < sizeof line, "the header and the fields leave room for msg");
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    if (m < 0)
        m = 0;
    if ((size_t)m >= sizeof msg)
        m = (int)sizeof msg - 1;
    char ts[32];
    format_ts(ts, sizeof ts);
    int n = snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts, level_json[lvl]);
    size_t tail = 1 + json_fields_len + 2; /* the closing quote, the fields, "}\n" */
    size_t len = (size_t)n;
    len += json_escape(line + len, sizeof line - len - tail, msg, (size_t)m, NULL);
    line[len++] = '"';
    memcpy(line + len, json_fields, json_fields_len);
    len += json_fields_len;
    line[len++] = '}';
    line[len++] = '\n';
    fwrite(line, 1, len, stderr); /* one write per line, as in write_text */
}

void crw_log_write(crw_log_level_t lvl, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (log_format == CRW_LOG_JSON)
        write_json(lvl, fmt, ap);
    else
        write_text(lvl, fmt, ap);
    va_end(ap);
}

void crw_log_set_format(crw_log_format_t f) { log_format = f; }

/* Re-escapes the fields into json_fields; returns the index of the first one that did not fit, or nfields. */
static int rebuild_json_fields(void) {
    char out[sizeof json_fields];
    size_t cap = sizeof out - 1, len = 0; /* - 1: json_fields stays a C string for crw_log_oom */
    int i;
    for (i = 0; i < nfields; i++) {
        size_t klen = strlen(fields[i].key), vlen = strlen(fields[i].value), used;
        size_t start = len;
        if (cap - len < 6) /* ,"":"" */
            break;
        memcpy(out + len, ",\"", 2);
        len += 2;
        len += json_escape(out + len, cap - len - 4, fields[i].key, klen, &used);
        if (used < klen) {
            len = start; /* a cut key would be a different field: leave it out */
            break;
        }
        memcpy(out + len, "\":\"", 3);
        len += 3;
        len += json_escape(out + len, cap - len - 1, fields[i].value, vlen, NULL); /* a long value is cut */
        out[len++] = '"';
    }
    memcpy(json_fields, out, len);
    json_fields[len] = '\0';
    json_fields_len = len;
    return i;
}

void crw_log_set_field(const char *key, const char *value) {
    if (!key)
        return;
    if (strcmp(key, "ts") == 0 || strcmp(key, "level") == 0 || strcmp(key, "msg") == 0) {
        crw_warn("log field %s: reserved, ignored", key); /* a second "msg" would hide the first */
        return;
    }
    int i = 0;
    while (i < nfields && strcmp(fields[i].key, key) != 0)
        i++;
    if (i < nfields) {
        free(fields[i].value);
        if (value) {
            fields[i].value = crw_strdup(value); /* keeps its place in the order */
        } else {
            free(fields[i].key);
            memmove(&fields[i], &fields[i + 1], (size_t)(nfields - i - 1) * sizeof fields[0]);
            nfields--;
        }
    } else if (value) {
        if (nfields == LOG_MAX_FIELDS) {
            crw_warn("log field %s: more than %d fields, ignored", key, LOG_MAX_FIELDS);
            return;
        }
        fields[nfields].key = crw_strdup(key);
        fields[nfields].value = crw_strdup(value);
        nfields++;
    }
    int fit = rebuild_json_fields();
    if (fit < nfields)
        crw_warn("log fields from %s on: longer than %zu bytes in all, left out", fields[fit].key, sizeof json_fields);
}

void crw_log_oom(size_t n) {
    if (log_format == CRW_LOG_JSON) {
        char ts[32];
        format_ts(ts, sizeof ts);
        fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"error\",\"msg\":\"out of memory allocating %zu bytes\"%s}\n", ts, n,
                json_fields);
    } else {
        fprintf(stderr, "crwatch ERROR: out of memory allocating %zu bytes\n", n);
    }
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
