/*
 * jsondiff.h — a flat JSON tokenizer and a structural diff over two
 * documents, without allocation per row: token arrays live in reusable
 * documents (jsmn's layout).  Values are never converted, so numbers of any
 * length compare by their text.
 *
 * Used for `changed` (RFC 6901 pointers to what differs between oldObject
 * and object), the optional RFC 6902 JSON Patch, and to look up a value by
 * pointer in a cached object (unchanged-TOAST fill).
 */
#ifndef CRW_JSONDIFF_H
#define CRW_JSONDIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

typedef struct crw_jtok {
    char type;      /* 'o' object, 'a' array, 's' string, 'p' primitive (number, true, false, null) */
    uint32_t start; /* byte offset of the value (a string's opening quote) */
    uint32_t end;   /* one past its last byte */
    uint32_t count; /* object: members; array: elements */
    uint32_t next;  /* index of the token after this value's subtree */
} crw_jtok_t;

typedef struct crw_jdoc {
    const char *text;
    crw_jtok_t *toks;
    uint32_t ntoks, cap;
} crw_jdoc_t;

#define CRW_JDOC_INIT {NULL, NULL, 0, 0}

/* Tokenizes text[0..len) into doc (reusing its storage); returns 0 or -1 if it is not one JSON value. */
int crw_jdoc_parse(crw_jdoc_t *doc, const char *text, size_t len);
void crw_jdoc_free(crw_jdoc_t *doc);

/* Token index of the value at RFC 6901 pointer ("" is the root), or -1. */
int crw_jdoc_lookup(const crw_jdoc_t *doc, const char *pointer);

/*
 * A 64-bit fingerprint (FNV-1a) of the value at token tok of doc: its tokens'
 * types and texts in order, so whitespace does not count and equal JSON
 * written by the same renderer has the same fingerprint.
 */
uint64_t crw_jdoc_fingerprint(const crw_jdoc_t *doc, int tok);

/*
 * Compares a (old) with b (new) from their roots.  Appends to changed the
 * pointers that differ as comma-separated JSON strings, and to patch (when
 * not NULL) RFC 6902 operations as comma-separated JSON objects turning a
 * into b.  skip: comma-separated JSON strings of pointers whose absence from
 * b means "unknown", not "removed" (may be NULL).
 */
void crw_jdoc_diff(const crw_jdoc_t *a, const crw_jdoc_t *b, crw_buf_t *changed, crw_buf_t *patch, const char *skip);

/*
 * The same comparison for one member, at pointer (RFC 6901, escaped), when
 * the caller knows where the member's value is in each object: a (old) and
 * b (new) are its JSON texts, NULL when the member is absent.  Appends what
 * crw_jdoc_diff would append for that member; da and db are scratch
 * documents, tokenized only when the two texts differ.
 */
void crw_jdoc_diff_member(const char *pointer, const char *a, size_t an, const char *b, size_t bn, crw_jdoc_t *da,
                          crw_jdoc_t *db, crw_buf_t *changed, crw_buf_t *patch, const char *skip);

/*
 * Appends the JSON string body body[0..n) (no quotes) decoded: escapes
 * become their characters, \u escapes UTF-8.  @returns 0, or -1 when an
 * escape is malformed (what was decoded before it stays appended).
 */
int crw_json_unescape(crw_buf_t *b, const char *body, size_t n);

/* Appends "/" and seg[0..n) escaped as an RFC 6901 pointer segment ('~' -> "~0", '/' -> "~1"). */
void crw_json_pointer_append(crw_buf_t *b, const char *seg, size_t n);

#endif
