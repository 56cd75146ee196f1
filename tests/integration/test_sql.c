/*
 * test_sql.c — the sql/ convention against a real PostgreSQL: crwatch.sql
 * applied twice changes nothing, the triggers crwatch.manage() installs
 * (resource_version, generation, timestamps, uid, txid, tombstones), the
 * publication helper, the least-privilege role streaming with the real
 * crwatch binary, and the two examples (the demo's lifecycle included).
 *
 * The SQL files are applied the way users apply them: psql -f as a child.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/itest.h"

#define EV_TIMEOUT 15000

static void create_managed(PGconn *c, const char *table) {
    it_exec(c, "CREATE TABLE %s (" IT_CONVENTION_COLUMNS ", PRIMARY KEY (namespace, name))", table);
    it_exec(c, "SELECT crwatch.manage('%s')", table);
}

/*
 * Everything crwatch.sql and manage() create or touch, with OIDs (a dropped
 * and re-created object differs) and the sequence's position (an apply must
 * not consume values): schema crwatch and its functions, relations, columns,
 * defaults, constraints, indexes, triggers, policies, ACLs and comments; the
 * same for every table in public; publication membership.
 */
static char *fingerprint(PGconn *c) {
    it_exec(c, "SET search_path = pg_catalog"); /* every name printed schema-qualified */
    char *fp = it_query_value(
        c,
        "WITH rels AS (SELECT c.oid FROM pg_class c WHERE c.relnamespace IN "
        "  ('crwatch'::regnamespace, 'public'::regnamespace) AND c.relkind IN ('r', 'S', 'i', 'p')) "
        "SELECT string_agg(x, E'\\n' ORDER BY x) FROM ("
        " SELECT format('schema %%s %%s %%s %%s', n.oid, n.nspname, n.nspacl, "
        "        obj_description(n.oid, 'pg_namespace')) FROM pg_namespace n WHERE n.nspname = 'crwatch'"
        " UNION ALL SELECT format('function %%s %%s acl=%%s comment=%%s', p.oid, pg_get_functiondef(p.oid), "
        "        p.proacl, obj_description(p.oid, 'pg_proc')) "
        "   FROM pg_proc p WHERE p.pronamespace = 'crwatch'::regnamespace"
        " UNION ALL SELECT format('rel %%s %%s %%s acl=%%s rls=%%s ident=%%s comment=%%s', c.oid, "
        "        c.oid::regclass, c.relkind, c.relacl, c.relrowsecurity, c.relreplident, "
        "        obj_description(c.oid, 'pg_class')) FROM pg_class c WHERE c.oid IN (SELECT oid FROM rels)"
        " UNION ALL SELECT format('column %%s.%%s %%s notnull=%%s default=%%s acl=%%s', a.attrelid::regclass, "
        "        a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), "
        "        a.attacl) FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid "
        "        AND d.adnum = a.attnum WHERE a.attrelid IN (SELECT oid FROM rels) AND a.attnum > 0 "
        "        AND NOT a.attisdropped"
        " UNION ALL SELECT format('constraint %%s %%s %%s', co.oid, co.conname, pg_get_constraintdef(co.oid)) "
        "   FROM pg_constraint co WHERE co.conrelid IN (SELECT oid FROM rels)"
        " UNION ALL SELECT format('index %%s %%s valid=%%s', i.indexrelid, pg_get_indexdef(i.indexrelid), "
        "        i.indisvalid) FROM pg_index i WHERE i.indrelid IN (SELECT oid FROM rels)"
        " UNION ALL SELECT format('trigger %%s %%s enabled=%%s', t.oid, pg_get_triggerdef(t.oid), t.tgenabled) "
        "   FROM pg_trigger t WHERE NOT t.tgisinternal AND t.tgrelid IN (SELECT oid FROM rels)"
        " UNION ALL SELECT format('policy %%s %%s %%s %%s', po.oid, po.polname, po.polcmd, "
        "        pg_get_expr(po.polqual, po.polrelid)) FROM pg_policy po WHERE po.polrelid IN (SELECT oid FROM rels)"
        " UNION ALL SELECT format('sequence %%s %%s', s.seqrelid::regclass, row(s.*)) FROM pg_sequence s "
        "   WHERE s.seqrelid IN (SELECT oid FROM rels)"
        " UNION ALL SELECT format('resource_version last_value=%%s is_called=%%s', last_value, is_called) "
        "   FROM crwatch.resource_version"
        " UNION ALL SELECT format('publication %%s %%s %%s', p.oid, p.pubname, pr.prrelid::regclass) "
        "   FROM pg_publication p LEFT JOIN pg_publication_rel pr ON pr.prpubid = p.oid"
        ") f(x)");
    it_exec(c, "RESET search_path");
    cr_assert(fp, "empty fingerprint");
    return fp;
}

/* The first line where two fingerprints differ, for the failure message. */
static void assert_same_fingerprint(const char *a, const char *b, const char *what) {
    if (!strcmp(a, b))
        return;
    size_t i = 0, line = 0;
    while (a[i] && a[i] == b[i]) {
        if (a[i] == '\n')
            line = i + 1;
        i++;
    }
    cr_assert_fail("%s changed the catalog; first difference:\n  before: %.300s\n  after:  %.300s", what,
                   a + line, b + line);
}

static long long query_ll(PGconn *c, const char *sql) {
    char *v = it_query_value(c, "%s", sql);
    cr_assert(v, "NULL from %s", sql);
    long long n = atoll(v);
    free(v);
    return n;
}

static void expect_value(PGconn *c, const char *want, const char *sql) {
    char *v = it_query_value(c, "%s", sql);
    cr_assert(v && !strcmp(v, want), "%s: want '%s', got '%s'", sql, want, v ? v : "(null)");
    free(v);
}

/* Runs sql expecting failure with sqlstate; returns the error's DETAIL (malloc'd, may be ""). */
static char *expect_error(PGconn *c, const char *sqlstate, const char *sql) {
    PGresult *r = PQexec(c, sql);
    cr_assert(PQresultStatus(r) == PGRES_FATAL_ERROR, "%s: succeeded, want SQLSTATE %s", sql, sqlstate);
    const char *got = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    cr_assert(got && !strcmp(got, sqlstate), "%s: SQLSTATE %s, want %s: %s", sql, got ? got : "?", sqlstate,
              PQresultErrorMessage(r));
    const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
    char *out = strdup(detail ? detail : "");
    PQclear(r);
    return out;
}

/* A connection as role to db (host/port from the environment). */
static PGconn *connect_as(const char *db, const char *role) {
    char ci[256];
    snprintf(ci, sizeof ci, "dbname='%s' user='%s'", db, role);
    PGconn *c = PQconnectdb(ci);
    cr_assert(PQstatus(c) == CONNECTION_OK, "connect as %s: %s", role, PQerrorMessage(c));
    return c;
}

static void drop_role(const char *role) {
    PGconn *admin = it_connect(NULL);
    it_exec(admin, "DROP ROLE IF EXISTS %s", role);
    PQfinish(admin);
}

/* ---------------------------------------------------------------------- */

Test(sql, applying_crwatch_sql_twice_changes_nothing) {
    char db[64];
    PGconn *c = it_db_create("sqlidem", db, sizeof db);
    it_apply_sql(db, "sql/crwatch.sql");
    create_managed(c, "public.jobs");
    it_exec(c, "CREATE TABLE public.shared (kind text NOT NULL, " IT_CONVENTION_COLUMNS
               ", PRIMARY KEY (kind, namespace, name));"
               "SELECT crwatch.manage('public.shared');"
               "INSERT INTO public.jobs (name, spec) VALUES ('a', '{}');"
               "SELECT crwatch.publish('crwatch', 'public.jobs', 'public.shared')");
    char *before = fingerprint(c);
    /* The fingerprint sees what it must (a test that cannot fail proves nothing). */
    static const char *const must_see[] = {
        "function ",
        "CREATE OR REPLACE FUNCTION crwatch.manage(tbl regclass, txid_index boolean DEFAULT true)",
        "CREATE OR REPLACE FUNCTION crwatch.tg_write()",
        "rel ", "crwatch.tombstones", "rls=t", "policy ", "has_table_privilege",
        "sequence crwatch.resource_version", "resource_version last_value=1 is_called=t",
        "zz_crwatch_write BEFORE INSERT OR UPDATE ON public.jobs FOR EACH ROW EXECUTE FUNCTION crwatch.tg_write()",
        "zz_crwatch_tombstone AFTER DELETE ON public.shared", "zz_crwatch_truncate BEFORE TRUNCATE ON public.jobs",
        "column public.jobs.txid xid8", "(txid)", "publication ",
    };
    for (size_t i = 0; i < sizeof must_see / sizeof must_see[0]; i++)
        cr_assert(strstr(before, must_see[i]), "fingerprint lacks '%s':\n%s", must_see[i], before);

    it_apply_sql(db, "sql/crwatch.sql");
    it_exec(c, "SELECT crwatch.manage('public.jobs'); SELECT crwatch.manage('public.shared')");
    expect_value(c, "0", "SELECT crwatch.publish('crwatch', 'public.jobs', 'public.shared')");
    char *after = fingerprint(c);
    assert_same_fingerprint(before, after, "a second apply of crwatch.sql and manage()");
    it_apply_sql(db, "sql/crwatch.sql");
    free(after);
    after = fingerprint(c);
    assert_same_fingerprint(before, after, "a third apply of crwatch.sql");
    free(after);

    /* The fingerprint notices a disabled trigger, and manage() puts it back as it was. */
    it_exec(c, "ALTER TABLE public.jobs DISABLE TRIGGER zz_crwatch_write");
    expect_value(c, "f", "SELECT crwatch.is_managed('public.jobs')");
    after = fingerprint(c);
    cr_assert_str_neq(before, after, "the fingerprint missed a disabled trigger");
    free(after);
    it_exec(c, "SELECT crwatch.manage('public.jobs')");
    expect_value(c, "t", "SELECT crwatch.is_managed('public.jobs')");
    after = fingerprint(c);
    assert_same_fingerprint(before, after, "manage() after DISABLE TRIGGER");
    free(after);

    /* A hand-altered trigger of crwatch's name is replaced by the real one. */
    it_exec(c, "DROP TRIGGER zz_crwatch_write ON public.jobs;"
               "CREATE TRIGGER zz_crwatch_write AFTER INSERT ON public.jobs FOR EACH ROW "
               "EXECUTE FUNCTION crwatch.tg_tombstone()");
    it_exec(c, "SELECT crwatch.manage('public.jobs')");
    expect_value(c, "t", "SELECT crwatch.is_managed('public.jobs')");
    expect_value(c, "BEFORE INSERT OR UPDATE ON public.jobs FOR EACH ROW EXECUTE FUNCTION crwatch.tg_write()",
                 "SELECT substr(pg_get_triggerdef(oid), length('CREATE TRIGGER zz_crwatch_write ') + 1) "
                 "FROM pg_trigger WHERE tgrelid = 'public.jobs'::regclass AND tgname = 'zz_crwatch_write'");

    free(before);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(sql, txid_index_can_be_skipped_to_keep_status_updates_hot) {
    char db[64];
    PGconn *c = it_db_create("sqlhot", db, sizeof db);
    it_apply_sql(db, "sql/crwatch.sql");
    create_managed(c, "public.indexed");
    it_exec(c, "CREATE TABLE public.plain (" IT_CONVENTION_COLUMNS ", PRIMARY KEY (namespace, name))");
    it_exec(c, "SELECT crwatch.manage('public.plain', txid_index => false)");
    expect_value(c, "indexed:1,plain:0",
                 "SELECT string_agg(t || ':' || (SELECT count(*) FROM pg_indexes "
                 "  WHERE tablename = t AND indexdef LIKE '%(txid)'), ',' ORDER BY t) "
                 "FROM unnest(ARRAY['indexed', 'plain']) t");
    expect_value(c, "t|f",
                 "SELECT concat_ws('|', crwatch.is_managed('public.plain', false), "
                 "crwatch.is_managed('public.plain'))");
    char *before = fingerprint(c);
    it_exec(c, "SELECT crwatch.manage('public.plain', txid_index => false)");
    char *after = fingerprint(c);
    assert_same_fingerprint(before, after, "manage(txid_index => false) twice");
    free(before);
    free(after);

    /* The indexed txid changes on every write, so no UPDATE can be HOT; without the index, a status update is. */
    it_exec(c, "INSERT INTO indexed (name, spec) VALUES ('x', '{}');"
               "INSERT INTO plain (name, spec) VALUES ('x', '{}')");
    it_exec(c, "BEGIN");
    it_exec(c, "UPDATE indexed SET status = '{\"phase\":\"Running\"}';"
               "UPDATE plain SET status = '{\"phase\":\"Running\"}'");
    expect_value(c, "indexed:1/0,plain:1/1",
                 "SELECT string_agg(relname || ':' || n_tup_upd || '/' || n_tup_hot_upd, ',' ORDER BY relname) "
                 "FROM pg_stat_xact_user_tables WHERE relname IN ('indexed', 'plain')");
    it_exec(c, "COMMIT");
    /* Everything else is the same: the triggers did their work on both. */
    expect_value(c, "3|4|t",
                 "SELECT concat_ws('|', (SELECT resource_version FROM indexed), (SELECT resource_version FROM plain), "
                 "(SELECT bool_and(txid IS NOT NULL)::char FROM "
                 " (SELECT txid FROM indexed UNION ALL SELECT txid FROM plain) t))");
    /* manage() with the default adds the index later. */
    it_exec(c, "SELECT crwatch.manage('public.plain')");
    expect_value(c, "t", "SELECT crwatch.is_managed('public.plain')");
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(sql, concurrent_installers_all_succeed_even_inside_a_transaction) {
    char db[64];
    PGconn *c = it_db_create("sqlconc", db, sizeof db);
    /* A migration tool's way: crwatch.sql inside a transaction that goes on after it. */
    char script[] = "/tmp/crwatch-it-sqlconc-XXXXXX.sql";
    int fd = mkstemps(script, 4);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "BEGIN;\n\\i %s/sql/crwatch.sql\nSELECT pg_sleep(1);\nCOMMIT;\n", CRW_SOURCE_DIR);
    fclose(f);
    const char *wrapped[] = {"psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-f", script, NULL};
    it_proc_t *first = it_proc_spawn(it_psql_path(), wrapped);
    /* Wait until it is inside the file's transaction, past the lock. */
    cr_assert(it_wait_sql_true(c, 10000,
                               "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                               "AND query LIKE 'SELECT pg_sleep(1)%%')"),
              "the wrapped installer did not get to its sleep");
    char file[4096];
    snprintf(file, sizeof file, "%s/sql/crwatch.sql", CRW_SOURCE_DIR);
    const char *plain[] = {"psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-f", file, NULL};
    const char *single[] = {"psql", "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", db, "-f", file, NULL};
    it_proc_t *others[4] = {it_proc_spawn(it_psql_path(), plain), it_proc_spawn(it_psql_path(), single),
                            it_proc_spawn(it_psql_path(), plain), it_proc_spawn(it_psql_path(), single)};
    int first_rc = it_proc_wait(first, 30000);
    unlink(script);
    cr_assert_eq(first_rc, 0, "wrapped installer failed");
    for (int i = 0; i < 4; i++) {
        int rc = it_proc_wait(others[i], 30000);
        if (rc != 0)
            it_proc_dump_stderr(others[i]);
        cr_assert_eq(rc, 0, "concurrent installer %d exited %d", i, rc);
        it_proc_free(others[i]);
    }
    it_proc_free(first);
    expect_value(c, "0", "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'");
    expect_value(c, "1", "SELECT count(*) FROM pg_proc WHERE proname = 'manage' "
                         "AND pronamespace = 'crwatch'::regnamespace");
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(sql, upgrade_from_the_first_version_keeps_manage_callable) {
    char db[64];
    PGconn *c = it_db_create("sqlupgrade", db, sizeof db);
    /* The first version's signatures (no txid_index parameter). */
    it_exec(c, "CREATE SCHEMA crwatch;"
               "CREATE FUNCTION crwatch.manage(tbl regclass) RETURNS void LANGUAGE sql AS 'SELECT';"
               "CREATE FUNCTION crwatch.is_managed(tbl regclass) RETURNS boolean LANGUAGE sql AS 'SELECT false'");
    it_apply_sql(db, "sql/crwatch.sql");
    create_managed(c, "public.j"); /* manage('public.j'): not ambiguous */
    expect_value(c, "t", "SELECT crwatch.is_managed('public.j')");
    expect_value(c, "manage(tbl regclass, txid_index boolean DEFAULT true)",
                 "SELECT string_agg(proname || '(' || pg_get_function_arguments(oid) || ')', ',') "
                 "FROM pg_proc WHERE pronamespace = 'crwatch'::regnamespace AND proname = 'manage'");
    expect_value(c, "1", "SELECT count(*) FROM pg_proc WHERE pronamespace = 'crwatch'::regnamespace "
                         "AND proname = 'is_managed'");
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(sql, examples_apply_twice_without_change) {
    char db[64];
    PGconn *c = it_db_create("sqlexidem", db, sizeof db);
    it_apply_sql(db, "sql/examples/video_transcoding_job.sql");
    it_apply_sql(db, "sql/examples/shared_resources.sql");
    char *before = fingerprint(c);
    it_apply_sql(db, "sql/examples/video_transcoding_job.sql");
    it_apply_sql(db, "sql/examples/shared_resources.sql");
    char *after = fingerprint(c);
    assert_same_fingerprint(before, after, "a second apply of the examples");
    expect_value(c, "t", "SELECT crwatch.is_managed('public.video_transcoding_jobs') AND "
                         "crwatch.is_managed('public.resources')");
    expect_value(c, "public.resources,public.video_transcoding_jobs",
                 "SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY tablename) "
                 "FROM pg_publication_tables WHERE pubname = 'crwatch'");
    expect_value(c, "f", "SELECT relreplident FROM pg_class WHERE oid = 'public.video_transcoding_jobs'::regclass");
    expect_value(c, "d", "SELECT relreplident FROM pg_class WHERE oid = 'public.resources'::regclass");
    free(before);
    free(after);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(sql, resource_version_is_one_global_sequence_and_the_trigger_wins) {
    char db[64];
    PGconn *c = it_db_create("sqlrv", db, sizeof db);
    it_apply_sql(db, "sql/crwatch.sql");
    create_managed(c, "public.a");
    create_managed(c, "public.b");
    static const char *const writes[] = {
        "INSERT INTO a (name, spec) VALUES ('x', '{}') RETURNING resource_version",
        "INSERT INTO b (name, spec, resource_version) VALUES ('x', '{}', 1000000) RETURNING resource_version",
        "UPDATE a SET status = '{\"phase\":\"Running\"}' RETURNING resource_version",
        /* The demo's hand bump, and an outright lie: the sequence wins both. */
        "UPDATE b SET status = '{\"phase\":\"Running\"}', resource_version = resource_version + 1 "
        "RETURNING resource_version",
        "UPDATE a SET resource_version = 1 RETURNING resource_version",
        "INSERT INTO b (name, spec) VALUES ('y', '{}') RETURNING resource_version",
        "UPDATE b SET spec = '{\"n\":1}' WHERE name = 'x' RETURNING resource_version",
    };
    long long prev = 0;
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        long long rv = query_ll(c, writes[i]);
        long long cur = query_ll(c, "SELECT currval('crwatch.resource_version')");
        cr_assert_eq(rv, cur, "%s: resource_version %lld is not the sequence's value %lld", writes[i], rv, cur);
        cr_assert_gt(rv, prev, "%s: resource_version %lld does not follow %lld", writes[i], rv, prev);
        prev = rv;
    }
    /* Both tables drew from one sequence: no value is used twice. */
    expect_value(c, "t", "SELECT count(*) = count(DISTINCT resource_version) FROM "
                         "(SELECT resource_version FROM a UNION ALL SELECT resource_version FROM b) v");
    expect_value(c, "7", "SELECT last_value FROM crwatch.resource_version");
    /* Several rows in one statement: one version each. */
    it_exec(c, "UPDATE b SET labels = '{\"l\":\"1\"}'");
    expect_value(c, "t", "SELECT min(resource_version) = 8 AND max(resource_version) = 9 FROM b");
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(sql, generation_counts_spec_changes_only) {
    char db[64];
    PGconn *c = it_db_create("sqlgen", db, sizeof db);
    it_apply_sql(db, "sql/crwatch.sql");
    create_managed(c, "public.j");
    static const struct {
        const char *sql;
        const char *generation;
    } steps[] = {
        {"INSERT INTO j (name, spec, generation) VALUES ('x', '{\"a\":1,\"b\":[1,2]}', 42)", "1"},
        {"UPDATE j SET status = jsonb_set(status, '{phase}', '\"Running\"')", "1"},
        {"UPDATE j SET labels = '{\"team\":\"media\"}', annotations = '{\"note\":\"x\"}'", "1"},
        {"UPDATE j SET deleted_at = now()", "1"},                                  /* soft delete */
        {"UPDATE j SET spec = '{ \"b\" : [1, 2], \"a\" : 1 }'", "1"},              /* same jsonb */
        {"UPDATE j SET generation = 99, status = '{\"phase\":\"Done\"}'", "1"},  /* the trigger wins */
        {"UPDATE j SET spec = jsonb_set(spec, '{a}', '2')", "2"},
        {"UPDATE j SET spec = spec || '{\"c\":null}'", "3"},
        {"UPDATE j SET spec = spec - 'c'", "4"},
        {"UPDATE j SET spec = spec, status = '{}'", "4"},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        it_exec(c, "%s", steps[i].sql);
        char *g = it_query_value(c, "SELECT generation FROM j");
        cr_assert(g && !strcmp(g, steps[i].generation), "after %s: generation %s, want %s", steps[i].sql,
                  g ? g : "(null)", steps[i].generation);
        free(g);
    }
    PQfinish(c);
    it_db_drop(NULL, db);
}

/* A table managed before created_txid existed (3 triggers, no column) keeps taking writes; manage() upgrades it. */
Test(sql, a_table_managed_before_created_txid_keeps_working_until_managed_again) {
    char db[64];
    PGconn *c = it_db_create("sqlold", db, sizeof db);
    it_apply_sql(db, "sql/crwatch.sql");
    create_managed(c, "public.j");
    it_exec(c, "DROP TRIGGER zz_crwatch_created ON j; ALTER TABLE j DROP COLUMN created_txid");
    it_exec(c, "INSERT INTO j (name, spec) VALUES ('old', '{}'); UPDATE j SET status = '{}'");
    expect_value(c, "f", "SELECT crwatch.is_managed('public.j')");
    it_exec(c, "SELECT crwatch.manage('public.j')");
    expect_value(c, "t", "SELECT crwatch.is_managed('public.j')");
    it_exec(c, "INSERT INTO j (name, spec) VALUES ('new', '{}')");
    expect_value(c, "old:true,new:false", "SELECT string_agg(name || ':' || (created_txid IS NULL)::text, ',' ORDER BY "
                                   "name DESC) FROM j");
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(sql, timestamps_uid_and_txid_are_the_writing_transactions) {
    char db[64];
    PGconn *c = it_db_create("sqltx", db, sizeof db);
    it_apply_sql(db, "sql/crwatch.sql");
    create_managed(c, "public.j");
    expect_value(c, "xid8", "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                            "WHERE attrelid = 'public.j'::regclass AND attname = 'txid'");

    it_exec(c, "BEGIN");
    it_exec(c, "INSERT INTO j (name, spec) VALUES ('x', '{}')"); /* no uid, created_at, updated_at given */
    expect_value(c, "t|t|t|t|t",
                 "SELECT concat_ws('|', txid = pg_current_xact_id(), created_at = now(), updated_at = now(), "
                 "uid IS NOT NULL, created_txid = pg_current_xact_id()) FROM j");
    char *xid1 = it_query_value(c, "SELECT pg_current_xact_id()");
    it_exec(c, "COMMIT");
    char *uid = it_query_value(c, "SELECT uid FROM j");
    char *created = it_query_value(c, "SELECT created_at FROM j");
    char *updated = it_query_value(c, "SELECT updated_at FROM j");

    /* An explicit uid and created_at on insert are kept (e.g. importing existing resources). */
    it_exec(c, "INSERT INTO j (name, spec, uid, created_at) VALUES ('imported', '{}', "
               "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2020-01-02 03:04:05+00')");
    expect_value(c, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|2020-01-02 03:04:05+00",
                 "SELECT uid || '|' || (created_at AT TIME ZONE 'UTC')::text || '+00' FROM j WHERE name = 'imported'");

    it_exec(c, "SELECT pg_sleep(0.01)");
    it_exec(c, "BEGIN");
    /* uid, created_at and created_txid are immutable: the update's values are dropped. */
    it_exec(c, "UPDATE j SET status = '{\"phase\":\"Running\"}', uid = gen_random_uuid(), "
               "created_at = '2000-01-01', updated_at = '2000-01-01', created_txid = '1' WHERE name = 'x'");
    char *q = NULL;
    cr_assert(asprintf(&q,
                       "SELECT concat_ws('|', txid = pg_current_xact_id(), txid <> '%s'::xid8, updated_at = now(), "
                       "updated_at > '%s'::timestamptz, created_at = '%s'::timestamptz, uid = '%s'::uuid, "
                       "created_txid = '%s'::xid8) FROM j WHERE name = 'x'",
                       xid1, updated, created, uid, xid1) > 0);
    expect_value(c, "t|t|t|t|t|t|t", q);
    free(q);
    it_exec(c, "COMMIT");

    /* A rolled-back write leaves the row's txid as the last committed writer's. */
    char *xid2 = it_query_value(c, "SELECT txid FROM j WHERE name = 'x'");
    it_exec(c, "BEGIN; UPDATE j SET status = '{}' WHERE name = 'x'; ROLLBACK");
    expect_value(c, xid2, "SELECT txid FROM j WHERE name = 'x'");
    free(xid1);
    free(xid2);
    free(uid);
    free(created);
    free(updated);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(sql, delete_and_truncate_write_tombstones_with_kind) {
    char db[64];
    PGconn *c = it_db_create("sqltomb", db, sizeof db);
    it_apply_sql(db, "sql/examples/shared_resources.sql");
    it_exec(c, "INSERT INTO resources (kind, name, spec) VALUES "
               "('ThumbnailJob', 'thumb-1', '{\"size\":128}'), ('MediaPipeline', 'pipe-1', '{\"steps\":[1,2]}'),"
               "('ThumbnailJob', 'thumb-2', '{\"size\":64}')");
    /* Same name, different kinds: the kind is part of the key. */
    it_exec(c, "INSERT INTO resources (kind, name, spec) VALUES ('MediaPipeline', 'thumb-1', '{}')");
    expect_error(c, "23514", "INSERT INTO resources (kind, name, spec) VALUES ('Unknown', 'u', '{}')");
    expect_value(c, "1|1", "SELECT min(generation) || '|' || max(generation) FROM resources");

    it_exec(c, "UPDATE resources SET spec = '{\"size\":256}' WHERE kind = 'ThumbnailJob' AND name = 'thumb-1'");
    expect_value(c, "2", "SELECT generation FROM resources WHERE kind = 'ThumbnailJob' AND name = 'thumb-1'");
    expect_value(c, "1", "SELECT generation FROM resources WHERE kind = 'MediaPipeline' AND name = 'thumb-1'");

    long long last_rv = query_ll(c, "SELECT resource_version FROM resources WHERE kind = 'ThumbnailJob' "
                                    "AND name = 'thumb-1'");
    char *uid = it_query_value(c, "SELECT uid FROM resources WHERE kind = 'ThumbnailJob' AND name = 'thumb-1'");
    it_exec(c, "BEGIN");
    it_exec(c, "DELETE FROM resources WHERE kind = 'ThumbnailJob' AND name = 'thumb-1'");
    char *xid = it_query_value(c, "SELECT pg_current_xact_id()");
    it_exec(c, "COMMIT");
    expect_value(c, "1", "SELECT count(*) FROM crwatch.tombstones");
    char want[512];
    snprintf(want, sizeof want, "t|default|thumb-1|ThumbnailJob|%s|%s|256|2|t", uid, xid);
    expect_value(c, want,
                 "SELECT concat_ws('|', relid = 'public.resources'::regclass, namespace, name, kind, uid, txid, "
                 "object #>> '{spec,size}', object ->> 'generation', deleted_at <= now()) FROM crwatch.tombstones");
    /* The deletion takes its own version from the global sequence. */
    long long tomb_rv = query_ll(c, "SELECT resource_version FROM crwatch.tombstones");
    cr_assert_gt(tomb_rv, last_rv);
    expect_value(c, "t", "SELECT resource_version = currval('crwatch.resource_version') FROM crwatch.tombstones");

    /* A rolled-back delete leaves no tombstone. */
    it_exec(c, "BEGIN; DELETE FROM resources WHERE name = 'pipe-1'; ROLLBACK");
    expect_value(c, "1", "SELECT count(*) FROM crwatch.tombstones");

    /* TRUNCATE fires no DELETE trigger: the rows are tombstoned before they go. */
    it_exec(c, "BEGIN");
    it_exec(c, "TRUNCATE resources");
    free(xid);
    xid = it_query_value(c, "SELECT pg_current_xact_id()");
    it_exec(c, "COMMIT");
    snprintf(want, sizeof want, "MediaPipeline/pipe-1/%s,MediaPipeline/thumb-1/%s,ThumbnailJob/thumb-2/%s", xid, xid,
             xid);
    expect_value(c, want,
                 "SELECT string_agg(kind || '/' || name || '/' || txid, ',' ORDER BY kind, name) "
                 "FROM crwatch.tombstones "
                 "WHERE resource_version > (SELECT min(resource_version) FROM crwatch.tombstones)");

    /* prune_tombstones removes only what is older than asked. */
    expect_value(c, "0", "SELECT crwatch.prune_tombstones('1 hour')");
    it_exec(c, "UPDATE crwatch.tombstones SET deleted_at = deleted_at - interval '2 hours' WHERE name = 'pipe-1'");
    expect_value(c, "1", "SELECT crwatch.prune_tombstones('1 hour')");
    expect_value(c, "3", "SELECT count(*) FROM crwatch.tombstones");
    free(uid);
    free(xid);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(sql, manage_refuses_tables_outside_the_convention) {
    char db[64];
    PGconn *c = it_db_create("sqlbad", db, sizeof db);
    it_apply_sql(db, "sql/crwatch.sql");
    it_exec(c, "CREATE TABLE bad (namespace text, name varchar, uid uuid, generation int, spec json, kind int, "
               "txid bigint)");
    char *detail = expect_error(c, "42P16", "SELECT crwatch.manage('bad')");
    static const char *const named[] = {
        "column name is character varying, want text", "column generation is integer, want bigint",
        "missing column resource_version bigint",      "missing column labels jsonb",
        "column spec is json, want jsonb",             "missing column deleted_at timestamp with time zone",
        "column kind is integer, want text",           "column txid is bigint, want xid8",
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        cr_assert(strstr(detail, named[i]), "DETAIL does not say '%s': %s", named[i], detail);
    cr_assert_null(strstr(detail, "namespace"), "namespace is fine: %s", detail);
    free(detail);
    /* Nothing was installed on the refused table. */
    expect_value(c, "0", "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'bad'::regclass");
    it_exec(c, "CREATE VIEW v AS SELECT 1");
    free(expect_error(c, "42809", "SELECT crwatch.manage('v')"));
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(sql, publish_creates_extends_and_refuses_tables_without_identity) {
    char db[64];
    PGconn *c = it_db_create("sqlpub", db, sizeof db);
    it_apply_sql(db, "sql/crwatch.sql");
    create_managed(c, "public.a");
    create_managed(c, "public.b");
    expect_value(c, "1", "SELECT crwatch.publish('p', 'a')");
    expect_value(c, "0", "SELECT crwatch.publish('p', 'a', 'a')");
    expect_value(c, "1", "SELECT crwatch.publish('p', 'a', 'b')");
    expect_value(c, "a,b", "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables "
                           "WHERE pubname = 'p'");
    expect_value(c, "t|t|t|t", "SELECT concat_ws('|', pubinsert, pubupdate, pubdelete, pubtruncate) "
                               "FROM pg_publication WHERE pubname = 'p'");
    /* Publishing a table without a key would make its UPDATEs and DELETEs fail. */
    it_exec(c, "CREATE TABLE nokey (x int)");
    free(expect_error(c, "42P16", "SELECT crwatch.publish('p', 'nokey')"));
    expect_value(c, "0", "SELECT count(*) FROM pg_publication_tables WHERE tablename = 'nokey'");
    it_exec(c, "ALTER TABLE nokey REPLICA IDENTITY FULL");
    expect_value(c, "1", "SELECT crwatch.publish('p', 'nokey')");
    it_exec(c, "UPDATE nokey SET x = 1"); /* still writable */
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(sql, writers_need_no_privilege_on_crwatch_and_cannot_forge) {
    char db[64], writer[80];
    PGconn *c = it_db_create("sqlwriter", db, sizeof db);
    snprintf(writer, sizeof writer, "%s_w", db);
    it_apply_sql(db, "sql/crwatch.sql");
    create_managed(c, "public.j");
    drop_role(writer);
    it_exec(c, "CREATE ROLE %s LOGIN; GRANT SELECT, INSERT, UPDATE, DELETE ON public.j TO %s", writer, writer);
    PGconn *w = connect_as(db, writer);
    it_exec(w, "INSERT INTO j (name, spec) VALUES ('x', '{}'); UPDATE j SET spec = '{\"a\":1}'; DELETE FROM j");
    expect_value(c, "x|2", "SELECT name || '|' || (object ->> 'generation') FROM crwatch.tombstones");
    /* Everything in crwatch is out of the writer's reach. */
    free(expect_error(w, "42501", "SELECT nextval('crwatch.resource_version')"));
    free(expect_error(w, "42501",
                      "INSERT INTO crwatch.tombstones VALUES (1, 'j', 'd', 'n', NULL, NULL, '1', now(), '{}')"));
    free(expect_error(w, "42501", "SELECT crwatch.manage('j')"));
    PQfinish(w);
    PQfinish(c);
    it_db_drop(NULL, db);
    drop_role(writer);
}

Test(sql, least_privilege_role_streams_without_superuser) {
    char db[64], role[80];
    PGconn *c = it_db_create("sqlrole", db, sizeof db);
    snprintf(role, sizeof role, "%s_crw", db);
    it_apply_sql(db, "sql/crwatch.sql");
    create_managed(c, "public.jobs");
    create_managed(c, "public.secret");
    it_exec(c, "INSERT INTO secret (name, spec) VALUES ('s1', '{\"password\":\"hunter2\"}')");
    it_exec(c, "DELETE FROM secret");
    drop_role(role);
    /* As the admin: the role, then the publication (the role cannot: it owns no table). */
    it_exec(c, "SELECT crwatch.create_role('%s', 'public.jobs')", role);
    it_exec(c, "SELECT crwatch.create_role('%s', 'public.jobs')", role); /* again: harmless */
    expect_value(c, "1", "SELECT crwatch.publish('crwatch', 'public.jobs')");
    char q[512];
    snprintf(q, sizeof q,
             "SELECT concat_ws('|', rolcanlogin, rolreplication, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, "
             "(SELECT count(*) FROM pg_auth_members WHERE member = r.oid)) FROM pg_roles r WHERE rolname = '%s'",
             role);
    expect_value(c, "t|t|f|f|f|f|0", q);
    /* Refuses to adopt a role that has more than it needs. */
    free(expect_error(c, "42501", "SELECT crwatch.create_role(current_user, 'public.jobs')"));

    PGconn *r = connect_as(db, role);
    expect_value(r, "f", "SELECT rolsuper FROM pg_roles WHERE rolname = current_user");
    expect_value(r, "0", "SELECT count(*) FROM public.jobs");
    free(expect_error(r, "42501", "SELECT * FROM public.secret"));
    free(expect_error(r, "42501", "INSERT INTO public.jobs (name, spec) VALUES ('x', '{}')"));
    free(expect_error(r, "42501", "CREATE TABLE public.mine (x int)"));
    free(expect_error(r, "42501", "CREATE PUBLICATION mine FOR TABLE public.jobs"));
    free(expect_error(r, "42501", "SELECT nextval('crwatch.resource_version')"));
    /* Tombstones: readable, but only those of the watched tables. */
    expect_value(r, "0", "SELECT count(*) FROM crwatch.tombstones");
    expect_value(c, "1", "SELECT count(*) FROM crwatch.tombstones");

    /* crwatch itself, connected as the role. */
    char conninfo[256], slot[128];
    snprintf(conninfo, sizeof conninfo, "dbname=%s user=%s", db, role);
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    const char *args[] = {"stream", "-X", "tables=public.jobs", "-X", slot, "-d", conninfo, NULL};
    it_proc_t *p = it_crwatch_start(NULL, args);
    if (!it_proc_stderr_wait(p, "streaming from slot", EV_TIMEOUT)) {
        it_proc_dump_stderr(p);
        cr_assert_fail("crwatch did not start streaming as %s", role);
    }
    snprintf(q, sizeof q,
             "SELECT a.usename FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid "
             "WHERE s.slot_name = '%s'",
             db);
    expect_value(c, role, q);

    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('job-1', '{\"preset\":\"720p\"}')");
    it_exec(c, "INSERT INTO secret (name, spec) VALUES ('s2', '{}')"); /* not published: no event */
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Running\"}'");
    it_exec(c, "DELETE FROM jobs");
    long long rv_update = query_ll(c, "SELECT (object ->> 'resource_version')::bigint FROM crwatch.tombstones "
                                      "WHERE name = 'job-1'");

    json_object *a = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(a, "data.type", "ADDED");
    it_expect_str(a, "subject", "default/job-1");
    it_expect_str(a, "data.object.generation", "1");
    it_expect_str(a, "data.object.spec.preset", "720p");
    json_object *m = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(m, "data.type", "MODIFIED");
    it_expect_str(m, "data.object.status.phase", "Running");
    it_expect_str(m, "data.object.generation", "1");
    char rv[32];
    snprintf(rv, sizeof rv, "%lld", rv_update);
    it_expect_str(m, "data.object.resource_version", rv);
    cr_assert_gt(rv_update, atoll(it_json_str(a, "data.object.resource_version")));
    json_object *d = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(d, "data.type", "DELETED");
    it_expect_str(d, "subject", "default/job-1");
    json_object_put(a);
    json_object_put(m);
    json_object_put(d);
    cr_assert(it_proc_no_line_within(p, 500), "an event of an unwatched table arrived");
    /* Now the role sees the watched table's tombstone, still not the other's. */
    expect_value(r, "job-1", "SELECT string_agg(name, ',') FROM crwatch.tombstones");
    cr_assert_eq(it_proc_signal_wait(p, SIGTERM, 10000), 0);
    it_proc_free(p);
    PQfinish(r);
    PQfinish(c);
    it_db_drop(NULL, db);
    drop_role(role);
}

Test(sql, video_example_gives_the_demo_lifecycle) {
    char db[64];
    PGconn *c = it_db_create("sqldemo", db, sizeof db);
    it_apply_sql(db, "sql/examples/video_transcoding_job.sql");
    char slot[128];
    snprintf(slot, sizeof slot, "slot.name=%s", db);
    /* As scripts/demo runs it: the publication is the example's. */
    const char *args[] = {"stream", "-X", "resource.jobs.table=public.video_transcoding_jobs", "-X",
                          "resource.jobs.kind=VideoTranscodingJob", "-X", slot, NULL};
    it_proc_t *p = it_crwatch_start(db, args);
    if (!it_proc_stderr_wait(p, "streaming from slot", EV_TIMEOUT)) {
        it_proc_dump_stderr(p);
        cr_assert_fail("crwatch did not start streaming");
    }
    /* scripts/demo's statements, with other writers taking sequence values in between. */
    it_exec(c, "INSERT INTO video_transcoding_jobs (name, spec) VALUES "
               "('job-42', '{\"input\":\"s3://in/cat.mov\",\"preset\":\"1080p\"}')");
    static const char *const phases[] = {"Pending", "Running", "Succeeded"};
    for (int i = 0; i < 3; i++) {
        it_exec(c, "SELECT nextval('crwatch.resource_version')");
        it_exec(c,
                "UPDATE video_transcoding_jobs SET status = jsonb_set(status, '{phase}', '\"%s\"'), "
                "resource_version = resource_version + 1, updated_at = now() WHERE name = 'job-42'",
                phases[i]);
    }
    long long rv_final = query_ll(c, "SELECT resource_version FROM video_transcoding_jobs");
    it_exec(c, "DELETE FROM video_transcoding_jobs WHERE name = 'job-42'");

    json_object *ev = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(ev, "type", "crwatch.VideoTranscodingJob.added");
    it_expect_str(ev, "subject", "default/job-42");
    it_expect_str(ev, "data.object.generation", "1");
    long long rv_prev = atoll(it_json_str(ev, "data.object.resource_version"));
    cr_assert(it_json_str(ev, "data.object.uid"), "uid not set");
    json_object_put(ev);
    for (int i = 0; i < 3; i++) {
        ev = it_proc_expect_event(p, EV_TIMEOUT);
        it_expect_str(ev, "type", "crwatch.VideoTranscodingJob.modified");
        it_expect_str(ev, "data.object.status.phase", phases[i]);
        it_expect_str(ev, "data.object.generation", "1"); /* status only */
        long long rv = atoll(it_json_str(ev, "data.object.resource_version"));
        /* The sequence, not the hand bump: a value was taken in between. */
        cr_assert_eq(rv, rv_prev + 2, "resource_version %lld after %lld", rv, rv_prev);
        /* REPLICA IDENTITY FULL: the old row and what changed. */
        long long old_rv = atoll(it_json_str(ev, "data.oldObject.resource_version"));
        cr_assert_eq(old_rv, rv_prev);
        if (i > 0)
            it_expect_str(ev, "data.oldObject.status.phase", phases[i - 1]);
        json_object *changed = it_json_get(ev, "data.changed");
        cr_assert(changed && json_object_is_type(changed, json_type_array), "no changed list");
        bool saw_status = false;
        for (size_t k = 0; k < json_object_array_length(changed); k++) {
            const char *ptr = json_object_get_string(json_object_array_get_idx(changed, k));
            saw_status |= !strncmp(ptr, "/status", 7);
            cr_assert(strncmp(ptr, "/spec", 5) && strcmp(ptr, "/generation") && strcmp(ptr, "/uid"),
                      "changed lists %s", ptr);
        }
        cr_assert(saw_status, "changed lacks /status: %s", json_object_to_json_string(changed));
        rv_prev = rv;
        json_object_put(ev);
    }
    cr_assert_eq(rv_prev, rv_final);
    ev = it_proc_expect_event(p, EV_TIMEOUT);
    it_expect_str(ev, "type", "crwatch.VideoTranscodingJob.deleted");
    it_expect_str(ev, "data.object.status.phase", "Succeeded");
    json_object_put(ev);
    cr_assert(it_proc_no_line_within(p, 500), "unexpected extra event");
    cr_assert_eq(it_proc_signal_wait(p, SIGTERM, 10000), 0);
    it_proc_free(p);
    PQfinish(c);
    it_db_drop(NULL, db);
}
