/*
 * json_assert.h — JSON assertions shared by the unit and integration tests
 * (Criterion).  Header-only: each test binary gets its own copy.
 */
#ifndef CRW_TEST_JSON_ASSERT_H
#define CRW_TEST_JSON_ASSERT_H

#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stddef.h>

/* Asserts that s[0..n) is exactly one valid JSON value (strict, UTF-8 checked). */
static inline void assert_json(const char *s, size_t n) {
    json_tokener *tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    /* Passing the NUL too tells json-c the input ends (a bare number could go on). */
    json_object *obj = json_tokener_parse_ex(tok, s, (int)n + 1);
    enum json_tokener_error err = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    json_object_put(obj);
    cr_assert_eq(err, json_tokener_success, "json-c rejects <%s>: %s", s, json_tokener_error_desc(err));
    cr_assert_eq(end, n, "json-c stopped at %zu of %zu in <%s>", end, n, s);
}

#endif
