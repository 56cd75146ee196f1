/*
 * deadletter.c — the dead-letter file.
 */
#include "core/deadletter.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"

struct crw_deadletter {
    char *path;
    int fd;
    uint64_t count;
    crw_buf_t line;
};

crw_deadletter_t *crw_deadletter_new(const char *path) {
    crw_deadletter_t *dl = crw_calloc(1, sizeof *dl);
    dl->path = crw_strdup(path);
    dl->fd = -1;
    return dl;
}

void crw_deadletter_destroy(crw_deadletter_t *dl) {
    if (!dl)
        return;
    if (dl->fd >= 0)
        close(dl->fd);
    crw_buf_free(&dl->line);
    free(dl->path);
    free(dl);
}

static void put_field(crw_buf_t *b, const char *name, const char *value) {
    if (!value)
        return;
    crw_buf_printf(b, ",\"%s\":", name);
    crw_buf_put_json_str(b, value, strlen(value));
}

int crw_deadletter_write(crw_deadletter_t *dl, const crw_deadletter_rec_t *rec) {
    if (dl->fd < 0) {
        /* Records hold row data: readable by crwatch's own user only, whatever the umask. */
        dl->fd = open(dl->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (dl->fd < 0) {
            crw_error("dead-letter file %s: %s", dl->path, strerror(errno));
            return CRW_ERR_IO;
        }
        char abs[PATH_MAX];
        crw_warn("dead-letter records go to %s", realpath(dl->path, abs) ? abs : dl->path);
    }
    char ts[64];
    crw_clock_format_iso(ts, sizeof ts, crw_clock_wall_us());

    crw_buf_t *b = &dl->line;
    crw_buf_reset(b);
    crw_buf_puts(b, "{\"time\":\"");
    crw_buf_puts(b, ts);
    crw_buf_putc(b, '"');
    put_field(b, "reason", rec->reason ? rec->reason : "unknown");
    put_field(b, "source", rec->source);
    put_field(b, "pglsn", rec->pglsn);
    crw_buf_printf(b, ",\"pgxid\":%u,\"ordinal\":%u", rec->xid, rec->ordinal);
    if (rec->payload) {
        crw_buf_puts(b, ",\"payload\":");
        crw_buf_put(b, rec->payload, rec->payload_len);
    }
    crw_buf_puts(b, "}\n");
    /* A record that cannot be written whole is taken back, so the file never holds half a line (a full disk). */
    off_t start = lseek(dl->fd, 0, SEEK_END);
    size_t off = 0;
    while (off < b->len) {
        ssize_t w = write(dl->fd, b->data + off, b->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            crw_error("dead-letter file %s: %s", dl->path, strerror(errno));
            if (start >= 0 && ftruncate(dl->fd, start) != 0)
                crw_error("dead-letter file %s: a partial record is left at its end: %s", dl->path, strerror(errno));
            return CRW_ERR_IO;
        }
        off += (size_t)w;
    }
    if (fsync(dl->fd) != 0) {
        crw_error("dead-letter file %s: fsync: %s", dl->path, strerror(errno));
        return CRW_ERR_IO;
    }
    dl->count++;
    crw_metric_add(CRW_M_DEADLETTER, 1); /* counted once it is there */
    return 0;
}

uint64_t crw_deadletter_count(const crw_deadletter_t *dl) { return dl->count; }
