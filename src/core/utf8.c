/*
 * utf8.c — UTF-8 validation shared by what writes JSON: events (core/buf.c)
 * and log lines (core/log.c).
 */
#include "core/utf8.h"

size_t crw_utf8_seq_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0xC2)
        return 0; /* continuation byte or overlong 2-byte lead */
    if (c < 0xE0) {
        len = 2;
        cp = c & 0x1F;
    } else if (c < 0xF0) {
        len = 3;
        cp = c & 0x0F;
    } else if (c < 0xF5) {
        len = 4;
        cp = c & 0x07;
    } else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return len;
}
