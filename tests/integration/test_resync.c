/*
 * test_resync.c — `crwatch resync` (src/app/resync.c, docs/snapshots.md)
 * against a real PostgreSQL: after crwatch was stopped and its slot
 * dropped while rows were inserted, updated and deleted, exactly those
 * corrections come (row shape by content, crd shape by resourceVersion),
 * nothing for unchanged keys; a second resync over the corrected view finds
 * nothing; --dry-run sends nothing; the refusals.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "support/itest.h"

#define EV_TIMEOUT 15000

/* Appends every line of text to the file at path. */
static void append_file(const char *path, const char *text) {
    FILE *f = fopen(path, "a");
    cr_assert(f, "open %s", path);
    fputs(text, f);
    fclose(f);
}

typedef struct {
    int added, modified, deleted, other;
    char keys[4096]; /* "A:k1 M:k2 D:k3 " in order */
} corrections_t;

static corrections_t count_corrections(const char *out) {
    corrections_t c = {0};
    const char *line = out;
    while (line && *line) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        char *one = strndup(line, len);
        json_object *ev = json_tokener_parse(one);
        free(one);
        if (ev) {
            const char *type = it_json_str(ev, "data.type"), *key = it_json_str(ev, "data.key");
            char tag = !type ? '?' : !strcmp(type, "ADDED") ? 'A' : !strcmp(type, "MODIFIED") ? 'M'
                                   : !strcmp(type, "DELETED") ? 'D' : '?';
            c.added += tag == 'A';
            c.modified += tag == 'M';
            c.deleted += tag == 'D';
            c.other += tag == '?';
            size_t l = strlen(c.keys);
            snprintf(c.keys + l, sizeof c.keys - l, "%c:%s ", tag, key ? key : "-");
            json_object_put(ev);
        }
        line = nl ? nl + 1 : NULL;
    }
    return c;
}

static bool has(const corrections_t *c, const char *tag_key) {
    char want[128];
    snprintf(want, sizeof want, " %s ", tag_key);
    char hay[4200];
    snprintf(hay, sizeof hay, " %s", c->keys);
    return strstr(hay, want) != NULL;
}

/* Reads n events of p into the view file path. */
static void read_into(it_proc_t *p, const char *path, int n) {
    for (int i = 0; i < n; i++) {
        char *line = it_proc_read_line(p, EV_TIMEOUT);
        cr_assert(line, "event %d of %d", i + 1, n);
        append_file(path, line);
        append_file(path, "\n");
        free(line);
    }
}

static int run_resync(const char *db, const char *const *args, char **out, char **err) {
    return it_run_crwatch(db, args, 60000, out, err);
}

Test(resync, corrections_after_the_slot_was_dropped_row_shape, .timeout = 120) {
    char db[64], view[128];
    PGconn *c = it_db_create("rsrow", db, sizeof db);
    snprintf(view, sizeof view, "/tmp/crw-it-%s.jsonl", db);
    unlink(view);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY, v text, n numeric)");
    const char *const base[] = {"tables=public.t", NULL};
    it_proc_t *p = it_crwatch_stream(db, base, NULL);
    it_exec(c, "INSERT INTO t SELECT g, 'v' || g, g * 1.5 FROM generate_series(1, 200) g");
    it_exec(c, "UPDATE t SET v = 'seen' WHERE id <= 5");
    read_into(p, view, 205);
    it_crwatch_stop(p, 10000);
    const char *drop[] = {"slot", "drop", "-X", "tables=public.t", NULL};
    char slotname[128];
    snprintf(slotname, sizeof slotname, "slot.name=%s", db);
    drop[3] = slotname;
    cr_assert_eq(it_run_crwatch(db, drop, 30000, NULL, NULL), 0, "slot drop");

    /* While crwatch is away: inserts, updates (one twice, one back to what the view has), deletes. */
    it_exec(c, "INSERT INTO t VALUES (300, 'new', 1), (301, 'new', 2)");
    it_exec(c, "UPDATE t SET v = 'later' WHERE id IN (10, 11)");
    it_exec(c, "UPDATE t SET n = 99 WHERE id = 10");
    it_exec(c, "UPDATE t SET v = 'tmp' WHERE id = 12");
    it_exec(c, "UPDATE t SET v = 'v12' WHERE id = 12");
    it_exec(c, "DELETE FROM t WHERE id IN (20, 21, 22)");
    it_exec(c, "DELETE FROM t WHERE id = 300"); /* added and gone again: nothing to say */

    char from[200];
    snprintf(from, sizeof from, "resync.from=%s", view);
    const char *args[] = {"resync", "-X", "tables=public.t", "-X", from, NULL};
    char *out = NULL, *err = NULL;
    cr_assert_eq(run_resync(db, args, &out, &err), 0, "%s", err);
    corrections_t k = count_corrections(out);
    cr_expect_eq(k.added, 1, "ADDED: %s", k.keys);
    cr_expect_eq(k.modified, 2, "MODIFIED: %s", k.keys);
    cr_expect_eq(k.deleted, 3, "DELETED: %s", k.keys);
    cr_expect_eq(k.other, 0, "%s", k.keys);
    cr_expect(has(&k, "A:301") && has(&k, "M:10") && has(&k, "M:11") && has(&k, "D:20") && has(&k, "D:21") &&
                  has(&k, "D:22"),
              "%s", k.keys);
    cr_expect(strstr(err, "1 ADDED, 2 MODIFIED, 3 DELETED, 195 unchanged"), "the summary: %s", err);
    /* A DELETED carries the last object the sink had. */
    const char *d = strstr(out, "\"subject\":\"20\"");
    cr_expect(d && strstr(d, "\"object\":{\"id\":20,\"v\":\"v20\",\"n\":\"30.0\"}"), "%s", out);
    /* The view with the corrections applied has nothing left to correct. */
    append_file(view, out);
    free(out);
    free(err);
    cr_assert_eq(run_resync(db, args, &out, &err), 0, "%s", err);
    cr_expect_str_eq(out, "", "a second resync finds nothing");
    cr_expect(strstr(err, "0 ADDED, 0 MODIFIED, 0 DELETED, 198 unchanged"), "%s", err);
    free(out);
    free(err);
    unlink(view);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(resync, crd_shape_compares_resource_versions_and_dry_run_sends_nothing, .timeout = 120) {
    char db[64], view[128], sent[128];
    PGconn *c = it_db_create("rscrd", db, sizeof db);
    snprintf(view, sizeof view, "/tmp/crw-it-%s.jsonl", db);
    snprintf(sent, sizeof sent, "/tmp/crw-it-%s.sent", db);
    unlink(view);
    unlink(sent);
    it_apply_sql(db, "sql/crwatch.sql");
    it_exec(c, "CREATE TABLE jobs (" IT_CONVENTION_COLUMNS ", PRIMARY KEY (namespace, name))");
    it_exec(c, "SELECT crwatch.manage('public.jobs')");
    it_exec(c, "INSERT INTO jobs (name, spec) SELECT 'j' || g, '{}' FROM generate_series(1, 50) g");
    /* The view: a backfill's SYNC events. */
    char sf[200];
    snprintf(sf, sizeof sf, "snapshot.state.file=/tmp/crw-it-%s.state", db);
    const char *bf[] = {"backfill", "-X", "resource.j.table=public.jobs", "-X", "resource.j.shape=crd", "-X", sf, NULL};
    char *out = NULL, *err = NULL;
    cr_assert_eq(it_run_crwatch(db, bf, 60000, &out, &err), 0, "%s", err);
    append_file(view, out);
    free(out);
    free(err);
    it_exec(c, "UPDATE jobs SET status = '{\"phase\":\"Running\"}' WHERE name IN ('j1', 'j2')");
    it_exec(c, "DELETE FROM jobs WHERE name = 'j3'");
    it_exec(c, "INSERT INTO jobs (name, spec) VALUES ('j99', '{}')");

    /* --dry-run: printed, and the configured sink (a process writing a file) gets nothing. */
    char from[200], cmd[300];
    snprintf(from, sizeof from, "resync.from=%s", view);
    snprintf(cmd, sizeof cmd, "exec.command=cat >> %s", sent);
    const char *args[] = {"resync", "-X", "resource.j.table=public.jobs", "-X", "resource.j.shape=crd", "-X", from,
                          "-X", "sink=exec", "-X", "exec.mode=per-event", "-X", cmd, "--dry-run", NULL};
    cr_assert_eq(run_resync(db, args, &out, &err), 0, "%s", err);
    corrections_t k = count_corrections(out);
    cr_expect(k.added == 1 && k.modified == 2 && k.deleted == 1 && k.other == 0, "%s", k.keys);
    cr_expect(has(&k, "A:default/j99") && has(&k, "M:default/j1") && has(&k, "M:default/j2") &&
                  has(&k, "D:default/j3"),
              "%s", k.keys);
    cr_expect(strstr(err, "--dry-run"), "%s", err);
    cr_expect(access(sent, F_OK) != 0, "--dry-run sent nothing to the sink");
    free(out);
    free(err);

    /* Without it, the same corrections reach the sink. */
    args[13] = NULL;
    cr_assert_eq(run_resync(db, args, &out, &err), 0, "%s", err);
    free(out);
    free(err);
    FILE *f = fopen(sent, "r");
    cr_assert(f, "the sink got the corrections");
    int lines = 0;
    for (int ch; (ch = fgetc(f)) != EOF;)
        lines += ch == '\n';
    fclose(f);
    cr_expect_eq(lines, 4, "4 corrections sent (%d)", lines);
    unlink(view);
    unlink(sent);
    PQfinish(c);
    it_db_drop(NULL, db);
}

Test(resync, refusals_exit_2) {
    char db[64];
    PGconn *c = it_db_create("rsbad", db, sizeof db);
    it_exec(c, "CREATE TABLE t (id int PRIMARY KEY)");
    struct {
        const char *const args[10];
        const char *says;
    } cases[] = {
        {{"resync", "-X", "tables=public.t", NULL}, "resync.from"},
        {{"resync", "-X", "tables=public.t", "-X", "resync.from=/nonexistent/view.jsonl", NULL}, "cannot read"},
        {{"resync", "-X", "tables=public.t", "-X", "resync.from=/dev/null", "-X", "event.format=debezium", NULL},
         "debezium"},
        {{"stream", "--dry-run", NULL}, "--dry-run"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *err = NULL;
        int st = it_run_crwatch(db, cases[i].args, 30000, NULL, &err);
        cr_expect_eq(st, 2, "case %zu exits 2 (%d): %s", i, st, err);
        cr_expect(strstr(err, cases[i].says), "case %zu names %s: %s", i, cases[i].says, err);
        free(err);
    }
    PQfinish(c);
    it_db_drop(NULL, db);
}
