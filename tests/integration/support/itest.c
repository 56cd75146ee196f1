/*
 * itest.c — support library for crwatch's integration tests: throwaway
 * databases on the test server, SQL helpers, and child processes with
 * line-buffered stdout and file-captured stderr. Contracts are in itest.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* vasprintf, pipe2, mkostemps, close_range */
#endif

#include "itest.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifndef CRW_BIN
#error "CRW_BIN must be defined: the path of the crwatch binary under test"
#endif

extern char **environ;

/* A child of the test; see it_proc_spawn. */
struct it_proc {
    pid_t pid;
    char *desc; /* command line, for messages */
    int out_fd; /* read end of the stdout pipe; -1 once at EOF */
    char *buf;  /* stdout bytes read but not yet returned: buf[off..len) */
    size_t off, len, cap;
    size_t scanned; /* buf[off..scanned) is known to hold no '\n' */
    char *err_path; /* temp file holding the child's stderr */
    bool exited;
    int status;           /* exit code, or 128+signal; valid once exited */
    bool dumped;          /* stderr was shown by it_proc_dump_stderr */
    struct it_proc *next; /* live-process registry, for the exit handler */
};

static it_proc_t *live_procs;
static bool exit_handler_set;

/* ---- small helpers -------------------------------------------------- */

static int64_t now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Deadline for a timeout in ms; -1 means never. */
static int64_t deadline_after(int timeout_ms) {
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* Milliseconds left until deadline (0 when passed, -1 when never). */
static int remaining_ms(int64_t deadline) {
    if (deadline < 0)
        return -1;
    int64_t left = deadline - now_ms();
    return left <= 0 ? 0 : (left > INT32_MAX ? INT32_MAX : (int)left);
}

static void sleep_ms(int ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static char *vformat(const char *fmt, va_list ap) {
    char *s = NULL;

    cr_assert(vasprintf(&s, fmt, ap) >= 0, "it: out of memory formatting \"%s\"", fmt);
    return s;
}

static char *xstrdup(const char *s) {
    char *d = strdup(s);

    cr_assert(d != NULL, "it: out of memory");
    return d;
}

static bool verbose(void) {
    const char *v = getenv("IT_VERBOSE");
    return v != NULL && *v != '\0' && strcmp(v, "0") != 0;
}

/* ---- databases and SQL ---------------------------------------------- */

/* libpq prints NOTICEs to stderr; they are noise in test output. */
static void notice_processor(void *arg, const char *message) {
    (void)arg;
    if (verbose())
        fprintf(stderr, "it: server notice: %s", message);
}

PGconn *it_connect(const char *dbname) {
    if (dbname == NULL) {
        dbname = getenv("PGDATABASE");
        if (dbname == NULL || *dbname == '\0')
            dbname = "postgres";
    }
    const char *const keys[] = {"dbname", "fallback_application_name", NULL};
    const char *const vals[] = {dbname, "crwatch-itest", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 0);

    if (c == NULL || PQstatus(c) != CONNECTION_OK) {
        char msg[1024];
        const char *host = getenv("PGHOST"), *port = getenv("PGPORT"), *user = getenv("PGUSER");

        snprintf(msg, sizeof(msg), "%s", c ? PQerrorMessage(c) : "out of memory");
        PQfinish(c);
        cr_assert_fail("it_connect(dbname=%s) failed: %s(PGHOST=%s PGPORT=%s PGUSER=%s; "
                       "integration tests need the server scripts/test starts)",
                       dbname, msg, host ? host : "(unset)", port ? port : "(unset)",
                       user ? user : "(unset)");
    }
    PQsetNoticeProcessor(c, notice_processor, NULL);
    return c;
}

/* Run sql; abort the test unless its status is one of ok1/ok2. */
static PGresult *exec_checked(PGconn *c, const char *sql, ExecStatusType ok1, ExecStatusType ok2) {
    cr_assert(c != NULL, "it: NULL connection for SQL: %.500s", sql);
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);

    if (st != ok1 && st != ok2) {
        char msg[2048];

        snprintf(msg, sizeof(msg), "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(c));
        PQclear(r);
        cr_assert_fail("SQL failed (%s): %s  in: %.2000s", PQresStatus(st), msg, sql);
    }
    return r;
}

void it_exec(PGconn *c, const char *fmt, ...) {
    va_list ap;

    va_start(ap, fmt);
    char *sql = vformat(fmt, ap);
    va_end(ap);
    PQclear(exec_checked(c, sql, PGRES_COMMAND_OK, PGRES_TUPLES_OK));
    free(sql);
}

PGresult *it_query(PGconn *c, const char *fmt, ...) {
    va_list ap;

    va_start(ap, fmt);
    char *sql = vformat(fmt, ap);
    va_end(ap);
    PGresult *r = exec_checked(c, sql, PGRES_TUPLES_OK, PGRES_TUPLES_OK);
    free(sql);
    return r;
}

static char *first_value(PGresult *r) {
    char *v = NULL;

    if (PQntuples(r) > 0 && PQnfields(r) > 0 && !PQgetisnull(r, 0, 0))
        v = xstrdup(PQgetvalue(r, 0, 0));
    return v;
}

char *it_query_value(PGconn *c, const char *fmt, ...) {
    va_list ap;

    va_start(ap, fmt);
    char *sql = vformat(fmt, ap);
    va_end(ap);
    PGresult *r = exec_checked(c, sql, PGRES_TUPLES_OK, PGRES_TUPLES_OK);
    char *v = first_value(r);
    PQclear(r);
    free(sql);
    return v;
}

bool it_wait_sql_true(PGconn *c, int timeout_ms, const char *fmt, ...) {
    va_list ap;

    va_start(ap, fmt);
    char *sql = vformat(fmt, ap);
    va_end(ap);

    int64_t deadline = deadline_after(timeout_ms);
    bool ok = false;
    for (;;) {
        PGresult *r = exec_checked(c, sql, PGRES_TUPLES_OK, PGRES_TUPLES_OK);
        char *v = first_value(r);
        PQclear(r);
        ok = v != NULL && strcmp(v, "t") == 0;
        free(v);
        if (ok || remaining_ms(deadline) == 0)
            break;
        sleep_ms(20);
    }
    free(sql);
    return ok;
}

PGconn *it_db_create(const char *prefix, char *dbname_out, size_t n) {
    static unsigned counter;
    char name[64];

    cr_assert(prefix != NULL && *prefix != '\0' && strlen(prefix) <= 40,
              "it_db_create: prefix must be 1..40 characters");
    for (const char *s = prefix; *s; s++)
        cr_assert((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_',
                  "it_db_create: prefix \"%s\" may hold only [a-z0-9_]", prefix);
    snprintf(name, sizeof(name), "%s_%ld_%u", prefix, (long)getpid(), ++counter);
    cr_assert(dbname_out != NULL && n > strlen(name),
              "it_db_create: dbname_out too small for \"%s\"", name);

    PGconn *admin = it_connect(NULL);
    char *q = PQescapeIdentifier(admin, name, strlen(name));
    char *sql = NULL;
    cr_assert(q != NULL && asprintf(&sql, "CREATE DATABASE %s", q) >= 0, "it: out of memory");

    PGresult *r = PQexec(admin, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        /* A leftover of an earlier run whose pid matched: replace it. */
        if (state != NULL && strcmp(state, "42P04") == 0) {
            PQclear(r);
            it_db_drop(admin, name);
            r = exec_checked(admin, sql, PGRES_COMMAND_OK, PGRES_COMMAND_OK);
        } else {
            char msg[1024];
            snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(r));
            PQclear(r);
            cr_assert_fail("it_db_create: %s failed: %s", sql, msg);
        }
    }
    PQclear(r);
    free(sql);
    PQfreemem(q);
    PQfinish(admin);

    memcpy(dbname_out, name, strlen(name) + 1);
    return it_connect(name);
}

/*
 * Drop every replication slot of dbname, terminating the sessions that hold
 * them (walsenders, or backends with temporary slots). Returns the number of
 * slots left after timeout_ms (0 on success).
 */
static int drop_slots(PGconn *admin, const char *dbname, int timeout_ms) {
    const char *params[1] = {dbname};
    int64_t deadline = deadline_after(timeout_ms);
    int left = 0;

    for (;;) {
        PGresult *r = PQexecParams(admin,
                                   "SELECT slot_name, active_pid FROM pg_replication_slots "
                                   "WHERE database = $1",
                                   1, NULL, params, NULL, NULL, 0);
        cr_assert(PQresultStatus(r) == PGRES_TUPLES_OK, "it_db_drop: listing slots: %s",
                  PQresultErrorMessage(r));
        left = PQntuples(r);
        for (int i = 0; i < left; i++) {
            const char *slot = PQgetvalue(r, i, 0);
            if (!PQgetisnull(r, i, 1)) {
                const char *pid[1] = {PQgetvalue(r, i, 1)};
                /* Waits up to 5 s for the session to go away. */
                PQclear(PQexecParams(admin, "SELECT pg_terminate_backend($1::int, 5000)", 1, NULL,
                                     pid, NULL, NULL, 0));
            }
            const char *sp[1] = {slot};
            /* May fail while the slot is still active; the loop retries. */
            PQclear(PQexecParams(admin, "SELECT pg_drop_replication_slot($1)", 1, NULL, sp, NULL,
                                 NULL, 0));
        }
        PQclear(r);
        if (left == 0 || remaining_ms(deadline) == 0)
            break;
        sleep_ms(50);
    }
    return left;
}

void it_db_drop(PGconn *admin_or_null, const char *dbname) {
    PGconn *admin = admin_or_null ? admin_or_null : it_connect(NULL);

    cr_assert(dbname != NULL && *dbname != '\0', "it_db_drop: no database name");
    cr_assert(strcmp(PQdb(admin), dbname) != 0,
              "it_db_drop: cannot drop \"%s\" through a connection to it", dbname);

    char *q = PQescapeIdentifier(admin, dbname, strlen(dbname));
    char *sql = NULL;
    cr_assert(q != NULL && asprintf(&sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", q) >= 0,
              "it: out of memory");

    /* A still-running crwatch may create a slot between the two steps: retry. */
    char msg[1024] = "";
    bool dropped = false;
    for (int attempt = 0; attempt < 5 && !dropped; attempt++) {
        int left = drop_slots(admin, dbname, 10000);
        cr_assert(left == 0, "it_db_drop: %d replication slot(s) of \"%s\" could not be dropped",
                  left, dbname);
        PGresult *r = PQexec(admin, sql);
        dropped = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!dropped)
            snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(r));
        PQclear(r);
    }
    free(sql);
    PQfreemem(q);
    if (admin_or_null == NULL)
        PQfinish(admin);
    cr_assert(dropped, "it_db_drop: DROP DATABASE \"%s\" failed: %s", dbname, msg);
}

/* ---- child processes ------------------------------------------------ */

/* SIGKILL a child's process group and the child itself. */
static void kill_all(const it_proc_t *p) {
    kill(-p->pid, SIGKILL);
    kill(p->pid, SIGKILL);
}

/* Record the child's exit if it happened (or wait for it when block). */
static bool reap(it_proc_t *p, bool block) {
    int st;

    if (p->exited)
        return true;
    pid_t r;
    do
        r = waitpid(p->pid, &st, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return false;
    p->exited = true;
    if (r < 0)
        p->status = -1; /* reaped elsewhere (SIGCHLD ignored?): status unknown */
    else if (WIFEXITED(st))
        p->status = WEXITSTATUS(st);
    else if (WIFSIGNALED(st))
        p->status = 128 + WTERMSIG(st);
    else
        p->status = -1;
    return true;
}

static void registry_remove(it_proc_t *p) {
    for (it_proc_t **pp = &live_procs; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            return;
        }
    }
}

/* At exit, children not freed belong to a test that aborted midway: show and end them. */
static void exit_handler(void) {
    while (live_procs != NULL) {
        it_proc_t *p = live_procs;

        if (!reap(p, false))
            fprintf(stderr, "it: %s (pid %ld) still running at exit; killing it\n", p->desc,
                    (long)p->pid);
        if (!p->dumped)
            it_proc_dump_stderr(p);
        it_proc_free(p);
    }
}

/* environ with the "NAME=value" entries of env set ("NAME" alone: unset). */
static char **build_env(const char *const *env) {
    size_t n_env = 0, n_extra = 0;

    while (environ[n_env])
        n_env++;
    while (env && env[n_extra])
        n_extra++;
    char **out = calloc(n_env + n_extra + 1, sizeof(*out));
    cr_assert(out != NULL, "it: out of memory");

    size_t k = 0;
    for (size_t i = 0; i < n_env; i++) {
        size_t nl = strcspn(environ[i], "=");
        bool overridden = false;
        for (size_t j = 0; j < n_extra && !overridden; j++)
            overridden = strcspn(env[j], "=") == nl && strncmp(env[j], environ[i], nl) == 0;
        if (!overridden)
            out[k++] = environ[i];
    }
    for (size_t j = 0; j < n_extra; j++)
        if (strchr(env[j], '=') != NULL)
            out[k++] = (char *)env[j];
    out[k] = NULL;
    return out;
}

/* The command line as a shell would need it quoted, for messages. */
static char *describe(const char *const *argv) {
    size_t n = 1;

    for (size_t i = 0; argv[i]; i++)
        n += strlen(argv[i]) * 4 + 3;
    char *d = malloc(n);
    cr_assert(d != NULL, "it: out of memory");
    char *w = d;
    for (size_t i = 0; argv[i]; i++) {
        bool plain = argv[i][0] != '\0' && strpbrk(argv[i], " \t\n'\"\\$`;&|<>*?()[]{}") == NULL;
        if (i > 0)
            *w++ = ' ';
        if (plain) {
            w = stpcpy(w, argv[i]);
            continue;
        }
        *w++ = '\'';
        for (const char *c = argv[i]; *c; c++) {
            if (*c == '\'')
                w = stpcpy(w, "'\\''");
            else
                *w++ = *c;
        }
        *w++ = '\'';
    }
    *w = '\0';
    return d;
}

/* Child side of spawn, between fork and exec: async-signal-safe calls only. */
static void child_exec(const char *path, const char *const *argv, char **envp, pid_t parent,
                       int in_fd, int out_fd, int err_fd) {
    /* Own process group, so it_proc_free can end the grandchildren too. */
    setpgid(0, 0);
    /* Die with the test process, even when it crashes. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
        _exit(127);
    /* Criterion's own descriptors must not leak into the child. */
    if (close_range(3, ~0U, 0) != 0)
        for (int fd = 3; fd < 1024; fd++)
            close(fd);

    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    const int sigs[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaction(sigs[i], &dfl, NULL);

    execve(path, (char *const *)argv, envp);

    static const char msg[] = "it_proc_spawn: execve failed: ";
    ssize_t ignored = write(2, msg, sizeof(msg) - 1);
    ignored = write(2, path, strlen(path));
    ignored = write(2, "\n", 1);
    (void)ignored;
    _exit(127);
}

it_proc_t *it_proc_spawn_env(const char *path, const char *const *argv_full,
                             const char *const *env) {
    cr_assert(path != NULL && argv_full != NULL && argv_full[0] != NULL,
              "it_proc_spawn: path and argv[0] are required");

    it_proc_t *p = calloc(1, sizeof(*p));
    cr_assert(p != NULL, "it: out of memory");
    p->desc = describe(argv_full);
    p->out_fd = -1;

    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp == '\0')
        tmp = "/tmp";
    cr_assert(asprintf(&p->err_path, "%s/crwatch-it-%ld-XXXXXX.stderr", tmp, (long)getpid()) >= 0,
              "it: out of memory");
    int err_fd = mkostemps(p->err_path, 7, O_CLOEXEC | O_APPEND);
    cr_assert(err_fd >= 0, "it_proc_spawn: cannot create %s: %s", p->err_path, strerror(errno));

    int pipefd[2];
    cr_assert(pipe2(pipefd, O_CLOEXEC) == 0, "it_proc_spawn: pipe: %s", strerror(errno));
    int in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    cr_assert(in_fd >= 0, "it_proc_spawn: /dev/null: %s", strerror(errno));
    char **envp = build_env(env);

    /* Output still buffered here would be written twice if exec failed. */
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
        child_exec(path, argv_full, envp, parent, in_fd, pipefd[1], err_fd);
    int fork_errno = errno;

    free(envp);
    close(in_fd);
    close(err_fd);
    close(pipefd[1]);
    if (pid < 0) {
        close(pipefd[0]);
        cr_assert_fail("it_proc_spawn: fork for %s: %s", p->desc, strerror(fork_errno));
    }
    setpgid(pid, pid); /* also here: no race with an early kill(-pid) */

    p->pid = pid;
    p->out_fd = pipefd[0];
    cr_assert(fcntl(p->out_fd, F_SETFL, O_NONBLOCK) == 0, "it_proc_spawn: fcntl: %s",
              strerror(errno));

    p->next = live_procs;
    live_procs = p;
    if (!exit_handler_set) {
        atexit(exit_handler);
        exit_handler_set = true;
    }
    return p;
}

it_proc_t *it_proc_spawn(const char *path, const char *const *argv_full) {
    return it_proc_spawn_env(path, argv_full, NULL);
}

const char *it_crwatch_path(void) {
    const char *bin = getenv("CRW_BIN");
    return bin != NULL && *bin != '\0' ? bin : CRW_BIN;
}

/* argv for crwatch: [path, args..., -d, "dbname='<dbname>'"]; *conninfo is owned by the caller. */
static const char **crwatch_argv(const char *dbname, const char *const *args, char **conninfo) {
    size_t n = 0;

    while (args && args[n])
        n++;
    const char **argv = calloc(n + 4, sizeof(*argv));
    cr_assert(argv != NULL, "it: out of memory");
    size_t k = 0;
    argv[k++] = it_crwatch_path();
    for (size_t i = 0; i < n; i++)
        argv[k++] = args[i];
    *conninfo = NULL;
    if (dbname != NULL) {
        /* conninfo value quoting: '...' with \ and ' backslash-escaped. */
        char *ci = malloc(strlen(dbname) * 2 + sizeof("dbname=''"));
        cr_assert(ci != NULL, "it: out of memory");
        char *w = ci + sprintf(ci, "dbname='");
        for (const char *s = dbname; *s; s++) {
            if (*s == '\'' || *s == '\\')
                *w++ = '\\';
            *w++ = *s;
        }
        strcpy(w, "'");
        argv[k++] = "-d";
        argv[k++] = ci;
        *conninfo = ci;
    }
    argv[k] = NULL;
    return argv;
}

it_proc_t *it_crwatch_start(const char *dbname, const char *const *args) {
    char *conninfo;
    const char **argv = crwatch_argv(dbname, args, &conninfo);
    it_proc_t *p = it_proc_spawn(argv[0], argv);

    free(argv);
    free(conninfo);
    return p;
}

it_proc_t *it_crwatch_stream(const char *dbname, const char *const *base, const char *const *extra) {
    const char *args[IT_STREAM_MAX_SETTINGS * 2 + 4];
    char slot[160];
    int n = 0;
    snprintf(slot, sizeof slot, "slot.name=%s", dbname); /* slots are cluster-wide: one per test database */
    args[n++] = "stream";
    args[n++] = "-X";
    args[n++] = slot;
    const char *const *lists[2] = {base, extra};
    for (int l = 0; l < 2; l++)
        for (int i = 0; lists[l] && lists[l][i]; i++) {
            cr_assert_lt(n, (int)(sizeof args / sizeof args[0]) - 2, "it_crwatch_stream: too many settings");
            args[n++] = "-X";
            args[n++] = lists[l][i];
        }
    args[n] = NULL;
    it_proc_t *p = it_crwatch_start(dbname, args);
    /* "streaming from slot ..." (logical) or "streaming by polling ..." */
    if (!it_proc_stderr_wait(p, "INFO: streaming ", IT_STREAM_TIMEOUT_MS)) {
        it_proc_dump_stderr(p);
        cr_assert_fail("crwatch did not start streaming");
    }
    return p;
}

/* ---- psql ---------------------------------------------------------- */

const char *it_psql_path(void) {
    static char found[4096];
    if (found[0])
        return found;
    const char *path = getenv("PATH");
    cr_assert(path, "no PATH");
    char *copy = strdup(path);
    for (char *save = NULL, *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        snprintf(found, sizeof found, "%s/psql", *dir ? dir : ".");
        if (access(found, X_OK) == 0) {
            free(copy);
            return found;
        }
    }
    free(copy);
    found[0] = '\0';
    cr_assert_fail("psql is not on PATH");
    return NULL;
}

void it_apply_sql(const char *db, const char *rel) {
    char file[4096];
    snprintf(file, sizeof file, "%s/%s", CRW_SOURCE_DIR, rel);
    const char *argv[] = {"psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-f", file, NULL};
    char *out = NULL, *err = NULL;
    int rc = it_run(it_psql_path(), argv, 60000, &out, &err);
    cr_assert_eq(rc, 0, "psql -f %s exited %d:\n%s", rel, rc, err);
    free(out);
    free(err);
}

/*
 * Read what stdout has within wait_ms (0: only what is there now, -1:
 * until something comes). Marks EOF by closing out_fd.
 */
static void fill(it_proc_t *p, int wait_ms) {
    if (p->out_fd < 0)
        return;
    struct pollfd pfd = {.fd = p->out_fd, .events = POLLIN};
    if (poll(&pfd, 1, wait_ms) <= 0)
        return;
    for (;;) {
        if (p->off > 0 && p->off == p->len) {
            p->off = p->len = p->scanned = 0;
        } else if (p->off > 0 && p->off >= p->cap / 2) {
            /* Compact: drop the bytes already returned. */
            memmove(p->buf, p->buf + p->off, p->len - p->off);
            p->len -= p->off;
            p->scanned -= p->off;
            p->off = 0;
        }
        if (p->cap - p->len < 65536) {
            size_t ncap = p->cap ? p->cap * 2 : 131072;
            char *nb = realloc(p->buf, ncap);
            cr_assert(nb != NULL, "it: out of memory buffering stdout of %s", p->desc);
            p->buf = nb;
            p->cap = ncap;
        }
        ssize_t n = read(p->out_fd, p->buf + p->len, p->cap - p->len);
        if (n > 0) {
            p->len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        /* EOF (or a read error, treated as EOF). */
        close(p->out_fd);
        p->out_fd = -1;
        return;
    }
}

/* Offset of the next '\n' in the unread bytes, or -1. */
static ssize_t find_newline(it_proc_t *p) {
    if (p->scanned < p->off)
        p->scanned = p->off;
    char *nl = memchr(p->buf + p->scanned, '\n', p->len - p->scanned);
    if (nl == NULL) {
        p->scanned = p->len;
        return -1;
    }
    return nl - p->buf;
}

/*
 * Wait until a line can be returned: 1 when one can (a complete line, or
 * a final unterminated one at EOF), 0 on timeout, -1 at EOF with nothing.
 */
static int wait_line(it_proc_t *p, int timeout_ms) {
    int64_t deadline = deadline_after(timeout_ms);
    bool last = false;

    for (;;) {
        if (p->len > p->off && find_newline(p) >= 0)
            return 1;
        if (p->out_fd < 0)
            return p->len > p->off ? 1 : -1;
        if (last)
            return 0;
        int w = remaining_ms(deadline);
        if (w == 0)
            last = true; /* one more non-blocking read, then give up */
        fill(p, w);
    }
}

char *it_proc_read_line(it_proc_t *p, int timeout_ms) {
    cr_assert(p != NULL, "it_proc_read_line: NULL process");
    if (wait_line(p, timeout_ms) != 1)
        return NULL;

    ssize_t nl = find_newline(p);
    size_t end = nl >= 0 ? (size_t)nl : p->len;
    size_t n = end - p->off;
    char *line = malloc(n + 1);
    cr_assert(line != NULL, "it: out of memory");
    memcpy(line, p->buf + p->off, n);
    line[n] = '\0';
    p->off = nl >= 0 ? end + 1 : end;
    p->scanned = p->off;
    return line;
}

json_object *it_proc_read_event(it_proc_t *p, int timeout_ms) {
    char *line = it_proc_read_line(p, timeout_ms);
    if (line == NULL)
        return NULL;

    size_t n = strlen(line);
    json_tokener *tok = json_tokener_new();
    cr_assert(tok != NULL, "it: out of memory");
    json_object *o = json_tokener_parse_ex(tok, line, (int)n);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t used = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    while (used < n && (line[used] == ' ' || line[used] == '\t' || line[used] == '\r'))
        used++;
    if (o == NULL || jerr != json_tokener_success || used != n) {
        json_object_put(o);
        it_proc_dump_stderr(p);
        cr_assert_fail(
            "stdout line of %s is not one JSON value (%s): %.2000s", p->desc,
            jerr != json_tokener_success ? json_tokener_error_desc(jerr) : "trailing data", line);
    }
    free(line);
    return o;
}

json_object *it_proc_expect_event(it_proc_t *p, int timeout_ms) {
    json_object *o = it_proc_read_event(p, timeout_ms);

    if (o == NULL) {
        bool eof = p->out_fd < 0;
        it_proc_dump_stderr(p);
        cr_assert_fail("no event from %s within %d ms (%s)", p->desc, timeout_ms,
                       eof ? "its stdout was closed" : "timed out");
    }
    return o;
}

bool it_proc_no_line_within(it_proc_t *p, int ms) {
    cr_assert(p != NULL, "it_proc_no_line_within: NULL process");
    return wait_line(p, ms) != 1;
}

int it_proc_wait(it_proc_t *p, int timeout_ms) {
    cr_assert(p != NULL, "it_proc_wait: NULL process");
    int64_t deadline = deadline_after(timeout_ms);

    for (;;) {
        if (reap(p, false))
            return p->status;
        int w = remaining_ms(deadline);
        if (w == 0)
            return -1;
        int step = (w < 0 || w > 10) ? 10 : w;
        /* Keep draining stdout: a child blocked on a full pipe never exits. */
        if (p->out_fd >= 0)
            fill(p, step);
        else
            sleep_ms(step);
    }
}

int it_proc_signal_wait(it_proc_t *p, int sig, int timeout_ms) {
    cr_assert(p != NULL, "it_proc_signal_wait: NULL process");
    if (!reap(p, false))
        kill(p->pid, sig);
    int st = it_proc_wait(p, timeout_ms);
    if (st == -1 && !p->exited) {
        kill_all(p);
        reap(p, true);
        it_proc_dump_stderr(p);
        cr_assert_fail("%s (pid %ld) did not exit within %d ms of signal %d; killed it", p->desc,
                       (long)p->pid, timeout_ms, sig);
    }
    return st;
}

void it_crwatch_stop(it_proc_t *p, int timeout_ms) {
    int rc = it_proc_signal_wait(p, SIGTERM, timeout_ms);
    if (rc != 0)
        it_proc_dump_stderr(p);
    cr_assert_eq(rc, 0, "crwatch exited %d", rc);
    it_proc_free(p);
}

bool it_proc_running(it_proc_t *p) {
    cr_assert(p != NULL, "it_proc_running: NULL process");
    return !reap(p, false);
}

pid_t it_proc_pid(const it_proc_t *p) {
    return p->pid;
}

const char *it_proc_stderr_path(const it_proc_t *p) {
    return p->err_path;
}

char *it_proc_stderr(it_proc_t *p) {
    cr_assert(p != NULL, "it_proc_stderr: NULL process");
    FILE *f = fopen(p->err_path, "rb");
    char *s = NULL;
    size_t n = 0;

    if (f != NULL) {
        FILE *m = open_memstream(&s, &n);
        cr_assert(m != NULL, "it: out of memory");
        char chunk[65536];
        size_t got;
        while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0)
            fwrite(chunk, 1, got, m);
        fclose(m);
        fclose(f);
    }
    return s != NULL ? s : xstrdup("");
}

bool it_proc_stderr_wait(it_proc_t *p, const char *needle, int timeout_ms) {
    cr_assert(p != NULL && needle != NULL, "it_proc_stderr_wait: NULL argument");
    int64_t deadline = deadline_after(timeout_ms);

    for (;;) {
        /* Check exit first: stderr read after it holds everything. */
        bool gone = reap(p, false);
        char *s = it_proc_stderr(p);
        bool found = strstr(s, needle) != NULL;
        free(s);
        if (found)
            return true;
        int w = remaining_ms(deadline);
        if (gone || w == 0)
            return false;
        int step = (w < 0 || w > 20) ? 20 : w;
        if (p->out_fd >= 0)
            fill(p, step);
        else
            sleep_ms(step);
    }
}

/* Longer stderr is shown as its head and tail: the start and the end tell most. */
#define DUMP_HEAD 4096
#define DUMP_TAIL 28672

void it_proc_dump_stderr(it_proc_t *p) {
    if (p == NULL)
        return;
    char *s = it_proc_stderr(p);
    size_t n = strlen(s);
    char state[64];

    if (reap(p, false))
        snprintf(state, sizeof(state), "exited with status %d", p->status);
    else
        snprintf(state, sizeof(state), "running");
    fprintf(stderr, "---- stderr of %s (pid %ld, %s) ----\n", p->desc, (long)p->pid, state);
    if (n > DUMP_HEAD + DUMP_TAIL) {
        fwrite(s, 1, DUMP_HEAD, stderr);
        fprintf(stderr, "\n[... %zu bytes left out; set IT_KEEP_LOGS=1 to keep the file ...]\n",
                n - DUMP_HEAD - DUMP_TAIL);
        fwrite(s + n - DUMP_TAIL, 1, DUMP_TAIL, stderr);
    } else {
        fwrite(s, 1, n, stderr);
    }
    fprintf(stderr, "%s---- end of stderr ----\n", n > 0 && s[n - 1] != '\n' ? "\n" : "");
    fflush(stderr);
    free(s);
    p->dumped = true;
}

void it_proc_free(it_proc_t *p) {
    if (p == NULL)
        return;
    registry_remove(p);
    if (!reap(p, false)) {
        kill_all(p);
        reap(p, true);
    } else {
        /* The child is gone; end any grandchildren left in its group. */
        kill(-p->pid, SIGKILL);
    }
    if (verbose() && !p->dumped)
        it_proc_dump_stderr(p);
    if (p->out_fd >= 0)
        close(p->out_fd);
    const char *keep = getenv("IT_KEEP_LOGS");
    if (keep != NULL && *keep != '\0' && strcmp(keep, "0") != 0)
        fprintf(stderr, "it: stderr of %s kept in %s\n", p->desc, p->err_path);
    else
        unlink(p->err_path);
    free(p->err_path);
    free(p->buf);
    free(p->desc);
    free(p);
}

int it_run(const char *path, const char *const *argv_full, int timeout_ms, char **out, char **err) {
    it_proc_t *p = it_proc_spawn(path, argv_full);
    int st = it_proc_wait(p, timeout_ms);

    if (st == -1 && !p->exited) {
        kill_all(p);
        reap(p, true);
        it_proc_dump_stderr(p);
        cr_assert_fail("%s did not exit within %d ms; killed it", p->desc, timeout_ms);
    }
    /* Collect the rest of stdout; a grandchild holding the pipe gets 2 s. */
    int64_t deadline = deadline_after(2000);
    while (p->out_fd >= 0 && remaining_ms(deadline) > 0)
        fill(p, remaining_ms(deadline));
    fill(p, 0);

    if (out != NULL) {
        size_t n = p->len - p->off;
        *out = malloc(n + 1);
        cr_assert(*out != NULL, "it: out of memory");
        memcpy(*out, p->buf + p->off, n);
        (*out)[n] = '\0';
    }
    if (err != NULL)
        *err = it_proc_stderr(p);
    it_proc_free(p);
    return st;
}

int it_run_crwatch(const char *dbname, const char *const *args, int timeout_ms, char **out,
                   char **err) {
    char *conninfo;
    const char **argv = crwatch_argv(dbname, args, &conninfo);
    int st = it_run(argv[0], argv, timeout_ms, out, err);

    free(argv);
    free(conninfo);
    return st;
}

/* ---- JSON ----------------------------------------------------------- */

/* Walk path from o; true when every step exists (*out may then be NULL: JSON null). */
static bool json_lookup(json_object *o, const char *path, json_object **out) {
    *out = NULL;
    if (o == NULL || path == NULL)
        return false;
    char *copy = xstrdup(path);
    json_object *cur = o;
    bool ok = true;
    char *save = NULL;

    for (char *part = strtok_r(copy, ".", &save); part != NULL && ok;
         part = strtok_r(NULL, ".", &save)) {
        json_object *next = NULL;
        if (cur == NULL) {
            ok = false;
        } else if (json_object_is_type(cur, json_type_object)) {
            ok = json_object_object_get_ex(cur, part, &next);
        } else if (json_object_is_type(cur, json_type_array)) {
            char *end;
            errno = 0;
            unsigned long idx = strtoul(part, &end, 10);
            ok = *part >= '0' && *part <= '9' && *end == '\0' && errno == 0 &&
                 idx < json_object_array_length(cur);
            if (ok)
                next = json_object_array_get_idx(cur, idx);
        } else {
            ok = false;
        }
        cur = next;
    }
    free(copy);
    if (ok)
        *out = cur;
    return ok;
}

json_object *it_json_get(json_object *o, const char *path) {
    json_object *v;
    return json_lookup(o, path, &v) ? v : NULL;
}

const char *it_json_str(json_object *o, const char *path) {
    json_object *v = it_json_get(o, path);
    return v != NULL ? json_object_get_string(v) : NULL;
}

bool it_json_array_has(json_object *o, const char *path, const char *s) {
    json_object *a = it_json_get(o, path);
    for (size_t i = 0; a && json_object_is_type(a, json_type_array) && i < json_object_array_length(a); i++)
        if (!strcmp(json_object_get_string(json_object_array_get_idx(a, i)), s))
            return true;
    return false;
}

void it_expect_str(json_object *o, const char *path, const char *want) {
    const char *got = it_json_str(o, path);
    cr_assert(got && !strcmp(got, want), "%s: want '%s', got '%s' in %s", path, want, got ? got : "(missing)",
              json_object_to_json_string(o));
}

bool it_json_exists(json_object *o, const char *path) {
    json_object *v;
    return json_lookup(o, path, &v);
}

void it_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int64_t it_wall_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

PGconn *it_connect_thread(const char *db, char *err, size_t n) {
    char conninfo[256];
    snprintf(conninfo, sizeof conninfo, "dbname=%s", db);
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, n, "%s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}
