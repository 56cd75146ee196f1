/*
 * utf8.h — UTF-8 validation (core/utf8.c).  No dependencies.
 */
#ifndef CRW_UTF8_H
#define CRW_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when it is not one (overlongs, surrogates and
 * code points past U+10FFFF are not). */
size_t crw_utf8_seq_len(const unsigned char *s, size_t n);

#endif
