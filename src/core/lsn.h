/*
 * lsn.h — WAL positions (LSNs) as text, the way PostgreSQL prints them:
 * two hexadecimal halves, "16/B374D848".
 *
 * An LSN is a uint64_t everywhere in crwatch.  Log lines use CRW_LSN_FMT
 * with CRW_LSN_ARGS (PostgreSQL's LSN_FORMAT_ARGS); code that builds text
 * on the hot path uses crw_lsn_format, which does not go through printf.
 */
#ifndef CRW_LSN_H
#define CRW_LSN_H

#include <stddef.h>
#include <stdint.h>

#define CRW_LSN_FMT "%X/%X"
#define CRW_LSN_ARGS(lsn) (unsigned)((uint64_t)(lsn) >> 32), (unsigned)(uint32_t)(lsn)

/* Room for the longest LSN text, "FFFFFFFF/FFFFFFFF", and its NUL. */
#define CRW_LSN_BUFSIZE 18

/* Parses "X/Y" (nothing before or after) into *lsn; returns 0 or -1. */
int crw_lsn_parse(const char *s, uint64_t *lsn);

/* Writes lsn as text with a NUL into buf (CRW_LSN_BUFSIZE bytes or more); returns its length. */
size_t crw_lsn_format(char *buf, uint64_t lsn);

#endif
