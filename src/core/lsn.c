/*
 * lsn.c — LSN text: parse and format (see lsn.h).
 */
#include "core/lsn.h"

#include <stdio.h>

int crw_lsn_parse(const char *s, uint64_t *lsn) {
    unsigned hi, lo;
    char tail;
    if (sscanf(s, "%X/%X%c", &hi, &lo, &tail) != 2)
        return -1;
    *lsn = ((uint64_t)hi << 32) | lo;
    return 0;
}

/* Upper-case hex of v without leading zeros (at least one digit) at p; returns the end. */
static char *put_hex(char *p, uint32_t v) {
    static const char digits[] = "0123456789ABCDEF";
    char tmp[8];
    int n = 0;
    do {
        tmp[n++] = digits[v & 15];
        v >>= 4;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

size_t crw_lsn_format(char *buf, uint64_t lsn) {
    char *p = put_hex(buf, (uint32_t)(lsn >> 32));
    *p++ = '/';
    p = put_hex(p, (uint32_t)lsn);
    *p = '\0';
    return (size_t)(p - buf);
}
