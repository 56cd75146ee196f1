/*
 * test_crosscheck.c — crwatch's typed values against an independent
 * rendering of the same WAL: wal2json (format-version 2) reading a second
 * slot created at the same point.  Each column of each change must agree
 * once wal2json's text forms are normalised the way docs/events.md ("Values") says
 * (timestamps to ISO 8601 UTC, bytea to base64, BC years to astronomical).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/itest.h"

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Hex bytes ("00ff", or "\\x00ff") -> base64, as crwatch should print them. */
static void hex_to_base64(const char *hex, char *out) {
    unsigned char bytes[256];
    size_t n = 0;
    if (hex[0] == '\\' && hex[1] == 'x')
        hex += 2;
    for (const char *p = hex; p[0] && p[1]; p += 2) {
        unsigned v;
        sscanf(p, "%2x", &v);
        bytes[n++] = (unsigned char)v;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)bytes[i] << 16 | (i + 1 < n ? (unsigned)bytes[i + 1] << 8 : 0) |
                     (i + 2 < n ? bytes[i + 2] : 0);
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = i + 1 < n ? b64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? b64[v & 63] : '=';
    }
    out[o] = '\0';
}

/* wal2json's text form of a date/time value, normalised to crwatch's. */
static void normalise_time(const char *type, const char *in, char *out, size_t n) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s", in);
    bool bc = strstr(buf, " BC") != NULL;
    if (bc)
        *strstr(buf, " BC") = '\0';
    char *sp = strchr(buf, ' ');
    if (sp)
        *sp = 'T';
    size_t len = strlen(buf);
    if (!strcmp(type, "timestamp with time zone") && len > 3 && !strcmp(buf + len - 3, "+00"))
        strcpy(buf + len - 3, "Z");
    if (bc) {
        int year = atoi(buf); /* N BC is astronomical year 1-N: 1 BC is 0000, 2 BC is -0001 */
        snprintf(out, n, "%s%04d%s", year > 1 ? "-" : "", year - 1, strchr(buf, '-'));
    } else
        snprintf(out, n, "%s", buf);
}

static void compare_column(json_object *ours, json_object *col, int change) {
    const char *name = json_object_get_string(json_object_object_get(col, "name"));
    const char *type = json_object_get_string(json_object_object_get(col, "type"));
    json_object *theirs = json_object_object_get(col, "value");
    json_object *mine = NULL;
    bool present = json_object_object_get_ex(ours, name, &mine);
    cr_assert(present, "change %d: column %s missing from crwatch's object", change, name);
    bool floaty = !strcmp(type, "numeric") || !strcmp(type, "real") || !strcmp(type, "double precision");
    if (!theirs) {
        /* wal2json writes NaN and +-Infinity as null; crwatch keeps them as strings. */
        const char *m = mine && json_object_is_type(mine, json_type_string) ? json_object_get_string(mine) : "";
        cr_assert(!mine || (floaty && (!strcmp(m, "NaN") || !strcmp(m, "Infinity") || !strcmp(m, "-Infinity"))),
                  "change %d: %s should be null, is %s", change, name, json_object_to_json_string(mine));
        return;
    }
    const char *t = json_object_get_string(theirs);
    const char *m = json_object_get_string(mine);
    char want[512];
    if (json_object_is_type(theirs, json_type_boolean) || json_object_is_type(theirs, json_type_int)) {
        cr_assert_str_eq(json_object_to_json_string(mine), json_object_to_json_string(theirs), "change %d: %s (%s)",
                         change, name, type);
        return;
    }
    if (!strcmp(type, "numeric")) {
        /* json-c keeps a parsed number's original text: compare digit for digit. */
        cr_assert(json_object_is_type(mine, json_type_string), "change %d: numeric %s must be a string", change, name);
        cr_assert_str_eq(m, json_object_to_json_string(theirs), "change %d: %s", change, name);
        return;
    }
    if (!strcmp(type, "bytea"))
        hex_to_base64(t, want);
    else if (!strncmp(type, "timestamp", 9) || !strcmp(type, "date"))
        normalise_time(type, t, want, sizeof want);
    else if (!strcmp(type, "json") || !strcmp(type, "jsonb")) {
        json_object *parsed = json_tokener_parse(t);
        cr_assert(json_object_equal(parsed, mine), "change %d: %s: wal2json %s, crwatch %s", change, name, t,
                  json_object_to_json_string(mine));
        json_object_put(parsed);
        return;
    } else if (!strcmp(type, "real") || !strcmp(type, "double precision")) {
        /* wal2json prints floats as numbers; crwatch too, except NaN/Infinity as strings. */
        cr_assert(strtod(t, NULL) == json_object_get_double(mine) || !strcmp(t, m), "change %d: %s: %s vs %s",
                  change, name, t, m);
        return;
    } else
        snprintf(want, sizeof want, "%s", t);
    cr_assert(json_object_is_type(mine, json_type_string), "change %d: %s (%s) should be a string, is %s", change,
              name, type, json_object_to_json_string(mine));
    cr_assert_str_eq(m, want, "change %d: %s (%s): wal2json '%s' -> want '%s', crwatch '%s'", change, name, type, t,
                     want, m);
}

Test(crosscheck, typed_values_agree_with_wal2json) {
    char db[64];
    PGconn *c = it_db_create("xcheck", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int8 PRIMARY KEY, i2 int2, i4 int4, f4 float4, f8 float8, n numeric, b bool,"
               " tx text, vc varchar(20), u uuid, j json, jb jsonb, by bytea, d date, tm time, ts timestamp,"
               " tstz timestamptz, iv interval)");
    /* Both slots start at the same WAL position: created back to back before
     * any change, and after the publication (pgoutput reads it as of each change). */
    it_exec(c, "CREATE PUBLICATION crwatch FOR TABLE t");
    it_exec(c, "SELECT pg_create_logical_replication_slot('%s', 'pgoutput')", db);
    it_exec(c, "SELECT pg_create_logical_replication_slot('%s_w2j', 'wal2json')", db);
    it_exec(c, "INSERT INTO t VALUES"
               " (1, 1, -2147483648, 1.5, 3.141592653589793, 123456789012345678901234567890.123456789, true,"
               "  E'tab\\there \"q\" \\\\ é', 'v', '6ecd8c99-4036-403d-bf84-cf8400f67836', '[1, {\"a\": null}]',"
               "  '{\"k\": [true, 1.50]}', '\\xdeadbeef00', '2024-02-29', '12:34:56.789', '2000-01-01 00:00:00',"
               "  '1999-12-31 23:59:59.999999-08', '3 days 04:00:00'),"
               " (2, NULL, 0, '-Infinity', 'NaN', 'NaN', false, '', NULL, NULL, 'null', '\"s\"', '\\x',"
               "  '0001-01-01 BC', '00:00', '0100-06-15 12:00:00 BC', 'infinity', '-1 mons')");
    it_exec(c, "UPDATE t SET tx = 'changed', n = n * 2, tstz = '2026-11-24 10:00:00+05:30' WHERE id = 1");
    char *endpos = it_query_value(c, "SELECT pg_current_wal_lsn()");

    char slot[128];
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    const char *args[] = {"stream", "-X", "tables=public.t", "-X", slot, "--endpos", endpos, NULL};
    char *out = NULL, *err = NULL;
    int rc = it_run_crwatch(db, args, 30000, &out, &err);
    cr_assert_eq(rc, 0, "crwatch exit %d: %s", rc, err);

    it_exec(c, "SET datestyle = ISO; SET intervalstyle = iso_8601; SET timezone = UTC; SET extra_float_digits = 3");
    PGresult *res = it_query(c,
                             "SELECT data FROM pg_logical_slot_get_changes('%s_w2j', '%s', NULL, 'format-version', "
                             "'2', 'include-types', 'true') "
                             "WHERE data::jsonb->>'action' IN ('I','U','D')",
                             db, endpos);
    int nchanges = PQntuples(res);
    cr_assert_eq(nchanges, 3, "wal2json saw %d changes", nchanges);

    char *line = out;
    for (int i = 0; i < nchanges; i++) {
        char *nl = strchr(line, '\n');
        cr_assert(nl, "crwatch emitted fewer than %d events:\n%s", nchanges, out);
        *nl = '\0';
        json_object *ev = json_tokener_parse(line);
        json_object *w = json_tokener_parse(PQgetvalue(res, i, 0));
        cr_assert(ev && w);
        json_object *cols = json_object_object_get(w, "columns");
        cr_assert(cols, "wal2json change without columns: %s", PQgetvalue(res, i, 0));
        json_object *obj = it_json_get(ev, "data.object");
        for (size_t k = 0; k < json_object_array_length(cols); k++)
            compare_column(obj, json_object_array_get_idx(cols, k), i + 1);
        json_object_put(ev);
        json_object_put(w);
        line = nl + 1;
    }
    cr_assert_str_eq(line, "", "crwatch emitted more events than wal2json saw");
    PQclear(res);
    free(out);
    free(err);
    free(endpos);
    PQfinish(c);
    it_db_drop(NULL, db);
}
