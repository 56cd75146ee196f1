/*
 * slotguard.c — the mark, the heartbeat and the slot status of the logical
 * source (slotguard.h; docs/operations.md, "Slot safety").
 */
#include "source/slotguard.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "core/metrics.h"

enum { Q_NONE, Q_STATUS, Q_SAVE, Q_HEARTBEAT, Q_HEARTBEAT_MARK };

/* The lock session when there is one (the stream), else the SQL session (check, slot). */
#define OPS(s) ((s)->ops ? (s)->ops : (s)->sql)

#define MARK_UPSERT                                                                                                    \
    "INSERT INTO crwatch.offsets AS o (name, position, system_identifier, timeline) "                                 \
    "VALUES ($1, $2::bigint, $3, $4::integer) ON CONFLICT (name) DO UPDATE SET position = excluded.position, "        \
    "system_identifier = excluded.system_identifier, timeline = excluded.timeline, updated_at = now()"

void crw_guard_init(crw_guard_t *g, const crw_config_t *conf) {
    memset(g, 0, sizeof *g);
    g->conf = conf;
    g->timeout_us = (int64_t)conf->heartbeat_timeout_ms * 1000;
}

void crw_guard_reset(crw_guard_t *g) {
    g->pending = Q_NONE;
    g->hb_waiting = 0;
    g->hb_paused_until_us = 0;
    g->ask_us = 0;
    g->last_activity_us = g->last_frame_us = crw_clock_mono_us();
}

static void mark_name(const crw_guard_t *g, char *buf, size_t n) { snprintf(buf, n, "logical:%s", g->conf->slot_name); }

/* The fix the gap messages end with. */
#define GAP_FIX                                                                                                        \
    "crwatch does not stream over a gap: run crwatch resync to correct the sinks and start again with "             \
    "slot.lost=resync (it resyncs and goes on by itself), or crwatch slot drop to start over (snapshot.mode=initial "  \
    "re-reads every row)"

int crw_guard_start(crw_guard_t *g, crw_session_t *s, uint64_t start, bool missing, char *errstr, size_t n) {
    crw_guard_reset(g);
    g->had_mark = false;
    g->timeout_us = g->timeout_us ? g->timeout_us : (int64_t)g->conf->heartbeat_timeout_ms * 1000;
    const char *slot = g->conf->slot_name;
    PGresult *res = PQexecParams(OPS(s),
                                 "SELECT o.position, o.system_identifier, o.timeline, "
                                 "(SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1::text), "
                                 "pg_current_wal_lsn(), has_table_privilege('crwatch.offsets', 'INSERT, UPDATE') "
                                 "FROM (SELECT 1) one LEFT JOIN crwatch.offsets o ON o.name = 'logical:' || $1::text",
                                 1, NULL, (const char *const[]){slot}, NULL, NULL, 0);
    /* Read-only to this role, it is not used: a position that cannot be kept up to date raises false gaps. */
    bool readable = PQresultStatus(res) == PGRES_TUPLES_OK, writable = readable && !strcmp(PQgetvalue(res, 0, 5), "t");
    if (!writable) {
        if (PQstatus(OPS(s)) != CONNECTION_OK) {
            int rc = crw_session_error(OPS(s), res, "reading crwatch.offsets", errstr, n);
            PQclear(res);
            return rc;
        }
        const char *why = readable ? "no INSERT, UPDATE on it" : PQresultErrorMessage(res);
        if (!g->store_checked)
            crw_warn("slot safety: crwatch cannot keep what it confirmed in crwatch.offsets (%.*s): a slot "
                     "dropped and created again while crwatch is stopped cannot be told from a new one "
                     "(apply sql/crwatch.sql, and grant the role crwatch.create_role's rights)",
                     (int)strcspn(why, "\n"), why);
        PQclear(res);
        g->store = false;
        g->store_checked = true;
    } else {
        g->store = g->store_checked = true;
        g->saved = start;
        g->saving = 0;
        if (!PQgetisnull(res, 0, 1)) {
            uint64_t mark = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
            const char *sysid = PQgetvalue(res, 0, 1);
            uint32_t tli = (uint32_t)strtoul(PQgetvalue(res, 0, 2), NULL, 10);
            char ms[32], ss[32];
            snprintf(ms, sizeof ms, CRW_LSN_FMT, CRW_LSN_ARGS(mark));
            snprintf(ss, sizeof ss, CRW_LSN_FMT, CRW_LSN_ARGS(start));
            int rc = 0;
            if (s->sysid && strcmp(sysid, s->sysid)) {
                snprintf(errstr, n,
                         "slot %s: crwatch last confirmed %s on database system %s, but this server is system %s "
                         "(another cluster: restored or initialised again); what changed in between is unknown. "
                         GAP_FIX,
                         slot, ms, sysid, s->sysid);
                rc = CRW_ERR_SLOT_LOST;
            } else if (missing) {
                snprintf(errstr, n,
                         "slot %s is gone (dropped, or this server took over without it); crwatch last confirmed %s "
                         "(timeline %u): the changes from %s to %s (now) were never streamed. " GAP_FIX,
                         slot, ms, tli, ms, PQgetvalue(res, 0, 4));
                rc = CRW_ERR_SLOT_LOST;
            } else if (!PQgetisnull(res, 0, 3) && !strcmp(PQgetvalue(res, 0, 3), "lost")) {
                snprintf(errstr, n,
                         "slot %s was invalidated (wal_status lost: the WAL it needed was removed, "
                         "max_slot_wal_keep_size); crwatch last confirmed %s: the changes after it cannot be "
                         "streamed. " GAP_FIX,
                         slot, ms);
                rc = CRW_ERR_SLOT_LOST;
            } else if (start > mark) {
                snprintf(errstr, n,
                         "slot %s starts at %s, but crwatch last confirmed %s: the slot was dropped and created "
                         "again while crwatch was away, and the changes from %s to %s were never streamed. " GAP_FIX,
                         slot, ss, ms, ms, ss);
                rc = CRW_ERR_SLOT_LOST;
            } else {
                g->had_mark = true;
                if (tli != s->timeline)
                    crw_info("slot %s: the server's timeline is %u, crwatch last confirmed %s on timeline %u (a "
                             "failover); the slot is at %s, at or before it: going on",
                             slot, s->timeline, ms, tli, ss);
                g->saved = mark;
            }
            PQclear(res);
            return rc;
        }
        PQclear(res);
        /* Nothing stored (a first start), or a row this role cannot see (row-level security: another role's):
         * store the slot's position now, so that a store that can never succeed is known before streaming. */
        char why[512];
        if (!missing && !g->check_only && crw_guard_accept(s, start, why, sizeof why) < 0) {
            if (PQstatus(OPS(s)) != CONNECTION_OK) {
                snprintf(errstr, n, "storing the position in crwatch.offsets: %s", why);
                return CRW_ERR_CONN;
            }
            crw_warn("slot safety: crwatch cannot store what it confirms in crwatch.offsets (%s): a slot dropped and "
                     "created again while crwatch is stopped cannot be told from a new one",
                     why);
            g->store = false;
        } else {
            g->saved = missing ? 0 : start; /* a slot created next: stored at once */
            g->last_mark_us = 0;
        }
    }
    if (!missing) { /* the stored mark is not the only check: an invalidated slot never streams */
        const char *q[1] = {slot};
        PGresult *w;
        int rc = crw_session_query(OPS(s), &w, errstr, n,
                                   "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", 1, q);
        if (rc < 0)
            return rc;
        bool lost = PQntuples(w) == 1 && !PQgetisnull(w, 0, 0) && !strcmp(PQgetvalue(w, 0, 0), "lost");
        PQclear(w);
        if (lost) {
            snprintf(errstr, n,
                     "slot %s was invalidated (wal_status lost: the WAL it needed was removed, max_slot_wal_keep_size): "
                     "the changes it held back cannot be streamed. " GAP_FIX,
                     slot);
            return CRW_ERR_SLOT_LOST;
        }
    }
    return 0;
}

uint64_t crw_guard_flush(const crw_guard_t *g, uint64_t confirmed) {
    return g->store && g->saved < confirmed ? g->saved : confirmed;
}

static int send_query(crw_guard_t *g, crw_session_t *s, int kind, const char *sql, int np, const char *const *p,
                      char *errstr, size_t n) {
    if (!PQsendQueryParams(OPS(s), sql, np, NULL, p, NULL, NULL, 0)) {
        crw_session_error(OPS(s), NULL, "the slot's lock session", errstr, n);
        return CRW_ERR_CONN;
    }
    g->pending = kind;
    return 0;
}

/* The slot status row: retained WAL, safe WAL and wal_status. */
static int status_result(crw_guard_t *g, const PGresult *res, char *errstr, size_t n) {
    const char *slot = g->conf->slot_name;
    if (PQntuples(res) != 1) {
        snprintf(errstr, n,
                 "slot %s vanished while crwatch was using it (dropped, or a failover to a server without it): the "
                 "changes after " CRW_LSN_FMT " (what crwatch confirmed) will not be streamed. " GAP_FIX,
                 slot, CRW_LSN_ARGS(g->saved));
        return CRW_ERR_SLOT_LOST;
    }
    const char *status = PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0);
    int64_t retained = PQgetisnull(res, 0, 1) ? 0 : strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    crw_metric_set(CRW_M_SLOT_RETAINED_WAL, retained);
    crw_metric_set(CRW_M_SLOT_SAFE_WAL, PQgetisnull(res, 0, 2) ? -1 : strtoll(PQgetvalue(res, 0, 2), NULL, 10));
    crw_metric_wal_status(status);
    bool over = retained > g->conf->slot_max_retained_bytes;
    if (over && !g->over_limit)
        crw_warn("slot %s retains %" PRId64 " MiB of WAL, above slot.max.retained.bytes (%" PRId64
                 " MiB): the sinks or the stream are behind, and the server's disk fills",
                 slot, retained >> 20, g->conf->slot_max_retained_bytes >> 20);
    else if (!over && g->over_limit)
        crw_info("slot %s retains %" PRId64 " MiB of WAL again, below slot.max.retained.bytes", slot, retained >> 20);
    g->over_limit = over;
    bool unreserved = !strcmp(status, "unreserved");
    if (unreserved && !g->unreserved)
        crw_warn("slot %s: wal_status is unreserved: the WAL it needs is past max_slot_wal_keep_size and will be "
                 "removed at the next checkpoint unless crwatch catches up",
                 slot);
    g->unreserved = unreserved;
    if (!strcmp(status, "lost")) {
        snprintf(errstr, n,
                 "slot %s was invalidated while streaming (wal_status lost: max_slot_wal_keep_size): the changes "
                 "after " CRW_LSN_FMT " (what crwatch confirmed) cannot be streamed. " GAP_FIX,
                 slot, CRW_LSN_ARGS(g->saved));
        return CRW_ERR_SLOT_LOST;
    }
    return 0;
}

int crw_guard_tick(crw_guard_t *g, crw_session_t *s, uint64_t confirmed, char *errstr, size_t n) {
    if (!OPS(s))
        return CRW_ERR_CONN;
    int64_t now = crw_clock_mono_us();
    if (g->pending) {
        if (!PQconsumeInput(OPS(s))) {
            snprintf(errstr, n, "the slot's lock session was lost: %.*s", (int)strcspn(PQerrorMessage(OPS(s)), "\n"),
                     PQerrorMessage(OPS(s)));
            return CRW_ERR_CONN;
        }
        if (PQisBusy(OPS(s)))
            return 0;
        int rc = 0, kind = g->pending;
        g->pending = Q_NONE;
        PGresult *res;
        bool first = true;
        while ((res = PQgetResult(OPS(s)))) {
            if (first && rc == 0) {
                ExecStatusType st = PQresultStatus(res);
                if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
                    char why[512];
                    int e = crw_session_error(OPS(s), res, NULL, why, sizeof why);
                    if (e == CRW_ERR_CONN) {
                        snprintf(errstr, n, "the slot's lock session was lost: %s", why);
                        rc = CRW_ERR_CONN;
                    } else if (kind == Q_SAVE || kind == Q_HEARTBEAT_MARK) {
                        /* Tried again in status.interval.ms; meanwhile the slot is told no more than is stored
                         * (giving up would leave a stored position behind the slot: a false gap later). */
                        if (kind == Q_HEARTBEAT_MARK)
                            g->hb_waiting = 0;
                        crw_warn("slot safety: cannot store the confirmed position in crwatch.offsets (%s); "
                                 "trying again, and the slot stays at " CRW_LSN_FMT " until then",
                                 why, CRW_LSN_ARGS(g->saved));
                    } else if (kind == Q_HEARTBEAT) {
                        crw_warn("heartbeat: pg_logical_emit_message failed (%s); trying again in a minute", why);
                        g->hb_waiting = 0;
                        g->hb_paused_until_us = crw_clock_mono_us() + 60000000;
                    } else {
                        crw_warn("slot status: %s", why);
                    }
                } else if (kind == Q_STATUS) {
                    g->last_status_us = crw_clock_mono_us(); /* from its answer: the others get their turn */
                    rc = status_result(g, res, errstr, n);
                } else {
                    if ((kind == Q_SAVE || kind == Q_HEARTBEAT_MARK) && g->saving > g->saved) {
                        g->saved = g->saving;
                        g->flush_moved = true; /* the source tells the server at once */
                    }
                    if (kind == Q_HEARTBEAT || kind == Q_HEARTBEAT_MARK)
                        crw_metric_add(CRW_M_HEARTBEATS, 1);
                }
            }
            first = false;
            PQclear(res);
        }
        if (rc < 0 || g->pending)
            return rc;
    }

    const crw_config_t *cf = g->conf;
    const char *slot = cf->slot_name;
    int64_t status_us = (int64_t)cf->status_interval_ms * 1000;
    if (now - g->last_status_us >= status_us) {
        g->last_status_us = now;
        const char *p[1] = {slot};
        return send_query(g, s, Q_STATUS,
                          "SELECT wal_status, (pg_current_wal_lsn() - restart_lsn)::bigint, safe_wal_size "
                          "FROM pg_replication_slots WHERE slot_name = $1",
                          1, p, errstr, n);
    }
    /* The slot is told no more than is stored: store soon (at most once a second), or a take-over by a standby
     * sends again everything since the last store. */
    int64_t mark_us = status_us < 1000000 ? status_us : 1000000;
    bool mark_due = g->store && confirmed > g->saved && (!g->last_mark_us || now - g->last_mark_us >= mark_us);
    bool hb_due = cf->heartbeat_interval_ms > 0 && !g->hb_waiting && now >= g->hb_paused_until_us &&
                  now - g->last_activity_us >= (int64_t)cf->heartbeat_interval_ms * 1000;
    char name[128], pos[32], tli[16], content[160];
    mark_name(g, name, sizeof name);
    snprintf(pos, sizeof pos, "%" PRIu64, confirmed);
    snprintf(tli, sizeof tli, "%u", s->timeline);
    snprintf(content, sizeof content, "%s:%" PRIu64, slot, g->hb_seq + 1);
    const char *p[6] = {name, pos, s->sysid ? s->sysid : "", tli, CRW_HEARTBEAT_PREFIX, content};
    if (hb_due) {
        /* With the position to store, in the same transaction: an idle stream writes one per interval. */
        bool with_mark = g->store && confirmed > g->saved;
        int rc = with_mark ? send_query(g, s, Q_HEARTBEAT_MARK,
                                        "WITH m AS (" MARK_UPSERT " RETURNING 1) SELECT pg_logical_emit_message(true, "
                                        "$5, $6) FROM (SELECT 1) one LEFT JOIN m ON true",
                                        6, p, errstr, n)
                           : send_query(g, s, Q_HEARTBEAT, "SELECT pg_logical_emit_message(true, $1, $2)", 2, p + 4,
                                        errstr, n);
        if (rc == 0) {
            if (with_mark) {
                g->saving = confirmed;
                g->last_mark_us = now;
            }
            g->hb_waiting = ++g->hb_seq;
            g->hb_sent_us = now;
            g->ask_us = 0;
            crw_debug("heartbeat %" PRIu64 " written", g->hb_waiting);
        }
        return rc;
    }
    if (mark_due) {
        g->last_mark_us = now;
        g->saving = confirmed;
        return send_query(g, s, Q_SAVE, MARK_UPSERT, 4, p, errstr, n);
    }
    return 0;
}

int crw_guard_save(crw_guard_t *g, crw_session_t *s, uint64_t confirmed) {
    if (!g->store || !OPS(s) || confirmed <= g->saved)
        return 0;
    PGresult *res;
    while (g->pending && (res = PQgetResult(OPS(s)))) /* the query in flight first */
        PQclear(res);
    g->pending = Q_NONE;
    char why[512];
    int rc = crw_guard_accept(s, confirmed, why, sizeof why);
    if (rc < 0) {
        crw_warn("slot safety: cannot store the final position in crwatch.offsets: %s", why);
        return rc;
    }
    g->saved = confirmed;
    return 0;
}

void crw_guard_frame(crw_guard_t *g) { g->last_frame_us = crw_clock_mono_us(); }
void crw_guard_activity(crw_guard_t *g) { g->last_activity_us = crw_clock_mono_us(); }

bool crw_guard_heartbeat_back(crw_guard_t *g, const char *content, size_t len, int64_t commit_time) {
    size_t sl = strlen(g->conf->slot_name);
    if (len <= sl + 1 || strncmp(content, g->conf->slot_name, sl) || content[sl] != ':')
        return false; /* another crwatch's */
    char num[24];
    snprintf(num, sizeof num, "%.*s", (int)(len - sl - 1 < sizeof num - 1 ? len - sl - 1 : sizeof num - 1),
             content + sl + 1);
    uint64_t seq = strtoull(num, NULL, 10);
    if (!seq || seq != g->hb_waiting)
        return false; /* an earlier connection's, sent again */
    int64_t lag = crw_clock_pg_us() - commit_time;
    crw_metric_set(CRW_M_SOURCE_LAG_US, lag > 0 ? lag : 0);
    crw_debug("heartbeat %" PRIu64 " back: %.1f ms after its commit", seq, (double)lag / 1000.0);
    g->hb_waiting = 0;
    g->last_activity_us = crw_clock_mono_us(); /* the next one in an interval, even before its commit is read */
    g->timeout_us = (int64_t)g->conf->heartbeat_timeout_ms * 1000; /* the stream is well: the bound is reset */
    return true;
}

int crw_guard_silence(crw_guard_t *g, bool *ask, char *errstr, size_t n) {
    *ask = false;
    if (!g->hb_waiting)
        return 0;
    int64_t now = crw_clock_mono_us(), half = g->timeout_us / 2;
    if (!g->ask_us || (g->last_frame_us > g->ask_us && now - g->ask_us >= half)) {
        if (g->ask_us && now - g->hb_sent_us >= g->timeout_us) {
            /* The server answers, the heartbeat is not back: it is busy (a large transaction), or its messages
             * do not reach this stream (protocol 1).  Alive; the next heartbeat comes in its turn. */
            crw_debug("heartbeat %" PRIu64 " late: the server answers, the message has not come back",
                      g->hb_waiting);
            g->hb_waiting = 0;
            return 0;
        }
        if (now - g->hb_sent_us >= half) {
            *ask = true;
            g->ask_us = now;
        }
        return 0;
    }
    if (g->last_frame_us <= g->ask_us && now - g->ask_us >= half && now - g->hb_sent_us >= g->timeout_us) {
        crw_metric_add(CRW_M_STALLS, 1);
        snprintf(errstr, n,
                 "replication stalled: heartbeat %" PRIu64 " written %" PRId64 " ms ago has not come back, and the "
                 "server has not answered for %" PRId64 " ms; rebuilding the connection",
                 g->hb_waiting, (now - g->hb_sent_us) / 1000, (now - g->last_frame_us) / 1000);
        g->hb_waiting = 0;
        int64_t cap = (int64_t)g->conf->heartbeat_timeout_ms * 1000 * 64;
        g->timeout_us = g->timeout_us * 2 > cap ? cap : g->timeout_us * 2; /* a slow server gets its time */
        return CRW_ERR_CONN;
    }
    return 0;
}

int crw_guard_accept(crw_session_t *s, uint64_t position, char *errstr, size_t n) {
    char name[128], pos[32], tli[16];
    snprintf(name, sizeof name, "logical:%s", s->conf->slot_name);
    snprintf(pos, sizeof pos, "%" PRIu64, position);
    snprintf(tli, sizeof tli, "%u", s->timeline);
    const char *p[4] = {name, pos, s->sysid ? s->sysid : "", tli};
    PGresult *res;
    int rc = crw_session_query(OPS(s), &res, errstr, n, MARK_UPSERT, 4, p);
    if (rc == 0)
        PQclear(res);
    return rc;
}

bool crw_guard_forget(crw_session_t *s) {
    char name[128];
    snprintf(name, sizeof name, "logical:%s", s->conf->slot_name);
    const char *p[1] = {name};
    PGresult *res = PQexecParams(OPS(s),
                                 "UPDATE crwatch.offsets SET system_identifier = NULL, updated_at = now() "
                                 "WHERE name = $1 AND system_identifier IS NOT NULL",
                                 1, NULL, p, NULL, NULL, 0);
    bool forgot = PQresultStatus(res) == PGRES_COMMAND_OK && strcmp(PQcmdTuples(res), "0");
    PQclear(res);
    return forgot;
}
