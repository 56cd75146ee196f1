/*
 * replication.c — the logical replication source (source.h): the slot's
 * changes over a walsender, pgoutput decoded (decode/pgoutput.h), standby
 * status updates (pg_recvlogical.c's loop).
 *
 * Wire formats (PostgreSQL protocol, "Streaming Replication Protocol"):
 *   XLogData        'w' int64 dataStart, int64 walEnd, int64 sendTime, bytes
 *   Keepalive       'k' int64 walEnd, int64 sendTime, byte replyRequested
 *   Status update   'r' int64 write, int64 flush, int64 apply, int64 sendTime, byte replyRequested
 * All integers big-endian; times are microseconds since 2000-01-01.
 *
 * Changes reach the driver in commit order, whole transactions at a time:
 * protocol-2 streamed transactions are spooled (spool.h) and replayed at
 * their Stream Commit between a synthesized Begin and Commit, and vanish on
 * abort.  The flush position reported is what the driver confirmed, never
 * more.  Session and slot set-up are in session.c.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "core/metrics.h"
#include "decode/change.h"
#include "decode/pgoutput.h"
#include "source/copystream.h"
#include "source/session.h"
#include "source/slotguard.h"
#include "source/source.h"
#include "source/spool.h"

typedef struct {
    crw_source_t base;
    const crw_config_t *conf;
    crw_session_t ses;
    crw_copystream_t *copy;  /* the walsender's CopyBoth stream, once START_REPLICATION began it */
    crw_source_events_t ev;
    uint64_t endpos;
    crw_relcache_t *rels;
    crw_catalog_t *cat;
    crw_pgo_decoder_t *dec;
    crw_spool_t *spool;
    bool snapshot_done;      /* the snapshot callback ran (once per process) */

    bool in_stream;          /* between Stream Start and Stream Stop */
    uint32_t stream_xid;
    bool in_txn;             /* a Begin was delivered, its Commit not yet */
    bool at_end;
    bool stop_after_commit;  /* a stop was asked: the next commit is the last */
    uint64_t received;       /* highest WAL position seen */
    uint64_t confirmed;      /* what the driver confirmed: the flush position */
    int64_t last_status_us;  /* monotonic */
    int64_t txn_commit_time; /* of the transaction being delivered */
    int64_t busy_since_us;   /* holding the lock, the slot has been active for another PID since (0: not) */
    crw_guard_t guard;       /* the mark, the heartbeat, the slot's status (slotguard.h) */
} logical_t;

#define L(s) ((logical_t *)(s))

static void put64(char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = (char)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t get64(const char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | (unsigned char)p[i];
    return v;
}

static void logical_close(crw_source_t *base) {
    logical_t *r = L(base);
    crw_session_close(&r->ses);
    crw_copystream_reset(r->copy);
    crw_catalog_set_conn(r->cat, NULL);
    crw_spool_reset(r->spool);
    r->in_stream = false;
    r->in_txn = false;
    crw_guard_reset(&r->guard);
}

static void logical_destroy(crw_source_t *base) {
    logical_t *r = L(base);
    logical_close(base);
    crw_session_free(&r->ses);
    crw_copystream_free(r->copy);
    crw_catalog_destroy(r->cat);
    crw_relcache_destroy(r->rels);
    crw_pgo_decoder_destroy(r->dec);
    crw_spool_destroy(r->spool);
    free(r);
}

static const char *logical_dbname(const crw_source_t *base) {
    const logical_t *r = (const logical_t *)base;
    return r->ses.dbname ? r->ses.dbname : "";
}
static crw_catalog_t *logical_catalog(crw_source_t *base) { return L(base)->cat; }
/* What the server sends again up to position, the driver skips (stream.c's skip_position). */
static int logical_seek(crw_source_t *base, uint64_t position, char *errstr, size_t n) {
    (void)base, (void)position, (void)errstr, (void)n;
    return 0;
}
static void logical_format_position(const crw_source_t *base, uint64_t position, char *buf, size_t n) {
    (void)base;
    snprintf(buf, n, CRW_LSN_FMT, CRW_LSN_ARGS(position));
}
static bool logical_at_end(const crw_source_t *base) { return ((const logical_t *)base)->at_end; }
static bool logical_in_txn(const crw_source_t *base) { return ((const logical_t *)base)->in_txn; }
static void logical_stop_after_commit(crw_source_t *base) { L(base)->stop_after_commit = true; }

static void logical_confirm(crw_source_t *base, uint64_t position) {
    logical_t *r = L(base);
    if (position > r->confirmed) {
        r->confirmed = position;
        crw_metric_set(CRW_M_CONFIRMED_POSITION, (int64_t)position);
    }
}

/* Runs the snapshot callback once, inside the slot's exported snapshot when there is one. */
static int run_snapshot(logical_t *r, uint64_t start, char *errstr, size_t n) {
    if (!r->ev.snapshot || r->snapshot_done)
        return 0;
    PGconn *sql = r->ses.sql;
    bool in_snap = false;
    if (r->ses.snapshot) {
        char why[512];
        in_snap = crw_session_import_snapshot(sql, r->ses.snapshot, why, sizeof why) == 0;
        if (!in_snap) {
            crw_warn("could not use the slot's snapshot (%s); reading the current state", why);
            PQclear(PQexec(sql, "ROLLBACK"));
        }
    }
    crw_src_snapshot_t snap = {in_snap ? r->ses.snapshot : NULL, start, start, 0, true};
    if (!in_snap) { /* the current state is read: the changes the slot sends up to here are older than it */
        PGresult *res = PQexec(sql, "SELECT pg_current_wal_lsn()");
        if (PQresultStatus(res) == PGRES_TUPLES_OK)
            crw_lsn_parse(PQgetvalue(res, 0, 0), &snap.read_at);
        PQclear(res);
    }
    int rc = r->ev.snapshot(r->ev.opaque, r->cat, &snap);
    if (in_snap)
        PQclear(PQexec(sql, "COMMIT"));
    if (rc < 0) {
        if (rc != CRW_ERR_STOPPED && !errstr[0])
            snprintf(errstr, n, "reading the watched tables as of the slot's start failed");
        return rc;
    }
    r->snapshot_done = true;
    return 0;
}

static void append_literal(crw_buf_t *b, const char *s, char quote) {
    crw_buf_putc(b, quote);
    for (; *s; s++) {
        if (*s == quote)
            crw_buf_putc(b, quote);
        crw_buf_putc(b, *s);
    }
    crw_buf_putc(b, quote);
}

static int send_status(logical_t *r, bool reply_requested) {
    if (!r->ses.repl)
        return CRW_ERR_CONN;
    uint64_t flush = crw_guard_flush(&r->guard, r->confirmed); /* never past the mark stored */
    uint64_t write = r->received > flush ? r->received : flush;
    char msg[34];
    msg[0] = 'r';
    put64(msg + 1, write);                   /* write: received and handed to the driver */
    put64(msg + 9, flush);                   /* flush: every sink acknowledged up to here */
    put64(msg + 17, flush);                  /* apply: same as flush; nothing is applied later */
    put64(msg + 25, (uint64_t)crw_clock_pg_us()); /* sendTime */
    msg[33] = reply_requested ? 1 : 0;
    if (crw_copystream_send(r->copy, msg, sizeof msg) < 0) {
        crw_warn("could not send status update: %s", crw_copystream_error(r->copy));
        return CRW_ERR_CONN;
    }
    r->last_status_us = crw_clock_mono_us();
    crw_debug("status: write " CRW_LSN_FMT " flush " CRW_LSN_FMT, CRW_LSN_ARGS(write), CRW_LSN_ARGS(flush));
    return 0;
}

/*
 * This instance holds the slot's lock, but the slot is still active for
 * another PID: the walsender of an instance that died or lost its lock
 * session.  After a few seconds (a dying one lets go by itself), it is
 * ended, so a standby takes over in time even when the old one's server
 * connection lingers (a network cut, until wal_sender_timeout).
 */
static void take_over(logical_t *r) {
    int64_t now = crw_clock_mono_us();
    if (!r->busy_since_us)
        r->busy_since_us = now;
    if (now - r->busy_since_us < 4000000)
        return;
    const char *p[1] = {r->conf->slot_name};
    PGresult *res;
    char why[256];
    if (crw_session_query(r->ses.sql, &res, why, sizeof why,
                          "SELECT active_pid, pg_terminate_backend(active_pid) FROM pg_replication_slots "
                          "WHERE slot_name = $1 AND active_pid IS NOT NULL",
                          1, p) < 0) {
        crw_warn("slot %s: cannot end the walsender that holds it: %s", r->conf->slot_name, why);
        return;
    }
    if (PQntuples(res) == 1)
        crw_warn("slot %s: this instance holds the slot's lock, but walsender PID %s has held the slot for %lld s: "
                 "the instance before is gone; ending it (%s)",
                 r->conf->slot_name, PQgetvalue(res, 0, 0), (long long)((now - r->busy_since_us) / 1000000),
                 !strcmp(PQgetvalue(res, 0, 1), "t") ? "done" : "refused");
    PQclear(res);
    r->busy_since_us = now;
}

/* errstr and the error code of a START_REPLICATION that failed (crw_session_error's reading of it). */
static int start_failed(const crw_copystream_end_t *end, char *errstr, size_t n) {
    snprintf(errstr, n, "START_REPLICATION failed: %s", end->message);
    const char *state = end->sqlstate;
    /* 55006 object_in_use: the slot is still held by a dying predecessor. */
    if (!strcmp(state, "55006"))
        return CRW_ERR_SLOT_BUSY;
    /* The session is going (a terminated backend, a shutting-down server). */
    bool going = !strncmp(state, "08", 2) || !strncmp(state, "57P", 3);
    return going || end->lost ? CRW_ERR_CONN : CRW_ERR_PREREQ;
}

static int logical_start(crw_source_t *base, char *errstr, size_t n) {
    logical_t *r = L(base);
    crw_spool_reset(r->spool);
    crw_copystream_reset(r->copy); /* its connection, if any, is gone or going */
    r->in_stream = r->in_txn = false;
    /* The slot's advisory lock first: a standby touches nothing (docs/operations.md, "High availability"). */
    int rc = crw_session_lock_slot(&r->ses, errstr, n);
    if (rc < 0) {
        if (rc != CRW_ERR_STANDBY)
            logical_close(base);
        return rc;
    }
    if ((rc = crw_session_open_sql(&r->ses, errstr, n)) < 0 || (rc = crw_session_open_repl(&r->ses, errstr, n)) < 0) {
        logical_close(base);
        return rc;
    }
    crw_catalog_set_conn(r->cat, r->ses.sql);

    uint64_t start = 0;
    bool missing = false;
    if ((rc = crw_session_check_prereqs(&r->ses, errstr, n)) < 0 ||
        (rc = crw_session_check_slot(&r->ses, &start, &missing, errstr, n)) < 0 ||
        (rc = crw_guard_start(&r->guard, &r->ses, start, missing, errstr, n)) < 0 ||
        (rc = crw_session_ensure_publication(&r->ses, errstr, n)) < 0 ||
        (missing &&
         (rc = crw_session_create_slot(&r->ses, r->ev.snapshot && !r->snapshot_done, &start, errstr, n)) < 0))
        goto fail;
    /* What the slot has confirmed is confirmed: nothing before it comes again. */
    logical_confirm(base, start);
    if (r->ev.tick)
        r->ev.tick(r->ev.opaque, start);
    rc = run_snapshot(r, start, errstr, n);
    free(r->ses.snapshot);
    r->ses.snapshot = NULL;
    if (rc < 0)
        goto fail;

    crw_buf_t cmd = CRW_BUF_INIT;
    char *slotq = crw_session_quote_ident(r->ses.repl, r->conf->slot_name);
    crw_buf_t pubs = CRW_BUF_INIT;
    append_literal(&pubs, r->conf->publication_name, '"');
    crw_buf_printf(&cmd, "START_REPLICATION SLOT %s LOGICAL 0/0 (", slotq);
    free(slotq);
    /* Protocol 2 with streaming where the server has it (PostgreSQL 14+). */
    if (r->ses.server_version >= 140000)
        crw_buf_puts(&cmd, "proto_version '2', streaming 'on', messages 'true', ");
    else
        crw_buf_puts(&cmd, "proto_version '1', ");
    crw_buf_puts(&cmd, "publication_names ");
    append_literal(&cmd, pubs.data, '\'');
    crw_buf_putc(&cmd, ')');
    crw_buf_free(&pubs);
    crw_debug("%s", cmd.data);
    crw_copystream_end_t end;
    rc = crw_copystream_start(r->copy, r->ses.repl, cmd.data, &end);
    crw_buf_free(&cmd);
    if (rc < 0) {
        rc = start_failed(&end, errstr, n);
        goto fail;
    }
    r->at_end = false;
    r->last_status_us = 0;
    r->busy_since_us = 0;
    crw_guard_reset(&r->guard);
    crw_info("streaming from slot %s (database %s, protocol %d, confirmed " CRW_LSN_FMT ")", r->conf->slot_name,
             r->ses.dbname, r->ses.server_version >= 140000 ? 2 : 1, CRW_LSN_ARGS(start));
    return 0;
fail:
    if ((rc == CRW_ERR_SLOT_BUSY || rc == CRW_ERR_SLOT_LOST) && r->ses.locked) {
        /* The lock is kept: this instance is next (busy), or it closes the gap (slot.lost=resync) alone. */
        if (rc == CRW_ERR_SLOT_BUSY)
            take_over(r);
        PQfinish(r->ses.repl);
        r->ses.repl = NULL;
        crw_copystream_reset(r->copy);
        return rc;
    }
    logical_close(base);
    return rc;
}

/* The relation a change names: it must have been described first. */
static const crw_relation_t *relation(logical_t *r, uint32_t relid, char *errstr, size_t n) {
    const crw_relation_t *rel = crw_relcache_get(r->rels, relid);
    if (!rel)
        snprintf(errstr, n, "change for relation %u before its Relation message", relid);
    return rel;
}

/* Hands one decoded message to the driver, tracking transaction boundaries and endpos. */
static int deliver(logical_t *r, const crw_pgo_msg_t *m, char *errstr, size_t n) {
    const crw_source_events_t *ev = &r->ev;
    int rc = 0;
    switch (m->type) {
    case CRW_PGO_BEGIN: {
        if (r->endpos && m->u.begin.final_lsn > r->endpos) {
            r->at_end = true;
            return 0;
        }
        r->in_txn = true;
        r->txn_commit_time = m->u.begin.commit_time;
        crw_src_txn_t t = {m->u.begin.final_lsn, m->u.begin.final_lsn, m->u.begin.xid, m->u.begin.commit_time};
        return ev->begin(ev->opaque, &t);
    }
    case CRW_PGO_COMMIT:
        if (r->in_txn) {
            rc = ev->commit(ev->opaque, m->u.commit.end_lsn);
            int64_t lag = crw_clock_pg_us() - r->txn_commit_time; /* the heartbeat's too, when idle */
            crw_metric_set(CRW_M_SOURCE_LAG_US, lag > 0 ? lag : 0);
        }
        r->in_txn = false;
        crw_guard_activity(&r->guard);
        /* Like pg_recvlogical: the commit that reaches endpos is the last. */
        if ((r->endpos && m->u.commit.end_lsn >= r->endpos) || r->stop_after_commit)
            r->at_end = true;
        return rc;
    case CRW_PGO_RELATION:
        crw_relcache_update(r->rels, &m->u.relation);
        return 0;
    case CRW_PGO_TYPE:
        if (ev->invalidate)
            ev->invalidate(ev->opaque, m->u.type.typoid);
        return 0;
    case CRW_PGO_INSERT:
    case CRW_PGO_UPDATE:
    case CRW_PGO_DELETE: {
        uint32_t relid = m->type == CRW_PGO_INSERT   ? m->u.insert.relid
                         : m->type == CRW_PGO_UPDATE ? m->u.update.relid
                                                     : m->u.del.relid;
        const crw_relation_t *rel = relation(r, relid, errstr, n);
        if (!rel)
            return CRW_ERR_PROTOCOL;
        crw_change_t ch;
        crw_change_from_msg(&ch, rel, m);
        ch.values_once = true; /* the message is in the stream's (or the spool's) buffer, rewritten by the next */
        return ev->change(ev->opaque, &ch);
    }
    case CRW_PGO_TRUNCATE:
        for (uint32_t i = 0; i < m->u.truncate.nrels; i++) {
            const crw_relation_t *rel = relation(r, m->u.truncate.relids[i], errstr, n);
            if (!rel)
                return CRW_ERR_PROTOCOL;
            crw_change_t ch = {.op = CRW_OP_TRUNCATE, .rel = rel, .lsn = m->lsn};
            if ((rc = ev->change(ev->opaque, &ch)) < 0)
                return rc;
        }
        return 0;
    case CRW_PGO_MESSAGE:
        if (!strcmp(m->u.message.prefix, CRW_HEARTBEAT_PREFIX)) {
            crw_guard_heartbeat_back(&r->guard, m->u.message.content, m->u.message.len, r->txn_commit_time);
            return 0;
        }
        if (ev->message && !strncmp(m->u.message.prefix, "crwatch", 7))
            return ev->message(ev->opaque, m->u.message.prefix, m->u.message.content, m->u.message.len);
        return 0;
    default:
        return 0; /* Origin: nothing to hand on */
    }
}

typedef struct {
    logical_t *r;
    char *errstr;
    size_t n;
} replay_ctx_t;

/* Spool records are the message's 8-byte WAL position, then the message. */
static int replay_one(void *opaque, const char *buf, size_t len) {
    replay_ctx_t *ctx = opaque;
    if (len < 8)
        return CRW_ERR_IO;
    crw_pgo_msg_t m;
    int rc = crw_pgo_decode(ctx->r->dec, buf + 8, len - 8, true, &m, ctx->errstr, ctx->n);
    if (rc < 0)
        return rc;
    m.lsn = get64(buf);
    return deliver(ctx->r, &m, ctx->errstr, ctx->n);
}

/* One pgoutput message from an XLogData frame. */
/* rc of a spool call; a failure's reason goes to errstr (the stream's stop line names it). */
static int spooled(logical_t *r, int rc, char *errstr, size_t n) {
    if (rc < 0)
        snprintf(errstr, n, "%s", crw_spool_error(r->spool));
    return rc;
}

static int handle_message(logical_t *r, const char *buf, size_t len, uint64_t lsn, char *errstr, size_t n) {
    if (r->at_end)
        return 0; /* past endpos: read (and keep answering) but hand nothing on */
    crw_pgo_msg_t m;
    int rc = crw_pgo_decode(r->dec, buf, len, r->in_stream, &m, errstr, n);
    if (rc < 0)
        return rc;
    m.lsn = lsn;
    switch (m.type) {
    case CRW_PGO_STREAM_START:
        r->in_stream = true;
        r->stream_xid = m.u.stream_start.xid;
        return 0;
    case CRW_PGO_STREAM_STOP:
        r->in_stream = false;
        return 0;
    case CRW_PGO_STREAM_ABORT:
        return spooled(r, crw_spool_abort(r->spool, m.u.stream_abort.xid, m.u.stream_abort.subxid), errstr, n);
    case CRW_PGO_STREAM_COMMIT: {
        if (r->endpos && m.u.stream_commit.commit_lsn > r->endpos) {
            r->at_end = true;
            return spooled(r, crw_spool_abort(r->spool, m.u.stream_commit.xid, m.u.stream_commit.xid), errstr, n);
        }
        crw_pgo_msg_t b = {.type = CRW_PGO_BEGIN};
        b.u.begin.final_lsn = m.u.stream_commit.commit_lsn;
        b.u.begin.commit_time = m.u.stream_commit.commit_time;
        b.u.begin.xid = m.u.stream_commit.xid;
        crw_pgo_msg_t c = {.type = CRW_PGO_COMMIT};
        c.u.commit.commit_lsn = m.u.stream_commit.commit_lsn;
        c.u.commit.end_lsn = m.u.stream_commit.end_lsn;
        c.u.commit.commit_time = m.u.stream_commit.commit_time;
        uint32_t xid = m.u.stream_commit.xid;
        if ((rc = deliver(r, &b, errstr, n)) < 0)
            return rc;
        replay_ctx_t ctx = {r, errstr, n};
        if ((rc = crw_spool_replay(r->spool, xid, replay_one, &ctx)) < 0)
            return rc == CRW_ERR_IO && !*errstr ? spooled(r, rc, errstr, n) : rc;
        return deliver(r, &c, errstr, n);
    }
    default:
        break;
    }
    if (r->in_stream) {
        /* buf sits 25 bytes into the XLogData frame: the 8 bytes before it are
         * sendTime, free to overwrite with the LSN so one write holds both. */
        put64((char *)buf - 8, lsn);
        return spooled(r, crw_spool_append(r->spool, r->stream_xid, m.xid ? m.xid : r->stream_xid, buf - 8, len + 8),
                       errstr, n);
    }
    return deliver(r, &m, errstr, n);
}

static void logical_keepalive(crw_source_t *base) {
    logical_t *r = L(base);
    if (r->ses.repl && crw_clock_mono_us() - r->last_status_us >= (int64_t)r->conf->status_interval_ms * 1000)
        send_status(r, false);
}

static int logical_finish(crw_source_t *base, int timeout_ms) {
    logical_t *r = L(base);
    if (!r->ses.repl)
        return CRW_ERR_CONN;
    crw_guard_save(&r->guard, &r->ses, r->confirmed); /* the final flush goes no further than the mark */
    int rc = send_status(r, false);
    if (rc == 0 && crw_copystream_send_done(r->copy) < 0)
        rc = CRW_ERR_CONN;
    /* The server answers CopyDone after every message before it, our status
     * update included, was processed; data still in flight is dropped. */
    int64_t deadline = crw_clock_mono_us() + (int64_t)timeout_ms * 1000;
    while (rc == 0) {
        char *buf, why[256];
        crw_copystream_end_t end;
        int len = crw_copystream_next(r->copy, &buf, &end, why, sizeof why);
        if (len == -1)
            break; /* COPY ended */
        if (len < -1) {
            rc = CRW_ERR_CONN;
            break;
        }
        if (len > 0)
            continue;
        int64_t left = deadline - crw_clock_mono_us();
        if (left <= 0) {
            crw_warn("server did not end the replication stream within %d ms", timeout_ms);
            rc = CRW_ERR_CONN;
            break;
        }
        if (crw_copystream_wait(r->copy, left, why, sizeof why) < 0)
            rc = CRW_ERR_CONN;
    }
    logical_close(base);
    return rc;
}

/*
 * Why the server ended the stream, for errstr.  An error has its message;
 * but a walsender also ends the stream without one: at a shutdown (pg_ctl
 * stop or restart) it sends CommandComplete "COPY 0" and exits, and a
 * CopyDone ends its side of the copy.  Those are named, so the reason is
 * never empty.
 */
static void stream_end_reason(const crw_copystream_end_t *end, char *buf, size_t n) {
    if (end->message[0])
        snprintf(buf, n, "%s", end->message);
    else if (end->lost)
        snprintf(buf, n, "the server closed the connection");
    else if (end->tag[0])
        snprintf(buf, n, "the server ended it (\"%s\"): it is shutting down or restarting", end->tag);
    else if (end->copy_done)
        snprintf(buf, n, "the server ended its side of the copy (CopyDone)");
    else
        snprintf(buf, n, "the server ended it");
}

/* The copy ended (crw_copystream_next said -1): errstr says why, and the error code. */
static int stream_ended(const crw_copystream_end_t *end, char *errstr, size_t n) {
    char why[600];
    stream_end_reason(end, why, sizeof why);
    snprintf(errstr, n, "replication stream ended: %s", why);
    /* Class 42 (undefined object, ...) will fail the same way again: the
     * usual one is a slot created before its publication existed. */
    if (strncmp(end->sqlstate, "42", 2))
        return CRW_ERR_CONN;
    if (strstr(end->message, "publication"))
        snprintf(errstr + strlen(errstr), n - strlen(errstr),
                 " (the slot's position predates the publication: drop the slot, or create the "
                 "publication before the slot)");
    return CRW_ERR_PREREQ;
}

static int logical_poll(crw_source_t *base, int timeout_ms, char *errstr, size_t n) {
    logical_t *r = L(base);
    if (!r->ses.repl)
        return CRW_ERR_CONN;
    int64_t interval = (int64_t)r->conf->status_interval_ms * 1000;
    int rc0 = crw_guard_tick(&r->guard, &r->ses, r->confirmed, errstr, n);
    if (rc0 < 0)
        return rc0;
    if (r->guard.flush_moved) { /* what was just stored may be confirmed to the slot now */
        r->guard.flush_moved = false;
        if (send_status(r, false) < 0)
            return CRW_ERR_CONN;
    }
    for (int batch = 0;; batch++) {
        /* Return now and then while data keeps coming, so the caller sees
         * signals and sinks, and feedback goes out on time. */
        if (batch == 4096) {
            if (crw_clock_mono_us() - r->last_status_us >= interval && send_status(r, false) < 0)
                return CRW_ERR_CONN;
            return 0;
        }
        char *buf;
        crw_copystream_end_t end;
        int len = crw_copystream_next(r->copy, &buf, &end, errstr, n);
        if (len == 0) {
            /* Nothing buffered: send feedback if due, then wait for the socket. */
            if (crw_clock_mono_us() - r->last_status_us >= interval && send_status(r, false) < 0)
                return CRW_ERR_CONN;
            if (timeout_ms <= 0)
                return 0;
            int64_t until_status = interval - (crw_clock_mono_us() - r->last_status_us);
            int64_t wait_us = (int64_t)timeout_ms * 1000;
            if (until_status < wait_us)
                wait_us = until_status > 0 ? until_status : 0;
            int s = crw_copystream_wait(r->copy, wait_us, errstr, n);
            if (s < 0)
                return CRW_ERR_CONN;
            if (s == 0) { /* nothing came while waiting: is the stream stalled? */
                bool ask = false;
                int rc = crw_guard_silence(&r->guard, &ask, errstr, n);
                if (rc < 0)
                    return rc;
                if (ask && send_status(r, true) < 0)
                    return CRW_ERR_CONN;
            }
            return 0; /* let the caller look at signals, sinks and endpos */
        }
        if (len == -1)
            return stream_ended(&end, errstr, n);
        if (len < 0)
            return CRW_ERR_CONN;
        int rc = 0;
        crw_guard_frame(&r->guard);
        if (buf[0] == 'k' && len >= 18) {
            uint64_t wal_end = get64(buf + 1);
            bool reply = buf[17] != 0;
            if (wal_end > r->received) {
                r->received = wal_end;
                crw_metric_set(CRW_M_SOURCE_POSITION, (int64_t)wal_end);
            }
            /* Everything up to wal_end was sent before this keepalive: with
             * nothing open, the driver may let the slot follow it (when
             * nothing is unacknowledged either: the pipeline decides). */
            if (!r->in_txn && !r->in_stream) {
                if (r->ev.tick)
                    r->ev.tick(r->ev.opaque, r->endpos && wal_end > r->endpos ? r->endpos : wal_end);
                if (r->endpos && wal_end >= r->endpos)
                    r->at_end = true;
            }
            if (reply)
                rc = send_status(r, false);
        } else if (buf[0] == 'w' && len >= 25) {
            uint64_t start = get64(buf + 1);
            if (start > r->received) {
                r->received = start;
                crw_metric_set(CRW_M_SOURCE_POSITION, (int64_t)start);
            }
            rc = handle_message(r, buf + 25, (size_t)len - 25, start, errstr, n);
        } else {
            snprintf(errstr, n, "unexpected replication frame '%c' of %d bytes", buf[0], len);
            rc = CRW_ERR_PROTOCOL;
        }
        if (rc < 0)
            return rc;
        if (r->at_end)
            return 0;
    }
}

static const crw_source_ops_t logical_ops = {
    .name = "logical",
    .start = logical_start,
    .poll = logical_poll,
    .confirm = logical_confirm,
    .keepalive = logical_keepalive,
    .stop_after_commit = logical_stop_after_commit,
    .at_end = logical_at_end,
    .in_txn = logical_in_txn,
    .finish = logical_finish,
    .close = logical_close,
    .dbname = logical_dbname,
    .catalog = logical_catalog,
    .seek = logical_seek,
    .format_position = logical_format_position,
    .destroy = logical_destroy,
};

CRW_SOURCE_CONSTRUCTOR(crw_source_logical_new) {
    (void)err;
    (void)errstr;
    (void)errstr_size;
    logical_t *r = crw_calloc(1, sizeof *r);
    r->base.ops = &logical_ops;
    r->conf = conf;
    crw_session_init(&r->ses, conf, opts->conninfo);
    r->ev = *ev;
    r->endpos = opts->endpos;
    r->rels = crw_relcache_new();
    r->cat = crw_catalog_new(r->rels);
    r->dec = crw_pgo_decoder_new();
    r->spool = crw_spool_new(conf->spool_dir);
    r->copy = crw_copystream_new();
    crw_guard_init(&r->guard, conf);
    return &r->base;
}
