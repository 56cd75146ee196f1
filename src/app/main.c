/*
 * main.c — the crwatch command line (docs/usage.md): argument parsing,
 * signals and exit codes.  The only place that calls exit().
 *
 * Exit codes: 0 success; 1 runtime failure; 2 usage or configuration error;
 * 3 a database prerequisite is missing, or the server refused the login.
 */
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/conf.h"
#include "core/err.h"
#include "core/log.h"
#include "core/lsn.h"
#include "app/backfill.h"
#include "app/resync.h"
#include "app/stream.h"
#include "sink/sinks.h"
#include "source/admin.h"
#include "source/incremental.h"
#include "source/session.h"
#include "source/source.h"

static volatile sig_atomic_t stop_requested;

/* slot.lost=resync inside `crwatch stream` (app/stream.h): crwatch resync against every watched table. */
static int resync_for_stream(const crw_config_t *conf, const char *conninfo, volatile sig_atomic_t *stop, char *err,
                             size_t n) {
    crw_resync_opts_t ro = {conninfo, stop, false, NULL};
    return crw_resync_run(conf, &ro, err, n);
}

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f) {
    fprintf(f,
            "Usage: crwatch COMMAND [options]\n"
            "\n"
            "Commands:\n"
            "  stream                 run the change stream (Ctrl-C/SIGTERM: drain, confirm, exit 0)\n"
            "  backfill               every current row as a SYNC event, in one snapshot, then exit\n"
            "  resync                 the sink's view (resync.from) against the tables: only corrections, then exit\n"
            "  snapshot [TABLE ...]   ask the running stream to re-read tables (an incremental snapshot)\n"
            "  check                  verify database + config prerequisites, print a report (changes nothing)\n"
            "  slot status|create|drop  show (one JSON line), create or drop the replication slot\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE      properties file: key = value, # comments\n"
            "  -X key=value           set any config key (repeatable; wins over the file)\n"
            "  -d, --dbname CONNINFO  libpq conninfo or URI; PG* environment variables apply\n"
            "      --endpos LSN       stream: stop once every change up to LSN is confirmed\n"
            "      --resume           backfill: continue from snapshot.state.file instead of starting over\n"
            "      --table T          backfill, resync: read only table T (schema.table; repeatable)\n"
            "      --dry-run          resync: print the corrections to stdout, send nothing\n"
            "  -h, --help             this help\n"
            "  -V, --version          print the version\n"
            "\n"
            "Configuration keys (key, default, meaning):\n");
    crw_config_describe(f);
    fprintf(f, "\nExit codes: 0 success, 1 runtime failure, 2 usage or configuration error (the\n"
               "connection settings too), 3 database prerequisite missing (wal_level, privilege,\n"
               "slot lost) or login refused (password, role, database; see reconnect.auth).\n");
}

static int fail_usage(const char *fmt, const char *arg) {
    fprintf(stderr, "crwatch: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'crwatch --help'.\n");
    return 2;
}

/*
 * `crwatch snapshot [TABLE ...]`: writes a request through the slot for each
 * table (every watched one when none is named); the stream re-reads them.
 */
static int request_snapshots(const crw_config_t *conf, const char *conninfo, int n, char **tables, char *err,
                             size_t errn) {
    int rc = 0;
    for (int i = 0; rc == 0 && i < conf->nresources; i++) {
        const crw_resource_conf_t *rs = &conf->resources[i];
        if (crw_config_table_named_before(conf, i))
            continue;
        crw_strlist_t named = {tables, n};
        if (crw_config_list_names(&named, rs->schema, rs->table) && (rc = crw_incr_request(conf, conninfo, rs->schema, rs->table, err, errn)) == 0)
            printf("{\"slot\":\"%s\",\"snapshot\":\"%s.%s\",\"requested\":true}\n", conf->slot_name, rs->schema,
                   rs->table);
    }
    return rc;
}

/* Each TABLE of `crwatch snapshot` must be watched: exit 2 before anything connects. */
static void check_snapshot_tables(const crw_config_t *conf, int n, char **tables) {
    for (int k = 0; k < n; k++) {
        bool found = false;
        crw_strlist_t one = {&tables[k], 1};
        for (int i = 0; i < conf->nresources && !found; i++)
            found = crw_config_list_names(&one, conf->resources[i].schema, conf->resources[i].table);
        if (!found)
            exit(fail_usage("snapshot: '%s' is not a watched table (set tables= or resource.<id>.table)", tables[k]));
    }
    if (conf->nresources == 0)
        exit(fail_usage("%s", "snapshot: no watched tables (set tables= or resource.<id>.table)"));
}

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"dbname", required_argument, NULL, 'd'},
        {"endpos", required_argument, NULL, 'E'}, {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},      {"resume", no_argument, NULL, 'R'},
        {"table", required_argument, NULL, 'T'},  {"dry-run", no_argument, NULL, 'D'},
        {NULL, 0, NULL, 0},
    };
    const char *config_file = NULL, *conninfo = NULL;
    const char **overrides = calloc((size_t)argc, sizeof(char *));
    int noverrides = 0;
    uint64_t endpos = 0;
    bool resume = false, dry_run = false;
    crw_strlist_t only = {0};
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "c:d:X:hV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': config_file = optarg; break;
        case 'd': conninfo = optarg; break;
        case 'X': overrides[noverrides++] = optarg; break;
        case 'E':
            if (crw_lsn_parse(optarg, &endpos) < 0 || endpos == 0)
                exit(fail_usage("--endpos: '%s' is not an LSN like 0/16B3748", optarg));
            break;
        case 'R': resume = true; break;
        case 'D': dry_run = true; break;
        case 'T': crw_strlist_add(&only, optarg); break;
        case 'h': usage(stdout); exit(0);
        case 'V': printf("crwatch %s\n", CRW_VERSION); exit(0);
        default:
            exit(fail_usage("unknown or incomplete option '%s'", argv[optind - 1]));
        }
    }
    if (optind >= argc)
        exit(fail_usage("%s", "no command given"));
    const char *cmd = argv[optind];
    const char *verb = NULL;
    int want_args = 1;
    if (!strcmp(cmd, "slot")) {
        if (optind + 1 >= argc)
            exit(fail_usage("%s", "slot needs an action: status, create or drop"));
        verb = argv[optind + 1];
        if (strcmp(verb, "status") && strcmp(verb, "create") && strcmp(verb, "drop"))
            exit(fail_usage("slot: unknown action '%s' (status, create, drop)", verb));
        want_args = 2;
    } else if (!strcmp(cmd, "snapshot")) {
        want_args = argc - optind; /* the tables */
    } else if (strcmp(cmd, "stream") && strcmp(cmd, "check") && strcmp(cmd, "backfill") && strcmp(cmd, "resync"))
        exit(fail_usage("unknown command '%s'", cmd));
    if (optind + want_args < argc)
        exit(fail_usage("unexpected argument '%s'", argv[optind + want_args]));
    if (endpos && strcmp(cmd, "stream"))
        exit(fail_usage("--endpos goes with 'stream', not '%s'", cmd));
    if (resume && strcmp(cmd, "backfill"))
        exit(fail_usage("--resume goes with 'backfill', not '%s'", cmd));
    if (only.n && strcmp(cmd, "backfill") && strcmp(cmd, "resync"))
        exit(fail_usage("--table goes with 'backfill' or 'resync', not '%s'", cmd));
    if (dry_run && strcmp(cmd, "resync"))
        exit(fail_usage("--dry-run goes with 'resync', not '%s'", cmd));

    /* Configuration: defaults, then the file, then -X; all before any connection. */
    char err[1024];
    crw_config_t *conf = crw_config_new();
    int rc = 0;
    if (config_file)
        rc = crw_config_load_file(conf, config_file, err, sizeof err);
    for (int i = 0; rc == 0 && i < noverrides; i++) {
        char inner[900];
        rc = crw_config_set_pair(conf, overrides[i], inner, sizeof inner);
        if (rc < 0)
            snprintf(err, sizeof err, "-X %s", inner);
    }
    /* resync --dry-run: the corrections go to stdout, and nowhere else */
    if (rc == 0 && dry_run && ((rc = crw_config_set(conf, "sink", "stdout", err, sizeof err)) < 0 ||
                               (rc = crw_config_set(conf, "delivery", "at-least-once", err, sizeof err)) < 0))
        snprintf(err + strlen(err), sizeof err - strlen(err), " (--dry-run)");
    if (rc == 0)
        rc = crw_config_finalize(conf, err, sizeof err);
    if (rc == 0)
        rc = crw_sinks_check(conf, err, sizeof err);
    if (rc == 0)
        rc = crw_sources_check(conf, err, sizeof err);
    if (rc == 0)
        rc = crw_session_check_conninfo(conninfo, "-d/--dbname", err, sizeof err);
    free(overrides);
    if (rc < 0) {
        fprintf(stderr, "crwatch: configuration error: %s\n", err);
        crw_config_destroy(conf);
        exit(2);
    }
    crw_log_level = conf->log_level;
    crw_log_set_format(conf->log_format ? CRW_LOG_JSON : CRW_LOG_TEXT);
    crw_log_set_field("slot", conf->slot_name);
    if (!strcmp(cmd, "snapshot"))
        check_snapshot_tables(conf, argc - optind - 1, argv + optind + 1);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocked select() returns at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (!strcmp(cmd, "stream")) {
        crw_stream_opts_t so = {conninfo, endpos, &stop_requested, NULL, NULL};
        so.resync = resync_for_stream;
        rc = crw_stream_run(conf, &so, err, sizeof err);
    } else if (!strcmp(cmd, "backfill")) {
        crw_backfill_opts_t bo = {conninfo, &stop_requested, resume, &only};
        rc = crw_backfill_run(conf, &bo, err, sizeof err);
    } else if (!strcmp(cmd, "snapshot")) {
        rc = request_snapshots(conf, conninfo, argc - optind - 1, argv + optind + 1, err, sizeof err);
    } else if (!strcmp(cmd, "resync")) {
        crw_resync_opts_t ro = {conninfo, &stop_requested, dry_run, &only};
        rc = crw_resync_run(conf, &ro, err, sizeof err);
    } else {
        rc = verb ? crw_admin_slot(conf, conninfo, verb, stdout, err, sizeof err)
                  : crw_admin_check(conf, conninfo, stdout, err, sizeof err);
        fflush(stdout);
    }
    crw_config_destroy(conf);
    crw_strlist_clear(&only);
    if (rc < 0) {
        crw_error("%s: %s", crw_err_str(rc), err);
        exit(crw_err_exit_code(rc));
    }
    exit(0);
}
