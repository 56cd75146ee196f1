/*
 * copystream.h — the CopyBoth stream of a walsender's START_REPLICATION:
 * CopyData messages in, status updates and CopyDone out.
 *
 * libpq holds every CopyData message twice: whole in its input buffer
 * (which keeps its largest size for the connection's life), and in the copy
 * PQgetCopyData returns.  On a plain TCP or Unix socket the stream speaks
 * the protocol itself instead, reading into one buffer of its own that
 * holds a message in place and goes back to its usual size after an
 * outsized one: a large row costs its size once.  A connection with TLS or
 * GSS encryption keeps libpq's reading (the bytes on the socket are not the
 * protocol's).
 *
 * Messages (PostgreSQL protocol, "Message Formats"), every length a
 * big-endian int32 that counts itself:
 *   from the server  'W' CopyBothResponse, 'd' CopyData, 'c' CopyDone,
 *                    'C' CommandComplete, 'E' ErrorResponse, 'N' NoticeResponse,
 *                    'S' ParameterStatus, 'A' NotificationResponse, 'Z' ReadyForQuery
 *   to the server    'd' CopyData (a status update), 'c' CopyDone
 */
#ifndef CRW_COPYSTREAM_H
#define CRW_COPYSTREAM_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct crw_copystream crw_copystream_t;

/* Why the copy ended, or never began: what the server said last. */
typedef struct {
    char message[512]; /* an ErrorResponse's first line as libpq shows it ("ERROR:  ..."); "" none */
    char sqlstate[6];  /* its SQLSTATE; "" none */
    char tag[64];      /* a CommandComplete's tag ("COPY 0"); "" none */
    bool copy_done;    /* the server ended its side of the copy (CopyDone) */
    bool lost;         /* the connection is gone (message: libpq's or the socket's reason, when known) */
} crw_copystream_end_t;

crw_copystream_t *crw_copystream_new(void);
void crw_copystream_free(crw_copystream_t *cs);
/* Forgets the connection (closed by its owner); cs may start again. */
void crw_copystream_reset(crw_copystream_t *cs);
/* True when the stream reads the socket itself (no TLS, no GSS encryption). */
bool crw_copystream_direct(const crw_copystream_t *cs);

/*
 * Sends command (START_REPLICATION) on conn, an idle walsender connection,
 * and waits for the copy to begin.  @returns 0, or -1 with *end saying why.
 */
int crw_copystream_start(crw_copystream_t *cs, PGconn *conn, const char *command, crw_copystream_end_t *end);

/*
 * The next CopyData message that is whole in the buffer, without reading
 * the socket.  *msg points into the stream's buffer, writable, valid until
 * the next call of next or wait.
 * @returns its length (> 0); 0 none buffered; -1 the copy ended (*end says
 * how; every later call says it again); -2 the connection failed (errstr:
 * "connection lost: ...").
 */
int crw_copystream_next(crw_copystream_t *cs, char **msg, crw_copystream_end_t *end, char *errstr, size_t n);

/*
 * Waits up to timeout_us (0: no wait) for the socket, then reads what came
 * and sends what waits to go.
 * @returns 1 something came, 0 nothing came (timeout, or a signal), -1 the
 * connection failed (errstr).
 */
int crw_copystream_wait(crw_copystream_t *cs, int64_t timeout_us, char *errstr, size_t n);

/* Sends one CopyData message (a status update); what the socket does not take now goes at the next send or wait.
 * @returns 0, or -1 (crw_copystream_error says why). */
int crw_copystream_send(crw_copystream_t *cs, const char *msg, size_t len);
/* Sends CopyDone: this side of the copy ends.  @returns 0 or -1 (crw_copystream_error). */
int crw_copystream_send_done(crw_copystream_t *cs);
/* The last failure to send, one line. */
const char *crw_copystream_error(const crw_copystream_t *cs);

#endif
