/*
 * pgoutput.c — decoder of the pgoutput logical replication protocol,
 * versions 1 and 2, as PostgreSQL 15's src/backend/replication/logical/proto.c
 * writes it.  Bytes in, one crw_pgo_msg_t out; no I/O, no per-row malloc.
 *
 * One read function per message type, reading the fields in the order
 * proto.c writes them.  Every read goes through the cursor helpers below, which
 * check the remaining length first, so a truncated or garbled message is
 * reported as CRW_ERR_PROTOCOL with the message type and byte offset and is
 * never read past its end.  A message must be consumed exactly: trailing
 * bytes are an error too.
 *
 * Wire facts worth knowing (all integers big-endian):
 *  - a namespace is sent as "" when it is pg_catalog (logicalrep_write_namespace);
 *    we keep the "" as sent;
 *  - a Type message carries the column's type OID but the namespace and name
 *    of its *base* type (a domain over int4 arrives as oid=<domain>, "", "int4");
 *  - inside a Stream Start/Stop block, the xid prefix of a change is the xid
 *    of the (sub)transaction that made it, not always the Stream Start xid;
 *  - Message writes the xid prefix before its flags, Truncate writes the
 *    relation count before its flags;
 *  - an old key tuple ('K') has every column of the relation, the non-key ones
 *    sent as null.
 */
#include "decode/pgoutput.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"

/* Tuple slots: an Update needs both at once. */
enum { TUP_NEW = 0, TUP_OLD = 1 };

struct crw_pgo_decoder {
    crw_pgo_col_t *cols[2]; /* column arrays of the new and old tuple, grow-only */
    uint32_t colcap[2];
    crw_pgo_attr_t *atts;   /* Relation attributes, grow-only */
    uint32_t attcap;
    uint32_t *relids;       /* Truncate relation OIDs, grow-only */
    uint32_t relidcap;
};

/* Read cursor over one message; the error context goes with it. */
typedef struct reader {
    const unsigned char *buf;
    size_t len;
    size_t pos;
    const char *what; /* message type name, for errors */
    char *errstr;
    size_t errstr_size;
} reader_t;

crw_pgo_decoder_t *crw_pgo_decoder_new(void) { return crw_calloc(1, sizeof(crw_pgo_decoder_t)); }

void crw_pgo_decoder_destroy(crw_pgo_decoder_t *d) {
    if (!d)
        return;
    free(d->cols[TUP_NEW]);
    free(d->cols[TUP_OLD]);
    free(d->atts);
    free(d->relids);
    free(d);
}

const char *crw_pgo_type_name(char type) {
    switch (type) {
    case CRW_PGO_BEGIN: return "Begin";
    case CRW_PGO_COMMIT: return "Commit";
    case CRW_PGO_ORIGIN: return "Origin";
    case CRW_PGO_RELATION: return "Relation";
    case CRW_PGO_TYPE: return "Type";
    case CRW_PGO_INSERT: return "Insert";
    case CRW_PGO_UPDATE: return "Update";
    case CRW_PGO_DELETE: return "Delete";
    case CRW_PGO_TRUNCATE: return "Truncate";
    case CRW_PGO_MESSAGE: return "Message";
    case CRW_PGO_STREAM_START: return "Stream Start";
    case CRW_PGO_STREAM_STOP: return "Stream Stop";
    case CRW_PGO_STREAM_COMMIT: return "Stream Commit";
    case CRW_PGO_STREAM_ABORT: return "Stream Abort";
    }
    return "unknown";
}

/* ---------------------------------------------------------------- cursor */

/* Writes "<what>: <fmt>" into errstr; returns CRW_ERR_PROTOCOL. */
static int fail(reader_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(reader_t *r, const char *fmt, ...) {
    if (r->errstr && r->errstr_size > 0) {
        int n = snprintf(r->errstr, r->errstr_size, "%s: ", r->what);
        if (n >= 0 && (size_t)n < r->errstr_size) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(r->errstr + n, r->errstr_size - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return CRW_ERR_PROTOCOL;
}

/* Fails unless n more bytes remain; field names what they were for. */
static int need(reader_t *r, size_t n, const char *field) {
    size_t have = r->len - r->pos;
    if (n <= have)
        return 0;
    return fail(r, "truncated at offset %zu (need %zu byte%s for %s, have %zu)", r->pos, n, n == 1 ? "" : "s",
                field, have);
}

/* One byte (pq_getmsgbyte). */
static int get_u8(reader_t *r, uint8_t *v, const char *field) {
    if (need(r, 1, field) < 0)
        return CRW_ERR_PROTOCOL;
    *v = r->buf[r->pos++];
    return 0;
}

/* Big-endian uint16 (pq_getmsgint(in, 2)). */
static int get_u16(reader_t *r, uint16_t *v, const char *field) {
    if (need(r, 2, field) < 0)
        return CRW_ERR_PROTOCOL;
    const unsigned char *p = r->buf + r->pos;
    *v = (uint16_t)((unsigned)p[0] << 8 | (unsigned)p[1]);
    r->pos += 2;
    return 0;
}

/* Big-endian uint32 (pq_getmsgint(in, 4)). */
static int get_u32(reader_t *r, uint32_t *v, const char *field) {
    if (need(r, 4, field) < 0)
        return CRW_ERR_PROTOCOL;
    const unsigned char *p = r->buf + r->pos;
    *v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
    r->pos += 4;
    return 0;
}

/* Big-endian uint64 (pq_getmsgint64). */
static int get_u64(reader_t *r, uint64_t *v, const char *field) {
    if (need(r, 8, field) < 0)
        return CRW_ERR_PROTOCOL;
    const unsigned char *p = r->buf + r->pos;
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x = x << 8 | p[i];
    *v = x;
    r->pos += 8;
    return 0;
}

/* Two's complement reinterpretations without implementation-defined casts. */
static int32_t as_i32(uint32_t u) { return u <= INT32_MAX ? (int32_t)u : -(int32_t)(~u) - 1; }
static int64_t as_i64(uint64_t u) { return u <= INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1; }

/* Big-endian int32 (typmod). */
static int get_i32(reader_t *r, int32_t *v, const char *field) {
    uint32_t u;
    if (get_u32(r, &u, field) < 0)
        return CRW_ERR_PROTOCOL;
    *v = as_i32(u);
    return 0;
}

/* Big-endian int64 (TimestampTz). */
static int get_i64(reader_t *r, int64_t *v, const char *field) {
    uint64_t u;
    if (get_u64(r, &u, field) < 0)
        return CRW_ERR_PROTOCOL;
    *v = as_i64(u);
    return 0;
}

/* A NUL-terminated string (pq_sendstring): *s points into the buffer. */
static int get_string(reader_t *r, const char **s, const char *field) {
    if (need(r, 1, field) < 0)
        return CRW_ERR_PROTOCOL;
    const unsigned char *start = r->buf + r->pos;
    const unsigned char *nul = memchr(start, '\0', r->len - r->pos);
    if (!nul)
        return fail(r, "unterminated string for %s at offset %zu (no NUL in the %zu remaining bytes)", field,
                    r->pos, r->len - r->pos);
    *s = (const char *)start;
    r->pos += (size_t)(nul - start) + 1;
    return 0;
}

/* n raw bytes: *p points into the buffer. */
static int get_bytes(reader_t *r, size_t n, const char **p, const char *field) {
    if (need(r, n, field) < 0)
        return CRW_ERR_PROTOCOL;
    *p = (const char *)(r->buf + r->pos);
    r->pos += n;
    return 0;
}

/* Printable rendering of a byte for error messages. */
static char show(uint8_t c) { return c >= 0x20 && c < 0x7f ? (char)c : '?'; }

/* Grows *arr to hold at least n elements of size sz; never shrinks. */
static void *reserve(void *arr, uint32_t *cap, uint32_t n, size_t sz) {
    if (n <= *cap)
        return arr;
    uint32_t c = *cap ? *cap : 16;
    while (c < n)
        c = c > UINT32_MAX / 2 ? n : c * 2;
    *cap = c;
    return crw_realloc(arr, (size_t)c * sz);
}

/* ------------------------------------------------------- shared pieces */

/*
 * Stream prefix (protocol 2, inside Stream Start/Stop):
 *   int32 xid   transaction of the change; never 0 (proto.c writes it only when valid)
 */
static int read_stream_xid(reader_t *r, bool streamed, uint32_t *xid) {
    *xid = 0;
    if (!streamed)
        return 0;
    size_t at = r->pos;
    if (get_u32(r, xid, "stream xid") < 0)
        return CRW_ERR_PROTOCOL;
    if (*xid == 0)
        return fail(r, "invalid stream xid 0 at offset %zu", at);
    return 0;
}

/*
 * Tuple (logicalrep_write_tuple):
 *   int16 ncols              live columns (not dropped, not generated)
 *   per column, byte kind:   'n' null, 'u' unchanged TOASTed value (no data),
 *                            't' text or 'b' binary, then int32 len + len bytes
 */
static int read_tuple(reader_t *r, crw_pgo_decoder_t *d, int slot, crw_pgo_tuple_t *t) {
    uint16_t ncols;
    if (get_u16(r, &ncols, "column count") < 0)
        return CRW_ERR_PROTOCOL;
    /* Every column takes at least its kind byte: check before allocating. */
    if (ncols > r->len - r->pos)
        return fail(r, "column count %u at offset %zu exceeds the %zu remaining bytes", ncols, r->pos - 2,
                    r->len - r->pos);
    d->cols[slot] = reserve(d->cols[slot], &d->colcap[slot], ncols, sizeof(crw_pgo_col_t));
    crw_pgo_col_t *cols = d->cols[slot];
    for (uint16_t i = 0; i < ncols; i++) {
        crw_pgo_col_t *c = &cols[i];
        uint8_t kind;
        size_t at = r->pos;
        if (get_u8(r, &kind, "column kind") < 0)
            return CRW_ERR_PROTOCOL;
        c->kind = (char)kind;
        c->len = 0;
        c->data = NULL;
        switch (kind) {
        case CRW_PGO_COL_NULL:
        case CRW_PGO_COL_UNCHANGED: break;
        case CRW_PGO_COL_TEXT:
        case CRW_PGO_COL_BINARY:
            if (get_u32(r, &c->len, "column length") < 0 || get_bytes(r, c->len, &c->data, "column value") < 0)
                return CRW_ERR_PROTOCOL;
            break;
        default:
            return fail(r, "unknown column kind '%c' (0x%02x) for column %u at offset %zu", show(kind), kind, i,
                        at);
        }
    }
    t->ncols = ncols;
    t->cols = cols;
    return 0;
}

/* The tuple tag byte: fails unless it is one of the accepted tags. */
static int read_tag(reader_t *r, const char *accepted, const char *expect, uint8_t *tag) {
    size_t at = r->pos;
    if (get_u8(r, tag, "tuple tag") < 0)
        return CRW_ERR_PROTOCOL;
    if (*tag == 0 || !strchr(accepted, *tag))
        return fail(r, "expected %s at offset %zu, got '%c' (0x%02x)", expect, at, show(*tag), *tag);
    return 0;
}

/* ------------------------------------------------------------ messages */

/*
 * Begin 'B' (logicalrep_write_begin):
 *   int64 final_lsn     LSN of the commit record; never 0
 *   int64 commit_time   microseconds since 2000-01-01
 *   int32 xid
 */
static int read_begin(reader_t *r, crw_pgo_msg_t *m) {
    size_t at = r->pos;
    if (get_u64(r, &m->u.begin.final_lsn, "final_lsn") < 0 ||
        get_i64(r, &m->u.begin.commit_time, "commit timestamp") < 0 || get_u32(r, &m->u.begin.xid, "xid") < 0)
        return CRW_ERR_PROTOCOL;
    if (m->u.begin.final_lsn == 0)
        return fail(r, "final_lsn not set at offset %zu", at);
    return 0;
}

/* The flags byte of Commit and Stream Commit: proto.c writes 0, and reads nothing else. */
static int read_commit_flags(reader_t *r, uint8_t *flags) {
    size_t at = r->pos;
    if (get_u8(r, flags, "flags") < 0)
        return CRW_ERR_PROTOCOL;
    if (*flags != 0)
        return fail(r, "unrecognized flags 0x%02x at offset %zu", *flags, at);
    return 0;
}

/*
 * Commit 'C' (logicalrep_write_commit):
 *   int8  flags         0 (unused)
 *   int64 commit_lsn    LSN of the commit record
 *   int64 end_lsn       end of the commit record: the LSN to confirm
 *   int64 commit_time   microseconds since 2000-01-01
 */
static int read_commit(reader_t *r, crw_pgo_msg_t *m) {
    if (read_commit_flags(r, &m->u.commit.flags) < 0 || get_u64(r, &m->u.commit.commit_lsn, "commit_lsn") < 0 ||
        get_u64(r, &m->u.commit.end_lsn, "end_lsn") < 0 ||
        get_i64(r, &m->u.commit.commit_time, "commit timestamp") < 0)
        return CRW_ERR_PROTOCOL;
    return 0;
}

/*
 * Origin 'O' (logicalrep_write_origin), after Begin when the transaction
 * was replayed from a replication origin:
 *   int64  origin_lsn   commit LSN on the origin server
 *   string name         origin name
 */
static int read_origin(reader_t *r, crw_pgo_msg_t *m) {
    if (get_u64(r, &m->u.origin.lsn, "origin lsn") < 0 || get_string(r, &m->u.origin.name, "origin name") < 0)
        return CRW_ERR_PROTOCOL;
    return 0;
}

/*
 * Relation 'R' (logicalrep_write_rel + logicalrep_write_attrs):
 *   [int32 xid]         when streamed
 *   int32  relid        relation OID
 *   string nspname      "" for pg_catalog
 *   string relname
 *   int8   replident    'd' default, 'n' nothing, 'f' full, 'i' index
 *   int16  natts        live (published) attributes
 *   per attribute:
 *     int8   flags      1 = part of the replica identity (every column when 'f')
 *     string name
 *     int32  typoid
 *     int32  typmod
 */
static int read_relation(reader_t *r, crw_pgo_decoder_t *d, bool streamed, crw_pgo_msg_t *m) {
    crw_pgo_relation_t *rel = &m->u.relation;
    uint8_t replident;
    if (read_stream_xid(r, streamed, &m->xid) < 0)
        return CRW_ERR_PROTOCOL;
    size_t at = r->pos;
    if (get_u32(r, &rel->relid, "relation OID") < 0)
        return CRW_ERR_PROTOCOL;
    /* proto.c sends RelationGetRelid(): never InvalidOid, which the relation cache cannot hold either. */
    if (rel->relid == 0)
        return fail(r, "invalid relation OID 0 at offset %zu", at);
    if (get_string(r, &rel->nspname, "namespace") < 0 || get_string(r, &rel->relname, "relation name") < 0 ||
        get_u8(r, &replident, "replica identity") < 0 || get_u16(r, &rel->natts, "attribute count") < 0)
        return CRW_ERR_PROTOCOL;
    rel->replident = (char)replident;
    /* flags + name's NUL + typoid + typmod: 10 bytes at least per attribute. */
    if ((size_t)rel->natts * 10 > r->len - r->pos)
        return fail(r, "attribute count %u at offset %zu exceeds the %zu remaining bytes", rel->natts, r->pos - 2,
                    r->len - r->pos);
    d->atts = reserve(d->atts, &d->attcap, rel->natts, sizeof(crw_pgo_attr_t));
    for (uint16_t i = 0; i < rel->natts; i++) {
        crw_pgo_attr_t *a = &d->atts[i];
        if (get_u8(r, &a->flags, "attribute flags") < 0 || get_string(r, &a->name, "attribute name") < 0 ||
            get_u32(r, &a->typoid, "attribute type OID") < 0 || get_i32(r, &a->typmod, "attribute typmod") < 0)
            return CRW_ERR_PROTOCOL;
    }
    rel->atts = d->atts;
    return 0;
}

/*
 * Type 'Y' (logicalrep_write_typ), sent before a Relation using a non-built-in type:
 *   [int32 xid]         when streamed
 *   int32  typoid       the column's type (a domain's own OID)
 *   string nspname      namespace of the *base* type; "" for pg_catalog
 *   string typname      name of the *base* type
 */
static int read_type(reader_t *r, bool streamed, crw_pgo_msg_t *m) {
    if (read_stream_xid(r, streamed, &m->xid) < 0 || get_u32(r, &m->u.type.typoid, "type OID") < 0 ||
        get_string(r, &m->u.type.nspname, "namespace") < 0 || get_string(r, &m->u.type.typname, "type name") < 0)
        return CRW_ERR_PROTOCOL;
    return 0;
}

/*
 * Insert 'I' (logicalrep_write_insert):
 *   [int32 xid]         when streamed
 *   int32 relid
 *   int8  'N'           new tuple follows
 *   tuple
 */
static int read_insert(reader_t *r, crw_pgo_decoder_t *d, bool streamed, crw_pgo_msg_t *m) {
    uint8_t tag;
    if (read_stream_xid(r, streamed, &m->xid) < 0 || get_u32(r, &m->u.insert.relid, "relation OID") < 0 ||
        read_tag(r, "N", "'N' (new tuple)", &tag) < 0 || read_tuple(r, d, TUP_NEW, &m->u.insert.newtup) < 0)
        return CRW_ERR_PROTOCOL;
    return 0;
}

/*
 * Update 'U' (logicalrep_write_update):
 *   [int32 xid]         when streamed
 *   int32 relid
 *   [int8 'K' + tuple]  old key columns (identity changed; others null), or
 *   [int8 'O' + tuple]  whole old row (REPLICA IDENTITY FULL)
 *   int8  'N'           new tuple follows
 *   tuple
 */
static int read_update(reader_t *r, crw_pgo_decoder_t *d, bool streamed, crw_pgo_msg_t *m) {
    uint8_t tag;
    if (read_stream_xid(r, streamed, &m->xid) < 0 || get_u32(r, &m->u.update.relid, "relation OID") < 0 ||
        read_tag(r, "KON", "'K' (old key), 'O' (old tuple) or 'N' (new tuple)", &tag) < 0)
        return CRW_ERR_PROTOCOL;
    if (tag != 'N') {
        m->u.update.oldkind = (char)tag;
        if (read_tuple(r, d, TUP_OLD, &m->u.update.oldtup) < 0 || read_tag(r, "N", "'N' (new tuple)", &tag) < 0)
            return CRW_ERR_PROTOCOL;
    }
    return read_tuple(r, d, TUP_NEW, &m->u.update.newtup);
}

/*
 * Delete 'D' (logicalrep_write_delete):
 *   [int32 xid]         when streamed
 *   int32 relid
 *   int8  'K' or 'O'    old key columns (others null), or whole old row (FULL)
 *   tuple
 */
static int read_delete(reader_t *r, crw_pgo_decoder_t *d, bool streamed, crw_pgo_msg_t *m) {
    uint8_t tag;
    if (read_stream_xid(r, streamed, &m->xid) < 0 || get_u32(r, &m->u.del.relid, "relation OID") < 0 ||
        read_tag(r, "KO", "'K' (old key) or 'O' (old tuple)", &tag) < 0)
        return CRW_ERR_PROTOCOL;
    m->u.del.oldkind = (char)tag;
    return read_tuple(r, d, TUP_OLD, &m->u.del.oldtup);
}

/*
 * Truncate 'T' (logicalrep_write_truncate):
 *   [int32 xid]         when streamed
 *   int32 nrelids
 *   int8  options       1 = CASCADE, 2 = RESTART IDENTITY
 *   int32 relid         nrelids times
 */
static int read_truncate(reader_t *r, crw_pgo_decoder_t *d, bool streamed, crw_pgo_msg_t *m) {
    uint32_t n;
    if (read_stream_xid(r, streamed, &m->xid) < 0 || get_u32(r, &n, "relation count") < 0 ||
        get_u8(r, &m->u.truncate.options, "options") < 0)
        return CRW_ERR_PROTOCOL;
    if (n > (r->len - r->pos) / 4)
        return fail(r, "relation count %u at offset %zu exceeds the %zu remaining bytes", n, r->pos - 5,
                    r->len - r->pos);
    d->relids = reserve(d->relids, &d->relidcap, n, sizeof(uint32_t));
    for (uint32_t i = 0; i < n; i++)
        if (get_u32(r, &d->relids[i], "relation OID") < 0)
            return CRW_ERR_PROTOCOL;
    m->u.truncate.nrels = n;
    m->u.truncate.relids = d->relids;
    return 0;
}

/*
 * Message 'M' (logicalrep_write_message), from pg_logical_emit_message():
 *   [int32 xid]         when streamed (written before the flags)
 *   int8   flags        1 = transactional
 *   int64  lsn          LSN of the message record
 *   string prefix
 *   int32  len
 *   bytes  content      len bytes, not terminated
 */
static int read_message(reader_t *r, bool streamed, crw_pgo_msg_t *m) {
    if (read_stream_xid(r, streamed, &m->xid) < 0 || get_u8(r, &m->u.message.flags, "flags") < 0 ||
        get_u64(r, &m->u.message.lsn, "message lsn") < 0 || get_string(r, &m->u.message.prefix, "prefix") < 0 ||
        get_u32(r, &m->u.message.len, "content length") < 0 ||
        get_bytes(r, m->u.message.len, &m->u.message.content, "content") < 0)
        return CRW_ERR_PROTOCOL;
    return 0;
}

/*
 * Stream Start 'S' (logicalrep_write_stream_start):
 *   int32 xid            top-level transaction being streamed
 *   int8  first_segment  1 for the first block of this xid, else 0
 */
static int read_stream_start(reader_t *r, crw_pgo_msg_t *m) {
    if (get_u32(r, &m->u.stream_start.xid, "xid") < 0 ||
        get_u8(r, &m->u.stream_start.first_segment, "first_segment") < 0)
        return CRW_ERR_PROTOCOL;
    return 0;
}

/* Stream Stop 'E' (logicalrep_write_stream_stop): no fields. */

/*
 * Stream Commit 'c' (logicalrep_write_stream_commit):
 *   int32 xid
 *   int8  flags          0 (unused)
 *   int64 commit_lsn
 *   int64 end_lsn
 *   int64 commit_time
 */
static int read_stream_commit(reader_t *r, crw_pgo_msg_t *m) {
    if (get_u32(r, &m->u.stream_commit.xid, "xid") < 0 || read_commit_flags(r, &m->u.stream_commit.flags) < 0 ||
        get_u64(r, &m->u.stream_commit.commit_lsn, "commit_lsn") < 0 ||
        get_u64(r, &m->u.stream_commit.end_lsn, "end_lsn") < 0 ||
        get_i64(r, &m->u.stream_commit.commit_time, "commit timestamp") < 0)
        return CRW_ERR_PROTOCOL;
    return 0;
}

/*
 * Stream Abort 'A' (logicalrep_write_stream_abort; protocol 4's abort_lsn
 * and abort_time are not sent to versions 1-2):
 *   int32 xid            top-level transaction
 *   int32 subxid         the aborted (sub)transaction; equals xid for a top-level abort
 */
static int read_stream_abort(reader_t *r, crw_pgo_msg_t *m) {
    if (get_u32(r, &m->u.stream_abort.xid, "xid") < 0 || get_u32(r, &m->u.stream_abort.subxid, "subxid") < 0)
        return CRW_ERR_PROTOCOL;
    return 0;
}

int crw_pgo_decode(crw_pgo_decoder_t *d, const char *buf, size_t len, bool streamed, crw_pgo_msg_t *out,
                   char *errstr, size_t errstr_size) {
    reader_t r = {(const unsigned char *)buf, len, 0, "pgoutput", errstr, errstr_size};
    uint8_t type;
    int rc;

    memset(out, 0, sizeof *out);
    if (errstr && errstr_size > 0)
        errstr[0] = '\0';
    if (get_u8(&r, &type, "message type") < 0)
        return CRW_ERR_PROTOCOL;
    out->type = (char)type;
    r.what = crw_pgo_type_name((char)type);

    switch (type) {
    case CRW_PGO_BEGIN: rc = read_begin(&r, out); break;
    case CRW_PGO_COMMIT: rc = read_commit(&r, out); break;
    case CRW_PGO_ORIGIN: rc = read_origin(&r, out); break;
    case CRW_PGO_RELATION: rc = read_relation(&r, d, streamed, out); break;
    case CRW_PGO_TYPE: rc = read_type(&r, streamed, out); break;
    case CRW_PGO_INSERT: rc = read_insert(&r, d, streamed, out); break;
    case CRW_PGO_UPDATE: rc = read_update(&r, d, streamed, out); break;
    case CRW_PGO_DELETE: rc = read_delete(&r, d, streamed, out); break;
    case CRW_PGO_TRUNCATE: rc = read_truncate(&r, d, streamed, out); break;
    case CRW_PGO_MESSAGE: rc = read_message(&r, streamed, out); break;
    case CRW_PGO_STREAM_START: rc = read_stream_start(&r, out); break;
    case CRW_PGO_STREAM_STOP: rc = 0; break;
    case CRW_PGO_STREAM_COMMIT: rc = read_stream_commit(&r, out); break;
    case CRW_PGO_STREAM_ABORT: rc = read_stream_abort(&r, out); break;
    default:
        r.what = "pgoutput";
        return fail(&r, "unknown message type '%c' (0x%02x) at offset 0", show(type), type);
    }
    if (rc < 0)
        return rc;
    if (r.pos != r.len)
        return fail(&r, "%zu trailing byte%s at offset %zu after a complete message", r.len - r.pos,
                    r.len - r.pos == 1 ? "" : "s", r.pos);
    return 0;
}
