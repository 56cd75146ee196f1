/*
 * debezium_value.h — Debezium's value conversions (event.format=debezium):
 * one column's text, as PostgreSQL's output sends it, to the JSON that
 * Debezium's converters write.  Every representation choice is listed in
 * debezium.h; the envelope around the values is debezium.c's.
 */
#ifndef CRW_DEBEZIUM_VALUE_H
#define CRW_DEBEZIUM_VALUE_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "decode/types.h"

/* One column as the value conversions see it: its type and typmod (precision, bit length). */
typedef struct crw_dbz_col {
    uint32_t typoid;
    int32_t typmod;
    crw_typeinfo_t ti;
} crw_dbz_col_t;

/* Floor division for a positive divisor (times before 1970 round down). */
static inline int64_t crw_floor_div(int64_t a, int64_t b) { return a / b - (a % b != 0 && (a < 0)); }

/*
 * Appends the Debezium rendering of one non-NULL column value (text[0..len)
 * of col's type) to out.  @returns 0, or -1 when the text does not parse for
 * its type (out is restored; the encoders then emit the text as a string).
 */
int crw_debezium_render_value(crw_buf_t *out, const crw_dbz_col_t *col, const char *text, size_t len);

/* Frees the calling thread's scratch buffer (call before a thread exits). */
void crw_debezium_thread_cleanup(void);

#endif
