/*
 * http.h — what the two HTTP servers of crwatch share (app/ops.c, the
 * operations endpoint; app/watchapi.c, the watch API): a libmicrohttpd
 * daemon on a "host:port" listen address, logging through core/log.h.
 */
#ifndef CRW_HTTP_H
#define CRW_HTTP_H

#include <microhttpd.h>
#include <stddef.h>

/*
 * Starts a daemon with flags (MHD_USE_ERROR_LOG and, for an IPv6 host,
 * MHD_USE_IPv6 are added) serving handler(cls) on listen, named what in
 * messages; a connection idle for timeout_s is closed (0: never, for long
 * watches).  *port gets the port bound (listen's port 0: any free one).
 * @returns the daemon, or NULL with errstr.
 */
struct MHD_Daemon *crw_http_start(const char *what, const char *listen, unsigned flags,
                                  MHD_AccessHandlerCallback handler, void *cls, unsigned connection_limit,
                                  unsigned timeout_s, int *port, char *errstr, size_t errstr_size);

#endif
