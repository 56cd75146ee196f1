/*
 * test_deadletter.c — the dead-letter file (core/deadletter.c): created on
 * first use, one JSON object per line with every field, appended, counted.
 */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/deadletter.h"
#include "core/err.h"

static char dir[64], path[128];

static void init(void) {
    snprintf(dir, sizeof dir, "/tmp/crw-dl-XXXXXX");
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/dead.jsonl", dir);
}

static void fini(void) {
    unlink(path);
    rmdir(dir);
}

TestSuite(deadletter, .init = init, .fini = fini);

/* Line n (0-based) of the file, parsed. */
static json_object *line(int n) {
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s is missing", path);
    char buf[4096];
    json_object *o = NULL;
    for (int i = 0; fgets(buf, sizeof buf, f); i++)
        if (i == n) {
            cr_assert(buf[strlen(buf) - 1] == '\n');
            o = json_tokener_parse(buf);
            cr_assert(o, "line %d is not JSON: %s", n, buf);
        }
    fclose(f);
    cr_assert(o, "no line %d", n);
    return o;
}

static const char *str(json_object *o, const char *k) {
    json_object *v;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

Test(deadletter, nothing_written_nothing_created) {
    crw_deadletter_t *dl = crw_deadletter_new(path);
    crw_deadletter_destroy(dl);
    cr_assert_neq(access(path, F_OK), 0);
    crw_deadletter_destroy(NULL);
}

Test(deadletter, records_are_json_lines_with_every_field) {
    crw_deadletter_t *dl = crw_deadletter_new(path);
    const char *payload = "{\"schema\":\"public\",\"table\":\"t\",\"op\":\"INSERT\"}";
    crw_deadletter_rec_t r1 = {"spec is not a JSON object", "/crwatch/db/public/t", "0/1A2B", 7412, 3, payload,
                               strlen(payload)};
    crw_deadletter_rec_t r2 = {"why \"quoted\"\n", NULL, NULL, 0, 0, NULL, 0};
    cr_assert_eq(crw_deadletter_write(dl, &r1), 0);
    cr_assert_eq(crw_deadletter_write(dl, &r2), 0);
    cr_assert_eq(crw_deadletter_count(dl), 2);
    crw_deadletter_destroy(dl);

    json_object *a = line(0), *b = line(1);
    cr_assert_str_eq(str(a, "reason"), "spec is not a JSON object");
    cr_assert_str_eq(str(a, "source"), "/crwatch/db/public/t");
    cr_assert_str_eq(str(a, "pglsn"), "0/1A2B");
    cr_assert_str_eq(str(a, "pgxid"), "7412");
    cr_assert_str_eq(str(a, "ordinal"), "3");
    json_object *p;
    cr_assert(json_object_object_get_ex(a, "payload", &p) && json_object_is_type(p, json_type_object));
    cr_assert_str_eq(str(p, "op"), "INSERT");
    const char *t = str(a, "time");
    cr_assert(t && strlen(t) == 27 && t[10] == 'T' && t[26] == 'Z', "time %s", t ? t : "(none)");
    cr_assert_str_eq(str(b, "reason"), "why \"quoted\"\n");
    cr_assert_null(str(b, "source"));
    cr_assert_null(str(b, "payload"));
    json_object_put(a);
    json_object_put(b);
}

Test(deadletter, appends_to_what_is_there) {
    FILE *f = fopen(path, "w");
    fputs("{\"earlier\":true}\n", f);
    fclose(f);
    crw_deadletter_t *dl = crw_deadletter_new(path);
    crw_deadletter_rec_t r = {"again", NULL, NULL, 1, 1, "1", 1};
    cr_assert_eq(crw_deadletter_write(dl, &r), 0);
    crw_deadletter_destroy(dl);
    json_object *a = line(0), *b = line(1);
    cr_assert_str_eq(str(a, "earlier"), "true");
    cr_assert_str_eq(str(b, "payload"), "1");
    json_object_put(a);
    json_object_put(b);
}

Test(deadletter, created_for_its_owner_only) {
    /* Records hold row data. umask 0 lets the mode crwatch asks for through unchanged. */
    mode_t old = umask(0);
    crw_deadletter_t *dl = crw_deadletter_new(path);
    crw_deadletter_rec_t r = {"x", NULL, NULL, 0, 0, "{\"secret\":1}", 12};
    int rc = crw_deadletter_write(dl, &r);
    umask(old);
    cr_assert_eq(rc, 0);
    crw_deadletter_destroy(dl);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0600, "mode %04o", (unsigned)(st.st_mode & 07777));
}

Test(deadletter, an_unwritable_file_is_an_io_error) {
    char bad[160];
    snprintf(bad, sizeof bad, "%s/no/such/dir/dead.jsonl", dir);
    crw_deadletter_t *dl = crw_deadletter_new(bad);
    crw_deadletter_rec_t r = {"x", NULL, NULL, 0, 0, NULL, 0};
    cr_assert_eq(crw_deadletter_write(dl, &r), CRW_ERR_IO);
    cr_assert_eq(crw_deadletter_count(dl), 0);
    crw_deadletter_destroy(dl);
}
