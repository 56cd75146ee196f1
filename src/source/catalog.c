/*
 * catalog.c — catalog look-ups over the source's SQL session (see catalog.h).
 */
#include "source/catalog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "source/session.h"

struct crw_catalog {
    PGconn *sql;
    crw_relcache_t *rels;
};

crw_catalog_t *crw_catalog_new(crw_relcache_t *rels) {
    crw_catalog_t *cat = crw_calloc(1, sizeof *cat);
    cat->rels = rels;
    return cat;
}

void crw_catalog_destroy(crw_catalog_t *cat) { free(cat); }

void crw_catalog_set_conn(crw_catalog_t *cat, PGconn *sql) { cat->sql = sql; }

/* Runs a one-OID-parameter query. */
static PGresult *by_oid(crw_catalog_t *cat, const char *sql, uint32_t oid) {
    char oidbuf[16];
    snprintf(oidbuf, sizeof oidbuf, "%u", oid);
    const char *p[1] = {oidbuf};
    return PQexecParams(cat->sql, sql, 1, NULL, p, NULL, NULL, 0);
}

int crw_catalog_type(void *opaque, uint32_t oid, crw_pgtype_row_t *row) {
    crw_catalog_t *cat = opaque;
    if (!cat->sql)
        return -1;
    PGresult *res = by_oid(cat, "SELECT typtype, typbasetype, typelem, typcategory, typdelim FROM pg_type WHERE oid = $1::oid",
                           oid);
    int rc = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        row->oid = oid;
        row->typtype = PQgetvalue(res, 0, 0)[0];
        row->typbasetype = (uint32_t)strtoul(PQgetvalue(res, 0, 1), NULL, 10);
        row->typelem = (uint32_t)strtoul(PQgetvalue(res, 0, 2), NULL, 10);
        row->typcategory = PQgetvalue(res, 0, 3)[0];
        row->typdelim = PQgetvalue(res, 0, 4)[0];
        rc = 0;
    } else
        crw_warn("type %u: catalog look-up failed: %s", oid, PQerrorMessage(cat->sql));
    PQclear(res);
    return rc;
}

int crw_catalog_primary_key(crw_catalog_t *cat, uint32_t relid, crw_strlist_t *out) {
    crw_strlist_clear(out);
    if (!cat->sql)
        return -1;
    PGresult *res = by_oid(cat,
                           "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND "
                           "a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::oid AND i.indisprimary "
                           "ORDER BY array_position(i.indkey::int2[], a.attnum)",
                           relid);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        crw_warn("primary key of relation %u: %s", relid, PQerrorMessage(cat->sql));
        PQclear(res);
        return -1;
    }
    for (int i = 0; i < PQntuples(res); i++)
        crw_strlist_add(out, PQgetvalue(res, i, 0));
    PQclear(res);
    return 0;
}

const crw_relation_t *crw_catalog_describe(crw_catalog_t *cat, const char *schema, const char *table, char *errstr,
                                           size_t n) {
    if (!cat->sql) {
        snprintf(errstr, n, "%s.%s: no catalog session", schema, table);
        return NULL;
    }
    const char *p[2] = {schema, table};
    PGresult *res = PQexecParams(cat->sql,
                                 /* flags as pgoutput's Relation message has them: 1 = in the replica identity */
                                 "SELECT c.oid, c.relreplident, a.attname, a.atttypid, a.atttypmod, "
                                 "CASE c.relreplident WHEN 'f' THEN true WHEN 'n' THEN false ELSE EXISTS (SELECT 1 "
                                 "FROM pg_index i WHERE i.indrelid = c.oid AND a.attnum = ANY (i.indkey) AND CASE "
                                 "c.relreplident WHEN 'd' THEN i.indisprimary ELSE i.indisreplident END) END "
                                 "FROM pg_class c "
                                 "JOIN pg_namespace ns ON ns.oid = c.relnamespace JOIN pg_attribute a ON "
                                 "a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' "
                                 "WHERE ns.nspname = $1 AND c.relname = $2 ORDER BY a.attnum",
                                 2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) == 0) {
        const char *m = PQresultStatus(res) == PGRES_TUPLES_OK ? "no such table" : PQerrorMessage(cat->sql);
        snprintf(errstr, n, "cannot describe %s.%s: %.*s", schema, table, (int)strcspn(m, "\n"), m);
        PQclear(res);
        return NULL;
    }
    int natts = PQntuples(res);
    crw_pgo_attr_t *atts = crw_calloc((size_t)natts, sizeof *atts);
    for (int a = 0; a < natts; a++) {
        atts[a].name = PQgetvalue(res, a, 2);
        atts[a].typoid = (uint32_t)strtoul(PQgetvalue(res, a, 3), NULL, 10);
        atts[a].typmod = atoi(PQgetvalue(res, a, 4));
        atts[a].flags = PQgetvalue(res, a, 5)[0] == 't' ? 1 : 0;
    }
    crw_pgo_relation_t m = {(uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10), schema, table,
                            PQgetvalue(res, 0, 1)[0], (uint16_t)natts, atts};
    const crw_relation_t *rel = crw_relcache_update(cat->rels, &m);
    free(atts);
    PQclear(res);
    return rel;
}

typedef struct {
    const crw_relation_t *rel;
    crw_catalog_row_fn fn;
    void *opaque;
    crw_pgo_col_t *cols;
} scan_t;

static int scan_row(void *opaque, const PGresult *res) {
    scan_t *sc = opaque;
    crw_session_cols(res, 0, sc->rel->natts, sc->cols);
    crw_pgo_tuple_t row = {sc->rel->natts, sc->cols};
    return sc->fn(sc->opaque, &row);
}

long crw_catalog_scan(crw_catalog_t *cat, const crw_relation_t *rel, crw_catalog_row_fn fn, void *opaque,
                      char *errstr, size_t n) {
    PGconn *c = cat->sql;
    if (!c) {
        snprintf(errstr, n, "%s.%s: no catalog session", rel->nspname, rel->relname);
        return -1;
    }
    crw_buf_t sql = CRW_BUF_INIT;
    crw_buf_puts(&sql, "SELECT ");
    for (int i = 0; i < rel->natts; i++) {
        char *q = PQescapeIdentifier(c, rel->atts[i].name, strlen(rel->atts[i].name));
        crw_buf_printf(&sql, "%s%s", i ? ", " : "", q);
        PQfreemem(q);
    }
    char *ns = PQescapeIdentifier(c, rel->nspname, strlen(rel->nspname));
    char *tb = PQescapeIdentifier(c, rel->relname, strlen(rel->relname));
    crw_buf_printf(&sql, " FROM %s.%s", ns, tb);
    PQfreemem(ns);
    PQfreemem(tb);
    /* Row by row: the read never holds the whole table in memory. */
    char what[300];
    snprintf(what, sizeof what, "reading %s.%s", rel->nspname, rel->relname);
    scan_t sc = {rel, fn, opaque, crw_calloc(rel->natts ? (size_t)rel->natts : 1, sizeof(crw_pgo_col_t))};
    long rc = crw_session_rows(c, sql.data, 0, NULL, scan_row, &sc, what, errstr, n);
    crw_buf_free(&sql);
    free(sc.cols);
    return rc;
}
