/*
 * test_cache.c — the resource cache (map/cache.c): keyed by relation and
 * key, least recently used out, replacement in place, per-relation clear.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "map/cache.h"

static crw_cache_t *c;

static void fini(void) { crw_cache_destroy(c); }

TestSuite(cache, .fini = fini);

static void put(uint32_t rel, const char *key, const char *obj) { crw_cache_put(c, rel, key, strlen(key), obj, strlen(obj)); }

/* The cached object of (rel, key) as a string, or NULL. */
static const char *get(uint32_t rel, const char *key) {
    static char out[256];
    size_t len;
    const char *o = crw_cache_get(c, rel, key, strlen(key), &len);
    if (!o)
        return NULL;
    snprintf(out, sizeof out, "%.*s", (int)len, o);
    return out;
}

Test(cache, keys_are_per_relation) {
    c = crw_cache_new(10, 0);
    put(1, "a", "{\"v\":1}");
    put(2, "a", "{\"v\":2}");
    cr_assert_str_eq(get(1, "a"), "{\"v\":1}");
    cr_assert_str_eq(get(2, "a"), "{\"v\":2}");
    cr_assert_null(get(3, "a"));
    cr_assert_null(get(1, "ab"));
    cr_assert_eq(crw_cache_size(c), 2);
}

Test(cache, replacing_keeps_one_entry) {
    c = crw_cache_new(10, 0);
    put(1, "k", "{\"v\":\"a long first object of some size\"}");
    put(1, "k", "{}");
    cr_assert_str_eq(get(1, "k"), "{}");
    put(1, "k", "{\"v\":\"longer again than the one before it, so it must grow\"}");
    cr_assert_str_eq(get(1, "k"), "{\"v\":\"longer again than the one before it, so it must grow\"}");
    cr_assert_eq(crw_cache_size(c), 1);
}

Test(cache, least_recently_used_goes_first) {
    c = crw_cache_new(3, 0);
    put(1, "a", "A");
    put(1, "b", "B");
    put(1, "c", "C");
    cr_assert_str_eq(get(1, "a"), "A"); /* a is now the most recent; b the least */
    put(1, "d", "D");
    cr_assert_eq(crw_cache_size(c), 3);
    cr_assert_null(get(1, "b"));
    cr_assert_str_eq(get(1, "a"), "A");
    cr_assert_str_eq(get(1, "c"), "C");
    cr_assert_str_eq(get(1, "d"), "D");
    put(1, "c", "C2"); /* an update counts as a use */
    put(1, "e", "E");
    cr_assert_null(get(1, "a"));
    cr_assert_str_eq(get(1, "c"), "C2");
}

Test(cache, remove_and_clear_relation) {
    c = crw_cache_new(100, 0);
    char k[16];
    for (int i = 0; i < 40; i++) {
        snprintf(k, sizeof k, "k%d", i);
        put((uint32_t)(i % 2 + 1), k, "x");
    }
    crw_cache_remove(c, 1, "k0", 2);
    crw_cache_remove(c, 1, "k1", 2); /* k1 is relation 2's: nothing happens */
    cr_assert_eq(crw_cache_size(c), 39);
    crw_cache_clear_relation(c, 2);
    cr_assert_eq(crw_cache_size(c), 19);
    cr_assert_null(get(2, "k1"));
    cr_assert_str_eq(get(1, "k2"), "x");
    put(2, "k1", "again");
    cr_assert_str_eq(get(2, "k1"), "again");
}

Test(cache, keys_may_hold_any_bytes) {
    c = crw_cache_new(4, 0);
    crw_cache_put(c, 1, "Kind\0name", 9, "1", 1);
    crw_cache_put(c, 1, "Other\0name", 10, "2", 1);
    size_t len;
    const char *o = crw_cache_get(c, 1, "Kind\0name", 9, &len);
    cr_assert(o && len == 1 && *o == '1');
    o = crw_cache_get(c, 1, "Other\0name", 10, &len);
    cr_assert(o && *o == '2');
    cr_assert_null(crw_cache_get(c, 1, "Kind", 4, &len));
}

Test(cache, the_byte_bound_holds_and_the_newest_stay) {
    const size_t bound = 1 << 20;
    c = crw_cache_new(0, bound);
    size_t empty = crw_cache_bytes(c);
    char obj[4096], key[32];
    memset(obj, 'x', sizeof obj);
    for (int i = 0; i < 10000; i++) {
        int kl = snprintf(key, sizeof key, "ns/job-%d", i);
        crw_cache_put(c, 1, key, (size_t)kl, obj, sizeof obj);
        cr_assert_leq(crw_cache_bytes(c), bound, "after %d puts: %zu bytes", i + 1, crw_cache_bytes(c));
    }
    uint32_t n = crw_cache_size(c);
    cr_expect(n > 150 && n < 256, "%u entries of 4 KiB in 1 MiB", n);
    size_t len;
    cr_expect_not_null(crw_cache_get(c, 1, "ns/job-9999", 11, &len), "the newest is kept");
    cr_expect_null(crw_cache_get(c, 1, "ns/job-0", 8, &len), "the oldest went");
    uint64_t hits, misses, evictions;
    crw_cache_stats(c, &hits, &misses, &evictions);
    cr_expect_eq(hits, 1);
    cr_expect_eq(misses, 1);
    cr_expect_eq(evictions, 10000 - n);
    /* Growing an object moves it; every byte is accounted for when all are gone. */
    crw_cache_put(c, 1, "ns/job-9999", 11, obj, 100);
    char big[8192];
    memset(big, 'y', sizeof big);
    crw_cache_put(c, 1, "ns/job-9999", 11, big, sizeof big);
    const char *got = crw_cache_get(c, 1, "ns/job-9999", 11, &len);
    cr_expect(got && len == sizeof big && got[0] == 'y' && got[len - 1] == 'y');
    for (int i = 0; i < 10000; i++) {
        int kl = snprintf(key, sizeof key, "ns/job-%d", i);
        crw_cache_remove(c, 1, key, (size_t)kl);
    }
    cr_expect_eq(crw_cache_size(c), 0);
    cr_expect_geq(crw_cache_bytes(c), empty, "the buckets stay");
    cr_expect_leq(crw_cache_bytes(c), empty + 64 * 1024, "%zu bytes left", crw_cache_bytes(c));
}

Test(cache, an_object_larger_than_the_cache_is_not_kept) {
    c = crw_cache_new(0, 16384);
    char obj[17000];
    memset(obj, 'z', sizeof obj);
    crw_cache_put(c, 1, "k", 1, obj, sizeof obj);
    size_t len;
    cr_expect_null(crw_cache_get(c, 1, "k", 1, &len));
    crw_cache_put(c, 1, "k", 1, obj, 100);
    cr_expect_not_null(crw_cache_get(c, 1, "k", 1, &len));
    crw_cache_put(c, 1, "k", 1, obj, sizeof obj); /* grown past the limit: gone, never stale */
    cr_expect_null(crw_cache_get(c, 1, "k", 1, &len));
}
