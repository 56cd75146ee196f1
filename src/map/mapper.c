/*
 * mapper.c — the mapper's front (see mapper.h): the transaction context,
 * the format chosen once, the records of one change, and the raw form of a
 * change for dead letters.
 */
#include "map/mapper.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "map/cloudevents.h"
#include "map/debezium.h"
#include "map/value.h"

struct crw_mapper {
    crw_format_t format;
    const char *debezium_name;
    crw_ce_t *ce;
    crw_buf_t value[CRW_MAPPED_MAX], key[CRW_MAPPED_MAX];
    char id[CRW_LSN_BUFSIZE + 24]; /* the change's event id: every record of it shares it */
    int64_t time;                  /* the last change's own time, and as text (crw_txn_ctx_t.time_str) */
    char time_str[40];
    size_t idlen;
};

void crw_txn_init(crw_txn_ctx_t *tx, uint64_t commit_lsn, uint32_t xid, int64_t commit_time) {
    tx->position = commit_lsn;
    tx->commit_lsn = commit_lsn;
    tx->xid = xid;
    tx->commit_time = commit_time;
    tx->ordinal = 0;
    crw_clock_format_iso(tx->time_str, sizeof tx->time_str, commit_time + CRW_PG_EPOCH_OFFSET_US);
    crw_lsn_format(tx->lsn_str, commit_lsn);
}

crw_mapper_t *crw_mapper_new(const crw_config_t *conf, crw_cache_t *cache) {
    crw_mapper_t *mp = crw_calloc(1, sizeof *mp);
    mp->format = conf->event_format;
    mp->debezium_name = conf->debezium_name;
    mp->ce = crw_ce_new(cache, conf->event_patch);
    return mp;
}

void crw_mapper_destroy(crw_mapper_t *mp) {
    if (!mp)
        return;
    crw_ce_destroy(mp->ce);
    for (int i = 0; i < CRW_MAPPED_MAX; i++) {
        crw_buf_free(&mp->value[i]);
        crw_buf_free(&mp->key[i]);
    }
    crw_value_thread_cleanup(); /* the array scratch of value.c, which both formats use */
    free(mp);
}

/* The change's event id: its own (a polled row's), else "<commit LSN>/<ordinal>", built by hand (every event). */
static void make_id(crw_mapper_t *mp, const crw_change_t *ch, const crw_txn_ctx_t *tx) {
    if (ch->id) {
        mp->idlen = ch->idlen < sizeof mp->id - 1 ? ch->idlen : sizeof mp->id - 1;
        memcpy(mp->id, ch->id, mp->idlen);
        mp->id[mp->idlen] = '\0';
        return;
    }
    size_t n = strlen(tx->lsn_str);
    memcpy(mp->id, tx->lsn_str, n);
    mp->id[n++] = '/';
    mp->idlen = n + crw_u64_format(mp->id + n, tx->ordinal);
}

/* The next record of out, with what every record of the change shares. */
static crw_event_t *record(crw_mapper_t *mp, crw_mapped_t *out, const crw_relinfo_t *ri, const crw_txn_ctx_t *tx,
                           const char *type) {
    int i = out->n++;
    crw_event_t *ev = &out->ev[i];
    *ev = (crw_event_t){.position = tx->position,
                        .lsn = tx->commit_lsn,
                        .ordinal = tx->ordinal,
                        .id = mp->id,
                        .idlen = mp->idlen,
                        .xid = tx->xid,
                        .type = type,
                        .kind = ri->variants[0].kind,
                        .schema = ri->rel->nspname,
                        .table = ri->rel->relname,
                        .source = ri->source};
    return ev;
}

/* Points ev at its value and key (value NULL: a tombstone of that key). */
static void attach(crw_event_t *ev, const crw_buf_t *value, const crw_buf_t *key) {
    ev->key = key->data ? key->data : "";
    ev->keylen = key->len;
    ev->value = value ? (value->data ? value->data : "") : NULL;
    ev->len = value ? value->len : 0;
}

static int debezium(crw_mapper_t *mp, const crw_relinfo_t *ri, const crw_change_t *ch, const crw_txn_ctx_t *tx,
                    crw_mapped_t *out, char *errstr, size_t n) {
    crw_dbz_source_t src = {ri->dbname, mp->debezium_name, ch->lsn, tx->last_end, 0};
    int rc;
    if (ch->op == CRW_OP_TRUNCATE) {
        crw_event_t *ev = record(mp, out, ri, tx, "TRUNCATED");
        crw_debezium_encode_truncate(&mp->value[0], ev, ri, tx, &src);
        crw_buf_reset(&mp->key[0]);
        attach(ev, &mp->value[0], &mp->key[0]);
        return 0;
    }
    if (ch->op == CRW_OP_READ) {
        /* A snapshot read: "r", at the snapshot's position, read by the snapshot's transaction. */
        crw_event_t *ev = record(mp, out, ri, tx, "SYNC");
        crw_dbz_source_t rs = src;
        rs.lsn = tx->commit_lsn;
        crw_dbz_read_t rd = {tx->xid, tx->commit_time ? tx->commit_time + CRW_PG_EPOCH_OFFSET_US : 0,
                             CRW_DBZ_SNAPSHOT_TRUE};
        if ((rc = crw_debezium_encode_read(&mp->value[0], &mp->key[0], ev, ri, ch->newtup, &rs, &rd, errstr, n)) < 0)
            return rc;
        attach(ev, &mp->value[0], &mp->key[0]);
        return 0;
    }
    if (crw_debezium_key_changed(ri, ch)) {
        /* Debezium's key change: a delete and its tombstone under the old key, a create under the new. */
        crw_event_t *del = record(mp, out, ri, tx, "DELETED");
        crw_event_t *tomb = record(mp, out, ri, tx, "DELETED");
        crw_event_t *add = record(mp, out, ri, tx, "ADDED");
        if ((rc = crw_debezium_encode_key_change(&mp->value[0], &mp->key[0], del, &mp->value[2], &mp->key[2], add, ri,
                                                 ch, tx, &src, errstr, n)) < 0)
            return rc;
        attach(del, &mp->value[0], &mp->key[0]);
        attach(tomb, NULL, &mp->key[0]);
        attach(add, &mp->value[2], &mp->key[2]);
        return 0;
    }
    const char *type = ch->op == CRW_OP_INSERT ? "ADDED" : ch->op == CRW_OP_UPDATE ? "MODIFIED" : "DELETED";
    crw_event_t *ev = record(mp, out, ri, tx, type);
    if ((rc = crw_debezium_encode(&mp->value[0], &mp->key[0], ev, ri, ch, tx, &src, errstr, n)) < 0)
        return rc;
    attach(ev, &mp->value[0], &mp->key[0]);
    if (ch->op == CRW_OP_DELETE) /* Debezium's tombstone: the key again, no value */
        attach(record(mp, out, ri, tx, "DELETED"), NULL, &mp->key[0]);
    return 0;
}

int crw_mapper_change(crw_mapper_t *mp, const crw_relinfo_t *ri, const crw_change_t *ch, const crw_txn_ctx_t *tx,
                      crw_mapped_t *out, char *errstr, size_t n) {
    out->n = 0;
    crw_txn_ctx_t own; /* a change with its own writer and time (a poll batch is one transaction of many writers) */
    if (ch->xid || ch->time) {
        own = *tx;
        own.xid = ch->xid ? ch->xid : tx->xid;
        if (ch->time && ch->time != tx->commit_time) {
            own.commit_time = ch->time;
            if (ch->time != mp->time) { /* many changes of a poll share their writer's time */
                mp->time = ch->time;
                crw_clock_format_iso(mp->time_str, sizeof mp->time_str, ch->time + CRW_PG_EPOCH_OFFSET_US);
            }
            memcpy(own.time_str, mp->time_str, sizeof own.time_str);
        }
        tx = &own;
    }
    make_id(mp, ch, tx);
    if (mp->format == CRW_FORMAT_DEBEZIUM) {
        int rc = debezium(mp, ri, ch, tx, out, errstr, n);
        if (rc < 0)
            out->n = 0;
        return rc;
    }
    crw_event_t *ev = record(mp, out, ri, tx, NULL);
    if (ch->op == CRW_OP_TRUNCATE) {
        crw_ce_truncate(mp->ce, &mp->value[0], ev, ri, tx);
        crw_buf_reset(&mp->key[0]);
    } else {
        int rc = crw_ce_change(mp->ce, &mp->value[0], &mp->key[0], ev, ri, ch, tx, errstr, n);
        if (rc < 0) {
            out->n = 0;
            return rc;
        }
    }
    attach(ev, &mp->value[0], &mp->key[0]);
    return 0;
}

void crw_mapper_trim(crw_mapper_t *mp, crw_mapped_t *out) {
    for (int i = 0; i < CRW_MAPPED_MAX; i++) {
        if (mp->value[i].cap <= CRW_MAPPER_KEEP && mp->key[i].cap <= CRW_MAPPER_KEEP)
            continue;
        crw_buf_free(&mp->value[i]);
        crw_buf_free(&mp->key[i]);
        out->n = 0;
    }
}

void crw_mapper_cache_horizon(crw_mapper_t *mp, uint64_t lsn) { crw_ce_cache_horizon(mp->ce, lsn); }

int crw_mapper_seed(crw_mapper_t *mp, const crw_relinfo_t *ri, const crw_pgo_tuple_t *row, char *errstr, size_t n) {
    return crw_ce_seed(mp->ce, ri, row, errstr, n);
}

static void put_raw_tuple(crw_buf_t *out, const crw_relation_t *rel, const crw_pgo_tuple_t *t) {
    crw_buf_putc(out, '{');
    for (int i = 0; i < t->ncols && i < rel->natts; i++) {
        if (i)
            crw_buf_putc(out, ',');
        crw_buf_put_json_str(out, rel->atts[i].name, strlen(rel->atts[i].name));
        crw_buf_putc(out, ':');
        const crw_pgo_col_t *c = &t->cols[i];
        if (c->kind == CRW_PGO_COL_TEXT || c->kind == CRW_PGO_COL_BINARY)
            crw_buf_put_json_str(out, c->data, c->len);
        else if (c->kind == CRW_PGO_COL_UNCHANGED)
            crw_buf_puts(out, "{\"unchanged\":true}");
        else
            crw_buf_puts(out, "null");
    }
    crw_buf_putc(out, '}');
}

void crw_mapper_raw(crw_buf_t *out, const crw_change_t *ch) {
    const crw_relation_t *rel = ch->rel;
    crw_buf_reset(out);
    crw_buf_puts(out, "{\"schema\":");
    crw_buf_put_json_str(out, rel->nspname, strlen(rel->nspname));
    crw_buf_puts(out, ",\"table\":");
    crw_buf_put_json_str(out, rel->relname, strlen(rel->relname));
    const char *op = ch->op == CRW_OP_INSERT   ? "INSERT"
                     : ch->op == CRW_OP_UPDATE ? "UPDATE"
                     : ch->op == CRW_OP_DELETE ? "DELETE"
                     : ch->op == CRW_OP_READ   ? "READ"
                                               : "?";
    crw_buf_printf(out, ",\"op\":\"%s\"", op);
    if (ch->newtup) {
        crw_buf_puts(out, ",\"new\":");
        put_raw_tuple(out, rel, ch->newtup);
    }
    if (ch->oldkind && ch->oldtup) {
        crw_buf_puts(out, ",\"old\":");
        put_raw_tuple(out, rel, ch->oldtup);
    }
    crw_buf_putc(out, '}');
}
