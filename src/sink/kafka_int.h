/*
 * kafka_int.h — the Kafka sink's insides, shared by its files:
 *   kafka.c           the ops, delivery reports, dead letters, creating the producer
 *   kafka_eos.c       exactly-once: Kafka transactions, the checkpoint topic, poison
 *   kafka_topic.c     topic templates and the topic handle cache
 *   kafka_producer.c  produce() with backpressure, message identities, the fatal state
 * Nothing outside src/sink/kafka*.c includes it.
 *
 * Threads: every function here runs on the main thread; librdkafka's own
 * threads only queue delivery reports, applied in rd_kafka_poll().
 */
#ifndef CRW_SINK_KAFKA_INT_H
#define CRW_SINK_KAFKA_INT_H

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/strmap.h"
#include "sink/kafka.h"
#include "sink/sink.h"

/* What a message is. */
enum { KMSG_EVENT = 0, KMSG_DEADLETTER = 1, KMSG_CHECKPOINT = 2 };

#define WAIT_POLL_MS 100            /* rd_kafka_poll slice while blocked (queue full, commit) */
#define WARN_EVERY_MS 10000         /* repeated "still waiting" warnings */
#define EOS_START_TIMEOUT_MS 120000 /* init_transactions / checkpoint read before giving up */
#define IDLE_FLUSH_MS 2             /* an idle stream's flush waits this long at most (kafka_idle) */
#define IDLE_FLUSH_MAX_QUEUED 1000  /* more waiting for delivery: no idle flush */
#define EOS_IDLE_SPACING_MS 10      /* exactly-once: an idle stream's commits, at most one per this */

/*
 * The change a message in flight came from.  librdkafka's msg_opaque of
 * every message points at one, taken from a free list (kmsg_get) and given
 * back by its delivery report, so the hot path allocates nothing once warm.
 */
typedef struct kmsg {
    struct kmsg *next;   /* free list */
    int what;            /* KMSG_* */
    uint64_t seq;        /* pipeline transaction */
    uint64_t position;   /* its commit position */
    uint64_t lsn;        /* the WAL position it names (pglsn) */
    uint32_t ordinal;
    uint32_t xid;
    const char *source;  /* interned (kafka_sink_t.sources): lives as long as the sink */
    int64_t produced_us; /* monotonic, when produce() took it: its delivery report times the step */
} kmsg_t;

typedef struct {
    char *name;
    rd_kafka_topic_t *rkt;
} topic_t;

/* A message the broker refused for good, copied out of its delivery report
 * (which may not produce) to be dead-lettered or re-sent after poll returns. */
typedef struct {
    kmsg_t id;                 /* a copy: the report gave the original back */
    bool retry;                /* timed out (a user-set message.timeout.ms): send again */
    rd_kafka_resp_err_t err;
    char *topic;
    char *key;
    size_t keylen;
    char *value;               /* NULL: a tombstone */
    size_t len;
    rd_kafka_headers_t *hdrs;  /* owned; NULL when none */
} failed_t;

/* Exactly-once: a change the broker (or the producer) refused inside a
 * transaction; when the source sends it again it is dead-lettered instead
 * of produced, and the dead-letter file, which no transaction covers, gets
 * it once per process. */
typedef struct {
    uint64_t position;
    uint32_t ordinal;
    rd_kafka_resp_err_t err;
    unsigned flags;            /* DL_* */
} poison_t;

/* How a message is dead-lettered. */
enum {
    DL_TOPIC_REFUSED = 1, /* the dead-letter topic refused it too: the file only */
    DL_LOCAL_TOO_BIG = 2, /* the producer refused it as larger than message.max.bytes */
    DL_FILED = 4,         /* the dead-letter file has it already */
};

typedef struct {
    crw_sink_t base;
    bool interruptible; /* produce() may give up on a stop request (a new event only) */
    const crw_config_t *conf;
    crw_pipeline_t *pipeline;
    rd_kafka_t *rk;
    rd_kafka_t *mock_rk;       /* embedded: the handle owning the mock cluster */
    rd_kafka_mock_cluster_t *mock;
    char *bootstrap;           /* as resolved (the mock's address when embedded) */
    bool eos;
    bool binary;
    topic_t *topics;
    int ntopics, last_topic;
    crw_buf_t tname;           /* topic name scratch */
    rd_kafka_topic_t *dl_rkt;  /* deadletter.topic, once used */
    failed_t *failed;
    int nfailed, capfailed;
    bool in_failed;            /* re-entrancy guard of process_failed() */
    bool fatal;
    char fatal_msg[1024];
    uint64_t delivered, deadlettered;
    int64_t last_warn_ms;
    bool idle_flush;           /* flush when the stream goes idle (no linger.ms of the user's) */
    uint64_t unflushed;        /* events produced since the stream was last idle */
    int64_t idled_us;          /* when it was (monotonic) */

    /* message identities: slabs, their free list, interned sources */
    kmsg_t **slabs;
    int nslabs;
    kmsg_t *free_kmsgs;
    crw_names_t sources; /* one copy of each event source, for the records to point at */

    /* the PostgreSQL transaction being emitted */
    bool partial;              /* events of cur_seq were sent but its commit() has not come */
    uint64_t cur_seq, cur_position;
    uint32_t cur_events;

    /* exactly-once */
    char *txn_id;
    rd_kafka_topic_t *ckpt_rkt;
    bool inited;               /* init_transactions done */
    bool resumed;              /* the checkpoint was read */
    bool txn_open;
    uint64_t ckpt_position;    /* last complete PostgreSQL transaction in the open Kafka transaction */
    uint64_t committed;        /* the last checkpoint known committed */
    int64_t txn_started_ms;
    int64_t txn_committed_ms;  /* when the last commit ended (monotonic) */
    bool idle_commit;          /* the stream went idle with the transaction open: commit it once due */
    uint64_t *seqs;            /* PostgreSQL transactions holding one delivery in the open transaction */
    int nseqs, capseqs;
    size_t nmsgs;              /* messages in the open transaction */
    poison_t *poison;
    int npoison, cappoison;
} kafka_sink_t;

/* The key of this run's checkpoint records (exactly-once): slot.name, or the run's own (a backfill). */
static inline const char *kafka_checkpoint_id(const kafka_sink_t *s) {
    return s->base.env->checkpoint_id ? s->base.env->checkpoint_id : s->conf->slot_name;
}

/* kafka_producer.c */
void kafka_keepalive(kafka_sink_t *s);
/* True once per WARN_EVERY_MS: a wait that goes on is reported, not spammed. */
bool kafka_warn_due(kafka_sink_t *s);
/* The first fatal error wins; the sink fails from here on. */
void kafka_set_fatal(kafka_sink_t *s, const char *fmt, const char *a, const char *b);
/* The identity of ev's change (its source interned). */
kmsg_t kafka_identity(kafka_sink_t *s, const crw_event_t *ev);
/* A message identity from the free list: a copy of from (NULL: zeroes) saying what. */
kmsg_t *kafka_kmsg_new(kafka_sink_t *s, int what, const kmsg_t *from);
/* A message identity for ev (what: KMSG_*), or for a checkpoint when ev is NULL. */
kmsg_t *kafka_kmsg(kafka_sink_t *s, int what, const crw_event_t *ev);
/* Gives an identity back to the free list. */
void kafka_kmsg_put(kafka_sink_t *s, kmsg_t *m);
/*
 * Produces one message, copying key and value, waiting while the queue is
 * full (see kafka_producer.c).  hdrs is consumed on success only; id always
 * is (its delivery report, or a failure here, gives it back).
 */
rd_kafka_resp_err_t kafka_produce(kafka_sink_t *s, rd_kafka_topic_t *rkt, int32_t partition, const char *key,
                                  size_t keylen, const char *value, size_t len, rd_kafka_headers_t *hdrs, kmsg_t *id);
/* librdkafka log lines of helper handles (mock cluster, checkpoint reader): debug unless errors. */
void kafka_on_log_quiet(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/*
 * (kafka_view.c) A read_committed consumer that commits nothing and reports partition ends
 * (the checkpoint reader, resync's view): conf's kafka.<prop> keys first
 * (producer-only ones are skipped, at debug), then bootstrap (NULL: from
 * them), group and client_id.  @returns the handle, or NULL with errstr.
 */
rd_kafka_t *kafka_reader_new(const crw_config_t *conf, const char *bootstrap, const char *group, const char *client_id,
                             void (*log_cb)(const rd_kafka_t *, int, const char *, const char *), char *errstr,
                             size_t errstr_size);

/* kafka_topic.c */
bool kafka_topic_char(unsigned char c);
/* key's value v as a topic name: 0, or -1 with errstr. */
int kafka_topic_name_check(const char *key, const char *v, bool may_be_empty, char *errstr, size_t errstr_size);
/* The topic handle for ev (its name left in s->tname); NULL when librdkafka refuses one. */
rd_kafka_topic_t *kafka_topic_for(kafka_sink_t *s, const crw_event_t *ev);
void kafka_topics_destroy(kafka_sink_t *s);

/* kafka_eos.c */
int kafka_eos_init(kafka_sink_t *s);
int kafka_eos_begin(kafka_sink_t *s);
int kafka_eos_abort(kafka_sink_t *s);
int kafka_eos_commit(kafka_sink_t *s, int64_t deadline_ms);
/* True when the stream went idle with a transaction open and EOS_IDLE_SPACING_MS passed since the last commit. */
static inline bool kafka_eos_commit_due(const kafka_sink_t *s) {
    return s->idle_commit && crw_clock_mono_ms() - s->txn_committed_ms >= EOS_IDLE_SPACING_MS;
}
/* The index of ev's entry in the poison list, or -1. */
int kafka_eos_poisoned(const kafka_sink_t *s, const crw_event_t *ev);
void kafka_eos_poison(kafka_sink_t *s, uint64_t position, uint32_t ordinal, rd_kafka_resp_err_t err, unsigned flags);
void kafka_eos_ensure_checkpoint_topic(kafka_sink_t *s);
int kafka_eos_read_checkpoint(kafka_sink_t *s, uint64_t *position);

#endif
