/*
 * debezium_value.c — Debezium's value conversions: one column's text, as
 * PostgreSQL's output sends it, to the JSON Debezium's converters write
 * (see debezium.h for every representation choice).
 *
 * Values arrive as PostgreSQL's text output under the replication session's
 * fixed settings (DateStyle=ISO, IntervalStyle=iso_8601, TimeZone=UTC,
 * extra_float_digits=3, bytea_output=hex); other offsets and the escape form
 * of bytea are accepted too.  Every conversion is exact integer arithmetic on
 * the parsed fields (proleptic Gregorian calendar, astronomical years), with
 * overflow checks: no libc time functions, no floating point except to build
 * the WKB of a point.
 */
#include "map/debezium_value.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "map/value.h"

#define US_PER_SEC INT64_C(1000000)
#define US_PER_DAY INT64_C(86400000000)
/* Debezium's MicroDuration: 365.25 / 12 days a month = 2629800 s. */
#define US_PER_MONTH INT64_C(2629800000000)

/* PostgresValueConverter.POSITIVE/NEGATIVE_INFINITY_LOCAL_DATE (-5877611-06-21 / -22) in epoch days. */
#define DBZ_DATE_POS_INF INT64_C(-2147472692)
#define DBZ_DATE_NEG_INF INT64_C(-2147472691)
/* PGStatement.DATE_POSITIVE/NEGATIVE_INFINITY read as µs (MicroTimestamp), per Debezium's docs. */
#define DBZ_TS_POS_INF_US INT64_C(9223372036825200000)
#define DBZ_TS_NEG_INF_US INT64_C(-9223372036832400000)

/* Built-in OIDs needing more than their type class. */
enum {
    OID_MONEY = 790,
    OID_MONEY_ARRAY = 791,
    OID_POINT = 600,
    OID_POINT_ARRAY = 1017,
    OID_BIT = 1560,
    OID_BIT_ARRAY = 1561,
    OID_VARBIT = 1562,
    OID_VARBIT_ARRAY = 1563,
};

/* Array elements are unescaped in value.c's per-thread scratch buffer. */
void crw_debezium_thread_cleanup(void) { crw_value_thread_cleanup(); }

/* ---- small helpers ---------------------------------------------------- */

static bool is_digit(char c) { return c >= '0' && c <= '9'; }


static bool eq(const char *s, size_t n, const char *lit) {
    size_t l = strlen(lit);
    return n == l && memcmp(s, lit, l) == 0;
}

static void put_str(crw_buf_t *out, const char *s) { crw_buf_put_json_str(out, s, strlen(s)); }

static int64_t floor_mod(int64_t a, int64_t b) { return a - crw_floor_div(a, b) * b; }


/* ---- parsing PostgreSQL's ISO output ---------------------------------- */

/*
 * Dates and times go through value.c's parser (crw_pgtime_*), with
 * Debezium's stricter time of day on top: seconds below 60, at most six
 * fraction digits (PostgreSQL's precision), 24:00:00 only exactly.
 */
/* ...and *tod: µs since midnight. */
static bool parse_tod(const char *s, size_t n, size_t *i, crw_pgtime_t *t, int64_t *tod) {
    if (!crw_pgtime_time(s, n, i, t) || t->sec > 59 || (t->frac && t->frac_len > 7))
        return false;
    int64_t f = 0;
    size_t nd = t->frac ? t->frac_len - 1 : 0;
    for (size_t k = 1; k <= nd; k++)
        f = f * 10 + (t->frac[k] - '0');
    for (; nd < 6; nd++)
        f *= 10;
    *tod = ((int64_t)t->hour * 3600 + t->min * 60 + t->sec) * US_PER_SEC + f;
    return t->hour < 24 || (t->min == 0 && t->sec == 0 && f == 0);
}

/* Unix µs of t's date, time of day tod and offset; false on int64 overflow. */
static bool unix_us(const crw_pgtime_t *t, int64_t tod, int64_t *out) {
    int64_t days = crw_days_from_civil(t->year, t->mon, t->day), r;
    if (__builtin_mul_overflow(days, US_PER_DAY, &r) || __builtin_add_overflow(r, tod, &r) ||
        __builtin_sub_overflow(r, (int64_t)t->offset * US_PER_SEC, &r))
        return false;
    *out = r;
    return true;
}

/* Fraction-digit precision of a time/timestamp typmod (unconstrained: 6). */
static int precision(int32_t typmod) { return typmod < 0 || typmod > 6 ? 6 : (int)typmod; }

/* ---- numbers ---------------------------------------------------------- */

/*
 * numeric as Java's BigDecimal.toString() prints it (decimal.handling.mode=
 * string).  PostgreSQL's text is already the plain form BigDecimal uses
 * while the adjusted exponent is >= -6; below, E-notation of the unscaled
 * digits: 0.00000012300 -> 1.2300E-7.
 */
static int render_numeric(crw_buf_t *out, const char *s, size_t n) {
    if (eq(s, n, "NaN")) {
        put_str(out, "NAN");
        return 0;
    }
    if (eq(s, n, "Infinity")) {
        put_str(out, "POSITIVE_INFINITY");
        return 0;
    }
    if (eq(s, n, "-Infinity")) {
        put_str(out, "NEGATIVE_INFINITY");
        return 0;
    }
    if (n == 0)
        return -1;
    size_t i = s[0] == '-' ? 1 : 0, int_start = i;
    while (i < n && is_digit(s[i]))
        i++;
    size_t int_end = i, frac_start = i, frac_end = i;
    if (int_end == int_start)
        return -1;
    if (i < n && s[i] == '.') {
        frac_start = ++i;
        while (i < n && is_digit(s[i]))
            i++;
        frac_end = i;
        if (frac_end == frac_start)
            return -1;
    }
    if (i != n)
        return -1;
    /* Unscaled digits: integer and fraction digits without leading zeros. */
    size_t scale = frac_end - frac_start, total = (int_end - int_start) + scale, lead = 0;
    for (size_t k = 0; k < total; k++) {
        char c = k < int_end - int_start ? s[int_start + k] : s[frac_start + k - (int_end - int_start)];
        if (c != '0')
            break;
        lead++;
    }
    size_t nd = total - lead; /* significant digits; 0 for zero, printed as the digit "0" */
    if (nd == 0)
        nd = 1;
    int64_t adjusted = (int64_t)nd - 1 - (int64_t)scale;
    if (adjusted >= -6) {
        crw_buf_put_json_str(out, s, n);
        return 0;
    }
    /* adjusted < -6: the integer part is 0 and the significant digits end the fraction. */
    const char *d = s + frac_end - nd;
    crw_buf_putc(out, '"');
    if (s[0] == '-')
        crw_buf_putc(out, '-');
    crw_buf_putc(out, d[0]);
    if (nd > 1) {
        crw_buf_putc(out, '.');
        crw_buf_put(out, d + 1, nd - 1);
    }
    crw_buf_putc(out, 'E');
    crw_buf_put_i64(out, adjusted);
    crw_buf_putc(out, '"');
    return 0;
}

/*
 * money as a plain decimal string: sign, digits without group separators,
 * PostgreSQL's fraction digits.  Accepts what cash_out prints with a '.'
 * decimal point and ',' groups ("-$1,234.50", "($1.00)", "1,234.50 EUR");
 * anything else is left to the text fallback.
 */
static int render_money(crw_buf_t *out, const char *s, size_t n) {
    size_t i = 0;
    bool neg = false, paren = false;
    while (i < n && !is_digit(s[i])) {
        if (s[i] == '-')
            neg = true;
        else if (s[i] == '(')
            neg = paren = true;
        else if (s[i] == '.' || s[i] == ',' || s[i] == ')')
            return -1;
        i++;
    }
    size_t st = i;
    int group = -1; /* digits since the last ',' (-1: none seen) */
    size_t lead_digits = 0;
    while (i < n && (is_digit(s[i]) || s[i] == ',')) {
        if (s[i] == ',') {
            if ((group < 0 && (lead_digits < 1 || lead_digits > 3)) || (group >= 0 && group != 3))
                return -1;
            group = 0;
        } else if (group >= 0) {
            group++;
        } else {
            lead_digits++;
        }
        i++;
    }
    if (i == st || (group >= 0 && group != 3))
        return -1;
    size_t int_end = i, frac_st = i, frac_end = i;
    if (i < n && s[i] == '.') {
        frac_st = ++i;
        while (i < n && is_digit(s[i]))
            i++;
        frac_end = i;
        if (frac_end == frac_st)
            return -1;
    }
    for (; i < n; i++) {
        if (is_digit(s[i]) || s[i] == '.' || s[i] == ',')
            return -1;
        if (s[i] == '-')
            neg = true;
        else if (s[i] == ')' && paren)
            paren = false;
    }
    if (paren)
        return -1;
    crw_buf_putc(out, '"');
    if (neg)
        crw_buf_putc(out, '-');
    for (size_t k = st; k < int_end; k++)
        if (s[k] != ',')
            crw_buf_putc(out, s[k]);
    if (frac_end > frac_st) {
        crw_buf_putc(out, '.');
        crw_buf_put(out, s + frac_st, frac_end - frac_st);
    }
    crw_buf_putc(out, '"');
    return 0;
}

/* ---- base64 ----------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_group(crw_buf_t *out, const unsigned char *b, int n) {
    uint32_t v = (uint32_t)b[0] << 16 | (n > 1 ? (uint32_t)b[1] << 8 : 0) | (n > 2 ? b[2] : 0);
    char q[4] = {b64[v >> 18 & 63], b64[v >> 12 & 63], n > 1 ? b64[v >> 6 & 63] : '=', n > 2 ? b64[v & 63] : '='};
    crw_buf_put(out, q, 4);
}

static void put_b64(crw_buf_t *out, const unsigned char *b, size_t n) {
    crw_buf_putc(out, '"');
    for (size_t i = 0; i < n; i += 3)
        b64_group(out, b + i, n - i >= 3 ? 3 : (int)(n - i));
    crw_buf_putc(out, '"');
}

/*
 * bit/varbit.  Length 1 (bit, bit(1), varbit(1)): a boolean.  Otherwise
 * io.debezium.data.Bits: the rightmost character is bit 0, bytes are little
 * endian (bit 0 is the low bit of byte 0), as many bytes as the highest set
 * bit needs (Java's BitSet.toByteArray()), base64 in JSON.
 */
static int render_bits(crw_buf_t *out, const char *s, size_t n, int32_t typmod) {
    size_t high = 0; /* highest set bit + 1 */
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '0' && s[i] != '1')
            return -1;
        if (s[i] == '1' && !high)
            high = n - i;
    }
    if (typmod == 1) {
        crw_buf_puts(out, high ? "true" : "false");
        return 0;
    }
    size_t nbytes = (high + 7) / 8;
    crw_buf_putc(out, '"');
    unsigned char grp[3];
    int g = 0;
    for (size_t k = 0; k < nbytes; k++) {
        unsigned char byte = 0;
        for (int b = 0; b < 8; b++) {
            size_t bit = k * 8 + (size_t)b;
            if (bit < n && s[n - 1 - bit] == '1')
                byte |= (unsigned char)(1u << b);
        }
        grp[g++] = byte;
        if (g == 3) {
            b64_group(out, grp, 3);
            g = 0;
        }
    }
    if (g)
        b64_group(out, grp, g);
    crw_buf_putc(out, '"');
    return 0;
}

/* float8 text as a JSON value: a number, or "NaN"/"Infinity"/"-Infinity" as Jackson writes them. */
static int put_float_text(crw_buf_t *out, const char *s, size_t n) {
    static const crw_typeinfo_t f8 = {CRW_TC_FLOAT, false, ','};
    return crw_value_render(out, &f8, s, n);
}

/* point "(x,y)" -> io.debezium.data.geometry.Point {"x","y","wkb","srid"}. */
static int render_point(crw_buf_t *out, const char *s, size_t n) {
    if (n < 5 || s[0] != '(' || s[n - 1] != ')')
        return -1;
    const char *comma = memchr(s, ',', n);
    if (!comma)
        return -1;
    const char *xs = s + 1, *ys = comma + 1;
    size_t xn = (size_t)(comma - xs), yn = (size_t)(s + n - 1 - ys);
    char xb[64], yb[64];
    if (xn == 0 || yn == 0 || xn >= sizeof xb || yn >= sizeof yb)
        return -1;
    memcpy(xb, xs, xn);
    xb[xn] = '\0';
    memcpy(yb, ys, yn);
    yb[yn] = '\0';
    char *e1, *e2;
    double x = strtod(xb, &e1), y = strtod(yb, &e2);
    if (*e1 || *e2)
        return -1;
    size_t mark = out->len;
    crw_buf_puts(out, "{\"x\":");
    if (put_float_text(out, xs, xn) < 0)
        goto bad;
    crw_buf_puts(out, ",\"y\":");
    if (put_float_text(out, ys, yn) < 0)
        goto bad;
    /* WKB: byte order 1 (little endian), uint32 type 1 (Point), x, y as IEEE doubles. */
    unsigned char wkb[21] = {1, 1, 0, 0, 0};
    uint64_t bits;
    memcpy(&bits, &x, 8);
    for (int i = 0; i < 8; i++)
        wkb[5 + i] = (unsigned char)(bits >> (8 * i));
    memcpy(&bits, &y, 8);
    for (int i = 0; i < 8; i++)
        wkb[13 + i] = (unsigned char)(bits >> (8 * i));
    crw_buf_puts(out, ",\"wkb\":");
    put_b64(out, wkb, sizeof wkb);
    crw_buf_puts(out, ",\"srid\":null}");
    return 0;
bad:
    out->len = mark;
    out->data[mark] = '\0';
    return -1;
}

/* ---- dates and times -------------------------------------------------- */

static int render_date(crw_buf_t *out, const char *s, size_t n) {
    if (eq(s, n, "infinity") || eq(s, n, "-infinity")) {
        crw_buf_put_i64(out, s[0] == '-' ? DBZ_DATE_NEG_INF : DBZ_DATE_POS_INF);
        return 0;
    }
    crw_pgtime_t t = {0};
    size_t i = 0;
    if (!crw_pgtime_date(s, n, &i, &t) || !crw_pgtime_era_end(s, n, &i, &t))
        return -1;
    crw_buf_put_i64(out, crw_days_from_civil(t.year, t.mon, t.day));
    return 0;
}

/* time: ms past midnight for precision 0..3 (io.debezium.time.Time), else µs (MicroTime). */
static int render_time(crw_buf_t *out, const char *s, size_t n, int32_t typmod) {
    crw_pgtime_t t = {0};
    size_t i = 0;
    int64_t us;
    if (!parse_tod(s, n, &i, &t, &us) || i != n)
        return -1;
    crw_buf_put_i64(out, precision(typmod) <= 3 ? us / 1000 : us);
    return 0;
}

/* timestamp: ms since the epoch for precision 0..3 (Timestamp), else µs (MicroTimestamp). */
static int render_timestamp(crw_buf_t *out, const char *s, size_t n, int32_t typmod) {
    bool ms = precision(typmod) <= 3;
    if (eq(s, n, "infinity") || eq(s, n, "-infinity")) {
        int64_t v = s[0] == '-' ? DBZ_TS_NEG_INF_US : DBZ_TS_POS_INF_US;
        crw_buf_put_i64(out, ms ? v / 1000 : v);
        return 0;
    }
    crw_pgtime_t t = {0};
    size_t i = 0;
    int64_t tod, us;
    if (!crw_pgtime_date(s, n, &i, &t) || !crw_text_expect(s, n, &i, ' ') || !parse_tod(s, n, &i, &t, &tod) ||
        t.hour > 23 || !crw_pgtime_era_end(s, n, &i, &t) || !unix_us(&t, tod, &us))
        return -1;
    crw_buf_put_i64(out, ms ? crw_floor_div(us, 1000) : us);
    return 0;
}

/* Four-digit year, '+' beyond 9999, '-' for astronomical years below 0 (java.time's ISO_LOCAL_DATE). */
static void put_iso_year(crw_buf_t *out, int64_t y) {
    if (y > 9999)
        crw_buf_putc(out, '+');
    else if (y < 0) {
        crw_buf_putc(out, '-');
        y = -y;
    }
    for (int64_t p = 1000; p > 1 && y < p; p /= 10)
        crw_buf_putc(out, '0');
    crw_buf_put_u64(out, (uint64_t)y);
}

static void put_2d(crw_buf_t *out, int v) {
    char b[2] = {(char)('0' + v / 10), (char)('0' + v % 10)};
    crw_buf_put(out, b, 2);
}

/* HH:MM:SS and a fraction: width digits exactly, or (width 0) as few as needed, none for 0. */
static void put_hms(crw_buf_t *out, int64_t us_day, int width) {
    int64_t secs = us_day / US_PER_SEC, frac = us_day % US_PER_SEC;
    put_2d(out, (int)(secs / 3600));
    crw_buf_putc(out, ':');
    put_2d(out, (int)(secs / 60 % 60));
    crw_buf_putc(out, ':');
    put_2d(out, (int)(secs % 60));
    char f[6];
    for (int k = 5; k >= 0; k--, frac /= 10)
        f[k] = (char)('0' + frac % 10);
    int nd = width;
    if (width == 0) {
        nd = 6;
        while (nd > 0 && f[nd - 1] == '0')
            nd--;
    }
    if (nd > 0) {
        crw_buf_putc(out, '.');
        crw_buf_put(out, f, (size_t)nd);
    }
}

/* timestamptz: io.debezium.time.ZonedTimestamp, UTC, "Z", typmod fraction digits. */
static int render_timestamptz(crw_buf_t *out, const char *s, size_t n, int32_t typmod) {
    if (eq(s, n, "infinity") || eq(s, n, "-infinity")) {
        crw_buf_put_json_str(out, s, n);
        return 0;
    }
    crw_pgtime_t t = {0};
    size_t i = 0;
    int64_t tod, us;
    if (!crw_pgtime_date(s, n, &i, &t) || !crw_text_expect(s, n, &i, ' ') || !parse_tod(s, n, &i, &t, &tod) ||
        t.hour > 23 || !crw_pgtime_offset(s, n, &i, &t) || !crw_pgtime_era_end(s, n, &i, &t) ||
        !unix_us(&t, tod, &us))
        return -1;
    int64_t days = crw_floor_div(us, US_PER_DAY), y;
    int m, d;
    crw_civil_from_days(days, &y, &m, &d);
    crw_buf_putc(out, '"');
    put_iso_year(out, y);
    crw_buf_putc(out, '-');
    put_2d(out, m);
    crw_buf_putc(out, '-');
    put_2d(out, d);
    crw_buf_putc(out, 'T');
    put_hms(out, floor_mod(us, US_PER_DAY), precision(typmod));
    crw_buf_put(out, "Z\"", 2);
    return 0;
}

/* timetz: io.debezium.time.ZonedTime, shifted to UTC, fraction trimmed, "Z". */
static int render_timetz(crw_buf_t *out, const char *s, size_t n) {
    crw_pgtime_t t = {0};
    size_t i = 0;
    int64_t local;
    if (!parse_tod(s, n, &i, &t, &local) || !crw_pgtime_offset(s, n, &i, &t) || i != n)
        return -1;
    crw_buf_putc(out, '"');
    if (local == US_PER_DAY && t.offset == 0)
        crw_buf_puts(out, "24:00:00"); /* PostgresTimeBoundary.TIME_WITH_TIMEZONE_BOUNDARY_AT_UTC */
    else
        put_hms(out, floor_mod(local - (int64_t)t.offset * US_PER_SEC, US_PER_DAY), 0);
    crw_buf_put(out, "Z\"", 2);
    return 0;
}

/*
 * interval as IntervalStyle=iso_8601 prints it: P[nY][nM][nD][T[nH][nM][n[.f]S]],
 * each number with its own sign, "PT0S" for zero -> MicroDuration µs.
 */
static int render_interval(crw_buf_t *out, const char *s, size_t n) {
    size_t i = 0;
    if (!crw_text_expect(s, n, &i, 'P') || i == n)
        return -1;
    int64_t months = 0, days = 0, us = 0, r;
    bool in_time = false;
    while (i < n) {
        if (s[i] == 'T') {
            if (in_time || ++i == n)
                return -1;
            in_time = true;
            continue;
        }
        bool neg = crw_text_expect(s, n, &i, '-');
        size_t st = i;
        int64_t v = 0, frac = 0;
        while (i < n && is_digit(s[i])) {
            if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, s[i] - '0', &v))
                return -1;
            i++;
        }
        if (i == st)
            return -1;
        if (crw_text_expect(s, n, &i, '.')) {
            int nd = 0;
            while (i < n && is_digit(s[i]) && nd < 6) {
                frac = frac * 10 + (s[i++] - '0');
                nd++;
            }
            if (nd == 0 || (i < n && is_digit(s[i])))
                return -1;
            for (; nd < 6; nd++)
                frac *= 10;
        }
        if (i == n)
            return -1;
        char unit = s[i++];
        if (frac && !(in_time && unit == 'S'))
            return -1;
        if (neg) {
            v = -v;
            frac = -frac;
        }
        int64_t *acc, mul;
        if (!in_time && unit == 'Y')
            acc = &months, mul = 12;
        else if (!in_time && unit == 'M')
            acc = &months, mul = 1;
        else if (!in_time && unit == 'D')
            acc = &days, mul = 1;
        else if (in_time && unit == 'H')
            acc = &us, mul = INT64_C(3600) * US_PER_SEC;
        else if (in_time && unit == 'M')
            acc = &us, mul = 60 * US_PER_SEC;
        else if (in_time && unit == 'S')
            acc = &us, mul = US_PER_SEC;
        else
            return -1;
        if (__builtin_mul_overflow(v, mul, &r) || __builtin_add_overflow(r, frac, &r) ||
            __builtin_add_overflow(*acc, r, acc))
            return -1;
    }
    int64_t a, b;
    if (__builtin_mul_overflow(months, US_PER_MONTH, &a) || __builtin_mul_overflow(days, US_PER_DAY, &b) ||
        __builtin_add_overflow(a, b, &a) || __builtin_add_overflow(a, us, &a))
        return -1;
    crw_buf_put_i64(out, a);
    return 0;
}

/* ---- per-type dispatch ------------------------------------------------ */

/* The element type of what the switch below treats by OID. */
static uint32_t elem_oid(const crw_dbz_col_t *att) {
    switch (att->typoid) {
    case OID_MONEY_ARRAY: return OID_MONEY;
    case OID_POINT_ARRAY: return OID_POINT;
    case OID_BIT_ARRAY: return OID_BIT;
    case OID_VARBIT_ARRAY: return OID_VARBIT;
    default: return att->typoid;
    }
}

static int render_scalar(crw_buf_t *out, const crw_dbz_col_t *att, uint32_t oid, const char *s, size_t n) {
    switch (oid) {
    case OID_MONEY: return render_money(out, s, n);
    case OID_POINT: return render_point(out, s, n);
    case OID_BIT:
    case OID_VARBIT: return render_bits(out, s, n, att->typmod);
    default: break;
    }
    crw_typeinfo_t ti = {att->ti.cls, false, att->ti.delim};
    switch (att->ti.cls) {
    case CRW_TC_INT:
    case CRW_TC_FLOAT:
    case CRW_TC_BOOL:
    case CRW_TC_BYTEA: return crw_value_render(out, &ti, s, n); /* same as crwatch's own rendering */
    case CRW_TC_NUMERIC: return render_numeric(out, s, n);
    case CRW_TC_DATE: return render_date(out, s, n);
    case CRW_TC_TIME: return render_time(out, s, n, att->typmod);
    case CRW_TC_TIMETZ: return render_timetz(out, s, n);
    case CRW_TC_TIMESTAMP: return render_timestamp(out, s, n, att->typmod);
    case CRW_TC_TIMESTAMPTZ: return render_timestamptz(out, s, n, att->typmod);
    case CRW_TC_INTERVAL: return render_interval(out, s, n);
    case CRW_TC_JSON:  /* io.debezium.data.Json: the document's text in a string */
    case CRW_TC_JSONB:
    case CRW_TC_UUID:
    case CRW_TC_TEXT:
    default: crw_buf_put_json_str(out, s, n); return 0;
    }
}

/* ---- arrays: value.c walks array_out's text, elements come back here -- */

typedef struct {
    const crw_dbz_col_t *att;
    uint32_t oid;
} elem_arg_t;

static int dbz_elem(crw_buf_t *out, const char *text, size_t len, void *arg) {
    const elem_arg_t *e = arg;
    return render_scalar(out, e->att, e->oid, text, len);
}

static int render_array(crw_buf_t *out, const crw_dbz_col_t *att, const char *s, size_t n) {
    elem_arg_t e = {att, elem_oid(att)};
    return crw_value_render_array(out, s, n, att->ti.delim, dbz_elem, &e);
}

int crw_debezium_render_value(crw_buf_t *out, const crw_dbz_col_t *att, const char *text, size_t len) {
    size_t mark = out->len;
    bool array = att->ti.is_array || att->typoid == OID_MONEY_ARRAY || att->typoid == OID_POINT_ARRAY ||
                 att->typoid == OID_BIT_ARRAY || att->typoid == OID_VARBIT_ARRAY;
    int rc = array ? render_array(out, att, text, len) : render_scalar(out, att, att->typoid, text, len);
    if (rc < 0) {
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
    }
    return rc;
}

