/*
 * fuzz_common.h — what the libFuzzer harnesses share: the oracles a
 * rendering is held to (UTF-8, RFC 8259 JSON, json-c's strict parser), a
 * cursor over the fuzzer's bytes, and the one way a harness reports a
 * broken invariant (a message on stderr, then abort(), which libFuzzer
 * records as a crash with its input).
 *
 * The oracles are written here rather than taken from src/ so that a defect
 * in crwatch's own UTF-8 or JSON code cannot hide itself.
 */
#ifndef CRW_FUZZ_COMMON_H
#define CRW_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Prints "<harness>: <what>" and the offending bytes (escaped, cut at 512), then aborts. */
void fz_fail(const char *what, const void *bytes, size_t n) __attribute__((noreturn));

#define FZ_ASSERT(cond, what, bytes, n)                                                                                \
    do {                                                                                                               \
        if (!(cond))                                                                                                   \
            fz_fail((what), (bytes), (n));                                                                             \
    } while (0)

/* True when s[0..n) is well-formed UTF-8: no overlongs, surrogates or code points past U+10FFFF. */
bool fz_utf8_valid(const void *s, size_t n);

/* True when s[0..n) is exactly one JSON value per RFC 8259 (whitespace around it allowed). */
bool fz_json_valid(const char *s, size_t n);

/*
 * True when json-c's strict tokener (JSON_TOKENER_STRICT | VALIDATE_UTF8)
 * parses s[0..n) as one value with nothing after it.  *out (may be NULL)
 * receives the parsed value, which the caller puts; NULL for JSON null.
 */
struct json_object;
bool fz_jsonc_parse(const char *s, size_t n, struct json_object **out);

/*
 * Every check a rendered JSON value must pass: UTF-8, the RFC 8259 grammar
 * and json-c strict.  what names the renderer and type for the report.
 */
void fz_check_json(const char *what, const char *s, size_t n);

/* A cursor over the fuzzer's input: reads past the end give zeros and an empty rest. */
typedef struct {
    const uint8_t *p;
    size_t n, i;
} fz_in_t;

uint8_t fz_u8(fz_in_t *in);
uint16_t fz_u16(fz_in_t *in);
uint32_t fz_u32(fz_in_t *in);
/* Up to n bytes (fewer at the end): *len receives how many. */
const uint8_t *fz_take(fz_in_t *in, size_t n, size_t *len);
/* Bytes up to the next sep (or the end), sep consumed; NULL once nothing is left. */
const uint8_t *fz_until(fz_in_t *in, uint8_t sep, size_t *len);

/* A NUL-terminated malloc'd copy of b[0..n). */
char *fz_strndup(const void *b, size_t n);

#endif
