/* test_jsondiff.c — tokenizer, pointer look-up, changed pointers and JSON Patch. */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <string.h>

#include "map/jsondiff.h"

static crw_jdoc_t A = CRW_JDOC_INIT, B = CRW_JDOC_INIT;

static void diff(const char *a, const char *b, const char *skip, const char *want_changed, const char *want_patch) {
    cr_assert_eq(crw_jdoc_parse(&A, a, strlen(a)), 0, "parse %s", a);
    cr_assert_eq(crw_jdoc_parse(&B, b, strlen(b)), 0, "parse %s", b);
    crw_buf_t ch = CRW_BUF_INIT, pa = CRW_BUF_INIT;
    crw_jdoc_diff(&A, &B, &ch, &pa, skip);
    cr_assert_str_eq(ch.data ? ch.data : "", want_changed, "changed for %s -> %s", a, b);
    if (want_patch)
        cr_assert_str_eq(pa.data ? pa.data : "", want_patch, "patch for %s -> %s", a, b);
    crw_buf_free(&ch);
    crw_buf_free(&pa);
}

Test(jsondiff, equal_documents_have_no_changes) {
    diff("{\"a\":1,\"b\":[1,2]}", "{\"a\":1,\"b\":[1,2]}", NULL, "", "");
    diff("{ \"a\" : 1 }", "{\"a\":1}", NULL, "", "");
}

Test(jsondiff, nested_pointer_not_just_the_column) {
    diff("{\"status\":{\"phase\":\"Pending\",\"n\":1},\"spec\":{\"preset\":\"1080p\"}}",
         "{\"status\":{\"phase\":\"Running\",\"n\":1},\"spec\":{\"preset\":\"1080p\"}}", NULL, "\"/status/phase\"",
         "{\"op\":\"replace\",\"path\":\"/status/phase\",\"value\":\"Running\"}");
}

Test(jsondiff, added_and_removed_keys) {
    diff("{\"a\":1,\"gone\":true}", "{\"a\":1,\"new\":{\"x\":[1]}}", NULL, "\"/new\",\"/gone\"",
         "{\"op\":\"add\",\"path\":\"/new\",\"value\":{\"x\":[1]}},{\"op\":\"remove\",\"path\":\"/gone\"}");
}

Test(jsondiff, arrays_element_by_element) {
    diff("{\"l\":[1,2,3]}", "{\"l\":[1,5]}", NULL, "\"/l/1\",\"/l/2\"",
         "{\"op\":\"replace\",\"path\":\"/l/1\",\"value\":5},{\"op\":\"remove\",\"path\":\"/l/2\"}");
    diff("{\"l\":[1]}", "{\"l\":[1,{\"a\":2},3]}", NULL, "\"/l/1\",\"/l/2\"",
         "{\"op\":\"add\",\"path\":\"/l/1\",\"value\":{\"a\":2}},{\"op\":\"add\",\"path\":\"/l/2\",\"value\":3}");
    /* several removals: highest index first so the patch applies */
    diff("[1,2,3,4]", "[1]", NULL, "\"/3\",\"/2\",\"/1\"", NULL);
}

Test(jsondiff, type_change_is_a_replace) {
    diff("{\"a\":{\"b\":1}}", "{\"a\":[1]}", NULL, "\"/a\"", "{\"op\":\"replace\",\"path\":\"/a\",\"value\":[1]}");
    diff("{\"a\":null}", "{\"a\":0}", NULL, "\"/a\"", NULL);
}

Test(jsondiff, big_numbers_compare_by_text) {
    diff("{\"n\":123456789012345678901234567890}", "{\"n\":123456789012345678901234567891}", NULL, "\"/n\"",
         "{\"op\":\"replace\",\"path\":\"/n\",\"value\":123456789012345678901234567891}");
}

Test(jsondiff, pointer_escaping_rfc6901) {
    diff("{\"a/b\":1,\"m~n\":1,\"q\\\"\":1}", "{\"a/b\":2,\"m~n\":2,\"q\\\"\":2}", NULL,
         "\"/a~1b\",\"/m~0n\",\"/q\\\"\"", NULL);
}

Test(jsondiff, unknown_fields_are_not_removals) {
    diff("{\"id\":1,\"big\":\"x\",\"p\":1}", "{\"id\":1,\"p\":2}", "\"/big\"", "\"/p\"", NULL);
}

Test(jsondiff, lookup_by_pointer) {
    const char *s = "{\"metadata\":{\"name\":\"j\",\"labels\":{\"a/b\":\"x\"}},\"spec\":[10,{\"k\":true}]}";
    cr_assert_eq(crw_jdoc_parse(&A, s, strlen(s)), 0);
    int t = crw_jdoc_lookup(&A, "/spec/1/k");
    cr_assert(t >= 0);
    cr_assert_eq(strncmp(s + A.toks[t].start, "true", 4), 0);
    t = crw_jdoc_lookup(&A, "/metadata/labels/a~1b");
    cr_assert(t >= 0);
    cr_assert_eq(strncmp(s + A.toks[t].start, "\"x\"", 3), 0);
    t = crw_jdoc_lookup(&A, "/spec");
    cr_assert_eq(A.toks[t].end - A.toks[t].start, strlen("[10,{\"k\":true}]"));
    cr_assert_eq(crw_jdoc_lookup(&A, ""), 0);
    cr_assert_eq(crw_jdoc_lookup(&A, "/nope"), -1);
    cr_assert_eq(crw_jdoc_lookup(&A, "/spec/2"), -1);
    cr_assert_eq(crw_jdoc_lookup(&A, "/spec/x"), -1);
}

Test(jsondiff, rejects_what_is_not_json) {
    static const char *bad[] = {"", "{", "{\"a\"}", "{\"a\":1,}", "[1,,2]", "\"unterminated", "{} x", "{\"a\":\"\n\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(crw_jdoc_parse(&A, bad[i], strlen(bad[i])), -1, "accepted %s", bad[i]);
}

Test(jsondiff, patch_applies_to_give_the_new_document) {
    /* json-c has no patch support: check the ops against the expected document by hand-applying
     * the simple cases above; here, that every emitted patch is valid JSON. */
    const char *a = "{\"a\":[1,2,{\"b\":1}],\"c\":\"x\",\"d\":{\"e\":null}}";
    const char *b = "{\"a\":[1,{\"b\":2}],\"c\":\"y\",\"f\":1}";
    cr_assert_eq(crw_jdoc_parse(&A, a, strlen(a)), 0);
    cr_assert_eq(crw_jdoc_parse(&B, b, strlen(b)), 0);
    crw_buf_t ch = CRW_BUF_INIT, pa = CRW_BUF_INIT;
    crw_jdoc_diff(&A, &B, &ch, &pa, NULL);
    crw_buf_t arr = CRW_BUF_INIT;
    crw_buf_printf(&arr, "[%s]", pa.data);
    json_object *o = json_tokener_parse(arr.data);
    cr_assert(o && json_object_array_length(o) == 5, "%s", arr.data);
    cr_assert_str_eq(ch.data, "\"/a/1\",\"/a/2\",\"/c\",\"/f\",\"/d\"");
    json_object_put(o);
    crw_buf_free(&ch);
    crw_buf_free(&pa);
    crw_buf_free(&arr);
}
