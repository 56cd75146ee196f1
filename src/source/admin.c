/*
 * admin.c — `crwatch check` and `crwatch slot status|create|drop`
 * (docs/usage.md): which source `stream` would use, its prerequisites and
 * its slot or stored watermark, read and changed only as the verb says,
 * over the same sessions the stream uses (session.h).
 */
#include "source/admin.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "source/poll.h"
#include "source/session.h"
#include "source/slotguard.h"
#include "source/source.h"

static void report(FILE *out, const char *status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report(FILE *out, const char *status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(out, "%-5s ", status);
    vfprintf(out, fmt, ap);
    fputc('\n', out);
    va_end(ap);
}

/* check, polling: the managed tables and the stored watermark. */
static int check_poll(const crw_config_t *cf, const char *conninfo, FILE *out, char *errstr, size_t n) {
    crw_session_t ses, *s = &ses;
    crw_session_init(s, cf, conninfo);
    int rc = crw_session_open_sql(s, errstr, n);
    if (rc < 0) {
        report(out, "FAIL", "connection: %s", errstr);
        crw_session_free(s);
        return rc;
    }
    report(out, "ok", "connection: database %s as %s, server %s", s->dbname, PQuser(s->sql),
           PQparameterStatus(s->sql, "server_version"));
    char why[1024];
    int failed = crw_poll_check(s, why, sizeof why), ntxid = crw_poll_txid_tables(cf);
    if (failed < 0)
        report(out, "FAIL", "%s", why);
    else if (ntxid)
        report(out, "ok", "%d table(s) managed for polling (txid, its index, crwatch's triggers); crwatch.offsets "
               "writable", ntxid);
    for (int i = 0; i < cf->nresources && failed == 0; i++) {
        const crw_resource_conf_t *rs = &cf->resources[i];
        if (rs->poll_column && *rs->poll_column && !crw_config_table_named_before(cf, i))
            report(out, "warn", "table %s.%s: polled by its column %s (lag %d ms, reconciled every %d ms): deletes "
                   "and longer transactions are seen late (docs/poll.md)",
                   rs->schema, rs->table, rs->poll_column, cf->poll_lag_ms, cf->resync_interval_ms);
    }
    PGresult *res;
    const char *sp[1] = {cf->slot_name};
    if (failed == 0 && ntxid && crw_session_query(s->sql, &res, why, sizeof why,
                                         "SELECT position, watermark, updated_at FROM crwatch.offsets WHERE name = $1 "
                                         "AND watermark IS NOT NULL",
                                         1, sp) == 0) {
        if (PQntuples(res) == 0)
            report(out, "warn", "watermark %s: none stored (stream starts from the tables' current state)",
                   cf->slot_name);
        else
            report(out, "ok", "watermark %s: poll batch %s, snapshot %s, stored %s", cf->slot_name,
                   PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2));
        PQclear(res);
    }
    crw_session_free(s);
    if (failed)
        snprintf(errstr, n, "a prerequisite is missing (see the report)");
    return failed;
}

/* check, logical: the stored position against the slot, its retained WAL, and whether a heartbeat can be written. */
static int check_slot_safety(const crw_config_t *cf, crw_session_t *s, FILE *out, uint64_t start, bool missing) {
    char why[2048];
    crw_guard_t g;
    crw_guard_init(&g, cf);
    g.check_only = true;
    int failed = crw_guard_start(&g, s, start, missing, why, sizeof why);
    if (failed < 0)
        report(out, "FAIL", "%s", why);
    else if (!g.store)
        report(out, "warn", "stored position: crwatch.offsets cannot keep it (apply sql/crwatch.sql): a slot dropped "
               "and created again while crwatch is stopped would not be detected");
    else if (!g.had_mark)
        report(out, "ok", "stored position: none yet for slot %s (a first start)", cf->slot_name);
    else
        report(out, "ok", "stored position: crwatch last confirmed " CRW_LSN_FMT " (system %s); the slot is at or "
               "before it: no gap", CRW_LSN_ARGS(g.saved), s->sysid ? s->sysid : "?");
    PGresult *res;
    const char *sp[1] = {cf->slot_name};
    if (!missing && crw_session_query(s->sql, &res, why, sizeof why,
                                      "SELECT (pg_current_wal_lsn() - restart_lsn)::bigint, wal_status, "
                                      "safe_wal_size FROM pg_replication_slots WHERE slot_name = $1",
                                      1, sp) == 0) {
        if (PQntuples(res) == 1) {
            long long retained = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
            bool over = retained > cf->slot_max_retained_bytes;
            report(out, over || strcmp(PQgetvalue(res, 0, 1), "reserved") ? "warn" : "ok",
                   "retained WAL: %lld bytes (slot.max.retained.bytes %" PRId64 "), wal_status %s%s%s", retained,
                   cf->slot_max_retained_bytes, PQgetvalue(res, 0, 1),
                   PQgetisnull(res, 0, 2) ? "" : ", safe_wal_size ", PQgetvalue(res, 0, 2));
        }
        PQclear(res);
    }
    if (cf->heartbeat_interval_ms == 0)
        report(out, "warn", "heartbeat: off (heartbeat.interval.ms=0): no liveness check, no source lag metric");
    else if (crw_session_query(s->sql, &res, why, sizeof why,
                               "SELECT coalesce(bool_or(has_function_privilege(p.oid, 'EXECUTE')), false), "
                               "pg_is_in_recovery() FROM pg_proc p WHERE p.proname = 'pg_logical_emit_message'",
                               0, NULL) == 0) {
        bool ok = !strcmp(PQgetvalue(res, 0, 0), "t") && strcmp(PQgetvalue(res, 0, 1), "t");
        report(out, ok ? "ok" : "warn", "heartbeat: %s every %d ms of quiet, back within %d ms",
               ok ? "a transactional pg_logical_emit_message" : "NOT possible (no EXECUTE on pg_logical_emit_message, "
               "or a standby)", cf->heartbeat_interval_ms, cf->heartbeat_timeout_ms);
        PQclear(res);
    }
    return failed;
}

int crw_admin_check(const crw_config_t *cf, const char *conninfo, FILE *out, char *errstr, size_t n) {
    crw_source_kind_t kind;
    char chose[1024];
    int rc = crw_source_choose(cf, conninfo, &kind, chose, sizeof chose);
    if (rc < 0) {
        report(out, "FAIL", "connection: %s", chose);
        snprintf(errstr, n, "%s", chose);
        return rc;
    }
    report(out, kind == CRW_SOURCE_POLL && cf->source == CRW_SOURCE_AUTO ? "warn" : "ok",
           "source: stream would use %s (%s)", kind == CRW_SOURCE_POLL ? "polling" : "logical replication", chose);
    if (kind == CRW_SOURCE_POLL)
        return check_poll(cf, conninfo, out, errstr, n);
    crw_session_t ses, *s = &ses;
    crw_session_init(s, cf, conninfo);
    rc = crw_session_open(s, errstr, n);
    if (rc < 0) {
        report(out, "FAIL", "connection: %s", errstr);
        crw_session_free(s);
        return rc;
    }
    int failed = 0;
    report(out, "ok", "connection: database %s as %s, server %s (replication session accepted)", s->dbname,
           PQuser(s->sql), PQparameterStatus(s->sql, "server_version"));
    char why[1024];
    if ((rc = crw_session_check_prereqs(s, why, sizeof why)) < 0) {
        report(out, "FAIL", "%s", why);
        failed = rc;
    } else
        report(out, "ok", "wal_level=logical, REPLICATION attribute, watched tables readable");
    for (int i = 0; i < cf->nresources && !failed; i++) {
        const crw_resource_conf_t *rs = &cf->resources[i];
        const char *p[2] = {rs->schema, rs->table};
        PGresult *res;
        if (crw_session_query(s->sql, &res, why, sizeof why,
                  "SELECT c.relreplident, (SELECT string_agg(a.attname, ',' ORDER BY array_position(i.indkey::int2[], "
                  "a.attnum)) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = "
                  "ANY(i.indkey) WHERE i.indrelid = c.oid AND i.indisprimary) FROM pg_class c JOIN pg_namespace "
                  "ns ON ns.oid = c.relnamespace WHERE ns.nspname = $1 AND c.relname = $2",
                  2, p) < 0)
            continue;
        char ident = PQgetvalue(res, 0, 0)[0];
        const char *ids = ident == 'f' ? "FULL (oldObject on every update)"
                          : ident == 'n' ? "NOTHING (updates and deletes cannot be published)"
                          : rs->cached ? (ident == 'i' ? "USING INDEX (old key only; oldObject from the resource cache)"
                                                       : "DEFAULT (old key only; oldObject from the resource cache)")
                          : ident == 'i' ? "USING INDEX (old key only: no oldObject, the kind is not cached)"
                                         : "DEFAULT (old key only: no oldObject, the kind is not cached)";
        report(out, ident == 'n' ? "FAIL" : "ok", "table %s.%s: kind %s, primary key (%s), replica identity %s",
               rs->schema, rs->table, rs->kind, PQgetisnull(res, 0, 1) ? "none" : PQgetvalue(res, 0, 1), ids);
        if (ident == 'n')
            failed = CRW_ERR_PREREQ;
        PQclear(res);
    }
    PGresult *res;
    const char *pp[1] = {cf->publication_name};
    /* What stream will do with the publication, and whether this role may. */
    bool pub_exists = false;
    crw_buf_t lacking = CRW_BUF_INIT;
    if ((rc = crw_session_check_publication(s, &pub_exists, &lacking, why, sizeof why)) < 0) {
        report(out, "FAIL", "%s", why);
        failed = failed ? failed : rc;
    } else if (!pub_exists)
        report(out, "warn", "publication %s: missing (stream creates it, for %s)", cf->publication_name,
               lacking.len ? lacking.data : "no existing table");
    else if (crw_session_query(s->sql, &res, why, sizeof why,
                               "SELECT p.puballtables, (SELECT count(*) FROM pg_publication_tables t WHERE t.pubname = "
                               "p.pubname) FROM pg_publication p WHERE p.pubname = $1",
                               1, pp) == 0) {
        report(out, lacking.len ? "warn" : "ok", "publication %s: %s table(s)%s%s%s%s", cf->publication_name,
               PQgetvalue(res, 0, 1), !strcmp(PQgetvalue(res, 0, 0), "t") ? ", FOR ALL TABLES" : "",
               lacking.len ? ", lacks " : "", lacking.len ? lacking.data : "", lacking.len ? " (stream adds it)" : "");
        PQclear(res);
    }
    crw_buf_free(&lacking);
    uint64_t start = 0;
    bool missing = false;
    bool seen = s->slot_seen;
    rc = crw_session_check_slot(s, &start, &missing, why, sizeof why);
    s->slot_seen = seen;
    if (rc < 0 && rc != CRW_ERR_SLOT_BUSY) {
        report(out, "FAIL", "%s", why);
        failed = failed ? failed : rc;
    } else if (missing)
        report(out, "warn", "slot %s: missing (stream creates it)", cf->slot_name);
    else {
        const char *sp[1] = {cf->slot_name};
        if (crw_session_query(s->sql, &res, why, sizeof why,
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
    if (rc == 0 || rc == CRW_ERR_SLOT_BUSY)
        failed = failed ? failed : check_slot_safety(cf, s, out, start, missing);
    crw_session_free(s);
    if (failed)
        snprintf(errstr, n, "a prerequisite is missing (see the report)");
    return failed;
}

int crw_admin_slot(const crw_config_t *cf, const char *conninfo, const char *verb, FILE *out, char *errstr, size_t n) {
    crw_session_t ses, *s = &ses;
    crw_session_init(s, cf, conninfo);
    int rc = crw_session_open(s, errstr, n);
    if (rc < 0) {
        crw_session_free(s);
        return rc;
    }
    uint64_t lsn = 0;
    bool missing = false;
    rc = crw_session_check_slot(s, &lsn, &missing, errstr, n);
    if (!strcmp(verb, "status")) {
        if (rc == 0 && missing) {
            snprintf(errstr, n, "slot %s does not exist", cf->slot_name);
            rc = CRW_ERR_PREREQ;
        } else if (rc == 0 || rc == CRW_ERR_SLOT_BUSY) {
            const char *sp[1] = {cf->slot_name};
            PGresult *res;
            rc = crw_session_query(s->sql, &res, errstr, n,
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
        } else if (rc == 0 && (rc = crw_session_ensure_publication(s, errstr, n)) == 0 && (rc = crw_session_create_slot(s, false, &lsn, errstr, n)) == 0)
            /* the publication first: a slot older than its publication cannot stream */
            fprintf(out, "{\"slot\":\"%s\",\"created_at_lsn\":\"" CRW_LSN_FMT "\"}\n", cf->slot_name,
                    CRW_LSN_ARGS(lsn));
    } else if (!strcmp(verb, "drop")) {
        /* The stored position goes too: the next start is a first start, not a gap. */
        if (rc == 0 && missing) {
            if (crw_guard_forget(s))
                fprintf(out, "{\"slot\":\"%s\",\"dropped\":false,\"forgotten\":true}\n", cf->slot_name);
            else {
                snprintf(errstr, n, "slot %s does not exist", cf->slot_name);
                rc = CRW_ERR_PREREQ;
            }
        } else if (rc == 0) {
            const char *sp[1] = {cf->slot_name};
            PGresult *res;
            crw_guard_forget(s); /* first: a failure between the two must not leave a stored position alone */
            rc = crw_session_query(s->sql, &res, errstr, n, "SELECT pg_drop_replication_slot($1)", 1, sp);
            if (rc == 0) {
                PQclear(res);
                fprintf(out, "{\"slot\":\"%s\",\"dropped\":true}\n", cf->slot_name);
            }
        }
    } else {
        snprintf(errstr, n, "slot: unknown action '%s' (status, create, drop)", verb);
        rc = CRW_ERR_CONFIG;
    }
    crw_session_free(s);
    return rc;
}

int crw_admin_forget(const crw_config_t *cf, const char *conninfo, const char **what, char *errstr, size_t n) {
    crw_source_kind_t kind;
    char why[512];
    int rc = crw_source_choose(cf, conninfo, &kind, why, sizeof why);
    if (rc < 0) {
        snprintf(errstr, n, "%s", why);
        return rc;
    }
    crw_session_t ses;
    crw_session_init(&ses, cf, conninfo);
    if ((rc = crw_session_open_sql(&ses, errstr, n)) == 0) {
        PGresult *res = NULL;
        const char *p[1] = {cf->slot_name};
        *what = kind == CRW_SOURCE_POLL ? "the poll watermark" : "the slot";
        rc = kind == CRW_SOURCE_POLL
                 ? crw_session_query(ses.sql, &res, errstr, n,
                                     "DELETE FROM crwatch.offsets WHERE name = $1",
                                     1, p)
                 : crw_session_query(ses.sql, &res, errstr, n,
                                     "SELECT CASE WHEN active THEN 'active' ELSE "
                                     "pg_drop_replication_slot(slot_name)::text END FROM pg_replication_slots "
                                     "WHERE slot_name = $1",
                                     1, p);
        if (rc == 0 && kind != CRW_SOURCE_POLL && PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "active")) {
            snprintf(errstr, n, "slot %s is in use by another process", cf->slot_name);
            rc = CRW_ERR_SLOT_BUSY;
        } else if (rc == 0 && kind != CRW_SOURCE_POLL)
            crw_guard_forget(&ses);
        if (res)
            PQclear(res);
    }
    crw_session_free(&ses);
    return rc;
}

int crw_admin_slot_recover(const crw_config_t *cf, const char *conninfo, bool accept, char *errstr, size_t n) {
    crw_session_t ses, *s = &ses;
    crw_session_init(s, cf, conninfo);
    int rc = crw_session_open(s, errstr, n);
    const char *sp[1] = {cf->slot_name};
    PGresult *res = NULL;
    if (rc == 0)
        rc = crw_session_query(s->sql, &res, errstr, n,
                               "SELECT wal_status, confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
                               1, sp);
    if (rc == 0) {
        bool exists = PQntuples(res) == 1, lost = exists && !strcmp(PQgetvalue(res, 0, 0), "lost");
        uint64_t at = 0;
        if (exists && !PQgetisnull(res, 0, 1))
            crw_lsn_parse(PQgetvalue(res, 0, 1), &at);
        PQclear(res);
        if (!accept && lost) {
            crw_warn("slot.lost=resync: dropping the invalidated slot %s to create it again", cf->slot_name);
            if ((rc = crw_session_query(s->sql, &res, errstr, n, "SELECT pg_drop_replication_slot($1)", 1, sp)) == 0)
                PQclear(res);
            exists = false;
        }
        if (rc == 0 && !accept && !exists &&
            (rc = crw_session_ensure_publication(s, errstr, n)) == 0 &&
            (rc = crw_session_create_slot(s, false, &at, errstr, n)) == 0)
            crw_info("slot.lost=resync: slot %s created at " CRW_LSN_FMT "; the resync reads the tables after it",
                     cf->slot_name, CRW_LSN_ARGS(at));
        if (rc == 0 && accept && (rc = crw_guard_accept(s, at, errstr, n)) == 0)
            crw_info("slot.lost=resync: slot %s accepted at " CRW_LSN_FMT, cf->slot_name, CRW_LSN_ARGS(at));
    }
    crw_session_free(s);
    return rc;
}
