/*
 * resync.c — `crwatch resync` (see resync.h): the sink's view in a map,
 * the snapshot source behind the stream driver, and a verdict per row.
 *
 * The view: resync.from, JSON lines of CloudEvents events in the order they
 * were delivered.  Per (source, subject), the last event wins: DELETED (or
 * a TRUNCATED of its table) leaves the key deleted, any other type present
 * with two fingerprints of its object (crw_jdoc_fingerprint): of the whole
 * object (row shape) and of metadata.resourceVersion (crd shape), and the
 * line's offset (to render a DELETED from it).  About 40 bytes per key plus
 * the key: the view's events are never held.
 *
 * Each row read in the snapshot is mapped as the stream maps it; the
 * verdict compares it with the view: no key (or a deleted one) is ADDED, a
 * different fingerprint MODIFIED, the same nothing.  At the end, each key of
 * a table read that is in the view and was not read is DELETED, with the
 * view's last object.
 */
#include "app/resync.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "app/stream.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "core/strmap.h"
#include "map/jsondiff.h"
#include "sink/kafka.h"
#include "source/snapshot.h"

typedef struct {
    uint64_t content; /* fingerprint of the object */
    uint64_t rv;      /* fingerprint of its metadata.resourceVersion; 0: none */
    int64_t offset;   /* of its last event's line */
    uint8_t deleted;
    uint8_t seen;     /* the snapshot read the key */
} view_t;

typedef struct {
    const crw_config_t *conf;
    const crw_resync_opts_t *opts;
    crw_strmap_t *view;
    FILE *f;
    crw_jdoc_t doc;
    crw_buf_t key, scratch;
    uint64_t lines, skipped, rows, added, modified, deleted, unchanged;
    uint64_t lsn; /* the snapshot's, from its events */
} resync_t;

/* The string at pointer p of doc, unescaped, appended to out.  @returns 0, or -1 when it is no string. */
static int put_string(const crw_jdoc_t *doc, const char *p, crw_buf_t *out) {
    int t = crw_jdoc_lookup(doc, p);
    if (t < 0 || doc->toks[t].type != 's')
        return -1;
    const crw_jtok_t *k = &doc->toks[t];
    return crw_json_unescape(out, doc->text + k->start + 1, k->end - k->start - 2);
}

static bool read_here(const resync_t *r, const char *schema, const char *table);

/* A TRUNCATED empties its table in the view: every key of that source so far is deleted. */
static bool truncate_key(void *opaque, const void *key, size_t len, void *value) {
    const crw_buf_t *source = opaque;
    if (len > source->len && !memcmp(key, source->data, source->len) && ((const char *)key)[source->len] == '\n')
        ((view_t *)value)->deleted = 1;
    return false;
}

/* One line of the view. */
static void view_line(resync_t *r, const char *line, size_t len, int64_t offset) {
    r->lines++;
    crw_buf_reset(&r->key);
    crw_buf_reset(&r->scratch);
    if (crw_jdoc_parse(&r->doc, line, len) < 0 || crw_jdoc_lookup(&r->doc, "/specversion") < 0 ||
        put_string(&r->doc, "/source", &r->key) < 0 || put_string(&r->doc, "/data/type", &r->scratch) < 0) {
        r->skipped++;
        return;
    }
    if (!strcmp(r->scratch.data, "TRUNCATED")) {
        crw_strmap_sweep(r->view, truncate_key, &r->key);
        return;
    }
    crw_buf_putc(&r->key, '\n');
    if (put_string(&r->doc, "/subject", &r->key) < 0) {
        r->skipped++;
        return;
    }
    bool created;
    view_t *v = crw_strmap_put(r->view, r->key.data, r->key.len, &created);
    v->offset = offset;
    v->deleted = !strcmp(r->scratch.data, "DELETED");
    v->content = crw_jdoc_fingerprint(&r->doc, crw_jdoc_lookup(&r->doc, "/data/object"));
    int rv = crw_jdoc_lookup(&r->doc, "/data/object/metadata/resourceVersion");
    v->rv = rv >= 0 ? crw_jdoc_fingerprint(&r->doc, rv) : 0;
}

/* resync.from=kafka: the watched tables' topics, read to their ends into an unlinked file in spool.dir. */
static int kafka_view(resync_t *r, char *errstr, size_t n) {
    const crw_config_t *cf = r->conf;
    crw_strlist_t topics = {0};
    crw_buf_t t = CRW_BUF_INIT;
    for (int i = 0; i < cf->nresources; i++) {
        const crw_resource_conf_t *rs = &cf->resources[i];
        if (!read_here(r, rs->schema, rs->table))
            continue;
        crw_kafka_topic_expand(&t, cf->topic_template, rs->schema, rs->table, rs->kind);
        bool dup = false;
        for (int k = 0; k < topics.n && !dup; k++)
            dup = !strcmp(topics.v[k], t.data);
        if (!dup)
            crw_strlist_add(&topics, t.data);
    }
    crw_buf_free(&t);
    char path[4096];
    snprintf(path, sizeof path, "%s/crwatch-resync-view.XXXXXX", cf->spool_dir);
    int fd = mkstemp(path);
    int rc = 0;
    if (fd < 0 || !(r->f = fdopen(fd, "w+"))) {
        snprintf(errstr, n, "resync.from=kafka: cannot make a file in spool.dir %s: %s", cf->spool_dir,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        rc = CRW_ERR_IO;
    } else {
        unlink(path); /* gone with the process */
        long messages = 0;
        rc = crw_kafka_dump_topics(cf, &topics, r->f, &messages, errstr, n);
        rewind(r->f);
    }
    crw_strlist_clear(&topics);
    return rc;
}

static int load_view(resync_t *r, char *errstr, size_t n) {
    bool kafka = !strcmp(r->conf->resync_from, "kafka");
    const char *path = kafka ? "the Kafka topics" : r->conf->resync_from;
    int rc = kafka ? kafka_view(r, errstr, n) : 0;
    if (rc < 0)
        return rc;
    if (!kafka && !(r->f = fopen(path, "r"))) {
        snprintf(errstr, n, "resync.from: cannot read %s: %s", path, strerror(errno));
        return CRW_ERR_CONFIG;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int64_t offset = 0;
    while ((len = getline(&line, &cap, r->f)) > 0) {
        size_t l = (size_t)len;
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r'))
            l--;
        if (l)
            view_line(r, line, l, offset);
        offset += len;
    }
    free(line);
    if (r->lines > 0 && r->skipped == r->lines) {
        snprintf(errstr, n,
                 "resync.from: no CloudEvents events in %s (resync reads what crwatch wrote with "
                 "event.format=cloudevents)",
                 path);
        return CRW_ERR_CONFIG;
    }
    if (r->skipped)
        crw_warn("resync: %" PRIu64 " of %" PRIu64 " lines of %s are no crwatch event; left out", r->skipped,
                 r->lines, path);
    crw_info("resync: the view of %s holds %zu keys (%" PRIu64 " events)", path, crw_strmap_count(r->view),
             r->lines - r->skipped);
    return 0;
}

/* The resource of schema.table (the first that names it), or NULL. */
static const crw_resource_conf_t *resource_of(const crw_config_t *cf, const char *schema, const char *table) {
    for (int i = 0; i < cf->nresources; i++)
        if (!strcmp(cf->resources[i].schema, schema) && !strcmp(cf->resources[i].table, table))
            return &cf->resources[i];
    return NULL;
}

static crw_stream_verdict_t verdict(void *arg, const crw_event_t *ev) {
    resync_t *r = arg;
    r->rows++;
    r->lsn = ev->lsn;
    crw_buf_reset(&r->key);
    crw_buf_puts(&r->key, ev->source);
    crw_buf_putc(&r->key, '\n');
    crw_buf_put(&r->key, ev->key, ev->keylen);
    view_t *v = crw_strmap_get(r->view, r->key.data, r->key.len);
    if (!v || v->deleted) {
        if (v)
            v->seen = 1;
        r->added++;
        return CRW_VERDICT_ADDED;
    }
    v->seen = 1;
    const crw_resource_conf_t *rs = resource_of(r->conf, ev->schema, ev->table);
    bool same = false;
    if (crw_jdoc_parse(&r->doc, ev->value + ev->object.off, ev->object.len) == 0) {
        if (rs && rs->shape == CRW_SHAPE_CRD) {
            int t = crw_jdoc_lookup(&r->doc, "/metadata/resourceVersion");
            same = t >= 0 && v->rv && crw_jdoc_fingerprint(&r->doc, t) == v->rv;
        } else
            same = crw_jdoc_fingerprint(&r->doc, 0) == v->content;
    }
    if (same) {
        r->unchanged++;
        return CRW_VERDICT_SKIP;
    }
    r->modified++;
    return CRW_VERDICT_MODIFIED;
}

/* ---- DELETED for the keys that are gone ------------------------------------- */

typedef struct {
    resync_t *r;
    int (*emit)(void *, crw_event_t *);
    void *ctx;
    int rc;
} gone_t;

/* "/crwatch/<db>/<schema>/<table>" into schema and table (within buf).  @returns 0 or -1. */
static int split_source(const char *source, char *buf, size_t n, const char **schema, const char **table) {
    snprintf(buf, n, "%s", source);
    char *t = strrchr(buf, '/');
    if (!t || t == buf)
        return -1;
    *t = '\0';
    char *s = strrchr(buf, '/');
    if (!s)
        return -1;
    *schema = s + 1;
    *table = t + 1;
    return 0;
}

/* True when schema.table is read in this run (a watched table, and one --table names if any). */
static bool read_here(const resync_t *r, const char *schema, const char *table) {
    return resource_of(r->conf, schema, table) && crw_config_list_names(r->opts->tables, schema, table);
}

static const char *str_of(json_object *o, const char *name) {
    json_object *v;
    return json_object_object_get_ex(o, name, &v) ? json_object_get_string(v) : NULL;
}

/* Emits a DELETED of the key whose last event is at v->offset of the view, with its last object. */
static int emit_deleted(gone_t *g, const view_t *v) {
    resync_t *r = g->r;
    char *line = NULL;
    size_t cap = 0;
    if (fseeko(r->f, (off_t)v->offset, SEEK_SET) != 0 || getline(&line, &cap, r->f) <= 0) {
        free(line);
        return 0;
    }
    json_object *ev = json_tokener_parse(line), *data = NULL, *object = NULL;
    free(line);
    if (!ev)
        return 0;
    json_object_object_get_ex(ev, "data", &data);
    if (data)
        json_object_object_get_ex(data, "object", &object);
    const char *source = str_of(ev, "source"), *subject = str_of(ev, "subject"), *kind = data ? str_of(data, "kind") : NULL;
    char sbuf[512];
    const char *schema, *table;
    int rc = 0;
    if (source && subject && kind && split_source(source, sbuf, sizeof sbuf, &schema, &table) == 0 &&
        read_here(r, schema, table)) {
        char lsn[CRW_LSN_BUFSIZE], now[40], type[300];
        crw_lsn_format(lsn, r->lsn);
        crw_clock_format_iso(now, sizeof now, crw_clock_wall_us());
        snprintf(type, sizeof type, "crwatch.%s.deleted", kind);
        crw_buf_t id = CRW_BUF_INIT;
        crw_buf_printf(&id, "%s/resync/%s", lsn, subject);
        json_object *nd = json_object_new_object();
        json_object_object_add(nd, "type", json_object_new_string("DELETED"));
        json_object_object_add(nd, "kind", json_object_new_string(kind));
        json_object_object_add(nd, "key", json_object_new_string(subject));
        json_object_object_add(nd, "object", object ? json_object_get(object) : NULL);
        json_object *out = json_object_new_object();
        json_object_object_add(out, "specversion", json_object_new_string("1.0"));
        json_object_object_add(out, "id", json_object_new_string(id.data));
        json_object_object_add(out, "source", json_object_new_string(source));
        json_object_object_add(out, "type", json_object_new_string(type));
        json_object_object_add(out, "subject", json_object_new_string(subject));
        json_object_object_add(out, "time", json_object_new_string(now));
        json_object_object_add(out, "datacontenttype", json_object_new_string("application/json"));
        json_object_object_add(out, "pglsn", json_object_new_string(lsn));
        json_object_object_add(out, "pgxid", json_object_new_int(0));
        json_object_object_add(out, "data", nd);
        size_t len;
        const char *text = json_object_to_json_string_length(out, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
                                                            &len);
        /* "data" is the last member, "object" the last of data: their spans run to the closing braces. */
        const char *d = strstr(text, ",\"data\":"), *o = d ? strstr(d, ",\"object\":") : NULL;
        crw_event_attr_t attrs[] = {{"specversion", "1.0", 3},
                                    {"id", id.data, id.len},
                                    {"source", source, strlen(source)},
                                    {"type", type, strlen(type)},
                                    {"subject", subject, strlen(subject)},
                                    {"time", now, strlen(now)},
                                    {"datacontenttype", "application/json", 16},
                                    {"pglsn", lsn, strlen(lsn)},
                                    {"pgxid", "0", 1}};
        crw_event_t e = {.lsn = r->lsn,
                         .id = id.data,
                         .idlen = id.len,
                         .type = "DELETED",
                         .kind = kind,
                         .schema = schema,
                         .table = table,
                         .source = source,
                         .key = subject,
                         .keylen = strlen(subject),
                         .value = text,
                         .len = len,
                         .attrs = attrs,
                         .nattrs = (int)(sizeof attrs / sizeof attrs[0])};
        if (d) {
            size_t off = (size_t)(d - text) + 8;
            e.data = (crw_span_t){off, len - 1 - off};
        }
        if (o) {
            size_t off = (size_t)(o - text) + 10;
            e.object = (crw_span_t){off, len - 2 - off};
        }
        r->deleted++;
        rc = g->emit(g->ctx, &e);
        json_object_put(out);
        crw_buf_free(&id);
    }
    json_object_put(ev);
    return rc;
}

static bool gone_key(void *opaque, const void *key, size_t len, void *value) {
    (void)key;
    (void)len;
    gone_t *g = opaque;
    const view_t *v = value;
    if (g->rc == 0 && !v->deleted && !v->seen)
        g->rc = emit_deleted(g, v);
    return false;
}

static int at_end(void *arg, int (*emit)(void *, crw_event_t *), void *ctx) {
    gone_t g = {arg, emit, ctx, 0};
    crw_strmap_sweep(((resync_t *)arg)->view, gone_key, &g);
    return g.rc;
}

static crw_source_t *open_snapshot(void *arg, const crw_config_t *conf, const crw_source_opts_t *opts,
                                   const crw_source_events_t *ev, int *err, char *errstr, size_t n) {
    resync_t *r = arg;
    crw_snapshot_opts_t so = {NULL, 0, NULL, false, r->opts->tables, 0, "resync", true};
    return crw_source_snapshot_new(conf, opts, &so, ev, err, errstr, n);
}

int crw_resync_run(const crw_config_t *conf, const crw_resync_opts_t *opts, char *errstr, size_t n) {
    if (!*conf->resync_from) {
        snprintf(errstr, n,
                 "resync compares the tables with what the sink holds: set resync.from=FILE, a JSON-lines file of "
                 "the events (what sink=stdout wrote), or resync.from=kafka (the tables' topics)");
        return CRW_ERR_CONFIG;
    }
    if (conf->event_format != CRW_FORMAT_CLOUDEVENTS) {
        snprintf(errstr, n, "resync: event.format=debezium is not supported in this version (CloudEvents only)");
        return CRW_ERR_CONFIG;
    }
    resync_t r = {0};
    r.conf = conf;
    r.opts = opts;
    r.view = crw_strmap_new(sizeof(view_t));
    int64_t t0 = crw_clock_mono_ms();
    int rc = load_view(&r, errstr, n);
    if (rc == 0) {
        char ckpt[128];
        snprintf(ckpt, sizeof ckpt, "%s.resync", conf->slot_name);
        crw_stream_opts_t so = {.conninfo = opts->conninfo,
                                .stop = opts->stop,
                                .source_new = open_snapshot,
                                .verdict = verdict,
                                .at_end = at_end,
                                .arg = &r,
                                .checkpoint_id = ckpt};
        rc = crw_stream_run(conf, &so, errstr, n);
    }
    if (rc == 0)
        crw_info("resync: %" PRIu64 " keys checked (%" PRIu64 " rows, %zu keys in the view) in %.1f s: %" PRIu64
                 " ADDED, %" PRIu64 " MODIFIED, %" PRIu64 " DELETED, %" PRIu64 " unchanged%s",
                 r.rows + r.deleted, r.rows, crw_strmap_count(r.view), (double)(crw_clock_mono_ms() - t0) / 1000.0,
                 r.added, r.modified, r.deleted, r.unchanged, opts->dry_run ? " (--dry-run: printed, not sent)" : "");
    if (r.f)
        fclose(r.f);
    crw_strmap_destroy(r.view);
    crw_jdoc_free(&r.doc);
    crw_buf_free(&r.key);
    crw_buf_free(&r.scratch);
    return rc;
}
