/*
 * value.h — renders one column value, as PostgreSQL's text output sends it,
 * into a JSON value (docs/events.md, "Values").  The replication session is set to
 * DateStyle=ISO, IntervalStyle=iso_8601, TimeZone=UTC, extra_float_digits=3,
 * bytea_output=hex, so the input forms are fixed; the renderer still accepts
 * the escape form of bytea and any UTC offset on timestamptz.
 */
#ifndef CRW_VALUE_H
#define CRW_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "decode/types.h"

/*
 * Appends the JSON rendering of text[0..len) of type ti to out.
 * @returns 0, or -1 when the text is malformed for its class; then nothing
 *          usable was appended (out is restored to its previous length) and
 *          the caller may fall back to crw_value_render_text.
 */
int crw_value_render(crw_buf_t *out, const crw_typeinfo_t *ti, const char *text, size_t len);

/* Renders one array element (its text, unescaped) into out; returns 0 or -1. */
typedef int (*crw_array_elem_fn)(crw_buf_t *out, const char *text, size_t len, void *arg);

/*
 * Walks PostgreSQL's array_out text (optional "[lo:hi]=" bounds, nested
 * braces, quoted and escaped elements, unquoted NULL) into nested JSON
 * arrays, each element through fn.  delim: the element type's delimiter
 * (0 means ',').  @returns 0, or -1 when malformed (out may hold a partial
 * rendering: the caller restores it).
 */
int crw_value_render_array(crw_buf_t *out, const char *s, size_t n, char delim, crw_array_elem_fn fn, void *arg);

/*
 * A date/time as PostgreSQL's ISO DateStyle prints it, broken down.  The
 * crw_pgtime_* parsers each read one part at s[*i] (of n bytes), advance *i
 * past it and return true, or return false on malformed text.
 */
typedef struct crw_pgtime {
    int64_t year; /* astronomical after crw_pgtime_era_end: 1 BC is 0, 2 BC is -1 */
    int mon, day;
    int hour, min, sec;
    const char *frac; /* ".123456" (one digit or more) or NULL, pointing into s */
    size_t frac_len;
    int offset; /* seconds east of UTC */
    const char *off_text;
    size_t off_len;
    bool has_off_min, has_off_sec;
} crw_pgtime_t;

/* YYYY-MM-DD, the year four to nine digits. */
bool crw_pgtime_date(const char *s, size_t n, size_t *i, crw_pgtime_t *t);
/* HH:MM:SS[.f+]; hour 24 is accepted (the time type's "24:00:00"), seconds up to 60. */
bool crw_pgtime_time(const char *s, size_t n, size_t *i, crw_pgtime_t *t);
/* ±HH[:MM[:SS]] as EncodeTimezone prints it (zero trailing parts omitted). */
bool crw_pgtime_offset(const char *s, size_t n, size_t *i, crw_pgtime_t *t);
/* Optional " BC", then the end of the text; the year becomes astronomical. */
bool crw_pgtime_era_end(const char *s, size_t n, size_t *i, crw_pgtime_t *t);
/* Consumes c at s[*i] if it is there. */
bool crw_text_expect(const char *s, size_t n, size_t *i, char c);

/* Days since 1970-01-01 of a proleptic Gregorian date, astronomical year (H. Hinnant's algorithm). */
int64_t crw_days_from_civil(int64_t y, int m, int d);
/* The inverse: the date of day z since 1970-01-01. */
void crw_civil_from_days(int64_t z, int64_t *y, int *m, int *d);

/* Appends text[0..len) as a JSON string (the universal fallback). */
void crw_value_render_text(crw_buf_t *out, const char *text, size_t len);

/*
 * Frees the calling thread's scratch buffer (used to unescape quoted array
 * elements; it is kept between calls so the hot path does not allocate).
 * Call before a rendering thread exits; rendering afterwards is still fine.
 */
void crw_value_thread_cleanup(void);

#endif
