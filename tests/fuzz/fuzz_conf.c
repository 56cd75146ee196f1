/*
 * fuzz_conf.c — the configuration parsers (src/core/conf.c): properties
 * file text, `-X key=value` arguments, then the whole-config check
 * (crw_config_finalize), as crwatch's command line applies them.
 *
 * Input: the file text, a NUL, then -X arguments separated by NULs.
 *
 * Invariants, beyond ASan/UBSan: an error always comes with a message; the
 * properties parser hands the same pairs on when given its own pairs back
 * as "key = value" lines; a config finalize accepts has resources with a
 * schema and a table (no dot in it), a slot name PostgreSQL takes and
 * listen addresses crw_config_listen splits.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/conf.h"
#include "core/err.h"
#include "core/log.h"
#include "fuzz_common.h"

/* The pairs crw_props_parse handed on, as "key\0value\0" records. */
typedef struct {
    crw_buf_t pairs;
    int n;
    crw_config_t *conf; /* NULL: record only */
} rec_t;

static int record(void *arg, const char *key, const char *value, char *errstr, size_t n) {
    rec_t *r = arg;
    FZ_ASSERT(*key, "props: empty key handed on", value, strlen(value));
    crw_buf_put(&r->pairs, key, strlen(key) + 1);
    crw_buf_put(&r->pairs, value, strlen(value) + 1);
    r->n++;
    if (!r->conf)
        return 0;
    errstr[0] = '\0';
    int rc = crw_config_set(r->conf, key, value, errstr, n);
    if (rc < 0)
        FZ_ASSERT(rc == CRW_ERR_CONFIG && *errstr, "config_set failed without a message", key, strlen(key));
    return rc;
}

static void check_listen(const char *key, const char *value) {
    char host[256];
    int port = -1;
    if (!*value)
        return;
    FZ_ASSERT(crw_config_listen(value, host, sizeof host, &port) == 0, "finalize accepted a bad listen address", value,
              strlen(value));
    FZ_ASSERT(port >= 0 && port <= 65535 && strlen(host) < sizeof host, key, value, strlen(value));
}

static void check_final(const crw_config_t *c) {
    for (int i = 0; i < c->nresources; i++) {
        const crw_resource_conf_t *r = &c->resources[i];
        FZ_ASSERT(r->schema && *r->schema && r->table && *r->table && !strchr(r->table, '.'),
                  "finalized resource without schema.table", r->id, strlen(r->id));
        FZ_ASSERT(r->kind && *r->kind, "finalized resource without a kind", r->id, strlen(r->id));
        FZ_ASSERT(!(r->include.n && r->exclude.n), "finalized resource with include and exclude", r->id,
                  strlen(r->id));
    }
    size_t sl = strlen(c->slot_name);
    FZ_ASSERT(sl > 0 && sl <= 63 && strspn(c->slot_name, "abcdefghijklmnopqrstuvwxyz0123456789_") == sl,
              "finalized slot.name PostgreSQL refuses", c->slot_name, sl);
    FZ_ASSERT(*c->publication_name, "finalized empty publication.name", NULL, 0);
    FZ_ASSERT(c->spool_dir && *c->spool_dir, "finalized without spool.dir", NULL, 0);
    check_listen("watch.listen", c->watch_listen);
    check_listen("http.listen", c->http_listen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    crw_log_level = -1; /* quiet: a bad default is logged, and there is none */
    fz_in_t in = {data, size, 0};
    size_t len;
    const uint8_t *p = fz_until(&in, 0, &len);
    char *text = fz_strndup(p ? p : (const uint8_t *)"", p ? len : 0);
    char err[1024] = "";

    /* The parser alone, then again on what it handed on: the same pairs. */
    rec_t a = {CRW_BUF_INIT, 0, NULL}, b = {CRW_BUF_INIT, 0, NULL};
    int rc = crw_props_parse(text, NULL, record, &a, err, sizeof err);
    if (rc < 0)
        FZ_ASSERT(*err && strstr(err, "line "), "props: an error without its line", text, strlen(text));
    crw_buf_t again = CRW_BUF_INIT;
    for (size_t off = 0; off < a.pairs.len;) {
        const char *k = a.pairs.data + off, *v = k + strlen(k) + 1;
        crw_buf_printf(&again, "%s = %s\n", k, v);
        off += strlen(k) + strlen(v) + 2;
    }
    if (rc == 0) {
        FZ_ASSERT(crw_props_parse(again.data ? again.data : "", "again", record, &b, err, sizeof err) == 0,
                  "props: its own pairs do not parse again", again.data, again.len);
        bool same = a.n == b.n && a.pairs.len == b.pairs.len &&
                    (!a.n || !memcmp(a.pairs.data, b.pairs.data, a.pairs.len));
        FZ_ASSERT(same, "props: its own pairs parse into other pairs", again.data, again.len);
    }
    crw_buf_free(&again);
    crw_buf_free(&a.pairs);
    crw_buf_free(&b.pairs);

    /* The command line's order: the file, each -X, then finalize. */
    crw_config_t *c = crw_config_new();
    rec_t r = {CRW_BUF_INIT, 0, c};
    err[0] = '\0';
    bool ok = crw_props_parse(text, "fuzz.properties", record, &r, err, sizeof err) == 0;
    while (ok && (p = fz_until(&in, 0, &len))) {
        char *pair = fz_strndup(p, len);
        err[0] = '\0';
        rc = crw_config_set_pair(c, pair, err, sizeof err);
        if (rc < 0) {
            FZ_ASSERT(rc == CRW_ERR_CONFIG && *err, "-X failed without a message", pair, len);
            ok = false;
        }
        free(pair);
    }
    if (ok) {
        err[0] = '\0';
        rc = crw_config_finalize(c, err, sizeof err);
        if (rc < 0)
            FZ_ASSERT(rc == CRW_ERR_CONFIG && *err, "finalize failed without a message", text, strlen(text));
        else
            check_final(c);
    }
    crw_buf_free(&r.pairs);
    crw_config_destroy(c);
    free(text);
    return 0;
}
