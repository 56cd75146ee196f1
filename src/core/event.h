/*
 * event.h — one change event as the mapper rendered it and the sinks take
 * it: the bytes to publish plus what a sink needs beside them, so that no
 * sink ever parses the bytes (docs/architecture.md, "Events").
 *
 * The mapper renders every byte once (map/mapper.h) and points into its own
 * buffers; the driver sets `txn` and hands the event to every sink.  All
 * pointers are borrowed: valid during the sink's emit() only, so a sink
 * that keeps an event copies what it keeps.
 */
#ifndef CRW_EVENT_H
#define CRW_EVENT_H

#include <stddef.h>
#include <stdint.h>

/* Bytes [off, off + len) of the event's value; len 0: absent (or JSON null). */
typedef struct crw_span {
    size_t off, len;
} crw_span_t;

/* One CloudEvents context attribute, its value as text (not JSON-escaped). */
typedef struct crw_event_attr {
    const char *name;  /* "id", "source", "type", ... */
    const char *value;
    size_t len;
} crw_event_attr_t;

typedef struct crw_event {
    uint64_t txn;           /* pipeline sequence of the source transaction (set by the driver) */
    uint64_t position;      /* the source transaction's commit position (what the pipeline confirms) */
    uint64_t lsn;           /* the WAL position the event names (pglsn): the commit LSN, or where a poll read */
    uint32_t ordinal;       /* position of the change in its transaction (1-based) */
    const char *id;         /* the event id, stable across redelivery (CloudEvents id): "<commit LSN>/<ordinal>",
                             * or the source's own (polling: "<txid>/<resource_version>") */
    size_t idlen;
    uint32_t xid;           /* the source transaction's id (pgxid); 0 when unknown */
    const char *type;       /* "ADDED", "MODIFIED", "DELETED", "TRUNCATED", "SYNC" */
    const char *kind;       /* the event's kind (in a shared table, the row's own) */
    const char *schema;     /* the table, for topic templates and logs */
    const char *table;
    const char *source;     /* CloudEvents source, /crwatch/<db>/<schema>/<table> */
    const char *key;        /* resource key (Kafka message key; may be empty, e.g. TRUNCATED) */
    size_t keylen;
    const char *value;      /* the rendered event; NULL: a tombstone (Debezium, after a delete) */
    size_t len;
    crw_span_t data;        /* CloudEvents: the "data" member's value (binary content mode) */
    crw_span_t object;      /* the object (CloudEvents data.object, Debezium after) */
    crw_span_t old_object;  /* the old object when known (data.oldObject, Debezium before) */
    const crw_event_attr_t *attrs; /* CloudEvents context attributes in their JSON order; NULL for Debezium */
    int nattrs;
} crw_event_t;

#endif
