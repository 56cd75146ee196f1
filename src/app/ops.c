/*
 * ops.c — the operations endpoint on libmicrohttpd (ops.h).  The server
 * runs its own polling thread; a request only reads atomics (core/metrics.h),
 * so a stuck main loop never blocks /healthz from saying so.
 */
#include "app/ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/http.h"
#include "core/buf.h"
#include "core/conf.h"
#include "core/log.h"
#include "core/metrics.h"

struct crw_ops {
    struct MHD_Daemon *d;
    int port;
    int health_timeout_ms;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type, char *body, size_t len,
                             bool owned) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    if (!r) {
        if (owned)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result text(struct MHD_Connection *c, unsigned status, const char *msg) {
    return reply(c, status, "text/plain; charset=utf-8", (char *)msg, strlen(msg), false);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **state) {
    (void)version, (void)upload;
    crw_ops_t *ops = cls;
    if (!*state) { /* the first call is the headers: answer on the second */
        *state = ops;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0; /* a body is read away and ignored */
        return MHD_YES;
    }
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET\n");
    if (!strcmp(url, "/metrics")) {
        crw_buf_t b = CRW_BUF_INIT;
        crw_metrics_render(&b);
        return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, true);
    }
    if (!strcmp(url, "/healthz")) {
        int64_t age = crw_health_age_ms();
        if (age > ops->health_timeout_ms) {
            char msg[128];
            snprintf(msg, sizeof msg, "stuck: the main loop has not gone round for %lld ms\n", (long long)age);
            return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", msg, strlen(msg), false);
        }
        return text(c, MHD_HTTP_OK, "ok\n");
    }
    if (!strcmp(url, "/readyz"))
        return crw_health_ready() ? text(c, MHD_HTTP_OK, "ready: streaming as the active instance\n")
                                  : text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                                         "not ready: standing by, connecting, or stopping\n");
    if (!strcmp(url, "/"))
        return text(c, MHD_HTTP_OK, "crwatch: /metrics /healthz /readyz\n");
    return text(c, MHD_HTTP_NOT_FOUND, "not found: /metrics /healthz /readyz\n");
}

crw_ops_t *crw_ops_start(const char *listen, int health_timeout_ms, char *errstr, size_t n) {
    crw_ops_t *ops = crw_calloc(1, sizeof *ops);
    ops->health_timeout_ms = health_timeout_ms;
    if (!(ops->d = crw_http_start("http.listen", listen, MHD_USE_INTERNAL_POLLING_THREAD, handle, ops, 64, 30,
                                  &ops->port, errstr, n))) {
        free(ops);
        return NULL;
    }
    char host[256];
    int port;
    crw_config_listen(listen, host, sizeof host, &port);
    crw_info("http: /metrics, /healthz and /readyz on %s:%d", *host ? host : "*", ops->port);
    return ops;
}

int crw_ops_port(const crw_ops_t *ops) { return ops->port; }

void crw_ops_stop(crw_ops_t *ops) {
    if (!ops)
        return;
    MHD_stop_daemon(ops->d);
    free(ops);
}
