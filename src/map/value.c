/*
 * value.c — PostgreSQL text output -> JSON value, per type class (docs/events.md, "Values").
 *
 * This is the per-column hot path: every renderer appends straight into the
 * caller's crw_buf_t, parses with byte loops, and allocates nothing per
 * value.  The only extra memory is one per-thread scratch buffer used to
 * unescape quoted array elements; it grows to the largest such element and
 * is then reused (crw_value_thread_cleanup releases it).
 *
 * Renderings chosen where the contract leaves room:
 *  - BC years become ISO-8601 astronomical years: 1 BC -> "0000",
 *    44 BC -> "-0043"; at least four digits, a sign only when negative.
 *  - AD years above 9999 stay as PostgreSQL prints them ("12345-01-01"),
 *    with no '+' of the ISO expanded form: the sign is then only ever '-'.
 *  - float NaN/Infinity/-Infinity become the JSON strings "NaN",
 *    "Infinity", "-Infinity"; everything else is the number as printed.
 *  - bytea is accepted in both the hex ("\x0aff") and the escape form
 *    ("\012\377\\" with printable bytes verbatim); both give base64.
 *  - timetz offsets become +HH:MM; a seconds part (historic LMT zones,
 *    "+05:53:28") is kept as +HH:MM:SS rather than silently rounded.
 */
#include "map/value.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* PostgreSQL's MAXDIM is 6; a little slack, and recursion stays bounded. */
#define MAX_ARRAY_DEPTH 16

static _Thread_local crw_buf_t scratch = CRW_BUF_INIT;

void crw_value_thread_cleanup(void) { crw_buf_free(&scratch); }

void crw_value_render_text(crw_buf_t *out, const char *text, size_t len) { crw_buf_put_json_str(out, text, len); }

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* array_in's notion of whitespace (scanner_isspace). */
static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static bool eq(const char *s, size_t n, const char *lit) {
    size_t l = strlen(lit);
    return n == l && memcmp(s, lit, l) == 0;
}

/* Case-insensitive match of s[0..n) against an upper-case ASCII literal. */
static bool eq_upper(const char *s, size_t n, const char *lit) {
    size_t l = strlen(lit);
    if (n != l)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        if (c != lit[i])
            return false;
    }
    return true;
}

/* ---- numbers ---------------------------------------------------------- */

/* Integers: -?(0|[1-9][0-9]*), which is also the JSON integer grammar. */
static int render_int(crw_buf_t *out, const char *s, size_t n) {
    size_t i = (n > 0 && s[0] == '-') ? 1 : 0;
    if (i == n || (s[i] == '0' && n - i > 1))
        return -1;
    for (; i < n; i++)
        if (!is_digit(s[i]))
            return -1;
    crw_buf_put(out, s, n);
    return 0;
}

/* True when s[0..n) matches the JSON number grammar (RFC 8259 §6). */
static bool is_json_number(const char *s, size_t n) {
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i == n || !is_digit(s[i]))
        return false;
    if (s[i] == '0')
        i++;
    else
        while (i < n && is_digit(s[i]))
            i++;
    if (i < n && s[i] == '.') {
        i++;
        if (i == n || !is_digit(s[i]))
            return false;
        while (i < n && is_digit(s[i]))
            i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i == n || !is_digit(s[i]))
            return false;
        while (i < n && is_digit(s[i]))
            i++;
    }
    return i == n;
}

/* float4/float8: the shortest-exact text PostgreSQL prints is already a JSON
 * number ("1e+30", "-0", "1e-310"); only the specials need quoting. */
static int render_float(crw_buf_t *out, const char *s, size_t n) {
    if (is_json_number(s, n)) {
        crw_buf_put(out, s, n);
        return 0;
    }
    if (eq(s, n, "NaN") || eq(s, n, "Infinity") || eq(s, n, "-Infinity")) {
        crw_buf_put_json_str(out, s, n);
        return 0;
    }
    return -1;
}

/* numeric: a string so no consumer rounds it through a double; the scale
 * ("1.50") is part of the value and kept. */
static int render_numeric(crw_buf_t *out, const char *s, size_t n) {
    if (is_json_number(s, n) || eq(s, n, "NaN") || eq(s, n, "Infinity") || eq(s, n, "-Infinity")) {
        crw_buf_put_json_str(out, s, n);
        return 0;
    }
    return -1;
}

static int render_bool(crw_buf_t *out, const char *s, size_t n) {
    if (n == 1 && s[0] == 't')
        crw_buf_put(out, "true", 4);
    else if (n == 1 && s[0] == 'f')
        crw_buf_put(out, "false", 5);
    else
        return -1;
    return 0;
}

/* ---- json / jsonb ----------------------------------------------------- */

/* True when e[0..n), the bytes after a backslash inside a JSON string, start
 * a JSON escape: one of "\\/bfnrt, or u and four hex digits. */
static bool json_escape_ok(const unsigned char *e, size_t n) {
    switch (e[0]) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': return true;
    case 'u':
        if (n < 5)
            return false;
        for (int k = 1; k <= 4; k++)
            if (crw_hexval((char)e[k]) < 0)
                return false;
        return true;
    default: return false;
    }
}

/* The literal or number at u[0..n): its length when it is one RFC 8259 allows, else 0. */
static size_t json_scalar(const unsigned char *u, size_t n) {
    size_t l = 0;
    while (l < n && (isalnum(u[l]) || u[l] == '-' || u[l] == '+' || u[l] == '.'))
        l++;
    if ((l == 4 && !memcmp(u, "true", 4)) || (l == 4 && !memcmp(u, "null", 4)) || (l == 5 && !memcmp(u, "false", 5)))
        return l;
    size_t i = 0; /* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
    if (i < l && u[i] == '-')
        i++;
    if (i < l && u[i] == '0')
        i++;
    else if (i < l && u[i] >= '1' && u[i] <= '9')
        while (i < l && isdigit(u[i]))
            i++;
    else
        return 0;
    if (i < l && u[i] == '.') {
        if (++i >= l || !isdigit(u[i]))
            return 0;
        while (i < l && isdigit(u[i]))
            i++;
    }
    if (i < l && (u[i] == 'e' || u[i] == 'E')) {
        if (++i < l && (u[i] == '+' || u[i] == '-'))
            i++;
        if (i >= l || !isdigit(u[i]))
            return 0;
        while (i < l && isdigit(u[i]))
            i++;
    }
    return i == l ? l : 0;
}

#define JSON_MAX_DEPTH 1024

/*
 * json keeps its input text verbatim, newlines included; the event must be
 * one line, so whitespace outside strings goes.  PostgreSQL validated the
 * text on input; the checks here (one RFC 8259 value: its structure,
 * literals, numbers and escapes) only keep a damaged value from breaking
 * the surrounding document.  @returns 0, or -1 (nothing written) when the
 * text is not JSON: the caller writes it as a string.
 *
 * A SQL_ASCII database checks no encoding, so a json or jsonb string may
 * hold any bytes: a byte that does not start a valid UTF-8 sequence becomes
 * U+FFFD, as crw_buf_put_json_str does for text.  Valid input is copied as
 * it is (plain ASCII eight bytes at a time) into the room reserved up
 * front; only a replacement (three bytes for one) may need more.
 */
static int render_json(crw_buf_t *out, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    crw_buf_grow(out, n);
    char *o = out->data + out->len;
    enum { J_VALUE, J_KEY, J_COLON, J_AFTER } want = J_VALUE; /* what may come next outside strings */
    uint8_t objs[JSON_MAX_DEPTH / 8];                        /* per depth: an object (1) or an array (0) */
    int depth = 0;
    bool in_str = false, key = false, opened = false; /* opened: right after '{' or '[' (a closer may come) */
    size_t i = 0;
    while (i < n) {
        unsigned char c = u[i];
        if (!in_str) {
            if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
                i++;
                continue;
            }
            bool top_obj = depth > 0 && (objs[(depth - 1) / 8] >> ((depth - 1) % 8) & 1);
            if (c == '{' || c == '[') {
                if (want != J_VALUE || depth == JSON_MAX_DEPTH)
                    return -1;
                if (c == '{')
                    objs[depth / 8] |= (uint8_t)(1u << (depth % 8));
                else
                    objs[depth / 8] &= (uint8_t) ~(1u << (depth % 8));
                depth++;
                want = c == '{' ? J_KEY : J_VALUE;
                opened = true;
            } else if (c == '}' || c == ']') {
                bool obj = c == '}';
                if (depth == 0 || top_obj != obj || !(want == J_AFTER || (opened && want == (obj ? J_KEY : J_VALUE))))
                    return -1;
                depth--;
                want = J_AFTER;
                opened = false;
            } else if (c == ',') {
                if (want != J_AFTER || depth == 0)
                    return -1;
                want = top_obj ? J_KEY : J_VALUE;
            } else if (c == ':') {
                if (want != J_COLON)
                    return -1;
                want = J_VALUE;
            } else if (c == '"') {
                if (want != J_VALUE && want != J_KEY)
                    return -1;
                key = want == J_KEY;
                in_str = true;
                opened = false;
            } else {
                size_t l = want == J_VALUE ? json_scalar(u + i, n - i) : 0;
                if (!l)
                    return -1; /* only strings may hold other bytes */
                memcpy(o, u + i, l);
                o += l;
                i += l;
                want = J_AFTER;
                opened = false;
                continue;
            }
            *o++ = (char)c;
            i++;
        } else if (c >= 0x20 && c < 0x80) {
            *o++ = (char)c;
            i++;
            if (c == '"') {
                in_str = false;
                want = key ? J_COLON : J_AFTER;
                continue;
            }
            if (c != '\\') {
                /* the rest of the string eight bytes at a time while plain */
                uint64_t w;
                while (i + 8 <= n && (memcpy(&w, u + i, 8), crw_buf_plain8(w))) {
                    memcpy(o, &w, 8);
                    o += 8;
                    i += 8;
                }
                continue;
            }
            if (i == n || !json_escape_ok(u + i, n - i))
                return -1;
            *o++ = (char)u[i++];
        } else if (c < 0x20) {
            return -1;
        } else {
            size_t l = crw_buf_utf8_len(u + i, n - i);
            if (l) {
                for (size_t k = 0; k < l; k++) /* two to four bytes: not worth a call to memcpy */
                    *o++ = (char)u[i++];
                continue;
            }
            /* Room for U+FFFD and, at one byte each, everything after it. */
            size_t off = (size_t)(o - out->data);
            crw_buf_grow(out, off - out->len + 3 + (n - i - 1));
            o = out->data + off;
            *o++ = (char)0xEF;
            *o++ = (char)0xBF;
            *o++ = (char)0xBD;
            i++;
        }
    }
    if (in_str || want != J_AFTER || depth != 0)
        return -1;
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
    return 0;
}

/* ---- bytea ------------------------------------------------------------ */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Emits the base64 of 1..3 bytes (n of them) at o; returns the advanced o. */
static char *b64_quad(char *o, const unsigned char *b, int n) {
    uint32_t v = (uint32_t)b[0] << 16 | (n > 1 ? (uint32_t)b[1] << 8 : 0) | (n > 2 ? b[2] : 0);
    *o++ = b64[v >> 18 & 63];
    *o++ = b64[v >> 12 & 63];
    *o++ = n > 1 ? b64[v >> 6 & 63] : '=';
    *o++ = n > 2 ? b64[v & 63] : '=';
    return o;
}

/*
 * Decodes bytea text (hex "\x..." or escape form) and base64-encodes it
 * on the fly, three bytes at a time, straight into out.
 */
static int render_bytea(crw_buf_t *out, const char *s, size_t n) {
    bool hex = n >= 2 && s[0] == '\\' && s[1] == 'x';
    if (hex && (n & 1))
        return -1;
    /* Decoded size is at most n bytes (escape) or (n-2)/2 (hex). */
    size_t maxbytes = hex ? (n - 2) / 2 : n;
    crw_buf_grow(out, (maxbytes + 2) / 3 * 4 + 2);
    char *o = out->data + out->len;
    *o++ = '"';
    unsigned char grp[3];
    int g = 0;
    size_t i = hex ? 2 : 0;
    while (i < n) {
        int byte;
        if (hex) {
            int hi = crw_hexval(s[i]), lo = crw_hexval(s[i + 1]);
            if (hi < 0 || lo < 0)
                return -1;
            byte = hi << 4 | lo;
            i += 2;
        } else if (s[i] != '\\') {
            byte = (unsigned char)s[i++];
        } else if (i + 1 < n && s[i + 1] == '\\') {
            byte = '\\';
            i += 2;
        } else if (i + 3 < n && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' && s[i + 2] <= '7' &&
                   s[i + 3] >= '0' && s[i + 3] <= '7') {
            byte = (s[i + 1] - '0') << 6 | (s[i + 2] - '0') << 3 | (s[i + 3] - '0');
            i += 4;
        } else {
            return -1;
        }
        grp[g++] = (unsigned char)byte;
        if (g == 3) {
            o = b64_quad(o, grp, 3);
            g = 0;
        }
    }
    if (g)
        o = b64_quad(o, grp, g);
    *o++ = '"';
    out->len = (size_t)(o - out->data);
    out->data[out->len] = '\0';
    return 0;
}

/* ---- dates and times -------------------------------------------------- */

/* Parses exactly k digits at s[*i]; returns the value or -1. */
static int64_t digits(const char *s, size_t n, size_t *i, size_t k) {
    if (*i + k > n)
        return -1;
    int64_t v = 0;
    for (size_t j = 0; j < k; j++) {
        char c = s[*i + j];
        if (!is_digit(c))
            return -1;
        v = v * 10 + (c - '0');
    }
    *i += k;
    return v;
}

bool crw_text_expect(const char *s, size_t n, size_t *i, char c) {
    if (*i < n && s[*i] == c) {
        (*i)++;
        return true;
    }
    return false;
}

bool crw_pgtime_date(const char *s, size_t n, size_t *i, crw_pgtime_t *t) {
    size_t k = *i;
    int64_t y = 0;
    while (k < n && is_digit(s[k]) && k - *i < 9)
        y = y * 10 + (s[k++] - '0');
    if (k - *i < 4)
        return false;
    *i = k;
    t->year = y;
    int64_t m, d;
    if (!crw_text_expect(s, n, i, '-') || (m = digits(s, n, i, 2)) < 1 || m > 12 || !crw_text_expect(s, n, i, '-') ||
        (d = digits(s, n, i, 2)) < 1 || d > 31)
        return false;
    t->mon = (int)m;
    t->day = (int)d;
    return true;
}

bool crw_pgtime_time(const char *s, size_t n, size_t *i, crw_pgtime_t *t) {
    int64_t h, m, sec;
    if ((h = digits(s, n, i, 2)) < 0 || h > 24 || !crw_text_expect(s, n, i, ':') || (m = digits(s, n, i, 2)) < 0 ||
        m > 59 || !crw_text_expect(s, n, i, ':') || (sec = digits(s, n, i, 2)) < 0 || sec > 60)
        return false;
    t->hour = (int)h;
    t->min = (int)m;
    t->sec = (int)sec;
    t->frac = NULL;
    t->frac_len = 0;
    if (*i < n && s[*i] == '.') {
        size_t st = (*i)++;
        while (*i < n && is_digit(s[*i]))
            (*i)++;
        if (*i - st < 2)
            return false;
        t->frac = s + st;
        t->frac_len = *i - st;
    }
    return true;
}

bool crw_pgtime_offset(const char *s, size_t n, size_t *i, crw_pgtime_t *t) {
    if (*i >= n || (s[*i] != '+' && s[*i] != '-'))
        return false;
    size_t st = *i;
    int sign = s[(*i)++] == '-' ? -1 : 1;
    int64_t h = digits(s, n, i, 2), m = 0, sec = 0;
    if (h < 0)
        return false;
    t->has_off_min = t->has_off_sec = false;
    if (*i < n && s[*i] == ':') {
        (*i)++;
        if ((m = digits(s, n, i, 2)) < 0 || m > 59)
            return false;
        t->has_off_min = true;
        if (*i < n && s[*i] == ':') {
            (*i)++;
            if ((sec = digits(s, n, i, 2)) < 0 || sec > 59)
                return false;
            t->has_off_sec = true;
        }
    }
    t->offset = sign * (int)(h * 3600 + m * 60 + sec);
    t->off_text = s + st;
    t->off_len = *i - st;
    return true;
}

bool crw_pgtime_era_end(const char *s, size_t n, size_t *i, crw_pgtime_t *t) {
    if (*i + 3 == n && memcmp(s + *i, " BC", 3) == 0) {
        if (t->year < 1)
            return false;
        t->year = 1 - t->year;
        *i = n;
    }
    return *i == n;
}

static void put_2d(char *o, int v) {
    o[0] = (char)('0' + v / 10);
    o[1] = (char)('0' + v % 10);
}

/* Astronomical year, at least four digits, '-' only when negative. */
static void put_year(crw_buf_t *out, int64_t y) {
    if (y < 0) {
        crw_buf_putc(out, '-');
        y = -y;
    }
    for (int64_t p = 1000; p > 1 && y < p; p /= 10)
        crw_buf_putc(out, '0');
    crw_buf_put_u64(out, (uint64_t)y);
}

static void put_date(crw_buf_t *out, const crw_pgtime_t *t) {
    char b[6] = {'-', 0, 0, '-', 0, 0};
    put_year(out, t->year);
    put_2d(b + 1, t->mon);
    put_2d(b + 4, t->day);
    crw_buf_put(out, b, sizeof b);
}

static void put_hms(crw_buf_t *out, const crw_pgtime_t *t) {
    char b[8] = {0, 0, ':', 0, 0, ':', 0, 0};
    put_2d(b, t->hour);
    put_2d(b + 3, t->min);
    put_2d(b + 6, t->sec);
    crw_buf_put(out, b, sizeof b);
    if (t->frac)
        crw_buf_put(out, t->frac, t->frac_len);
}

int64_t crw_days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void crw_civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* "infinity" / "-infinity" pass through as strings for every date-time class. */
static bool render_infinity(crw_buf_t *out, const char *s, size_t n) {
    if (eq(s, n, "infinity") || eq(s, n, "-infinity")) {
        crw_buf_put_json_str(out, s, n);
        return true;
    }
    return false;
}

static int render_date(crw_buf_t *out, const char *s, size_t n) {
    if (render_infinity(out, s, n))
        return 0;
    crw_pgtime_t t = {0};
    size_t i = 0;
    if (!crw_pgtime_date(s, n, &i, &t) || !crw_pgtime_era_end(s, n, &i, &t))
        return -1;
    crw_buf_putc(out, '"');
    put_date(out, &t);
    crw_buf_putc(out, '"');
    return 0;
}

static int render_timestamp(crw_buf_t *out, const char *s, size_t n, bool tz) {
    if (render_infinity(out, s, n))
        return 0;
    crw_pgtime_t t = {0};
    size_t i = 0;
    if (!crw_pgtime_date(s, n, &i, &t) || !crw_text_expect(s, n, &i, ' ') || !crw_pgtime_time(s, n, &i, &t) || t.hour > 23 ||
        (tz && !crw_pgtime_offset(s, n, &i, &t)) || !crw_pgtime_era_end(s, n, &i, &t))
        return -1;
    if (tz && t.offset != 0) {
        /* local = UTC + offset.  Offsets are whole seconds, so the fraction
         * is untouched and only the calendar fields move. */
        int64_t days = crw_days_from_civil(t.year, t.mon, t.day);
        int64_t secs = (int64_t)t.hour * 3600 + t.min * 60 + t.sec - t.offset;
        while (secs < 0) {
            secs += 86400;
            days--;
        }
        while (secs >= 86400) {
            secs -= 86400;
            days++;
        }
        crw_civil_from_days(days, &t.year, &t.mon, &t.day);
        t.hour = (int)(secs / 3600);
        t.min = (int)(secs / 60 % 60);
        t.sec = (int)(secs % 60);
    }
    crw_buf_putc(out, '"');
    put_date(out, &t);
    crw_buf_putc(out, 'T');
    put_hms(out, &t);
    if (tz)
        crw_buf_putc(out, 'Z');
    crw_buf_putc(out, '"');
    return 0;
}

static int render_timetz(crw_buf_t *out, const char *s, size_t n) {
    crw_pgtime_t t = {0};
    size_t i = 0;
    if (!crw_pgtime_time(s, n, &i, &t) || !crw_pgtime_offset(s, n, &i, &t) || i != n)
        return -1;
    crw_buf_putc(out, '"');
    crw_buf_put(out, s, (size_t)(t.off_text - s) + 3); /* time and ±HH */
    if (t.has_off_min)
        crw_buf_put(out, t.off_text + 3, t.off_len - 3);
    else
        crw_buf_put(out, ":00", 3);
    crw_buf_putc(out, '"');
    return 0;
}

/* ---- arrays ----------------------------------------------------------- */

static int render_scalar(crw_buf_t *out, crw_typeclass_t cls, const char *s, size_t n) {
    switch (cls) {
    case CRW_TC_INT: return render_int(out, s, n);
    case CRW_TC_FLOAT: return render_float(out, s, n);
    case CRW_TC_NUMERIC: return render_numeric(out, s, n);
    case CRW_TC_BOOL: return render_bool(out, s, n);
    case CRW_TC_JSON: return render_json(out, s, n);
    case CRW_TC_JSONB: return render_json(out, s, n); /* jsonb_out adds ", " and ": " */
    case CRW_TC_BYTEA: return render_bytea(out, s, n);
    case CRW_TC_DATE: return render_date(out, s, n);
    case CRW_TC_TIMESTAMP: return render_timestamp(out, s, n, false);
    case CRW_TC_TIMESTAMPTZ: return render_timestamp(out, s, n, true);
    case CRW_TC_TIMETZ: return render_timetz(out, s, n);
    case CRW_TC_TIME:
    case CRW_TC_INTERVAL:
    case CRW_TC_UUID:
    case CRW_TC_TEXT:
    default: crw_buf_put_json_str(out, s, n); return 0;
    }
}

/* Copies s[0..n) into the scratch buffer dropping each escaping backslash. */
static void unescape(const char *s, size_t n) {
    crw_buf_reset(&scratch);
    crw_buf_grow(&scratch, n);
    char *o = scratch.data;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n)
            i++;
        *o++ = s[i];
    }
    scratch.len = (size_t)(o - scratch.data);
    scratch.data[scratch.len] = '\0';
}

/*
 * One element at *pp (not a sub-array): quoted with backslash escapes, or
 * bare.  A bare NULL (any case) is SQL NULL; array_out quotes the string.
 */
/* The walk over array_out's text, shared by every renderer of elements. */
typedef struct {
    char delim;
    crw_array_elem_fn fn;
    void *arg;
} walk_t;

static int render_element(crw_buf_t *out, const walk_t *w, const char **pp, const char *end) {
    const char *p = *pp, *st;
    size_t n;
    bool escaped = false;
    if (*p == '"') {
        st = ++p;
        while (p < end && *p != '"') {
            if (*p == '\\') {
                escaped = true;
                if (++p == end)
                    return -1;
            }
            p++;
        }
        if (p == end)
            return -1;
        n = (size_t)(p - st);
        p++;
    } else {
        st = p;
        while (p < end && *p != w->delim && *p != '}' && *p != '{' && *p != '"') {
            if (*p == '\\') {
                escaped = true;
                if (++p == end)
                    return -1;
            }
            p++;
        }
        const char *e = p;
        while (e > st && is_space(e[-1]) && !(e - 1 > st && e[-2] == '\\'))
            e--;
        n = (size_t)(e - st);
        if (n == 0)
            return -1;
        if (!escaped && eq_upper(st, n, "NULL")) {
            crw_buf_put(out, "null", 4);
            *pp = p;
            return 0;
        }
    }
    *pp = p;
    if (!escaped)
        return w->fn(out, st, n, w->arg);
    unescape(st, n);
    return w->fn(out, scratch.data, scratch.len, w->arg);
}

static void skip_space(const char **pp, const char *end) {
    while (*pp < end && is_space(**pp))
        (*pp)++;
}

/* One brace level {a,b,...} or {{...},{...}} -> [..]. */
static int render_level(crw_buf_t *out, const walk_t *w, const char **pp, const char *end, int depth) {
    const char *p = *pp;
    if (depth > MAX_ARRAY_DEPTH || p == end || *p != '{')
        return -1;
    p++;
    crw_buf_putc(out, '[');
    skip_space(&p, end);
    if (p < end && *p == '}') {
        crw_buf_putc(out, ']');
        *pp = p + 1;
        return 0;
    }
    int kind = 0; /* 1 scalars, 2 sub-arrays: PostgreSQL never mixes them */
    for (;;) {
        skip_space(&p, end);
        if (p == end)
            return -1;
        int k = *p == '{' ? 2 : 1;
        if (kind && k != kind)
            return -1;
        kind = k;
        if ((k == 2 ? render_level(out, w, &p, end, depth + 1) : render_element(out, w, &p, end)) < 0)
            return -1;
        skip_space(&p, end);
        if (p == end)
            return -1;
        if (*p == '}')
            break;
        if (*p != w->delim)
            return -1;
        crw_buf_putc(out, ',');
        p++;
    }
    crw_buf_putc(out, ']');
    *pp = p + 1;
    return 0;
}

/* array_out text: optional "[lo:hi]...=" decoration (non-default lower
 * bounds; JSON arrays cannot carry them), then nested braces. */
int crw_value_render_array(crw_buf_t *out, const char *s, size_t n, char delim, crw_array_elem_fn fn, void *arg) {
    const walk_t w = {delim ? delim : ',', fn, arg};
    const char *p = s, *end = s + n;
    skip_space(&p, end);
    if (p < end && *p == '[') {
        while (p < end && *p != '=') {
            if (!is_digit(*p) && *p != '[' && *p != ']' && *p != ':' && *p != '-')
                return -1;
            p++;
        }
        if (p == end)
            return -1;
        p++;
        skip_space(&p, end);
    }
    if (render_level(out, &w, &p, end, 1) < 0)
        return -1;
    skip_space(&p, end);
    return p == end ? 0 : -1;
}

/* crwatch's own element rendering: the element class's scalar form. */
static int scalar_elem(crw_buf_t *out, const char *text, size_t len, void *arg) {
    return render_scalar(out, *(const crw_typeclass_t *)arg, text, len);
}

static int render_array(crw_buf_t *out, const crw_typeinfo_t *ti, const char *s, size_t n) {
    crw_typeclass_t cls = ti->cls;
    return crw_value_render_array(out, s, n, ti->delim, scalar_elem, &cls);
}

int crw_value_render(crw_buf_t *out, const crw_typeinfo_t *ti, const char *text, size_t len) {
    size_t mark = out->len;
    int rc = ti->is_array ? render_array(out, ti, text, len) : render_scalar(out, ti->cls, text, len);
    if (rc < 0) {
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
    }
    return rc;
}
