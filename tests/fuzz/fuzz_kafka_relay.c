/*
 * fuzz_kafka_relay.c — the Kafka protocol parsing of crwatch-mock-kafka's
 * transaction layer (tools/mock_kafka_txn.c): the requests it reads
 * (Produce, Fetch, InitProducerId, EndTxn, CreateTopics) and the responses
 * it learns from and rewrites (Metadata, FindCoordinator, Produce,
 * InitProducerId, EndTxn, Fetch, ApiVersions), on a detached layer with
 * no sockets and no mock cluster (crw_txnlayer_new_detached).
 *
 * Input: chunks, each a direction byte (even: from the client, odd: from
 * the broker), a 2-byte big-endian length and that many bytes of the
 * connection's stream: size-prefixed Kafka frames, which may be split
 * across chunks.  A fresh layer per input, so each input is one
 * connection's conversation: a response is understood when its
 * correlation id is that of the oldest request waiting.
 *
 * Invariants: ASan/UBSan's (bounds, overflow, leaks), and that feeding
 * never fails for frames of a sane size.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_common.h"
#include "mock_kafka_txn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    crw_txnlayer_t *t = crw_txnlayer_new_detached();
    fz_in_t in = {data, size, 0};
    while (in.i < in.n) {
        bool from_client = (fz_u8(&in) & 1) == 0;
        size_t len;
        const uint8_t *p = fz_take(&in, fz_u16(&in), &len);
        /* An exactly sized copy: ASan sees a read past the bytes given. */
        uint8_t *chunk = (uint8_t *)fz_strndup(p, len);
        int rc = crw_txnlayer_feed(t, from_client, chunk, len);
        free(chunk);
        if (rc < 0)
            break; /* the relay drops the connection */
    }
    crw_txnlayer_destroy(t);
    return 0;
}
