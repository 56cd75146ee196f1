/*
 * exec.c — sink=exec: events handed to a local command run through
 * /bin/sh -c exec.command (docs/handlers.md).
 *
 * exec.mode=stream (default): one long-lived child per worker thread (so one
 * child with the default workers=1).  crwatch writes one event JSON per line
 * to its stdin and reads one reply line per event from its stdout:
 *   ok              handled;
 *   retry [reason]  transient failure: redelivered after a backoff (retry.*);
 *   fail [reason]   permanent failure: dead-lettered at once with the reason.
 * Keywords are case-insensitive.  Any other line is a protocol error: the
 * child is restarted and the event retried.  A child that exits, is killed,
 * closes its stdout, or does not answer within exec.timeout.ms is killed
 * (with its process group), restarted after a backoff (retry.backoff.*,
 * reset by the next good reply) and the event in flight is delivered again,
 * counting as one retry, so an event that kills its handler every time ends
 * in the dead-letter file after retry.max retries instead of looping.
 *
 * exec.mode=per-event: one child per event; the event (one line) on its
 * stdin, which is then closed.  Exit 0: ok; 75 (EX_TEMPFAIL): retry; any
 * other status: fail (dead-lettered with the status); killed by a signal or
 * past exec.timeout.ms: retry.  Its stdout goes to crwatch's stderr (crwatch's
 * stdout carries only data).  The environment carries CRWATCH_EVENT_TYPE,
 * CRWATCH_EVENT_KIND, CRWATCH_EVENT_KEY, CRWATCH_EVENT_ID and CRWATCH_ATTEMPT.
 *
 * Both modes: children run in their own process group (a terminal's Ctrl-C
 * reaches only crwatch, which then drains them), with default signal
 * dispositions and an empty signal mask, stderr shared with crwatch, no other
 * descriptor inherited, and CRWATCH_WORKER in the environment.  Children are
 * started with posix_spawn, safe in a threaded process.
 *
 * Threads: deliver() runs on worker threads, each using only its own child;
 * interrupt() (any thread) writes to a self-pipe every wait also polls.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "sink/local.h"

extern char **environ;

#define EX_TEMPFAIL_CODE 75
#define SLICE_MS 50 /* without pidfds: how often a waiting worker checks on its child */

typedef struct {
    pid_t pid;               /* 0: not running */
    int pidfd;               /* -1: unavailable (then waitpid is polled) */
    int to_child, from_child;
    crw_buf_t rbuf;          /* reply bytes read so far */
    int restart_ms;          /* current restart backoff; 0 after a good reply */
    int64_t next_spawn_ms;   /* do not restart before */
} child_t;

typedef struct {
    char *command;
    crw_exec_mode_t mode;
    int timeout_ms;
    int backoff_initial_ms, backoff_max_ms;
    int workers;
    child_t *children;       /* stream mode: one per worker */
    int wake[2];             /* self-pipe: readable once stopping */
    atomic_bool stopping;
} exec_t;

static int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    return -1;
#endif
}

static void describe_status(int st, char *buf, size_t n) {
    if (WIFEXITED(st))
        snprintf(buf, n, "exited with status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(buf, n, "ended (wait status %d)", st);
}

/* Non-blocking reap; returns true when pid is gone (*st set; -1 if it could not be known). */
static bool reap(pid_t pid, int *st) {
    pid_t r = waitpid(pid, st, WNOHANG);
    if (r == pid)
        return true;
    if (r < 0 && errno == ECHILD) { /* reaped elsewhere (SIGCHLD ignored by an embedding program) */
        *st = -1;
        return true;
    }
    return false;
}

/* Kills pid's process group and reaps pid. */
static void kill_reap(pid_t pid, int *st) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    int s = 0;
    while (waitpid(pid, &s, 0) < 0 && errno == EINTR)
        ;
    if (st)
        *st = s;
}

/* Environment: ours plus extras ("NAME=value"). */
static char **make_env(char *const *extra, int nextra) {
    int n = 0;
    while (environ && environ[n])
        n++;
    char **env = crw_calloc((size_t)(n + nextra + 1), sizeof *env);
    int k = 0;
    for (int i = 0; i < n; i++) {
        bool shadowed = false;
        for (int j = 0; j < nextra && !shadowed; j++) {
            size_t l = (size_t)(strchr(extra[j], '=') - extra[j]) + 1;
            shadowed = !strncmp(environ[i], extra[j], l);
        }
        if (!shadowed)
            env[k++] = environ[i];
    }
    for (int j = 0; j < nextra; j++)
        env[k++] = extra[j];
    env[k] = NULL;
    return env;
}

/* Starts /bin/sh -c command with stdin_fd and stdout_fd as its 0 and 1. */
static int spawn_sh(exec_t *x, int stdin_fd, int stdout_fd, char *const *extra, int nextra, pid_t *pid,
                    char *errstr, size_t n) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, stdin_fd, 0);
    posix_spawn_file_actions_adddup2(&fa, stdout_fd, 1);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    posix_spawn_file_actions_addclosefrom_np(&fa, 3); /* ours are O_CLOEXEC; this covers anyone's */
#endif
    posix_spawnattr_init(&at);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    int sigs[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaddset(&defaults, sigs[i]);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &defaults);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {"/bin/sh", "-c", x->command, NULL};
    char **env = make_env(extra, nextra);
    int rc = posix_spawn(pid, "/bin/sh", &fa, &at, argv, env);
    free(env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc != 0) {
        snprintf(errstr, n, "cannot start /bin/sh -c '%s': %s", x->command, strerror(rc));
        return -1;
    }
    return 0;
}

/* Sleeps up to ms unless stopping; returns false when stopping. */
static bool nap(exec_t *x, int ms) {
    struct pollfd p = {x->wake[0], POLLIN, 0};
    if (ms > 0)
        poll(&p, 1, ms);
    return !atomic_load(&x->stopping);
}

/* ---- stream mode ------------------------------------------------------------------------ */

static void child_close(child_t *c) {
    if (c->to_child >= 0)
        close(c->to_child);
    if (c->from_child >= 0)
        close(c->from_child);
    if (c->pidfd >= 0)
        close(c->pidfd);
    c->to_child = c->from_child = c->pidfd = -1;
    c->pid = 0;
    crw_buf_reset(&c->rbuf);
}

/* Waits up to ms for pid to end on its own; true (and *st) when it did. */
static bool reap_within(pid_t pid, int pidfd, int ms, int *st) {
    int64_t deadline = crw_clock_mono_ms() + ms;
    while (!reap(pid, st)) {
        int64_t left = deadline - crw_clock_mono_ms();
        if (left <= 0)
            return false;
        if (pidfd >= 0) {
            struct pollfd p = {pidfd, POLLIN, 0};
            poll(&p, 1, (int)left);
        } else {
            struct timespec ts = {0, 5 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return true;
}

/*
 * The child is dead or unusable: reap it (killing it, and its process group,
 * if it does not end within 200 ms), close its pipes, schedule the restart.
 * reaped: its wait status when the caller reaped it already, else NULL.
 */
static void child_lost(exec_t *x, child_t *c, int worker, const char *what, const int *reaped, char *reason,
                       size_t n) {
    int st = 0;
    char how[96];
    pid_t pid = c->pid;
    if (reaped || reap_within(pid, c->pidfd, 200, &st)) {
        if (reaped)
            st = *reaped;
        kill(-pid, SIGKILL); /* grandchildren left in its group, maybe holding the pipes */
        if (st == -1)
            snprintf(how, sizeof how, "ended");
        else
            describe_status(st, how, sizeof how);
    } else {
        kill_reap(pid, &st);
        snprintf(how, sizeof how, "was killed by crwatch");
    }
    child_close(c);
    c->restart_ms = c->restart_ms ? c->restart_ms * 2 : x->backoff_initial_ms;
    if (c->restart_ms > x->backoff_max_ms)
        c->restart_ms = x->backoff_max_ms;
    int delay = c->restart_ms / 2 + (int)((unsigned)rand() % (unsigned)(c->restart_ms / 2 + 1));
    c->next_spawn_ms = crw_clock_mono_ms() + delay;
    snprintf(reason, n, "handler process %d %s (%s)", (int)pid, how, what);
    crw_warn("exec: worker %d: handler process %d %s (%s); restarting in %d ms, the event is delivered again",
             worker, (int)pid, how, what, delay);
}

static int child_start(exec_t *x, child_t *c, int worker, char *reason, size_t n) {
    int64_t wait = c->next_spawn_ms - crw_clock_mono_ms();
    if (wait > 0 && !nap(x, (int)wait)) {
        snprintf(reason, n, "stopping");
        return -1;
    }
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) < 0) {
        snprintf(reason, n, "pipe: %s", strerror(errno));
        return -1;
    }
    if (pipe2(out, O_CLOEXEC) < 0) {
        snprintf(reason, n, "pipe: %s", strerror(errno));
        close(in[0]);
        close(in[1]);
        return -1;
    }
    char wenv[32];
    snprintf(wenv, sizeof wenv, "CRWATCH_WORKER=%d", worker);
    char *extra[] = {wenv};
    pid_t pid;
    int rc = spawn_sh(x, in[0], out[1], extra, 1, &pid, reason, n);
    close(in[0]);
    close(out[1]);
    if (rc < 0) {
        close(in[1]);
        close(out[0]);
        c->next_spawn_ms = crw_clock_mono_ms() + x->backoff_initial_ms;
        return -1;
    }
    fcntl(in[1], F_SETFL, fcntl(in[1], F_GETFL) | O_NONBLOCK);
    fcntl(out[0], F_SETFL, fcntl(out[0], F_GETFL) | O_NONBLOCK);
    c->pid = pid;
    c->to_child = in[1];
    c->from_child = out[0];
    c->pidfd = open_pidfd(pid);
    crw_buf_reset(&c->rbuf);
    crw_debug("exec: worker %d: started handler process %d", worker, (int)pid);
    return 0;
}

/* Parses a reply line (NUL-terminated, newline stripped). Returns a result, or -1 if malformed. */
static int parse_reply(char *line, char *reason, size_t n) {
    size_t l = strlen(line);
    while (l > 0 && (line[l - 1] == '\r' || line[l - 1] == ' ' || line[l - 1] == '\t'))
        line[--l] = '\0';
    const char *rest = NULL;
    int r = -1;
    if (!strcasecmp(line, "ok"))
        return CRW_HANDLER_OK;
    if (!strncasecmp(line, "retry", 5) && (line[5] == '\0' || line[5] == ' ')) {
        r = CRW_HANDLER_RETRY;
        rest = line + 5;
    } else if (!strncasecmp(line, "fail", 4) && (line[4] == '\0' || line[4] == ' ')) {
        r = CRW_HANDLER_FAIL;
        rest = line + 4;
    } else
        return -1;
    while (*rest == ' ')
        rest++;
    snprintf(reason, n, "%s", *rest ? rest : r == CRW_HANDLER_RETRY ? "the handler replied retry"
                                                                     : "the handler replied fail");
    return r;
}

static int stream_deliver(exec_t *x, const crw_handler_event_t *ev, char *reason, size_t n) {
    child_t *c = &x->children[ev->worker];
    if (!c->pid && child_start(x, c, ev->worker, reason, n) < 0)
        return CRW_HANDLER_RETRY;
    /* Write the line while reading: a child may talk before it has read everything. */
    const char *parts[2] = {ev->event, "\n"};
    size_t lens[2] = {ev->event_len, 1}, part = 0, off = 0;
    int64_t deadline = x->timeout_ms ? crw_clock_mono_ms() + x->timeout_ms : 0;
    crw_buf_reset(&c->rbuf);
    for (;;) {
        struct pollfd p[4] = {{c->from_child, POLLIN, 0}, {x->wake[0], POLLIN, 0}, {c->pidfd, POLLIN, 0},
                              {part < 2 ? c->to_child : -1, POLLOUT, 0}};
        int wait_ms = -1;
        if (deadline) {
            int64_t left = deadline - crw_clock_mono_ms();
            if (left <= 0) {
                char what[96];
                snprintf(what, sizeof what, "no reply within exec.timeout.ms=%d", x->timeout_ms);
                child_lost(x, c, ev->worker, what, NULL, reason, n);
                return CRW_HANDLER_RETRY;
            }
            wait_ms = (int)left;
        }
        if (c->pidfd < 0 && (wait_ms < 0 || wait_ms > SLICE_MS))
            wait_ms = SLICE_MS;
        int pr = poll(p, 4, wait_ms);
        if (pr < 0 && errno != EINTR) {
            snprintf(reason, n, "poll: %s", strerror(errno));
            return CRW_HANDLER_RETRY;
        }
        if (atomic_load(&x->stopping)) {
            snprintf(reason, n, "stopping");
            return CRW_HANDLER_RETRY;
        }
        if (p[3].revents & (POLLOUT | POLLERR | POLLHUP)) {
            ssize_t w = write(c->to_child, parts[part] + off, lens[part] - off);
            if (w < 0 && errno != EAGAIN && errno != EINTR) {
                /* EPIPE: the child is gone (SIGPIPE is blocked on worker threads). */
                sigset_t pipe;
                struct timespec zero = {0, 0};
                sigemptyset(&pipe);
                sigaddset(&pipe, SIGPIPE);
                sigtimedwait(&pipe, NULL, &zero); /* consume the pending SIGPIPE */
                child_lost(x, c, ev->worker, "its stdin is closed", NULL, reason, n);
                return CRW_HANDLER_RETRY;
            }
            if (w > 0 && (off += (size_t)w) == lens[part]) {
                part++;
                off = 0;
            }
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            char buf[4096];
            ssize_t r = read(c->from_child, buf, sizeof buf);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                child_lost(x, c, ev->worker, "its stdout closed before a reply", NULL, reason, n);
                return CRW_HANDLER_RETRY;
            }
            if (r > 0) {
                crw_buf_put(&c->rbuf, buf, (size_t)r);
                char *nl = memchr(c->rbuf.data, '\n', c->rbuf.len);
                if (nl) {
                    if (part < 2 || nl + 1 != c->rbuf.data + c->rbuf.len) {
                        child_lost(x, c, ev->worker,
                                   part < 2 ? "it replied before reading the whole event"
                                            : "it wrote more than one reply line",
                                   NULL, reason, n);
                        return CRW_HANDLER_RETRY;
                    }
                    *nl = '\0';
                    char line[256];
                    snprintf(line, sizeof line, "%s", c->rbuf.data);
                    int res = parse_reply(c->rbuf.data, reason, n);
                    if (res < 0) {
                        char what[360];
                        snprintf(what, sizeof what, "unexpected reply '%s', want ok, retry or fail <reason>", line);
                        child_lost(x, c, ev->worker, what, NULL, reason, n);
                        return CRW_HANDLER_RETRY;
                    }
                    crw_buf_reset(&c->rbuf);
                    c->restart_ms = 0;
                    return res;
                }
                if (c->rbuf.len > 64 * 1024) {
                    child_lost(x, c, ev->worker, "reply line longer than 64 KiB", NULL, reason, n);
                    return CRW_HANDLER_RETRY;
                }
            }
        }
        int st;
        if (c->pidfd >= 0 ? (p[2].revents & POLLIN) != 0 : reap(c->pid, &st)) {
            child_lost(x, c, ev->worker, "before replying", c->pidfd >= 0 ? NULL : &st, reason, n);
            return CRW_HANDLER_RETRY;
        }
    }
}

/* ---- per-event mode ----------------------------------------------------------------------- */

static int per_event_deliver(exec_t *x, const crw_handler_event_t *ev, char *reason, size_t n) {
    int in[2];
    if (pipe2(in, O_CLOEXEC) < 0) {
        snprintf(reason, n, "pipe: %s", strerror(errno));
        return CRW_HANDLER_RETRY;
    }
    crw_buf_t e[6];
    for (int i = 0; i < 6; i++)
        crw_buf_init(&e[i]);
    crw_buf_printf(&e[0], "CRWATCH_EVENT_TYPE=%s", ev->type);
    crw_buf_printf(&e[1], "CRWATCH_EVENT_KIND=%s", ev->kind);
    crw_buf_puts(&e[2], "CRWATCH_EVENT_KEY=");
    crw_buf_put(&e[2], ev->key, ev->key_len);
    crw_buf_printf(&e[3], "CRWATCH_EVENT_ID=%s", ev->id);
    crw_buf_printf(&e[4], "CRWATCH_ATTEMPT=%u", ev->attempt);
    crw_buf_printf(&e[5], "CRWATCH_WORKER=%d", ev->worker);
    char *extra[6];
    for (int i = 0; i < 6; i++)
        extra[i] = e[i].data;
    pid_t pid;
    int rc = spawn_sh(x, in[0], STDERR_FILENO, extra, 6, &pid, reason, n);
    for (int i = 0; i < 6; i++)
        crw_buf_free(&e[i]);
    close(in[0]);
    if (rc < 0) {
        close(in[1]);
        return CRW_HANDLER_RETRY;
    }
    fcntl(in[1], F_SETFL, fcntl(in[1], F_GETFL) | O_NONBLOCK);
    int pidfd = open_pidfd(pid);
    int64_t deadline = x->timeout_ms ? crw_clock_mono_ms() + x->timeout_ms : 0;
    const char *parts[2] = {ev->event, "\n"};
    size_t lens[2] = {ev->event_len, 1}, part = 0, off = 0;
    int st = 0, slice = 1;
    for (;;) {
        if (pidfd < 0 && reap(pid, &st))
            break;
        struct pollfd p[3] = {{x->wake[0], POLLIN, 0}, {pidfd, POLLIN, 0}, {in[1] >= 0 ? in[1] : -1, POLLOUT, 0}};
        int wait_ms = -1;
        if (deadline) {
            int64_t left = deadline - crw_clock_mono_ms();
            if (left <= 0) {
                kill_reap(pid, NULL);
                if (in[1] >= 0)
                    close(in[1]);
                if (pidfd >= 0)
                    close(pidfd);
                snprintf(reason, n, "the handler did not exit within exec.timeout.ms=%d", x->timeout_ms);
                return CRW_HANDLER_RETRY;
            }
            wait_ms = (int)left;
        }
        if (pidfd < 0) { /* no pidfd: poll the child with growing slices */
            if (wait_ms < 0 || wait_ms > slice)
                wait_ms = slice;
            slice = slice < SLICE_MS ? slice * 2 : SLICE_MS;
        }
        poll(p, 3, wait_ms);
        if (atomic_load(&x->stopping)) {
            kill_reap(pid, NULL);
            if (in[1] >= 0)
                close(in[1]);
            if (pidfd >= 0)
                close(pidfd);
            snprintf(reason, n, "stopping");
            return CRW_HANDLER_RETRY;
        }
        if (in[1] >= 0 && (p[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = write(in[1], parts[part] + off, lens[part] - off);
            if (w < 0 && errno != EAGAIN && errno != EINTR) {
                /* The child does not read its stdin: fine, its exit status decides. */
                sigset_t pipe;
                struct timespec zero = {0, 0};
                sigemptyset(&pipe);
                sigaddset(&pipe, SIGPIPE);
                sigtimedwait(&pipe, NULL, &zero);
                part = 2;
            } else if (w > 0 && (off += (size_t)w) == lens[part]) {
                part++;
                off = 0;
            }
            if (part == 2) {
                close(in[1]);
                in[1] = -1;
            }
        }
        if (pidfd >= 0 && (p[1].revents & POLLIN)) {
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
            break;
        }
    }
    if (in[1] >= 0)
        close(in[1]);
    if (pidfd >= 0)
        close(pidfd);
    kill(-pid, SIGKILL); /* anything it left running in its group */
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return CRW_HANDLER_OK;
    if (WIFEXITED(st) && WEXITSTATUS(st) == EX_TEMPFAIL_CODE) {
        snprintf(reason, n, "the handler exited with status 75 (EX_TEMPFAIL)");
        return CRW_HANDLER_RETRY;
    }
    char how[96];
    describe_status(st, how, sizeof how);
    snprintf(reason, n, "the handler %s", how);
    return WIFSIGNALED(st) ? CRW_HANDLER_RETRY : CRW_HANDLER_FAIL;
}

/* ---- impl ---------------------------------------------------------------------------------- */

static int exec_deliver(void *impl, const crw_handler_event_t *ev, char *reason, size_t n) {
    exec_t *x = impl;
    return x->mode == CRW_EXEC_PER_EVENT ? per_event_deliver(x, ev, reason, n) : stream_deliver(x, ev, reason, n);
}

static void exec_interrupt(void *impl) {
    exec_t *x = impl;
    atomic_store(&x->stopping, true);
    ssize_t w = write(x->wake[1], "x", 1);
    (void)w;
}

/* Stream children: EOF on their stdin, up to 2 s to exit, then SIGKILL. */
static void exec_destroy(void *impl) {
    exec_t *x = impl;
    if (!x)
        return;
    int64_t deadline = crw_clock_mono_ms() + 2000;
    for (int i = 0; x->children && i < x->workers; i++)
        if (x->children[i].pid && x->children[i].to_child >= 0) {
            close(x->children[i].to_child);
            x->children[i].to_child = -1;
        }
    for (int i = 0; x->children && i < x->workers; i++) {
        child_t *c = &x->children[i];
        if (c->pid) {
            int st;
            while (!reap(c->pid, &st) && crw_clock_mono_ms() < deadline) {
                struct timespec ts = {0, 10 * 1000000L};
                nanosleep(&ts, NULL);
            }
            if (!reap(c->pid, &st)) {
                crw_warn("exec: handler process %d did not exit within 2 s of its stdin closing: killed",
                         (int)c->pid);
                kill_reap(c->pid, NULL);
            } else
                kill(-c->pid, SIGKILL);
            child_close(c);
        }
        crw_buf_free(&c->rbuf);
    }
    free(x->children);
    if (x->wake[0] >= 0)
        close(x->wake[0]);
    if (x->wake[1] >= 0)
        close(x->wake[1]);
    free(x->command);
    free(x);
}

CRW_SINK_CONSTRUCTOR(crw_sink_exec_new) {
    size_t n = errstr_size;
    const crw_config_t *c = env->conf;
    if (!c->exec_command || !*c->exec_command) {
        snprintf(errstr, n, "sink=exec needs exec.command (a command for /bin/sh -c)");
        *err = CRW_ERR_CONFIG;
        return NULL;
    }
    exec_t *x = crw_calloc(1, sizeof *x);
    x->command = crw_strdup(c->exec_command);
    x->mode = c->exec_mode;
    x->timeout_ms = c->exec_timeout_ms;
    x->backoff_initial_ms = c->retry_backoff_initial_ms;
    x->backoff_max_ms = c->retry_backoff_max_ms;
    x->workers = c->workers;
    x->wake[0] = x->wake[1] = -1;
    atomic_init(&x->stopping, false);
    if (pipe2(x->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        snprintf(errstr, n, "exec: pipe: %s", strerror(errno));
        *err = CRW_ERR_SINK;
        exec_destroy(x);
        return NULL;
    }
    if (x->mode == CRW_EXEC_STREAM) {
        x->children = crw_calloc((size_t)x->workers, sizeof *x->children);
        for (int i = 0; i < x->workers; i++) {
            x->children[i].to_child = x->children[i].from_child = x->children[i].pidfd = -1;
            crw_buf_init(&x->children[i].rbuf);
        }
    }
    crw_info("exec: %s mode, /bin/sh -c '%s'", x->mode == CRW_EXEC_STREAM ? "stream" : "per-event", x->command);
    crw_local_impl_t impl = {.name = "exec",
                               .wants_objects = false,
                               .deliver = exec_deliver,
                               .interrupt = exec_interrupt,
                               .destroy = exec_destroy,
                               .impl = x};
    return crw_local_sink_new(env, &impl, NULL, err, errstr, n);
}
