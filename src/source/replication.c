/*
 * replication.c — walsender session: set-up, the CopyBoth loop, feedback.
 *
 * Wire formats (PostgreSQL protocol, "Streaming Replication Protocol"):
 *   XLogData        'w' int64 dataStart, int64 walEnd, int64 sendTime, bytes
 *   Keepalive       'k' int64 walEnd, int64 sendTime, byte replyRequested
 *   Status update   'r' int64 write, int64 flush, int64 apply, int64 sendTime, byte replyRequested
 * All integers big-endian; times are microseconds since 2000-01-01.
 */
#include "source/replication.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/time.h>
#include <time.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "source/spool.h"

/* Session settings that make text output deterministic (design.md §4). */
#define SESSION_OPTIONS                                                                                                \
    "-c datestyle=ISO -c intervalstyle=iso_8601 -c timezone=UTC -c extra_float_digits=3 -c bytea_output=hex"

struct crw_repl {
    const crw_config_t *conf;
    char *conninfo;
    crw_pipeline_t *pipeline;
    uint64_t endpos;
    crw_repl_msg_fn fn;
    void *opaque;

    PGconn *sql;
    PGconn *conn;
    int server_version;
    char *dbname;
    bool slot_seen;          /* the slot existed at some point in this run */
    crw_repl_seed_fn seed;
    void *seed_opaque;
    bool seeded;
    char *snapshot;          /* exported by CREATE_REPLICATION_SLOT, valid until the next command */
    crw_pgo_decoder_t *dec;
    crw_spool_t *spool;

    bool in_stream;          /* between Stream Start and Stream Stop */
    uint32_t stream_xid;
    bool in_txn;             /* a Begin was dispatched, its Commit not yet */
    bool at_end;
    bool stop_after_commit;  /* a stop was asked: the next commit is the last */
    uint64_t received;       /* highest WAL position seen */
    int64_t last_status_us;  /* monotonic */
};

static void put64(char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = (char)(v & 0xff);
        v >>= 8;
    }
}

static uint64_t get64(const char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | (unsigned char)p[i];
    return v;
}

crw_repl_t *crw_repl_new(const crw_config_t *conf, const char *conninfo, crw_pipeline_t *p, uint64_t endpos,
                         crw_repl_msg_fn fn, void *opaque) {
    crw_repl_t *r = crw_calloc(1, sizeof *r);
    r->conf = conf;
    r->conninfo = crw_strdup(conninfo ? conninfo : "");
    r->pipeline = p;
    r->endpos = endpos;
    r->fn = fn;
    r->opaque = opaque;
    r->dec = crw_pgo_decoder_new();
    r->spool = crw_spool_new(conf->spool_dir);
    return r;
}

void crw_repl_close(crw_repl_t *r) {
    if (r->conn)
        PQfinish(r->conn);
    if (r->sql)
        PQfinish(r->sql);
    r->conn = r->sql = NULL;
    crw_spool_reset(r->spool);
    r->in_stream = false;
    r->in_txn = false;
}

void crw_repl_destroy(crw_repl_t *r) {
    if (!r)
        return;
    crw_repl_close(r);
    crw_pgo_decoder_destroy(r->dec);
    crw_spool_destroy(r->spool);
    free(r->conninfo);
    free(r->dbname);
    free(r->snapshot);
    free(r);
}

PGconn *crw_repl_sql(crw_repl_t *r) { return r->sql; }

void crw_repl_set_seed(crw_repl_t *r, crw_repl_seed_fn fn, void *opaque) {
    r->seed = fn;
    r->seed_opaque = opaque;
}

/* Runs the seed hook, inside the slot's snapshot when there is one. */
static int run_seed(crw_repl_t *r, char *errstr, size_t n) {
    if (!r->seed || r->seeded)
        return 0;
    bool in_snap = false;
    if (r->snapshot) {
        char *lit = PQescapeLiteral(r->sql, r->snapshot, strlen(r->snapshot));
        crw_buf_t sql = CRW_BUF_INIT;
        crw_buf_printf(&sql, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT %s", lit);
        PQfreemem(lit);
        PGresult *res = PQexec(r->sql, sql.data);
        crw_buf_free(&sql);
        in_snap = PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!in_snap)
            crw_warn("could not use the slot's snapshot (%s); reading the current state",
                     PQresultErrorMessage(res));
        PQclear(res);
        if (!in_snap)
            PQclear(PQexec(r->sql, "ROLLBACK"));
    }
    int rc = r->seed(r->seed_opaque, r->sql, in_snap);
    if (in_snap)
        PQclear(PQexec(r->sql, "COMMIT"));
    if (rc < 0) {
        snprintf(errstr, n, "initial listing of the watched tables failed");
        return rc;
    }
    r->seeded = true;
    return 0;
}
const char *crw_repl_dbname(const crw_repl_t *r) { return r->dbname ? r->dbname : ""; }
bool crw_repl_at_endpos(const crw_repl_t *r) { return r->at_end; }
bool crw_repl_in_txn(const crw_repl_t *r) { return r->in_txn; }
void crw_repl_stop_after_commit(crw_repl_t *r) { r->stop_after_commit = true; }

/* Connects one session; replication: open a walsender. */
static PGconn *connect_one(crw_repl_t *r, bool replication, char *errstr, size_t n, int *err) {
    const char *keys[] = {"dbname", "replication", "options", "application_name", NULL};
    const char *vals[] = {r->conninfo, replication ? "database" : NULL, SESSION_OPTIONS, "crwatch", NULL};
    if (!replication) {
        keys[1] = "options";
        vals[1] = SESSION_OPTIONS;
        keys[2] = "application_name";
        vals[2] = "crwatch";
        keys[3] = NULL;
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

/* Runs sql with params; keeps the result in *res; returns 0 or sets errstr. */
static int query(PGconn *c, PGresult **res, char *errstr, size_t n, const char *sql, int nparams,
                 const char *const *params) {
    *res = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(*res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return 0;
    const char *m = PQresultErrorMessage(*res);
    snprintf(errstr, n, "%.*s", (int)strcspn(m, "\n"), m);
    int rc = PQstatus(c) == CONNECTION_BAD ? CRW_ERR_CONN : CRW_ERR_PREREQ;
    PQclear(*res);
    *res = NULL;
    return rc;
}

static char *quote_ident(PGconn *c, const char *s) {
    char *q = PQescapeIdentifier(c, s, strlen(s));
    char *out = crw_strdup(q ? q : "\"\"");
    PQfreemem(q);
    return out;
}

/* wal_level, privileges, watched tables. */
static int check_prereqs(crw_repl_t *r, char *errstr, size_t n) {
    PGresult *res;
    int rc = query(r->sql, &res, errstr, n,
                   "SELECT current_setting('wal_level'), "
                   "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
                   0, NULL);
    if (rc < 0)
        return rc;
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
                 PQuser(r->sql));
        PQclear(res);
        return CRW_ERR_PREREQ;
    }
    PQclear(res);
    for (int i = 0; i < r->conf->nresources; i++) {
        const crw_resource_conf_t *rs = &r->conf->resources[i];
        const char *p[2] = {rs->schema, rs->table};
        rc = query(r->sql, &res, errstr, n,
                   "SELECT has_table_privilege(c.oid, 'SELECT') FROM pg_class c JOIN pg_namespace ns ON "
                   "ns.oid = c.relnamespace WHERE ns.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r','p')",
                   2, p);
        if (rc < 0)
            return rc;
        if (PQntuples(res) == 0) {
            snprintf(errstr, n, "watched table %s.%s does not exist", rs->schema, rs->table);
            rc = CRW_ERR_PREREQ;
        } else if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
            snprintf(errstr, n, "role %s may not SELECT from watched table %s.%s", PQuser(r->sql), rs->schema,
                     rs->table);
            rc = CRW_ERR_PREREQ;
        }
        PQclear(res);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Creates the publication, or adds watched tables it lacks, when allowed. */
static int ensure_publication(crw_repl_t *r, char *errstr, size_t n) {
    const crw_config_t *cf = r->conf;
    PGresult *res;
    const char *p[1] = {cf->publication_name};
    int rc = query(r->sql, &res, errstr, n, "SELECT puballtables FROM pg_publication WHERE pubname = $1", 1, p);
    if (rc < 0)
        return rc;
    bool exists = PQntuples(res) == 1, all = exists && !strcmp(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    char *pubq = quote_ident(r->sql, cf->publication_name);
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
        if (exists) {
            const char *pp[3] = {cf->publication_name, rs->schema, rs->table};
            rc = query(r->sql, &res, errstr, n,
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
        char *s = quote_ident(r->sql, rs->schema), *t = quote_ident(r->sql, rs->table);
        crw_buf_printf(&sql, "%s%s.%s", added++ ? ", " : "", s, t);
        free(s);
        free(t);
    }
    if (added) {
        rc = query(r->sql, &res, errstr, n, sql.data, 0, NULL);
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
 * not exist and may be created (create_slot does that, after the
 * publication, so a refused start leaves nothing behind).
 */
static int check_slot(crw_repl_t *r, uint64_t *start_lsn, bool *missing, char *errstr, size_t n) {
    const crw_config_t *cf = r->conf;
    PGresult *res;
    const char *p[1] = {cf->slot_name};
    int rc = query(r->sql, &res, errstr, n,
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
        } else if (strcmp(PQgetvalue(res, 0, 1), r->dbname)) {
            snprintf(errstr, n, "slot %s belongs to database %s, not %s", cf->slot_name, PQgetvalue(res, 0, 1),
                     r->dbname);
            rc = CRW_ERR_PREREQ;
        } else if (!PQgetisnull(res, 0, 2)) {
            snprintf(errstr, n, "slot %s is active for PID %s", cf->slot_name, PQgetvalue(res, 0, 2));
            rc = CRW_ERR_SLOT_BUSY;
        } else if (!PQgetisnull(res, 0, 3))
            crw_lsn_parse(PQgetvalue(res, 0, 3), start_lsn);
        PQclear(res);
        r->slot_seen = r->slot_seen || rc == 0;
        return rc;
    }
    PQclear(res);
    if (r->slot_seen) {
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

static int create_slot(crw_repl_t *r, uint64_t *start_lsn, char *errstr, size_t n) {
    const crw_config_t *cf = r->conf;
    PGresult *res;
    char *slotq = quote_ident(r->conn, cf->slot_name);
    crw_buf_t sql = CRW_BUF_INIT;
    /* Export the slot's snapshot when something wants to read the tables as of it. */
    crw_buf_printf(&sql, "CREATE_REPLICATION_SLOT %s LOGICAL pgoutput %s", slotq,
                   r->seed && !r->seeded ? "EXPORT_SNAPSHOT" : "NOEXPORT_SNAPSHOT");
    free(slotq);
    res = PQexec(r->conn, sql.data);
    crw_buf_free(&sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        const char *m = PQresultErrorMessage(res);
        snprintf(errstr, n, "creating slot %s: %.*s", cf->slot_name, (int)strcspn(m, "\n"), m);
        PQclear(res);
        return PQstatus(r->conn) == CONNECTION_BAD ? CRW_ERR_CONN : CRW_ERR_PREREQ;
    }
    crw_lsn_parse(PQgetvalue(res, 0, 1), start_lsn);
    free(r->snapshot);
    r->snapshot = PQgetisnull(res, 0, 2) ? NULL : crw_strdup(PQgetvalue(res, 0, 2));
    crw_info("created replication slot %s at %s", cf->slot_name, PQgetvalue(res, 0, 1));
    PQclear(res);
    r->slot_seen = true;
    return 0;
}

static void append_literal(crw_buf_t *b, const char *s, char quote) {
    crw_buf_putc(b, quote);
    for (; *s; s++) {
        if (*s == quote)
            crw_buf_putc(b, quote);
        crw_buf_putc(b, *s);
    }
    crw_buf_putc(b, quote);
}

/* Connects both sessions and asks IDENTIFY_SYSTEM (no publication or slot is touched). */
static int connect_identify(crw_repl_t *r, char *errstr, size_t n) {
    int err = CRW_ERR_CONN;
    crw_repl_close(r);
    if (!(r->sql = connect_one(r, false, errstr, n, &err)))
        return err;
    if (!(r->conn = connect_one(r, true, errstr, n, &err))) {
        crw_repl_close(r);
        return err;
    }
    r->server_version = PQserverVersion(r->conn);
    PGresult *res = PQexec(r->conn, "IDENTIFY_SYSTEM");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) < 4 || PQgetisnull(res, 0, 3)) {
        const char *m = PQresultErrorMessage(res);
        snprintf(errstr, n, "IDENTIFY_SYSTEM failed: %.*s", (int)strcspn(m, "\n"), m);
        PQclear(res);
        err = PQstatus(r->conn) == CONNECTION_BAD ? CRW_ERR_CONN : CRW_ERR_PREREQ;
        crw_repl_close(r);
        return err;
    }
    free(r->dbname);
    r->dbname = crw_strdup(PQgetvalue(res, 0, 3));
    PQclear(res);
    return 0;
}

int crw_repl_start(crw_repl_t *r, char *errstr, size_t n) {
    int rc = connect_identify(r, errstr, n);
    if (rc < 0)
        return rc;
    PGresult *res;

    uint64_t start = 0;
    bool missing = false;
    if ((rc = check_prereqs(r, errstr, n)) < 0 || (rc = check_slot(r, &start, &missing, errstr, n)) < 0 ||
        (rc = ensure_publication(r, errstr, n)) < 0 || (missing && (rc = create_slot(r, &start, errstr, n)) < 0))
        goto fail;
    crw_pipeline_follow(r->pipeline, start);
    rc = run_seed(r, errstr, n);
    free(r->snapshot);
    r->snapshot = NULL;
    if (rc < 0)
        goto fail;

    crw_buf_t cmd = CRW_BUF_INIT;
    char *slotq = quote_ident(r->conn, r->conf->slot_name);
    crw_buf_t pubs = CRW_BUF_INIT;
    append_literal(&pubs, r->conf->publication_name, '"');
    crw_buf_printf(&cmd, "START_REPLICATION SLOT %s LOGICAL 0/0 (", slotq);
    free(slotq);
    /* Protocol 2 with streaming where the server has it (PostgreSQL 14+). */
    if (r->server_version >= 140000)
        crw_buf_puts(&cmd, "proto_version '2', streaming 'on', messages 'true', ");
    else
        crw_buf_puts(&cmd, "proto_version '1', ");
    crw_buf_puts(&cmd, "publication_names ");
    append_literal(&cmd, pubs.data, '\'');
    crw_buf_putc(&cmd, ')');
    crw_buf_free(&pubs);
    crw_debug("%s", cmd.data);
    res = PQexec(r->conn, cmd.data);
    crw_buf_free(&cmd);
    if (PQresultStatus(res) != PGRES_COPY_BOTH) {
        const char *m = PQresultErrorMessage(res);
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(errstr, n, "START_REPLICATION failed: %.*s", (int)strcspn(m, "\n"), m);
        /* 55006 object_in_use: the slot is still held by a dying predecessor. */
        rc = state && !strcmp(state, "55006") ? CRW_ERR_SLOT_BUSY
             : PQstatus(r->conn) == CONNECTION_BAD ? CRW_ERR_CONN
                                                   : CRW_ERR_PREREQ;
        PQclear(res);
        goto fail;
    }
    PQclear(res);
    r->at_end = false;
    r->last_status_us = 0;
    crw_info("streaming from slot %s (database %s, protocol %d, confirmed " CRW_LSN_FMT ")", r->conf->slot_name,
             r->dbname, r->server_version >= 140000 ? 2 : 1, CRW_LSN_ARGS(start));
    return 0;
fail:
    crw_repl_close(r);
    return rc;
}

int crw_repl_send_status(crw_repl_t *r, bool reply_requested) {
    if (!r->conn)
        return CRW_ERR_CONN;
    uint64_t flush = crw_pipeline_confirmed(r->pipeline);
    uint64_t write = r->received > flush ? r->received : flush;
    char msg[34];
    msg[0] = 'r';
    put64(msg + 1, write);         /* write: received and handed to the pipeline */
    put64(msg + 9, flush);         /* flush: every sink acknowledged up to here */
    put64(msg + 17, flush);        /* apply: same as flush; nothing is applied later */
    put64(msg + 25, (uint64_t)crw_clock_pg_us()); /* sendTime */
    msg[33] = reply_requested ? 1 : 0;
    if (PQputCopyData(r->conn, msg, sizeof msg) <= 0 || PQflush(r->conn) < 0) {
        crw_warn("could not send status update: %s", PQerrorMessage(r->conn));
        return CRW_ERR_CONN;
    }
    r->last_status_us = crw_clock_mono_us();
    crw_debug("status: write " CRW_LSN_FMT " flush " CRW_LSN_FMT, CRW_LSN_ARGS(write), CRW_LSN_ARGS(flush));
    return 0;
}

/* Dispatches to the handler, tracking transaction boundaries and endpos. */
static int dispatch(crw_repl_t *r, const crw_pgo_msg_t *m) {
    if (m->type == CRW_PGO_BEGIN) {
        if (r->endpos && m->u.begin.final_lsn > r->endpos) {
            r->at_end = true;
            return 0;
        }
        r->in_txn = true;
    }
    int rc = r->fn(r->opaque, m);
    if (m->type == CRW_PGO_COMMIT) {
        r->in_txn = false;
        /* Like pg_recvlogical: the commit that reaches endpos is the last. */
        if ((r->endpos && m->u.commit.end_lsn >= r->endpos) || r->stop_after_commit)
            r->at_end = true;
    }
    return rc;
}

typedef struct {
    crw_repl_t *r;
    char *errstr;
    size_t n;
} replay_ctx_t;

/* Spool records are the message's 8-byte WAL position, then the message. */
static int replay_one(void *opaque, const char *buf, size_t len) {
    replay_ctx_t *ctx = opaque;
    if (len < 8)
        return CRW_ERR_IO;
    crw_pgo_msg_t m;
    int rc = crw_pgo_decode(ctx->r->dec, buf + 8, len - 8, true, &m, ctx->errstr, ctx->n);
    if (rc < 0)
        return rc;
    m.lsn = get64(buf);
    return dispatch(ctx->r, &m);
}

/* One pgoutput message from an XLogData frame. */
static int handle_message(crw_repl_t *r, const char *buf, size_t len, uint64_t lsn, char *errstr, size_t n) {
    if (r->at_end)
        return 0; /* past endpos: read (and keep answering) but hand nothing on */
    crw_pgo_msg_t m;
    int rc = crw_pgo_decode(r->dec, buf, len, r->in_stream, &m, errstr, n);
    if (rc < 0)
        return rc;
    m.lsn = lsn;
    switch (m.type) {
    case CRW_PGO_STREAM_START:
        r->in_stream = true;
        r->stream_xid = m.u.stream_start.xid;
        return 0;
    case CRW_PGO_STREAM_STOP:
        r->in_stream = false;
        return 0;
    case CRW_PGO_STREAM_ABORT:
        return crw_spool_abort(r->spool, m.u.stream_abort.xid, m.u.stream_abort.subxid);
    case CRW_PGO_STREAM_COMMIT: {
        if (r->endpos && m.u.stream_commit.commit_lsn > r->endpos) {
            r->at_end = true;
            return crw_spool_abort(r->spool, m.u.stream_commit.xid, m.u.stream_commit.xid);
        }
        crw_pgo_msg_t b = {.type = CRW_PGO_BEGIN};
        b.u.begin.final_lsn = m.u.stream_commit.commit_lsn;
        b.u.begin.commit_time = m.u.stream_commit.commit_time;
        b.u.begin.xid = m.u.stream_commit.xid;
        crw_pgo_msg_t c = {.type = CRW_PGO_COMMIT};
        c.u.commit.commit_lsn = m.u.stream_commit.commit_lsn;
        c.u.commit.end_lsn = m.u.stream_commit.end_lsn;
        c.u.commit.commit_time = m.u.stream_commit.commit_time;
        uint32_t xid = m.u.stream_commit.xid;
        if ((rc = dispatch(r, &b)) < 0)
            return rc;
        replay_ctx_t ctx = {r, errstr, n};
        if ((rc = crw_spool_replay(r->spool, xid, replay_one, &ctx)) < 0)
            return rc;
        return dispatch(r, &c);
    }
    default:
        break;
    }
    if (r->in_stream) {
        /* buf sits 25 bytes into the XLogData frame: the 8 bytes before it are
         * sendTime, free to overwrite with the LSN so one write holds both. */
        put64((char *)buf - 8, lsn);
        return crw_spool_append(r->spool, r->stream_xid, m.xid ? m.xid : r->stream_xid, buf - 8, len + 8);
    }
    return dispatch(r, &m);
}

void crw_repl_keepalive(crw_repl_t *r) {
    if (r->conn && crw_clock_mono_us() - r->last_status_us >= (int64_t)r->conf->status_interval_ms * 1000)
        crw_repl_send_status(r, false);
}

int crw_repl_finish(crw_repl_t *r, int timeout_ms) {
    if (!r->conn)
        return CRW_ERR_CONN;
    int rc = crw_repl_send_status(r, false);
    if (rc == 0 && (PQputCopyEnd(r->conn, NULL) <= 0 || PQflush(r->conn) < 0))
        rc = CRW_ERR_CONN;
    /* The server answers CopyDone after every message before it, our status
     * update included, was processed; data still in flight is dropped. */
    int64_t deadline = crw_clock_mono_us() + (int64_t)timeout_ms * 1000;
    while (rc == 0) {
        char *buf = NULL;
        int len = PQgetCopyData(r->conn, &buf, 1);
        if (buf)
            PQfreemem(buf);
        if (len == -1)
            break; /* COPY ended: results follow */
        if (len < -1) {
            rc = CRW_ERR_CONN;
            break;
        }
        if (len > 0)
            continue;
        int64_t left = deadline - crw_clock_mono_us();
        if (left <= 0) {
            crw_warn("server did not end the replication stream within %d ms", timeout_ms);
            rc = CRW_ERR_CONN;
            break;
        }
        int fd = PQsocket(r->conn);
        fd_set rfds;
        FD_ZERO(&rfds);
        FD_SET(fd, &rfds);
        struct timeval tv = {(time_t)(left / 1000000), (suseconds_t)(left % 1000000)};
        if (select(fd + 1, &rfds, NULL, NULL, &tv) > 0 && !PQconsumeInput(r->conn))
            rc = CRW_ERR_CONN;
    }
    if (rc == 0) {
        PGresult *res;
        while (!PQisBusy(r->conn) && (res = PQgetResult(r->conn)))
            PQclear(res);
    }
    crw_repl_close(r);
    return rc;
}

int crw_repl_poll(crw_repl_t *r, int timeout_ms, char *errstr, size_t n) {
    if (!r->conn)
        return CRW_ERR_CONN;
    int64_t interval = (int64_t)r->conf->status_interval_ms * 1000;
    for (int batch = 0;; batch++) {
        /* Return now and then while data keeps coming, so the caller sees
         * signals and sinks, and feedback goes out on time. */
        if (batch == 4096) {
            if (crw_clock_mono_us() - r->last_status_us >= interval && crw_repl_send_status(r, false) < 0)
                return CRW_ERR_CONN;
            return 0;
        }
        char *buf = NULL;
        int len = PQgetCopyData(r->conn, &buf, 1);
        if (len == 0) {
            /* Nothing buffered: send feedback if due, then wait for the socket. */
            if (crw_clock_mono_us() - r->last_status_us >= interval && crw_repl_send_status(r, false) < 0)
                return CRW_ERR_CONN;
            if (timeout_ms <= 0)
                return 0;
            int fd = PQsocket(r->conn);
            fd_set rfds;
            FD_ZERO(&rfds);
            FD_SET(fd, &rfds);
            int64_t until_status = interval - (crw_clock_mono_us() - r->last_status_us);
            int64_t wait_us = (int64_t)timeout_ms * 1000;
            if (until_status < wait_us)
                wait_us = until_status > 0 ? until_status : 0;
            struct timeval tv = {(time_t)(wait_us / 1000000), (suseconds_t)(wait_us % 1000000)};
            int s = select(fd + 1, &rfds, NULL, NULL, &tv);
            if (s < 0 && errno != EINTR) {
                snprintf(errstr, n, "select: %s", strerror(errno));
                return CRW_ERR_CONN;
            }
            if (s > 0 && !PQconsumeInput(r->conn)) {
                snprintf(errstr, n, "connection lost: %.*s", (int)strcspn(PQerrorMessage(r->conn), "\n"),
                         PQerrorMessage(r->conn));
                return CRW_ERR_CONN;
            }
            return 0; /* let the caller look at signals, sinks and endpos */
        }
        if (len == -1) {
            PGresult *res = PQgetResult(r->conn);
            const char *m = res ? PQresultErrorMessage(res) : "";
            const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
            snprintf(errstr, n, "replication stream ended: %.*s", (int)strcspn(m, "\n"), m);
            /* Class 42 (undefined object, ...) will fail the same way again: the
             * usual one is a slot created before its publication existed. */
            int rc = state && !strncmp(state, "42", 2) ? CRW_ERR_PREREQ : CRW_ERR_CONN;
            if (rc == CRW_ERR_PREREQ && strstr(m, "publication"))
                snprintf(errstr + strlen(errstr), n - strlen(errstr),
                         " (the slot's position predates the publication: drop the slot, or create the "
                         "publication before the slot)");
            PQclear(res);
            return rc;
        }
        if (len < 0) {
            snprintf(errstr, n, "connection lost: %.*s", (int)strcspn(PQerrorMessage(r->conn), "\n"),
                     PQerrorMessage(r->conn));
            return CRW_ERR_CONN;
        }
        int rc = 0;
        if (buf[0] == 'k' && len >= 18) {
            uint64_t wal_end = get64(buf + 1);
            bool reply = buf[17] != 0;
            if (wal_end > r->received)
                r->received = wal_end;
            /* Everything up to wal_end was sent before this keepalive: when
             * nothing is open or unacknowledged, the slot may follow. */
            if (!r->in_txn && !r->in_stream && crw_pipeline_idle(r->pipeline)) {
                crw_pipeline_follow(r->pipeline, r->endpos && wal_end > r->endpos ? r->endpos : wal_end);
                if (r->endpos && wal_end >= r->endpos)
                    r->at_end = true;
            }
            if (reply)
                rc = crw_repl_send_status(r, false);
        } else if (buf[0] == 'w' && len >= 25) {
            uint64_t start = get64(buf + 1);
            if (start > r->received)
                r->received = start;
            rc = handle_message(r, buf + 25, (size_t)len - 25, start, errstr, n);
        } else {
            snprintf(errstr, n, "unexpected replication frame '%c' of %d bytes", buf[0], len);
            rc = CRW_ERR_PROTOCOL;
        }
        PQfreemem(buf);
        if (rc < 0)
            return rc;
        if (r->at_end)
            return 0;
    }
}

/* ---- crwatch check / crwatch slot ------------------------------------ */

static void report(FILE *out, const char *status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report(FILE *out, const char *status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(out, "%-5s ", status);
    vfprintf(out, fmt, ap);
    fputc('\n', out);
    va_end(ap);
}

int crw_repl_check(crw_repl_t *r, FILE *out, char *errstr, size_t n) {
    const crw_config_t *cf = r->conf;
    int rc = connect_identify(r, errstr, n);
    if (rc < 0) {
        report(out, "FAIL", "connection: %s", errstr);
        return rc;
    }
    int failed = 0;
    report(out, "ok", "connection: database %s as %s, server %s (replication session accepted)", r->dbname,
           PQuser(r->sql), PQparameterStatus(r->sql, "server_version"));
    char why[1024];
    if ((rc = check_prereqs(r, why, sizeof why)) < 0) {
        report(out, "FAIL", "%s", why);
        failed = rc;
    } else
        report(out, "ok", "wal_level=logical, REPLICATION attribute, watched tables readable");
    for (int i = 0; i < cf->nresources && !failed; i++) {
        const crw_resource_conf_t *rs = &cf->resources[i];
        const char *p[2] = {rs->schema, rs->table};
        PGresult *res;
        if (query(r->sql, &res, why, sizeof why,
                  "SELECT c.relreplident, (SELECT string_agg(a.attname, ',' ORDER BY array_position(i.indkey::int2[], "
                  "a.attnum)) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = "
                  "ANY(i.indkey) WHERE i.indrelid = c.oid AND i.indisprimary) FROM pg_class c JOIN pg_namespace "
                  "ns ON ns.oid = c.relnamespace WHERE ns.nspname = $1 AND c.relname = $2",
                  2, p) < 0)
            continue;
        char ident = PQgetvalue(res, 0, 0)[0];
        const char *ids = ident == 'f' ? "FULL (oldObject on every update)"
                          : ident == 'n' ? "NOTHING (updates and deletes cannot be published)"
                          : ident == 'i' ? "USING INDEX (old key only)"
                                         : "DEFAULT (old key only: oldObject needs cache.max.entries)";
        report(out, ident == 'n' ? "FAIL" : "ok", "table %s.%s: kind %s, primary key (%s), replica identity %s",
               rs->schema, rs->table, rs->kind, PQgetisnull(res, 0, 1) ? "none" : PQgetvalue(res, 0, 1), ids);
        if (ident == 'n')
            failed = CRW_ERR_PREREQ;
        PQclear(res);
    }
    PGresult *res;
    const char *pp[1] = {cf->publication_name};
    if (query(r->sql, &res, why, sizeof why,
              "SELECT p.puballtables, (SELECT count(*) FROM pg_publication_tables t WHERE t.pubname = p.pubname) "
              "FROM pg_publication p WHERE p.pubname = $1",
              1, pp) == 0) {
        if (PQntuples(res) == 0)
            report(out, cf->publication_create ? "warn" : "FAIL", "publication %s: missing (%s)", cf->publication_name,
                   cf->publication_create ? "stream creates it" : "publication.create=false");
        else
            report(out, "ok", "publication %s: %s table(s)%s", cf->publication_name, PQgetvalue(res, 0, 1),
                   !strcmp(PQgetvalue(res, 0, 0), "t") ? ", FOR ALL TABLES" : "");
        if (PQntuples(res) == 0 && !cf->publication_create)
            failed = CRW_ERR_PREREQ;
        PQclear(res);
    }
    uint64_t start = 0;
    bool missing = false;
    bool seen = r->slot_seen;
    rc = check_slot(r, &start, &missing, why, sizeof why);
    r->slot_seen = seen;
    if (rc < 0 && rc != CRW_ERR_SLOT_BUSY) {
        report(out, "FAIL", "%s", why);
        failed = failed ? failed : rc;
    } else if (missing)
        report(out, "warn", "slot %s: missing (stream creates it)", cf->slot_name);
    else {
        const char *sp[1] = {cf->slot_name};
        if (query(r->sql, &res, why, sizeof why,
                  "SELECT confirmed_flush_lsn, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, "
                  "active_pid FROM pg_replication_slots WHERE slot_name = $1",
                  1, sp) == 0 &&
            PQntuples(res) == 1) {
            report(out, rc == CRW_ERR_SLOT_BUSY ? "warn" : "ok", "slot %s: pgoutput, confirmed %s, %s bytes behind%s%s",
                   cf->slot_name, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1),
                   PQgetisnull(res, 0, 2) ? "" : ", in use by PID ", PQgetvalue(res, 0, 2));
        }
        PQclear(res);
    }
    crw_repl_close(r);
    if (failed)
        snprintf(errstr, n, "a prerequisite is missing (see the report)");
    return failed;
}

int crw_repl_slot(crw_repl_t *r, const char *verb, FILE *out, char *errstr, size_t n) {
    const crw_config_t *cf = r->conf;
    int rc = connect_identify(r, errstr, n);
    if (rc < 0)
        return rc;
    uint64_t lsn = 0;
    bool missing = false;
    rc = check_slot(r, &lsn, &missing, errstr, n);
    if (!strcmp(verb, "status")) {
        if (rc == 0 && missing) {
            snprintf(errstr, n, "slot %s does not exist", cf->slot_name);
            rc = CRW_ERR_PREREQ;
        } else if (rc == 0 || rc == CRW_ERR_SLOT_BUSY) {
            const char *sp[1] = {cf->slot_name};
            PGresult *res;
            rc = query(r->sql, &res, errstr, n,
                       "SELECT json_build_object('slot', slot_name, 'plugin', plugin, 'database', database, "
                       "'active', active, 'active_pid', active_pid, 'restart_lsn', restart_lsn, "
                       "'confirmed_flush_lsn', confirmed_flush_lsn, 'lag_bytes', "
                       "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 'wal_status', wal_status) "
                       "FROM pg_replication_slots WHERE slot_name = $1",
                       1, sp);
            if (rc == 0) {
                fprintf(out, "%s\n", PQgetvalue(res, 0, 0));
                PQclear(res);
            }
        }
    } else if (!strcmp(verb, "create")) {
        if (rc == 0 && !missing) {
            snprintf(errstr, n, "slot %s exists already", cf->slot_name);
            rc = CRW_ERR_PREREQ;
        } else if (rc == 0 && (rc = ensure_publication(r, errstr, n)) == 0 && (rc = create_slot(r, &lsn, errstr, n)) == 0)
            /* the publication first: a slot older than its publication cannot stream */
            fprintf(out, "{\"slot\":\"%s\",\"created_at_lsn\":\"" CRW_LSN_FMT "\"}\n", cf->slot_name,
                    CRW_LSN_ARGS(lsn));
    } else if (!strcmp(verb, "drop")) {
        if (rc == 0 && missing) {
            snprintf(errstr, n, "slot %s does not exist", cf->slot_name);
            rc = CRW_ERR_PREREQ;
        } else if (rc == 0) {
            const char *sp[1] = {cf->slot_name};
            PGresult *res;
            rc = query(r->sql, &res, errstr, n, "SELECT pg_drop_replication_slot($1)", 1, sp);
            if (rc == 0) {
                PQclear(res);
                fprintf(out, "{\"slot\":\"%s\",\"dropped\":true}\n", cf->slot_name);
            }
        }
    } else {
        snprintf(errstr, n, "slot: unknown action '%s' (status, create, drop)", verb);
        rc = CRW_ERR_CONFIG;
    }
    crw_repl_close(r);
    return rc;
}
