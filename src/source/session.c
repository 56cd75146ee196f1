/*
 * session.c — the logical source's two libpq sessions and their set-up:
 * connect, IDENTIFY_SYSTEM, prerequisites, the publication and the slot
 * (see session.h).  Shared by the stream (replication.c) and the `check`
 * and `slot` verbs (admin.c).
 */
#include "source/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"

/* Session settings that make text output deterministic (docs/events.md, "Values"). */
#define SESSION_OPTIONS                                                                                                \
    "-c datestyle=ISO -c intervalstyle=iso_8601 -c timezone=UTC -c extra_float_digits=3 -c bytea_output=hex "         \
    KEEPALIVE_OPTIONS
/*
 * The server notices a crwatch that vanished (a network cut, a host gone)
 * within about 10 s over TCP, so its advisory lock and slot pass to a
 * standby in time (docs/operations.md, "High availability").
 */
#define KEEPALIVE_OPTIONS                                                                                              \
    "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=2 -c tcp_user_timeout=9000"

void crw_session_init(crw_session_t *s, const crw_config_t *conf, const char *conninfo) {
    memset(s, 0, sizeof *s);
    s->conf = conf;
    s->conninfo = crw_strdup(conninfo ? conninfo : "");
}

void crw_session_close(crw_session_t *s) {
    if (s->repl)
        PQfinish(s->repl);
    if (s->sql)
        PQfinish(s->sql);
    if (s->ops)
        PQfinish(s->ops);
    s->repl = s->sql = s->ops = NULL;
    s->locked = false;
}

void crw_session_free(crw_session_t *s) {
    crw_session_close(s);
    free(s->conninfo);
    free(s->dbname);
    free(s->snapshot);
    free(s->sysid);
    s->conninfo = s->dbname = s->snapshot = s->sysid = NULL;
}

/* The lock session's: its writes (the stored position, the heartbeat) never wait for a synchronous standby,
 * which may be this very crwatch's walsender, waiting for a flush they hold back (a deadlock). */
#define OPS_OPTIONS SESSION_OPTIONS " -c synchronous_commit=local"

typedef enum { CONN_SQL, CONN_REPL, CONN_OPS } conn_kind_t;

/*
 * Connects one session.  Client-side TCP keepalives and a connect timeout
 * come first, so that the conninfo may override them: a server gone behind
 * a network cut is noticed in about 10 s, not when TCP gives up.
 */
static PGconn *connect_kind(crw_session_t *s, conn_kind_t kind, char *errstr, size_t n, int *err) {
    const char *keys[10] = {"connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
                            "keepalives_count", "dbname", "options", "application_name", NULL, NULL};
    const char *vals[10] = {"10", "1", "5", "2", "2", s->conninfo, kind == CONN_OPS ? OPS_OPTIONS : SESSION_OPTIONS,
                            "crwatch", NULL, NULL};
    if (kind == CONN_REPL) {
        keys[8] = "replication";
        vals[8] = "database";
    }
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        const char *m = PQerrorMessage(c);
        snprintf(errstr, n, "connection failed: %.*s", (int)strcspn(m, "\n"), m);
        /* A missing REPLICATION privilege is a prerequisite, not a transient failure. */
        *err = strstr(m, "replication") && (strstr(m, "permission") || strstr(m, "must be")) ? CRW_ERR_PREREQ
                                                                                          : CRW_ERR_CONN;
        PQfinish(c);
        return NULL;
    }
    return c;
}

static PGconn *connect_one(crw_session_t *s, bool replication, char *errstr, size_t n, int *err) {
    return connect_kind(s, replication ? CONN_REPL : CONN_SQL, errstr, n, err);
}

int crw_session_error(PGconn *c, const PGresult *res, const char *what, char *errstr, size_t n) {
    const char *m = res ? PQresultErrorMessage(res) : PQerrorMessage(c);
    snprintf(errstr, n, "%s%s%.*s", what ? what : "", what ? ": " : "", (int)strcspn(m, "\n"), m);
    /* The session is going (a terminated backend, a shutting-down server) even while libpq still says OK. */
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    bool going = state && (!strncmp(state, "08", 2) || !strncmp(state, "57P", 3));
    return going || PQstatus(c) == CONNECTION_BAD ? CRW_ERR_CONN : CRW_ERR_PREREQ;
}

int crw_session_exec(PGconn *c, const char *sql, char *errstr, size_t n) {
    PGresult *res = PQexec(c, sql);
    int rc = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK
                 ? 0
                 : crw_session_error(c, res, sql, errstr, n);
    PQclear(res);
    return rc;
}

int crw_session_import_snapshot(PGconn *c, const char *name, char *errstr, size_t n) {
    char *lit = PQescapeLiteral(c, name, strlen(name));
    crw_buf_t q = CRW_BUF_INIT;
    crw_buf_printf(&q, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT %s",
                   lit ? lit : "''");
    PQfreemem(lit);
    int rc = crw_session_exec(c, q.data, errstr, n);
    crw_buf_free(&q);
    return rc;
}

/* Runs sql with params; keeps the result in *res; returns 0 or sets errstr. */
int crw_session_query(PGconn *c, PGresult **res, char *errstr, size_t n, const char *sql, int nparams,
                 const char *const *params) {
    *res = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(*res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return 0;
    int rc = crw_session_error(c, *res, NULL, errstr, n);
    PQclear(*res);
    *res = NULL;
    return rc;
}

long crw_session_rows(PGconn *c, const char *sql, int nparams, const char *const *params, crw_session_row_fn fn,
                      void *opaque, const char *what, char *errstr, size_t n) {
    if (!PQsendQueryParams(c, sql, nparams, NULL, params, NULL, NULL, 0) || !PQsetSingleRowMode(c))
        return crw_session_error(c, NULL, what, errstr, n);
    long rows = 0, rc = 0;
    PGresult *res;
    while ((res = PQgetResult(c))) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_SINGLE_TUPLE && rc >= 0) {
            rows++;
            int r = fn(opaque, res);
            if (r < 0)
                rc = r;
        } else if (st != PGRES_SINGLE_TUPLE && st != PGRES_TUPLES_OK && rc >= 0)
            rc = crw_session_error(c, res, what, errstr, n);
        PQclear(res);
    }
    return rc < 0 ? rc : rows;
}

void crw_session_cols(const PGresult *row, int first, int ncols, crw_pgo_col_t *cols) {
    for (int i = 0; i < ncols; i++) {
        cols[i].kind = PQgetisnull(row, 0, first + i) ? CRW_PGO_COL_NULL : CRW_PGO_COL_TEXT;
        cols[i].data = PQgetvalue(row, 0, first + i);
        cols[i].len = (uint32_t)PQgetlength(row, 0, first + i);
    }
}

int crw_session_primary_key(PGconn *c, uint32_t relid, crw_strlist_t *names, crw_strlist_t *types, char *errstr,
                            size_t n) {
    char oid[16];
    snprintf(oid, sizeof oid, "%u", relid);
    PGresult *res;
    int rc = crw_session_query(c, &res, errstr, n,
                               "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_index i "
                               "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) "
                               "WHERE i.indrelid = $1::oid AND i.indisprimary "
                               "ORDER BY array_position(i.indkey::int2[], a.attnum)",
                               1, (const char *[]){oid});
    if (rc < 0)
        return rc;
    for (int r = 0; r < PQntuples(res); r++) {
        crw_strlist_add(names, PQgetvalue(res, r, 0));
        crw_strlist_add(types, PQgetvalue(res, r, 1));
    }
    PQclear(res);
    return 0;
}

int crw_session_key_columns(PGconn *c, const crw_relation_t *rel, const crw_strlist_t *names, crw_strlist_t *quoted,
                            int *idx) {
    int missing = 0;
    for (int r = 0; r < names->n; r++) {
        char *q = crw_session_quote_ident(c, names->v[r]);
        crw_strlist_add(quoted, q);
        free(q);
        idx[r] = -1;
        for (int a = 0; a < rel->natts; a++)
            if (!strcmp(rel->atts[a].name, names->v[r]))
                idx[r] = a;
        missing += idx[r] < 0;
    }
    return missing;
}

char *crw_session_quote_ident(PGconn *c, const char *s) {
    char *q = PQescapeIdentifier(c, s, strlen(s));
    char *out = crw_strdup(q ? q : "\"\"");
    PQfreemem(q);
    return out;
}

/* wal_level=logical and the REPLICATION attribute. */
int crw_session_logical_ready(crw_session_t *s, char *errstr, size_t n) {
    PGresult *res;
    int rc = crw_session_query(s->sql, &res, errstr, n,
                   "SELECT current_setting('wal_level'), "
                   "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), "
                   "pg_is_in_recovery() AND current_setting('server_version_num')::int < 160000",
                   0, NULL);
    if (rc < 0)
        return rc;
    if (strcmp(PQgetvalue(res, 0, 2), "t") == 0) {
        snprintf(errstr, n, "the server is a standby, and logical decoding on a standby needs PostgreSQL 16");
        PQclear(res);
        return CRW_ERR_PREREQ;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "logical") != 0) {
        snprintf(errstr, n,
                 "wal_level is '%s', logical replication needs wal_level=logical (set it in postgresql.conf and "
                 "restart the server)",
                 PQgetvalue(res, 0, 0));
        PQclear(res);
        return CRW_ERR_PREREQ;
    }
    if (strcmp(PQgetvalue(res, 0, 1), "t") != 0) {
        snprintf(errstr, n, "role %s lacks the REPLICATION attribute (ALTER ROLE ... REPLICATION)",
                 PQuser(s->sql));
        PQclear(res);
        return CRW_ERR_PREREQ;
    }
    PQclear(res);
    return 0;
}

int crw_session_standby(crw_session_t *s, bool *standby, char *errstr, size_t n) {
    PGresult *res;
    int rc = crw_session_query(s->sql, &res, errstr, n, "SELECT pg_is_in_recovery()", 0, NULL);
    if (rc < 0)
        return rc;
    *standby = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    return 0;
}

int crw_session_check_tables(crw_session_t *s, char *errstr, size_t n) {
    PGresult *res;
    int rc;
    for (int i = 0; i < s->conf->nresources; i++) {
        const crw_resource_conf_t *rs = &s->conf->resources[i];
        const char *p[2] = {rs->schema, rs->table};
        rc = crw_session_query(s->sql, &res, errstr, n,
                   "SELECT has_table_privilege(c.oid, 'SELECT') FROM pg_class c JOIN pg_namespace ns ON "
                   "ns.oid = c.relnamespace WHERE ns.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r','p')",
                   2, p);
        if (rc < 0)
            return rc;
        if (PQntuples(res) == 0) {
            snprintf(errstr, n, "watched table %s.%s does not exist", rs->schema, rs->table);
            rc = CRW_ERR_PREREQ;
        } else if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
            snprintf(errstr, n, "role %s may not SELECT from watched table %s.%s", PQuser(s->sql), rs->schema,
                     rs->table);
            rc = CRW_ERR_PREREQ;
        }
        PQclear(res);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int crw_session_check_prereqs(crw_session_t *s, char *errstr, size_t n) {
    int rc = crw_session_logical_ready(s, errstr, n);
    return rc < 0 ? rc : crw_session_check_tables(s, errstr, n);
}

/* Creates the publication, or adds watched tables it lacks, when allowed. */
int crw_session_ensure_publication(crw_session_t *s, char *errstr, size_t n) {
    const crw_config_t *cf = s->conf;
    PGresult *res;
    const char *p[1] = {cf->publication_name};
    int rc = crw_session_query(s->sql, &res, errstr, n, "SELECT puballtables FROM pg_publication WHERE pubname = $1", 1, p);
    if (rc < 0)
        return rc;
    bool exists = PQntuples(res) == 1, all = exists && !strcmp(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    char *pubq = crw_session_quote_ident(s->sql, cf->publication_name);
    crw_buf_t sql = CRW_BUF_INIT;
    if (!exists) {
        if (!cf->publication_create) {
            snprintf(errstr, n, "publication %s does not exist and publication.create=false", cf->publication_name);
            rc = CRW_ERR_PREREQ;
            goto out;
        }
        if (cf->nresources == 0) {
            snprintf(errstr, n,
                     "publication %s does not exist and no table is configured (set tables= or "
                     "resource.<id>.table)",
                     cf->publication_name);
            rc = CRW_ERR_CONFIG;
            goto out;
        }
        crw_buf_printf(&sql, "CREATE PUBLICATION %s FOR TABLE ", pubq);
    } else if (!all) {
        crw_buf_printf(&sql, "ALTER PUBLICATION %s ADD TABLE ", pubq);
    }
    int added = 0;
    for (int i = 0; !all && i < cf->nresources; i++) {
        const crw_resource_conf_t *rs = &cf->resources[i];
        if (crw_config_table_named_before(cf, i)) /* a shared table is named by each of its kinds */
            continue;
        if (exists) {
            const char *pp[3] = {cf->publication_name, rs->schema, rs->table};
            rc = crw_session_query(s->sql, &res, errstr, n,
                       "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND "
                       "tablename = $3",
                       3, pp);
            if (rc < 0)
                goto out;
            int have = PQntuples(res);
            PQclear(res);
            if (have)
                continue;
            if (!cf->publication_create) {
                snprintf(errstr, n, "publication %s does not include %s.%s and publication.create=false",
                         cf->publication_name, rs->schema, rs->table);
                rc = CRW_ERR_PREREQ;
                goto out;
            }
        }
        char *sq = crw_session_quote_ident(s->sql, rs->schema), *tq = crw_session_quote_ident(s->sql, rs->table);
        crw_buf_printf(&sql, "%s%s.%s", added++ ? ", " : "", sq, tq);
        free(sq);
        free(tq);
    }
    if (added) {
        rc = crw_session_query(s->sql, &res, errstr, n, sql.data, 0, NULL);
        if (rc < 0)
            goto out;
        PQclear(res);
        crw_info("publication %s: %s %d table(s)", cf->publication_name, exists ? "added" : "created with", added);
    }
    rc = 0;
out:
    free(pubq);
    crw_buf_free(&sql);
    return rc;
}

/*
 * Looks the slot up; *start_lsn: its confirmed position.  *missing: it does
 * not exist and may be created (crw_session_create_slot does that, after the
 * publication, so a refused start leaves nothing behind).
 */
int crw_session_check_slot(crw_session_t *s, uint64_t *start_lsn, bool *missing, char *errstr, size_t n) {
    const crw_config_t *cf = s->conf;
    PGresult *res;
    const char *p[1] = {cf->slot_name};
    int rc = crw_session_query(s->sql, &res, errstr, n,
                   "SELECT plugin, database, active_pid, confirmed_flush_lsn, slot_type FROM pg_replication_slots "
                   "WHERE slot_name = $1",
                   1, p);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 1) {
        rc = 0;
        if (strcmp(PQgetvalue(res, 0, 4), "logical") || strcmp(PQgetvalue(res, 0, 0), "pgoutput")) {
            snprintf(errstr, n, "slot %s exists but is not a logical pgoutput slot (plugin %s)", cf->slot_name,
                     PQgetvalue(res, 0, 0));
            rc = CRW_ERR_PREREQ;
        } else if (strcmp(PQgetvalue(res, 0, 1), s->dbname)) {
            snprintf(errstr, n, "slot %s belongs to database %s, not %s", cf->slot_name, PQgetvalue(res, 0, 1),
                     s->dbname);
            rc = CRW_ERR_PREREQ;
        } else if (!PQgetisnull(res, 0, 2)) {
            snprintf(errstr, n, "slot %s is active for PID %s", cf->slot_name, PQgetvalue(res, 0, 2));
            rc = CRW_ERR_SLOT_BUSY;
        } else if (!PQgetisnull(res, 0, 3))
            crw_lsn_parse(PQgetvalue(res, 0, 3), start_lsn);
        PQclear(res);
        s->slot_seen = s->slot_seen || rc == 0;
        return rc;
    }
    PQclear(res);
    if (s->slot_seen) {
        snprintf(errstr, n, "slot %s vanished while crwatch was using it: changes may have been lost; run a "
                 "resync", cf->slot_name);
        return CRW_ERR_SLOT_LOST;
    }
    if (!cf->slot_create) {
        snprintf(errstr, n, "slot %s does not exist and slot.create=false", cf->slot_name);
        return CRW_ERR_PREREQ;
    }
    *missing = true;
    return 0;
}

int crw_session_create_slot(crw_session_t *s, bool export_snapshot, uint64_t *start_lsn, char *errstr, size_t n) {
    const crw_config_t *cf = s->conf;
    PGresult *res;
    char *slotq = crw_session_quote_ident(s->repl, cf->slot_name);
    crw_buf_t sql = CRW_BUF_INIT;
    /* Export the slot's snapshot when something wants to read the tables as of it. */
    crw_buf_printf(&sql, "CREATE_REPLICATION_SLOT %s LOGICAL pgoutput %s", slotq,
                   export_snapshot ? "EXPORT_SNAPSHOT" : "NOEXPORT_SNAPSHOT");
    free(slotq);
    res = PQexec(s->repl, sql.data);
    crw_buf_free(&sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char what[128];
        snprintf(what, sizeof what, "creating slot %s", cf->slot_name);
        int rc = crw_session_error(s->repl, res, what, errstr, n);
        PQclear(res);
        return rc;
    }
    crw_lsn_parse(PQgetvalue(res, 0, 1), start_lsn);
    free(s->snapshot);
    s->snapshot = PQgetisnull(res, 0, 2) ? NULL : crw_strdup(PQgetvalue(res, 0, 2));
    crw_info("created replication slot %s at %s", cf->slot_name, PQgetvalue(res, 0, 1));
    PQclear(res);
    s->slot_seen = true;
    return 0;
}

/* The plain SQL session alone; the database name as libpq resolved it. */
int crw_session_open_sql(crw_session_t *s, char *errstr, size_t n) {
    int err = CRW_ERR_CONN;
    if (s->repl)
        PQfinish(s->repl);
    if (s->sql)
        PQfinish(s->sql);
    s->repl = s->sql = NULL;
    if (!(s->sql = connect_one(s, false, errstr, n, &err)))
        return err;
    s->server_version = PQserverVersion(s->sql);
    free(s->dbname);
    s->dbname = crw_strdup(PQdb(s->sql));
    return 0;
}

/* Both sessions, and IDENTIFY_SYSTEM (no publication or slot is touched). */
int crw_session_open_repl(crw_session_t *s, char *errstr, size_t n) {
    int err = 0;
    if (!(s->repl = connect_one(s, true, errstr, n, &err)))
        return err;
    s->server_version = PQserverVersion(s->repl);
    PGresult *res = PQexec(s->repl, "IDENTIFY_SYSTEM");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) < 4 || PQgetisnull(res, 0, 3)) {
        err = crw_session_error(s->repl, res, "IDENTIFY_SYSTEM failed", errstr, n);
        PQclear(res);
        PQfinish(s->repl);
        s->repl = NULL;
        return err;
    }
    free(s->sysid);
    s->sysid = crw_strdup(PQgetvalue(res, 0, 0));
    s->timeline = (uint32_t)strtoul(PQgetvalue(res, 0, 1), NULL, 10);
    free(s->dbname);
    s->dbname = crw_strdup(PQgetvalue(res, 0, 3));
    PQclear(res);
    return 0;
}

int crw_session_open(crw_session_t *s, char *errstr, size_t n) {
    int err = crw_session_open_sql(s, errstr, n);
    if (err < 0)
        return err;
    if ((err = crw_session_open_repl(s, errstr, n)) < 0)
        crw_session_close(s);
    return err;
}

int crw_session_lock_slot(crw_session_t *s, char *errstr, size_t n) {
    if (s->locked && PQstatus(s->ops) == CONNECTION_OK)
        return 0;
    if (s->ops && PQstatus(s->ops) != CONNECTION_OK) {
        PQfinish(s->ops);
        s->ops = NULL;
        s->locked = false;
    }
    int rc = CRW_ERR_CONN;
    if (!s->ops && !(s->ops = connect_kind(s, CONN_OPS, errstr, n, &rc)))
        return rc;
    const char *p[1] = {s->conf->slot_name};
    PGresult *res;
    /* Two keys: crwatch's class, and the slot (advisory locks are per database, as the slot is). */
    rc = crw_session_query(s->ops, &res, errstr, n,
                               "SELECT pg_try_advisory_lock(hashtext('crwatch.slot'), hashtext($1)), "
                               "(SELECT string_agg(l.pid::text, ',') FROM pg_locks l WHERE l.locktype = 'advisory' "
                               "AND l.granted AND l.classid = hashtext('crwatch.slot')::oid "
                               "AND l.objid = hashtext($1)::oid AND l.pid <> pg_backend_pid())",
                               1, p);
    if (rc < 0)
        return rc;
    s->locked = !strcmp(PQgetvalue(res, 0, 0), "t");
    if (!s->locked) {
        snprintf(errstr, n, "another crwatch streams slot %s (its session holds the slot's advisory lock%s%s)",
                 s->conf->slot_name, PQgetisnull(res, 0, 1) ? "" : ": backend PID ",
                 PQgetisnull(res, 0, 1) ? "" : PQgetvalue(res, 0, 1));
        rc = CRW_ERR_STANDBY;
    }
    PQclear(res);
    return rc;
}
