/*
 * session.c — the logical source's two libpq sessions and their set-up:
 * connect, IDENTIFY_SYSTEM, prerequisites, the publication and the slot
 * (see session.h).  Shared by the stream (replication.c) and the `check`
 * and `slot` verbs (admin.c).
 */
#include "source/session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "core/strmap.h"

/* Session settings that make text output deterministic (docs/events.md, "Values"). */
#define SESSION_OPTIONS                                                                                                \
    "-c datestyle=ISO -c intervalstyle=iso_8601 -c timezone=UTC -c extra_float_digits=3 -c bytea_output=hex "         \
    KEEPALIVE_OPTIONS
/*
 * The server notices a crwatch that vanished (a network cut, a host gone)
 * within about 10 s over TCP, so its advisory lock and slot pass to a
 * standby in time (docs/operations.md, "High availability").  The lock's
 * session also gets tcp_user_timeout, which ends a connection whose peer
 * acknowledges nothing for 9 s.  The others do not: it would also end a
 * replication or COPY connection that crwatch stops reading while a sink
 * holds it back (the socket's window stays closed), and for those the
 * server notices a crwatch gone by wal_sender_timeout or by the keepalives.
 */
#define KEEPALIVE_OPTIONS "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=2"

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
#define OPS_OPTIONS SESSION_OPTIONS " -c tcp_user_timeout=9000 -c synchronous_commit=local"

typedef enum { CONN_SQL, CONN_REPL, CONN_OPS } conn_kind_t;

/* libpq's own test (recognized_connection_string): anything else given as dbname is a database name. */
static bool is_conninfo(const char *s) {
    return !strncmp(s, "postgresql://", 13) || !strncmp(s, "postgres://", 11) || strchr(s, '=');
}

/* v is an integer as libpq reads one: spaces around it, nothing else.  @returns false when it is not. */
static bool int_value(const char *v, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (end == v || errno)
        return false;
    while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')
        end++;
    *out = x;
    return *end == '\0';
}

/* Each entry of a comma list of ports is empty (the default) or 1 .. 65535; *count: how many entries. */
static int check_ports(const char *ports, const char *what, int *count, char *errstr, size_t n) {
    *count = 0;
    for (const char *p = ports;; p++) {
        size_t len = strcspn(p, ",");
        char one[16] = "";
        long v = 0;
        if (len < sizeof one)
            memcpy(one, p, len);
        ++*count;
        if (len >= sizeof one || (one[strspn(one, " ")] && (!int_value(one, &v) || v < 1 || v > 65535))) {
            snprintf(errstr, n, "%s: port \"%.*s\" is not a port number (1 to 65535)", what, (int)len, p);
            return CRW_ERR_CONFIG;
        }
        p += len;
        if (!*p)
            return 0;
    }
}

static int list_length(const char *v) {
    int k = 1;
    for (; *v; v++)
        k += *v == ',';
    return k;
}

int crw_session_check_conninfo(const char *conninfo, const char *what, char *errstr, size_t n) {
    /* Options libpq reads as integers, and only when it connects. */
    static const char *const ints[] = {"connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
                                       "keepalives_count", "tcp_user_timeout", NULL};
    const char *port = NULL, *host = NULL, *hostaddr = NULL;
    int rc = 0;
    PQconninfoOption *opts = NULL;
    if (conninfo && is_conninfo(conninfo)) {
        char *msg = NULL;
        if (!(opts = PQconninfoParse(conninfo, &msg))) {
            const char *m = msg ? msg : "out of memory";
            snprintf(errstr, n, "%s: %.*s", what, (int)strcspn(m, "\n"), m);
            PQfreemem(msg);
            return CRW_ERR_CONFIG;
        }
        for (PQconninfoOption *o = opts; o->keyword && rc == 0; o++) {
            long v;
            if (!o->val)
                continue;
            if (!strcmp(o->keyword, "port"))
                port = o->val;
            else if (!strcmp(o->keyword, "host"))
                host = o->val;
            else if (!strcmp(o->keyword, "hostaddr"))
                hostaddr = o->val;
            for (int i = 0; ints[i]; i++)
                if (!strcmp(o->keyword, ints[i]) && !int_value(o->val, &v)) {
                    snprintf(errstr, n, "%s: %s \"%s\" is not an integer", what, o->keyword, o->val);
                    rc = CRW_ERR_CONFIG;
                }
        }
    }
    /* What the conninfo leaves out, libpq takes from the environment. */
    const char *port_from = port ? what : "PGPORT";
    port = port ? port : getenv("PGPORT");
    host = host ? host : hostaddr ? hostaddr : getenv("PGHOST") ? getenv("PGHOST") : getenv("PGHOSTADDR");
    int nports = 0;
    if (rc == 0 && port && *port)
        rc = check_ports(port, port_from, &nports, errstr, n);
    /* One port for all hosts, or one for each (libpq refuses any other count when it connects). */
    if (rc == 0 && nports > 1 && host && *host && list_length(host) != nports) {
        snprintf(errstr, n, "%s: %d ports for %d hosts (give one port, or one for each host)", port_from, nports,
                 list_length(host));
        rc = CRW_ERR_CONFIG;
    }
    PQconninfoFree(opts);
    return rc;
}

/* After a libpq message line's "connection to server ... failed: ", if it has one. */
static const char *reason_of(const char *line, size_t len) {
    const char *f = memmem(line, len, " failed: ", 9);
    return f ? f + 9 : line;
}

static bool line_has(const char *line, size_t len, const char *needle) {
    return memmem(line, len, needle, strlen(needle)) != NULL;
}

static int gravity(int err) {
    return err == CRW_ERR_CONFIG ? 3 : err == CRW_ERR_AUTH ? 2 : err == CRW_ERR_PREREQ ? 1 : 0;
}

/*
 * What a failed connection attempt means.  Before a session exists libpq
 * keeps no SQLSTATE where a client can read it, so its message decides: the
 * server's words (PostgreSQL's own, as its lc_messages renders them) for a
 * refused login, libpq's for settings it could not use.  A message of any
 * other kind (a refused or cut TCP connection, a server starting or shutting
 * down, too many connections) is a connection to try again.  *line and *len:
 * the line of the message that decided (with several hosts, one per host).
 */
static int connect_failure(PGconn *c, const char **line, int *len) {
    const char *m = PQerrorMessage(c);
    int rc = CRW_ERR_CONN;
    *line = m;
    *len = (int)strcspn(m, "\n");
    for (const char *l = m; *l; l += strcspn(l, "\n"), l += *l == '\n') {
        size_t ll = strcspn(l, "\n");
        const char *r = reason_of(l, ll);
        int kind = CRW_ERR_CONN;
        if (!strncmp(r, "invalid ", 8) || line_has(l, ll, "could not match "))
            kind = CRW_ERR_CONFIG; /* libpq refused an option's value */
        else if (line_has(l, ll, "authentication failed for user") || line_has(l, ll, "pg_hba.conf") ||
                 line_has(l, ll, "fe_sendauth: no password supplied") || line_has(l, ll, "is not permitted to log in") ||
                 ((line_has(l, ll, "FATAL:  role \"") || line_has(l, ll, "FATAL:  database \"")) &&
                  line_has(l, ll, "\" does not exist")))
            kind = CRW_ERR_AUTH; /* 28P01, 28000, 3D000 */
        else if (line_has(l, ll, "FATAL:  permission denied for database") ||
                 line_has(l, ll, "must be superuser or replication role") ||
                 line_has(l, ll, "permission denied to start WAL sender"))
            kind = CRW_ERR_PREREQ; /* 42501: no CONNECT privilege, no REPLICATION attribute */
        /* The gravest line decides: settings, then a refused login, then a missing privilege. */
        if (gravity(kind) > gravity(rc)) {
            rc = kind;
            *line = l;
            *len = (int)ll;
        }
    }
    if (rc == CRW_ERR_CONN && PQconnectionNeedsPassword(c))
        rc = CRW_ERR_AUTH;
    return rc;
}

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
    /* Settings that can never connect are not retried (the command line checked them already). */
    if ((*err = crw_session_check_conninfo(s->conninfo, "conninfo", errstr, n)) < 0)
        return NULL;
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        const char *line;
        int len;
        *err = connect_failure(c, &line, &len);
        if (*err == CRW_ERR_CONFIG)
            snprintf(errstr, n, "conninfo: %.*s", len, line);
        else if (*err == CRW_ERR_AUTH)
            snprintf(errstr, n, "%s for user \"%s\": %.*s",
                     line_has(line, (size_t)len, " does not exist") && line_has(line, (size_t)len, "database \"")
                         ? "connection failed"
                         : "authentication failed",
                     PQuser(c) ? PQuser(c) : "?", len, line);
        else
            snprintf(errstr, n, "connection failed: %.*s", len, line);
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

/* Adds item to l unless l holds it. */
static void add_once(crw_strlist_t *l, const char *item) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], item))
            return;
    crw_strlist_add(l, item);
}

/* l's items after sep, comma-separated, after what b holds. */
static void join(crw_buf_t *b, const char *sep, const crw_strlist_t *l) {
    for (int i = 0; i < l->n; i++)
        crw_buf_printf(b, "%s%s", i ? ", " : sep, l->v[i]);
}

int crw_session_check_publication(crw_session_t *s, bool *exists, crw_buf_t *lacking, char *errstr, size_t n) {
    const crw_config_t *cf = s->conf;
    const char *pp[1] = {cf->publication_name};
    PGresult *res;
    crw_strlist_t tables = {0}, owners = {0}, unowned = {0};
    crw_buf_t needs = CRW_BUF_INIT, fix = CRW_BUF_INIT, who = CRW_BUF_INIT;
    char *pubowner = NULL, *db = NULL;
    crw_buf_reset(lacking);
    /* Ownership is what PostgreSQL checks (a superuser has every role's rights): CREATE PUBLICATION needs
     * CREATE on the database and FOR TABLE the tables' ownership, ADD TABLE the publication's and the tables'. */
    int rc = crw_session_query(s->sql, &res, errstr, n,
               "SELECT p.oid IS NOT NULL, coalesce(p.puballtables, false), coalesce(pg_has_role(p.pubowner, 'USAGE'), "
               "false), pg_get_userbyid(p.pubowner), has_database_privilege(current_database(), 'CREATE'), "
               "EXISTS (SELECT 1 FROM pg_proc f JOIN pg_namespace ns ON ns.oid = f.pronamespace WHERE ns.nspname = "
               "'crwatch' AND f.proname = 'publish'), current_database() "
               "FROM (SELECT 1) one LEFT JOIN pg_publication p ON p.pubname = $1",
               1, pp);
    if (rc < 0)
        return rc;
    *exists = PQgetvalue(res, 0, 0)[0] == 't';
    bool all = PQgetvalue(res, 0, 1)[0] == 't', pub_owned = PQgetvalue(res, 0, 2)[0] == 't';
    bool may_create = PQgetvalue(res, 0, 4)[0] == 't', have_publish = PQgetvalue(res, 0, 5)[0] == 't';
    pubowner = crw_strdup(PQgetvalue(res, 0, 3));
    db = crw_strdup(PQgetvalue(res, 0, 6));
    PQclear(res);
    for (int i = 0; !all && i < cf->nresources; i++) {
        const crw_resource_conf_t *rs = &cf->resources[i];
        if (crw_config_table_named_before(cf, i))
            continue;
        const char *tp[3] = {cf->publication_name, rs->schema, rs->table};
        rc = crw_session_query(s->sql, &res, errstr, n,
                   "SELECT pg_has_role(c.relowner, 'USAGE'), pg_get_userbyid(c.relowner), EXISTS (SELECT 1 FROM "
                   "pg_publication_tables t WHERE t.pubname = $1 AND t.schemaname = $2 AND t.tablename = $3), "
                   "quote_ident($2) || '.' || quote_ident($3) "
                   "FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace "
                   "WHERE ns.nspname = $2 AND c.relname = $3",
                   3, tp);
        if (rc < 0)
            goto out;
        /* A table that does not exist is crw_session_check_tables' to report. */
        if (PQntuples(res) == 1 && PQgetvalue(res, 0, 2)[0] != 't') {
            add_once(&tables, PQgetvalue(res, 0, 3));
            add_once(&owners, PQgetvalue(res, 0, 1));
            if (PQgetvalue(res, 0, 0)[0] != 't')
                add_once(&unowned, PQgetvalue(res, 0, 3));
        }
        PQclear(res);
    }
    rc = 0;
    join(lacking, "", &tables);
    if (!*exists && cf->nresources == 0) {
        snprintf(errstr, n, "publication %s does not exist and no table is configured (set tables= or "
                 "resource.<id>.table)", cf->publication_name);
        rc = CRW_ERR_CONFIG;
    }
    if (tables.n == 0)
        goto out;
    if (!*exists && !may_create)
        crw_buf_printf(&needs, "the CREATE privilege on database %s", db);
    if (*exists && !pub_owned)
        crw_buf_printf(&needs, "owning the publication (its owner is %s)", pubowner);
    join(&needs, needs.len ? " and owning " : "owning ", &unowned);
    if (cf->publication_create && !needs.len)
        goto out; /* stream creates or extends it */
    /* The fix: what an owner (or a superuser) runs once; stream then finds it done. */
    if (*exists)
        add_once(&owners, pubowner);
    if (have_publish) {
        char *lit = PQescapeLiteral(s->sql, cf->publication_name, strlen(cf->publication_name));
        crw_buf_printf(&fix, "SELECT crwatch.publish(%s", lit ? lit : "''");
        PQfreemem(lit);
        for (int i = 0; i < tables.n; i++) {
            lit = PQescapeLiteral(s->sql, tables.v[i], strlen(tables.v[i]));
            crw_buf_printf(&fix, ", %s", lit ? lit : "''");
            PQfreemem(lit);
        }
        crw_buf_putc(&fix, ')');
    } else {
        char *pubq = crw_session_quote_ident(s->sql, cf->publication_name);
        crw_buf_printf(&fix, "%s PUBLICATION %s %s ", *exists ? "ALTER" : "CREATE", pubq,
                       *exists ? "ADD TABLE" : "FOR TABLE");
        join(&fix, "", &tables);
        free(pubq);
    }
    join(&who, "", &owners);
    if (!cf->publication_create)
        snprintf(errstr, n, "publication %s %s%s%s and publication.create=false; run, as %s (or a superuser): %s",
                 cf->publication_name, *exists ? "lacks " : "does not exist (for ", lacking->data,
                 *exists ? "" : ")", who.data, fix.data);
    else
        snprintf(errstr, n, "publication %s %s%s%s and role %s may not %s it: that takes %s; run, as %s (or a "
                 "superuser): %s",
                 cf->publication_name, *exists ? "lacks " : "does not exist (for ", lacking->data,
                 *exists ? "" : ")", PQuser(s->sql), *exists ? "extend" : "create", needs.data, who.data, fix.data);
    rc = CRW_ERR_PREREQ;
out:
    free(pubowner);
    free(db);
    crw_strlist_clear(&tables);
    crw_strlist_clear(&owners);
    crw_strlist_clear(&unowned);
    crw_buf_free(&needs);
    crw_buf_free(&fix);
    crw_buf_free(&who);
    return rc;
}

/* schema NUL table: a table's key (identifiers hold no NUL). */
static void table_key(crw_buf_t *key, const char *schema, const char *table) {
    crw_buf_reset(key);
    crw_buf_put(key, schema, strlen(schema) + 1);
    crw_buf_puts(key, table);
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
    /* The tables it has, listed once: a query per watched table would cost each a listing of the whole
     * publication (pg_publication_tables), n queries of n rows at start. Keys: schema NUL table. */
    crw_strmap_t *have = crw_strmap_new(1);
    crw_buf_t key = CRW_BUF_INIT;
    if (exists && !all) {
        rc = crw_session_query(s->sql, &res, errstr, n,
                   "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1", 1, p);
        if (rc < 0)
            goto out;
        for (int r = 0; r < PQntuples(res); r++) {
            table_key(&key, PQgetvalue(res, r, 0), PQgetvalue(res, r, 1));
            crw_strmap_put(have, key.data, key.len, NULL);
        }
        PQclear(res);
    }
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
            table_key(&key, rs->schema, rs->table);
            if (crw_strmap_get(have, key.data, key.len))
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
        if (rc == CRW_ERR_PREREQ) {
            /* Refused (a privilege, as a rule): say what it takes and who can do it. */
            char why[1024];
            bool had;
            crw_buf_t lacking = CRW_BUF_INIT;
            size_t l = strlen(errstr);
            if (crw_session_check_publication(s, &had, &lacking, why, sizeof why) == CRW_ERR_PREREQ)
                snprintf(errstr + l, n - l, "; %s", why);
            crw_buf_free(&lacking);
        }
        if (rc < 0)
            goto out;
        PQclear(res);
        crw_info("publication %s: %s %d table(s)", cf->publication_name, exists ? "added" : "created with", added);
    }
    rc = 0;
out:
    free(pubq);
    crw_buf_free(&sql);
    crw_buf_free(&key);
    crw_strmap_destroy(have);
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
