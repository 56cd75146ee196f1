/*
 * test_pgoutput.c — the pgoutput decoder against hand-built byte fixtures
 * (every message type, plain and xid-prefixed) and real PostgreSQL 15
 * captures (tests/fixtures/pgoutput/, see their headers), plus truncation,
 * garbling and allocation checks.  Run it under ASan: every decode reads an
 * exactly sized heap copy, so a read past the end is caught.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "decode/pgoutput.h"

#ifndef CRW_FIXTURES
#error "CRW_FIXTURES must name the tests/fixtures directory"
#endif

/* Big-endian field builders for the hand-made fixtures. */
#define B16(x) (unsigned char)(((x) >> 8) & 0xff), (unsigned char)((x) & 0xff)
#define B32(x)                                                                                                         \
    (unsigned char)(((uint32_t)(x) >> 24) & 0xff), (unsigned char)(((uint32_t)(x) >> 16) & 0xff),                      \
        (unsigned char)(((uint32_t)(x) >> 8) & 0xff), (unsigned char)((uint32_t)(x) & 0xff)
#define B64(x) B32((uint64_t)(x) >> 32), B32((uint64_t)(x) & 0xffffffffu)

#define ERRSZ 256

/* ------------------------------------------------------------- helpers */

/* An exactly sized heap copy, so ASan flags any read past len. */
static unsigned char *dup_bytes(const unsigned char *b, size_t len) {
    unsigned char *p = malloc(len ? len : 1);
    cr_assert_not_null(p);
    if (len)
        memcpy(p, b, len);
    return p;
}

/* Copies that decoded messages point into, freed by the suite's teardown. */
static unsigned char *kept[4096];
static size_t nkept;

/* Decodes b[0..len) from a heap copy kept until the end of the test; asserts success. */
static void decode_ok(crw_pgo_decoder_t *d, const unsigned char *b, size_t len, bool streamed, crw_pgo_msg_t *m) {
    char err[ERRSZ] = "";
    unsigned char *p = dup_bytes(b, len);
    cr_assert_lt(nkept, sizeof kept / sizeof kept[0]);
    kept[nkept++] = p;
    int rc = crw_pgo_decode(d, (const char *)p, len, streamed, m, err, sizeof err);
    cr_assert_eq(rc, 0, "decode failed (%d): %s", rc, err);
}

/* Decodes and expects CRW_ERR_PROTOCOL with an errstr containing each of the needles. */
static void decode_fails(crw_pgo_decoder_t *d, const unsigned char *b, size_t len, bool streamed,
                         const char *needle1, const char *needle2) {
    char err[ERRSZ] = "";
    crw_pgo_msg_t m;
    unsigned char *p = dup_bytes(b, len);
    int rc = crw_pgo_decode(d, (const char *)p, len, streamed, &m, err, sizeof err);
    free(p);
    cr_assert_eq(rc, CRW_ERR_PROTOCOL, "expected a protocol error, got %d (%s)", rc, err);
    cr_assert(strstr(err, "offset"), "errstr lacks an offset: \"%s\"", err);
    if (needle1)
        cr_assert(strstr(err, needle1), "errstr \"%s\" lacks \"%s\"", err, needle1);
    if (needle2)
        cr_assert(strstr(err, needle2), "errstr \"%s\" lacks \"%s\"", err, needle2);
}

/* Every strict prefix must fail with an offset in errstr; the whole must decode. */
static void check_prefixes(crw_pgo_decoder_t *d, const unsigned char *b, size_t len, bool streamed) {
    for (size_t k = 0; k < len; k++) {
        char err[ERRSZ] = "";
        crw_pgo_msg_t m;
        unsigned char *p = dup_bytes(b, k);
        int rc = crw_pgo_decode(d, (const char *)p, k, streamed, &m, err, sizeof err);
        free(p);
        cr_assert_eq(rc, CRW_ERR_PROTOCOL, "prefix %zu of %zu (type '%c') decoded (rc %d)", k, len, len ? b[0] : '?',
                     rc);
        cr_assert(err[0] != '\0' && strstr(err, "offset"), "prefix %zu of %zu: errstr \"%s\"", k, len, err);
    }
}

/* A copy of msg with a 4-byte xid inserted after the type byte (the streamed form). */
static unsigned char *with_xid(const unsigned char *msg, size_t len, uint32_t xid, size_t *outlen) {
    unsigned char x[] = {B32(xid)};
    unsigned char *p = malloc(len + 4);
    cr_assert_not_null(p);
    p[0] = msg[0];
    memcpy(p + 1, x, 4);
    memcpy(p + 5, msg + 1, len - 1);
    *outlen = len + 4;
    return p;
}

/* A copy of msg with extra bytes appended. */
static unsigned char *with_tail(const unsigned char *msg, size_t len, size_t extra, size_t *outlen) {
    unsigned char *p = malloc(len + extra);
    cr_assert_not_null(p);
    memcpy(p, msg, len);
    memset(p + len, 0, extra);
    *outlen = len + extra;
    return p;
}

static void col_is(const crw_pgo_col_t *c, char kind, const char *val, size_t vlen) {
    cr_assert_eq(c->kind, kind, "column kind '%c', expected '%c'", c->kind, kind);
    if (kind == CRW_PGO_COL_TEXT || kind == CRW_PGO_COL_BINARY) {
        cr_assert_eq(c->len, vlen, "column length %u, expected %zu", c->len, vlen);
        cr_assert(vlen == 0 || memcmp(c->data, val, vlen) == 0, "column value \"%.*s\", expected \"%.*s\"",
                  (int)c->len, c->data, (int)vlen, val);
    } else {
        cr_assert_eq(c->len, 0);
        cr_assert_null(c->data);
    }
}
#define COL_TEXT(c, s) col_is((c), 't', (s), sizeof(s) - 1)
#define COL_BIN(c, s) col_is((c), 'b', (s), sizeof(s) - 1)
#define COL_NULL(c) col_is((c), 'n', NULL, 0)
#define COL_UNCHANGED(c) col_is((c), 'u', NULL, 0)

/* ------------------------------------------------ hand-made fixtures */

static const unsigned char begin_msg[] = {
    'B',
    B64(0x0000000123456789),  /* final_lsn 1/23456789 */
    B64(0x0002B5A7C1D2E3F4),  /* commit_time */
    B32(749),                 /* xid */
};

static const unsigned char commit_msg[] = {
    'C',
    0,                                   /* flags */
    B64(0x0000000123456789),             /* commit_lsn */
    B64(0x00000001234567C1),             /* end_lsn */
    B64((uint64_t)INT64_C(-86400000000)), /* commit_time: 1999-12-31, negative */
};

static const unsigned char origin_msg[] = {
    'O',
    B64(0x00000000ABCDEF01),                 /* origin_lsn */
    'u', 'p', 's', 't', 'r', 'e', 'a', 'm', 0, /* name */
};

static const unsigned char relation_msg[] = {
    'R',
    B32(16396),                    /* relid */
    's', 'h', 'o', 'p', 0,         /* nspname */
    'i', 't', 'e', 'm', 's', 0,    /* relname */
    'f',                           /* replident */
    B16(3),                        /* natts */
    1, 'i', 'd', 0, B32(20), B32(0xFFFFFFFF),           /* key, int8, typmod -1 */
    0, 'p', 'r', 'i', 'c', 'e', 0, B32(1700), B32(655366), /* numeric(10,2) */
    0, 'n', 'o', 't', 'e', 0, B32(1043), B32(44),        /* varchar(40) */
};

static const unsigned char relation_catalog_msg[] = {
    'R',
    B32(1259),                          /* relid */
    0,                                  /* nspname: "" is pg_catalog */
    'p', 'g', '_', 'c', 'l', 'a', 's', 's', 0,
    'n',                                /* replident nothing */
    B16(0),                             /* natts */
};

static const unsigned char type_msg[] = {
    'Y',
    B32(16394),             /* typoid of a domain */
    0,                      /* nspname of its base type: "" for pg_catalog */
    'i', 'n', 't', '4', 0,  /* typname of its base type */
};

static const unsigned char insert_msg[] = {
    'I',
    B32(16396),                    /* relid */
    'N',                           /* new tuple */
    B16(5),                        /* ncols */
    't', B32(2), '4', '2',         /* text "42" */
    'n',                           /* null */
    'u',                           /* unchanged toast */
    'b', B32(3), 0x00, 0xff, 0x10, /* binary */
    't', B32(0),                   /* empty text */
};

static const unsigned char update_new_msg[] = {
    'U', B32(16396),
    'N', B16(2), 't', B32(1), '7', 'u',
};

static const unsigned char update_key_msg[] = {
    'U', B32(16396),
    'K', B16(2), 't', B32(1), '1', 'n',                        /* old key: id=1 */
    'N', B16(2), 't', B32(1), '2', 't', B32(3), 'a', 'b', 'c', /* new: 2, "abc" */
};

static const unsigned char update_old_msg[] = {
    'U', B32(16401),
    'O', B16(1), 't', B32(2), 'o', 'l', /* whole old row */
    'N', B16(1), 't', B32(2), 'n', 'w',
};

static const unsigned char delete_key_msg[] = {
    'D', B32(16396),
    'K', B16(2), 't', B32(1), '9', 'n',
};

static const unsigned char delete_old_msg[] = {
    'D', B32(16401),
    'O', B16(1), 'n',
};

static const unsigned char truncate_msg[] = {
    'T',
    B32(2),                 /* nrelids */
    3,                      /* CASCADE | RESTART IDENTITY */
    B32(16396), B32(16401), /* relids */
};

static const unsigned char truncate_empty_msg[] = {'T', B32(0), 0};

static const unsigned char message_tx_msg[] = {
    'M',
    1,                      /* transactional */
    B64(0x00000000015369E0), /* lsn */
    'c', 'r', 'w', 0,       /* prefix */
    B32(5), 'h', 'e', 'l', 'l', 'o',
};

static const unsigned char message_bin_msg[] = {
    'M',
    0,                      /* not transactional */
    B64(0x0000000001536AD8),
    0,                      /* empty prefix */
    B32(3), 0x00, 0xff, 0x00, /* content with NULs */
};

static const unsigned char stream_start_msg[] = {'S', B32(749), 1};
static const unsigned char stream_stop_msg[] = {'E'};
static const unsigned char stream_commit_msg[] = {
    'c', B32(749), 0, B64(0x000000000156DA48), B64(0x000000000156DAC0), B64(0x000304060B342023),
};
static const unsigned char stream_abort_msg[] = {'A', B32(749), B32(752)};

typedef struct hand {
    const char *name;
    const unsigned char *b;
    size_t len;
    bool prefixed; /* carries the xid prefix when streamed */
} hand_t;

#define HAND(m, p) {#m, m, sizeof m, p}
static const hand_t hands[] = {
    HAND(begin_msg, false),         HAND(commit_msg, false),         HAND(origin_msg, false),
    HAND(relation_msg, true),       HAND(relation_catalog_msg, true), HAND(type_msg, true),
    HAND(insert_msg, true),         HAND(update_new_msg, true),      HAND(update_key_msg, true),
    HAND(update_old_msg, true),     HAND(delete_key_msg, true),      HAND(delete_old_msg, true),
    HAND(truncate_msg, true),       HAND(truncate_empty_msg, true),  HAND(message_tx_msg, true),
    HAND(message_bin_msg, true),    HAND(stream_start_msg, false),   HAND(stream_stop_msg, false),
    HAND(stream_commit_msg, false), HAND(stream_abort_msg, false),
};
#define NHANDS (sizeof hands / sizeof hands[0])

static crw_pgo_decoder_t *dec;
static void setup(void) { dec = crw_pgo_decoder_new(); }
static void teardown(void) {
    crw_pgo_decoder_destroy(dec);
    while (nkept > 0)
        free(kept[--nkept]);
}

/* Decodes a hand fixture plain, or streamed with xid 0x2ED prefixed. */
static void decode_hand(const unsigned char *b, size_t len, bool streamed, crw_pgo_msg_t *m) {
    if (!streamed) {
        decode_ok(dec, b, len, false, m);
        cr_assert_eq(m->xid, 0);
        return;
    }
    size_t n;
    unsigned char *p = with_xid(b, len, 0x2ED, &n);
    decode_ok(dec, p, n, true, m);
    free(p);
    cr_assert_eq(m->xid, 0x2ED);
}

/* ------------------------------------------------ per-message fields */

TestSuite(pgoutput, .init = setup, .fini = teardown);

Test(pgoutput, begin) {
    crw_pgo_msg_t m;
    decode_hand(begin_msg, sizeof begin_msg, false, &m);
    cr_assert_eq(m.type, CRW_PGO_BEGIN);
    cr_assert_eq(m.u.begin.final_lsn, UINT64_C(0x0000000123456789));
    cr_assert_eq(m.u.begin.commit_time, INT64_C(0x0002B5A7C1D2E3F4));
    cr_assert_eq(m.u.begin.xid, 749);
}

Test(pgoutput, commit) {
    crw_pgo_msg_t m;
    decode_hand(commit_msg, sizeof commit_msg, false, &m);
    cr_assert_eq(m.type, CRW_PGO_COMMIT);
    cr_assert_eq(m.u.commit.flags, 0);
    cr_assert_eq(m.u.commit.commit_lsn, UINT64_C(0x0000000123456789));
    cr_assert_eq(m.u.commit.end_lsn, UINT64_C(0x00000001234567C1));
    cr_assert_eq(m.u.commit.commit_time, INT64_C(-86400000000));
}

Test(pgoutput, origin) {
    crw_pgo_msg_t m;
    decode_hand(origin_msg, sizeof origin_msg, false, &m);
    cr_assert_eq(m.type, CRW_PGO_ORIGIN);
    cr_assert_eq(m.u.origin.lsn, UINT64_C(0xABCDEF01));
    cr_assert_str_eq(m.u.origin.name, "upstream");
}

static void check_relation(bool streamed) {
    crw_pgo_msg_t m;
    decode_hand(relation_msg, sizeof relation_msg, streamed, &m);
    const crw_pgo_relation_t *r = &m.u.relation;
    cr_assert_eq(m.type, CRW_PGO_RELATION);
    cr_assert_eq(r->relid, 16396);
    cr_assert_str_eq(r->nspname, "shop");
    cr_assert_str_eq(r->relname, "items");
    cr_assert_eq(r->replident, 'f');
    cr_assert_eq(r->natts, 3);
    cr_assert_eq(r->atts[0].flags, 1);
    cr_assert_str_eq(r->atts[0].name, "id");
    cr_assert_eq(r->atts[0].typoid, 20);
    cr_assert_eq(r->atts[0].typmod, -1);
    cr_assert_eq(r->atts[1].flags, 0);
    cr_assert_str_eq(r->atts[1].name, "price");
    cr_assert_eq(r->atts[1].typoid, 1700);
    cr_assert_eq(r->atts[1].typmod, 655366);
    cr_assert_eq(r->atts[2].flags, 0);
    cr_assert_str_eq(r->atts[2].name, "note");
    cr_assert_eq(r->atts[2].typoid, 1043);
    cr_assert_eq(r->atts[2].typmod, 44);

    decode_hand(relation_catalog_msg, sizeof relation_catalog_msg, streamed, &m);
    cr_assert_eq(m.u.relation.relid, 1259);
    cr_assert_str_eq(m.u.relation.nspname, "");
    cr_assert_str_eq(m.u.relation.relname, "pg_class");
    cr_assert_eq(m.u.relation.replident, 'n');
    cr_assert_eq(m.u.relation.natts, 0);
}
Test(pgoutput, relation) { check_relation(false); }
Test(pgoutput, relation_streamed) { check_relation(true); }

static void check_type(bool streamed) {
    crw_pgo_msg_t m;
    decode_hand(type_msg, sizeof type_msg, streamed, &m);
    cr_assert_eq(m.type, CRW_PGO_TYPE);
    cr_assert_eq(m.u.type.typoid, 16394);
    cr_assert_str_eq(m.u.type.nspname, "");
    cr_assert_str_eq(m.u.type.typname, "int4");
}
Test(pgoutput, type) { check_type(false); }
Test(pgoutput, type_streamed) { check_type(true); }

static void check_insert(bool streamed) {
    crw_pgo_msg_t m;
    decode_hand(insert_msg, sizeof insert_msg, streamed, &m);
    cr_assert_eq(m.type, CRW_PGO_INSERT);
    cr_assert_eq(m.u.insert.relid, 16396);
    cr_assert_eq(m.u.insert.newtup.ncols, 5);
    COL_TEXT(&m.u.insert.newtup.cols[0], "42");
    COL_NULL(&m.u.insert.newtup.cols[1]);
    COL_UNCHANGED(&m.u.insert.newtup.cols[2]);
    COL_BIN(&m.u.insert.newtup.cols[3], "\x00\xff\x10");
    COL_TEXT(&m.u.insert.newtup.cols[4], "");
}
Test(pgoutput, insert) { check_insert(false); }
Test(pgoutput, insert_streamed) { check_insert(true); }

static void check_update(bool streamed) {
    crw_pgo_msg_t m;
    decode_hand(update_new_msg, sizeof update_new_msg, streamed, &m);
    cr_assert_eq(m.type, CRW_PGO_UPDATE);
    cr_assert_eq(m.u.update.relid, 16396);
    cr_assert_eq(m.u.update.oldkind, 0);
    cr_assert_eq(m.u.update.oldtup.ncols, 0);
    cr_assert_null(m.u.update.oldtup.cols);
    cr_assert_eq(m.u.update.newtup.ncols, 2);
    COL_TEXT(&m.u.update.newtup.cols[0], "7");
    COL_UNCHANGED(&m.u.update.newtup.cols[1]);

    decode_hand(update_key_msg, sizeof update_key_msg, streamed, &m);
    cr_assert_eq(m.u.update.relid, 16396);
    cr_assert_eq(m.u.update.oldkind, 'K');
    cr_assert_neq(m.u.update.oldtup.cols, m.u.update.newtup.cols, "old and new tuples share an array");
    cr_assert_eq(m.u.update.oldtup.ncols, 2);
    COL_TEXT(&m.u.update.oldtup.cols[0], "1");
    COL_NULL(&m.u.update.oldtup.cols[1]);
    cr_assert_eq(m.u.update.newtup.ncols, 2);
    COL_TEXT(&m.u.update.newtup.cols[0], "2");
    COL_TEXT(&m.u.update.newtup.cols[1], "abc");

    decode_hand(update_old_msg, sizeof update_old_msg, streamed, &m);
    cr_assert_eq(m.u.update.relid, 16401);
    cr_assert_eq(m.u.update.oldkind, 'O');
    cr_assert_eq(m.u.update.oldtup.ncols, 1);
    COL_TEXT(&m.u.update.oldtup.cols[0], "ol");
    cr_assert_eq(m.u.update.newtup.ncols, 1);
    COL_TEXT(&m.u.update.newtup.cols[0], "nw");
}
Test(pgoutput, update) { check_update(false); }
Test(pgoutput, update_streamed) { check_update(true); }

static void check_delete(bool streamed) {
    crw_pgo_msg_t m;
    decode_hand(delete_key_msg, sizeof delete_key_msg, streamed, &m);
    cr_assert_eq(m.type, CRW_PGO_DELETE);
    cr_assert_eq(m.u.del.relid, 16396);
    cr_assert_eq(m.u.del.oldkind, 'K');
    cr_assert_eq(m.u.del.oldtup.ncols, 2);
    COL_TEXT(&m.u.del.oldtup.cols[0], "9");
    COL_NULL(&m.u.del.oldtup.cols[1]);

    decode_hand(delete_old_msg, sizeof delete_old_msg, streamed, &m);
    cr_assert_eq(m.u.del.relid, 16401);
    cr_assert_eq(m.u.del.oldkind, 'O');
    cr_assert_eq(m.u.del.oldtup.ncols, 1);
    COL_NULL(&m.u.del.oldtup.cols[0]);
}
Test(pgoutput, delete) { check_delete(false); }
Test(pgoutput, delete_streamed) { check_delete(true); }

static void check_truncate(bool streamed) {
    crw_pgo_msg_t m;
    decode_hand(truncate_msg, sizeof truncate_msg, streamed, &m);
    cr_assert_eq(m.type, CRW_PGO_TRUNCATE);
    cr_assert_eq(m.u.truncate.options, 3);
    cr_assert_eq(m.u.truncate.nrels, 2);
    cr_assert_eq(m.u.truncate.relids[0], 16396);
    cr_assert_eq(m.u.truncate.relids[1], 16401);

    decode_hand(truncate_empty_msg, sizeof truncate_empty_msg, streamed, &m);
    cr_assert_eq(m.u.truncate.options, 0);
    cr_assert_eq(m.u.truncate.nrels, 0);
}
Test(pgoutput, truncate) { check_truncate(false); }
Test(pgoutput, truncate_streamed) { check_truncate(true); }

static void check_message(bool streamed) {
    crw_pgo_msg_t m;
    decode_hand(message_tx_msg, sizeof message_tx_msg, streamed, &m);
    cr_assert_eq(m.type, CRW_PGO_MESSAGE);
    cr_assert_eq(m.u.message.flags, 1);
    cr_assert_eq(m.u.message.lsn, UINT64_C(0x15369E0));
    cr_assert_str_eq(m.u.message.prefix, "crw");
    cr_assert_eq(m.u.message.len, 5);
    cr_assert(memcmp(m.u.message.content, "hello", 5) == 0);

    decode_hand(message_bin_msg, sizeof message_bin_msg, streamed, &m);
    cr_assert_eq(m.u.message.flags, 0);
    cr_assert_eq(m.u.message.lsn, UINT64_C(0x1536AD8));
    cr_assert_str_eq(m.u.message.prefix, "");
    cr_assert_eq(m.u.message.len, 3);
    cr_assert(memcmp(m.u.message.content, "\x00\xff\x00", 3) == 0);
}
Test(pgoutput, message) { check_message(false); }
Test(pgoutput, message_streamed) { check_message(true); }

Test(pgoutput, stream_control) {
    crw_pgo_msg_t m;
    /* The stream control messages have no xid prefix, even inside a block. */
    for (int s = 0; s < 2; s++) {
        decode_ok(dec, stream_start_msg, sizeof stream_start_msg, s, &m);
        cr_assert_eq(m.type, CRW_PGO_STREAM_START);
        cr_assert_eq(m.xid, 0);
        cr_assert_eq(m.u.stream_start.xid, 749);
        cr_assert_eq(m.u.stream_start.first_segment, 1);

        decode_ok(dec, stream_stop_msg, sizeof stream_stop_msg, s, &m);
        cr_assert_eq(m.type, CRW_PGO_STREAM_STOP);
        cr_assert_eq(m.xid, 0);

        decode_ok(dec, stream_commit_msg, sizeof stream_commit_msg, s, &m);
        cr_assert_eq(m.type, CRW_PGO_STREAM_COMMIT);
        cr_assert_eq(m.u.stream_commit.xid, 749);
        cr_assert_eq(m.u.stream_commit.flags, 0);
        cr_assert_eq(m.u.stream_commit.commit_lsn, UINT64_C(0x156DA48));
        cr_assert_eq(m.u.stream_commit.end_lsn, UINT64_C(0x156DAC0));
        cr_assert_eq(m.u.stream_commit.commit_time, INT64_C(0x000304060B342023));

        decode_ok(dec, stream_abort_msg, sizeof stream_abort_msg, s, &m);
        cr_assert_eq(m.type, CRW_PGO_STREAM_ABORT);
        cr_assert_eq(m.u.stream_abort.xid, 749);
        cr_assert_eq(m.u.stream_abort.subxid, 752);
    }
}

Test(pgoutput, type_names) {
    cr_assert_str_eq(crw_pgo_type_name('B'), "Begin");
    cr_assert_str_eq(crw_pgo_type_name('I'), "Insert");
    cr_assert_str_eq(crw_pgo_type_name('c'), "Stream Commit");
    cr_assert_str_eq(crw_pgo_type_name('E'), "Stream Stop");
    cr_assert_str_eq(crw_pgo_type_name('K'), "unknown");
    cr_assert_str_eq(crw_pgo_type_name('\0'), "unknown");
}

/* ------------------------------------------- truncation and garbling */

Test(pgoutput, hand_prefixes) {
    for (size_t i = 0; i < NHANDS; i++) {
        check_prefixes(dec, hands[i].b, hands[i].len, false);
        if (hands[i].prefixed) {
            size_t n;
            unsigned char *p = with_xid(hands[i].b, hands[i].len, 0x2ED, &n);
            check_prefixes(dec, p, n, true);
            free(p);
        }
    }
}

Test(pgoutput, truncated_error_text) {
    /* Cut inside the length of the only column. */
    const unsigned char cut[] = {'I', B32(1), 'N', B16(1), 't', 0, 0};
    decode_fails(dec, cut, sizeof cut, false, "Insert: truncated at offset 9",
                 "(need 4 bytes for column length, have 2)");
    /* A column count that cannot fit is reported as such, before any allocation. */
    decode_fails(dec, insert_msg, 11, false, "Insert: column count 5 at offset 6 exceeds the 3 remaining bytes",
                 NULL);
    decode_fails(dec, NULL, 0, false, "truncated at offset 0", "message type");
}

Test(pgoutput, hand_trailing_bytes) {
    for (size_t i = 0; i < NHANDS; i++) {
        size_t n;
        unsigned char *p = with_tail(hands[i].b, hands[i].len, 1, &n);
        decode_fails(dec, p, n, false, crw_pgo_type_name((char)hands[i].b[0]), "1 trailing byte");
        free(p);
        p = with_tail(hands[i].b, hands[i].len, 7, &n);
        decode_fails(dec, p, n, false, "7 trailing bytes", NULL);
        free(p);
    }
}

Test(pgoutput, unknown_message_type) {
    const unsigned char z[] = {'Z', 0, 0};
    decode_fails(dec, z, sizeof z, false, "unknown message type 'Z' (0x5a)", NULL);
    /* Protocol 3's two-phase messages are not ours: 'K' is Commit Prepared. */
    const unsigned char k[] = {'K', 0};
    decode_fails(dec, k, sizeof k, false, "'K' (0x4b)", NULL);
    const unsigned char nul[] = {0};
    decode_fails(dec, nul, sizeof nul, false, "(0x00)", NULL);
}

Test(pgoutput, bad_tuple_tags) {
    unsigned char b[sizeof update_key_msg];

    /* Insert wants 'N' */
    unsigned char ins[sizeof insert_msg];
    memcpy(ins, insert_msg, sizeof ins);
    ins[5] = 'X';
    decode_fails(dec, ins, sizeof ins, false, "Insert: expected 'N' (new tuple) at offset 5", "'X'");
    ins[5] = 'K';
    decode_fails(dec, ins, sizeof ins, false, "Insert: expected 'N'", NULL);

    /* Update: bad first tag, then a bad tag after the old key */
    memcpy(b, update_key_msg, sizeof b);
    b[5] = 'Q';
    decode_fails(dec, b, sizeof b, false, "Update: expected 'K' (old key), 'O' (old tuple) or 'N'", "offset 5");
    memcpy(b, update_key_msg, sizeof b);
    b[15] = 'K'; /* where 'N' belongs */
    decode_fails(dec, b, sizeof b, false, "Update: expected 'N' (new tuple) at offset 15", NULL);

    /* Delete wants 'K' or 'O', not 'N' */
    unsigned char del[sizeof delete_key_msg];
    memcpy(del, delete_key_msg, sizeof del);
    del[5] = 'N';
    decode_fails(dec, del, sizeof del, false, "Delete: expected 'K' (old key) or 'O' (old tuple) at offset 5", NULL);
}

Test(pgoutput, bad_column_kind) {
    unsigned char b[sizeof insert_msg];
    memcpy(b, insert_msg, sizeof b);
    b[15] = 'x'; /* the 'n' of column 1 */
    decode_fails(dec, b, sizeof b, false, "Insert: unknown column kind 'x' (0x78) for column 1 at offset 15", NULL);
    memcpy(b, insert_msg, sizeof b);
    b[8] = 0x01; /* the 't' of column 0 */
    decode_fails(dec, b, sizeof b, false, "column kind '?' (0x01) for column 0 at offset 8", NULL);
}

Test(pgoutput, missing_nul) {
    /* Origin name without its NUL: the string runs to the end of the buffer. */
    decode_fails(dec, origin_msg, sizeof origin_msg - 1, false, "Origin: unterminated string for origin name",
                 "offset 9");
    /* Relation name's NUL replaced: the string swallows the rest, whose first NUL is
     * in the natts field, so the attribute decoding then runs out of bytes. */
    unsigned char r[sizeof relation_msg];
    memcpy(r, relation_msg, sizeof r);
    r[15] = 'X';
    char err[ERRSZ];
    crw_pgo_msg_t m;
    cr_assert_eq(crw_pgo_decode(dec, (const char *)r, sizeof r, false, &m, err, sizeof err), CRW_ERR_PROTOCOL);
    cr_assert(strstr(err, "Relation: ") && strstr(err, "offset"), "%s", err);
    /* Type name and prefix without NUL */
    decode_fails(dec, type_msg, sizeof type_msg - 1, false, "Type: unterminated string for type name", NULL);
    unsigned char p[] = {'M', 0, B64(1), 'a', 'b'};
    decode_fails(dec, p, sizeof p, false, "Message: unterminated string for prefix at offset 10", NULL);
}

Test(pgoutput, counts_beyond_the_buffer) {
    /* ncols 65535 with two bytes left: rejected before any allocation */
    unsigned char t[] = {'I', B32(1), 'N', B16(0xFFFF), 'n', 'n'};
    decode_fails(dec, t, sizeof t, false, "Insert: column count 65535 at offset 6", "exceeds the 2 remaining");
    /* natts 65535 */
    unsigned char r[] = {'R', B32(1), 0, 'r', 0, 'd', B16(0xFFFF), 0, 'a', 0};
    decode_fails(dec, r, sizeof r, false, "Relation: attribute count 65535", "offset 9");
    /* nrelids 2^32-1 */
    unsigned char tr[] = {'T', B32(0xFFFFFFFF), 0, B32(7)};
    decode_fails(dec, tr, sizeof tr, false, "Truncate: relation count 4294967295 at offset 1", NULL);
    /* a column length of 2^32-1 */
    unsigned char cl[] = {'I', B32(1), 'N', B16(1), 't', B32(0xFFFFFFFF), 'a'};
    decode_fails(dec, cl, sizeof cl, false, "Insert: truncated at offset 13", "need 4294967295 bytes for column value");
    /* a message length of 2^32-1 */
    unsigned char ml[] = {'M', 0, B64(1), 0, B32(0xFFFFFFFF), 'a'};
    decode_fails(dec, ml, sizeof ml, false, "Message: truncated at offset 15", "content");
}

Test(pgoutput, invalid_values) {
    unsigned char b[sizeof begin_msg];
    memcpy(b, begin_msg, sizeof b);
    memset(b + 1, 0, 8);
    decode_fails(dec, b, sizeof b, false, "Begin: final_lsn not set at offset 1", NULL);

    unsigned char c[sizeof commit_msg];
    memcpy(c, commit_msg, sizeof c);
    c[1] = 2;
    decode_fails(dec, c, sizeof c, false, "Commit: unrecognized flags 0x02 at offset 1", NULL);
    unsigned char sc[sizeof stream_commit_msg];
    memcpy(sc, stream_commit_msg, sizeof sc);
    sc[5] = 1;
    decode_fails(dec, sc, sizeof sc, false, "Stream Commit: unrecognized flags 0x01 at offset 5", NULL);

    size_t n;
    unsigned char *p = with_xid(insert_msg, sizeof insert_msg, 0, &n);
    decode_fails(dec, p, n, true, "Insert: invalid stream xid 0 at offset 1", NULL);
    free(p);
}

/* A Relation for OID 0 (InvalidOid, which proto.c never sends) is refused: the relation cache
 * keys entries by OID with 0 as its empty slot, so such an entry leaked and answered look-ups of
 * OID 0 (tests/fuzz/corpus/pgoutput/crash-relation-oid-0). */
Test(pgoutput, relation_oid_zero_is_refused) {
    unsigned char r[sizeof relation_msg];
    memcpy(r, relation_msg, sizeof r);
    memset(r + 1, 0, 4);
    decode_fails(dec, r, sizeof r, false, "Relation: invalid relation OID 0 at offset 1", NULL);
    size_t n;
    unsigned char *p = with_xid(r, sizeof r, 7, &n);
    decode_fails(dec, p, n, true, "Relation: invalid relation OID 0 at offset 5", NULL);
    free(p);
}

Test(pgoutput, errstr_small_or_null) {
    crw_pgo_msg_t m;
    char tiny[8];
    int rc = crw_pgo_decode(dec, (const char *)insert_msg, 12, false, &m, tiny, sizeof tiny);
    cr_assert_eq(rc, CRW_ERR_PROTOCOL);
    cr_assert_eq(strlen(tiny), sizeof tiny - 1);
    rc = crw_pgo_decode(dec, (const char *)insert_msg, 12, false, &m, NULL, 0);
    cr_assert_eq(rc, CRW_ERR_PROTOCOL);
}

/* -------------------------------------------------------- allocation */

Test(pgoutput, arrays_are_reused) {
    crw_pgo_msg_t m;
    decode_ok(dec, insert_msg, sizeof insert_msg, false, &m);
    const crw_pgo_col_t *cols = m.u.insert.newtup.cols;
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(crw_pgo_decode(dec, (const char *)insert_msg, sizeof insert_msg, false, &m, NULL, 0), 0);
        cr_assert_eq(m.u.insert.newtup.cols, cols, "column array reallocated on row %d", i);
    }
    decode_ok(dec, relation_msg, sizeof relation_msg, false, &m);
    const crw_pgo_attr_t *atts = m.u.relation.atts;
    decode_ok(dec, relation_msg, sizeof relation_msg, false, &m);
    cr_assert_eq(m.u.relation.atts, atts);
    decode_ok(dec, truncate_msg, sizeof truncate_msg, false, &m);
    const uint32_t *relids = m.u.truncate.relids;
    decode_ok(dec, truncate_msg, sizeof truncate_msg, false, &m);
    cr_assert_eq(m.u.truncate.relids, relids);
}

Test(pgoutput, destroy_null) { crw_pgo_decoder_destroy(NULL); }

/* ------------------------------------------------------------ captures */

typedef struct capture {
    size_t n;
    unsigned char **msg;
    size_t *len;
    bool *streamed; /* inside a Stream Start/Stop block */
} capture_t;

static int hexval(int c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Loads tests/fixtures/pgoutput/<name>: one hex message a line, '#' comments. */
static capture_t load_capture(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/pgoutput/%s", CRW_FIXTURES, name);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot open %s", path);
    capture_t c = {0};
    size_t cap = 0;
    bool in_stream = false;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t ll;
    int lineno = 0;
    while ((ll = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        while (ll > 0 && (line[ll - 1] == '\n' || line[ll - 1] == '\r'))
            line[--ll] = '\0';
        if (ll == 0 || line[0] == '#')
            continue;
        cr_assert(ll % 2 == 0, "%s:%d: odd hex length", name, lineno);
        if (c.n == cap) {
            cap = cap ? cap * 2 : 64;
            c.msg = realloc(c.msg, cap * sizeof *c.msg);
            c.len = realloc(c.len, cap * sizeof *c.len);
            c.streamed = realloc(c.streamed, cap * sizeof *c.streamed);
            cr_assert(c.msg && c.len && c.streamed);
        }
        size_t n = (size_t)ll / 2;
        unsigned char *b = malloc(n);
        cr_assert_not_null(b);
        for (size_t i = 0; i < n; i++) {
            int hi = hexval(line[2 * i]), lo = hexval(line[2 * i + 1]);
            cr_assert(hi >= 0 && lo >= 0, "%s:%d: bad hex", name, lineno);
            b[i] = (unsigned char)(hi << 4 | lo);
        }
        /* The caller's job, as in the service: track Stream Start/Stop. */
        if (b[0] == CRW_PGO_STREAM_START)
            in_stream = true;
        c.msg[c.n] = b;
        c.len[c.n] = n;
        c.streamed[c.n] = in_stream && b[0] != CRW_PGO_STREAM_START;
        if (b[0] == CRW_PGO_STREAM_STOP)
            in_stream = false, c.streamed[c.n] = false;
        c.n++;
    }
    free(line);
    fclose(f);
    cr_assert_gt(c.n, 0, "%s holds no messages", name);
    return c;
}

static void free_capture(capture_t *c) {
    for (size_t i = 0; i < c->n; i++)
        free(c->msg[i]);
    free(c->msg);
    free(c->len);
    free(c->streamed);
}

/* Decodes message i of the capture. */
static void cap_decode(const capture_t *c, size_t i, crw_pgo_msg_t *m) {
    char err[ERRSZ] = "";
    int rc = crw_pgo_decode(dec, (const char *)c->msg[i], c->len[i], c->streamed[i], m, err, sizeof err);
    cr_assert_eq(rc, 0, "message %zu (type '%c', %zu bytes): %s", i, c->msg[i][0], c->len[i], err);
}

/* Index of the nth (0-based) message of a type that satisfies relid (0: any). */
static size_t cap_find(const capture_t *c, char type, uint32_t relid, int nth) {
    for (size_t i = 0; i < c->n; i++) {
        if (c->msg[i][0] != (unsigned char)type)
            continue;
        crw_pgo_msg_t m;
        cap_decode(c, i, &m);
        uint32_t r = 0;
        switch (type) {
        case CRW_PGO_RELATION: r = m.u.relation.relid; break;
        case CRW_PGO_TYPE: r = m.u.type.typoid; break;
        case CRW_PGO_INSERT: r = m.u.insert.relid; break;
        case CRW_PGO_UPDATE: r = m.u.update.relid; break;
        case CRW_PGO_DELETE: r = m.u.del.relid; break;
        default: break;
        }
        if (relid && r != relid)
            continue;
        if (nth-- == 0)
            return i;
    }
    cr_assert_fail("no message '%c' relid %u in the capture", type, relid);
    return 0;
}

static void cap_get(const capture_t *c, char type, uint32_t relid, int nth, crw_pgo_msg_t *m) {
    cap_decode(c, cap_find(c, type, relid, nth), m);
}

/* Decodes every message; checks transaction framing; returns per-type counts. */
static void cap_decode_all(const capture_t *c, int counts[256]) {
    memset(counts, 0, 256 * sizeof counts[0]);
    uint64_t final_lsn = 0;
    int64_t begin_time = 0;
    for (size_t i = 0; i < c->n; i++) {
        crw_pgo_msg_t m;
        cap_decode(c, i, &m);
        counts[(unsigned char)m.type]++;
        if (m.type == CRW_PGO_BEGIN) {
            final_lsn = m.u.begin.final_lsn;
            begin_time = m.u.begin.commit_time;
        } else if (m.type == CRW_PGO_COMMIT) {
            /* Begin announces the commit record that Commit then reports. */
            cr_assert_eq(m.u.commit.commit_lsn, final_lsn, "message %zu: Commit LSN != Begin final_lsn", i);
            cr_assert_eq(m.u.commit.commit_time, begin_time);
            cr_assert_gt(m.u.commit.end_lsn, m.u.commit.commit_lsn);
        }
        if (c->streamed[i])
            cr_assert_neq(m.xid, 0);
        else
            cr_assert_eq(m.xid, 0);
    }
}

static void cap_check_prefixes(const capture_t *c) {
    for (size_t i = 0; i < c->n; i++)
        check_prefixes(dec, c->msg[i], c->len[i], c->streamed[i]);
}

/* Appended bytes fail; overwriting any byte fails cleanly or decodes. */
static void cap_check_garbled(const capture_t *c) {
    static const unsigned char junk[] = {0x00, 0xff, 'n', 't', 'N', 0x7f};
    for (size_t i = 0; i < c->n; i++) {
        size_t n;
        unsigned char *p = with_tail(c->msg[i], c->len[i], 1, &n);
        decode_fails(dec, p, n, c->streamed[i], "trailing", NULL);
        free(p);
        p = dup_bytes(c->msg[i], c->len[i]);
        for (size_t k = 0; k < c->len[i]; k++) {
            for (size_t j = 0; j < sizeof junk; j++) {
                char err[ERRSZ] = "";
                crw_pgo_msg_t m;
                unsigned char save = p[k];
                p[k] = junk[j];
                int rc = crw_pgo_decode(dec, (const char *)p, c->len[i], c->streamed[i], &m, err, sizeof err);
                p[k] = save;
                cr_assert(rc == 0 || (rc == CRW_ERR_PROTOCOL && strstr(err, "offset")),
                          "message %zu byte %zu = 0x%02x: rc %d \"%s\"", i, k, junk[j], rc, err);
            }
        }
        free(p);
    }
}

/* Relation OIDs of the capture database (see the fixture headers). */
enum {
    OID_POSINT = 16394, /* shop.posint, a domain over int4 */
    OID_MOOD = 16386,   /* shop.mood, an enum */
    OID_ITEMS = 16396,
    OID_AUDIT = 16403,
    OID_GEN = 16408,
};

static const char *const items_cols[] = {"id",   "name",   "price",   "qty",  "tags", "mood",
                                         "created", "active", "payload", "blob", "note", "big"};
static const uint32_t items_types[] = {20, 25, 1700, OID_POSINT, 1009, OID_MOOD, 1184, 16, 3802, 17, 1043, 25};

Test(pgoutput, capture_proto1) {
    capture_t c = load_capture("pg15_proto1.txt");
    int counts[256];
    cap_decode_all(&c, counts);
    cr_assert_eq(counts['B'], 12);
    cr_assert_eq(counts['C'], 12);
    cr_assert_eq(counts['O'], 1);
    cr_assert_eq(counts['M'], 2);
    cr_assert_eq(counts['T'], 2);
    cr_assert_eq(counts['Y'], 4);

    crw_pgo_msg_t m;
    /* Type: a domain arrives with its base type's name, pg_catalog as "". */
    cap_get(&c, 'Y', OID_POSINT, 0, &m);
    cr_assert_str_eq(m.u.type.nspname, "");
    cr_assert_str_eq(m.u.type.typname, "int4");
    cap_get(&c, 'Y', OID_MOOD, 0, &m);
    cr_assert_str_eq(m.u.type.nspname, "shop");
    cr_assert_str_eq(m.u.type.typname, "mood");

    cap_get(&c, 'R', OID_ITEMS, 0, &m);
    cr_assert_str_eq(m.u.relation.nspname, "shop");
    cr_assert_str_eq(m.u.relation.relname, "items");
    cr_assert_eq(m.u.relation.replident, 'd');
    cr_assert_eq(m.u.relation.natts, 12);
    for (int i = 0; i < 12; i++) {
        cr_assert_str_eq(m.u.relation.atts[i].name, items_cols[i]);
        cr_assert_eq(m.u.relation.atts[i].typoid, items_types[i], "column %s", items_cols[i]);
        cr_assert_eq(m.u.relation.atts[i].flags, i == 0 ? 1 : 0, "column %s", items_cols[i]);
    }
    cr_assert_eq(m.u.relation.atts[2].typmod, (10 << 16 | 2) + 4); /* numeric(10,2) */
    cr_assert_eq(m.u.relation.atts[10].typmod, 40 + 4);           /* varchar(40) */
    cr_assert_eq(m.u.relation.atts[0].typmod, -1);

    /* Generated and dropped columns are not sent. */
    cap_get(&c, 'R', OID_GEN, 0, &m);
    cr_assert_str_eq(m.u.relation.nspname, "public");
    cr_assert_str_eq(m.u.relation.relname, "gen");
    cr_assert_eq(m.u.relation.natts, 2);
    cr_assert_str_eq(m.u.relation.atts[0].name, "id");
    cr_assert_str_eq(m.u.relation.atts[1].name, "a");

    cap_get(&c, 'R', OID_AUDIT, 0, &m);
    cr_assert_eq(m.u.relation.replident, 'f');
    cr_assert_eq(m.u.relation.atts[0].flags, 1);
    cr_assert_eq(m.u.relation.atts[1].flags, 1);

    /* The first row, every column as text. */
    cap_get(&c, 'I', OID_ITEMS, 0, &m);
    const crw_pgo_col_t *v = m.u.insert.newtup.cols;
    cr_assert_eq(m.u.insert.newtup.ncols, 12);
    COL_TEXT(&v[0], "1");
    COL_TEXT(&v[1], "widget");
    COL_TEXT(&v[2], "9.99");
    COL_TEXT(&v[3], "3");
    COL_TEXT(&v[4], "{a,\"b c\"}");
    COL_TEXT(&v[5], "happy");
    COL_TEXT(&v[6], "2024-01-02 03:04:05.678+00");
    COL_TEXT(&v[7], "t");
    COL_TEXT(&v[8], "{\"k\": [1, 2]}");
    COL_TEXT(&v[9], "\\x00ff10");
    COL_TEXT(&v[10], "h\xc3\xa9llo \"w\xc3\xb6rld\"");
    cr_assert_eq(v[11].kind, 't');
    cr_assert_eq(v[11].len, 3000);
    for (int i = 0; i < 3000; i++)
        cr_assert_eq(v[11].data[i], 'x');
    /* The second row: nulls. */
    cap_get(&c, 'I', OID_ITEMS, 1, &m);
    COL_TEXT(&m.u.insert.newtup.cols[1], "gadget");
    for (int i = 2; i < 12; i++)
        COL_NULL(&m.u.insert.newtup.cols[i]);

    /* Non-key update, default identity: no old tuple; the TOASTed column is 'u'. */
    cap_get(&c, 'U', OID_ITEMS, 0, &m);
    cr_assert_eq(m.u.update.oldkind, 0);
    COL_TEXT(&m.u.update.newtup.cols[2], "10.50");
    COL_TEXT(&m.u.update.newtup.cols[7], "f");
    COL_UNCHANGED(&m.u.update.newtup.cols[11]);
    /* Key update: the old key, every column present, non-key ones null. */
    cap_get(&c, 'U', OID_ITEMS, 1, &m);
    cr_assert_eq(m.u.update.oldkind, 'K');
    cr_assert_eq(m.u.update.oldtup.ncols, 12);
    COL_TEXT(&m.u.update.oldtup.cols[0], "2");
    for (int i = 1; i < 12; i++)
        COL_NULL(&m.u.update.oldtup.cols[i]);
    COL_TEXT(&m.u.update.newtup.cols[0], "20");
    COL_TEXT(&m.u.update.newtup.cols[1], "gadget2");
    /* REPLICA IDENTITY FULL: the whole old row. */
    cap_get(&c, 'U', OID_AUDIT, 0, &m);
    cr_assert_eq(m.u.update.oldkind, 'O');
    COL_TEXT(&m.u.update.oldtup.cols[0], "1");
    COL_TEXT(&m.u.update.oldtup.cols[1], "one");
    COL_TEXT(&m.u.update.newtup.cols[0], "1");
    COL_TEXT(&m.u.update.newtup.cols[1], "uno");

    cap_get(&c, 'D', OID_AUDIT, 0, &m);
    cr_assert_eq(m.u.del.oldkind, 'O');
    COL_TEXT(&m.u.del.oldtup.cols[0], "2");
    COL_NULL(&m.u.del.oldtup.cols[1]);
    cap_get(&c, 'D', OID_ITEMS, 0, &m);
    cr_assert_eq(m.u.del.oldkind, 'K');
    COL_TEXT(&m.u.del.oldtup.cols[0], "20");

    cap_get(&c, 'I', OID_GEN, 0, &m);
    cr_assert_eq(m.u.insert.newtup.ncols, 2);
    COL_TEXT(&m.u.insert.newtup.cols[0], "7");
    COL_TEXT(&m.u.insert.newtup.cols[1], "21");

    cap_get(&c, 'M', 0, 0, &m);
    cr_assert_eq(m.u.message.flags, 1);
    cr_assert_str_eq(m.u.message.prefix, "crw");
    cr_assert_eq(m.u.message.len, 19);
    cr_assert(memcmp(m.u.message.content, "transactional hello", 19) == 0);
    cap_get(&c, 'M', 0, 1, &m);
    cr_assert_eq(m.u.message.flags, 0);
    cr_assert_str_eq(m.u.message.prefix, "crw.bin");
    cr_assert_eq(m.u.message.len, 5);
    cr_assert(memcmp(m.u.message.content, "\x00\x01\x02\x03\xff", 5) == 0);

    cap_get(&c, 'T', 0, 0, &m);
    cr_assert_eq(m.u.truncate.options, 0);
    cr_assert_eq(m.u.truncate.nrels, 1);
    cr_assert_eq(m.u.truncate.relids[0], OID_AUDIT);
    cap_get(&c, 'T', 0, 1, &m);
    cr_assert_eq(m.u.truncate.options, 3); /* CASCADE | RESTART IDENTITY */
    cr_assert_eq(m.u.truncate.nrels, 2);
    cr_assert_eq(m.u.truncate.relids[0], OID_GEN);
    cr_assert_eq(m.u.truncate.relids[1], OID_ITEMS);

    /* Origin follows its Begin; the commit time came from xact_setup. */
    size_t o = cap_find(&c, 'O', 0, 0);
    cap_decode(&c, o, &m);
    cr_assert_eq(m.u.origin.lsn, UINT64_C(0xABCDEF01));
    cr_assert_str_eq(m.u.origin.name, "upstream");
    cap_decode(&c, o - 1, &m);
    cr_assert_eq(m.type, CRW_PGO_BEGIN);
    /* 2024-05-06 07:08:09 UTC, in microseconds since 2000-01-01 */
    cr_assert_eq(m.u.begin.commit_time + CRW_PG_EPOCH_OFFSET_US, INT64_C(1714979289) * 1000000);
    free_capture(&c);
}

Test(pgoutput, capture_proto1_binary) {
    capture_t c = load_capture("pg15_proto1_binary.txt");
    int counts[256];
    cap_decode_all(&c, counts);
    crw_pgo_msg_t m;
    cap_get(&c, 'I', OID_ITEMS, 0, &m);
    const crw_pgo_col_t *v = m.u.insert.newtup.cols;
    COL_BIN(&v[0], "\x00\x00\x00\x00\x00\x00\x00\x01"); /* int8send */
    COL_BIN(&v[1], "widget");
    COL_BIN(&v[3], "\x00\x00\x00\x03");
    COL_BIN(&v[5], "happy");  /* enum_send: the label */
    COL_BIN(&v[7], "\x01");   /* boolsend */
    COL_BIN(&v[8], "\x01{\"k\": [1, 2]}"); /* jsonb_send: version byte 1 */
    COL_BIN(&v[9], "\x00\xff\x10");
    cr_assert_eq(v[11].kind, 'b');
    cr_assert_eq(v[11].len, 3000);
    cap_get(&c, 'U', OID_ITEMS, 0, &m);
    COL_UNCHANGED(&m.u.update.newtup.cols[11]);
    free_capture(&c);
}

Test(pgoutput, capture_proto1_identity) {
    capture_t c = load_capture("pg15_proto1_identity.txt");
    int counts[256];
    cap_decode_all(&c, counts);
    crw_pgo_msg_t m;
    size_t i = cap_find(&c, 'R', 0, 0);
    cap_decode(&c, i, &m);
    uint32_t acct = m.u.relation.relid;
    cr_assert_str_eq(m.u.relation.relname, "acct");
    cr_assert_eq(m.u.relation.replident, 'i');
    cr_assert_eq(m.u.relation.natts, 4);
    static const uint8_t flags[] = {0, 1, 0, 0};
    static const uint32_t types[] = {23, 25, 20, 25};
    for (int k = 0; k < 4; k++) {
        cr_assert_eq(m.u.relation.atts[k].flags, flags[k]);
        cr_assert_eq(m.u.relation.atts[k].typoid, types[k]);
    }
    /* Identity column unchanged: no old key. */
    cap_get(&c, 'U', acct, 0, &m);
    cr_assert_eq(m.u.update.oldkind, 0);
    COL_TEXT(&m.u.update.newtup.cols[2], "101");
    /* Identity column changed: the old key holds only the index column. */
    cap_get(&c, 'U', acct, 1, &m);
    cr_assert_eq(m.u.update.oldkind, 'K');
    COL_NULL(&m.u.update.oldtup.cols[0]);
    COL_TEXT(&m.u.update.oldtup.cols[1], "b@example.com");
    COL_NULL(&m.u.update.oldtup.cols[2]);
    COL_NULL(&m.u.update.oldtup.cols[3]);
    COL_TEXT(&m.u.update.newtup.cols[1], "c@example.com");
    COL_TEXT(&m.u.update.newtup.cols[2], "-5");
    COL_NULL(&m.u.update.newtup.cols[3]);
    cap_get(&c, 'D', acct, 0, &m);
    cr_assert_eq(m.u.del.oldkind, 'K');
    COL_TEXT(&m.u.del.oldtup.cols[1], "a@example.com");

    cap_get(&c, 'R', 0, 1, &m);
    cr_assert_str_eq(m.u.relation.relname, "nothing");
    cr_assert_eq(m.u.relation.replident, 'n');
    cr_assert_eq(m.u.relation.atts[0].flags, 0);
    free_capture(&c);
}

Test(pgoutput, capture_proto2_stream) {
    capture_t c = load_capture("pg15_proto2_stream.txt");
    int counts[256];
    cap_decode_all(&c, counts);
    cr_assert_eq(counts['S'], 6);
    cr_assert_eq(counts['E'], 6);
    cr_assert_eq(counts['c'], 2);
    cr_assert_eq(counts['A'], 2);
    cr_assert_eq(counts['B'], 0); /* every transaction here was streamed */

    crw_pgo_msg_t m;
    /* First transaction: three blocks, then Stream Commit. */
    cap_decode(&c, 0, &m);
    cr_assert_eq(m.type, CRW_PGO_STREAM_START);
    cr_assert_eq(m.u.stream_start.xid, 749);
    cr_assert_eq(m.u.stream_start.first_segment, 1);
    cap_get(&c, 'S', 0, 1, &m);
    cr_assert_eq(m.u.stream_start.xid, 749);
    cr_assert_eq(m.u.stream_start.first_segment, 0);

    cap_get(&c, 'Y', OID_MOOD, 0, &m);
    cr_assert_eq(m.xid, 749);
    cr_assert_str_eq(m.u.type.nspname, "shop");
    cr_assert_str_eq(m.u.type.typname, "mood");
    size_t r = cap_find(&c, 'R', 0, 0);
    cap_decode(&c, r, &m);
    cr_assert_eq(m.xid, 749);
    uint32_t bulk = m.u.relation.relid;
    cr_assert_str_eq(m.u.relation.relname, "bulk");
    cr_assert_eq(m.u.relation.natts, 3);
    cr_assert_eq(m.u.relation.atts[2].typoid, OID_MOOD);

    cap_get(&c, 'I', bulk, 0, &m);
    cr_assert_eq(m.xid, 749);
    COL_TEXT(&m.u.insert.newtup.cols[0], "1");
    COL_TEXT(&m.u.insert.newtup.cols[1], "row 1");
    COL_TEXT(&m.u.insert.newtup.cols[2], "ok");
    cap_get(&c, 'I', bulk, 1199, &m);
    COL_TEXT(&m.u.insert.newtup.cols[1], "row 1200");

    cap_get(&c, 'M', 0, 0, &m);
    cr_assert_eq(m.xid, 749);
    cr_assert_eq(m.u.message.flags, 1);
    cr_assert_str_eq(m.u.message.prefix, "crw");
    cr_assert_eq(m.u.message.len, 15);
    cr_assert(memcmp(m.u.message.content, "inside a stream", 15) == 0);
    cap_get(&c, 'U', bulk, 0, &m);
    cr_assert_eq(m.xid, 749);
    cr_assert_eq(m.u.update.oldkind, 0);
    COL_TEXT(&m.u.update.newtup.cols[1], "changed");
    cap_get(&c, 'D', bulk, 0, &m);
    cr_assert_eq(m.xid, 749);
    cr_assert_eq(m.u.del.oldkind, 'K');
    COL_TEXT(&m.u.del.oldtup.cols[0], "2");
    cap_get(&c, 'T', 0, 0, &m);
    cr_assert_eq(m.xid, 749);
    cr_assert_eq(m.u.truncate.nrels, 1);

    cap_get(&c, 'c', 0, 0, &m);
    cr_assert_eq(m.u.stream_commit.xid, 749);
    cr_assert_eq(m.u.stream_commit.flags, 0);
    cr_assert_gt(m.u.stream_commit.end_lsn, m.u.stream_commit.commit_lsn);

    /* Second transaction rolled back whole: xid == subxid. */
    cap_get(&c, 'A', 0, 0, &m);
    cr_assert_eq(m.u.stream_abort.xid, 750);
    cr_assert_eq(m.u.stream_abort.subxid, 750);
    /* Third: ROLLBACK TO SAVEPOINT aborts a subtransaction. */
    cap_get(&c, 'A', 0, 1, &m);
    cr_assert_eq(m.u.stream_abort.xid, 751);
    cr_assert_eq(m.u.stream_abort.subxid, 752);
    /* Its last block's changes carry the new subtransaction's xid. */
    size_t last = c.n - 3; /* then Stream Stop, Stream Commit */
    cap_decode(&c, last, &m);
    cr_assert_eq(m.type, CRW_PGO_INSERT);
    cr_assert_eq(m.xid, 753);
    COL_TEXT(&m.u.insert.newtup.cols[1], "kept too");
    cap_decode(&c, c.n - 1, &m);
    cr_assert_eq(m.type, CRW_PGO_STREAM_COMMIT);
    cr_assert_eq(m.u.stream_commit.xid, 751);
    free_capture(&c);
}

Test(pgoutput, capture_prefixes, .timeout = 60) {
    static const char *const files[] = {"pg15_proto1.txt", "pg15_proto1_binary.txt", "pg15_proto1_identity.txt",
                                        "pg15_proto2_stream.txt"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        capture_t c = load_capture(files[i]);
        cap_check_prefixes(&c);
        free_capture(&c);
    }
}

Test(pgoutput, capture_garbled, .timeout = 60) {
    static const char *const files[] = {"pg15_proto1.txt", "pg15_proto1_binary.txt", "pg15_proto1_identity.txt",
                                        "pg15_proto2_stream.txt"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        capture_t c = load_capture(files[i]);
        cap_check_garbled(&c);
        free_capture(&c);
    }
}
