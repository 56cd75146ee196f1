/*
 * itest.h — support library for crwatch's integration tests.
 *
 * Integration tests drive the real crwatch binary (CRW_BIN) against the
 * throwaway PostgreSQL that scripts/test starts; libpq finds it through
 * PGHOST/PGPORT/PGUSER in the environment. This library gives each test a
 * fresh database, printf-style SQL helpers, and child processes whose stdout
 * is read line by line (events are JSON lines) and whose stderr (crwatch's
 * logs) is kept in a temp file for assertions and for failure reports.
 *
 * Failures inside these helpers abort the running Criterion test with a
 * message naming what failed (cr_assert), so callers need not check results
 * except where a function is documented to return NULL/false/-1.
 *
 * Not thread-safe: call from the test's own thread. Children get SIGKILL if
 * the test process dies (PR_SET_PDEATHSIG) and at exit if still running.
 *
 * Environment knobs: CRW_BIN overrides the compiled-in crwatch path;
 * IT_VERBOSE=1 dumps every child's stderr when it is freed; IT_KEEP_LOGS=1
 * keeps the stderr temp files (their paths are printed).
 */
#ifndef CRW_ITEST_H
#define CRW_ITEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <json-c/json.h>
#include <libpq-fe.h>

#if defined(__GNUC__)
#define IT_PRINTF(fmt_idx, first_arg) __attribute__((format(printf, fmt_idx, first_arg)))
#else
#define IT_PRINTF(fmt_idx, first_arg)
#endif

/* ---- databases and SQL ---------------------------------------------- */

/* Connect to dbname (NULL: $PGDATABASE, else "postgres") with the PG* environment; aborts the test
 * on failure. */
PGconn *it_connect(const char *dbname);

/* Create a fresh database named <prefix>_<pid>_<n> (prefix: [a-z0-9_], short), copy its name to
 * dbname_out[n], return a connection to it. */
PGconn *it_db_create(const char *prefix, char *dbname_out, size_t n);

/* Drop dbname if it exists: first its replication slots (terminating walsenders using them), then
 * the database WITH (FORCE). admin may be NULL (a temporary connection is used). */
void it_db_drop(PGconn *admin_or_null, const char *dbname);

/* Run printf-formatted SQL (may hold several statements); aborts the test unless it succeeds. */
void it_exec(PGconn *c, const char *fmt, ...) IT_PRINTF(2, 3);

/* Run a printf-formatted query that must return rows; caller PQclear()s the result. */
PGresult *it_query(PGconn *c, const char *fmt, ...) IT_PRINTF(2, 3);

/* First column of the first row as a malloc'd string; NULL when there is no row or the value is
 * NULL. */
char *it_query_value(PGconn *c, const char *fmt, ...) IT_PRINTF(2, 3);

/* Re-run a boolean query every 20 ms until its first value is true; false when timeout_ms passes
 * first. */
bool it_wait_sql_true(PGconn *c, int timeout_ms, const char *fmt, ...) IT_PRINTF(3, 4);

/* The columns of a table in the sql/ convention (docs/sql.md); txid is left to crwatch.manage(). */
#define IT_CONVENTION_COLUMNS                                                                                \
    "namespace text NOT NULL DEFAULT 'default', name text NOT NULL, uid uuid NOT NULL, "                     \
    "generation bigint NOT NULL, resource_version bigint NOT NULL, labels jsonb NOT NULL DEFAULT '{}', "     \
    "annotations jsonb NOT NULL DEFAULT '{}', spec jsonb NOT NULL, status jsonb NOT NULL DEFAULT '{}', "     \
    "created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, deleted_at timestamptz"

/* Path of psql on $PATH; aborts the test when there is none. */
const char *it_psql_path(void);

/* psql -X -v ON_ERROR_STOP=1 -d db -f <source dir>/<rel> (db: a name or a conninfo); aborts unless it exits 0. */
void it_apply_sql(const char *db, const char *rel);

/* ---- child processes ------------------------------------------------ */

typedef struct it_proc it_proc_t;

/* Spawn path with argv_full (argv[0] included, NULL-terminated): stdin /dev/null, stdout to a pipe,
 * stderr to a temp file. Aborts the test on failure. */
it_proc_t *it_proc_spawn(const char *path, const char *const *argv_full);

/* it_proc_spawn with extra environment entries ("NAME=value", NULL-terminated; "NAME" alone unsets
 * NAME); env may be NULL. */
it_proc_t *it_proc_spawn_env(const char *path, const char *const *argv_full,
                             const char *const *env);

/* Path of the crwatch binary under test: $CRW_BIN, else the compiled-in CRW_BIN. */
const char *it_crwatch_path(void);

/* Spawn crwatch with args (after argv[0], NULL-terminated; may be NULL) followed by -d
 * "dbname=<dbname>" (omitted when dbname is NULL). */
it_proc_t *it_crwatch_start(const char *dbname, const char *const *args);

/* At most this many -X settings in the two lists of it_crwatch_stream, and how long it waits. */
#define IT_STREAM_MAX_SETTINGS 40
#define IT_STREAM_TIMEOUT_MS 15000

/*
 * Starts `crwatch stream` on dbname with slot.name=<dbname> and one -X for
 * each setting of base, then of extra (NULL-terminated; either may be NULL),
 * and waits until it streams ("streaming from slot" or "streaming by
 * polling" in its log); aborts the
 * test, with crwatch's stderr, if it does not within IT_STREAM_TIMEOUT_MS.
 */
it_proc_t *it_crwatch_stream(const char *dbname, const char *const *base, const char *const *extra);

/* Next stdout line, malloc'd, without its newline; NULL on timeout or at EOF. timeout_ms < 0 waits
 * forever. */
char *it_proc_read_line(it_proc_t *p, int timeout_ms);

/* Next stdout line parsed as JSON (aborts the test if it does not parse); NULL on timeout/EOF.
 * Caller json_object_put()s it. */
json_object *it_proc_read_event(it_proc_t *p, int timeout_ms);

/* Like it_proc_read_event, but a missing event aborts the test (after dumping the child's stderr).
 */
json_object *it_proc_expect_event(it_proc_t *p, int timeout_ms);

/* True when no complete stdout line arrives within ms (or stdout is at EOF); a line that does
 * arrive stays queued. */
bool it_proc_no_line_within(it_proc_t *p, int ms);

/* Send sig and wait for exit; returns the status as it_proc_wait does. After timeout_ms: SIGKILL,
 * dump stderr, abort the test. */
int it_proc_signal_wait(it_proc_t *p, int sig, int timeout_ms);

/* SIGTERM and wait up to timeout_ms: crwatch must exit 0 (else its stderr is dumped and the test fails); frees p. */
void it_crwatch_stop(it_proc_t *p, int timeout_ms);

/* Wait for exit (stdout keeps being buffered meanwhile); returns the exit code, 128+signal if
 * killed, -1 on timeout (child left running). */
int it_proc_wait(it_proc_t *p, int timeout_ms);

/* True while the child has not exited (reaps it if it has). */
bool it_proc_running(it_proc_t *p);

/* The child's pid. */
pid_t it_proc_pid(const it_proc_t *p);

/* Everything the child wrote to stderr so far, malloc'd (never NULL). */
/* A connection to database db for a thread of the test (no Criterion assertion there): NULL with err on failure. */
PGconn *it_connect_thread(const char *db, char *err, size_t n);

/* Sleeps ms milliseconds; the wall clock in ms since the epoch (for times shared with other processes). */
void it_sleep_ms(int ms);
int64_t it_wall_ms(void);

char *it_proc_stderr(it_proc_t *p);

/* Path of the temp file holding the child's stderr (valid until it_proc_free). */
const char *it_proc_stderr_path(const it_proc_t *p);

/* Wait until the child's stderr contains needle; false after timeout_ms or when the child exits
 * without writing it. */
bool it_proc_stderr_wait(it_proc_t *p, const char *needle, int timeout_ms);

/* Print the child's command line, state and captured stderr to the test's stderr. */
void it_proc_dump_stderr(it_proc_t *p);

/* SIGKILL the child's process group if still running, reap it, remove its stderr file, free p. NULL
 * is a no-op. */
void it_proc_free(it_proc_t *p);

/* Run path to completion; *out and *err (each optional) get malloc'd stdout/stderr. Returns the
 * status as it_proc_wait; after timeout_ms kills it and aborts the test. */
int it_run(const char *path, const char *const *argv_full, int timeout_ms, char **out, char **err);

/* it_run for crwatch with args and -d "dbname=<dbname>" as in it_crwatch_start. */
int it_run_crwatch(const char *dbname, const char *const *args, int timeout_ms, char **out,
                   char **err);

/* ---- JSON ----------------------------------------------------------- */

/* Value at a dot-separated path ("data.object.name"; numeric parts index arrays: "data.changed.0");
 * NULL when missing or JSON null. Borrowed from o. */
json_object *it_json_get(json_object *o, const char *path);

/* String at path; a non-string value comes back as its JSON text ("42", "true"); NULL when missing
 * or null. Borrowed from o. */
const char *it_json_str(json_object *o, const char *path);

/* Asserts that the value at path is the string want (non-strings compare by their JSON text). */
void it_expect_str(json_object *o, const char *path, const char *want);

/* True when the JSON array at path holds the string s. */
bool it_json_array_has(json_object *o, const char *path, const char *s);

/* True when path exists, even if its value is JSON null. */
bool it_json_exists(json_object *o, const char *path);

#endif /* CRW_ITEST_H */
