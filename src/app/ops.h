/*
 * ops.h — the operations endpoint (http.listen; docs/operations.md): an
 * HTTP server on libmicrohttpd, in a thread of its own, serving
 *
 *   GET /metrics   the process's metrics (core/metrics.h), Prometheus text format
 *   GET /healthz   200 while the main loop goes round; 503 when it has not for health_timeout_ms
 *   GET /readyz    200 while this instance streams, connected, as the active one; else 503
 */
#ifndef CRW_OPS_H
#define CRW_OPS_H

#include <stddef.h>

typedef struct crw_ops crw_ops_t;

/*
 * Starts serving on listen ("host:port"; port 0: any free one, logged).
 * health_timeout_ms: the main loop's silence that makes /healthz 503.
 * @returns the server, or NULL with errstr (the address cannot be bound).
 */
crw_ops_t *crw_ops_start(const char *listen, int health_timeout_ms, char *errstr, size_t errstr_size);

/* The port it listens on. */
int crw_ops_port(const crw_ops_t *ops);

/* Stops serving (waits for requests in progress); NULL is fine. */
void crw_ops_stop(crw_ops_t *ops);

#endif
