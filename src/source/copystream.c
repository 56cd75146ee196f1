/*
 * copystream.c — the CopyBoth stream of START_REPLICATION (copystream.h):
 * read from the socket into a buffer of the stream's own, or, with TLS or
 * GSS encryption, through libpq (PQgetCopyData).
 *
 * The buffer holds the unread bytes [rd, wr).  A message bigger than it
 * grows it to the message's size exactly; once that message is consumed
 * (the next read), the buffer goes back to BUF_SIZE.  Reads happen only in
 * wait, so a message handed out stays in place until then.
 */
#include "source/copystream.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "core/buf.h"
#include "core/log.h"

#define BUF_SIZE (128 * 1024)
#define MAX_MSG ((1u << 30) + 64) /* CopyData: PostgreSQL sends none over 1 GB (MaxAllocSize) */
#define MAX_OTHER_MSG (1u << 20)   /* any other message (errors, notices, parameters) is far smaller */

struct crw_copystream {
    PGconn *conn; /* NULL: no copy in progress */
    bool direct;
    bool ended;               /* the copy ended: end says how */
    bool done_sent;           /* this side's CopyDone went */
    crw_copystream_end_t end;
    char err[256];            /* the last send's failure */
    char *copy;               /* libpq's: the last message PQgetCopyData returned */
    /* the stream's own reading */
    int fd;
    char *buf;
    size_t cap, rd, wr;
    size_t need;              /* the size of the message at rd, when it is not whole yet (0: not known) */
    bool gone;                /* the socket failed, the server closed it, or the bytes make no sense: lost says why */
    bool broken;              /* the bytes make no sense: nothing more is read from them */
    char lost[256];
    crw_buf_t out;            /* bytes to send, from sent on */
    size_t sent;
};

static uint32_t get32(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static void put_header(crw_buf_t *b, char type, uint32_t len) {
    char h[5] = {type, (char)(len >> 24), (char)(len >> 16), (char)(len >> 8), (char)len};
    crw_buf_put(b, h, sizeof h);
}

/* libpq's message, first line. */
static void first_line(char *dst, size_t n, const char *m) {
    snprintf(dst, n, "%.*s", (int)strcspn(m, "\n"), m);
}

static void lose(crw_copystream_t *cs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lose(crw_copystream_t *cs, const char *fmt, ...) {
    if (cs->gone)
        return; /* the first reason is the one */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cs->lost, sizeof cs->lost, fmt, ap);
    va_end(ap);
    cs->gone = true;
}

crw_copystream_t *crw_copystream_new(void) {
    crw_copystream_t *cs = crw_calloc(1, sizeof *cs);
    cs->fd = -1;
    return cs;
}

void crw_copystream_reset(crw_copystream_t *cs) {
    PQfreemem(cs->copy);
    free(cs->buf);
    crw_buf_free(&cs->out);
    *cs = (crw_copystream_t){.fd = -1};
}

void crw_copystream_free(crw_copystream_t *cs) {
    if (!cs)
        return;
    crw_copystream_reset(cs);
    free(cs);
}

bool crw_copystream_direct(const crw_copystream_t *cs) { return cs->direct; }

const char *crw_copystream_error(const crw_copystream_t *cs) { return cs->err; }

/* ---- the stream's own reading ------------------------------------------ */

/*
 * Reads what the socket has, after moving the unread bytes to the front:
 * into a buffer of BUF_SIZE again once an outsized message is consumed, or
 * one grown to the message at the front when that is outsized.
 * @returns the bytes read (0: none, or the connection is gone).
 */
static size_t fill(crw_copystream_t *cs) {
    size_t have = cs->wr - cs->rd;
    if (cs->cap > BUF_SIZE && have <= BUF_SIZE && cs->need <= BUF_SIZE) {
        char *small = crw_malloc(BUF_SIZE); /* a new one: the big one's memory goes back to the system now */
        memcpy(small, cs->buf + cs->rd, have);
        free(cs->buf);
        cs->buf = small;
        cs->cap = BUF_SIZE;
    } else if (cs->rd > 0) {
        memmove(cs->buf, cs->buf + cs->rd, have);
    }
    cs->rd = 0;
    cs->wr = have;
    if (cs->need > cs->cap) {
        cs->buf = crw_realloc(cs->buf, cs->need);
        cs->cap = cs->need;
    }
    size_t got = 0;
    while (cs->wr < cs->cap) {
        size_t room = cs->cap - cs->wr;
        ssize_t k = recv(cs->fd, cs->buf + cs->wr, room, 0);
        if (k > 0) {
            cs->wr += (size_t)k;
            got += (size_t)k;
            if ((size_t)k < room)
                break; /* the socket is drained: no recv to be told so */
            continue;
        }
        if (k == 0)
            lose(cs, "server closed the connection unexpectedly");
        else if (errno == EINTR)
            continue;
        else if (errno != EAGAIN && errno != EWOULDBLOCK)
            lose(cs, "could not receive data from server: %s", strerror(errno));
        break;
    }
    return got;
}

/* Sends what waits to go, as far as the socket takes it now.  @returns 0, or -1 (cs->err). */
static int flush(crw_copystream_t *cs) {
    while (cs->sent < cs->out.len) {
        ssize_t k = send(cs->fd, cs->out.data + cs->sent, cs->out.len - cs->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k >= 0) {
            cs->sent += (size_t)k;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0; /* the rest goes at the next send or wait */
        snprintf(cs->err, sizeof cs->err, "could not send data to server: %s", strerror(errno));
        lose(cs, "%s", cs->err);
        return -1;
    }
    crw_buf_reset(&cs->out);
    cs->sent = 0;
    return 0;
}

/*
 * The next message that is whole in the buffer: its type, its body and the
 * body's length.  @returns 1, or 0 when none is whole yet (or the stream
 * lost its footing: gone).
 */
static int take(crw_copystream_t *cs, char *type, char **body, size_t *len) {
    if (cs->broken || cs->wr - cs->rd < 5)
        return 0;
    char *m = cs->buf + cs->rd;
    uint32_t l = get32(m + 1);
    if (l < 4 || l > (m[0] == 'd' ? MAX_MSG : MAX_OTHER_MSG)) { /* a wrong length word is not grown into */
        lose(cs, "invalid message length %u (type \"%c\") in the replication stream", l, m[0]);
        cs->broken = true;
        return 0;
    }
    if (cs->wr - cs->rd < 1 + (size_t)l) {
        cs->need = 1 + (size_t)l;
        return 0;
    }
    cs->rd += 1 + (size_t)l;
    cs->need = 0;
    *type = m[0];
    *body = m + 5;
    *len = l - 4;
    return 1;
}

/* An ErrorResponse's or NoticeResponse's fields: "SEVERITY:  message" as libpq shows it, and the SQLSTATE. */
static void fields(const char *p, size_t len, char *msg, size_t n, char sqlstate[6]) {
    const char *sev = "", *text = "", *end = p + len;
    sqlstate[0] = '\0';
    while (p < end && *p) {
        char code = *p++;
        const char *z = memchr(p, '\0', (size_t)(end - p));
        if (!z)
            break;
        if (code == 'S')
            sev = p;
        else if (code == 'M')
            text = p;
        else if (code == 'C')
            snprintf(sqlstate, 6, "%s", p);
        p = z + 1;
    }
    snprintf(msg, n, "%s:  %.*s", *sev ? sev : "ERROR", (int)strcspn(text, "\n"), text);
}

static void notice(const char *body, size_t len) {
    char msg[512], state[6];
    fields(body, len, msg, sizeof msg, state);
    crw_warn("server: %s", msg);
}

/* A message other than CopyData, NoticeResponse and the asynchronous ones, in the copy. @returns -1 or -2. */
static int copy_end(crw_copystream_t *cs, char type, const char *body, size_t len) {
    crw_copystream_end_t *e = &cs->end;
    switch (type) {
    case 'c': e->copy_done = true; break;
    case 'C': /* "COPY 0": a walsender shutting down */
        snprintf(e->tag, sizeof e->tag, "%.*s", (int)strnlen(body, len), body);
        if (!e->tag[0])
            snprintf(e->tag, sizeof e->tag, "CommandComplete");
        break;
    case 'E': fields(body, len, e->message, sizeof e->message, e->sqlstate); break;
    case 'Z': break;
    default:
        lose(cs, "unexpected message type \"%c\" in the replication stream", type);
        cs->broken = true;
        return -2;
    }
    cs->ended = true;
    return -1;
}

static int direct_start(crw_copystream_t *cs, const char *command, crw_copystream_end_t *end) {
    PGconn *conn = cs->conn;
    cs->fd = PQsocket(conn);
    /* libpq sends the query; its answer, and all that follows, is read here. */
    if (!PQsendQuery(conn, command) || PQflush(conn) != 0) {
        first_line(end->message, sizeof end->message, PQerrorMessage(conn));
        end->lost = PQstatus(conn) == CONNECTION_BAD;
        return -1;
    }
    cs->buf = crw_malloc(BUF_SIZE);
    cs->cap = BUF_SIZE;
    for (;;) {
        char type, *body;
        size_t len;
        while (take(cs, &type, &body, &len)) {
            if (type == 'W')
                return 0; /* CopyBothResponse: the copy is on */
            if (type == 'N')
                notice(body, len);
            else if (type == 'E') {
                fields(body, len, end->message, sizeof end->message, end->sqlstate);
                return -1;
            } else if (type != 'S' && type != 'A') {
                lose(cs, "unexpected message type \"%c\" before the replication stream", type);
                cs->broken = true;
            }
        }
        if (cs->gone) {
            snprintf(end->message, sizeof end->message, "%s", cs->lost);
            end->lost = true;
            return -1;
        }
        struct pollfd p = {cs->fd, POLLIN, 0};
        if (poll(&p, 1, -1) < 0 && errno != EINTR) /* no timeout: PQexec would not have one either */
            lose(cs, "poll: %s", strerror(errno));
        else
            fill(cs);
    }
}

static int direct_wait(crw_copystream_t *cs, int64_t timeout_us, char *errstr, size_t n) {
    if (cs->sent < cs->out.len)
        flush(cs);
    if (cs->gone) {
        snprintf(errstr, n, "connection lost: %s", cs->lost);
        return -1;
    }
    struct pollfd p = {cs->fd, (short)(POLLIN | (cs->sent < cs->out.len ? POLLOUT : 0)), 0};
    if (timeout_us < 0)
        timeout_us = 0;
    struct timespec ts = {(time_t)(timeout_us / 1000000), (long)(timeout_us % 1000000) * 1000};
    int s = ppoll(&p, 1, &ts, NULL);
    if (s < 0) {
        if (errno == EINTR)
            return 0; /* a signal: nothing came */
        snprintf(errstr, n, "poll: %s", strerror(errno));
        return -1;
    }
    if (s == 0)
        return 0;
    if (p.revents & POLLOUT)
        flush(cs);
    if (fill(cs) == 0 && cs->gone) { /* what came before the end is read first */
        snprintf(errstr, n, "connection lost: %s", cs->lost);
        return -1;
    }
    return 1;
}

/* ---- libpq's reading (TLS, GSS encryption) ------------------------------ */

/* libpq's last error, first line, or what it means when libpq has none. */
static void conn_lost(PGconn *conn, char *errstr, size_t n) {
    const char *m = PQerrorMessage(conn);
    size_t len = strcspn(m, "\n");
    if (len)
        snprintf(errstr, n, "connection lost: %.*s", (int)len, m);
    else
        snprintf(errstr, n, "connection lost: the server closed the connection");
}

/* What res (NULL: none came) says of the end of the copy, or of a START_REPLICATION that failed. */
static void result_end(PGconn *conn, PGresult *res, crw_copystream_end_t *e) {
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    const char *m = res ? PQresultErrorMessage(res) : "";
    if (!*m && (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR))
        m = PQerrorMessage(conn); /* e.g. the connection broke while the result was read */
    first_line(e->message, sizeof e->message, m);
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(e->sqlstate, sizeof e->sqlstate, "%s", state ? state : "");
    if (st == PGRES_COMMAND_OK)
        snprintf(e->tag, sizeof e->tag, "%s", *PQcmdStatus(res) ? PQcmdStatus(res) : "CommandComplete");
    e->copy_done = st == PGRES_COPY_IN;
    e->lost = !res || PQstatus(conn) == CONNECTION_BAD;
}

static int libpq_start(crw_copystream_t *cs, const char *command, crw_copystream_end_t *end) {
    PGresult *res = PQexec(cs->conn, command);
    int rc = PQresultStatus(res) == PGRES_COPY_BOTH ? 0 : -1;
    if (rc < 0)
        result_end(cs->conn, res, end);
    PQclear(res);
    return rc;
}

static int libpq_next(crw_copystream_t *cs, char **msg, char *errstr, size_t n) {
    PQfreemem(cs->copy);
    cs->copy = NULL;
    int len = PQgetCopyData(cs->conn, &cs->copy, 1);
    if (len > 0) {
        *msg = cs->copy;
        return len;
    }
    if (len == 0)
        return 0;
    if (len == -1) {
        cs->ended = true;
        if (cs->done_sent) { /* the server's CopyDone answered ours: what follows need not be waited for */
            cs->end.copy_done = true;
            return -1;
        }
        PGresult *res = PQgetResult(cs->conn);
        result_end(cs->conn, res, &cs->end);
        PQclear(res);
        return -1;
    }
    conn_lost(cs->conn, errstr, n);
    return -2;
}

static int libpq_wait(crw_copystream_t *cs, int64_t timeout_us, char *errstr, size_t n) {
    struct pollfd p = {PQsocket(cs->conn), POLLIN, 0};
    if (timeout_us < 0)
        timeout_us = 0;
    struct timespec ts = {(time_t)(timeout_us / 1000000), (long)(timeout_us % 1000000) * 1000};
    int s = ppoll(&p, 1, &ts, NULL);
    if (s < 0 && errno != EINTR) {
        snprintf(errstr, n, "poll: %s", strerror(errno));
        return -1;
    }
    if (s > 0 && !PQconsumeInput(cs->conn)) {
        conn_lost(cs->conn, errstr, n);
        return -1;
    }
    return s > 0; /* 0: a timeout or a signal */
}

/* ---- the interface ------------------------------------------------------ */

int crw_copystream_start(crw_copystream_t *cs, PGconn *conn, const char *command, crw_copystream_end_t *end) {
    crw_copystream_reset(cs);
    *end = (crw_copystream_end_t){{0}};
    cs->conn = conn;
    cs->direct = !PQsslInUse(conn) && !PQgssEncInUse(conn);
    int rc = cs->direct ? direct_start(cs, command, end) : libpq_start(cs, command, end);
    if (rc < 0) {
        bool direct = cs->direct;
        crw_copystream_reset(cs);
        cs->direct = direct;
    }
    return rc;
}

int crw_copystream_next(crw_copystream_t *cs, char **msg, crw_copystream_end_t *end, char *errstr, size_t n) {
    int rc;
    if (!cs->conn) {
        snprintf(errstr, n, "connection lost: no COPY in progress");
        return -2;
    }
    if (cs->ended)
        rc = -1;
    else if (!cs->direct)
        rc = libpq_next(cs, msg, errstr, n);
    else {
        char type, *body;
        size_t len;
        for (rc = 0; rc == 0 && take(cs, &type, &body, &len);) {
            if (type == 'd' && len > 0) {
                *msg = body;
                return (int)len;
            }
            if (type == 'N')
                notice(body, len);
            else if (type != 'd' && type != 'S' && type != 'A') /* an empty CopyData is no message */
                rc = copy_end(cs, type, body, len);
        }
        if (rc == 0 && cs->gone)
            rc = -2;
        if (rc == -2)
            snprintf(errstr, n, "connection lost: %s", cs->lost);
    }
    if (rc == -1)
        *end = cs->end;
    return rc;
}

int crw_copystream_wait(crw_copystream_t *cs, int64_t timeout_us, char *errstr, size_t n) {
    if (!cs->conn) {
        snprintf(errstr, n, "connection lost: no COPY in progress");
        return -1;
    }
    return cs->direct ? direct_wait(cs, timeout_us, errstr, n) : libpq_wait(cs, timeout_us, errstr, n);
}

int crw_copystream_send(crw_copystream_t *cs, const char *msg, size_t len) {
    if (!cs->conn || cs->ended) {
        snprintf(cs->err, sizeof cs->err, "no COPY in progress");
        return -1;
    }
    if (!cs->direct) {
        if (PQputCopyData(cs->conn, msg, (int)len) <= 0 || PQflush(cs->conn) < 0) {
            first_line(cs->err, sizeof cs->err, PQerrorMessage(cs->conn));
            return -1;
        }
        return 0;
    }
    if (cs->gone) {
        snprintf(cs->err, sizeof cs->err, "%s", cs->lost);
        return -1;
    }
    put_header(&cs->out, 'd', (uint32_t)len + 4);
    crw_buf_put(&cs->out, msg, len);
    return flush(cs);
}

int crw_copystream_send_done(crw_copystream_t *cs) {
    if (!cs->conn) {
        snprintf(cs->err, sizeof cs->err, "no COPY in progress");
        return -1;
    }
    cs->done_sent = true;
    if (!cs->direct) {
        if (PQputCopyEnd(cs->conn, NULL) <= 0 || PQflush(cs->conn) < 0) {
            first_line(cs->err, sizeof cs->err, PQerrorMessage(cs->conn));
            return -1;
        }
        return 0;
    }
    put_header(&cs->out, 'c', 4);
    return flush(cs);
}
