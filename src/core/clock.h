/*
 * clock.h — the clocks crwatch reads: one monotonic clock for timeouts,
 * intervals and backoffs, and the wall clock for timestamps that leave the
 * process (PostgreSQL's sendTime, event and log times).
 */
#ifndef CRW_CLOCK_H
#define CRW_CLOCK_H

#include <stddef.h>
#include <stdint.h>

/* PostgreSQL's epoch (2000-01-01) in Unix microseconds. */
#define CRW_PG_EPOCH_OFFSET_US INT64_C(946684800000000)

/* Monotonic microseconds (CLOCK_MONOTONIC): for deadlines and intervals only. */
int64_t crw_clock_mono_us(void);

/* Monotonic milliseconds. */
static inline int64_t crw_clock_mono_ms(void) { return crw_clock_mono_us() / 1000; }

/* Wall-clock microseconds since the Unix epoch. */
int64_t crw_clock_wall_us(void);

/* Wall-clock microseconds since PostgreSQL's epoch (TimestampTz). */
static inline int64_t crw_clock_pg_us(void) { return crw_clock_wall_us() - CRW_PG_EPOCH_OFFSET_US; }

/*
 * Formats Unix microseconds as ISO-8601 UTC with six fraction digits,
 * "2026-11-24T10:00:00.123456Z", into buf (32 bytes or more).
 */
void crw_clock_format_iso(char *buf, size_t n, int64_t unix_us);

#endif
