/*
 * conf.h — configuration: `key = value` properties files, -X overrides,
 * parsed against one table of keys with types and validators (docs/configuration.md).
 *
 * Unknown keys and bad values are errors naming the key (and file:line);
 * nothing here touches the database.  Thread-safety: a config is built
 * single-threaded at start-up and read-only afterwards.
 */
#ifndef CRW_CONF_H
#define CRW_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum { CRW_SOURCE_AUTO, CRW_SOURCE_LOGICAL, CRW_SOURCE_POLL } crw_source_kind_t;
typedef enum { CRW_SHAPE_ROW, CRW_SHAPE_CRD } crw_shape_t;
typedef enum { CRW_FORMAT_CLOUDEVENTS, CRW_FORMAT_DEBEZIUM } crw_format_t;
typedef enum { CRW_DELIVERY_AT_LEAST_ONCE, CRW_DELIVERY_EXACTLY_ONCE } crw_delivery_t;
typedef enum { CRW_EXEC_STREAM, CRW_EXEC_PER_EVENT } crw_exec_mode_t;
typedef enum { CRW_SNAPSHOT_NEVER, CRW_SNAPSHOT_INITIAL, CRW_SNAPSHOT_INCREMENTAL } crw_snapshot_mode_t;

typedef struct crw_strlist {
    char **v;
    int n;
} crw_strlist_t;

/* Appends a copy of s. */
void crw_strlist_add(crw_strlist_t *l, const char *s);
/* Frees every item and the array; l is empty afterwards. */
void crw_strlist_clear(crw_strlist_t *l);

/* One watched table (resource.<id>.* or an entry of `tables`). */
typedef struct crw_resource_conf {
    char *id;
    char *schema;      /* from resource.<id>.table, "public" when unqualified */
    char *table;
    char *kind;        /* default: the table name */
    char *api_version;
    crw_shape_t shape;
    crw_strlist_t key; /* empty: the primary key (crd shape: namespace, name) */
    char *kind_column; /* shared table: the column naming each row's kind */
    crw_strlist_t include; /* columns in the object (empty: all) */
    crw_strlist_t exclude; /* columns left out of the object */
    char *poll_column; /* timestamp polling (a table outside the convention): the column every write sets */
    char *filter;      /* snapshots: an SQL condition on the table's rows ("": every row) */
    char *plural;      /* the watch API: the kind's plural ("": lowercase kind + "s") */
    bool seen_table;   /* resource.<id>.table was given */
    int cache;         /* resource.<id>.cache: 0 auto, 1 true, 2 false */
    bool cached;       /* resolved by crw_config_finalize: its objects are kept in the resource cache */
} crw_resource_conf_t;

typedef struct crw_kv {
    char *key;
    char *value;
} crw_kv_t;

typedef struct crw_config {
    crw_source_kind_t source;
    char *slot_name;
    bool slot_create;
    char *publication_name;
    bool publication_create;
    crw_strlist_t tables; /* the `tables` shorthand as given */
    crw_resource_conf_t *resources;
    int nresources;
    crw_strlist_t sinks;  /* sink kinds, in the order given (sink/sinks.c knows them); empty: the embedding's own */
    crw_kv_t *kafka;      /* kafka.<prop> pass-through, <prop> without the prefix */
    int nkafka;
    char *topic_template;
    crw_format_t event_format;
    crw_delivery_t delivery;
    int poll_interval_ms;
    int poll_batch_rows;      /* a poll with this many changes: poll again at once */
    int poll_lag_ms;          /* timestamp polling: how far back each poll re-reads */
    int resync_interval_ms;   /* timestamp polling: the whole-table reconciliation period */
    char *resync_from;        /* crwatch resync: the sink's view, a JSON-lines file of events */
    char *exec_command;
    crw_exec_mode_t exec_mode;
    char *plugin_path;
    int status_interval_ms;   /* standby status update interval */
    int reconnect_max_ms;     /* cap of the reconnect backoff */
    int reconnect_auth;       /* a refused login: 0 fail (exit 3), 1 retry it as a lost connection */
    char *spool_dir;          /* streamed in-progress transactions; default $TMPDIR or /tmp */
    int log_level;
    int log_format;           /* 0 text, 1 json (core/log.h) */
    char *deadletter_file;    /* changes that cannot be mapped or delivered */

    /* --- slot safety and operations (docs/operations.md) --- */
    int heartbeat_interval_ms; /* 0: no heartbeat */
    int heartbeat_timeout_ms;  /* a heartbeat not back within it, with the server silent: a stall */
    int64_t slot_max_retained_bytes;
    int slot_lost;             /* 0 fail, 1 resync */
    char *http_listen;         /* host:port of the operations endpoint; "": off */
    int health_timeout_ms;     /* the main loop's silence that makes /healthz 503 */
    char *watch_listen;        /* host:port of the watch API (app/watchapi.c); "": off */
    int watch_history_events;  /* changes kept for resuming watches */

    /* --- snapshots: backfill, snapshot.mode (source/snapshot.c) --- */
    crw_snapshot_mode_t snapshot_mode;
    int snapshot_workers;     /* connections sharing one exported snapshot */
    int snapshot_chunk_rows;  /* rows per chunk (the unit of progress and resume) */
    int snapshot_chunking;    /* 0: ctid (block ranges), 1: key (primary-key ranges) */
    char *snapshot_state_file; /* backfill progress, or the initial snapshot's ("": a name from slot.name) */

    /* --- Kafka sink (sink/kafka.c) --- */
    char *deadletter_topic;   /* events the broker refuses for good ("": the dead-letter file only) */
    char *checkpoint_topic;   /* exactly-once: compacted topic of (slot, commit LSN) records */
    int transaction_interval_ms; /* exactly-once: a Kafka transaction is committed once this old */
    int cloudevents_mode;     /* 0 structured (the JSON event is the value), 1 binary (ce_* headers) */

    /* --- RabbitMQ sink (sink/rabbitmq.c) --- */
    char *rabbitmq_url;             /* amqp[s]://user:pass@host:port/vhost, a comma list tried in turn (a secret) */
    char *rabbitmq_exchange;        /* template: {schema} {table} {kind}; "": the default exchange */
    char *rabbitmq_routing_key;     /* template: {schema} {table} {kind} {key} */
    int rabbitmq_max_unconfirmed;   /* messages published and not yet confirmed before emit() waits */
    bool rabbitmq_mandatory;        /* unroutable messages come back (and are dead-lettered) */
    char *rabbitmq_password_file;   /* the password, from a file ("": the URL's) */
    char *rabbitmq_tls_ca_file;     /* amqps: CA certificates (PEM) */
    char *rabbitmq_tls_cert_file;   /* amqps: client certificate (PEM) */
    char *rabbitmq_tls_key_file;    /* amqps: client private key (PEM) */
    bool rabbitmq_tls_verify;       /* amqps: verify the server's certificate and host name */

    /* --- NATS JetStream sink (sink/nats.c) --- */
    char *nats_url;                 /* comma list of servers, nats://[user:pass@]host:port or tls:// (a secret) */
    char *nats_subject_template;    /* {schema} {table} {kind} {key}, each expanded into one subject token */
    char *nats_stream;              /* the JetStream stream the subjects belong to */
    bool nats_stream_create;        /* create it when missing (the template's subjects, file storage) */
    int nats_stream_replicas;       /* replicas of a stream crwatch creates */
    char *nats_stream_duplicate_window; /* a duration (2m, 90s): the duplicate window of a stream crwatch creates */
    int nats_max_pending;           /* publishes awaiting their JetStream ack before emit() waits */
    int nats_publish_timeout_ms;    /* an ack not back within this: the publish failed, it is sent again */
    char *nats_user;                /* user name, with nats.password.file */
    char *nats_password_file;       /* the password, from a file */
    char *nats_token_file;          /* an authentication token, from a file */
    char *nats_creds_file;          /* a credentials file (user JWT and NKey seed) */
    bool nats_tls;                  /* require TLS (also implied by tls:// and the nats.tls.*.file keys) */
    char *nats_tls_ca_file;         /* CA certificates (PEM) the server's certificate is checked against */
    char *nats_tls_cert_file;       /* client certificate (PEM) */
    char *nats_tls_key_file;        /* client private key (PEM) */
    bool nats_tls_verify;           /* verify the server's certificate and host name */

    /* --- local handlers: exec, plugin, embedding (sink/exec.c, sink/plugin.c) --- */
    int workers;              /* handler worker threads (per handler sink) */
    int retry_max;            /* retries after the first attempt; -1: forever */
    int retry_backoff_initial_ms;
    int retry_backoff_max_ms;
    int rate_limit;           /* handler calls per second; 0: unlimited */
    int rate_burst;
    bool coalesce;            /* queued changes to one key collapse to the latest */
    int queue_max_events;     /* emit() waits while this many events are unfinished */
    int queue_max_bytes;
    int exec_timeout_ms;      /* 0: none */
    char *plugin_config;      /* handed to the plugin's init() */

    /* --- mapper (map/) --- */
    bool event_patch;         /* add an RFC 6902 JSON Patch from oldObject to object */
    int cache_max_entries;    /* resource cache: most objects (0: bytes only); > 0: row kinds are cached too */
    int64_t cache_max_bytes;  /* resource cache: most bytes; 0: no cache */
    bool cache_seed;          /* list watched tables at start to fill the cache */
    char *debezium_name;      /* Debezium source.name (logical server name) */
} crw_config_t;

/* Creates a config holding every default. */
crw_config_t *crw_config_new(void);
void crw_config_destroy(crw_config_t *c);

/*
 * Sets key to value after validating both.
 * @returns 0, or CRW_ERR_CONFIG with errstr naming the key and what was wrong.
 */
int crw_config_set(crw_config_t *c, const char *key, const char *value, char *errstr, size_t errstr_size);

/* Parses "key=value" (as given to -X) and sets it. */
int crw_config_set_pair(crw_config_t *c, const char *pair, char *errstr, size_t errstr_size);

/*
 * Loads a properties file: `key = value` lines, `#` or `!` comments, blank
 * lines.  Errors name the file and line.
 */
int crw_config_load_file(crw_config_t *c, const char *path, char *errstr, size_t errstr_size);

/* Sets one key (crw_config_set's shape); returns 0 or a negative crw_err_t with errstr. */
typedef int (*crw_props_set_fn)(void *arg, const char *key, const char *value, char *errstr, size_t errstr_size);

/*
 * Parses properties text: `key = value` lines, `#`/`!` comments, blank
 * lines; calls set for each pair.  Errors are prefixed "label:N: " (or
 * "line N: " when label is NULL).
 */
int crw_props_parse(const char *text, const char *label, crw_props_set_fn set, void *arg, char *errstr,
                    size_t errstr_size);
/* Reads the file at path and parses it as above, labelled with path. */
int crw_props_load_file(const char *path, crw_props_set_fn set, void *arg, char *errstr, size_t errstr_size);

/*
 * Checks the whole config once every source has been applied: expands
 * `tables`, requires each resource.<id> to name a table, rejects duplicate
 * tables.  Which sink and source kinds exist is the registries' to say
 * (crw_sinks_check, crw_sources_check).
 */
int crw_config_finalize(crw_config_t *c, char *errstr, size_t errstr_size);

/*
 * True when names (tables as given on the command line: "schema.table", or
 * "table" for public) name schema.table; NULL or empty names name every table.
 */
bool crw_config_list_names(const crw_strlist_t *names, const char *schema, const char *table);

/* True when some resource is kept in the resource cache (crw_resource_conf_t.cached). */
bool crw_config_cache_on(const crw_config_t *c);

/* True when a resource before resources[i] names the same table (a shared table: one per kind). */
bool crw_config_table_named_before(const crw_config_t *c, int i);

/*
 * Splits a listen address "host:port" ("[::1]:9187", ":9187" for every
 * interface) into host (without brackets) and port.  @returns 0, or -1 when
 * it is not one.
 */
int crw_config_listen(const char *listen, char *host, size_t hostn, int *port);

/* The name of a `source` value ("auto", "logical", "poll"). */
const char *crw_config_source_name(crw_source_kind_t kind);

/* Writes "key = value" lines of every key to f (help text / debugging). */
void crw_config_describe(FILE *f);

#endif
