/*
 * mock_kafka_txn.c — the transaction layer of crwatch-mock-kafka: a Kafka
 * protocol relay in front of librdkafka's mock cluster that writes
 * transaction markers and serves read_committed fetches the way a broker
 * does.  See mock_kafka_txn.h for what it does and does not do.
 *
 * Wire formats (Kafka protocol, big-endian): the non-flexible versions of
 * what the layer rewrites — it caps Metadata, FindCoordinator and EndTxn
 * with rd_kafka_mock_set_apiversion(); Produce (<= 7) and Fetch (<= 11) are
 * non-flexible in the mock already — and InitProducerId v0-4, whose v3+
 * epoch bump (KIP-360) librdkafka needs to go on after a refused message.
 * A request of a version the layer does not know is relayed untouched.
 */
#include "mock_kafka_txn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_BROKERS 9
#define MAX_FRAME (64 * 1024 * 1024)

/* ApiKeys */
enum { API_PRODUCE = 0, API_FETCH = 1, API_METADATA = 3, API_FIND_COORDINATOR = 10, API_API_VERSIONS = 18,
       API_CREATE_TOPICS = 19, API_INIT_PRODUCER_ID = 22, API_ADD_PARTITIONS_TO_TXN = 24, API_END_TXN = 26 };
#define CREATE_TOPICS_MAX_VERSION 4 /* the last non-flexible one */

/* RecordBatch v2 header: field offsets and its size. */
enum { RB_BASE_OFFSET = 0, RB_MAGIC = 16, RB_CRC = 17, RB_ATTRIBUTES = 21, RB_PRODUCER_ID = 43,
       RB_RECORD_COUNT = 57, RB_HEADER_SIZE = 61 };
#define RB_ATTR_TRANSACTIONAL 0x10
#define RB_ATTR_CONTROL 0x20

/* ---- byte buffers --------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf_t;

static void buf_put(buf_t *b, const void *d, size_t n) {
    if (n == 0)
        return; /* an empty buffer has no storage: NULL + 0 is undefined */
    if (b->len + n > b->cap) {
        size_t c = b->cap ? b->cap : 4096;
        while (c < b->len + n)
            c *= 2;
        uint8_t *np = realloc(b->p, c);
        if (!np) {
            fprintf(stderr, "crwatch-mock-kafka: out of memory\n");
            abort();
        }
        b->p = np;
        b->cap = c;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void put_i8(buf_t *b, int8_t v) { buf_put(b, &v, 1); }
static void put_i16(buf_t *b, int16_t v) {
    uint16_t x = htons((uint16_t)v);
    buf_put(b, &x, 2);
}
static void put_i32(buf_t *b, int32_t v) {
    uint32_t x = htonl((uint32_t)v);
    buf_put(b, &x, 4);
}
static void put_i64(buf_t *b, int64_t v) {
    put_i32(b, (int32_t)((uint64_t)v >> 32));
    put_i32(b, (int32_t)(uint32_t)v);
}
static void put_str(buf_t *b, const char *s) {
    put_i16(b, (int16_t)strlen(s));
    buf_put(b, s, strlen(s));
}

static void buf_consume(buf_t *b, size_t n) {
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get_u32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static int64_t get_i64(const uint8_t *p) { return (int64_t)((uint64_t)get_u32(p) << 32 | get_u32(p + 4)); }
static void set_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A bounds-checked reader: every read past the end sets bad and returns 0. */
typedef struct {
    uint8_t *p;
    size_t n, o;
    bool bad;
} rd_t;

static uint8_t *r_take(rd_t *r, size_t k) {
    if (r->bad || r->n - r->o < k) {
        r->bad = true;
        return NULL;
    }
    uint8_t *at = r->p + r->o;
    r->o += k;
    return at;
}
static int8_t r_i8(rd_t *r) {
    uint8_t *p = r_take(r, 1);
    return p ? (int8_t)*p : 0;
}
static int16_t r_i16(rd_t *r) {
    uint8_t *p = r_take(r, 2);
    return p ? (int16_t)get_u16(p) : 0;
}
static int32_t r_i32(rd_t *r) {
    uint8_t *p = r_take(r, 4);
    return p ? (int32_t)get_u32(p) : 0;
}
static int64_t r_i64(rd_t *r) {
    uint8_t *p = r_take(r, 8);
    return p ? get_i64(p) : 0;
}
/* STRING / NULLABLE_STRING: a malloc'd copy (NULL for null). */
static char *r_str(rd_t *r) {
    int16_t n = r_i16(r);
    if (n < 0)
        return NULL;
    uint8_t *p = r_take(r, (size_t)n);
    if (!p)
        return NULL;
    char *s = malloc((size_t)n + 1);
    memcpy(s, p, (size_t)n);
    s[n] = '\0';
    return s;
}
/* UNSIGNED_VARINT (flexible versions). */
static uint64_t r_uvarint(rd_t *r) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        uint8_t *p = r_take(r, 1);
        if (!p)
            return 0;
        v |= (uint64_t)(*p & 0x7f) << shift;
        if (!(*p & 0x80))
            return v;
    }
    r->bad = true;
    return 0;
}
/* COMPACT_NULLABLE_STRING: length + 1 as an unsigned varint, 0 for null. */
static char *r_compact_str(rd_t *r) {
    uint64_t n = r_uvarint(r);
    if (n == 0 || r->bad)
        return NULL;
    uint8_t *p = r_take(r, (size_t)(n - 1));
    if (!p)
        return NULL;
    char *s = malloc((size_t)n);
    memcpy(s, p, (size_t)(n - 1));
    s[n - 1] = '\0';
    return s;
}
/* TAG_BUFFER: skipped. */
static void r_skip_tags(rd_t *r) {
    for (uint64_t n = r_uvarint(r); n > 0 && !r->bad; n--) {
        r_uvarint(r);
        r_take(r, (size_t)r_uvarint(r));
    }
}
static void r_skip_str(rd_t *r) {
    int16_t n = r_i16(r);
    if (n > 0)
        r_take(r, (size_t)n);
}

/* CRC-32C (Castagnoli), as RecordBatch v2 uses it. */
static uint32_t crc32c(const uint8_t *p, size_t n) {
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0x82F63B78u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* CRW_TXN_TRACE=1: what the layer decides, on stderr. */
static void trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void trace(const char *fmt, ...) {
    static int on = -1;
    if (on < 0)
        on = getenv("CRW_TXN_TRACE") && *getenv("CRW_TXN_TRACE") == '1';
    if (!on)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("crwatch-mock-kafka: txn: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- transaction state ---------------------------------------------------- */

enum { TXB_OPEN, TXB_COMMITTED, TXB_ABORTED };

typedef struct {
    int64_t base, pid;
    int state;
} txbatch_t;

typedef struct {
    int64_t pid, first, last; /* last: the ABORT marker's offset */
} aborted_t;

typedef struct {
    int64_t pid, offset;
    bool commit;
} marker_t; /* a marker the layer appended */

typedef struct {
    char *topic;
    int32_t part;
    txbatch_t *b; /* transactional data batches, by base offset */
    size_t nb, cb;
    aborted_t *ab;
    size_t nab, cab;
    marker_t *mk; /* in offset order */
    size_t nmk, cmk;
} tpart_t;

typedef struct {
    size_t tp;     /* index into tps */
    int64_t first; /* first offset the transaction wrote there */
} txpart_t;

typedef struct {
    char *tid;
    bool fenced_known;      /* cur_* is set */
    int64_t cur_pid;        /* the producer the last InitProducerId gave this id: */
    int16_t cur_epoch;      /* any other is fenced */
    int64_t pid;            /* the open transaction's producer */
    int16_t epoch;
    txpart_t *parts;        /* partitions the open transaction wrote */
    size_t np, cp;
} txn_t;

/* ---- connections ---------------------------------------------------------- */

typedef struct {
    char *topic;
    int32_t part;
    int64_t pid;
    int16_t epoch;
    bool txn; /* a transactional data batch */
} ppart_t;

typedef struct {
    int32_t corr;
    int16_t api, ver; /* api -1: relay the response untouched */
    int8_t isolation; /* Fetch: 1 = read_committed */
    char *tid;
    bool commit;   /* EndTxn */
    int64_t pid;   /* EndTxn */
    int16_t epoch; /* EndTxn */
    ppart_t *pp; /* Produce: what each partition got */
    size_t npp;
    buf_t synth; /* a response the layer gives itself (CreateTopics), in its turn */
} pend_t;

typedef struct {
    char *name;
    int32_t partitions;
    int16_t replication;
    char *configs; /* "k=v,k=v" as asked */
} created_t;

typedef struct {
    int cfd, ufd; /* client side, mock broker side */
    int broker;
    buf_t cin, cout, uin, uout;
    pend_t *q; /* requests awaiting responses, in order */
    size_t qh, qn, qc;
    bool client_gone;
} conn_t;

struct crw_txnlayer {
    rd_kafka_mock_cluster_t *mcluster; /* NULL: detached (crw_txnlayer_new_detached) */
    int64_t next_marker;               /* detached: the offset the next marker gets */
    created_t *created; /* topics made through CreateTopics */
    size_t ncreated, ccreated;
    int nb;
    int lfd[MAX_BROKERS];
    int mport[MAX_BROKERS], pport[MAX_BROKERS];
    char mhost[MAX_BROKERS][64];
    int markfd[MAX_BROKERS]; /* blocking connections for marker appends */
    int32_t markcorr;
    char bootstraps[MAX_BROKERS * 32];
    conn_t **conns;
    size_t nconns, cconns;
    tpart_t *tps;
    size_t ntps, ctps;
    txn_t *txns;
    size_t ntx, ctx;
    struct pollfd *pfds;
    size_t cpfds;
    char *refuse_topic; /* crw_txnlayer_refuse: Produce requests for it get refuse_code, refuse_left times */
    int16_t refuse_code;
    int refuse_left;
};

#define GROW(arr, n, cap)                                                                  \
    do {                                                                                   \
        if ((n) == (cap)) {                                                                \
            (cap) = (cap) ? (cap) * 2 : 8;                                                 \
            void *grown_ = realloc((arr), (cap) * sizeof *(arr));                          \
            if (!grown_) {                                                                 \
                fprintf(stderr, "crwatch-mock-kafka: out of memory\n");                   \
                abort();                                                                   \
            }                                                                              \
            (arr) = grown_;                                                                \
        }                                                                                  \
    } while (0)

static size_t tpart_get(crw_txnlayer_t *t, const char *topic, int32_t part) {
    for (size_t i = 0; i < t->ntps; i++)
        if (t->tps[i].part == part && !strcmp(t->tps[i].topic, topic))
            return i;
    GROW(t->tps, t->ntps, t->ctps);
    memset(&t->tps[t->ntps], 0, sizeof t->tps[0]);
    t->tps[t->ntps].topic = strdup(topic);
    t->tps[t->ntps].part = part;
    return t->ntps++;
}

static tpart_t *tpart_find(crw_txnlayer_t *t, const char *topic, size_t tlen, int32_t part) {
    for (size_t i = 0; i < t->ntps; i++)
        if (t->tps[i].part == part && strlen(t->tps[i].topic) == tlen && !memcmp(t->tps[i].topic, topic, tlen))
            return &t->tps[i];
    return NULL;
}

static txn_t *txn_get(crw_txnlayer_t *t, const char *tid, bool create) {
    for (size_t i = 0; i < t->ntx; i++)
        if (!strcmp(t->txns[i].tid, tid))
            return &t->txns[i];
    if (!create)
        return NULL;
    GROW(t->txns, t->ntx, t->ctx);
    memset(&t->txns[t->ntx], 0, sizeof t->txns[0]);
    t->txns[t->ntx].tid = strdup(tid);
    return &t->txns[t->ntx++];
}

/* The state of the transactional batch at base, or -1 when the layer has not heard of it. */
static int batch_state(const tpart_t *tp, int64_t base) {
    size_t lo = 0, hi = tp->nb;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (tp->b[mid].base < base)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < tp->nb && tp->b[lo].base == base ? tp->b[lo].state : -1;
}

/* Records the transactional data batch at base, in base order. */
static void insert_batch(tpart_t *tp, int64_t base, int64_t pid, int state) {
    GROW(tp->b, tp->nb, tp->cb);
    size_t at = tp->nb;
    while (at > 0 && tp->b[at - 1].base > base)
        at--;
    memmove(&tp->b[at + 1], &tp->b[at], (tp->nb - at) * sizeof tp->b[0]);
    tp->b[at] = (txbatch_t){base, pid, state};
    tp->nb++;
}

static void note_marker(tpart_t *tp, int64_t pid, int64_t offset, bool commit) {
    GROW(tp->mk, tp->nmk, tp->cmk);
    tp->mk[tp->nmk++] = (marker_t){pid, offset, commit};
}

/*
 * The state of a transactional batch at base, which the layer may not have
 * heard of: its Produce response was lost (the broker went down after
 * appending it, and the producer's retry was a duplicate).  It belongs to its
 * producer's transaction there, which that producer's next marker on the
 * partition ended, committed or aborted; before a marker it is open, as a
 * broker would have it.
 * @returns its state, or -1: open, not heard of.
 */
static int resolve_batch(tpart_t *tp, int64_t base, int64_t pid) {
    int st = batch_state(tp, base);
    if (st >= 0)
        return st;
    const marker_t *m = NULL;
    for (size_t i = 0; i < tp->nmk && !m; i++)
        if (tp->mk[i].pid == pid && tp->mk[i].offset > base)
            m = &tp->mk[i];
    if (!m)
        return -1;
    st = m->commit ? TXB_COMMITTED : TXB_ABORTED;
    insert_batch(tp, base, pid, st);
    for (size_t i = 0; i < tp->nab && !m->commit; i++)
        if (tp->ab[i].pid == pid && tp->ab[i].last == m->offset && tp->ab[i].first > base)
            tp->ab[i].first = base;
    trace("%s [%d] @%lld: batch unheard of, of producer %lld: %s by the marker @%lld", tp->topic, tp->part,
          (long long)base, (long long)pid, m->commit ? "committed" : "aborted", (long long)m->offset);
    return st;
}

/* ---- marker appends --------------------------------------------------------- */

static int connect_to(const char *host, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, strcmp(host, "localhost") ? host : "127.0.0.1", &a.sin_addr) != 1)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static bool write_all(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool read_all(int fd, uint8_t *p, size_t n) {
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

/*
 * The control batch a transaction coordinator has a partition leader
 * append: one record whose key is (version 0, type) and whose value is
 * (version 0, coordinator epoch 0).
 */
static void build_marker(buf_t *rb, int64_t pid, int16_t epoch, bool commit) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    int64_t now = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    static const uint8_t record_head[] = {
        0x20,       /* length 16 (zigzag varint) */
        0x00,       /* attributes */
        0x00, 0x00, /* timestampDelta 0, offsetDelta 0 */
        0x08,       /* key length 4 */
        0x00, 0x00, /* key: version 0 */
    };
    static const uint8_t record_tail[] = {
        0x0c,                               /* value length 6 */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* value: version 0, coordinator epoch 0 */
        0x00,                               /* no headers */
    };
    put_i64(rb, 0);            /* baseOffset: the leader assigns it */
    put_i32(rb, 0);            /* batchLength, set below */
    put_i32(rb, -1);           /* partitionLeaderEpoch */
    put_i8(rb, 2);             /* magic */
    put_i32(rb, 0);            /* crc, set below */
    put_i16(rb, RB_ATTR_TRANSACTIONAL | RB_ATTR_CONTROL);
    put_i32(rb, 0);            /* lastOffsetDelta */
    put_i64(rb, now);          /* firstTimestamp */
    put_i64(rb, now);          /* maxTimestamp */
    put_i64(rb, pid);          /* producerId */
    put_i16(rb, epoch);        /* producerEpoch */
    put_i32(rb, -1);           /* baseSequence */
    put_i32(rb, 1);            /* one record */
    buf_put(rb, record_head, sizeof record_head);
    put_i16(rb, commit ? 1 : 0); /* key: type COMMIT (1) or ABORT (0) */
    buf_put(rb, record_tail, sizeof record_tail);
    set_u32(rb->p + 8, (uint32_t)(rb->len - 12));
    set_u32(rb->p + RB_CRC, crc32c(rb->p + RB_ATTRIBUTES, rb->len - RB_ATTRIBUTES));
}

/*
 * Appends a COMMIT or ABORT marker to topic/part through a Produce v3
 * request without transactional.id (the mock appends such a batch as is),
 * asking each broker until the partition's leader takes it.
 * @returns the marker's offset, or -1.
 */
static int64_t append_marker(crw_txnlayer_t *t, const tpart_t *tp, int64_t pid, int16_t epoch, bool commit) {
    if (!t->mcluster)
        return t->next_marker++; /* detached: no broker to append to */
    buf_t rb = {0}, req = {0};
    build_marker(&rb, pid, epoch, commit);
    int64_t offset = -1;
    /* A connection the mock closed (a broker that was down) fails once: connect again, for up to a second. */
    for (int attempt = 0; attempt < 20 && offset < 0; attempt++) {
        if (attempt) {
            struct timespec ts = {0, 50000000L};
            nanosleep(&ts, NULL);
        }
        for (int b = 0; b < t->nb && offset < 0; b++) {
            req.len = 0;
            int32_t corr = ++t->markcorr;
            put_i32(&req, 0); /* size, set below */
            put_i16(&req, API_PRODUCE);
            put_i16(&req, 3);
            put_i32(&req, corr);
            put_str(&req, "crwatch-mock-kafka-txn");
            put_i16(&req, -1);   /* transactional_id: null */
            put_i16(&req, -1);   /* acks: all */
            put_i32(&req, 5000); /* timeout_ms */
            put_i32(&req, 1);
            put_str(&req, tp->topic);
            put_i32(&req, 1);
            put_i32(&req, tp->part);
            put_i32(&req, (int32_t)rb.len);
            buf_put(&req, rb.p, rb.len);
            set_u32(req.p, (uint32_t)(req.len - 4));

            if (t->markfd[b] < 0 && (t->markfd[b] = connect_to(t->mhost[b], t->mport[b])) >= 0) {
                struct timeval to = {5, 0};
                setsockopt(t->markfd[b], SOL_SOCKET, SO_RCVTIMEO, &to, sizeof to);
            }
            if (t->markfd[b] < 0)
                continue;
            uint8_t hdr[4];
            if (!write_all(t->markfd[b], req.p, req.len) || !read_all(t->markfd[b], hdr, 4)) {
                close(t->markfd[b]);
                t->markfd[b] = -1;
                continue;
            }
            uint32_t n = get_u32(hdr);
            uint8_t *resp = n < MAX_FRAME ? malloc(n) : NULL;
            if (!resp || !read_all(t->markfd[b], resp, n)) {
                free(resp);
                close(t->markfd[b]);
                t->markfd[b] = -1;
                continue;
            }
            /* corr, [topic, [partition, error, base_offset, log_append_time]], throttle */
            rd_t r = {resp, n, 0, false};
            int32_t rcorr = r_i32(&r);
            r_i32(&r);
            r_skip_str(&r);
            r_i32(&r);
            r_i32(&r);
            int16_t err = r_i16(&r);
            int64_t base = r_i64(&r);
            if (!r.bad && rcorr == corr && err == 0)
                offset = base;
            free(resp);
        }
    }
    if (offset < 0)
        fprintf(stderr, "crwatch-mock-kafka: cannot append a %s marker to %s [%d]\n", commit ? "COMMIT" : "ABORT",
                tp->topic, tp->part);
    free(rb.p);
    free(req.p);
    return offset;
}

/*
 * Ends x's open transaction: markers everywhere it wrote, then its batches'
 * states.  A partition whose marker cannot be appended (the broker is down)
 * stays in x: @returns false then, and the transaction is not over there
 * (an abort without its marker would hide the producer's later batches).
 */
static bool txn_end(crw_txnlayer_t *t, txn_t *x, bool commit) {
    size_t kept = 0;
    for (size_t i = 0; i < x->np; i++) {
        tpart_t *tp = &t->tps[x->parts[i].tp];
        int64_t at = append_marker(t, tp, x->pid, x->epoch, commit);
        trace("%s [%d]: %s of %s (producer %lld/%d, first @%lld) marker @%lld", tp->topic, tp->part,
              commit ? "COMMIT" : "ABORT", x->tid, (long long)x->pid, x->epoch, (long long)x->parts[i].first,
              (long long)at);
        if (at >= 0)
            note_marker(tp, x->pid, at, commit);
        if (at < 0) { /* the marker is not written: the transaction is not over there */
            x->parts[kept++] = x->parts[i];
            continue;
        }
        /* Its batches are at or after its first offset there: b is sorted. */
        for (size_t k = tp->nb; k-- > 0 && tp->b[k].base >= x->parts[i].first;)
            if (tp->b[k].pid == x->pid && tp->b[k].state == TXB_OPEN)
                tp->b[k].state = commit ? TXB_COMMITTED : TXB_ABORTED;
        if (!commit) {
            GROW(tp->ab, tp->nab, tp->cab);
            tp->ab[tp->nab++] = (aborted_t){x->pid, x->parts[i].first, at >= 0 ? at : INT64_MAX};
        }
    }
    x->np = kept;
    return kept == 0;
}

/* A transactional data batch appended at base (from a Produce response). */
static void record_batch(crw_txnlayer_t *t, const char *tid, const ppart_t *pp, int64_t base) {
    size_t ti = tpart_get(t, pp->topic, pp->part);
    tpart_t *tp = &t->tps[ti];
    txn_t *x = txn_get(t, tid, true);
    /* A fenced producer's batch whose response the layer sees only after the
     * fencing InitProducerId's (other connection): the mock appended it
     * first, and the fence aborts it, as a coordinator would have. */
    bool fenced = x->fenced_known && (pp->pid != x->cur_pid || pp->epoch != x->cur_epoch);
    insert_batch(tp, base, pp->pid, fenced ? TXB_ABORTED : TXB_OPEN);
    if (fenced) {
        int64_t marker = append_marker(t, tp, pp->pid, pp->epoch, false);
        if (marker >= 0)
            note_marker(tp, pp->pid, marker, false);
        GROW(tp->ab, tp->nab, tp->cab);
        tp->ab[tp->nab++] = (aborted_t){pp->pid, base, marker >= 0 ? marker : INT64_MAX};
        trace("%s [%d] @%lld: batch of fenced producer %lld/%d aborted (marker @%lld)", tp->topic, tp->part,
              (long long)base, (long long)pp->pid, pp->epoch, (long long)marker);
        return;
    }
    trace("%s [%d] @%lld: batch of %s (producer %lld/%d)", tp->topic, tp->part, (long long)base, tid,
          (long long)pp->pid, pp->epoch);
    x->pid = pp->pid;
    x->epoch = pp->epoch;
    for (size_t i = 0; i < x->np; i++)
        if (x->parts[i].tp == ti) {
            if (base < x->parts[i].first)
                x->parts[i].first = base;
            return;
        }
    GROW(x->parts, x->np, x->cp);
    x->parts[x->np++] = (txpart_t){ti, base};
}

/* The first offset of the earliest transaction still open on tp (INT64_MAX: none). */
static int64_t open_first(const crw_txnlayer_t *t, const tpart_t *tp) {
    int64_t first = INT64_MAX;
    size_t ti = (size_t)(tp - t->tps);
    for (size_t i = 0; i < t->ntx; i++)
        for (size_t k = 0; k < t->txns[i].np; k++)
            if (t->txns[i].parts[k].tp == ti && t->txns[i].parts[k].first < first)
                first = t->txns[i].parts[k].first;
    return first;
}

/* ---- requests --------------------------------------------------------------- */

/* Versions that use the flexible encoding. */
static bool flexible(int16_t api, int16_t ver) {
    switch (api) {
    case API_PRODUCE: return ver >= 9;
    case API_FETCH: return ver >= 12;
    case API_METADATA: return ver >= 9;
    case API_FIND_COORDINATOR: return ver >= 3;
    case API_INIT_PRODUCER_ID: return ver >= 2;
    case API_END_TXN: return ver >= 3;
    case API_ADD_PARTITIONS_TO_TXN: return ver >= 3;
    case API_API_VERSIONS: return ver >= 3;
    case API_CREATE_TOPICS: return ver >= 5;
    default: return true;
    }
}

/* Versions the layer reads: every InitProducerId (v3+ bumps the epoch
 * after a failed transaction, KIP-360), non-flexible ones of the others. */
static bool understood(int16_t api, int16_t ver) { return api == API_INIT_PRODUCER_ID ? ver <= 4 : !flexible(api, ver); }

static void pend_free(pend_t *p) {
    free(p->tid);
    free(p->synth.p);
    for (size_t i = 0; i < p->npp; i++)
        free(p->pp[i].topic);
    free(p->pp);
}

/*
 * CreateTopics v0-4, which the mock does not have: the layer creates the
 * topics in the mock cluster and answers itself, and remembers what was
 * asked (crw_txnlayer_topic_config).
 */
static void create_topics(crw_txnlayer_t *t, pend_t *p, rd_t *r) {
    buf_t *out = &p->synth;
    put_i32(out, p->corr);
    if (p->ver >= 2)
        put_i32(out, 0); /* throttle_time_ms */
    int32_t nt = r_i32(r);
    if (r->bad || nt < 0 || nt > 1000) {
        put_i32(out, 0);
        return;
    }
    /* The request's topics are parsed first: timeout and validate_only follow them. */
    created_t *asked = calloc((size_t)nt + 1, sizeof *asked);
    for (int32_t i = 0; i < nt && !r->bad; i++) {
        asked[i].name = r_str(r);
        asked[i].partitions = r_i32(r);
        asked[i].replication = r_i16(r);
        for (int32_t na = r_i32(r); na > 0 && !r->bad; na--) {
            r_i32(r); /* partition_index */
            for (int32_t nbk = r_i32(r); nbk > 0 && !r->bad; nbk--)
                r_i32(r); /* broker_ids */
        }
        buf_t cfg = {0};
        for (int32_t nc = r_i32(r); nc > 0 && !r->bad; nc--) {
            char *k = r_str(r), *v = r_str(r);
            if (cfg.len)
                buf_put(&cfg, ",", 1);
            buf_put(&cfg, k ? k : "", k ? strlen(k) : 0);
            buf_put(&cfg, "=", 1);
            buf_put(&cfg, v ? v : "", v ? strlen(v) : 0);
            free(k);
            free(v);
        }
        buf_put(&cfg, "", 1);
        asked[i].configs = (char *)cfg.p;
    }
    r_i32(r); /* timeout_ms */
    bool validate_only = p->ver >= 1 && r_i8(r) != 0;
    put_i32(out, nt);
    for (int32_t i = 0; i < nt; i++) {
        created_t *a = &asked[i];
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_INVALID_REQUEST;
        if (!r->bad && a->name && *a->name) {
            int parts = a->partitions > 0 ? a->partitions : 1, repl = a->replication > 0 ? a->replication : 1;
            /* detached: as many brokers as there may be */
            err = repl > (t->mcluster ? t->nb : MAX_BROKERS) ? RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR
                  : validate_only || !t->mcluster ? RD_KAFKA_RESP_ERR_NO_ERROR
                                                  : rd_kafka_mock_topic_create(t->mcluster, a->name, parts, repl);
        }
        trace("CreateTopics %s partitions %d replication %d configs %s: %s", a->name ? a->name : "(null)",
              a->partitions, a->replication, a->configs ? a->configs : "", rd_kafka_err2name(err));
        put_str(out, a->name ? a->name : "");
        put_i16(out, (int16_t)err);
        if (p->ver >= 1) {
            if (err)
                put_str(out, rd_kafka_err2str(err));
            else
                put_i16(out, -1);
        }
        if (!err && !validate_only) {
            GROW(t->created, t->ncreated, t->ccreated);
            t->created[t->ncreated++] = *a;
        } else {
            free(a->name);
            free(a->configs);
        }
    }
    free(asked);
}

/* Relays (in order) the responses the layer gave itself that are next in line. */
static void flush_synth(conn_t *c) {
    while (c->qn > 0 && c->q[c->qh].synth.len) {
        pend_t *p = &c->q[c->qh++];
        c->qn--;
        if (!c->client_gone) {
            uint8_t size[4];
            set_u32(size, (uint32_t)p->synth.len);
            buf_put(&c->cout, size, 4);
            buf_put(&c->cout, p->synth.p, p->synth.len);
        }
        pend_free(p);
    }
}

/*
 * A Produce request (v3-7) for the topic crw_txnlayer_refuse named: the layer
 * answers it with the error for each of its partitions, and the mock never
 * sees it, as a broker refusing the request appends nothing.
 */
static void refuse_produce(crw_txnlayer_t *t, pend_t *p) {
    if (t->refuse_left <= 0 || !t->refuse_topic)
        return;
    bool hit = false;
    for (size_t i = 0; i < p->npp && !hit; i++)
        hit = !strcmp(p->pp[i].topic, t->refuse_topic);
    if (!hit)
        return;
    t->refuse_left--;
    trace("Produce for %s refused: %s", t->refuse_topic, rd_kafka_err2name((rd_kafka_resp_err_t)t->refuse_code));
    buf_t *out = &p->synth;
    put_i32(out, p->corr);
    put_i32(out, (int32_t)p->npp); /* a topic entry per partition: the client reads each by its name */
    for (size_t i = 0; i < p->npp; i++) {
        put_str(out, p->pp[i].topic);
        put_i32(out, 1);
        put_i32(out, p->pp[i].part);
        put_i16(out, t->refuse_code);
        put_i64(out, -1); /* base_offset */
        put_i64(out, -1); /* log_append_time_ms (v2+) */
        if (p->ver >= 5)
            put_i64(out, -1); /* log_start_offset */
        if (p->ver >= 8) {
            put_i32(out, 0);  /* record_errors */
            put_i16(out, -1); /* error_message: null */
        }
    }
    put_i32(out, 0); /* throttle_time_ms */
}

void crw_txnlayer_refuse(crw_txnlayer_t *t, const char *topic, int16_t code, int count) {
    free(t->refuse_topic);
    t->refuse_topic = strdup(topic);
    t->refuse_code = code;
    t->refuse_left = count;
}

/* Notes what a client request needs from its response; relays it. */
static void on_request(crw_txnlayer_t *t, conn_t *c, uint8_t *f, size_t n) {
    rd_t r = {f, n, 0, false};
    pend_t p = {0};
    p.api = r_i16(&r);
    p.ver = r_i16(&r);
    p.corr = r_i32(&r);
    r_skip_str(&r); /* client_id */
    if (flexible(p.api, p.ver))
        r_skip_tags(&r); /* request header v2 */
    bool expect_response = true;
    size_t ppcap = 0;
    if (r.bad || !understood(p.api, p.ver))
        p.api = -1;
    else if (p.api == API_PRODUCE && p.ver >= 3) {
        p.tid = r_str(&r);
        expect_response = r_i16(&r) != 0; /* acks 0: no response */
        r_i32(&r);
        for (int32_t nt = r_i32(&r); nt > 0 && !r.bad; nt--) {
            char *topic = r_str(&r);
            for (int32_t np = r_i32(&r); np > 0 && !r.bad; np--) {
                int32_t part = r_i32(&r);
                int32_t len = r_i32(&r);
                uint8_t *rec = len > 0 ? r_take(&r, (size_t)len) : NULL;
                if (!rec || len < RB_HEADER_SIZE || rec[RB_MAGIC] != 2)
                    continue;
                uint16_t attrs = get_u16(rec + RB_ATTRIBUTES);
                GROW(p.pp, p.npp, ppcap);
                p.pp[p.npp++] = (ppart_t){strdup(topic ? topic : ""), part, get_i64(rec + RB_PRODUCER_ID),
                                          (int16_t)get_u16(rec + RB_PRODUCER_ID + 8),
                                          (attrs & RB_ATTR_TRANSACTIONAL) && !(attrs & RB_ATTR_CONTROL)};
            }
            free(topic);
        }
        refuse_produce(t, &p);
    } else if (p.api == API_FETCH && p.ver >= 4) {
        r_i32(&r); /* replica_id */
        r_i32(&r); /* max_wait_ms */
        r_i32(&r); /* min_bytes */
        r_i32(&r); /* max_bytes */
        p.isolation = r_i8(&r);
    } else if (p.api == API_INIT_PRODUCER_ID) {
        p.tid = p.ver >= 2 ? r_compact_str(&r) : r_str(&r);
    } else if (p.api == API_ADD_PARTITIONS_TO_TXN) {
        p.tid = r_str(&r);
        p.pid = r_i64(&r);
        p.epoch = r_i16(&r);
    } else if (p.api == API_END_TXN) {
        p.tid = r_str(&r);
        p.pid = r_i64(&r);
        p.epoch = r_i16(&r);
        p.commit = r_i8(&r) != 0;
    } else if (p.api == API_CREATE_TOPICS)
        create_topics(t, &p, &r);
    if (expect_response) {
        if (c->qh + c->qn == c->qc && c->qh > 0) {
            memmove(c->q, c->q + c->qh, c->qn * sizeof c->q[0]);
            c->qh = 0;
        }
        size_t used = c->qh + c->qn;
        GROW(c->q, used, c->qc);
        c->q[c->qh + c->qn++] = p;
    } else
        pend_free(&p);
    if (p.synth.len) { /* answered here: the mock never sees it */
        flush_synth(c);
        return;
    }
    uint8_t size[4];
    set_u32(size, (uint32_t)n);
    buf_put(&c->uout, size, 4);
    buf_put(&c->uout, f, n);
}

/* ---- responses -------------------------------------------------------------- */

static void rewrite_port(crw_txnlayer_t *t, uint8_t *at) {
    int32_t port = (int32_t)get_u32(at);
    for (int b = 0; b < t->nb; b++)
        if (t->mport[b] == port)
            set_u32(at, (uint32_t)t->pport[b]);
}

/* Metadata v0-8: the brokers' ports become the layer's; the controller,
 * which the mock names as broker 0 (there is none), is the first broker, so
 * that admin requests (CreateTopics) have somewhere to go. */
static void on_metadata(crw_txnlayer_t *t, const pend_t *p, rd_t *r) {
    if (p->ver >= 3)
        r_i32(r); /* throttle_time_ms */
    int32_t first = -1;
    uint64_t ids = 0; /* mock broker ids are 1..9 */
    for (int32_t nb = r_i32(r); nb > 0 && !r->bad; nb--) {
        int32_t id = r_i32(r); /* node_id */
        if (first < 0)
            first = id;
        if (id >= 0 && id < 64)
            ids |= 1ull << id;
        r_skip_str(r);
        uint8_t *port = r_take(r, 4);
        if (port)
            rewrite_port(t, port);
        if (p->ver >= 1)
            r_skip_str(r); /* rack */
    }
    if (p->ver >= 2)
        r_skip_str(r); /* cluster_id */
    uint8_t *controller = p->ver >= 1 ? r_take(r, 4) : NULL;
    int32_t cid = controller ? (int32_t)get_u32(controller) : -1;
    if (controller && first >= 0 && (cid < 0 || cid >= 64 || !(ids >> cid & 1)))
        set_u32(controller, (uint32_t)first);
}

/* FindCoordinator v0-2: the coordinator's port becomes the layer's. */
static void on_find_coordinator(crw_txnlayer_t *t, const pend_t *p, rd_t *r) {
    if (p->ver >= 1)
        r_i32(r); /* throttle_time_ms */
    r_i16(r);     /* error_code */
    if (p->ver >= 1)
        r_skip_str(r); /* error_message */
    r_i32(r);          /* node_id */
    r_skip_str(r);     /* host */
    uint8_t *port = r_take(r, 4);
    if (port)
        rewrite_port(t, port);
}

/* Produce v3-7: the offsets the transaction's batches got. */
static void on_produce(crw_txnlayer_t *t, const pend_t *p, rd_t *r) {
    if (!p->tid)
        return;
    for (int32_t nt = r_i32(r); nt > 0 && !r->bad; nt--) {
        char *topic = r_str(r);
        for (int32_t np = r_i32(r); np > 0 && !r->bad; np--) {
            int32_t part = r_i32(r);
            int16_t err = r_i16(r);
            int64_t base = r_i64(r);
            if (p->ver >= 2)
                r_i64(r); /* log_append_time_ms */
            if (p->ver >= 5)
                r_i64(r); /* log_start_offset */
            if (r->bad || err != 0 || base < 0 || !topic)
                continue; /* base -1: a duplicate the leader did not append again */
            for (size_t i = 0; i < p->npp; i++)
                if (p->pp[i].txn && p->pp[i].part == part && !strcmp(p->pp[i].topic, topic))
                    record_batch(t, p->tid, &p->pp[i], base);
        }
        free(topic);
    }
}

/* InitProducerId: a new producer for the transactional.id fences the old
 * one, and a producer bumping its own epoch (v3+) gives up its transaction:
 * either way the open transaction is aborted. */
static void on_init_producer_id(crw_txnlayer_t *t, const pend_t *p, rd_t *r) {
    if (p->ver >= 2)
        r_skip_tags(r); /* response header v1 */
    r_i32(r);           /* throttle_time_ms */
    uint8_t *errp = r_take(r, 2);
    int64_t pid = r_i64(r);
    int16_t epoch = r_i16(r);
    if (r->bad || !errp || get_u16(errp) != 0 || !p->tid)
        return;
    txn_t *x = txn_get(t, p->tid, true);
    trace("InitProducerId %s: producer %lld/%d%s", p->tid, (long long)pid, epoch,
          x->np > 0 ? ", aborting the open transaction" : "");
    if (x->np > 0 && !txn_end(t, x, false)) {
        /* The fenced transaction's markers could not all be written: the client asks again. */
        errp[0] = 0;
        errp[1] = 14; /* COORDINATOR_LOAD_IN_PROGRESS: retriable */
        return;
    }
    x->fenced_known = true;
    x->cur_pid = pid;
    x->cur_epoch = epoch;
}

/*
 * AddPartitionsToTxn v0-2: the partitions a transaction writes to, as its
 * coordinator learns them, before any of its batches there is acknowledged:
 * the transaction is ended there too, with a marker, whether or not the layer
 * heard of a batch of it (resolve_batch).
 */
static void on_add_partitions(crw_txnlayer_t *t, const pend_t *p, rd_t *r) {
    txn_t *x = p->tid ? txn_get(t, p->tid, true) : NULL;
    if (!x || (x->fenced_known && (p->pid != x->cur_pid || p->epoch != x->cur_epoch)))
        return;
    r_i32(r); /* throttle_time_ms */
    for (int32_t nt = r_i32(r); nt > 0 && !r->bad; nt--) {
        char *topic = r_str(r);
        for (int32_t np = r_i32(r); np > 0 && !r->bad; np--) {
            int32_t part = r_i32(r);
            int16_t err = r_i16(r);
            if (r->bad || err != 0 || !topic)
                continue;
            size_t ti = tpart_get(t, topic, part);
            bool have = false;
            for (size_t i = 0; i < x->np && !have; i++)
                have = x->parts[i].tp == ti;
            if (!have) {
                GROW(x->parts, x->np, x->cp);
                x->parts[x->np++] = (txpart_t){ti, INT64_MAX};
            }
        }
        free(topic);
    }
    x->pid = p->pid;
    x->epoch = p->epoch;
}

/* EndTxn v0-1: the markers, before the client hears the transaction ended.
 * A producer fenced meanwhile (the layer saw the new InitProducerId's
 * response first) gets INVALID_PRODUCER_EPOCH: its transaction was aborted. */
static void on_end_txn(crw_txnlayer_t *t, const pend_t *p, rd_t *r) {
    r_i32(r); /* throttle_time_ms */
    uint8_t *errp = r_take(r, 2);
    txn_t *x = p->tid ? txn_get(t, p->tid, false) : NULL;
    if (!errp || get_u16(errp) != 0 || !x)
        return;
    if (x->fenced_known && (p->pid != x->cur_pid || p->epoch != x->cur_epoch)) {
        trace("EndTxn %s of fenced producer %lld/%d: refused", p->tid, (long long)p->pid, p->epoch);
        errp[0] = 0;
        errp[1] = 47; /* INVALID_PRODUCER_EPOCH */
        return;
    }
    if (!txn_end(t, x, p->commit)) { /* a marker could not be written: the client must ask again */
        errp[0] = 0;
        errp[1] = 15; /* COORDINATOR_NOT_AVAILABLE: retriable */
    }
}

/*
 * Fetch v4-11, rewritten into out: LastStableOffset stops at the earliest
 * open (or not yet acknowledged) transactional batch; a read_committed fetch
 * gets no batch at or past it and the list of aborted transactions its
 * batch belongs to.
 */
static bool on_fetch(crw_txnlayer_t *t, const pend_t *p, rd_t *r, buf_t *out) {
    if (p->ver >= 1)
        r_i32(r); /* throttle_time_ms */
    if (p->ver >= 7) {
        r_i16(r); /* error_code */
        r_i32(r); /* session_id */
    }
    int32_t nt = r_i32(r);
    if (r->bad)
        return false;
    buf_put(out, r->p, r->o);
    for (; nt > 0; nt--) { /* a count as sent: INT32_MIN must not wrap */
        size_t tstart = r->o;
        int16_t tlen = r_i16(r);
        uint8_t *tname = tlen > 0 ? r_take(r, (size_t)tlen) : NULL;
        int32_t np = r_i32(r);
        if (r->bad)
            return false;
        buf_put(out, r->p + tstart, r->o - tstart);
        for (; np > 0; np--) {
            int32_t part = r_i32(r);
            int16_t err = r_i16(r);
            int64_t hwm = r_i64(r);
            int64_t lso = r_i64(r);
            int64_t log_start = p->ver >= 5 ? r_i64(r) : 0;
            for (int32_t na = r_i32(r); na > 0 && !r->bad; na--)
                r_take(r, 16); /* the mock's list (always empty) */
            int32_t preferred = p->ver >= 11 ? r_i32(r) : -1;
            int32_t rlen = r_i32(r);
            uint8_t *rec = rlen > 0 ? r_take(r, (size_t)rlen) : NULL;
            if (r->bad)
                return false;

            tpart_t *tp = tname ? tpart_find(t, (const char *)tname, (size_t)tlen, part) : NULL;
            bool is_batch = rec && rlen >= RB_HEADER_SIZE && rec[RB_MAGIC] == 2;
            int64_t base = is_batch ? get_i64(rec + RB_BASE_OFFSET) : -1;
            int64_t last = is_batch ? base + (int32_t)get_u32(rec + RB_RECORD_COUNT) - 1 : -1;
            uint16_t attrs = is_batch ? get_u16(rec + RB_ATTRIBUTES) : 0;
            if (err == 0) {
                lso = hwm;
                if (tp) {
                    int64_t of = open_first(t, tp);
                    lso = of < lso ? of : lso;
                }
                /* A transactional batch whose Produce response the layer has
                 * not seen yet is open as far as anyone can tell. */
                if (is_batch && (attrs & RB_ATTR_TRANSACTIONAL) && !(attrs & RB_ATTR_CONTROL) &&
                    (!tp || resolve_batch(tp, base, get_i64(rec + RB_PRODUCER_ID)) < 0) && base < lso)
                    lso = base;
            }
            /* read_committed, as a broker serves it: only the batches below the
             * LSO (a fetch often holds several), with the aborted transactions
             * of all of them. */
            int32_t keep = rlen;
            if (p->isolation == 1 && is_batch && err == 0) {
                keep = 0;
                for (int32_t o = 0; o + RB_HEADER_SIZE <= rlen;) {
                    int64_t b = get_i64(rec + o + RB_BASE_OFFSET);
                    int32_t size = 12 + (int32_t)get_u32(rec + o + 8);
                    uint16_t ba = get_u16(rec + o + RB_ATTRIBUTES);
                    if ((ba & RB_ATTR_TRANSACTIONAL) && !(ba & RB_ATTR_CONTROL) &&
                        (!tp || resolve_batch(tp, b, get_i64(rec + o + RB_PRODUCER_ID)) < 0) &&
                        b < lso)
                        lso = b;
                    if (b >= lso || size <= 12 || o + size > rlen)
                        break;
                    last = b + (int32_t)get_u32(rec + o + RB_RECORD_COUNT) - 1;
                    o += size;
                    keep = o;
                }
            }
            bool hide = p->isolation == 1 && is_batch && (base >= lso || keep == 0);
            put_i32(out, part);
            put_i16(out, err);
            put_i64(out, hwm);
            put_i64(out, lso);
            if (p->ver >= 5)
                put_i64(out, log_start);
            size_t at = out->len;
            int32_t listed = 0;
            put_i32(out, 0);
            if (p->isolation == 1 && is_batch && !hide && tp)
                for (size_t i = 0; i < tp->nab; i++)
                    if (tp->ab[i].first <= last && tp->ab[i].last >= base) {
                        put_i64(out, tp->ab[i].pid);
                        put_i64(out, tp->ab[i].first);
                        listed++;
                    }
            set_u32(out->p + at, (uint32_t)listed);
            if (p->ver >= 11)
                put_i32(out, preferred);
            if (hide || !rec) {
                put_i32(out, 0);
            } else {
                put_i32(out, keep);
                buf_put(out, rec, (size_t)keep);
            }
        }
    }
    buf_put(out, r->p + r->o, r->n - r->o);
    return true;
}

/* ApiVersions v0-2: CreateTopics, which the layer answers, joins the list. */
static bool on_api_versions(rd_t *r, buf_t *out) {
    int16_t err = r_i16(r);
    int32_t n = r_i32(r);
    uint8_t *entries = n >= 0 ? r_take(r, (size_t)n * 6) : NULL;
    if (r->bad || err != 0 || !entries)
        return false;
    put_i32(out, (int32_t)get_u32(r->p)); /* correlation id */
    put_i16(out, err);
    put_i32(out, n + 1);
    buf_put(out, entries, (size_t)n * 6);
    put_i16(out, API_CREATE_TOPICS);
    put_i16(out, 0);
    put_i16(out, CREATE_TOPICS_MAX_VERSION);
    buf_put(out, r->p + r->o, r->n - r->o); /* throttle_time_ms (v1+) */
    return true;
}

/* A mock broker's response: learn from it, rewrite it, relay it. */
static void on_response(crw_txnlayer_t *t, conn_t *c, uint8_t *f, size_t n) {
    rd_t r = {f, n, 0, false};
    int32_t corr = r_i32(&r);
    pend_t p = {0};
    p.api = -1;
    if (c->qn > 0 && c->q[c->qh].corr == corr) {
        p = c->q[c->qh++];
        c->qn--;
    }
    buf_t rewritten = {0}; /* a rewritten response, when not empty */
    switch (p.api) {
    case API_METADATA: on_metadata(t, &p, &r); break;
    case API_FIND_COORDINATOR: on_find_coordinator(t, &p, &r); break;
    case API_PRODUCE: on_produce(t, &p, &r); break;
    case API_INIT_PRODUCER_ID: on_init_producer_id(t, &p, &r); break;
    case API_END_TXN: on_end_txn(t, &p, &r); break;
    case API_ADD_PARTITIONS_TO_TXN: on_add_partitions(t, &p, &r); break;
    case API_FETCH:
        if (p.ver >= 4 && !on_fetch(t, &p, &r, &rewritten))
            rewritten.len = 0;
        break;
    case API_API_VERSIONS:
        if (!on_api_versions(&r, &rewritten))
            rewritten.len = 0;
        break;
    default: break;
    }
    if (!c->client_gone) {
        const uint8_t *body = rewritten.len ? rewritten.p : f;
        size_t len = rewritten.len ? rewritten.len : n;
        uint8_t size[4];
        set_u32(size, (uint32_t)len);
        buf_put(&c->cout, size, 4);
        buf_put(&c->cout, body, len);
    }
    free(rewritten.p);
    pend_free(&p);
    flush_synth(c);
}

/* ---- the relay loop ----------------------------------------------------------- */

static void conn_close(crw_txnlayer_t *t, size_t i) {
    conn_t *c = t->conns[i];
    if (c->cfd >= 0)
        close(c->cfd);
    if (c->ufd >= 0)
        close(c->ufd);
    for (size_t k = 0; k < c->qn; k++)
        pend_free(&c->q[c->qh + k]);
    free(c->q);
    free(c->cin.p);
    free(c->cout.p);
    free(c->uin.p);
    free(c->uout.p);
    free(c);
    t->conns[i] = t->conns[--t->nconns];
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void accept_client(crw_txnlayer_t *t, int b) {
    int cfd = accept4(t->lfd[b], NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (cfd < 0)
        return;
    int ufd = connect_to(t->mhost[b], t->mport[b]);
    if (ufd < 0) {
        close(cfd); /* the broker is down: so is its address here */
        return;
    }
    set_nonblock(ufd);
    int one = 1;
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn_t *c = calloc(1, sizeof *c);
    c->cfd = cfd;
    c->ufd = ufd;
    c->broker = b;
    GROW(t->conns, t->nconns, t->cconns);
    t->conns[t->nconns++] = c;
}

/* Reads what fd has into in; false at EOF or on an error. */
static bool fill(int fd, buf_t *in) {
    uint8_t chunk[65536];
    for (;;) {
        ssize_t got = read(fd, chunk, sizeof chunk);
        if (got > 0) {
            buf_put(in, chunk, (size_t)got);
            continue;
        }
        if (got < 0 && errno == EINTR)
            continue;
        return got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
}

static bool flush_out(int fd, buf_t *out) {
    while (out->len) {
        ssize_t w = write(fd, out->p, out->len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        if (w <= 0)
            return false;
        buf_consume(out, (size_t)w);
    }
    return true;
}

/* Hands each whole frame in `in` to the handler; false on a frame too large to be Kafka. */
static bool frames(crw_txnlayer_t *t, conn_t *c, buf_t *in, bool from_client) {
    size_t off = 0;
    while (in->len - off >= 4) {
        uint32_t n = get_u32(in->p + off);
        if (n > MAX_FRAME)
            return false;
        if (in->len - off - 4 < n)
            break;
        if (from_client)
            on_request(t, c, in->p + off + 4, n);
        else
            on_response(t, c, in->p + off + 4, n);
        off += 4 + n;
    }
    if (off)
        buf_consume(in, off);
    return true;
}

int crw_txnlayer_poll(crw_txnlayer_t *t, int extra_fd, int timeout_ms) {
    size_t need = 1 + (size_t)t->nb + 2 * t->nconns;
    if (need > t->cpfds) {
        t->cpfds = need * 2;
        t->pfds = realloc(t->pfds, t->cpfds * sizeof *t->pfds);
    }
    size_t n = 0;
    t->pfds[n++] = (struct pollfd){extra_fd, POLLIN, 0};
    for (int b = 0; b < t->nb; b++)
        t->pfds[n++] = (struct pollfd){t->lfd[b], POLLIN, 0};
    for (size_t i = 0; i < t->nconns; i++) {
        conn_t *c = t->conns[i];
        t->pfds[n++] = (struct pollfd){c->client_gone ? -1 : c->cfd, (short)(POLLIN | (c->cout.len ? POLLOUT : 0)), 0};
        t->pfds[n++] = (struct pollfd){c->ufd, (short)(POLLIN | (c->uout.len ? POLLOUT : 0)), 0};
    }
    size_t nconns = t->nconns;
    if (poll(t->pfds, n, timeout_ms) <= 0)
        return 0;
    int extra = extra_fd >= 0 && (t->pfds[0].revents & (POLLIN | POLLHUP)) ? 1 : 0;
    for (int b = 0; b < t->nb; b++)
        if (t->pfds[1 + b].revents & POLLIN)
            accept_client(t, b);
    /* Backwards: conn_close moves the last connection into the freed slot. */
    for (size_t i = nconns; i-- > 0;) {
        conn_t *c = t->conns[i];
        short cre = t->pfds[1 + t->nb + 2 * i].revents, ure = t->pfds[2 + t->nb + 2 * i].revents;
        bool ok = true;
        if (!c->client_gone && (cre & (POLLIN | POLLHUP | POLLERR))) {
            if (!fill(c->cfd, &c->cin)) {
                c->client_gone = true; /* responses still to come are learnt from, not relayed */
                close(c->cfd);
                c->cfd = -1;
            }
            ok = frames(t, c, &c->cin, true);
        }
        if (ok && (ure & (POLLIN | POLLHUP | POLLERR))) {
            bool open = fill(c->ufd, &c->uin); /* what came before an EOF is still handled */
            ok = frames(t, c, &c->uin, false) && open;
        }
        if (ok && c->uout.len)
            ok = flush_out(c->ufd, &c->uout);
        if (ok && !c->client_gone && c->cout.len && !flush_out(c->cfd, &c->cout)) {
            c->client_gone = true;
            close(c->cfd);
            c->cfd = -1;
        }
        if (!ok || (c->client_gone && c->qn == 0 && c->uout.len == 0))
            conn_close(t, i);
    }
    return extra;
}

/* ---- setup -------------------------------------------------------------------- */

crw_txnlayer_t *crw_txnlayer_new(rd_kafka_mock_cluster_t *mcluster, char *errstr, size_t errstr_size) {
    crw_txnlayer_t *t = calloc(1, sizeof *t);
    t->mcluster = mcluster;
    char list[1024];
    snprintf(list, sizeof list, "%s", rd_kafka_mock_cluster_bootstraps(mcluster));
    char *save = NULL;
    for (char *hp = strtok_r(list, ",", &save); hp && t->nb < MAX_BROKERS; hp = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(hp, ':');
        if (!colon)
            continue;
        *colon = '\0';
        snprintf(t->mhost[t->nb], sizeof t->mhost[0], "%s", hp);
        t->mport[t->nb] = atoi(colon + 1);
        t->markfd[t->nb] = -1;
        t->lfd[t->nb] = -1;
        t->nb++;
    }
    size_t bl = 0;
    for (int b = 0; b < t->nb; b++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t al = sizeof a;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 64) < 0 ||
            getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
            snprintf(errstr, errstr_size, "cannot listen on 127.0.0.1: %s", strerror(errno));
            if (fd >= 0)
                close(fd);
            crw_txnlayer_destroy(t);
            return NULL;
        }
        t->lfd[b] = fd;
        t->pport[b] = ntohs(a.sin_port);
        bl += (size_t)snprintf(t->bootstraps + bl, sizeof t->bootstraps - bl, "%s127.0.0.1:%d", b ? "," : "",
                               t->pport[b]);
    }
    if (t->nb == 0) {
        snprintf(errstr, errstr_size, "the mock cluster has no brokers");
        crw_txnlayer_destroy(t);
        return NULL;
    }
    /* Versions the layer rewrites: non-flexible ones. */
    rd_kafka_mock_set_apiversion(mcluster, API_METADATA, 0, 8);
    rd_kafka_mock_set_apiversion(mcluster, API_FIND_COORDINATOR, 0, 2);
    rd_kafka_mock_set_apiversion(mcluster, API_END_TXN, 0, 1);
    return t;
}

crw_txnlayer_t *crw_txnlayer_new_detached(void) {
    crw_txnlayer_t *t = calloc(1, sizeof *t);
    conn_t *c = calloc(1, sizeof *c);
    c->cfd = c->ufd = -1;
    GROW(t->conns, t->nconns, t->cconns);
    t->conns[t->nconns++] = c;
    return t;
}

int crw_txnlayer_feed(crw_txnlayer_t *t, bool from_client, const uint8_t *data, size_t n) {
    if (t->mcluster || t->nconns != 1)
        return -1;
    conn_t *c = t->conns[0];
    buf_t *in = from_client ? &c->cin : &c->uin;
    buf_put(in, data, n);
    /* frames()'s loop, each frame in a buffer of its own size, so a read past
     * a frame's end is one past an allocation (which ASan sees). */
    int rc = 0;
    size_t off = 0;
    while (in->len - off >= 4) {
        uint32_t len = get_u32(in->p + off);
        if (len > MAX_FRAME) {
            rc = -1; /* the relay closes such a connection: what it held goes */
            off = in->len;
            break;
        }
        if (in->len - off - 4 < len)
            break;
        uint8_t *f = malloc(len ? len : 1);
        if (!f)
            abort();
        memcpy(f, in->p + off + 4, len);
        if (from_client)
            on_request(t, c, f, len);
        else
            on_response(t, c, f, len);
        free(f);
        off += 4 + (size_t)len;
    }
    if (off)
        buf_consume(in, off);
    /* What would be sent on has no one to go to. */
    c->cout.len = c->uout.len = 0;
    return rc;
}

const char *crw_txnlayer_bootstraps(const crw_txnlayer_t *t) { return t->bootstraps; }

int crw_txnlayer_topic_config(const crw_txnlayer_t *t, const char *topic, char *out, size_t n) {
    for (size_t i = 0; i < t->ncreated; i++)
        if (!strcmp(t->created[i].name, topic)) {
            snprintf(out, n, "partitions=%d replication=%d configs=%s", t->created[i].partitions,
                     t->created[i].replication, t->created[i].configs);
            return 0;
        }
    return -1;
}

void crw_txnlayer_destroy(crw_txnlayer_t *t) {
    if (!t)
        return;
    while (t->nconns)
        conn_close(t, t->nconns - 1);
    for (int b = 0; b < t->nb; b++) {
        if (t->lfd[b] >= 0)
            close(t->lfd[b]);
        if (t->markfd[b] >= 0)
            close(t->markfd[b]);
    }
    for (size_t i = 0; i < t->ntps; i++) {
        free(t->tps[i].topic);
        free(t->tps[i].b);
        free(t->tps[i].ab);
        free(t->tps[i].mk);
    }
    for (size_t i = 0; i < t->ntx; i++) {
        free(t->txns[i].tid);
        free(t->txns[i].parts);
    }
    for (size_t i = 0; i < t->ncreated; i++) {
        free(t->created[i].name);
        free(t->created[i].configs);
    }
    free(t->created);
    free(t->tps);
    free(t->txns);
    free(t->conns);
    free(t->pfds);
    free(t->refuse_topic);
    free(t);
}
