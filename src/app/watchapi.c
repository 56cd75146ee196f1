/*
 * watchapi.c — the watch API (watchapi.h; docs/watch.md) on libmicrohttpd,
 * a thread per connection: a watch blocks on the history's condition
 * variable until there is something to send.
 *
 * Each published change is one immutable, reference-counted object version
 * (wobj_t): its JSON (metadata.resourceVersion set to the change's position)
 * and its NDJSON line are rendered once, held by the store (the current
 * object of each key) and by the history ring, and read by every watcher:
 * a hundred watchers cost one copy of each change.  A watcher that falls
 * behind the ring is cut off with a 410 Expired error event, as the
 * Kubernetes API does, so it lists again; memory never grows for it.
 */
#include "app/watchapi.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/http.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/strmap.h"

typedef struct {
    char *k, *v;
} label_t;

/* One version of one object, immutable once published. */
typedef struct wobj {
    int refs;                 /* atomic (wobj_ref, wobj_unref): watchers render and drop theirs without w->mu */
    uint64_t rv, end;         /* its transaction's commit and end positions (end 0: not committed yet) */
    int kind;                 /* index in w->kinds */
    char type[12];            /* ADDED, MODIFIED, DELETED */
    char *ns, *name, *key;    /* key: "ns/name" */
    label_t *labels;
    int nlabels;
    char *obj;                /* the object, resourceVersion set */
    size_t objlen;
    bool truncate;            /* a TRUNCATED event: every object of the kind goes */
    struct wobj *left;        /* a MODIFIED that changed the labels: the previous version as a DELETED at rv, for
                               * a watcher whose selector the object leaves (and whose selector it enters: ADDED) */
} wobj_t;

typedef struct {
    char group[128], version[64], plural[128], kind[128], api_version[192];
    crw_strmap_t *store;      /* key -> wobj_t * */
} wkind_t;

struct crw_wapi {
    const crw_config_t *conf;
    struct MHD_Daemon *d;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    wkind_t *kinds;
    int nkinds;
    wobj_t **ring;            /* the history: ring[seq % cap] */
    uint64_t cap, head;       /* head: the next seq */
    uint64_t base_rv;         /* the history is complete after it */
    uint64_t dropped_rv;      /* the newest rv the ring let go of */
    uint64_t last_rv;         /* the newest position shown (a list is consistent at it) */
    bool stopping;
    /* the driver's side, no lock: changes not confirmed yet, in order */
    wobj_t **pend;
    size_t npend, cappend;
    uint64_t last_confirmed;
    uint64_t max_committed;   /* the newest rv of a committed transaction fed (the driver's side) */
    bool ready;               /* the store was filled (crw_wapi_base): requests before it get 503 */
    int nwatchers;            /* watches being served (w->mu) */
};

/* ---- object versions ------------------------------------------------------------------------------ */

static void wobj_ref(wobj_t *o) { __atomic_add_fetch(&o->refs, 1, __ATOMIC_RELAXED); }

static void wobj_unref(wobj_t *o) {
    if (!o || __atomic_sub_fetch(&o->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    for (int i = 0; i < o->nlabels; i++) {
        free(o->labels[i].k);
        free(o->labels[i].v);
    }
    free(o->labels);
    free(o->ns);
    free(o->name);
    free(o->key);
    free(o->obj);
    wobj_unref(o->left);
    free(o);
}

static int kind_of(const crw_wapi_t *w, const char *kind) {
    for (int i = 0; i < w->nkinds; i++)
        if (!strcmp(w->kinds[i].kind, kind))
            return i;
    return -1;
}

static const char *jstr(json_object *o, const char *k) {
    json_object *v;
    return o && json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : "";
}

/* obj's metadata.resourceVersion set to rv, rendered into *out (malloc'd); md: obj's metadata object. */
static void render_at(json_object *obj, json_object *md, uint64_t rv, char **out, size_t *outlen) {
    char rvs[24];
    snprintf(rvs, sizeof rvs, "%" PRIu64, rv);
    json_object_object_add(md, "resourceVersion", json_object_new_string(rvs));
    size_t len;
    const char *t = json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    *out = crw_strndup(t, len);
    *outlen = len;
}

/* A change as a watcher sees it: the object parsed once for its name and labels, its resourceVersion set. */
static wobj_t *wobj_new(crw_wapi_t *w, const crw_event_t *ev, const char *type, uint64_t rv) {
    int k = ev->kind ? kind_of(w, ev->kind) : -1;
    if (k < 0)
        return NULL; /* a kind the API does not serve */
    wobj_t *o = crw_calloc(1, sizeof *o);
    o->refs = 1;
    o->rv = rv;
    o->kind = k;
    snprintf(o->type, sizeof o->type, "%s", type);
    if (!strcmp(type, "TRUNCATED")) {
        o->truncate = true;
        return o;
    }
    if (!ev->value || !ev->object.len) {
        free(o);
        return NULL;
    }
    json_tokener *tok = json_tokener_new();
    json_object *obj = json_tokener_parse_ex(tok, ev->value + ev->object.off, (int)ev->object.len);
    json_tokener_free(tok);
    json_object *md = NULL;
    if (!obj || !json_object_object_get_ex(obj, "metadata", &md) || !json_object_is_type(md, json_type_object)) {
        json_object_put(obj);
        free(o);
        return NULL;
    }
    o->ns = crw_strdup(jstr(md, "namespace"));
    o->name = crw_strdup(jstr(md, "name"));
    crw_buf_t key = CRW_BUF_INIT;
    crw_buf_printf(&key, "%s/%s", o->ns, o->name);
    o->key = key.data;
    json_object *labels;
    if (json_object_object_get_ex(md, "labels", &labels) && json_object_is_type(labels, json_type_object)) {
        o->labels = crw_calloc((size_t)json_object_object_length(labels) + 1, sizeof *o->labels);
        json_object_object_foreach(labels, lk, lv) {
            if (!json_object_is_type(lv, json_type_string))
                continue;
            o->labels[o->nlabels].k = crw_strdup(lk);
            o->labels[o->nlabels++].v = crw_strdup(json_object_get_string(lv));
        }
    }
    render_at(obj, md, rv, &o->obj, &o->objlen);
    json_object_put(obj);
    return o;
}

/* ---- feeding (the driver's thread) ---------------------------------------------------------------- */

static void pend_push(crw_wapi_t *w, wobj_t *o) {
    if (w->npend == w->cappend) {
        w->cappend = w->cappend ? w->cappend * 2 : 64;
        w->pend = crw_realloc(w->pend, w->cappend * sizeof *w->pend);
    }
    w->pend[w->npend++] = o;
}

void crw_wapi_event(crw_wapi_t *w, const crw_event_t *ev) {
    if (!w || (w->max_committed && ev->position <= w->max_committed && strcmp(ev->type, "SYNC")))
        return; /* a transaction the source sends again after a reconnect: it is pending or shown already */
    const char *type = !strcmp(ev->type, "SYNC") ? "SYNC" : ev->type;
    wobj_t *o = wobj_new(w, ev, type, ev->position);
    if (o)
        pend_push(w, o);
}

void crw_wapi_commit(crw_wapi_t *w, uint64_t end) {
    if (!w)
        return;
    for (size_t i = w->npend; i-- > 0 && !w->pend[i]->end;) {
        w->pend[i]->end = end ? end : 1;
        if (w->pend[i]->rv > w->max_committed)
            w->max_committed = w->pend[i]->rv;
    }
}

void crw_wapi_abandon(crw_wapi_t *w) {
    if (!w)
        return;
    while (w->npend && !w->pend[w->npend - 1]->end)
        wobj_unref(w->pend[--w->npend]);
}

/* Into the ring (w->mu held); the one it overwrites is let go. */
static void ring_push(crw_wapi_t *w, wobj_t *o) {
    wobj_t **slot = &w->ring[w->head % w->cap];
    if (*slot) {
        if ((*slot)->rv > w->dropped_rv)
            w->dropped_rv = (*slot)->rv;
        wobj_unref(*slot);
    }
    wobj_ref(o);
    *slot = o;
    w->head++;
}

/*
 * A DELETED of the last version the store has (its labels, so that selectors
 * still match it), at resourceVersion rv: what a delete whose own object is
 * only its key, or a TRUNCATE, shows.
 */
static wobj_t *deleted_of(const wobj_t *cur, uint64_t rv) {
    wobj_t *d = crw_calloc(1, sizeof *d);
    d->refs = 1;
    d->rv = rv;
    d->kind = cur->kind;
    snprintf(d->type, sizeof d->type, "DELETED");
    d->ns = crw_strdup(cur->ns);
    d->name = crw_strdup(cur->name);
    d->key = crw_strdup(cur->key);
    d->labels = crw_calloc((size_t)cur->nlabels + 1, sizeof *d->labels);
    for (int i = 0; i < cur->nlabels; i++) {
        d->labels[i].k = crw_strdup(cur->labels[i].k);
        d->labels[i].v = crw_strdup(cur->labels[i].v);
    }
    d->nlabels = cur->nlabels;
    json_object *obj = json_tokener_parse(cur->obj), *md;
    if (obj && json_object_object_get_ex(obj, "metadata", &md)) {
        render_at(obj, md, rv, &d->obj, &d->objlen);
    } else {
        d->obj = crw_strndup(cur->obj, cur->objlen);
        d->objlen = cur->objlen;
    }
    json_object_put(obj);
    return d;
}

static bool same_labels(const wobj_t *a, const wobj_t *b) {
    if (a->nlabels != b->nlabels)
        return false;
    for (int i = 0; i < a->nlabels; i++) {
        int j = 0;
        while (j < b->nlabels && strcmp(a->labels[i].k, b->labels[j].k))
            j++;
        if (j == b->nlabels || strcmp(a->labels[i].v, b->labels[j].v))
            return false;
    }
    return true;
}

typedef struct {
    crw_wapi_t *w;
    uint64_t rv;
} truncate_t;

static bool drop_all(void *opaque, const void *key, size_t len, void *value) {
    (void)key, (void)len;
    truncate_t *t = opaque;
    wobj_t *cur = *(wobj_t **)value;
    wobj_t *d = deleted_of(cur, t->rv); /* watchers hear of every object that went */
    ring_push(t->w, d);
    wobj_unref(d);
    wobj_unref(cur);
    return true;
}

/* o becomes the store's current version of its key (w->mu held); the store takes a reference. */
static void store_put(crw_wapi_t *w, wobj_t *o) {
    bool created;
    wobj_t **slot = crw_strmap_put(w->kinds[o->kind].store, o->key, strlen(o->key), &created);
    if (!created)
        wobj_unref(*slot);
    wobj_ref(o);
    *slot = o;
}

/* Shows o (w->mu held): the store and the history. */
static void publish(crw_wapi_t *w, wobj_t *o) {
    wkind_t *k = &w->kinds[o->kind];
    if (o->rv > w->last_rv)
        w->last_rv = o->rv;
    if (o->truncate) {
        truncate_t t = {w, o->rv};
        crw_strmap_sweep(k->store, drop_all, &t);
        return;
    }
    wobj_t **cur = crw_strmap_get(k->store, o->key, strlen(o->key));
    if (!strcmp(o->type, "SYNC"))
        snprintf(o->type, sizeof o->type, "%s", cur ? "MODIFIED" : "ADDED");
    if (cur && !strcmp(o->type, "MODIFIED") && !same_labels(*cur, o))
        o->left = deleted_of(*cur, o->rv); /* label selectors may see it leave or enter */
    if (!strcmp(o->type, "DELETED")) {
        if (cur) {
            /* the store knows the whole last version: watchers (and their selectors) get it, at the delete's rv */
            wobj_t *d = deleted_of(*cur, o->rv);
            wobj_unref(*cur);
            crw_strmap_remove(k->store, o->key, strlen(o->key));
            ring_push(w, d);
            wobj_unref(d);
            return;
        }
    } else
        store_put(w, o);
    ring_push(w, o);
}

void crw_wapi_confirmed(crw_wapi_t *w, uint64_t position) {
    if (!w || (position <= w->last_confirmed && (!w->npend || !w->pend[0]->end || w->pend[0]->end > position)))
        return;
    w->last_confirmed = position;
    pthread_mutex_lock(&w->mu);
    size_t i = 0;
    for (; i < w->npend && w->pend[i]->end && w->pend[i]->end <= position; i++) {
        publish(w, w->pend[i]);
        wobj_unref(w->pend[i]);
    }
    if (i) {
        memmove(w->pend, w->pend + i, (w->npend - i) * sizeof *w->pend);
        w->npend -= i;
    }
    if (position > w->last_rv)
        w->last_rv = position;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void crw_wapi_base(crw_wapi_t *w, uint64_t position) {
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->ready = true;
    if (!w->base_rv || position < w->base_rv)
        w->base_rv = position;
    if (position > w->last_rv)
        w->last_rv = position;
    pthread_mutex_unlock(&w->mu);
}

void crw_wapi_seed(crw_wapi_t *w, const crw_event_t *ev, uint64_t position) {
    if (!w)
        return;
    wobj_t *o = wobj_new(w, ev, "ADDED", position);
    if (!o)
        return;
    pthread_mutex_lock(&w->mu);
    store_put(w, o);
    wobj_unref(o); /* the store's reference is the only one */
    if (position > w->last_rv)
        w->last_rv = position;
    pthread_mutex_unlock(&w->mu);
}

/* ---- selectors ------------------------------------------------------------------------------------ */

typedef enum { SEL_EQ, SEL_NE, SEL_IN, SEL_NOTIN, SEL_EXISTS, SEL_ABSENT } selop_t;

typedef struct {
    selop_t op;
    char *key;
    char **vals;
    int nvals;
} selreq_t;

typedef struct {
    selreq_t *reqs;
    int n;
    char *name, *ns;   /* fieldSelector metadata.name / metadata.namespace (NULL: any) */
    bool name_ne, ns_ne;
} selector_t;

static void selector_free(selector_t *s) {
    for (int i = 0; i < s->n; i++) {
        free(s->reqs[i].key);
        for (int j = 0; j < s->reqs[i].nvals; j++)
            free(s->reqs[i].vals[j]);
        free(s->reqs[i].vals);
    }
    free(s->reqs);
    free(s->name);
    free(s->ns);
    memset(s, 0, sizeof *s);
}

static char *trimdup(const char *a, const char *b) {
    while (a < b && isspace((unsigned char)*a))
        a++;
    while (b > a && isspace((unsigned char)b[-1]))
        b--;
    return crw_strndup(a, (size_t)(b - a));
}

/* One requirement of a labelSelector ("a=b", "a!=b", "a in (x,y)", "a notin (x)", "a", "!a").  @returns 0 or -1. */
static int parse_req(selector_t *s, const char *a, const char *b) {
    char *r = trimdup(a, b);
    selreq_t q = {0};
    int rc = 0;
    char *p;
    if (!*r)
        rc = -1;
    else if (r[0] == '!') {
        q.op = SEL_ABSENT;
        q.key = trimdup(r + 1, r + strlen(r));
    } else if ((p = strstr(r, "!="))) {
        q.op = SEL_NE;
        q.key = trimdup(r, p);
        q.vals = crw_calloc(1, sizeof *q.vals);
        q.vals[q.nvals++] = trimdup(p + 2, r + strlen(r));
    } else if ((p = strchr(r, '='))) {
        q.op = SEL_EQ;
        q.key = trimdup(r, p);
        const char *v = p[1] == '=' ? p + 2 : p + 1;
        q.vals = crw_calloc(1, sizeof *q.vals);
        q.vals[q.nvals++] = trimdup(v, r + strlen(r));
    } else if ((p = strstr(r, " notin ")) || (p = strstr(r, " notin(")) || (p = strstr(r, " in ")) ||
               (p = strstr(r, " in("))) {
        bool notin = !strncmp(p, " notin", 6);
        q.op = notin ? SEL_NOTIN : SEL_IN;
        q.key = trimdup(r, p);
        char *open = strchr(p, '('), *close = strrchr(p, ')');
        if (!open || !close || close < open)
            rc = -1;
        else {
            q.vals = crw_calloc((size_t)(close - open) + 1, sizeof *q.vals);
            for (char *v = open + 1, *e; v <= close; v = e + 1) {
                e = strchr(v, ',');
                if (!e || e > close)
                    e = close;
                q.vals[q.nvals++] = trimdup(v, e);
            }
        }
    } else {
        q.op = SEL_EXISTS;
        q.key = crw_strdup(r);
    }
    free(r);
    if (rc == 0 && (!q.key || !*q.key))
        rc = -1;
    if (rc < 0) {
        free(q.key);
        for (int j = 0; j < q.nvals; j++)
            free(q.vals[j]);
        free(q.vals);
        return -1;
    }
    s->reqs = crw_realloc(s->reqs, (size_t)(s->n + 1) * sizeof *s->reqs);
    s->reqs[s->n++] = q;
    return 0;
}

static int parse_labels(selector_t *s, const char *sel) {
    int depth = 0;
    const char *start = sel;
    for (const char *p = sel;; p++) {
        if (*p == '(')
            depth++;
        else if (*p == ')')
            depth--;
        if (*p == '\0' || (*p == ',' && depth == 0)) {
            if (p > start && parse_req(s, start, p) < 0)
                return -1;
            if (!*p)
                return 0;
            start = p + 1;
        }
    }
}

static int parse_fields(selector_t *s, const char *sel) {
    char *copy = crw_strdup(sel), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t && rc == 0; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        if (!eq) {
            rc = -1;
            break;
        }
        bool ne = eq > t && eq[-1] == '!';
        char *k = trimdup(t, ne ? eq - 1 : eq), *v = trimdup(eq[1] == '=' ? eq + 2 : eq + 1, t + strlen(t));
        if (!strcmp(k, "metadata.name")) {
            free(s->name);
            s->name = v;
            s->name_ne = ne;
        } else if (!strcmp(k, "metadata.namespace")) {
            free(s->ns);
            s->ns = v;
            s->ns_ne = ne;
        } else {
            free(v);
            rc = -1;
        }
        free(k);
    }
    free(copy);
    return rc;
}

static const char *label(const wobj_t *o, const char *k) {
    for (int i = 0; i < o->nlabels; i++)
        if (!strcmp(o->labels[i].k, k))
            return o->labels[i].v;
    return NULL;
}

static bool matches(const selector_t *s, const wobj_t *o) {
    if (s->name && (strcmp(o->name, s->name) == 0) == s->name_ne)
        return false;
    if (s->ns && (strcmp(o->ns, s->ns) == 0) == s->ns_ne)
        return false;
    for (int i = 0; i < s->n; i++) {
        const selreq_t *q = &s->reqs[i];
        const char *v = label(o, q->key);
        bool in = false;
        for (int j = 0; v && j < q->nvals; j++)
            in = in || !strcmp(v, q->vals[j]);
        switch (q->op) {
        case SEL_EQ:
        case SEL_IN:
            if (!in)
                return false;
            break;
        case SEL_NE:
        case SEL_NOTIN:
            if (in)
                return false;
            break;
        case SEL_EXISTS:
            if (!v)
                return false;
            break;
        case SEL_ABSENT:
            if (v)
                return false;
            break;
        }
    }
    return true;
}

int crw_wapi_selector_match(const char *label_selector, const char *field_selector, const char *ns, const char *name,
                            const char *const *labels, int nlabels) {
    selector_t s = {0};
    int rc = -1;
    if ((!label_selector || parse_labels(&s, label_selector) == 0) &&
        (!field_selector || parse_fields(&s, field_selector) == 0)) {
        wobj_t o = {.ns = (char *)ns, .name = (char *)name, .nlabels = nlabels};
        o.labels = crw_calloc(nlabels > 0 ? (size_t)nlabels : 1, sizeof *o.labels);
        for (int i = 0; i < nlabels; i++)
            o.labels[i] = (label_t){(char *)labels[2 * i], (char *)labels[2 * i + 1]};
        rc = matches(&s, &o);
        free(o.labels);
    }
    selector_free(&s);
    return rc;
}

/* ---- requests ------------------------------------------------------------------------------------- */

typedef struct {
    crw_wapi_t *w;
    int kind;
    selector_t sel;          /* its namespace from the path goes into sel.ns */
    bool sse, bookmarks;
    uint64_t next;           /* the next history seq to send */
    uint64_t min_rv;         /* only changes after it (the watch's resourceVersion, or its list's) */
    wobj_t **initial;        /* the current objects first (a watch without resourceVersion) */
    size_t ninitial, sent_initial;
    bool initial_pending;    /* the current objects are to be sent, then a bookmark where they stand */
    bool initial_events;     /* sendInitialEvents=true: that bookmark says so (k8s.io/initial-events-end) */
    int64_t deadline_ms, last_bookmark_ms, last_keepalive_ms;
    crw_buf_t out;
    size_t off;
    bool ending, counted;
} watcher_t;

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *type, crw_buf_t *body) {
    struct MHD_Response *r = MHD_create_response_from_buffer(body->len, body->data ? body->data : crw_strdup(""),
                                                             MHD_RESPMEM_MUST_FREE);
    body->data = NULL;
    body->len = body->cap = 0;
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, "*"); /* read-only: any page may read */
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* A Kubernetes Status object (metav1.Status) as the body. */
static enum MHD_Result status_reply(struct MHD_Connection *c, unsigned code, const char *reason, const char *msg) {
    crw_buf_t b = CRW_BUF_INIT;
    crw_buf_printf(&b, "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":");
    crw_buf_put_json_str(&b, msg, strlen(msg));
    crw_buf_printf(&b, ",\"reason\":\"%s\",\"code\":%u}\n", reason, code);
    return respond(c, code, "application/json", &b);
}

/* The history seq a watch from rv starts at, or -1 when events after rv have left the history (410). */
static int64_t start_seq(const crw_wapi_t *w, uint64_t rv) {
    if (rv < w->base_rv || (w->dropped_rv && rv < w->dropped_rv))
        return -1;
    uint64_t first = w->head > w->cap ? w->head - w->cap : 0, s = first;
    while (s < w->head && w->ring[s % w->cap]->rv <= rv)
        s++;
    return (int64_t)s;
}

/* One event; rv 0: no id (an initial object: their order is not their resourceVersions'). */
static void put_event(watcher_t *wt, const char *type, const char *obj, size_t len, uint64_t rv) {
    if (wt->sse) {
        if (rv)
            crw_buf_printf(&wt->out, "id: %" PRIu64 "\n", rv);
        crw_buf_printf(&wt->out, "event: %s\ndata: ", type);
        crw_buf_put(&wt->out, obj, len);
        crw_buf_puts(&wt->out, "\n\n");
    } else {
        crw_buf_printf(&wt->out, "{\"type\":\"%s\",\"object\":", type);
        crw_buf_put(&wt->out, obj, len);
        crw_buf_puts(&wt->out, "}\n");
    }
}

static void put_bookmark(watcher_t *wt, uint64_t rv, bool initial_end) {
    const wkind_t *k = &wt->w->kinds[wt->kind];
    char obj[640];
    int n = snprintf(obj, sizeof obj,
                     "{\"kind\":\"%s\",\"apiVersion\":\"%s\",\"metadata\":{\"resourceVersion\":\"%" PRIu64 "\"%s}}",
                     k->kind, k->api_version, rv,
                     initial_end ? ",\"annotations\":{\"k8s.io/initial-events-end\":\"true\"}" : "");
    put_event(wt, "BOOKMARK", obj, (size_t)n, rv);
}

/* What one fill takes from the history at most: then the watcher's connection sends it. */
#define FILL_BYTES 65536
#define FILL_EVENTS 512

/*
 * Fills wt->out with what is due; waits up to a second when nothing is.
 * Under w->mu it only takes references to the history's objects; it copies
 * them into wt->out after letting go, so a hundred watchers copying do not
 * hold up the stream publishing.
 */
static void fill(watcher_t *wt) {
    crw_wapi_t *w = wt->w;
    int64_t now = crw_clock_mono_ms();
    while (wt->sent_initial < wt->ninitial && wt->out.len < FILL_BYTES) {
        wobj_t *o = wt->initial[wt->sent_initial++];
        put_event(wt, "ADDED", o->obj, o->objlen, 0);
    }
    if (wt->initial_pending && wt->sent_initial == wt->ninitial) {
        wt->initial_pending = false;
        if (wt->bookmarks || wt->sse || wt->initial_events) /* where the initial objects stand: resume from it */
            put_bookmark(wt, wt->min_rv, wt->initial_events);
    }
    if (wt->out.len)
        return;
    wobj_t *batch[FILL_EVENTS];
    size_t nb = 0, bytes = 0;
    pthread_mutex_lock(&w->mu);
    uint64_t first = w->head > w->cap ? w->head - w->cap : 0;
    if (wt->next < first) { /* fell behind the history: cut off, as the Kubernetes API does */
        const char *st = "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
                         "\"message\":\"too old resource version: the watcher fell behind the history "
                         "(watch.history.events)\",\"reason\":\"Expired\",\"code\":410}";
        put_event(wt, "ERROR", st, strlen(st), 0); /* no SSE id: an EventSource resuming from it would skip */
        wt->ending = true;
        pthread_mutex_unlock(&w->mu);
        return;
    }
    if (wt->next == w->head && !w->stopping && now < wt->deadline_ms) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        now = crw_clock_mono_ms();
    }
    first = w->head > w->cap ? w->head - w->cap : 0;
    if (wt->next < first) {
        pthread_mutex_unlock(&w->mu);
        return; /* cut off on the next call */
    }
    for (; wt->next < w->head && nb < FILL_EVENTS && bytes < FILL_BYTES; wt->next++) {
        wobj_t *o = w->ring[wt->next % w->cap];
        if (o->kind == wt->kind && o->rv > wt->min_rv) {
            wobj_ref(o);
            batch[nb++] = o;
            bytes += o->objlen;
        }
    }
    bool stopping = w->stopping;
    uint64_t last_rv = w->last_rv;
    pthread_mutex_unlock(&w->mu);

    /* a published object does not change: read without the lock */
    for (size_t i = 0; i < nb; i++) {
        const wobj_t *o = batch[i];
        bool now_in = matches(&wt->sel, o), was_in = o->left ? matches(&wt->sel, o->left) : now_in;
        if (now_in) /* as the Kubernetes API: ADDED when the labels brought it into the selection */
            put_event(wt, was_in ? o->type : "ADDED", o->obj, o->objlen, o->rv);
        else if (was_in) /* and DELETED, with its last version that matched, when they took it out */
            put_event(wt, "DELETED", o->left->obj, o->left->objlen, o->rv);
        wobj_unref(batch[i]);
    }
    if (!wt->out.len && wt->bookmarks && now - wt->last_bookmark_ms >= 5000) {
        put_bookmark(wt, last_rv, false);
        wt->last_bookmark_ms = now;
    }
    if (!wt->out.len && wt->sse && now - wt->last_keepalive_ms >= 15000) {
        crw_buf_puts(&wt->out, ": keepalive\n\n");
        wt->last_keepalive_ms = now;
    }
    if (!wt->out.len && nb == 0 && (stopping || now >= wt->deadline_ms)) {
        if (wt->bookmarks)
            put_bookmark(wt, last_rv > wt->min_rv ? last_rv : wt->min_rv, false); /* where to resume */
        wt->ending = true;
    }
}

static ssize_t watch_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    watcher_t *wt = cls;
    if (wt->off == wt->out.len) {
        crw_buf_reset(&wt->out);
        wt->off = 0;
        if (wt->ending)
            return MHD_CONTENT_READER_END_OF_STREAM;
        fill(wt);
        if (!wt->out.len)
            return wt->ending ? MHD_CONTENT_READER_END_OF_STREAM : 0;
    }
    size_t n = wt->out.len - wt->off < max ? wt->out.len - wt->off : max;
    memcpy(buf, wt->out.data + wt->off, n);
    wt->off += n;
    return (ssize_t)n;
}

static void watch_free(void *cls) {
    watcher_t *wt = cls;
    pthread_mutex_lock(&wt->w->mu);
    for (size_t i = 0; i < wt->ninitial; i++)
        wobj_unref(wt->initial[i]);
    if (wt->counted) {
        wt->w->nwatchers--;
        pthread_cond_broadcast(&wt->w->cv);
    }
    pthread_mutex_unlock(&wt->w->mu);
    free(wt->initial);
    selector_free(&wt->sel);
    crw_buf_free(&wt->out);
    free(wt);
}

/* The objects a list or a watch without resourceVersion shows, referenced (w->mu held while taken). */
typedef struct {
    const selector_t *sel;
    wobj_t ***grab;
    size_t *ngrab;
} listing_t;

static bool list_one(void *opaque, const void *key, size_t len, void *value) {
    (void)key, (void)len;
    listing_t *l = opaque;
    wobj_t *o = *(wobj_t **)value;
    if (!matches(l->sel, o))
        return false;
    if ((*l->ngrab & (*l->ngrab - 1)) == 0) /* at 0, 1, 2, 4, ...: doubling */
        *l->grab = crw_realloc(*l->grab, (*l->ngrab ? *l->ngrab * 2 : 1) * sizeof **l->grab);
    wobj_ref(o);
    (*l->grab)[(*l->ngrab)++] = o;
    return false;
}

static const char *arg(struct MHD_Connection *c, const char *k) {
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, k);
}

static bool truthy(const char *v) { return v && (!strcmp(v, "1") || !strcmp(v, "true")); }

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **state) {
    (void)version, (void)upload;
    crw_wapi_t *w = cls;
    if (!*state) {
        *state = w;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "GET"))
        return status_reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "MethodNotAllowed", "the watch API is read-only: GET");
    pthread_mutex_lock(&w->mu);
    bool ready = w->ready;
    pthread_mutex_unlock(&w->mu);
    if (!ready)
        return status_reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "ServiceUnavailable",
                            "crwatch is connecting, or listing the tables: try again");
    /* /apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}] */
    char path[1024];
    snprintf(path, sizeof path, "%s", url);
    char *parts[8];
    int np = 0;
    for (char *save = NULL, *t = strtok_r(path, "/", &save); t && np < 8; t = strtok_r(NULL, "/", &save))
        parts[np++] = t;
    const char *ns = NULL, *plural = NULL, *name = NULL;
    if (np >= 4 && !strcmp(parts[0], "apis")) {
        if (np >= 6 && np <= 7 && !strcmp(parts[3], "namespaces")) {
            ns = parts[4];
            plural = parts[5];
            name = np == 7 ? parts[6] : NULL;
        } else if (np <= 5 && strcmp(parts[3], "namespaces")) {
            plural = parts[3];
            name = np == 5 ? parts[4] : NULL;
        }
    }
    int kind = -1;
    for (int i = 0; plural && i < w->nkinds; i++)
        if (!strcmp(w->kinds[i].group, parts[1]) && !strcmp(w->kinds[i].version, parts[2]) &&
            !strcmp(w->kinds[i].plural, plural))
            kind = i;
    if (kind < 0) {
        char msg[1200];
        snprintf(msg, sizeof msg, "the server could not find the requested resource (%s)", url);
        return status_reply(c, MHD_HTTP_NOT_FOUND, "NotFound", msg);
    }
    wkind_t *k = &w->kinds[kind];
    selector_t sel = {0};
    const char *ls = arg(c, "labelSelector"), *fs = arg(c, "fieldSelector");
    if ((ls && parse_labels(&sel, ls) < 0) || (fs && parse_fields(&sel, fs) < 0)) {
        selector_free(&sel);
        return status_reply(c, MHD_HTTP_BAD_REQUEST, "BadRequest",
                            "unable to parse the selector (labelSelector: a=b, a!=b, a in (x,y), a notin (x), a, !a; "
                            "fieldSelector: metadata.name, metadata.namespace)");
    }
    if (ns && !sel.ns) {
        sel.ns = crw_strdup(ns);
        sel.ns_ne = false;
    } else if (ns && (sel.ns_ne || strcmp(sel.ns, ns))) {
        selector_free(&sel);
        return status_reply(c, MHD_HTTP_BAD_REQUEST, "BadRequest", "fieldSelector metadata.namespace and the path differ");
    }

    if (name) { /* one object */
        char key[1024];
        snprintf(key, sizeof key, "%s/%s", ns ? ns : "", name);
        pthread_mutex_lock(&w->mu);
        wobj_t **o = crw_strmap_get(k->store, key, strlen(key));
        crw_buf_t b = CRW_BUF_INIT;
        if (o)
            crw_buf_put(&b, (*o)->obj, (*o)->objlen);
        pthread_mutex_unlock(&w->mu);
        selector_free(&sel);
        if (!o) {
            char msg[1200];
            snprintf(msg, sizeof msg, "%s \"%s\" not found", k->plural, name);
            return status_reply(c, MHD_HTTP_NOT_FOUND, "NotFound", msg);
        }
        return respond(c, MHD_HTTP_OK, "application/json", &b);
    }

    const char *accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
    bool sse = accept && strstr(accept, "text/event-stream");
    if (!truthy(arg(c, "watch")) && !sse) { /* a list, consistent at the newest position shown */
        crw_buf_t b = CRW_BUF_INIT;
        pthread_mutex_lock(&w->mu);
        crw_buf_printf(&b, "{\"apiVersion\":\"%s\",\"kind\":\"%sList\",\"metadata\":{\"resourceVersion\":\"%" PRIu64
                           "\"},\"items\":[",
                       k->api_version, k->kind, w->last_rv);
        wobj_t **objs = NULL;
        size_t nobjs = 0;
        listing_t l = {&sel, &objs, &nobjs};
        crw_strmap_sweep(k->store, list_one, &l); /* references only: the copying is done after */
        pthread_mutex_unlock(&w->mu);
        for (size_t i = 0; i < nobjs; i++) {
            if (i)
                crw_buf_putc(&b, ',');
            crw_buf_put(&b, objs[i]->obj, objs[i]->objlen);
            wobj_unref(objs[i]);
        }
        free(objs);
        crw_buf_puts(&b, "]}\n");
        selector_free(&sel);
        return respond(c, MHD_HTTP_OK, "application/json", &b);
    }

    /* a watch */
    const char *rvs = arg(c, "resourceVersion");
    const char *last = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
    if (sse && last && *last)
        rvs = last;
    const char *to = arg(c, "timeoutSeconds");
    watcher_t *wt = crw_calloc(1, sizeof *wt);
    wt->w = w;
    wt->kind = kind;
    wt->sel = sel;
    wt->sse = sse;
    wt->bookmarks = truthy(arg(c, "allowWatchBookmarks"));
    /* sendInitialEvents (client-go's streaming list): the current objects, then the annotated bookmark; with a
     * resourceVersion (resourceVersionMatch=NotOlderThan) the current state is not older than it */
    wt->initial_events = truthy(arg(c, "sendInitialEvents"));
    int64_t now = crw_clock_mono_ms();
    wt->deadline_ms = now + (to && atoll(to) > 0 ? atoll(to) * 1000 : 1800 * 1000);
    wt->last_bookmark_ms = wt->last_keepalive_ms = now;
    pthread_mutex_lock(&w->mu);
    if (wt->initial_events || !rvs || !*rvs || !strcmp(rvs, "0")) { /* the current objects as ADDED, then changes */
        listing_t l = {&wt->sel, &wt->initial, &wt->ninitial};
        crw_strmap_sweep(k->store, list_one, &l);
        wt->initial_pending = true;
        wt->next = w->head;
        wt->min_rv = w->last_rv;
    } else {
        char *end;
        errno = 0;
        unsigned long long rv = strtoull(rvs, &end, 10);
        int64_t s = errno || *end ? -2 : start_seq(w, rv);
        if (s < 0) {
            uint64_t base = w->base_rv > w->dropped_rv ? w->base_rv : w->dropped_rv;
            pthread_mutex_unlock(&w->mu);
            watch_free(wt);
            char msg[256];
            snprintf(msg, sizeof msg, s == -2 ? "resourceVersion '%.100s' is not a number" : "too old resource version: "
                                                                                             "%.40s (%" PRIu64 ")",
                     rvs, base);
            return s == -2 ? status_reply(c, MHD_HTTP_BAD_REQUEST, "BadRequest", msg)
                           : status_reply(c, MHD_HTTP_GONE, "Expired", msg);
        }
        wt->next = (uint64_t)s;
        wt->min_rv = rv; /* a resourceVersion not reached yet: what comes up to it is not sent */
    }
    wt->counted = true;
    w->nwatchers++;
    pthread_mutex_unlock(&w->mu);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, watch_read, wt, watch_free);
    if (!r) {
        watch_free(wt);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, sse ? "text/event-stream" : "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, "*");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- start, stop ---------------------------------------------------------------------------------- */

crw_wapi_t *crw_wapi_start(const crw_config_t *conf, int *err, char *errstr, size_t n) {
    *err = CRW_ERR_CONFIG;
    char host[256];
    int port;
    if (crw_config_listen(conf->watch_listen, host, sizeof host, &port) < 0) {
        snprintf(errstr, n, "watch.listen: '%s' is not host:port", conf->watch_listen);
        return NULL;
    }
    crw_wapi_t *w = crw_calloc(1, sizeof *w);
    w->conf = conf;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->kinds = crw_calloc((size_t)conf->nresources + 1, sizeof *w->kinds);
    for (int i = 0; i < conf->nresources; i++) {
        const crw_resource_conf_t *rs = &conf->resources[i];
        const char *slash = rs->api_version ? strchr(rs->api_version, '/') : NULL;
        if (rs->shape != CRW_SHAPE_CRD || !slash) {
            crw_warn("watch: kind %s is not served (the watch API serves crd-shaped kinds with an api.version "
                     "group/version)",
                     rs->kind);
            continue;
        }
        wkind_t *k = &w->kinds[w->nkinds++];
        snprintf(k->group, sizeof k->group, "%.*s", (int)(slash - rs->api_version), rs->api_version);
        snprintf(k->version, sizeof k->version, "%s", slash + 1);
        snprintf(k->kind, sizeof k->kind, "%s", rs->kind);
        snprintf(k->api_version, sizeof k->api_version, "%s", rs->api_version);
        if (rs->plural && *rs->plural)
            snprintf(k->plural, sizeof k->plural, "%s", rs->plural);
        else {
            size_t j = 0;
            for (; rs->kind[j] && j < sizeof k->plural - 2; j++)
                k->plural[j] = (char)tolower((unsigned char)rs->kind[j]);
            k->plural[j++] = 's';
            k->plural[j] = '\0';
        }
        k->store = crw_strmap_new(sizeof(wobj_t *));
        crw_info("watch: /apis/%s/%s/namespaces/{namespace}/%s (kind %s)", k->group, k->version, k->plural, k->kind);
    }
    w->cap = (uint64_t)conf->watch_history_events;
    w->ring = crw_calloc(w->cap, sizeof *w->ring);
    int bound;
    if (!(w->d = crw_http_start("watch.listen", conf->watch_listen,
                                MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, handle, w, 1024, 0,
                                &bound, errstr, n))) {
        crw_wapi_stop(w);
        return NULL;
    }
    crw_info("watch: the watch API on %s:%d (%d kinds, history of %d events)", *host ? host : "*", bound, w->nkinds,
             conf->watch_history_events);
    return w;
}

static bool unref_value(void *opaque, const void *key, size_t len, void *value) {
    (void)opaque, (void)key, (void)len;
    wobj_unref(*(wobj_t **)value);
    return true;
}

void crw_wapi_stop(crw_wapi_t *w) {
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_broadcast(&w->cv);
    /* Watches end on their own first (with a last bookmark, where their clients resume), for up to 2 s. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 2;
    while (w->nwatchers > 0 && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0)
        ;
    pthread_mutex_unlock(&w->mu);
    if (w->d)
        MHD_stop_daemon(w->d);
    for (int i = 0; i < w->nkinds; i++) {
        crw_strmap_sweep(w->kinds[i].store, unref_value, NULL);
        crw_strmap_destroy(w->kinds[i].store);
    }
    for (uint64_t i = 0; i < w->cap; i++)
        wobj_unref(w->ring[i]);
    for (size_t i = 0; i < w->npend; i++)
        wobj_unref(w->pend[i]);
    free(w->pend);
    free(w->ring);
    free(w->kinds);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
