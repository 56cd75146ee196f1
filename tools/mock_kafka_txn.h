/*
 * mock_kafka_txn.h — the transaction layer of crwatch-mock-kafka.
 *
 * librdkafka 2.0.2's mock cluster takes transactional produce requests and
 * answers EndTxn, but writes no transaction markers, keeps no transaction
 * state and answers Fetch with LastStableOffset = high watermark and no
 * aborted transactions: a read_committed consumer of it sees aborted and
 * still-open transactions.  This layer is a Kafka-protocol relay in front of
 * each mock broker that adds what a broker's transaction coordinator and
 * partition leaders do for read_committed readers:
 *
 *   - it learns each transaction's partitions from AddPartitionsToTxn, and
 *     its data batches from Produce requests and their responses
 *     (transactional.id, producer id and epoch, offsets);
 *   - on a successful EndTxn it appends a COMMIT or ABORT control batch to
 *     every partition the transaction added, before the client hears back;
 *   - on a successful InitProducerId for a transactional.id whose earlier
 *     producer left a transaction open (a crash), it aborts that
 *     transaction the same way (fencing);
 *   - it rewrites Fetch responses: LastStableOffset stops at the first
 *     offset of the earliest open transaction, read_committed fetches get no
 *     batch at or past it, and the aborted-transaction list names the
 *     aborted transactions the returned batch belongs to — librdkafka's
 *     consumer (or kcat) then filters them with its own read_committed code;
 *   - it rewrites broker addresses in Metadata and FindCoordinator so that
 *     clients keep talking through it;
 *   - it answers CreateTopics (v0-4), which the mock lacks, by creating the
 *     topics in the mock, and remembers the partitions, replication factor
 *     and configs each asked for (the mock applies no config: nothing is
 *     compacted).
 *
 * Not done: transaction timeouts (an abandoned transaction stays open until
 * the next InitProducerId of its transactional.id), consumer offsets
 * committed inside transactions (TxnOffsetCommit passes through).
 * A transactional batch the mock appended but whose Produce response never
 * came back (the connection died, e.g. `down`) is open until its producer's
 * next marker on the partition, and then committed or aborted with it.
 * Known gap: a late batch of a fenced producer is aborted
 * with a marker at the end of the log, so if its successor kept the same
 * producer id (an epoch bump) the successor's batches in between are
 * listed as aborted too.
 *
 * Single-threaded: crw_txnlayer_poll() is called from the helper's loop.
 */
#ifndef CRWATCH_MOCK_KAFKA_TXN_H
#define CRWATCH_MOCK_KAFKA_TXN_H

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct crw_txnlayer crw_txnlayer_t;

/**
 * Listens on a loopback port per broker of \p mcluster and caps the API
 * versions the layer parses to ones without flexible encoding.
 * @returns the layer, or NULL with a message in errstr.
 */
crw_txnlayer_t *crw_txnlayer_new(rd_kafka_mock_cluster_t *mcluster, char *errstr, size_t errstr_size);

/** The layer's bootstrap servers ("127.0.0.1:P1,127.0.0.1:P2"). */
const char *crw_txnlayer_bootstraps(const crw_txnlayer_t *t);

/**
 * Relays for up to \p timeout_ms; \p extra_fd (-1: none) is polled too.
 * @returns 1 when extra_fd is readable, 0 otherwise.
 */
int crw_txnlayer_poll(crw_txnlayer_t *t, int extra_fd, int timeout_ms);

/**
 * What CreateTopics asked for \p topic: "partitions=N replication=R
 * configs=k=v,k=v" into out.
 * @returns 0, or -1 when no CreateTopics made it.
 */
int crw_txnlayer_topic_config(const crw_txnlayer_t *t, const char *topic, char *out, size_t n);

/**
 * The next \p count Produce requests that carry \p topic are answered with
 * the error \p code (a Kafka error code, e.g. 10 MESSAGE_TOO_LARGE) for
 * each of their partitions, and not appended: a broker refusing one
 * message, whichever other requests are in flight.
 */
void crw_txnlayer_refuse(crw_txnlayer_t *t, const char *topic, int16_t code, int count);

void crw_txnlayer_destroy(crw_txnlayer_t *t);

/**
 * A layer with no mock cluster and no sockets, and one connection whose
 * bytes are handed to it with crw_txnlayer_feed (tests/fuzz/fuzz_kafka_relay.c):
 * markers get made-up offsets, one after another; CreateTopics creates
 * nothing.  Destroy it with crw_txnlayer_destroy.
 */
crw_txnlayer_t *crw_txnlayer_new_detached(void);

/**
 * Feeds \p n bytes of a detached layer's connection, from the client
 * (\p from_client: requests) or from the broker (responses): size-prefixed
 * frames as on the wire; a partial frame waits for the next bytes.  What
 * the layer would send on is dropped.
 * @returns 0, or -1 when a frame is too large to be Kafka (the relay would
 *          close the connection; what was buffered is dropped).
 */
int crw_txnlayer_feed(crw_txnlayer_t *t, bool from_client, const uint8_t *data, size_t n);

#endif
