/*
 * strmap.h — a hash map from byte strings to fixed-size values kept inline
 * (chained; one allocation per entry holding key and value; buckets doubled
 * at one entry per bucket).  Used by the polling source's timestamp mode
 * for what it emitted of each row (docs/poll.md).  Thread-safety: one thread.
 */
#ifndef CRW_STRMAP_H
#define CRW_STRMAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct crw_strmap crw_strmap_t;

/* A map whose values are value_size bytes each. */
crw_strmap_t *crw_strmap_new(size_t value_size);
void crw_strmap_destroy(crw_strmap_t *m);
/* Removes every entry. */
void crw_strmap_clear(crw_strmap_t *m);
size_t crw_strmap_count(const crw_strmap_t *m);

/* The value of key, or NULL. */
void *crw_strmap_get(const crw_strmap_t *m, const void *key, size_t len);
/* The value of key; a new key gets a zeroed value and *created = true. */
void *crw_strmap_put(crw_strmap_t *m, const void *key, size_t len, bool *created);

/* Removes key; false when it was not there. */
bool crw_strmap_remove(crw_strmap_t *m, const void *key, size_t len);

/*
 * Calls fn for every entry (in no order); the entries for which it returns
 * true are removed.  fn must not change the map.
 */
typedef bool (*crw_strmap_sweep_fn)(void *opaque, const void *key, size_t len, void *value);
void crw_strmap_sweep(crw_strmap_t *m, crw_strmap_sweep_fn fn, void *opaque);

/*
 * One copy of each of a handful of strings (the sinks' event sources: one
 * per table), so that many records can point at it.  Zero-initialised with
 * last = -1 (CRW_NAMES_INIT); a linear look-up, the last hit first.
 */
typedef struct {
    char **v;
    int n, last;
} crw_names_t;
#define CRW_NAMES_INIT {NULL, 0, -1}
/* The kept copy of s (NULL: NULL), made on first sight. */
const char *crw_names_intern(crw_names_t *names, const char *s);
void crw_names_free(crw_names_t *names);

#endif
