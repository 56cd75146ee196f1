/*
 * session.h — the sources' libpq sessions: a walsender
 * (replication=database) for the stream, and a plain SQL session for
 * prerequisites, the publication, the slot and the catalog (a walsender in
 * COPY mode cannot answer queries).  Every session runs with the settings
 * that make PostgreSQL's text output deterministic (DateStyle=ISO,
 * IntervalStyle=iso_8601, TimeZone=UTC, extra_float_digits=3,
 * bytea_output=hex).
 *
 * Errors: CRW_ERR_CONN when the server went away (retry), CRW_ERR_PREREQ
 * when something the database must provide is missing (exit 3),
 * CRW_ERR_AUTH when it refuses the login (exit 3), CRW_ERR_CONFIG for
 * connection settings libpq cannot use (exit 2),
 * CRW_ERR_SLOT_BUSY / CRW_ERR_SLOT_LOST for the slot; errstr says which.
 */
#ifndef CRW_SESSION_H
#define CRW_SESSION_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/conf.h"
#include "decode/pgoutput.h"
#include "decode/relcache.h"

typedef struct crw_session {
    const crw_config_t *conf;
    char *conninfo;     /* libpq conninfo or URI; "" for the PG* environment */
    PGconn *sql;        /* plain SQL session */
    PGconn *repl;       /* walsender */
    PGconn *ops;        /* holds the slot's advisory lock; slot safety's queries (source/slotguard.h) */
    int server_version;
    char *dbname;       /* as IDENTIFY_SYSTEM reported it */
    char *sysid;        /* the database system identifier (IDENTIFY_SYSTEM) */
    uint32_t timeline;  /* the server's timeline (IDENTIFY_SYSTEM) */
    bool locked;        /* ops holds the slot's advisory lock (crw_session_lock_slot) */
    char *snapshot;     /* exported by crw_session_create_slot; valid until the next walsender command */
    bool slot_seen;     /* the slot existed at some point while this session object lived */
} crw_session_t;

/* Initialises s (no connection yet); conf is borrowed. */
void crw_session_init(crw_session_t *s, const crw_config_t *conf, const char *conninfo);
/* Closes both connections and frees what s holds. */
void crw_session_free(crw_session_t *s);
/* Closes every connection (s may be opened again); the lock goes with them. */
void crw_session_close(crw_session_t *s);

/*
 * The connection settings as libpq will read them, checked before anything
 * connects: a conninfo's syntax and option names (PQconninfoParse), and what
 * libpq itself checks only when it connects (ports 1 .. 65535, one port per
 * host, integer options), with PGPORT for a conninfo that names no port.  A
 * word that is neither a conninfo nor a URI is a database name.  what names
 * where conninfo came from ("-d/--dbname", "conninfo").
 * @returns 0, or CRW_ERR_CONFIG with errstr naming what and libpq's reason.
 */
int crw_session_check_conninfo(const char *conninfo, const char *what, char *errstr, size_t errstr_size);

/*
 * Connects both sessions and asks IDENTIFY_SYSTEM; no publication or slot is
 * touched.  A failed connection is CRW_ERR_CONN (try again), unless it
 * never can succeed as configured: CRW_ERR_CONFIG (settings libpq refuses),
 * CRW_ERR_AUTH (the server refused the login: a password, a pg_hba.conf
 * line, a role or a database that does not exist) or CRW_ERR_PREREQ (no
 * CONNECT privilege, no REPLICATION attribute).
 */
int crw_session_open(crw_session_t *s, char *errstr, size_t errstr_size);

/* Connects the plain SQL session only (the polling source: no walsender, no REPLICATION needed). */
int crw_session_open_sql(crw_session_t *s, char *errstr, size_t errstr_size);

/* Connects the walsender (the SQL session is open) and asks IDENTIFY_SYSTEM. */
int crw_session_open_repl(crw_session_t *s, char *errstr, size_t errstr_size);

/*
 * High availability (docs/operations.md): takes the session advisory lock of
 * the slot without waiting, on a session of its own (s->ops, connected when
 * needed; it stays open while the source streams or stands by).  Instances with one slot.name share it:
 * the one holding it streams, the rest stand by.  @returns 0 (s->locked),
 * CRW_ERR_STANDBY when another session holds it (errstr names its PID), or
 * an error.
 */
int crw_session_lock_slot(crw_session_t *s, char *errstr, size_t errstr_size);

/*
 * The first line of the error of res (or, NULL, of c) into errstr, after
 * "what: " when what is not NULL.  @returns CRW_ERR_CONN when c's connection
 * went, else CRW_ERR_PREREQ (the server refused).
 */
int crw_session_error(PGconn *c, const PGresult *res, const char *what, char *errstr, size_t errstr_size);

/* Runs sql (one or more statements, no rows wanted) on c.  @returns 0, or an error with errstr naming sql. */
int crw_session_exec(PGconn *c, const char *sql, char *errstr, size_t errstr_size);

/* Opens a REPEATABLE READ, READ ONLY transaction on c in the exported snapshot name.  @returns 0, or an error. */
int crw_session_import_snapshot(PGconn *c, const char *name, char *errstr, size_t errstr_size);

/* Runs sql with params on c; keeps the result in *res.  @returns 0, or an error with errstr (*res NULL). */
int crw_session_query(PGconn *c, PGresult **res, char *errstr, size_t errstr_size, const char *sql, int nparams,
                      const char *const *params);

/*
 * A query's rows one at a time (single-row mode: the result is never held
 * whole): fn(opaque, res) for each, res holding that one row.  A negative
 * return of fn stops the delivery; the rest is read away, so the
 * connection stays usable.  what names the read in errstr.
 * @returns the rows read; fn's error; CRW_ERR_CONN when the connection
 * went; CRW_ERR_PREREQ for a failed query (errstr says why).
 */
typedef int (*crw_session_row_fn)(void *opaque, const PGresult *row);
long crw_session_rows(PGconn *c, const char *sql, int nparams, const char *const *params, crw_session_row_fn fn,
                      void *opaque, const char *what, char *errstr, size_t errstr_size);

/* Columns first .. first+ncols-1 of a crw_session_rows row as a text tuple's cols. */
void crw_session_cols(const PGresult *row, int first, int ncols, crw_pgo_col_t *cols);

/* The primary key of relid: column names and their types (format_type), in key order, appended to names and types. */
int crw_session_primary_key(PGconn *c, uint32_t relid, crw_strlist_t *names, crw_strlist_t *types, char *errstr,
                            size_t errstr_size);

/*
 * For each of names (key columns of rel): its quoted form appended to quoted,
 * and its place in rel->atts into idx[i] (-1: not among them).
 * @returns how many are not among rel's columns.
 */
int crw_session_key_columns(PGconn *c, const crw_relation_t *rel, const crw_strlist_t *names, crw_strlist_t *quoted,
                            int *idx);

/* s quoted as an SQL identifier (malloc'd). */
char *crw_session_quote_ident(PGconn *c, const char *s);

/* wal_level=logical, the REPLICATION attribute, every watched table readable. */
int crw_session_check_prereqs(crw_session_t *s, char *errstr, size_t errstr_size);

/* wal_level=logical and the REPLICATION attribute (or superuser): 0, or CRW_ERR_PREREQ saying which is missing. */
int crw_session_logical_ready(crw_session_t *s, char *errstr, size_t errstr_size);

/* *standby: the server is in recovery (a standby).  @returns 0, or an error with errstr. */
int crw_session_standby(crw_session_t *s, bool *standby, char *errstr, size_t errstr_size);

/* Every watched table exists and the role may SELECT from it. */
int crw_session_check_tables(crw_session_t *s, char *errstr, size_t errstr_size);

/*
 * What crw_session_ensure_publication would do, changing nothing: *exists,
 * and the watched tables the publication lacks into lacking (a comma list of
 * quoted names, empty for none).  @returns 0 when ensure_publication would
 * succeed, CRW_ERR_PREREQ when it would not (publication.create=false, or
 * this role may not: CREATE on the database and the tables' ownership
 * create it, the publication's and the tables' ownership extend it) with
 * errstr naming the tables, the owners and the statement that does it for
 * this role, or an error.
 */
int crw_session_check_publication(crw_session_t *s, bool *exists, crw_buf_t *lacking, char *errstr,
                                  size_t errstr_size);

/* Creates the publication, or adds watched tables it lacks, when publication.create allows. */
int crw_session_ensure_publication(crw_session_t *s, char *errstr, size_t errstr_size);

/*
 * Looks the slot up: *start_lsn is its confirmed position.  *missing: it
 * does not exist and may be created (crw_session_create_slot, after the
 * publication, so that a refused start leaves nothing behind).  A slot seen
 * earlier that is gone is CRW_ERR_SLOT_LOST.
 */
int crw_session_check_slot(crw_session_t *s, uint64_t *start_lsn, bool *missing, char *errstr, size_t errstr_size);

/* Creates the pgoutput slot; export_snapshot: keep its snapshot in s->snapshot for reading the tables as of it. */
int crw_session_create_slot(crw_session_t *s, bool export_snapshot, uint64_t *start_lsn, char *errstr,
                            size_t errstr_size);

#endif
