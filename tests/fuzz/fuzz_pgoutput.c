/*
 * fuzz_pgoutput.c — the pgoutput decoder (src/decode/pgoutput.c) and the
 * relation cache (relcache.c) over a replication stream, as the logical
 * source (src/source/replication.c) drives them.
 *
 * Input: CopyData frames, each a 4-byte big-endian length and that many
 * bytes (the last one may be short):
 *   'w' int64 dataStart, int64 walEnd, int64 sendTime, pgoutput message   (XLogData)
 *   'k' int64 walEnd, int64 sendTime, byte replyRequested                 (keepalive)
 * One decoder and one relation cache live for the whole input, so
 * Relation messages, then the rows that need them, then streamed
 * transactions (Stream Start ... Stop, spooled in memory here, replayed at
 * Stream Commit, dropped at Stream Abort) are exercised as sequences.  A
 * frame the source would refuse ends the "connection": the spool and the
 * stream state go, the relation cache stays, as at a reconnect.
 *
 * Invariants, beyond ASan/UBSan: a decode fails only with CRW_ERR_PROTOCOL
 * and an errstr naming an offset; a decoded message points only into its
 * own bytes and encodes back (proto.c's layout) to exactly those bytes; a
 * spooled message decodes again at replay; the cache holds what the last
 * Relation message said.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "decode/change.h"
#include "decode/pgoutput.h"
#include "decode/relcache.h"
#include "fuzz_common.h"

/* ---- the encoder the decoder is checked against (proto.c's logicalrep_write_*) ------------- */

static void put8(crw_buf_t *b, uint8_t v) { crw_buf_putc(b, (char)v); }
static void put16(crw_buf_t *b, uint16_t v) {
    put8(b, (uint8_t)(v >> 8));
    put8(b, (uint8_t)v);
}
static void put32(crw_buf_t *b, uint32_t v) {
    put16(b, (uint16_t)(v >> 16));
    put16(b, (uint16_t)v);
}
static void put64(crw_buf_t *b, uint64_t v) {
    put32(b, (uint32_t)(v >> 32));
    put32(b, (uint32_t)v);
}
static void putstr(crw_buf_t *b, const char *s) { crw_buf_put(b, s, strlen(s) + 1); }

static void put_tuple(crw_buf_t *b, const crw_pgo_tuple_t *t) {
    put16(b, t->ncols);
    for (uint16_t i = 0; i < t->ncols; i++) {
        const crw_pgo_col_t *c = &t->cols[i];
        put8(b, (uint8_t)c->kind);
        if (c->kind == CRW_PGO_COL_TEXT || c->kind == CRW_PGO_COL_BINARY) {
            put32(b, c->len);
            crw_buf_put(b, c->data, c->len);
        }
    }
}

static void encode(crw_buf_t *b, const crw_pgo_msg_t *m, bool streamed) {
    put8(b, (uint8_t)m->type);
    bool prefixed = streamed && strchr("RYIUDTM", m->type);
    if (prefixed)
        put32(b, m->xid);
    switch (m->type) {
    case CRW_PGO_BEGIN:
        put64(b, m->u.begin.final_lsn);
        put64(b, (uint64_t)m->u.begin.commit_time);
        put32(b, m->u.begin.xid);
        break;
    case CRW_PGO_COMMIT:
        put8(b, m->u.commit.flags);
        put64(b, m->u.commit.commit_lsn);
        put64(b, m->u.commit.end_lsn);
        put64(b, (uint64_t)m->u.commit.commit_time);
        break;
    case CRW_PGO_ORIGIN:
        put64(b, m->u.origin.lsn);
        putstr(b, m->u.origin.name);
        break;
    case CRW_PGO_RELATION: {
        const crw_pgo_relation_t *r = &m->u.relation;
        put32(b, r->relid);
        putstr(b, r->nspname);
        putstr(b, r->relname);
        put8(b, (uint8_t)r->replident);
        put16(b, r->natts);
        for (uint16_t i = 0; i < r->natts; i++) {
            put8(b, r->atts[i].flags);
            putstr(b, r->atts[i].name);
            put32(b, r->atts[i].typoid);
            put32(b, (uint32_t)r->atts[i].typmod);
        }
        break;
    }
    case CRW_PGO_TYPE:
        put32(b, m->u.type.typoid);
        putstr(b, m->u.type.nspname);
        putstr(b, m->u.type.typname);
        break;
    case CRW_PGO_INSERT:
        put32(b, m->u.insert.relid);
        put8(b, 'N');
        put_tuple(b, &m->u.insert.newtup);
        break;
    case CRW_PGO_UPDATE:
        put32(b, m->u.update.relid);
        if (m->u.update.oldkind) {
            put8(b, (uint8_t)m->u.update.oldkind);
            put_tuple(b, &m->u.update.oldtup);
        }
        put8(b, 'N');
        put_tuple(b, &m->u.update.newtup);
        break;
    case CRW_PGO_DELETE:
        put32(b, m->u.del.relid);
        put8(b, (uint8_t)m->u.del.oldkind);
        put_tuple(b, &m->u.del.oldtup);
        break;
    case CRW_PGO_TRUNCATE:
        put32(b, m->u.truncate.nrels);
        put8(b, m->u.truncate.options);
        for (uint32_t i = 0; i < m->u.truncate.nrels; i++)
            put32(b, m->u.truncate.relids[i]);
        break;
    case CRW_PGO_MESSAGE:
        put8(b, m->u.message.flags);
        put64(b, m->u.message.lsn);
        putstr(b, m->u.message.prefix);
        put32(b, m->u.message.len);
        crw_buf_put(b, m->u.message.content, m->u.message.len);
        break;
    case CRW_PGO_STREAM_START:
        put32(b, m->u.stream_start.xid);
        put8(b, m->u.stream_start.first_segment);
        break;
    case CRW_PGO_STREAM_STOP: break;
    case CRW_PGO_STREAM_COMMIT:
        put32(b, m->u.stream_commit.xid);
        put8(b, m->u.stream_commit.flags);
        put64(b, m->u.stream_commit.commit_lsn);
        put64(b, m->u.stream_commit.end_lsn);
        put64(b, (uint64_t)m->u.stream_commit.commit_time);
        break;
    case CRW_PGO_STREAM_ABORT:
        put32(b, m->u.stream_abort.xid);
        put32(b, m->u.stream_abort.subxid);
        break;
    default: break;
    }
}

/* ---- the checks on one decoded message ---------------------------------------------------- */

typedef struct {
    const char *buf;
    size_t len;
} span_t;

/* p[0..n) lies inside the message. */
static bool inside(const span_t *s, const void *p, size_t n) {
    const char *c = p;
    return c >= s->buf && c <= s->buf + s->len && n <= (size_t)(s->buf + s->len - c);
}

/* A string field: inside the message, its NUL too. */
static void check_str(const span_t *s, const char *str, const char *what) {
    FZ_ASSERT(str && inside(s, str, 1), what, s->buf, s->len);
    FZ_ASSERT(memchr(str, '\0', (size_t)(s->buf + s->len - str)), what, s->buf, s->len);
}

static void check_tuple(const span_t *s, const crw_pgo_tuple_t *t) {
    for (uint16_t i = 0; i < t->ncols; i++) {
        const crw_pgo_col_t *c = &t->cols[i];
        FZ_ASSERT(strchr("nutb", c->kind) && c->kind, "column kind not one of n, u, t, b", s->buf, s->len);
        if (c->kind == 't' || c->kind == 'b')
            FZ_ASSERT(inside(s, c->data, c->len), "column value outside the message", s->buf, s->len);
        else
            FZ_ASSERT(c->len == 0 && !c->data, "null/unchanged column with data", s->buf, s->len);
        FZ_ASSERT(crw_pgo_tuple_col(t, i) == c, "crw_pgo_tuple_col", s->buf, s->len);
    }
    FZ_ASSERT(!crw_pgo_tuple_col(t, t->ncols) && !crw_pgo_tuple_col(t, -1), "crw_pgo_tuple_col out of range", s->buf,
              s->len);
}

static crw_buf_t scratch;

static void check_msg(const char *buf, size_t len, bool streamed, const crw_pgo_msg_t *m) {
    span_t s = {buf, len};
    switch (m->type) {
    case CRW_PGO_ORIGIN: check_str(&s, m->u.origin.name, "origin name outside the message"); break;
    case CRW_PGO_RELATION:
        check_str(&s, m->u.relation.nspname, "namespace outside the message");
        check_str(&s, m->u.relation.relname, "relation name outside the message");
        for (uint16_t i = 0; i < m->u.relation.natts; i++)
            check_str(&s, m->u.relation.atts[i].name, "attribute name outside the message");
        break;
    case CRW_PGO_TYPE:
        check_str(&s, m->u.type.nspname, "type namespace outside the message");
        check_str(&s, m->u.type.typname, "type name outside the message");
        break;
    case CRW_PGO_INSERT: check_tuple(&s, &m->u.insert.newtup); break;
    case CRW_PGO_UPDATE:
        FZ_ASSERT(!m->u.update.oldkind || m->u.update.oldkind == 'K' || m->u.update.oldkind == 'O',
                  "update old tuple kind", buf, len);
        if (m->u.update.oldkind)
            check_tuple(&s, &m->u.update.oldtup);
        check_tuple(&s, &m->u.update.newtup);
        break;
    case CRW_PGO_DELETE:
        FZ_ASSERT(m->u.del.oldkind == 'K' || m->u.del.oldkind == 'O', "delete old tuple kind", buf, len);
        check_tuple(&s, &m->u.del.oldtup);
        break;
    case CRW_PGO_MESSAGE:
        check_str(&s, m->u.message.prefix, "message prefix outside the message");
        FZ_ASSERT(inside(&s, m->u.message.content, m->u.message.len), "message content outside the message", buf,
                  len);
        break;
    default: break;
    }
    if (streamed && strchr("RYIUDTM", m->type))
        FZ_ASSERT(m->xid != 0, "streamed change with xid 0 accepted", buf, len);
    FZ_ASSERT(strcmp(crw_pgo_type_name(m->type), "unknown") != 0, "decoded a message of unknown type", buf, len);
    crw_buf_reset(&scratch);
    encode(&scratch, m, streamed);
    FZ_ASSERT(scratch.len == len && memcmp(scratch.data, buf, len) == 0,
              "the decoded message does not encode back to its bytes", buf, len);
}

/* ---- the source's side: stream state, an in-memory spool, the relation cache -------------- */

typedef struct {
    uint32_t xid, subxid;
    char *msg;
    size_t len;
} spooled_t;

typedef struct {
    crw_pgo_decoder_t *dec;
    crw_relcache_t *rels;
    bool in_stream, in_txn;
    uint32_t stream_xid;
    spooled_t *spool;
    size_t nspool, capspool;
    uint64_t generation; /* the highest relation generation seen */
} source_t;

static void spool_drop(source_t *s, size_t from, uint32_t xid) {
    size_t kept = from;
    for (size_t i = from; i < s->nspool; i++) {
        if (s->spool[i].xid == xid)
            free(s->spool[i].msg);
        else
            s->spool[kept++] = s->spool[i];
    }
    s->nspool = kept;
}

static void reconnect(source_t *s) {
    for (size_t i = 0; i < s->nspool; i++)
        free(s->spool[i].msg);
    s->nspool = 0;
    s->in_stream = s->in_txn = false;
}

static void check_relation(source_t *s, const crw_pgo_relation_t *m, const crw_relation_t *r) {
    FZ_ASSERT(r && crw_relcache_get(s->rels, m->relid) == r, "relcache_get after relcache_update", NULL, 0);
    FZ_ASSERT(r->relid == m->relid && r->natts == m->natts && r->replident == m->replident, "relcache entry fields",
              NULL, 0);
    FZ_ASSERT(!strcmp(r->nspname, *m->nspname ? m->nspname : "pg_catalog") && !strcmp(r->relname, m->relname),
              "relcache entry names", NULL, 0);
    for (uint16_t i = 0; i < m->natts; i++)
        FZ_ASSERT(!strcmp(r->atts[i].name, m->atts[i].name) && r->atts[i].typoid == m->atts[i].typoid &&
                      r->atts[i].typmod == m->atts[i].typmod && r->atts[i].flags == m->atts[i].flags,
                  "relcache attribute", NULL, 0);
    FZ_ASSERT(r->generation > s->generation, "relation generation did not grow", NULL, 0);
    s->generation = r->generation;
}

/* A row change as the driver receives it: the relation must have been described. */
static int change(source_t *s, uint32_t relid, const crw_pgo_msg_t *m) {
    const crw_relation_t *rel = crw_relcache_get(s->rels, relid);
    if (!rel)
        return -1;
    FZ_ASSERT(rel->relid == relid, "relcache_get returned another relation", NULL, 0);
    if (m) {
        crw_change_t ch;
        FZ_ASSERT(crw_change_from_msg(&ch, rel, m) == 0 && ch.rel == rel && ch.op == m->type, "change_from_msg",
                  NULL, 0);
        FZ_ASSERT(ch.newtup ? m->type != CRW_PGO_DELETE : m->type == CRW_PGO_DELETE, "change new tuple", NULL, 0);
        FZ_ASSERT(!ch.oldtup == !ch.oldkind, "change old tuple", NULL, 0);
    }
    return 0;
}

/* replication.c's deliver(): what the driver sees of one message. */
static int deliver(source_t *s, const crw_pgo_msg_t *m) {
    switch (m->type) {
    case CRW_PGO_BEGIN: s->in_txn = true; return 0;
    case CRW_PGO_COMMIT: s->in_txn = false; return 0;
    case CRW_PGO_RELATION: check_relation(s, &m->u.relation, crw_relcache_update(s->rels, &m->u.relation)); return 0;
    case CRW_PGO_INSERT: return change(s, m->u.insert.relid, m);
    case CRW_PGO_UPDATE: return change(s, m->u.update.relid, m);
    case CRW_PGO_DELETE: return change(s, m->u.del.relid, m);
    case CRW_PGO_TRUNCATE:
        for (uint32_t i = 0; i < m->u.truncate.nrels; i++)
            if (change(s, m->u.truncate.relids[i], NULL) < 0)
                return -1;
        return 0;
    default: return 0;
    }
}

static int decode(source_t *s, const char *buf, size_t len, bool streamed, crw_pgo_msg_t *m) {
    char err[256];
    int rc = crw_pgo_decode(s->dec, buf, len, streamed, m, err, sizeof err);
    if (rc < 0) {
        FZ_ASSERT(rc == CRW_ERR_PROTOCOL, "decode failed with another error than CRW_ERR_PROTOCOL", buf, len);
        FZ_ASSERT(strstr(err, "offset"), "decode error without an offset", err, strlen(err));
        return rc;
    }
    check_msg(buf, len, streamed, m);
    return 0;
}

/* replication.c's handle_message(): one XLogData payload. */
static int message(source_t *s, const char *buf, size_t len) {
    crw_pgo_msg_t m;
    if (decode(s, buf, len, s->in_stream, &m) < 0)
        return -1;
    switch (m.type) {
    case CRW_PGO_STREAM_START:
        s->in_stream = true;
        s->stream_xid = m.u.stream_start.xid;
        return 0;
    case CRW_PGO_STREAM_STOP: s->in_stream = false; return 0;
    case CRW_PGO_STREAM_ABORT: {
        uint32_t xid = m.u.stream_abort.xid, sub = m.u.stream_abort.subxid;
        for (size_t i = 0; i < s->nspool; i++)
            if (s->spool[i].xid == xid && (xid == sub || s->spool[i].subxid == sub)) {
                spool_drop(s, i, xid);
                break;
            }
        return 0;
    }
    case CRW_PGO_STREAM_COMMIT: {
        uint32_t xid = m.u.stream_commit.xid;
        s->in_txn = true;
        int rc = 0;
        for (size_t i = 0; i < s->nspool && rc == 0; i++) {
            if (s->spool[i].xid != xid)
                continue;
            crw_pgo_msg_t r;
            /* It decoded when it was spooled: it must again. */
            FZ_ASSERT(decode(s, s->spool[i].msg, s->spool[i].len, true, &r) == 0, "a spooled message fails at replay",
                      s->spool[i].msg, s->spool[i].len);
            rc = deliver(s, &r);
        }
        spool_drop(s, 0, xid);
        s->in_txn = false;
        return rc;
    }
    default: break;
    }
    if (s->in_stream) {
        if (s->nspool == s->capspool) {
            s->capspool = s->capspool ? 2 * s->capspool : 16;
            s->spool = realloc(s->spool, s->capspool * sizeof *s->spool);
            if (!s->spool)
                abort();
        }
        s->spool[s->nspool++] = (spooled_t){s->stream_xid, m.xid ? m.xid : s->stream_xid, fz_strndup(buf, len), len};
        return 0;
    }
    return deliver(s, &m);
}

/* One CopyData frame, as logical_poll() takes it. */
static int frame(source_t *s, const uint8_t *f, size_t n) {
    if (n >= 18 && f[0] == 'k')
        return 0; /* keepalive: positions only */
    if (n >= 25 && f[0] == 'w') {
        /* An exactly sized copy of the payload: ASan sees a read past its end. */
        char *msg = fz_strndup(f + 25, n - 25);
        int rc = message(s, msg, n - 25);
        free(msg);
        return rc;
    }
    return -1; /* "unexpected replication frame" */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    source_t s = {crw_pgo_decoder_new(), crw_relcache_new(), false, false, 0, NULL, 0, 0, 0};
    fz_in_t in = {data, size, 0};
    while (in.i < in.n) {
        size_t len;
        const uint8_t *f = fz_take(&in, fz_u32(&in), &len);
        if (frame(&s, f, len) < 0)
            reconnect(&s);
    }
    reconnect(&s);
    free(s.spool);
    crw_relcache_destroy(s.rels);
    crw_pgo_decoder_destroy(s.dec);
    return 0;
}
