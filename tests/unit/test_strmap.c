/*
 * test_strmap.c — core/strmap.c: put/get with binary keys, values kept
 * across growth, sweep removing what it is told, clear.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "core/strmap.h"

typedef struct {
    unsigned char hash[16];
    unsigned seen;
} val_t;

Test(strmap, put_get_and_growth_keep_values) {
    crw_strmap_t *m = crw_strmap_new(sizeof(val_t));
    char key[32];
    for (int i = 0; i < 10000; i++) {
        int n = snprintf(key, sizeof key, "k%d", i) + i % 2; /* odd keys end in a NUL byte */
        bool created = false;
        val_t *v = crw_strmap_put(m, key, (size_t)n, &created);
        cr_assert(created, "key %d new", i);
        v->seen = (unsigned)i;
        v->hash[15] = (unsigned char)i;
    }
    cr_assert_eq(crw_strmap_count(m), 10000);
    for (int i = 0; i < 10000; i++) {
        int n = snprintf(key, sizeof key, "k%d", i) + i % 2;
        val_t *v = crw_strmap_get(m, key, (size_t)n);
        cr_assert(v, "key %d lost", i);
        cr_assert_eq(v->seen, (unsigned)i);
        cr_assert_eq(v->hash[15], (unsigned char)i);
        bool created = true;
        cr_assert_eq(crw_strmap_put(m, key, (size_t)n, &created), v, "put of a known key moved its value");
        cr_assert_not(created);
    }
    cr_assert_null(crw_strmap_get(m, "k", 1));
    cr_assert_null(crw_strmap_get(m, "k1", 2)); /* stored as "k1\0" */
    cr_assert_not_null(crw_strmap_get(m, "k1", 3));
    crw_strmap_destroy(m);
}

static bool drop_odd(void *opaque, const void *key, size_t len, void *value) {
    (void)key, (void)len;
    int *visited = opaque;
    (*visited)++;
    return ((val_t *)value)->seen % 2 == 1;
}

Test(strmap, sweep_removes_what_it_is_told_and_clear_empties) {
    crw_strmap_t *m = crw_strmap_new(sizeof(val_t));
    char key[16];
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(key, sizeof key, "%d", i);
        ((val_t *)crw_strmap_put(m, key, (size_t)n, NULL))->seen = (unsigned)i;
    }
    int visited = 0;
    crw_strmap_sweep(m, drop_odd, &visited);
    cr_assert_eq(visited, 1000);
    cr_assert_eq(crw_strmap_count(m), 500);
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(key, sizeof key, "%d", i);
        cr_assert_eq(crw_strmap_get(m, key, (size_t)n) != NULL, i % 2 == 0, "key %d", i);
    }
    crw_strmap_clear(m);
    cr_assert_eq(crw_strmap_count(m), 0);
    cr_assert_null(crw_strmap_get(m, "0", 1));
    ((val_t *)crw_strmap_put(m, "again", 5, NULL))->seen = 7;
    cr_assert_eq(((val_t *)crw_strmap_get(m, "again", 5))->seen, 7u);
    crw_strmap_destroy(m);
}

Test(names, one_copy_of_each_string) {
    crw_names_t n = CRW_NAMES_INIT;
    char a[] = "/crwatch/app/public/t", b[] = "/crwatch/app/public/u", a2[] = "/crwatch/app/public/t";
    const char *x = crw_names_intern(&n, a), *y = crw_names_intern(&n, b);
    cr_assert_str_eq(x, a);
    cr_assert_neq(x, a, "a copy, not the caller's string");
    cr_assert_eq(crw_names_intern(&n, a2), x, "the same string gives the same copy");
    cr_assert_eq(crw_names_intern(&n, b), y);
    cr_assert_eq(crw_names_intern(&n, a), x, "and again after another one");
    cr_assert_eq(n.n, 2);
    cr_assert_null(crw_names_intern(&n, NULL));
    crw_names_free(&n);
    cr_assert_eq(n.n, 0);
    cr_assert_eq(n.last, -1);
}
