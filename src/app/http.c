/*
 * http.c — a libmicrohttpd daemon on a listen address (http.h).
 */
#include "app/http.h"

#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "core/conf.h"
#include "core/log.h"

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    if (strstr(msg, "no longer available")) /* a client that went away (a watcher closing): nothing to fix */
        crw_debug("%s: %s", (const char *)cls, msg);
    else
        crw_warn("%s: %s", (const char *)cls, msg);
}

struct MHD_Daemon *crw_http_start(const char *what, const char *listen, unsigned flags,
                                  MHD_AccessHandlerCallback handler, void *cls, unsigned connection_limit,
                                  unsigned timeout_s, int *port, char *errstr, size_t n) {
    char host[256], portstr[16];
    if (crw_config_listen(listen, host, sizeof host, port) < 0) {
        snprintf(errstr, n, "%s: '%s' is not host:port", what, listen);
        return NULL;
    }
    snprintf(portstr, sizeof portstr, "%d", *port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    int gai = getaddrinfo(*host ? host : NULL, portstr, &hints, &ai);
    if (gai) {
        snprintf(errstr, n, "%s: %s: %s", what, listen, gai_strerror(gai));
        return NULL;
    }
    flags |= MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* the logger first: libmicrohttpd logs with its own until it sees it */
    struct MHD_Daemon *d =
        MHD_start_daemon(flags, (uint16_t)*port, NULL, NULL, handler, cls, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
                         (void *)what, MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_CONNECTION_TIMEOUT, timeout_s,
                         MHD_OPTION_CONNECTION_LIMIT, connection_limit, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!d) {
        snprintf(errstr, n, "%s: cannot listen on %s (in use, or not an address of this host)", what, listen);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    if (info)
        *port = info->port;
    return d;
}
