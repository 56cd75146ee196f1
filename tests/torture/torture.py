#!/usr/bin/env python3
"""torture.py — the driver of scripts/torture (docs/torture.md).

    torture.py [--short|--long] [--list] [SCENARIO...]

scripts/torture runs it with the environment it prepared:
  TORTURE_WORK    a temp dir of its own (the server, every scenario's files)
  CRWATCH         the crwatch binary;  CRW_MOCK_KAFKA  crwatch-mock-kafka
  TORTURE_RESULTS where to write the table too (optional)
  TORTURE_SEED    the random seed (optional; printed either way)
It starts a throwaway PostgreSQL with scripts/pg in TORTURE_WORK/pg, runs
each scenario in a database and a slot of its own, prints a table of
figures and exits 1 when a scenario failed.

Python 3 standard library only; psql, pgbench, pg_ctl and kcat do the rest.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import check  # noqa: E402

MiB = 1 << 20


class Fail(Exception):
    """A scenario's check failed (not a crash of the driver)."""


class Skip(Exception):
    """A scenario cannot run here; the message says why."""


def log(msg):
    sys.stderr.write("[torture %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def lsn_int(s):
    hi, lo = s.strip().split("/")
    return int(hi, 16) << 32 | int(lo, 16)


def lsn_str(n):
    return "%X/%X" % (n >> 32, n & 0xFFFFFFFF)


# ---- the server -----------------------------------------------------------


class Server:
    """The throwaway PostgreSQL of scripts/pg, and what restarts it."""

    def __init__(self, work):
        self.dir = os.path.join(work, "pg")
        self.env = None
        self.bindir = None

    def start(self):
        subprocess.run([os.path.join(ROOT, "scripts", "pg"), "start", self.dir,
                        "-c", "logical_decoding_work_mem=64kB",  # transactions over it stream to crwatch's spool
                        "-c", "max_wal_size=2GB", "-c", "checkpoint_timeout=5min",
                        "-c", "log_min_messages=warning", "-c", "log_replication_commands=off"],
                       check=True, stdout=subprocess.DEVNULL)
        env = dict(os.environ)
        for k in ("PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGOPTIONS", "PGHOSTADDR", "PGDATA"):
            env.pop(k, None)
        with open(os.path.join(self.dir, "env")) as f:
            for line in f:
                m = re.match(r"export (\w+)=(.*)", line.strip())
                if m:
                    env[m.group(1)] = m.group(2)
        self.env = env
        for d in (os.environ.get("PG_BINDIR", ""), "/usr/lib/postgresql/15/bin"):
            if d and os.access(os.path.join(d, "pg_ctl"), os.X_OK):
                self.bindir = d
                break
        else:
            self.bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()

    def stop(self):
        subprocess.run([os.path.join(ROOT, "scripts", "pg"), "stop", self.dir],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def pg_ctl(self, *args):
        """pg_ctl ARGS as the server's own OS user (scripts/pg runs it as postgres when root)."""
        data = os.path.join(self.dir, "data")
        cmd = [os.path.join(self.bindir, "pg_ctl"), *args, "-D", data]
        if os.geteuid() == 0:
            import pwd
            user = pwd.getpwuid(os.stat(data).st_uid).pw_name
            if user != "root":
                cmd = ["runuser", "-u", user, "--"] + cmd
        r = subprocess.run(cmd, cwd=self.dir, capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise Fail("pg_ctl %s failed: %s" % (" ".join(args), r.stderr.strip()))

    def restart(self, mode):
        self.pg_ctl("restart", "-m", mode, "-w", "-t", "120", "-s", "-l", os.path.join(self.dir, "server.log"))


SERVER = None


def psql(db, sql, timeout=600, check_rc=True):
    r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql],
                       env=SERVER.env, capture_output=True, text=True, timeout=timeout)
    if check_rc and r.returncode != 0:
        raise Fail("psql (%s): %s" % (sql[:80], r.stderr.strip()))
    return r.stdout.strip()


def psql_file(db, path):
    r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-f", path],
                       env=SERVER.env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise Fail("psql -f %s: %s" % (path, r.stderr.strip()))


def current_lsn(db):
    return lsn_int(psql(db, "SELECT pg_current_wal_lsn()"))


def confirmed(db, slot):
    v = psql(db, "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '%s'" % slot)
    return lsn_int(v) if v else 0


def wait_confirmed(db, slot, lsn, timeout):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if confirmed(db, slot) >= lsn:
                return True
        except Fail:
            pass  # the server restarting
        time.sleep(0.2)
    return False


def expected_csv(db, path):
    with open(path, "w") as f:
        r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-c",
                            "COPY (SELECT * FROM torture.expected) TO STDOUT WITH CSV"],
                           env=SERVER.env, stdout=f, stderr=subprocess.PIPE, text=True, timeout=600)
    if r.returncode != 0:
        raise Fail("reading torture.expected: %s" % r.stderr.strip())


# ---- processes ------------------------------------------------------------

PROCS = []  # every child started, ended at exit
PROCS_LOCK = threading.Lock()


def vm_hwm(pid):
    """Peak resident set of pid in bytes (VmHWM), 0 when gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Crwatch:
    """One crwatch process: its stdout to a file (appended), stderr to a log."""

    n = 0

    def __init__(self, sc, args, stdout=None, env=None, umask=None, cwd=None, tag="stream"):
        Crwatch.n += 1
        self.sc = sc
        self.errpath = os.path.join(sc.logs, "crwatch-%03d-%s.log" % (Crwatch.n, tag))
        self.outpath = stdout or os.devnull
        self.args = args
        self.hwm = 0
        e = dict(SERVER.env)
        e.update(env or {})
        e = {k: v for k, v in e.items() if v is not None}
        out = open(self.outpath, "ab")
        err = open(self.errpath, "ab")

        def pre():
            if umask is not None:
                os.umask(umask)

        self.p = subprocess.Popen([sc.ctx.crwatch] + args, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                  cwd=cwd or sc.dir, env=e, start_new_session=True, preexec_fn=pre)
        out.close()
        err.close()
        self.pid = self.p.pid
        with PROCS_LOCK:
            PROCS.append(self)
        sc.procs.append(self)

    def sample(self):
        if self.p.poll() is None:
            self.hwm = max(self.hwm, vm_hwm(self.pid))
        return self.hwm

    def stderr(self):
        try:
            with open(self.errpath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait_log(self, text, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            if text in self.stderr():
                return True
            if self.p.poll() is not None:
                return text in self.stderr()
            time.sleep(0.05)
        return False

    def wait_streaming(self, timeout=60):
        """Until "streaming from slot ..." / "streaming by polling ..." (text or JSON logs)."""
        end = time.time() + timeout
        while time.time() < end and self.p.poll() is None:
            if re.search(r'INFO: streaming |"level":"info","msg":"streaming ', self.stderr()):
                return
            time.sleep(0.05)
        if not re.search(r'INFO: streaming |"level":"info","msg":"streaming ', self.stderr()):
            raise Fail("crwatch did not start streaming (exit %s): %s" % (self.p.poll(), self.tail()))

    def tail(self, n=6):
        return " | ".join(self.stderr().strip().splitlines()[-n:])

    def kill9(self):
        self.sample()
        if self.p.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        return self.p.wait()

    def term(self, timeout=60):
        self.sample()
        if self.p.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.p.wait()
            raise Fail("crwatch did not stop within %d s of SIGTERM" % timeout)

    def wait(self, timeout):
        """Exit status, or None when still running after timeout (sampling RSS meanwhile)."""
        end = time.time() + timeout
        while time.time() < end:
            self.sample()
            rc = self.p.poll()
            if rc is not None:
                return rc
            time.sleep(0.1)
        return None

    def alive(self):
        return self.p.poll() is None


def rss_sampler(stop):
    while not stop.is_set():
        with PROCS_LOCK:
            live = [p for p in PROCS if p.p.poll() is None]
        for p in live:
            p.sample()
        stop.wait(0.1)


class Mock:
    """crwatch-mock-kafka --transactions: the mock cluster in its own process."""

    def __init__(self, sc):
        self.err = open(os.path.join(sc.logs, "mock-kafka.log"), "ab")
        self.p = subprocess.Popen([sc.ctx.mock, "--transactions"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, start_new_session=True)
        self.bs = self.p.stdout.readline().decode().strip()
        if ":" not in self.bs:
            raise Fail("crwatch-mock-kafka printed no address")
        sc.mocks.append(self)

    def cmd(self, line):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()
        reply = self.p.stdout.readline().decode().strip()
        if not reply.startswith("ok"):
            raise Fail("crwatch-mock-kafka: %s -> %s" % (line, reply))
        return reply

    def stop(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.err.close()


def kcat(bs, topic, out, committed=True, extra=()):
    """Reads topic to its end into out (one value per line); returns the number of lines."""
    with open(out, "wb") as f:
        r = subprocess.run(["kcat", "-b", bs, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%s\n",
                            "-X", "isolation.level=" + ("read_committed" if committed else "read_uncommitted"),
                            *extra], stdout=f, stderr=subprocess.PIPE, timeout=300)
    if r.returncode != 0:
        raise Fail("kcat %s: %s" % (topic, r.stderr.decode(errors="replace").strip()))
    with open(out, "rb") as f:
        return sum(1 for _ in f)


def first_offsets(bs, topic, partitions):
    """The first offset each partition still holds (0 unless the mock dropped old data)."""
    offs = []
    for p in range(partitions):
        r = subprocess.run(["kcat", "-b", bs, "-C", "-t", topic, "-p", str(p), "-o", "beginning", "-c", "1", "-e",
                            "-q", "-f", "%o\n", "-X", "isolation.level=read_uncommitted"],
                           capture_output=True, text=True, timeout=60)
        offs.append(int(r.stdout.split()[0]) if r.stdout.split() else 0)
    return offs


# ---- the load -------------------------------------------------------------

LOAD_WEIGHTS = {"ins_a": 4, "ins_b": 3, "upd_a": 6, "upd_b": 4, "del": 2, "mixed": 3, "big": 1, "rollback": 1}


class Load:
    """pgbench with the mixed scripts of load/, restarted until stopped (so it
    outlives server restarts: what committed is in torture.log either way)."""

    def __init__(self, sc, db, rate=60, clients=2, bigrows=200, weights=None):
        self.sc, self.db = sc, db
        w = dict(LOAD_WEIGHTS)
        w.update(weights or {})
        self.argv = ["pgbench", "-n", "-c", str(clients), "-j", "1", "-R", str(rate), "-T", "100000",
                     "--max-tries=20", "-D", "bigrows=%d" % bigrows, "-d", db]
        for name, weight in w.items():
            if weight:
                self.argv += ["-f", "%s@%d" % (os.path.join(HERE, "load", name + ".sql"), weight)]
        self.stopped = threading.Event()
        self.paused = threading.Event()
        self.p = None
        self.runs = 0
        self.logf = open(os.path.join(sc.logs, "pgbench.log"), "ab")
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        while not self.stopped.is_set():
            if self.paused.is_set():
                time.sleep(0.05)
                continue
            self.runs += 1
            self.p = subprocess.Popen(self.argv, env=SERVER.env, stdout=self.logf, stderr=self.logf,
                                      start_new_session=True)
            while self.p.poll() is None and not self.stopped.is_set() and not self.paused.is_set():
                time.sleep(0.05)
            if self.p.poll() is None:
                self.p.terminate()
                self.p.wait()
            if not self.stopped.is_set() and not self.paused.is_set():
                time.sleep(0.3)  # pgbench gave up (the server went away): start again

    def pause(self):
        self.paused.set()
        while self.p is not None and self.p.poll() is None:
            time.sleep(0.05)
        time.sleep(0.2)

    def resume(self):
        self.paused.clear()

    def stop(self):
        self.stopped.set()
        self.t.join(30)
        if self.p is not None and self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.logf.close()


# ---- scenarios ------------------------------------------------------------


class Result:
    def __init__(self, name):
        self.name = name
        self.iterations = 0
        self.changes = None
        self.lost = None
        self.duplicated = None
        self.rss = 0
        self.verdict = "PASS"
        self.notes = []
        self.seconds = 0.0

    def note(self, msg):
        self.notes.append(msg)
        log("%s: %s" % (self.name, msg))

    def fail(self, msg):
        self.verdict = "FAIL"
        self.note("FAIL: " + msg)

    def add_check(self, res, what=""):
        """Adds a check.py result's figures; a problem fails the scenario."""
        self.changes = (self.changes or 0) + res["expected"]
        self.lost = (self.lost or 0) + res["lost"]
        self.duplicated = (self.duplicated or 0) + res["duplicated"]
        pre = what + ": " if what else ""
        self.note("%sexpected %d, delivered %d, lost %d, duplicated %d, unexpected %d, reordered %d, "
                  "bad lines %d, dead-lettered %d" % (pre, res["expected"], res["delivered"], res["lost"],
                                                     res["duplicated"], res["unexpected"], res["reordered"],
                                                     res["bad_lines"], res["dead_lettered"]))
        for k, v in res["samples"].items():
            if v:
                self.note("%s%s e.g. %s" % (pre, k, v))
        if not res["ok"]:
            self.fail(pre + ", ".join(res["problems"]))


class Scenario:
    """What a scenario gets: its dir, database, slot, parameters, and helpers."""

    def __init__(self, ctx, name):
        self.ctx = ctx
        self.name = name
        self.dir = os.path.join(ctx.work, name)
        self.logs = os.path.join(self.dir, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.db = "tort_" + re.sub(r"\W", "_", name)
        self.slot = self.db
        self.procs = []
        self.mocks = []
        self.loads = []
        self.mounts = []
        self.role = None
        self.res = Result(name)
        self.rnd = random.Random("%s-%s" % (ctx.seed, name))

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def create_db(self, schema=True):
        psql("postgres", "DROP DATABASE IF EXISTS %s" % self.db)
        psql("postgres", "CREATE DATABASE %s" % self.db)
        psql_file(self.db, os.path.join(ROOT, "sql", "crwatch.sql"))
        if schema:
            psql_file(self.db, os.path.join(HERE, "schema.sql"))

    def crwatch_args(self, *extra, tables="public.t_a,public.t_b", verb="stream"):
        a = [verb, "-d", "dbname=%s" % self.db, "-X", "slot.name=%s" % self.slot, "-X", "status.interval.ms=1000",
             "-X", "spool.dir=%s" % self.dir, "-X", "deadletter.file=%s" % self.path("deadletter.jsonl")]
        if tables:
            a += ["-X", "tables=%s" % tables]
        for x in extra:
            a += ["-X", x] if "=" in x and not x.startswith("-") else [x]
        return a

    def crwatch(self, args, **kw):
        return Crwatch(self, args, **kw)

    def load(self, **kw):
        ld = Load(self, self.db, **kw)
        self.loads.append(ld)
        return ld

    def stop_load(self):
        for ld in self.loads:
            ld.stop()
        self.loads = []

    def drain(self, args, stdout=None, timeout=240, **kw):
        """A last crwatch up to the current end of WAL (--endpos): it must exit 0."""
        end = current_lsn(self.db)
        p = self.crwatch(args + ["--endpos", lsn_str(end)], stdout=stdout, tag="drain", **kw)
        rc = p.wait(timeout)
        if rc is None:
            p.kill9()
            raise Fail("the final crwatch (--endpos %s) did not finish within %d s: %s" % (lsn_str(end), timeout,
                                                                                           p.tail()))
        if rc != 0:
            raise Fail("the final crwatch (--endpos %s) exited %d: %s" % (lsn_str(end), rc, p.tail()))
        return p

    def expected(self):
        path = self.path("expected.csv")
        expected_csv(self.db, path)
        return path

    def check(self, sinks, what="", min_changes=50, **kw):
        res = check.check(self.expected(), sinks, **kw)
        self.res.add_check(res, what)
        if res["expected"] < min_changes:
            self.res.fail("%sthe load committed only %d changes (pgbench.log says why)"
                          % (what + ": " if what else "", res["expected"]))
        return res

    def cleanup(self):
        for ld in self.loads:
            ld.stop()
        for p in self.procs:
            if p.alive():
                p.kill9()
        for m in self.mocks:
            m.stop()
        for d in self.mounts:
            subprocess.run(["umount", d], stderr=subprocess.DEVNULL)
            subprocess.run(["umount", "-l", d], stderr=subprocess.DEVNULL)
        self.res.rss = max([self.res.rss] + [p.hwm for p in self.procs])
        try:
            psql("postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s' "
                             "AND pid <> pg_backend_pid()" % self.db, check_rc=False)
            psql("postgres", "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                             "WHERE database = '%s'" % self.db, check_rc=False)
            psql("postgres", "DROP DATABASE IF EXISTS %s" % self.db, check_rc=False)
            if self.role:
                psql("postgres", "DROP ROLE IF EXISTS %s" % self.role, check_rc=False)
        except Exception:  # noqa: BLE001  the server may be gone after a failed restart
            pass


def kill_moment(sc):
    """When to kill: now and then during start-up, mostly under load."""
    lo, hi = sc.ctx.p("kill_delay")
    return sc.rnd.uniform(0.0, 0.4) if sc.rnd.random() < 0.2 else sc.rnd.uniform(lo, hi)


def truncate_torn_tail(path):
    """A kill during a write can leave a partial last line: a consumer drops it
    (it was not confirmed, so it comes again).  Returns 1 when it did."""
    try:
        with open(path, "rb+") as f:
            f.seek(0, 2)
            size = f.tell()
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return 0
            pos = size
            while pos > 0:
                step = min(65536, pos)
                f.seek(pos - step)
                chunk = f.read(step)
                i = chunk.rfind(b"\n")
                if i >= 0:
                    f.truncate(pos - step + i + 1)
                    return 1
                pos -= step
            f.truncate(0)
            return 1
    except FileNotFoundError:
        return 0


def kill9_loop(sc, start, kills, load="load"):
    """start() a crwatch, then kill -9 it `kills` times at random moments under
    load, starting a new one after each; returns the last one (running)."""
    p = start()
    p.wait_streaming()
    sc.load(**sc.ctx.p(load))
    torn = 0
    for i in range(kills):
        time.sleep(kill_moment(sc))
        rc = p.kill9()
        if rc not in (-signal.SIGKILL,):
            sc.res.fail("crwatch had exited before kill %d (status %s): %s" % (i + 1, rc, p.tail()))
        torn += sc.after_kill() if hasattr(sc, "after_kill") else 0
        sc.res.iterations += 1
        p = start()
    sc.res.note("%d kills; %d torn last lines dropped" % (kills, torn))
    return p


def scenario_kill9_stdout(sc):
    sc.create_db()
    out = sc.path("events.jsonl")
    sc.after_kill = lambda: truncate_torn_tail(out)
    p = kill9_loop(sc, lambda: sc.crwatch(sc.crwatch_args(), stdout=out), sc.ctx.p("kills"))
    sc.stop_load()
    p.kill9()
    sc.after_kill()
    sc.drain(sc.crwatch_args(), stdout=out)
    sc.check([out])


def exec_args(sc, out, *extra):
    handler = "exec %s -u %s %s 0.02" % (sys.executable, os.path.join(HERE, "handler.py"), out)
    return sc.crwatch_args("sink=exec", "exec.command=" + handler, "workers=2", "retry.backoff.initial.ms=10",
                           "retry.backoff.max.ms=200", *extra)


def scenario_kill9_exec(sc):
    sc.create_db()
    out = sc.path("handled.jsonl")
    args = exec_args(sc, out)
    p = kill9_loop(sc, lambda: sc.crwatch(args), sc.ctx.p("kills"))
    sc.stop_load()
    p.kill9()
    time.sleep(0.3)  # the handlers see the end of their stdin and exit
    sc.drain(args)
    sc.check([out])


KAFKA_TOPICS = ("crwatch.public.t_a", "crwatch.public.t_b")
KAFKA_PARTS = 4


def kafka_setup(sc):
    m = Mock(sc)
    for t in KAFKA_TOPICS:
        m.cmd("create %s %d" % (t, KAFKA_PARTS))
    m.cmd("create crwatch.checkpoints 1")
    m.cmd("create crwatch.deadletter 1")
    return m


def kafka_read(sc, m, eos, what=""):
    """The topics as a read_committed (eos) or plain consumer sees them, into files."""
    files = []
    for t in KAFKA_TOPICS:
        f = sc.path(t + ".jsonl")
        n = kcat(m.bs, t, f, committed=eos)
        if eos:
            raw = kcat(m.bs, t, f + ".all", committed=False)
            sc.res.note("%s%s: %d messages read_committed, %d in the log (aborted transactions: %d)"
                        % (what, t, n, raw, raw - n))
        offs = first_offsets(m.bs, t, KAFKA_PARTS)
        if any(offs):
            raise Fail("the mock broker dropped the oldest messages of %s (first offsets %s; it keeps ~5 MB "
                       "a partition): run with a lighter load" % (t, offs))
        files.append(f)
    return files


def scenario_kill9_kafka(sc, eos):
    sc.create_db()
    m = kafka_setup(sc)
    args = sc.crwatch_args("sink=kafka", "kafka.bootstrap.servers=" + m.bs,
                           *(["delivery=exactly-once", "transaction.interval.ms=50"] if eos else []))
    p = kill9_loop(sc, lambda: sc.crwatch(args), sc.ctx.p("kills_kafka"), load="load_kafka")
    sc.stop_load()
    p.kill9()
    sc.drain(args)
    sc.check(kafka_read(sc, m, eos), exactly_once=eos)


def slot_active_pid(sc):
    try:
        v = psql(sc.db, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '%s'" % sc.slot)
    except Fail:
        return None
    return int(v) if v else None


def wait_slot_active(sc, timeout):
    end = time.time() + timeout
    while time.time() < end:
        pid = slot_active_pid(sc)
        if pid:
            return pid
        time.sleep(0.1)
    return None


def finish_live(sc, p, timeout=120):
    """Stops the load, waits for the running crwatch to confirm the end of WAL,
    and stops it with SIGTERM (it must exit 0)."""
    sc.stop_load()
    end = current_lsn(sc.db)
    t = time.time()
    if not wait_confirmed(sc.db, sc.slot, end, timeout):
        sc.res.fail("crwatch did not confirm the end of the load (%s) within %d s (slot at %s): %s"
                    % (lsn_str(end), timeout, lsn_str(confirmed(sc.db, sc.slot)), p.tail()))
    else:
        sc.res.note("caught up %.1f s after the load stopped" % (time.time() - t))
    if not p.alive():
        sc.res.fail("crwatch exited (status %s): %s" % (p.p.poll(), p.tail()))
        return
    rc = p.term()
    if rc != 0:
        sc.res.fail("crwatch exited %d on SIGTERM: %s" % (rc, p.tail()))


def scenario_pg_restart(sc):
    sc.create_db()
    out = sc.path("events.jsonl")
    p = sc.crwatch(sc.crwatch_args(), stdout=out)
    p.wait_streaming()
    sc.load(**sc.ctx.p("load"))
    modes = ["fast", "immediate"] * sc.ctx.p("restarts")
    sc.rnd.shuffle(modes)
    took = []
    for mode in modes:
        time.sleep(sc.rnd.uniform(1.5, 3.5))
        t = time.time()
        SERVER.restart(mode)
        took.append(time.time() - t)
        sc.res.iterations += 1
        if not p.alive():
            raise Fail("crwatch exited after a %s restart (status %s): %s" % (mode, p.p.poll(), p.tail()))
    if modes:
        sc.res.note("%d server restarts (%s), %.1f s each on average"
                    % (len(modes), ", ".join("%d %s" % (modes.count(m), m) for m in ("fast", "immediate")),
                       sum(took) / len(took)))
    killed, back = 0, []
    for i in range(sc.ctx.p("walsender_kills")):
        t = time.time()
        pid = wait_slot_active(sc, 60)
        if not pid:
            raise Fail("the slot was not active again 60 s after walsender termination %d: %s" % (i, p.tail()))
        if i:
            back.append(time.time() - t)
        time.sleep(sc.rnd.uniform(0.3, 1.5))
        if psql(sc.db, "SELECT pg_terminate_backend(%d)" % pid) == "t":
            killed += 1
            sc.res.iterations += 1
        if not p.alive():
            raise Fail("crwatch exited after its walsender was terminated (status %s): %s" % (p.p.poll(), p.tail()))
    if killed:
        sc.res.note("%d walsenders terminated; streaming again %.1f s later on average (max %.1f)"
                    % (killed, sum(back) / max(1, len(back)), max(back or [0])))
    time.sleep(2)
    finish_live(sc, p)
    sc.res.note("crwatch logged %d reconnects" % p.stderr().count("reconnecting"))
    sc.check([out])


def eos_args(sc, m, *extra):
    return sc.crwatch_args("sink=kafka", "kafka.bootstrap.servers=" + m.bs, "delivery=exactly-once",
                           "transaction.interval.ms=50", *extra)


def scenario_broker_down(sc):
    sc.create_db()
    m = kafka_setup(sc)
    p = sc.crwatch(eos_args(sc, m))
    p.wait_streaming()
    sc.load(**sc.ctx.p("load_kafka"))
    time.sleep(3)
    secs = sc.ctx.p("down_secs")
    before = confirmed(sc.db, sc.slot)
    m.cmd("down")
    t_down = time.time()
    time.sleep(0.3)
    bound = current_lsn(sc.db)  # what committed after this cannot have reached the broker
    top, n, moved = 0, 0, False
    while time.time() < t_down + secs:
        c = confirmed(sc.db, sc.slot)
        top, n = max(top, c), n + 1
        if c > bound and not moved:
            moved = True
            sc.res.fail("the slot confirmed %s while the broker was down, past %s (the WAL end 0.3 s into the "
                        "outage)" % (lsn_str(c), lsn_str(bound)))
        if not p.alive():
            raise Fail("crwatch exited while the broker was down (status %s): %s" % (p.p.poll(), p.tail()))
        time.sleep(0.25)
    wal = current_lsn(sc.db)
    m.cmd("up")
    sc.res.iterations = 1
    sc.res.note("broker down %.0f s: the slot went from %s to at most %s (bound %s) over %d samples, while the "
                "WAL grew by %d kB" % (time.time() - t_down, lsn_str(before), lsn_str(top), lsn_str(bound), n,
                                       (wal - bound) // 1024))
    t_up = time.time()
    if not wait_confirmed(sc.db, sc.slot, wal, 120):
        sc.res.fail("the slot did not reach the outage's WAL within 120 s of the broker's return: %s" % p.tail())
    else:
        sc.res.note("the outage's changes confirmed %.1f s after the broker came back" % (time.time() - t_up))
    time.sleep(2)
    finish_live(sc, p)
    sc.check(kafka_read(sc, m, True), exactly_once=True)


def deadletter_keys(path):
    """{(table, key): [reason, ...]} of a dead-letter file."""
    out = {}
    try:
        with open(path, "rb") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                pl = rec.get("payload") or {}
                if "specversion" in pl:
                    k = (check.table_of(pl), str((pl.get("data") or {}).get("key")))
                else:
                    k = (pl.get("table"), str((pl.get("new") or pl.get("old") or {}).get("id")))
                out.setdefault(k, []).append(rec.get("reason", ""))
    except FileNotFoundError:
        pass
    return out


def refuse_one(sc, p, dl, what, sql, before_insert=None, timeout=60):
    """Runs sql (an INSERT ... RETURNING id) with the load paused and watches the
    slot until it confirms the row's transaction; returns (key, whether the row
    was in the dead-letter file by then).  Whether the row had to be there is
    decided at the end, from the file (scenario_broker_refuse)."""
    for ld in sc.loads:
        ld.pause()
    time.sleep(0.5)
    if before_insert:
        before_insert()
    log_at = len(p.stderr())
    key = psql(sc.db, sql)
    after = current_lsn(sc.db)
    t = time.time()
    first_dl, filed = None, False
    ok = False
    while time.time() < t + timeout:
        in_dl = ("t_a", key) in deadletter_keys(dl)
        if in_dl and first_dl is None:
            first_dl = time.time() - t
        if confirmed(sc.db, sc.slot) >= after:
            ok = True
            filed = in_dl
            break
        if not p.alive():
            raise Fail("%s: crwatch exited (status %s): %s" % (what, p.p.poll(), p.tail()))
        time.sleep(0.02)
    if not ok:
        sc.res.fail("%s: the slot did not confirm row t_a/%s within %d s (crwatch: %s)" % (what, key, timeout,
                                                                                         p.tail()))
    reasons = deadletter_keys(dl).get(("t_a", key), [])
    hit = [ln[24:] for ln in p.stderr()[log_at:].splitlines() if "TXNERR" in ln or "was refused" in ln]
    sc.res.note("%s: row t_a/%s %s, confirmed %.2f s after its commit%s%s"
                % (what, key, "dead-lettered after %.2f s" % first_dl if first_dl is not None else "not dead-lettered",
                   time.time() - t, "; reason: " + reasons[0] if reasons else "",
                   "; crwatch: " + hit[0][:220] if hit else ""))
    for ld in sc.loads:
        ld.resume()
    return key, filed


def scenario_broker_refuse(sc):
    sc.create_db()
    m = kafka_setup(sc)
    dl = sc.path("deadletter.jsonl")
    # No heartbeat meanwhile: the refusal injected must meet the row's Produce request, not a heartbeat's.
    p = sc.crwatch(eos_args(sc, m, "kafka.message.max.bytes=100000", "heartbeat.interval.ms=600000"))
    p.wait_streaming()
    sc.load(**sc.ctx.p("load_kafka"))
    time.sleep(2)
    too_large = refuse_one(sc, p, dl, "larger than kafka.message.max.bytes (refused by the producer)",
                           "INSERT INTO t_a (payload) VALUES (repeat('x', 200000)) RETURNING id")
    sc.res.iterations += 1
    # The broker refuses the row's Produce request (the relay's "refuse": the checkpoint record's request,
    # which may go out first at the Kafka commit, is let through).
    time.sleep(1.5)
    by_broker = refuse_one(sc, p, dl, "refused by the broker (MESSAGE_TOO_LARGE for the row's Produce request)",
                           "INSERT INTO t_a (payload) VALUES ('refused by the broker') RETURNING id",
                           before_insert=lambda: m.cmd("refuse crwatch.public.t_a 10 1"))
    sc.res.iterations += 1
    time.sleep(1)
    # and once under load: whatever the next Produce request holds
    m.cmd("error 0 10 1")
    sc.res.note("a broker refusal under load injected")
    sc.res.iterations += 1
    time.sleep(3)
    finish_live(sc, p)
    files = kafka_read(sc, m, True)
    dlt = kcat(m.bs, "crwatch.deadletter", sc.path("crwatch.deadletter.jsonl"), committed=True)
    dead = deadletter_keys(dl)
    sc.res.note("%d records in the dead-letter topic (read_committed); the dead-letter file: %s"
                % (dlt, ", ".join("%s/%s x%d" % (k[0], k[1], len(v)) for k, v in sorted(dead.items()))))
    p_log = p.stderr()
    for pat in ("TXNERR", "dead-letter"):
        lines = [ln for ln in p_log.splitlines() if pat in ln]
        if lines:
            sc.res.note("crwatch said (%d lines with '%s'), e.g.: %s" % (len(lines), pat, lines[0][24:220]))
    sc.check(files, deadletters=[dl], exactly_once=True)
    # A refused row is in the dead-letter file before the slot passes it; one that was not refused is in the topic.
    for (key, filed), why in [(too_large, "over kafka.message.max.bytes"), (by_broker, "refused by the broker")]:
        k = ("t_a", key)
        if k in dead and not filed:
            sc.res.fail("the slot confirmed row t_a/%s before its dead-letter record was written" % key)
        if k not in dead:
            sc.res.fail("row t_a/%s, %s, was not dead-lettered" % (key, why))

# ---- full filesystems ------------------------------------------------------


def fill(d):
    """Writes a filler file in d until the filesystem is full; returns its path."""
    import errno
    path = os.path.join(d, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 4096, 512, 1):
            buf = b"\0" * size
            try:
                while True:
                    os.write(fd, buf)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    st = os.statvfs(d)
    if st.f_bavail:
        raise Fail("could not fill %s (%d blocks left)" % (d, st.f_bavail))
    return path


def mount_tmpfs(sc, d, size):
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", d],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise Skip("mount -t tmpfs failed: %s" % r.stderr.strip())
    sc.mounts.append(d)


def remount(d, size):
    subprocess.run(["mount", "-o", "remount,size=%s" % size, d], check=True)


def error_lines(p):
    return [ln[24:] for ln in p.stderr().splitlines() if "ERROR" in ln or "FATAL" in ln]


def expect_stop(sc, p, what, must_name, timeout=60):
    """p must stop by itself, non-zero, with an ERROR line naming every word of must_name."""
    rc = p.wait(timeout)
    if rc is None:
        sc.res.fail("%s: crwatch did not stop within %d s; it said: %s" % (what, timeout, p.tail(4)))
        p.term()
        return
    errs = error_lines(p)
    sc.res.note("%s: crwatch exited %d: %s" % (what, rc, " / ".join(errs) or p.tail(3)))
    if rc == 0:
        sc.res.fail("%s: crwatch exited 0" % what)
    if not any(all(w.lower() in e.lower() for w in must_name) for e in errs):
        sc.res.fail("%s: no error line names %s" % (what, " and ".join(repr(w) for w in must_name)))
    # The last line is the exit's reason: it must say something.
    if errs and re.search(r":\s*$", errs[-1]):
        sc.res.fail("%s: the exit's reason is empty: '%s'" % (what, errs[-1].strip()))


def scenario_fullfs(sc):
    if os.geteuid() != 0:
        raise Skip("needs root, to mount a small tmpfs (mount -t tmpfs -o size=2m)")
    full = sc.path("full")
    os.makedirs(full)
    mount_tmpfs(sc, full, "2m")
    sc.create_db()
    psql(sc.db, "CREATE TABLE t_dl (id bigint PRIMARY KEY, k text, v bigint NOT NULL DEFAULT 1); "
                "SELECT torture.watch('t_dl', 'k')")
    out = sc.path("events.jsonl")

    # 1. The spool: a transaction streamed while in progress, on a full filesystem.
    spool = os.path.join(full, "spool")
    os.makedirs(spool)
    filler = fill(full)
    args = sc.crwatch_args("spool.dir=" + spool)
    p = sc.crwatch(args, stdout=out)
    p.wait_streaming()
    psql(sc.db, "INSERT INTO t_a (payload) SELECT 'before' FROM generate_series(1, 10)")
    if not wait_confirmed(sc.db, sc.slot, current_lsn(sc.db), 30):
        raise Fail("the first rows were not confirmed: %s" % p.tail())
    before = confirmed(sc.db, sc.slot)
    start = current_lsn(sc.db)
    psql(sc.db, "INSERT INTO t_a (payload) SELECT repeat('y', 300) FROM generate_series(1, 20000)")
    big_end = current_lsn(sc.db)
    expect_stop(sc, p, "spool on a full filesystem", ["spool", "no space left on device"])
    c = confirmed(sc.db, sc.slot)
    if c >= big_end or c > start:
        sc.res.fail("spool: the slot confirmed %s, past the transaction it could not spool (%s..%s)"
                    % (lsn_str(c), lsn_str(start), lsn_str(big_end)))
    else:
        sc.res.note("spool: the slot stayed at %s (was %s; the big transaction starts after %s)"
                    % (lsn_str(c), lsn_str(before), lsn_str(start)))
    sc.res.iterations += 1
    # Space comes back: the filler goes and the filesystem grows past the transaction's size.
    os.unlink(filler)
    remount(full, "64m")
    psql(sc.db, "INSERT INTO t_a (payload) SELECT 'after' FROM generate_series(1, 10)")
    sc.drain(args, stdout=out)

    # 2. The dead-letter file on a full filesystem.
    remount(full, "2m")
    shutil.rmtree(spool)
    dldir = os.path.join(full, "dl")
    os.makedirs(dldir)
    dl = os.path.join(dldir, "deadletter.jsonl")
    filler = fill(full)
    args = sc.crwatch_args("deadletter.file=" + dl, "resource.dl.table=public.t_dl", "resource.dl.key=k")
    p = sc.crwatch(args, stdout=out)
    p.wait_streaming()
    start = current_lsn(sc.db)
    psql(sc.db, "INSERT INTO t_dl (id, k) VALUES (1, 'one'), (2, NULL), (3, 'three')")  # 2: a NULL key
    psql(sc.db, "INSERT INTO t_dl (id, k) VALUES (4, 'four')")
    expect_stop(sc, p, "dead-letter file on a full filesystem", ["dead-letter", "no space left on device"])
    if not deadletter_keys(dl):
        claims = [ln[24:] for ln in p.stderr().splitlines() if "dead-lettered" in ln]
        if claims:
            sc.res.fail("dead letters: the log says a change was dead-lettered, the file holds none: %s"
                        % " / ".join(c.strip() for c in claims))
    c = confirmed(sc.db, sc.slot)
    if c > start:
        sc.res.fail("dead letters: the slot confirmed %s, past the change it could not dead-letter (after %s)"
                    % (lsn_str(c), lsn_str(start)))
    else:
        sc.res.note("dead letters: the slot stayed at %s (the unmappable change is after %s)"
                    % (lsn_str(c), lsn_str(start)))
    sc.res.iterations += 1
    os.unlink(filler)
    psql(sc.db, "INSERT INTO t_dl (id, k) VALUES (5, 'five')")
    sc.drain(args, stdout=out)
    n = len(deadletter_keys(dl))
    sc.res.note("after the space came back: %d change(s) in the dead-letter file" % n)
    sc.check([out], deadletters=[dl], key_columns={"t_dl": ["k"]}, min_changes=20000)


# ---- hostile schemas and values ----------------------------------------------

HOSTILE_SQL = r"""
CREATE TYPE torture_pair AS (a int, b text);
CREATE TYPE torture_mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN torture_posint AS int CHECK (VALUE > 0);
CREATE TYPE torture_floatrange AS RANGE (subtype = float8);
CREATE TABLE t_ddl (id bigint PRIMARY KEY, v bigint NOT NULL DEFAULT 1, a text);
CREATE TABLE t_types (id bigint PRIMARY KEY, v bigint NOT NULL DEFAULT 1, comp torture_pair, comps torture_pair[],
  r int4range, mr int4multirange, fr torture_floatrange, tsv tsvector, tq tsquery, mood torture_mood, pos torture_posint,
  pt point, bx box, ip inet, mac macaddr, m money, bits bit varying, x xml, u uuid, iv interval, ts timestamptz,
  j jsonb, oid regclass, h %(hstore)s);
CREATE TABLE t_drop (id bigint PRIMARY KEY, v bigint NOT NULL DEFAULT 1);
CREATE TABLE t_parent (id bigint PRIMARY KEY, v bigint NOT NULL DEFAULT 1);
CREATE TABLE t_child (id bigint PRIMARY KEY, v bigint NOT NULL DEFAULT 1, parent bigint REFERENCES t_parent);
CREATE TABLE t_bulk (id bigint PRIMARY KEY, v bigint NOT NULL DEFAULT 1);
CREATE TABLE t_big (id bigint PRIMARY KEY, v bigint NOT NULL DEFAULT 1, note text, body text);
SELECT torture.watch(t, 'id') FROM unnest(ARRAY['t_ddl', 't_types', 't_drop', 't_parent', 't_child']::regclass[]) t;
"""

HOSTILE_TABLES = ("t_ddl", "t_types", "t_wide", "t_drop", "t_parent", "t_child", "t_bulk", "t_big")
WIDE_COLS = 998  # + id and v: 1,000 columns


def events_of(path, table):
    """The parsed events of one table in a stdout file, in order."""
    tag = ('"source":"/crwatch/').encode()
    want = ("/public/%s\"" % table).encode()
    out = []
    with open(path, "rb") as f:
        for line in f:
            if tag in line[:400] and want in line[:400]:
                out.append(json.loads(line))
    return out


def scenario_hostile(sc):
    sc.create_db()
    hstore = psql(sc.db, "CREATE EXTENSION IF NOT EXISTS hstore", check_rc=False) is not None and \
        psql(sc.db, "SELECT count(*) FROM pg_extension WHERE extname = 'hstore'") == "1"
    if not hstore:
        sc.res.note("hstore is not available: its column is text")
    psql(sc.db, HOSTILE_SQL % {"hstore": "hstore" if hstore else "text"})
    cols = ", ".join("c%03d text" % i for i in range(1, WIDE_COLS + 1))
    psql(sc.db, "CREATE TABLE t_wide (id bigint PRIMARY KEY, v bigint NOT NULL DEFAULT 1, %s); "
                "SELECT torture.watch('t_wide', 'id')" % cols)
    out = sc.path("events.jsonl")
    tables = ",".join("public." + t for t in HOSTILE_TABLES)
    p = sc.crwatch(sc.crwatch_args(tables=tables), stdout=out)
    p.wait_streaming()

    def step(name, sql, timeout=120):
        t = time.time()
        psql(sc.db, sql, timeout=1800)
        end = current_lsn(sc.db)
        if not wait_confirmed(sc.db, sc.slot, end, timeout):
            raise Fail("%s: not confirmed within %d s (crwatch %s): %s"
                       % (name, timeout, "running" if p.alive() else "exited %s" % p.p.poll(), p.tail()))
        sc.res.iterations += 1
        rss = vm_hwm(p.pid)
        sc.res.note("%s: confirmed %.1f s after it began; crwatch's peak RSS so far %.1f MiB"
                    % (name, time.time() - t, rss / MiB))
        return rss

    # A transaction of N rows: spooled (logical_decoding_work_mem is 64kB), replayed at its commit.
    n = sc.ctx.p("bulk_rows")
    rss0 = vm_hwm(p.pid)
    rss_bulk = step("a %d-row transaction" % n, "INSERT INTO t_bulk SELECT g FROM generate_series(1, %d) g" % n,
                    timeout=900)
    bound = sc.ctx.p("bulk_rss_mib") * MiB
    if rss_bulk > bound:
        sc.res.fail("the %d-row transaction took crwatch's RSS to %.1f MiB, over %d MiB"
                    % (n, rss_bulk / MiB, bound // MiB))
    sc.res.note("the %d-row transaction: peak RSS %.1f MiB (%.1f MiB before it; bound %d MiB)"
                % (n, rss_bulk / MiB, rss0 / MiB, bound // MiB))
    # A 50 MiB value, then an update that leaves it unchanged (TOAST: PostgreSQL does not send it).
    step("a 50 MiB text value", "INSERT INTO t_big VALUES (1, 1, 'big', repeat('x', 50 * 1024 * 1024)); "
                                "UPDATE t_big SET v = 2, note = 'toast unchanged' WHERE id = 1")
    # 1,000 columns
    vals = ", ".join("'w%d'" % i for i in range(1, WIDE_COLS + 1))
    step("1,000 columns", "INSERT INTO t_wide SELECT g, 1, %s FROM generate_series(1, 20) g; "
                          "UPDATE t_wide SET v = v + 1, c500 = 'changed' WHERE id <= 10; "
                          "DELETE FROM t_wide WHERE id > 15" % vals)
    # Columns added, renamed, retyped and dropped mid-stream
    step("columns added, renamed, retyped, dropped",
         "INSERT INTO t_ddl (id, a) SELECT g, 'a' || g FROM generate_series(1, 10) g; "
         "ALTER TABLE t_ddl ADD COLUMN b int; "
         "INSERT INTO t_ddl (id, a, b) SELECT g, 'a' || g, g FROM generate_series(11, 20) g; "
         "UPDATE t_ddl SET v = v + 1, b = 7 WHERE id <= 5; "
         "ALTER TABLE t_ddl RENAME COLUMN a TO a2; "
         "UPDATE t_ddl SET v = v + 1, a2 = 'renamed' WHERE id BETWEEN 6 AND 10; "
         "ALTER TABLE t_ddl ALTER COLUMN b TYPE text USING 'b=' || b; "
         "UPDATE t_ddl SET v = v + 1 WHERE id BETWEEN 11 AND 15; "
         "ALTER TABLE t_ddl ADD COLUMN c jsonb DEFAULT '{\"d\": 1}', DROP COLUMN a2; "
         "UPDATE t_ddl SET v = v + 1 WHERE id BETWEEN 16 AND 20; "
         "DELETE FROM t_ddl WHERE id IN (1, 20)")
    # Types crwatch has no JSON form for: their text form
    h = "'a=>1, b=>null'" if hstore else "'a=>1'"
    step("composite, range, multirange, tsvector, hstore and other types",
         "INSERT INTO t_types SELECT g, 1, ROW(g, 'x,y \"z\"')::torture_pair, ARRAY[ROW(1, 'p')::torture_pair, NULL], "
         "int4range(g, g + 10), '{[1,3), [5,8)}'::int4multirange, '[1.5, 2.5)'::torture_floatrange, "
         "to_tsvector('simple', 'the quick brown fox ' || g), 'fox & !dog'::tsquery, 'happy', g, point(g, -g), "
         "box(point(0, 0), point(g, g)), '10.0.0.1/8', '08:00:2b:01:02:03', 12.5, B'10110', "
         "'<a b=\"1\">t</a>'::xml, gen_random_uuid(), interval '1 day 2 hours', now(), '{\"k\": [1, 2]}', "
         "'t_types'::regclass, %s FROM generate_series(1, 5) g; "
         "UPDATE t_types SET v = v + 1, r = 'empty', mr = '{}', comp = NULL WHERE id <= 2" % h)
    # A watched table dropped while streaming; the stream goes on
    step("a watched table dropped", "INSERT INTO t_drop SELECT g FROM generate_series(1, 10) g; "
                                    "UPDATE t_drop SET v = v + 1 WHERE id <= 3; DROP TABLE t_drop; "
                                    "INSERT INTO t_ddl (id) VALUES (100)")
    # TRUNCATE ... CASCADE
    step("TRUNCATE CASCADE", "INSERT INTO t_parent SELECT g FROM generate_series(1, 5) g; "
                             "INSERT INTO t_child SELECT g, 1, 1 + g % 5 FROM generate_series(1, 10) g; "
                             "TRUNCATE t_parent CASCADE; INSERT INTO t_parent VALUES (10), (11); "
                             "INSERT INTO t_ddl (id) VALUES (101)")
    if not p.alive():
        raise Fail("crwatch exited (status %s): %s" % (p.p.poll(), p.tail()))
    rc = p.term()
    if rc != 0:
        sc.res.fail("crwatch exited %d on SIGTERM: %s" % (rc, p.tail()))

    # Every line one JSON event; every logged change there (t_bulk and t_big are checked below)
    res = sc.check([out], tables=[t for t in HOSTILE_TABLES if t not in ("t_bulk", "t_big")])
    if res["unexpected"] or res["lost"]:
        return
    seen = set()
    for ev in events_of(out, "t_bulk"):
        seen.add(ev["data"]["key"])
    sc.res.changes += n
    if len(seen) != n:
        sc.res.lost += n - len(seen)
        sc.res.fail("t_bulk: %d of the transaction's %d rows arrived" % (len(seen), n))
    big = events_of(out, "t_big")
    sizes = [len((e["data"].get("object") or {}).get("body") or "") for e in big]
    sc.res.changes += 2
    sc.res.note("t_big: %d events, body sizes %s; the unchanged-TOAST update: %s"
                % (len(big), sizes, json.dumps({k: v for k, v in big[-1]["data"].items() if k != "object"})
                   if big else "-"))
    if not big or sizes[0] != 50 * MiB:
        sc.res.fail("the 50 MiB value did not arrive whole (sizes %s)" % sizes)
    if len(big) >= 2 and any(isinstance(v, str) and "unchanged" in v.lower() and "toast" in v.lower()
                             for v in (big[1]["data"].get("object") or {}).values() if v != "toast unchanged"):
        sc.res.fail("an unchanged-TOAST placeholder reached the event")
    wide = events_of(out, "t_wide")
    ncols = {len(e["data"]["object"]) for e in wide if e["data"]["type"] != "DELETED"}
    if ncols != {WIDE_COLS + 2}:
        sc.res.fail("t_wide: objects with %s columns, want %d" % (sorted(ncols), WIDE_COLS + 2))
    ddl = events_of(out, "t_ddl")
    last = {e["data"]["key"]: e["data"]["object"] for e in ddl if e["data"]["type"] != "DELETED"}
    o6, o11, o16 = last.get("6", {}), last.get("11", {}), last.get("16", {})
    if o6.get("a2") != "renamed" or o11.get("b") != "b=11" or o16.get("c") != {"d": 1} or "a2" in o16:
        sc.res.fail("t_ddl: the events do not follow the schema changes: %s / %s / %s" % (o6, o11, o16))
    types = events_of(out, "t_types")
    if types:
        sc.res.note("t_types: e.g. %s" % json.dumps(types[0]["data"]["object"])[:600])
    trunc = [e for e in events_of(out, "t_parent") + events_of(out, "t_child") if e["data"]["type"] == "TRUNCATED"]
    sc.res.note("TRUNCATE CASCADE: %d TRUNCATED events (%s)" % (len(trunc), ", ".join(check.table_of(e)
                                                                                     for e in trunc)))


# ---- secrets --------------------------------------------------------------


def http_get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
            return r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:  # 503 on /readyz says something too
        return e.read().decode(errors="replace")


def scenario_secrets(sc):
    sc.create_db()
    rnd = random.SystemRandom()
    sec = {name: "%s-%08x" % (name, rnd.randrange(1 << 32)) for name in
           ("Conninfo7pw", "Envpw", "Uripw", "Saslpw", "Wrongpw", "Wrongenvpw", "Filepw", "Unreachpw")}
    role = "crwatch_password"
    psql("postgres", "DROP ROLE IF EXISTS %s" % role, check_rc=False)
    psql("postgres", "CREATE ROLE %s LOGIN REPLICATION SUPERUSER PASSWORD '%s'" % (role, sec["Conninfo7pw"]))
    sc.role = role
    host, port = SERVER.env["PGHOST"], SERVER.env["PGPORT"]
    base = "host=%s port=%s dbname=%s user=%s" % (host, port, sc.db, role)
    texts = []  # (what, text) to search

    def args(conninfo, *extra, verb="stream"):
        a = [verb, "-d", conninfo, "-X", "slot.name=" + sc.slot, "-X", "tables=public.t_a",
             "-X", "log.level=debug", "-X", "spool.dir=" + sc.dir, "-X", "deadletter.file=" + sc.path("dl.jsonl")]
        for x in extra:
            a += ["-X", x]
        return a

    def live(what, a, env=None, kafka=False):
        """A streaming run: rows, a killed walsender (reconnect), /metrics, then SIGTERM."""
        out = sc.path("out-%d.txt" % len(texts))
        p = sc.crwatch(a, stdout=out, env=env, tag="secrets")
        p.wait_streaming()
        m = re.search(r"http: /metrics, /healthz and /readyz on [^:\s]+:(\d+)", p.stderr())
        psql(sc.db, "INSERT INTO t_a (payload) SELECT 'secret test' FROM generate_series(1, 5)")
        if not wait_confirmed(sc.db, sc.slot, current_lsn(sc.db), 30):
            sc.res.fail("%s: the rows were not confirmed: %s" % (what, p.tail()))
        pid = wait_slot_active(sc, 10)
        if pid:
            psql(sc.db, "SELECT pg_terminate_backend(%d)" % pid)
            wait_slot_active(sc, 20)
            psql(sc.db, "INSERT INTO t_a (payload) VALUES ('after the reconnect')")
            wait_confirmed(sc.db, sc.slot, current_lsn(sc.db), 30)
        if m:
            for path in ("/metrics", "/healthz", "/readyz"):
                texts.append(("%s %s" % (what, path), http_get(int(m.group(1)), path)))
        else:
            sc.res.fail("%s: no http.listen port in the log" % what)
        rc = p.term()
        if rc != 0:
            sc.res.fail("%s: exit %d on SIGTERM" % (what, rc))
        with open(out, errors="replace") as f:
            texts.append((what + " stdout", f.read()))
        texts.append((what + " log", p.stderr()))
        sc.res.iterations += 1

    def once(what, a, want_rc, env=None, timeout=30, stop_after=None):
        out = sc.path("out-%d.txt" % len(texts))
        p = sc.crwatch(a, stdout=out, env=env, tag="secrets")
        rc = p.wait(stop_after or timeout)
        if rc is None and stop_after:
            rc = p.term()
        elif rc is None:
            p.kill9()
            sc.res.fail("%s: still running after %d s" % (what, timeout))
        if want_rc is not None and rc != want_rc:
            sc.res.fail("%s: exit %s, want %d: %s" % (what, rc, want_rc, p.tail(3)))
        errs = error_lines(p)
        sc.res.note("%s: exit %s%s" % (what, rc, (": " + errs[0][:200]) if errs else ""))
        with open(out, errors="replace") as f:
            texts.append((what + " stdout", f.read()))
        texts.append((what + " log", p.stderr()))
        sc.res.iterations += 1

    m = Mock(sc)
    kafka = ["sink=stdout,kafka", "kafka.bootstrap.servers=" + m.bs, "kafka.sasl.username=torture",
             "kafka.sasl.password=" + sec["Saslpw"], "kafka.debug=generic,broker,conf,security",
             "http.listen=127.0.0.1:0"]
    live("password in the conninfo, text logs", args(base + " password=" + sec["Conninfo7pw"], *kafka))
    psql("postgres", "ALTER ROLE %s PASSWORD '%s'" % (role, sec["Envpw"]))
    live("PGPASSWORD, JSON logs", args(base, "log.format=json", *kafka), env={"PGPASSWORD": sec["Envpw"]})
    psql("postgres", "ALTER ROLE %s PASSWORD '%s'" % (role, sec["Uripw"]))
    live("password in a URI", args("postgresql://%s:%s@%s:%s/%s" % (role, sec["Uripw"], host, port, sc.db),
                                   "http.listen=127.0.0.1:0"))
    once("crwatch check, password in the conninfo", args(base + " password=" + sec["Uripw"], *kafka[:-1],
                                                         verb="check"), 0)
    once("slot status, PGPASSWORD", args(base, verb="slot") [:1] + ["status"] + args(base)[1:], 0,
         env={"PGPASSWORD": sec["Uripw"]})
    once("a wrong password in the conninfo", args(base + " password=" + sec["Wrongpw"]), 3)
    once("a wrong PGPASSWORD", args(base), 3, env={"PGPASSWORD": sec["Wrongenvpw"]})
    once("crwatch check, a wrong password", args(base + " password=" + sec["Wrongpw"], verb="check"), 3)
    once("a conninfo libpq refuses", args(base + " password=" + sec["Wrongpw"] + " sslmode=bogus"), 2)
    once("a conninfo that does not parse", args("password=%s junk" % sec["Wrongpw"]), 2)
    once("an unreachable server, retried", args("host=127.0.0.1 port=1 dbname=x user=%s password=%s"
                                                % (role, sec["Unreachpw"])), None, stop_after=3)
    conf = sc.path("secret.properties")
    with open(conf, "w") as f:
        f.write("sink = kafka\nkafka.bootstrap.servers = %s\nkafka.sasl.password = %s\nkafka.linger.ms = -7\n"
                % (m.bs, sec["Filepw"]))
    once("a -c file with a secret and a bad key", ["stream", "-c", conf] + args(base)[1:], 2)
    once("SASL refused by the broker", args(base + " password=" + sec["Uripw"], "sink=kafka",
                                            "kafka.bootstrap.servers=" + m.bs, "kafka.security.protocol=SASL_PLAINTEXT",
                                            "kafka.sasl.mechanisms=PLAIN", "kafka.sasl.username=torture",
                                            "kafka.sasl.password=" + sec["Saslpw"], "kafka.debug=all"),
         None, stop_after=6)
    leaks = []
    for what, text in texts:
        for name, s in sec.items():
            if s in text:
                line = next(ln for ln in text.splitlines() if s in ln)
                leaks.append("%s in %s: %s" % (name, what, line[:200]))
    # The search sees what it should: the role's name and the SASL user are in the outputs, the secrets not.
    for canary in (role, "sasl.username", "crwatch_events_total"):
        if not any(canary in t for _, t in texts):
            sc.res.fail("the outputs searched do not hold %r: the search is blind" % canary)
    lines = sum(t.count("\n") for _, t in texts)
    sc.res.note("%d outputs searched (%d lines: logs at debug, stdout, /metrics, /healthz, /readyz) for %d secrets"
                % (len(texts), lines, len(sec)))
    for lk in leaks[:10]:
        sc.res.fail("a secret appeared: " + lk)


# ---- file modes -----------------------------------------------------------


def spool_fds(pid, spool):
    """(fd, mode) of pid's open files under spool (unlinked spool files)."""
    out = []
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target.startswith(spool + "/"):
                out.append((target, os.stat("/proc/%d/fd/%s" % (pid, fd)).st_mode & 0o7777))
    except OSError:
        pass
    return out


def scenario_filemodes(sc):
    sc.create_db()
    psql(sc.db, "CREATE TABLE t_dl (id bigint PRIMARY KEY, k text, v bigint NOT NULL DEFAULT 1)")
    cw = sc.path("crwatch")  # everything crwatch writes goes here; our own files stay out
    spool = os.path.join(cw, "spool")
    os.makedirs(spool)
    os.chmod(cw, 0o777)
    os.chmod(spool, 0o777)
    dl = os.path.join(cw, "deadletter.jsonl")
    handler = "exec %s -u %s %s 0 poison" % (sys.executable, os.path.join(HERE, "handler.py"), sc.path("h.jsonl"))
    args = sc.crwatch_args("spool.dir=" + spool, "deadletter.file=" + dl, "resource.dl.table=public.t_dl",
                           "resource.dl.key=k", "sink=stdout,exec", "exec.command=" + handler, "retry.max=0",
                           "snapshot.state.file=" + os.path.join(cw, "stream.state"), "snapshot.mode=initial")
    psql(sc.db, "INSERT INTO t_a (payload) SELECT 'initial' FROM generate_series(1, 100)")
    p = sc.crwatch(args, stdout=sc.path("events.jsonl"), umask=0, cwd=cw)
    p.wait_streaming()
    psql(sc.db, "INSERT INTO t_dl VALUES (1, NULL)")  # a NULL key: the mapper's dead letter
    psql(sc.db, "INSERT INTO t_a (payload) VALUES ('poison')")  # the handler says fail: the sink's dead letter
    # A transaction held open while PostgreSQL streams it: its spool file lives meanwhile.
    hold = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", sc.db, "-c",
                             "BEGIN; INSERT INTO t_a (payload) SELECT repeat('s', 100) FROM generate_series(1, 5000); "
                             "SELECT pg_sleep(4); COMMIT;"], env=SERVER.env, stdout=subprocess.DEVNULL)
    fds, t = [], time.time()
    while time.time() < t + 10 and not fds:
        fds = spool_fds(p.pid, spool)
        time.sleep(0.1)
    hold.wait(30)
    if not wait_confirmed(sc.db, sc.slot, current_lsn(sc.db), 30):
        sc.res.fail("the stream did not confirm its changes: %s" % p.tail())
    p.term()
    r = subprocess.run([sc.ctx.crwatch, "backfill", "-d", "dbname=" + sc.db, "-X", "tables=public.t_a",
                        "-X", "slot.name=" + sc.slot + "_bf", "-X", "snapshot.state.file=" + os.path.join(cw, "backfill.state"),
                        "-X", "deadletter.file=" + dl], cwd=cw, env=SERVER.env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, preexec_fn=lambda: os.umask(0), timeout=120)
    if r.returncode != 0:
        sc.res.fail("backfill exited %d: %s" % (r.returncode, r.stderr.decode(errors="replace")[-300:]))
    found = []
    for dirpath, _, files in os.walk(cw):
        for fn in files:
            path = os.path.join(dirpath, fn)
            found.append((os.path.relpath(path, cw), os.stat(path).st_mode & 0o7777))
    found += [(os.path.relpath(t, cw) + " (open, unlinked)", m) for t, m in fds]
    want = {"deadletter.jsonl", "stream.state.initial", "backfill.state"}
    missing = want - {f for f, _ in found}
    if missing:
        sc.res.fail("crwatch did not write %s" % ", ".join(sorted(missing)))
    if not fds:
        sc.res.fail("no spool file was seen while a transaction streamed")
    for f, mode in sorted(found):
        sc.res.iterations += 1
        if mode != 0o600:
            sc.res.fail("%s has mode %04o under umask 000, want 0600" % (f, mode))
    sc.res.note("under umask 000: " + ", ".join("%s %04o" % (f, m) for f, m in sorted(found)))


SCENARIOS = {}


def scenario(name, doc):
    def deco(fn):
        SCENARIOS[name] = (fn, doc)
        return fn
    return deco


scenario("kill9-stdout", "kill -9 at random moments under load; stdout appended to a file (at-least-once)")(
    scenario_kill9_stdout)
scenario("kill9-exec", "the same with the exec sink: a handler appending to a file, 2 workers, 2% retries")(
    scenario_kill9_exec)
scenario("kill9-kafka-alo", "the same into Kafka (crwatch-mock-kafka), at-least-once")(
    lambda sc: scenario_kill9_kafka(sc, False))
scenario("kill9-kafka-eos", "the same, exactly-once, read back read_committed: every change exactly once")(
    lambda sc: scenario_kill9_kafka(sc, True))
scenario("pg-restart", "the server restarted (fast and immediate) mid-stream, then the walsender terminated "
         "repeatedly")(scenario_pg_restart)
scenario("broker-down", "the Kafka broker down mid-load, exactly-once: the slot held, then every change once")(
    scenario_broker_down)
scenario("broker-refuse", "exactly-once: a message too large for the producer, one refused by the broker: "
         "dead-lettered, never confirmed before")(scenario_broker_refuse)
scenario("fullfs", "the spool and the dead-letter file on a full filesystem (tmpfs, root only), then space "
         "comes back")(scenario_fullfs)
scenario("hostile", "a 50 MiB value, 1,000 columns, a huge transaction (RSS bounded), DDL mid-stream, a dropped "
         "table, unknown types, TRUNCATE CASCADE")(scenario_hostile)
scenario("secrets", "passwords (conninfo, PGPASSWORD, URI, kafka.sasl.password) never in logs at debug, errors, "
         "/metrics")(scenario_secrets)
scenario("filemodes", "files crwatch writes (dead letters, spool, snapshot state) are 0600 under umask 000")(
    scenario_filemodes)


# ---- parameters -----------------------------------------------------------

PARAMS = {
    "short": {
        "kills": 5, "kills_kafka": 5, "kill_delay": (1.0, 3.0),
        "restarts": 2, "walsender_kills": 3, "down_secs": 5, "bulk_rows": 200000, "bulk_rss_mib": 64,
        "load": {"rate": 60, "bigrows": 200}, "load_kafka": {"rate": 40, "bigrows": 100},
    },
    "long": {
        "kills": 50, "kills_kafka": 50, "kill_delay": (0.5, 4.0),
        "restarts": 10, "walsender_kills": 20, "down_secs": 30, "bulk_rows": 2000000, "bulk_rss_mib": 64,
        "load": {"rate": 60, "bigrows": 200}, "load_kafka": {"rate": 40, "bigrows": 100},
    },
}


class Ctx:
    def __init__(self, mode, work, seed):
        self.mode = mode
        self.work = work
        self.seed = seed
        self.crwatch = os.environ["CRWATCH"]
        self.mock = os.environ.get("CRW_MOCK_KAFKA") or os.path.join(os.path.dirname(self.crwatch),
                                                                     "crwatch-mock-kafka")
        self.params = PARAMS[mode]
        self.current = None

    def p(self, key):
        ov = os.environ.get("TORTURE_" + key.upper())
        if ov is not None:
            v = self.params[key]
            return type(v)(json.loads(ov)) if not isinstance(v, (int, float)) else type(v)(float(ov))
        return self.params[key]


def fmt(v, spec="%d"):
    return "-" if v is None else spec % v


def table(results, mode, total):
    head = ("scenario", "iterations", "changes", "lost", "duplicated", "max RSS (MiB)", "verdict")
    rows = [(r.name, fmt(r.iterations), fmt(r.changes), fmt(r.lost), fmt(r.duplicated),
             "%.1f" % (r.rss / MiB) if r.rss else "-", r.verdict) for r in results]
    w = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["crwatch torture, %s form, %s, %.0f s" % (mode, time.strftime("%Y-%m-%d %H:%M:%S"), total)]
    lines.append("  ".join(h.ljust(w[i]) for i, h in enumerate(head)))
    lines.append("  ".join("-" * w[i] for i in range(len(head))))
    for row in rows:
        lines.append("  ".join(c.ljust(w[i]) if i == 0 or i == 6 else c.rjust(w[i]) for i, c in enumerate(row)))
    n = {v: sum(r.verdict == v for r in results) for v in ("PASS", "FAIL", "SKIP")}
    lines.append("")
    lines.append("%d passed, %d failed, %d skipped" % (n["PASS"], n["FAIL"], n["SKIP"]))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(prog="scripts/torture")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--short", dest="mode", action="store_const", const="short")
    g.add_argument("--long", dest="mode", action="store_const", const="long")
    ap.add_argument("--list", action="store_true", help="list the scenarios")
    ap.add_argument("--check-args", action="store_true", help=argparse.SUPPRESS)  # scripts/torture, before building
    ap.add_argument("scenarios", nargs="*")
    a = ap.parse_args()
    if a.list:
        for name, (_, doc) in SCENARIOS.items():
            print("%-18s %s" % (name, doc))
        return 0
    mode = a.mode or "long"
    names = a.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.stderr.write("scripts/torture: unknown scenario %s (--list lists them)\n" % ", ".join(unknown))
        return 2
    if a.check_args:
        return 0
    work = os.environ["TORTURE_WORK"]
    seed = int(os.environ.get("TORTURE_SEED") or random.SystemRandom().randrange(1 << 30))
    ctx = Ctx(mode, work, seed)
    log("%s form, scenarios: %s; seed %d (TORTURE_SEED=%d repeats the kill timings); work dir %s"
        % (mode, " ".join(names), seed, seed, work))

    global SERVER
    SERVER = Server(work)
    SERVER.start()
    log("PostgreSQL at %s:%s" % (SERVER.env["PGHOST"], SERVER.env["PGPORT"]))
    stop = threading.Event()
    threading.Thread(target=rss_sampler, args=(stop,), daemon=True).start()
    results = []
    t0 = time.time()
    try:
        for name in names:
            sc = Scenario(ctx, name)
            ctx.current = sc
            log("---- %s" % name)
            ts = time.time()
            try:
                SCENARIOS[name][0](sc)
            except Skip as e:
                sc.res.verdict = "SKIP"
                sc.res.note("SKIP: %s" % e)
            except Fail as e:
                sc.res.fail(str(e))
            except Exception as e:  # noqa: BLE001  a broken scenario is a failed one
                sc.res.fail("driver error: %r" % e)
                traceback.print_exc()
            finally:
                sc.cleanup()
            sc.res.seconds = time.time() - ts
            log("%s: %s in %.0f s" % (name, sc.res.verdict, sc.res.seconds))
            results.append(sc.res)
    finally:
        stop.set()
        with PROCS_LOCK:
            for p in PROCS:
                if p.alive():
                    p.kill9()
        SERVER.stop()
    text = table(results, mode, time.time() - t0)
    notes = ["", "notes:"]
    for r in results:
        notes.append("  %s (%.0f s):" % (r.name, r.seconds))
        notes += ["    " + n for n in r.notes]
    print("\n".join(notes))
    print()
    print(text)
    if os.environ.get("TORTURE_RESULTS"):
        with open(os.environ["TORTURE_RESULTS"], "w") as f:
            f.write(text + "\n" + "\n".join(notes) + "\n")
    return 1 if any(r.verdict == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
