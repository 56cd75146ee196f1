/*
 * stdout.c — the stdout sink: one event JSON per line, nothing else.
 *
 * Events collect in a buffer written with write(2) when it passes 256 KiB
 * and at every transaction end.  An event of 256 KiB or more goes out from
 * the mapper's bytes, right after what is buffered: a copy here would
 * double the memory a large value takes.  The transaction counts as
 * acknowledged only once every byte of it was written (a synchronous sink:
 * it holds nothing in the pipeline, and the driver closes the transaction
 * after commit()).
 * A write error (EPIPE: the reader went away) fails the sink.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "sink/sink.h"

#define FLUSH_AT (256 * 1024)

typedef struct {
    crw_sink_t base;
    int fd;
    crw_buf_t buf;
} stdout_sink_t;

/* Writes every byte of iov[0..n) across short writes (iov is consumed). */
static int write_all(int fd, struct iovec *iov, int n) {
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            crw_error("stdout: write failed: %s", strerror(errno));
            return CRW_ERR_IO;
        }
        size_t left = (size_t)w;
        while (n > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

static int flush_out(stdout_sink_t *s) {
    struct iovec iov = {s->buf.data, s->buf.len};
    int rc = write_all(s->fd, &iov, s->buf.len ? 1 : 0);
    if (rc == 0)
        crw_buf_reset(&s->buf);
    return rc;
}

static int stdout_emit(crw_sink_t *base, const crw_event_t *ev) {
    stdout_sink_t *s = (stdout_sink_t *)base;
    if (ev->value && ev->len >= FLUSH_AT) {
        int rc = flush_out(s);
        if (rc < 0)
            return rc;
        static char nl[] = "\n";
        struct iovec iov[2] = {{(void *)ev->value, ev->len}, {nl, 1}};
        return write_all(s->fd, iov, 2);
    }
    /* A tombstone (Debezium, after a delete) has no value: stdout shows it as a null line. */
    if (ev->value)
        crw_buf_put(&s->buf, ev->value, ev->len);
    else
        crw_buf_put(&s->buf, "null", 4);
    crw_buf_putc(&s->buf, '\n');
    return s->buf.len >= FLUSH_AT ? flush_out(s) : 0;
}

static int stdout_commit(crw_sink_t *base, uint64_t txn) {
    (void)txn;
    return flush_out((stdout_sink_t *)base);
}

static void stdout_destroy(crw_sink_t *base) {
    stdout_sink_t *s = (stdout_sink_t *)base;
    crw_buf_free(&s->buf);
    free(s);
}

static const crw_sink_ops_t stdout_ops = {
    .name = "stdout",
    .emit = stdout_emit,
    .commit = stdout_commit,
    .poll = NULL,
    .destroy = stdout_destroy,
};

CRW_SINK_CONSTRUCTOR(crw_sink_stdout_new) {
    (void)err;
    (void)errstr;
    (void)errstr_size;
    stdout_sink_t *s = crw_calloc(1, sizeof *s);
    s->base.ops = &stdout_ops;
    s->base.env = env;
    s->fd = STDOUT_FILENO;
    crw_buf_grow(&s->buf, FLUSH_AT + 4096);
    return &s->base;
}
