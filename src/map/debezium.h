/*
 * debezium.h — row changes as Debezium PostgreSQL connector change events
 * (docs/events.md, event.format=debezium), so Debezium consumers (Flink,
 * ksqlDB, Materialize, the Debezium JDBC sink, ...) read crwatch unchanged.
 *
 * What is produced is the record *payload* a Debezium 2.6+/3.x PostgreSQL
 * connector (pgoutput) writes through Kafka Connect's JsonConverter with
 * key.converter.schemas.enable=false and value.converter.schemas.enable=false,
 * fields in the converter's order:
 *
 *   value: {"before":{..}|null,"after":{..}|null,
 *           "source":{"version","connector":"postgresql","name","ts_ms","snapshot","db",
 *                     "sequence","ts_us","ts_ns","schema","table","txId","lsn","xmin"},
 *           "transaction":null,"op":"c|u|d|r|t","ts_ms","ts_us","ts_ns"}
 *   key:   {"<key column>":<value>,...}
 *
 * Checked field by field against Debezium's documented create/update/delete/
 * truncate examples (documentation/.../connectors/postgresql.adoc) and the
 * connector source (SourceInfo, PostgresSourceInfoStructMaker, SchemaFactory,
 * Envelope, PostgresValueConverter, JdbcValueConverters, io.debezium.time.*).
 *
 * source:
 *  - version: "crwatch-<CRW_VERSION>" (Debezium puts its own, e.g. "2.7.3.Final").
 *  - name: Debezium's topic.prefix (logical server name); db: the database.
 *  - ts_ms/ts_us/ts_ns: the commit time (reads: the read time), as Debezium.
 *  - snapshot: the string "false" for streamed changes; reads say "true",
 *    "first", "first_in_data_collection", "last_in_data_collection", "last"
 *    or "incremental" (Debezium's SnapshotRecord, lower-cased).
 *  - sequence: a JSON string holding ["<last commit LSN>","<this LSN>"], both
 *    LSNs as decimal uint64 strings, either null when unknown (Debezium:
 *    "[null,\"23043920\"]" for the first transaction after a start).
 *  - lsn: the change's LSN as a number (uint64); txId: the xid; xmin: null
 *    (Debezium's xmin.fetch.interval.ms=0 default).
 *  - Debezium's lsn is each change's own WAL position.  crwatch's decoder
 *    does not keep it, so unless crw_dbz_source_t.lsn supplies it, every
 *    change of a transaction carries the transaction's commit LSN (ordered,
 *    never fabricated, but not unique within a transaction).
 * Envelope ts_ms/ts_us/ts_ns: processing time (wall clock, or injected);
 * "transaction": null (provide.transaction.metadata=false, the default).
 *
 * Values — Debezium's mapping with these connector settings:
 *   decimal.handling.mode=string, binary.handling.mode=base64,
 *   time.precision.mode=adaptive (default), interval.handling.mode=numeric
 *   (default), hstore.handling.mode=json (default), schemas disabled.
 *  - bool: true/false.  int2/int4/int8/oid: numbers.
 *  - float4/float8: numbers; NaN/Infinity/-Infinity as the strings "NaN",
 *    "Infinity", "-Infinity" (what Jackson writes for non-finite doubles).
 *  - numeric: string, Java BigDecimal.toString() of the value: PostgreSQL's
 *    text ("12.34", "1.50", scale kept) except below 1e-6 in magnitude with
 *    seven or more decimals, which Java writes in E-notation
 *    ("0.00000012300" -> "1.2300E-7", "0.0000000" -> "0E-7").  NaN,
 *    Infinity, -Infinity: "NAN", "POSITIVE_INFINITY", "NEGATIVE_INFINITY"
 *    (Debezium's SpecialValueDecimal names, as it emits them).
 *  - money: the amount as a plain decimal string with PostgreSQL's fraction
 *    digits ("-1234.50"); Debezium's streaming path goes through a double
 *    (Double.toString: "-1234.5", "1.23456789E7") — crwatch keeps the exact
 *    amount.  Text it cannot read (a locale with ',' decimals) stays text.
 *  - text, varchar, bpchar, name, "char", uuid, xml, enums, inet, cidr,
 *    macaddr, ranges, tsvector, citext, ltree, hstore and other types
 *    crwatch does not know: PostgreSQL's text as a JSON string.  (hstore:
 *    Debezium json mode re-encodes it as a JSON object string; composite and
 *    other unknown types Debezium drops unless include.unknown.datatypes.)
 *  - json/jsonb: io.debezium.data.Json — a JSON *string* holding the text
 *    exactly as PostgreSQL sent it ("{\"a\": 1}").
 *  - bytea: base64 string (binary.handling.mode=base64).
 *  - bit(1), varbit(1): true/false.  bit(n>1), varbit: io.debezium.data.Bits,
 *    base64 of the little-endian bit bytes sized to the highest set bit
 *    (B'101' -> "BQ==", all zero -> "").
 *  - date: io.debezium.time.Date, int days since 1970-01-01 (BC dates
 *    proleptic Gregorian, astronomical years).  infinity / -infinity:
 *    -2147472692 / -2147472691 — Debezium maps them to the LocalDates
 *    -5877611-06-21 / -22 (PostgresValueConverter.POSITIVE/NEGATIVE_
 *    INFINITY_LOCAL_DATE) and emits their epoch days; reproduced as is.
 *  - time(0..3): io.debezium.time.Time, int ms past midnight; time, time(4..6):
 *    MicroTime, µs past midnight ("24:00:00" -> 86400000000).
 *  - timestamp(0..3): io.debezium.time.Timestamp, ms since the epoch;
 *    timestamp, timestamp(4..6): MicroTimestamp, µs since the epoch (the
 *    wall time read as UTC).  infinity / -infinity: 9223372036825200000 /
 *    -9223372036832400000 (µs; /1000 for ms) as documented by Debezium.
 *  - timestamptz: io.debezium.time.ZonedTimestamp, ISO-8601 in UTC with "Z",
 *    exactly p fraction digits for timestamptz(p) (6 when unconstrained:
 *    "2024-01-01T00:00:00.000000Z"), none for p = 0; years beyond 9999 as
 *    "+12345", BC as astronomical "-0043".  infinity: "infinity"/"-infinity".
 *  - timetz: io.debezium.time.ZonedTime, the time shifted to UTC, fraction
 *    with trailing zeros dropped, "Z" ("07:04:56.789Z"); 24:00:00+00 stays
 *    "24:00:00Z".
 *  - interval: io.debezium.time.MicroDuration, int64 µs with Debezium's
 *    365.25/12 days per month (2629800 s a month, 31557600 s a year),
 *    computed in exact integer arithmetic (Debezium's double arithmetic may
 *    come out 1 µs lower for some fractional seconds).
 *  - point: io.debezium.data.geometry.Point {"x":..,"y":..,"wkb":"<base64 of
 *    the little-endian WKB point>","srid":null}.  Other geometric types: text.
 *  - arrays: JSON arrays of the element conversion (nested for several
 *    dimensions).  Debezium drops money[], interval[], varbit[], xml[],
 *    point[] and name[] columns (no converter); crwatch renders them.
 *  - A value crwatch cannot convert (malformed, or out of int64 range such as
 *    timestamps after 294247-01-10) is emitted as its text in a JSON string.
 *
 * Where crwatch knows less than Debezium's output claims, it leaves the field
 * out instead of inventing a value:
 *  - Unchanged TOAST values ('u'): Debezium writes the placeholder
 *    "__debezium_unavailable_value".  crwatch never does: the value is filled
 *    from the old row when the message carries it (REPLICA IDENTITY FULL,
 *    'O'), else the field is left out of "after".
 *  - A key-only old row ('K', REPLICA IDENTITY DEFAULT/INDEX): "before" holds
 *    the key columns only (Debezium adds the other columns as null, or as a
 *    type default for NOT NULL columns).
 *  - No old row (update under REPLICA IDENTITY DEFAULT with an unchanged
 *    key): "before" is null, as in Debezium.
 *
 * Columns: resource.<id>.columns.include/exclude leave columns out of
 * before/after, as Debezium's column.include.list/column.exclude.list; the
 * key keeps its columns (as in Debezium).  The row is the table's row
 * whatever resource.<id>.shape says.
 *
 * Keys and deletes: the key is {"col":value,...} over rel->key_idx with the
 * same conversions: the primary key, as Debezium; resource.<id>.key (and the
 * crd shape's namespace, name) act like Debezium's message.key.columns; for a
 * table without a primary key Debezium sends a null key, crwatch its own
 * resolved key (replica identity, else every column).  After a delete
 * Debezium sends a tombstone: the same key with a null value
 * (tombstones.on.delete=true); the caller emits it.  An update that changes
 * the key becomes, as in Debezium, a "d" record under the old key, a
 * tombstone under the old key and a "c" record under the new key (Debezium
 * adds Kafka headers __debezium.newkey / __debezium.oldkey to the d / c
 * records) — see crw_debezium_key_changed.  Truncates: Debezium skips them
 * unless skipped.operations leaves "t" out; their key is null.
 *
 * Hot path: appends into caller-owned buffers; no allocation per row beyond
 * buffer growth (one per-thread scratch buffer for quoted array elements).
 * debezium.c has rows, keys and the envelope; debezium_value.c the values.
 */
#ifndef CRW_DEBEZIUM_H
#define CRW_DEBEZIUM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/event.h"
#include "decode/change.h"
#include "decode/types.h"
#include "map/mapper.h"
#include "map/debezium_value.h"
#include "map/relmap.h"

/* source.snapshot: Debezium's SnapshotRecord. */
typedef enum crw_dbz_snapshot {
    CRW_DBZ_SNAPSHOT_FALSE = 0,                /* "false": streamed change */
    CRW_DBZ_SNAPSHOT_TRUE,                     /* "true": a snapshot row */
    CRW_DBZ_SNAPSHOT_FIRST,                    /* "first": first row of the snapshot */
    CRW_DBZ_SNAPSHOT_FIRST_IN_DATA_COLLECTION, /* "first_in_data_collection": first row of a table */
    CRW_DBZ_SNAPSHOT_LAST_IN_DATA_COLLECTION,  /* "last_in_data_collection": last row of a table */
    CRW_DBZ_SNAPSHOT_LAST,                     /* "last": last row of the snapshot */
    CRW_DBZ_SNAPSHOT_INCREMENTAL,              /* "incremental": incremental snapshot window */
} crw_dbz_snapshot_t;

/* Where records come from: set db and name once per stream, the rest per record. */
typedef struct crw_dbz_source {
    const char *dbname;       /* source.db */
    const char *server_name;  /* source.name: Debezium's topic.prefix */
    uint64_t lsn;             /* source.lsn and sequence[1]: this change's WAL position (XLogData
                                 dataStart); 0: the transaction's commit LSN (reads: null) */
    uint64_t last_commit_lsn; /* sequence[0]: end LSN of the last transaction committed before this
                                 one (Debezium's lastCommitLsn); 0: null */
    int64_t now_ns;           /* envelope ts_ms/ts_us/ts_ns (processing time), Unix ns; 0: wall clock */
} crw_dbz_source_t;

/* What a snapshot (backfill) read adds. */
typedef struct crw_dbz_read {
    uint32_t xid;                /* source.txId: the reading transaction; 0: null */
    int64_t read_time_us;        /* source.ts_*: when the row was read, Unix µs; 0: wall clock */
    crw_dbz_snapshot_t snapshot; /* source.snapshot; FALSE is taken as TRUE */
} crw_dbz_read_t;

/* "crwatch-<version>", the source.version crwatch writes. */
const char *crw_debezium_version(void);

/*
 * Encodes an Insert ("c"), Update ("u") or Delete ("d") of ri into value
 * (the Debezium value payload, no trailing newline) and its key into key
 * ({"id":1}).  tx: the transaction (commit LSN, xid, commit time).  ev (may
 * be NULL) gets the spans of after (object) and before (old object).
 * Both buffers are reset first; on error their contents are unspecified.
 * @returns 0, or CRW_ERR_UNMAPPED with errstr when the change cannot be
 *          mapped (a delete without an old row, a NULL or unknown key
 *          column); the caller dead-letters it.
 */
int crw_debezium_encode(crw_buf_t *value, crw_buf_t *key, crw_event_t *ev, const crw_relinfo_t *ri,
                        const crw_change_t *ch, const crw_txn_ctx_t *tx, const crw_dbz_source_t *src, char *errstr,
                        size_t errstr_size);

/*
 * True when ch is an Update whose old row (REPLICA IDENTITY FULL or a key
 * change under DEFAULT/INDEX) shows a key column with another value.
 * Debezium then emits three records instead of one "u": encode them with
 * crw_debezium_encode_key_change.
 */
bool crw_debezium_key_changed(const crw_relinfo_t *ri, const crw_change_t *ch);

/*
 * The records of a key-changing Update: del_value under old_key ("d", before
 * = the old row as known, after = null), then the caller's tombstone under
 * old_key, then create_value under new_key ("c", before = null).  The two
 * events (may be NULL) get their spans.
 * @returns 0, or CRW_ERR_UNMAPPED with errstr as crw_debezium_encode.
 */
int crw_debezium_encode_key_change(crw_buf_t *del_value, crw_buf_t *old_key, crw_event_t *del_ev,
                                   crw_buf_t *create_value, crw_buf_t *new_key, crw_event_t *create_ev,
                                   const crw_relinfo_t *ri, const crw_change_t *ch, const crw_txn_ctx_t *tx,
                                   const crw_dbz_source_t *src, char *errstr, size_t errstr_size);

/* Encodes a truncate of ri ("t": before and after null; Debezium's key is null). */
void crw_debezium_encode_truncate(crw_buf_t *value, crw_event_t *ev, const crw_relinfo_t *ri,
                                  const crw_txn_ctx_t *tx, const crw_dbz_source_t *src);

/*
 * Encodes a snapshot read ("r", before = null) of row, a whole row read
 * outside replication in the same text forms (DateStyle=ISO,
 * IntervalStyle=iso_8601, TimeZone=UTC, extra_float_digits=3,
 * bytea_output=hex).  src->lsn: the snapshot's LSN (0: null).
 * @returns 0, or CRW_ERR_UNMAPPED with errstr (a NULL or missing key column).
 */
int crw_debezium_encode_read(crw_buf_t *value, crw_buf_t *key, crw_event_t *ev, const crw_relinfo_t *ri,
                             const crw_pgo_tuple_t *row, const crw_dbz_source_t *src, const crw_dbz_read_t *rd,
                             char *errstr, size_t errstr_size);

#endif
