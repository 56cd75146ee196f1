/*
 * copytext.h — one row of PostgreSQL's COPY text format (COPY ... TO STDOUT,
 * the server's src/backend/commands/copyto.c CopyAttributeOutText) into a
 * text tuple: columns separated by a tab, \N for NULL, backslash escapes
 * (\b \f \n \r \t \v \\, \ooo octal, \xhh hex, any other char as itself).
 * No I/O.
 *
 * Zero-copy where it can be: a value without a backslash points into the
 * line; only escaped values are decoded, into the caller's scratch buffer.
 * The line and the scratch must outlive the use of the tuple.
 */
#ifndef CRW_COPYTEXT_H
#define CRW_COPYTEXT_H

#include <stddef.h>

#include "core/buf.h"
#include "decode/pgoutput.h"

/*
 * Parses line[0..len) (a trailing newline is allowed) into the ncols
 * columns of cols, decoding escaped values into scratch (reset first).
 * @returns 0, or -1 when the line does not have exactly ncols columns.
 */
int crw_copytext_row(const char *line, size_t len, int ncols, crw_pgo_col_t *cols, crw_buf_t *scratch);

#endif
