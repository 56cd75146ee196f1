/*
 * pgoutput.h — decoder of the pgoutput logical replication protocol
 * (PostgreSQL's src/backend/replication/logical/proto.c, protocol
 * versions 1 and 2).  Bytes in, one message struct out; no I/O.
 *
 * Zero-copy: strings and column values in a decoded message point into the
 * caller's input buffer, which must outlive the use of the message.  Wire
 * strings are NUL-terminated, so string fields are valid C strings; column
 * values are not terminated (use len).  Tuple column arrays live in the
 * decoder and are reused by the next call: no allocation per row.
 */
#ifndef CRW_PGOUTPUT_H
#define CRW_PGOUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/clock.h"

/* Message types: the values are the wire bytes. */
typedef enum {
    CRW_PGO_BEGIN = 'B',
    CRW_PGO_COMMIT = 'C',
    CRW_PGO_ORIGIN = 'O',
    CRW_PGO_RELATION = 'R',
    CRW_PGO_TYPE = 'Y',
    CRW_PGO_INSERT = 'I',
    CRW_PGO_UPDATE = 'U',
    CRW_PGO_DELETE = 'D',
    CRW_PGO_TRUNCATE = 'T',
    CRW_PGO_MESSAGE = 'M',
    CRW_PGO_STREAM_START = 'S',
    CRW_PGO_STREAM_STOP = 'E',
    CRW_PGO_STREAM_COMMIT = 'c',
    CRW_PGO_STREAM_ABORT = 'A',
} crw_pgo_type_t;

/* Tuple column kinds: the values are the wire bytes. */
typedef enum {
    CRW_PGO_COL_NULL = 'n',
    CRW_PGO_COL_UNCHANGED = 'u', /* unchanged TOASTed value: not sent */
    CRW_PGO_COL_TEXT = 't',
    CRW_PGO_COL_BINARY = 'b',
} crw_pgo_colkind_t;

typedef struct crw_pgo_col {
    char kind;        /* crw_pgo_colkind_t */
    uint32_t len;     /* bytes of data (t/b only) */
    const char *data; /* points into the input; not NUL-terminated */
} crw_pgo_col_t;

typedef struct crw_pgo_tuple {
    uint16_t ncols;
    crw_pgo_col_t *cols; /* owned by the decoder, valid until the next decode */
} crw_pgo_tuple_t;

/* Column i of t, or NULL when t is NULL or does not carry it. */
static inline const crw_pgo_col_t *crw_pgo_tuple_col(const crw_pgo_tuple_t *t, int i) {
    return t && i >= 0 && i < t->ncols ? &t->cols[i] : NULL;
}

typedef struct crw_pgo_attr {
    uint8_t flags;    /* 1 = part of the replica identity key */
    const char *name;
    uint32_t typoid;
    int32_t typmod;
} crw_pgo_attr_t;

typedef struct crw_pgo_relation {
    uint32_t relid;
    const char *nspname; /* "" for pg_catalog, as proto.c sends it */
    const char *relname;
    char replident;      /* 'd' default, 'n' nothing, 'f' full, 'i' index */
    uint16_t natts;
    crw_pgo_attr_t *atts; /* owned by the decoder, valid until the next decode */
} crw_pgo_relation_t;

typedef struct crw_pgo_msg {
    char type;    /* crw_pgo_type_t */
    uint32_t xid; /* streamed-transaction xid prefix, 0 when not in a stream block */
    uint64_t lsn; /* WAL position of the message (XLogData dataStart): set by the source, 0 from the decoder */
    union {
        struct { uint64_t final_lsn; int64_t commit_time; uint32_t xid; } begin;
        struct { uint8_t flags; uint64_t commit_lsn; uint64_t end_lsn; int64_t commit_time; } commit;
        struct { uint64_t lsn; const char *name; } origin;
        crw_pgo_relation_t relation;
        struct { uint32_t typoid; const char *nspname; const char *typname; } type;
        struct { uint32_t relid; crw_pgo_tuple_t newtup; } insert;
        /* oldkind: 0 (no old tuple), 'K' (old key columns), 'O' (whole old row) */
        struct { uint32_t relid; char oldkind; crw_pgo_tuple_t oldtup; crw_pgo_tuple_t newtup; } update;
        struct { uint32_t relid; char oldkind; crw_pgo_tuple_t oldtup; } del;
        /* options: 1 = CASCADE, 2 = RESTART IDENTITY */
        struct { uint8_t options; uint32_t nrels; const uint32_t *relids; } truncate;
        /* flags: 1 = transactional */
        struct { uint8_t flags; uint64_t lsn; const char *prefix; uint32_t len; const char *content; } message;
        struct { uint32_t xid; uint8_t first_segment; } stream_start;
        struct { uint32_t xid; uint8_t flags; uint64_t commit_lsn; uint64_t end_lsn; int64_t commit_time; } stream_commit;
        struct { uint32_t xid; uint32_t subxid; } stream_abort;
    } u;
} crw_pgo_msg_t;

typedef struct crw_pgo_decoder crw_pgo_decoder_t;

/* Creates a decoder; destroy with crw_pgo_decoder_destroy (NULL is a no-op). */
crw_pgo_decoder_t *crw_pgo_decoder_new(void);
void crw_pgo_decoder_destroy(crw_pgo_decoder_t *d);

/*
 * Decodes one pgoutput message of len bytes at buf into *out.
 * streamed: the message was sent inside a Stream Start/Stop block (protocol
 * 2), so Relation, Type, Insert, Update, Delete, Truncate and Message carry
 * a leading xid.  The caller tracks that state (and passes true again when
 * replaying spooled messages).
 * @returns 0, or a negative crw_err_t (CRW_ERR_PROTOCOL) with errstr naming
 *          the message type and byte offset where decoding failed.  Never
 *          reads past buf+len.
 */
int crw_pgo_decode(crw_pgo_decoder_t *d, const char *buf, size_t len, bool streamed, crw_pgo_msg_t *out,
                   char *errstr, size_t errstr_size);

/* Human-readable name of a message type byte ("Insert", ...), "unknown" otherwise. */
const char *crw_pgo_type_name(char type);

#endif
