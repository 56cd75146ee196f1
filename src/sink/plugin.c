/*
 * plugin.c — sink=plugin: a shared object (plugin.path) loaded with dlopen
 * against the versioned ABI of include/crwatch/handler.h.
 *
 * Loading happens when the sink is opened, before crwatch connects to
 * PostgreSQL: a missing file, a missing `crw_handler` symbol, an ABI version
 * other than CRW_HANDLER_ABI_VERSION, or an init() that refuses its
 * plugin.config are configuration errors (exit 2) and nothing is touched.
 * The version is read before any other member, so a plugin from another
 * ABI is never called.
 *
 * Threads: init() and fini() on the main thread; on_event() on the worker
 * threads (handler.h says what plugins must expect).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "sink/local.h"

typedef struct {
    void *dl;
    const crw_handler_t *h;
    void *state;
    bool inited;
    char *path;
} plugin_t;

static int plugin_deliver(void *impl, const crw_handler_event_t *ev, char *reason, size_t n) {
    plugin_t *p = impl;
    return p->h->on_event(p->state, ev, reason, n);
}

static void plugin_destroy(void *impl) {
    plugin_t *p = impl;
    if (!p)
        return;
    if (p->inited && p->h->fini)
        p->h->fini(p->state);
    if (p->dl)
        dlclose(p->dl);
    free(p->path);
    free(p);
}

CRW_SINK_CONSTRUCTOR(crw_sink_plugin_new) {
    size_t n = errstr_size;
    const crw_config_t *c = env->conf;
    *err = CRW_ERR_CONFIG;
    if (!c->plugin_path || !*c->plugin_path) {
        snprintf(errstr, n, "sink=plugin needs plugin.path (a shared object built against crwatch/handler.h)");
        return NULL;
    }
    plugin_t *p = crw_calloc(1, sizeof *p);
    p->path = crw_strdup(c->plugin_path);
    dlerror();
    p->dl = dlopen(p->path, RTLD_NOW | RTLD_LOCAL);
    if (!p->dl) {
        const char *e = dlerror();
        snprintf(errstr, n, "plugin.path: cannot load %s: %s", p->path, e ? e : "unknown error");
        goto fail;
    }
    dlerror();
    const void *sym = dlsym(p->dl, CRW_HANDLER_SYMBOL);
    if (!sym) {
        snprintf(errstr, n, "plugin.path: %s exports no '%s' symbol (see crwatch/handler.h)", p->path,
                 CRW_HANDLER_SYMBOL);
        goto fail;
    }
    /* The first member, and only it, is read before the version is known to match. */
    uint32_t version;
    memcpy(&version, sym, sizeof version);
    if (version != CRW_HANDLER_ABI_VERSION) {
        snprintf(errstr, n,
                 "plugin.path: %s was built against handler ABI version %u, but this crwatch provides version %u: "
                 "rebuild the plugin against this crwatch's crwatch/handler.h",
                 p->path, version, CRW_HANDLER_ABI_VERSION);
        goto fail;
    }
    p->h = sym;
    if (!p->h->on_event) {
        snprintf(errstr, n, "plugin.path: %s: crw_handler.on_event is NULL", p->path);
        goto fail;
    }
    if (p->h->init) {
        crw_handler_init_t init = {.config = c->plugin_config ? c->plugin_config : "", .workers = c->workers};
        char perr[512] = "";
        if (p->h->init(&init, &p->state, perr, sizeof perr) != 0) {
            snprintf(errstr, n, "plugin %s (%s) refused plugin.config: %s", p->h->name ? p->h->name : "?", p->path,
                     *perr ? perr : "init failed");
            goto fail;
        }
    }
    p->inited = true;
    crw_info("plugin: loaded %s (%s, handler ABI %u)", p->path, p->h->name ? p->h->name : "unnamed", version);
    crw_local_impl_t impl = {.name = "plugin",
                               .wants_objects = true,
                               .deliver = plugin_deliver,
                               .interrupt = NULL,
                               .destroy = plugin_destroy,
                               .impl = p};
    return crw_local_sink_new(env, &impl, NULL, err, errstr, n);
fail:
    plugin_destroy(p);
    return NULL;
}
