/*
 * backfill.c — `crwatch backfill` (see backfill.h): the snapshot source
 * behind the stream driver, and its progress display.
 *
 * On a terminal, one bar per table, redrawn five times a second; otherwise a
 * plain line every PLAIN_EVERY_MS.  Either way a summary line at the end.
 */
#include "app/backfill.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "app/stream.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "source/snapshot.h"

#define TTY_EVERY_MS 200
#define PLAIN_EVERY_MS 5000
#define BAR_WIDTH 24

typedef struct {
    const crw_backfill_opts_t *opts;
    crw_snapshot_opts_t so;
    bool tty;
    int drawn;          /* lines of the last drawing (a terminal) */
    int64_t started_ms, last_ms;
    /* at the end */
    int64_t rows;
    int ntables, ndone;
    bool finished_before, ended;
} backfill_t;

static crw_source_t *open_snapshot(void *arg, const crw_config_t *conf, const crw_source_opts_t *opts,
                                   const crw_source_events_t *ev, int *err, char *errstr, size_t n) {
    backfill_t *b = arg;
    return crw_source_snapshot_new(conf, opts, &b->so, ev, err, errstr, n);
}

/* "1m05s", "12s", "?" */
static void fmt_secs(char *out, size_t n, double secs) {
    if (secs < 0 || secs > 1e7)
        snprintf(out, n, "?");
    else if (secs >= 60)
        snprintf(out, n, "%dm%02ds", (int)secs / 60, (int)secs % 60);
    else
        snprintf(out, n, "%ds", (int)(secs + 0.5));
}

static void table_line(char *out, size_t n, const crw_snapshot_table_t *t, double secs, bool bar) {
    double rate = secs > 0 ? (double)t->rows / secs : 0;
    int64_t est = t->estimate > t->rows ? t->estimate : t->rows;
    double frac = t->done ? 1.0 : est > 0 ? (double)t->rows / (double)est : 0;
    char eta[16];
    fmt_secs(eta, sizeof eta, t->done ? 0 : secs >= 1 && rate > 0 && est > t->rows ? (double)(est - t->rows) / rate : -1);
    char name[200];
    snprintf(name, sizeof name, "%s.%s", t->schema, t->table);
    if (bar) {
        char b[BAR_WIDTH + 1];
        int full = (int)(frac * BAR_WIDTH + 0.5);
        for (int i = 0; i < BAR_WIDTH; i++)
            b[i] = i < full ? '#' : '.';
        b[BAR_WIDTH] = '\0';
        snprintf(out, n, "%-28s [%s] %3d%% %" PRId64 "/%" PRId64 " rows  %.0f rows/s  %s %s", name, b,
                 (int)(frac * 100), t->rows, est, rate, t->done ? "done" : "ETA", t->done ? "" : eta);
    } else
        snprintf(out, n, "backfill: %s %" PRId64 "/%" PRId64 " rows (%d%%), %.0f rows/s, %s%s", name, t->rows, est,
                 (int)(frac * 100), rate, t->done ? "done" : "ETA ", t->done ? "" : eta);
}

static void progress(void *arg, crw_source_t *src) {
    backfill_t *b = arg;
    int64_t now = crw_clock_mono_ms();
    if (now - b->last_ms < (b->tty ? TTY_EVERY_MS : PLAIN_EVERY_MS))
        return;
    b->last_ms = now;
    const crw_snapshot_table_t *t;
    int nt = crw_snapshot_tables(src, &t);
    double secs = (double)(now - b->started_ms) / 1000.0;
    char line[512];
    if (b->tty) {
        if (b->drawn)
            fprintf(stderr, "\033[%dA", b->drawn);
        for (int i = 0; i < nt; i++) {
            table_line(line, sizeof line, &t[i], secs, true);
            fprintf(stderr, "\r\033[2K%s\n", line);
        }
        b->drawn = nt;
    } else {
        for (int i = 0; i < nt; i++)
            if (!t[i].done && t[i].rows > 0) {
                table_line(line, sizeof line, &t[i], secs, false);
                fprintf(stderr, "%s\n", line);
            }
    }
    fflush(stderr);
}

/* The last drawing, and what the summary says. */
static void finished(void *arg, crw_source_t *src) {
    backfill_t *b = arg;
    b->last_ms = 0;
    progress(b, src);
    const crw_snapshot_table_t *t = NULL;
    b->ntables = crw_snapshot_tables(src, &t);
    for (int i = 0; i < b->ntables; i++) {
        b->rows += t[i].rows;
        b->ndone += t[i].done;
    }
    b->finished_before = crw_snapshot_finished_before(src);
    b->ended = true;
}

int crw_backfill_run(const crw_config_t *conf, const crw_backfill_opts_t *opts, char *errstr, size_t n) {
    backfill_t b = {0};
    b.opts = opts;
    char state[512];
    if (*conf->snapshot_state_file)
        snprintf(state, sizeof state, "%s", conf->snapshot_state_file);
    else
        snprintf(state, sizeof state, "crwatch-backfill.%s.state", conf->slot_name);
    b.so = (crw_snapshot_opts_t){NULL, 0, state, opts->resume, opts->tables, 0};
    b.tty = isatty(STDERR_FILENO);
    b.started_ms = b.last_ms = crw_clock_mono_ms();
    /* A backfill's exactly-once checkpoint is its own: it must neither fence nor overwrite the stream's. */
    char ckpt[128];
    snprintf(ckpt, sizeof ckpt, "%s.backfill", conf->slot_name);
    crw_stream_opts_t so = {.conninfo = opts->conninfo,
                            .stop = opts->stop,
                            .source_new = open_snapshot,
                            .progress = progress,
                            .finished = finished,
                            .arg = &b,
                            .checkpoint_id = ckpt};
    int rc = crw_stream_run(conf, &so, errstr, n);
    if (rc == 0 && b.ended) {
        double secs = (double)(crw_clock_mono_ms() - b.started_ms) / 1000.0;
        const char *s = b.ntables == 1 ? "" : "s";
        if (b.finished_before)
            crw_info("backfill: finished already (%s says so); nothing to do", state);
        else if (b.ndone < b.ntables)
            crw_info("backfill stopped: %" PRId64 " rows of %d table%s in %.1f s, %d done; continue with --resume",
                     b.rows, b.ntables, s, secs, b.ndone);
        else
            crw_info("backfill done: %" PRId64 " rows of %d table%s in %.1f s (%.0f rows/s)", b.rows, b.ntables, s,
                     secs, secs > 0 ? (double)b.rows / secs : 0.0);
    }
    return rc;
}
