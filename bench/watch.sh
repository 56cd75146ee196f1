#!/usr/bin/env bash
# bench/watch.sh — the watch API's fan-out: W watchers of one crd kind while
# `crwatch stream` streams N status updates; how long until every watcher has
# every change, the stream's own rate meanwhile, and crwatch's memory per
# watcher.  See bench/README.md ("bench/watch.sh") for how to read the output.
#
#   bench/watch.sh                                   # defaults: 20,000 changes, W = 0 1 10 100, live and burst
#   BENCH_WATCHERS="0 10" BENCH_MODES=live bench/watch.sh   # fewer phases
#   BENCH_HISTORY=100000 bench/watch.sh               # a longer watch.history.events
#   CRWATCH=/path/to/crwatch bench/watch.sh           # no build
#
# What it does, in one run:
#   1. starts a throwaway PostgreSQL (scripts/pg) in a temp dir, removed on exit;
#   2. builds crwatch (Release) unless CRWATCH is given;
#   3. creates the database `watch` with sql/crwatch.sql and public.jobs in the
#      convention (the columns of tests/integration/support/itest.h,
#      PRIMARY KEY (namespace, name)), crwatch.manage('public.jobs'), and
#      BENCH_OBJECTS jobs in 10 namespaces;
#   4. starts ONE crwatch for the whole run: `crwatch stream` with the kind
#      VideoTranscodingJob (shape=crd, api.version=media.example.com/v1) on
#      public.jobs, watch.listen and http.listen on free ports, sink=stdout to
#      /dev/null; it creates its slot and publication and lists the table;
#   5. one phase per W in BENCH_WATCHERS and mode in BENCH_MODES, in that order:
#      - the list's resourceVersion is read; W `curl -sN` watchers
#        (?watch=1&resourceVersion=RV: only the changes after it) each write to
#        a file of their own; the phase waits until crwatch has a thread for
#        each (one thread per connection) and reads its VmRSS;
#      - the writer (psql, one session) makes N single-row UPDATEs of status
#        (round robin over the jobs), BENCH_BATCH per transaction; the last one
#        carries a marker (its status.seq);
#        live:  the writer runs while crwatch streams; t0 = the writer's start;
#        burst: crwatch is stopped (SIGSTOP) while the writer runs and continued
#               (SIGCONT) at t0, so it streams a backlog of N changes at its own
#               pace: the fan-out's capacity, not the writer's;
#      - a poller (one python3 process, every BENCH_POLL_MS) notes when each
#        watcher's file ends with the marker, when crwatch_events_total (from
#        /metrics) has grown by N, when the slot's confirmed_flush_lsn reached
#        the writer's last commit, and crwatch's VmRSS;
#      - then the watchers are stopped and checked: N lines each, every line a
#        MODIFIED of this phase, the first file's status.seq in write order,
#        no ERROR event (a watcher that fell behind watch.history.events is cut
#        off with one), and every file byte-identical to the first (md5);
#   6. the linger check (BENCH_LINGER): 10 watchers connect and disconnect while
#      nothing changes; how long their connection threads stay;
#   7. stops crwatch (SIGTERM), prints the table, writes bench/results/watch-<stamp>.txt.
#
# Environment (defaults in brackets):
#   BENCH_CHANGES [20000]       status updates per phase (N)
#   BENCH_OBJECTS [1000]        jobs in the table (the updates go round robin over them)
#   BENCH_BATCH [100]           single-row UPDATEs per writer transaction
#   BENCH_SPEC_PAD [200]        bytes of padding in each spec (a watch line is ~0.5 KiB plus this)
#   BENCH_WATCHERS ["0 1 10 100"] watcher counts, one phase (per mode) each, in this order
#   BENCH_MODES ["live burst"]  live: write while streaming; burst: crwatch stopped while writing
#   BENCH_HISTORY               watch.history.events for crwatch (unset: its default, 10000)
#   BENCH_POLL_MS [50]          the poller's interval (with a poll's own time, the resolution of the times)
#   BENCH_LINGER [20]           after the phases: 10 watchers connect and go; crwatch's threads are
#                               counted each second for this long without changes, then after one
#                               change (0: skip)
#   BENCH_DRAIN_TIMEOUT [180]   seconds a phase may take after t0 before it counts as failed
#   BENCH_CRWATCH_OPTS          more -X settings for crwatch, space separated key=value
#   BENCH_PG_OPTS               more server settings, space separated name=value
#   BENCH_KEEP_FILES [0]        1: keep the watchers' files (in the temp dir; with BENCH_KEEP=1)
#   BENCH_RESULTS [bench/results] where the result file goes
#   BENCH_BUILD_DIR [${TMPDIR:-/tmp}/crwatch-bench-build]   Release build dir (kept)
#   BENCH_KEEP [0]              1: keep the temp dir (cluster stopped, logs kept)
#   CRWATCH                     a crwatch binary to use instead of building one
#
# Needs the PostgreSQL 15 server binaries (scripts/deps), curl, python3, md5sum.
# The watchers' files take about W x N x the line size on disk per phase
# (100 x 20,000 x ~0.7 KiB = ~1.4 GB), removed after each phase.
# Exit status: 0 every phase completed and every watcher got the same N
# changes; 1 otherwise (crwatch died, a watcher was cut off or missed events,
# or a phase timed out).
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init watch

N="${BENCH_CHANGES:-20000}"
OBJECTS="${BENCH_OBJECTS:-1000}"
BATCH="${BENCH_BATCH:-100}"
SPEC_PAD="${BENCH_SPEC_PAD:-200}"
WATCHERS="${BENCH_WATCHERS:-0 1 10 100}"
MODES="${BENCH_MODES:-live burst}"
HISTORY="${BENCH_HISTORY:-}"
POLL_MS="${BENCH_POLL_MS:-50}"
DRAIN_TIMEOUT="${BENCH_DRAIN_TIMEOUT:-180}"
KEEP_FILES="${BENCH_KEEP_FILES:-0}"
LINGER="${BENCH_LINGER:-20}"

for v in N OBJECTS BATCH POLL_MS DRAIN_TIMEOUT; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "bench/watch.sh: $v must be a positive integer" >&2; exit 2; }
done
[[ "$LINGER" =~ ^[0-9]+$ ]] || { echo "bench/watch.sh: BENCH_LINGER must be an integer" >&2; exit 2; }
[[ "$SPEC_PAD" =~ ^[0-9]+$ ]] || { echo "bench/watch.sh: BENCH_SPEC_PAD must be an integer" >&2; exit 2; }
[[ -z "$HISTORY" || "$HISTORY" =~ ^[1-9][0-9]*$ ]] || { echo "bench/watch.sh: BENCH_HISTORY must be a positive integer" >&2; exit 2; }
for w in $WATCHERS; do [[ "$w" =~ ^[0-9]+$ ]] || { echo "bench/watch.sh: BENCH_WATCHERS: '$w' is not a count" >&2; exit 2; }; done
for m in $MODES; do [[ "$m" == live || "$m" == burst ]] || { echo "bench/watch.sh: BENCH_MODES: '$m' is not live or burst" >&2; exit 2; }; done

DB=watch
SLOT=watchbench
GROUP_VERSION=media.example.com/v1
PLURAL=videotranscodingjobs

# ---------------------------------------------------------------- prerequisites
bench_need "$PG_BIN/psql" curl python3 md5sum
bench_workdir crwatch-watchbench
CRW_PID=""
WRITER_PID=""
POLLER_PID=""
CURL_PIDS=()
# shellcheck disable=SC2317  # invoked by bench_cleanup
bench_on_exit() {
  local p
  if [[ -n "$WRITER_PID" ]]; then kill -TERM "$WRITER_PID" 2>/dev/null || true; fi
  if [[ -n "$POLLER_PID" ]]; then kill -TERM "$POLLER_PID" 2>/dev/null || true; fi
  for p in "${CURL_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  if [[ -n "$CRW_PID" ]]; then
    kill -CONT "$CRW_PID" 2>/dev/null || true
    kill -9 "$CRW_PID" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
}
bench_build crwatch

# ---------------------------------------------------------------- server, table
bench_start_pg
PG_VERSION="$(q "SHOW server_version")"
q "CREATE DATABASE $DB"
psqlx -d "$DB" -f "$ROOT/sql/crwatch.sql" >/dev/null
qb "CREATE TABLE public.jobs (
  namespace text NOT NULL DEFAULT 'default', name text NOT NULL, uid uuid NOT NULL,
  generation bigint NOT NULL, resource_version bigint NOT NULL, labels jsonb NOT NULL DEFAULT '{}',
  annotations jsonb NOT NULL DEFAULT '{}', spec jsonb NOT NULL, status jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, deleted_at timestamptz,
  PRIMARY KEY (namespace, name));
SELECT crwatch.manage('public.jobs');" >/dev/null
qb "INSERT INTO public.jobs (namespace, name, labels, spec)
  SELECT 'team-' || (i % 10), 'job-' || lpad(i::text, 6, '0'),
    jsonb_build_object('team', 'team-' || (i % 10), 'tier', 'batch-' || (i % 4)),
    jsonb_build_object('preset', 'h264-1080p', 'priority', i % 10,
      'input', 's3://media/in/' || md5(i::text) || '.mov', 'pad', repeat('x', $SPEC_PAD))
  FROM generate_series(1, $OBJECTS) AS i" >/dev/null

# The writer of phase P: N single-row status updates, BATCH per transaction,
# round robin over the jobs; status.seq = P * 10^7 + k (k = 1..N, unique over
# the run), so the last one is the marker. It ends by printing the WAL
# position after its last commit.
writer_sql() { # P
  awk -v p="$1" -v n="$N" -v m="$OBJECTS" -v b="$BATCH" 'BEGIN {
    print "\\set ON_ERROR_STOP 1"
    split("Pending Running Running Succeeded", ph, " ")
    for (k = 1; k <= n; k++) {
      if ((k - 1) % b == 0) print "BEGIN;"
      j = (k - 1) % m + 1
      printf "UPDATE public.jobs SET status = jsonb_build_object(%s, %s, %s, %d, %s, %d) WHERE namespace = %s AND name = %s;\n",
        "'\''phase'\''", "'\''" ph[k % 4 + 1] "'\''", "'\''seq'\''", p * 10000000 + k, "'\''progress'\''", k % 101,
        "'\''team-" (j % 10) "'\''", sprintf("'\''job-%06d'\''", j)
      if (k % b == 0 || k == n) print "COMMIT;"
    }
    print "SELECT pg_current_wal_lsn();"
  }'
}

# ---------------------------------------------------------------- crwatch
CRW_OPTS=(-X "slot.name=$SLOT" -X "publication.name=$SLOT"
  -X resource.j.table=public.jobs -X resource.j.kind=VideoTranscodingJob -X resource.j.shape=crd
  -X "resource.j.api.version=$GROUP_VERSION" -X watch.listen=127.0.0.1:0 -X http.listen=127.0.0.1:0
  -X sink=stdout -X log.level=info)
[[ -n "$HISTORY" ]] && CRW_OPTS+=(-X "watch.history.events=$HISTORY")
for kv in ${BENCH_CRWATCH_OPTS:-}; do CRW_OPTS+=(-X "$kv"); done

log "starting crwatch stream (watch.listen, http.listen on free ports, sink=stdout -> /dev/null)"
"$CRW" stream -d "dbname=$DB" "${CRW_OPTS[@]}" >/dev/null 2>"$WORK/crwatch.err" &
CRW_PID=$!
WPORT="" MPORT=""
for ((i = 0; i < 300; i++)); do
  kill -0 "$CRW_PID" 2>/dev/null || { cat "$WORK/crwatch.err" >&2; die "crwatch exited at start"; }
  WPORT="$(grep -o 'the watch API on 127\.0\.0\.1:[0-9]*' "$WORK/crwatch.err" | head -n 1 | sed 's/.*://' || true)"
  MPORT="$(grep -o 'http: /metrics.* on 127\.0\.0\.1:[0-9]*' "$WORK/crwatch.err" | head -n 1 | sed 's/.*://' || true)"
  if [[ -n "$WPORT" && -n "$MPORT" ]] && [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/readyz" || true)" == 200 ]]; then
    break
  fi
  sleep 0.1
done
[[ -n "$WPORT" && -n "$MPORT" ]] || { cat "$WORK/crwatch.err" >&2; die "no watch API or /metrics port in crwatch's log"; }
BASE="http://127.0.0.1:$WPORT/apis/$GROUP_VERSION/$PLURAL"
HISTORY_EFF="$(grep -m 1 -o 'history of [0-9]* events' "$WORK/crwatch.err" | awk '{print $3}' || true)"
log "crwatch pid $CRW_PID: watch API on port $WPORT (history of ${HISTORY_EFF:-?} events), /metrics on $MPORT"

proc_status() { # FIELD -> kB (or count) from /proc/CRW_PID/status
  awk -v f="$1:" '$1 == f {print $2}' "/proc/$CRW_PID/status"
}
proc_cpu() { # user + sys seconds of crwatch
  awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz}' "/proc/$CRW_PID/stat"
}
events_total() {
  curl -s "http://127.0.0.1:$MPORT/metrics" | awk '/^crwatch_events_total/ {s += $NF} END {printf "%d\n", s}'
}
list_rv() { # the list's metadata.resourceVersion (the first one in the body)
  local body
  body="$(curl -s "$BASE")"
  [[ "$body" =~ \"resourceVersion\":\"([0-9]+)\" ]] || die "no resourceVersion in the list: ${body:0:200}"
  echo "${BASH_REMATCH[1]}"
}
wait_idle() { # until crwatch has confirmed the WAL written so far (or 30 s)
  local lsn i
  lsn="$(qb "SELECT pg_current_wal_lsn()")"
  for ((i = 0; i < 300; i++)); do
    [[ "$(qb "SELECT coalesce(pg_wal_lsn_diff('$lsn', confirmed_flush_lsn) <= 0, false)::int FROM pg_replication_slots WHERE slot_name = '$SLOT'")" == 1 ]] && return 0
    sleep 0.1
  done
  log "crwatch did not confirm $lsn within 30 s"
}
wait_idle
ITEMS="$(curl -s "$BASE" | grep -o '"kind":"VideoTranscodingJob"' | wc -l)"
((ITEMS == OBJECTS)) || die "the list has $ITEMS objects, want $OBJECTS"
RSS_START="$(proc_status VmRSS)"
THREADS_START="$(proc_status Threads)"
log "crwatch streams; the list has $ITEMS objects; VmRSS $((RSS_START / 1024)) MiB, $THREADS_START threads"

# ---------------------------------------------------------------- the poller
# Times are seconds after t0. Watcher i is done when its file ends with the
# marker (its last change), dead when its curl is gone without it.
cat >"$WORK/poll.py" <<'PY'
import json, os, re, subprocess, sys, time, urllib.request
(t0_file, timeout, poll_ms, murl, base_events, n, marker, psql_cmd, lsn_file, pid, out) = sys.argv[1:12]
files = sys.argv[12:]
# Started before t0 (python's start-up is not in the times): t0 is in t0_file once it has come.
while not (os.path.exists(t0_file) and os.path.getsize(t0_file) > 0):
    time.sleep(0.002)
t0 = float(open(t0_file).read()); timeout = float(timeout); poll = int(poll_ms) / 1000.0
base_events = int(base_events); n = int(n); pid = int(pid)
mark = re.compile(marker.encode())
wfiles = files[0::2]; wpids = [int(p) for p in files[1::2]]
done = [None] * len(wfiles); dead = [None] * len(wfiles); cut = [False] * len(wfiles)
stream_done = confirm_done = writer_done = None
rss_max = 0; last_events = base_events; target = None; polls = 0; events_at = []
def alive(p):
    try:
        with open("/proc/%d/stat" % p) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
def events():
    try:
        body = urllib.request.urlopen(murl, timeout=2).read().decode()
    except Exception:
        return None
    return sum(float(l.rsplit(" ", 1)[1]) for l in body.splitlines() if l.startswith("crwatch_events_total"))
cycle_max = 0.0; slow_req = 0.0
while True:
    c0 = time.time(); now = c0 - t0; polls += 1
    try:
        with open("/proc/%d/status" % pid) as f:
            for l in f:
                if l.startswith("VmRSS:"):
                    rss_max = max(rss_max, int(l.split()[1]))
    except OSError:
        break  # crwatch is gone
    # Every time is taken when the observation is complete (an upper bound of when it happened).
    if stream_done is None:
        r0 = time.time(); e = events(); r1 = time.time()
        slow_req = max(slow_req, r1 - r0)
        if e is not None:
            last_events = e
            events_at.append((round(r1 - t0, 3), int(e - base_events)))
            if e - base_events >= n:
                stream_done = r1 - t0
    if target is None and os.path.exists(lsn_file) and os.path.getsize(lsn_file) > 0:
        target = open(lsn_file).read().split()[-1]
        writer_done = os.path.getmtime(lsn_file) - t0
    if target and confirm_done is None:
        r = subprocess.run(psql_cmd.split("\x1f") + ["SELECT coalesce(pg_wal_lsn_diff('%s', confirmed_flush_lsn) <= 0, false)::int FROM pg_replication_slots WHERE slot_name = 'watchbench'" % target],
                           capture_output=True, text=True)
        if r.stdout.strip() == "1":
            confirm_done = time.time() - t0
    for i, fn in enumerate(wfiles):
        if done[i] is not None or dead[i] is not None:
            continue
        try:
            sz = os.path.getsize(fn)
            with open(fn, "rb") as f:
                f.seek(max(0, sz - 16384)); tail = f.read()
        except OSError:
            tail = b""
        t = time.time() - t0
        if mark.search(tail):
            done[i] = t
        elif b'"type":"ERROR"' in tail:
            dead[i] = t; cut[i] = True
        elif not alive(wpids[i]):
            dead[i] = t
    cycle_max = max(cycle_max, time.time() - c0)
    pending = sum(1 for i in range(len(wfiles)) if done[i] is None and dead[i] is None)
    if stream_done is not None and confirm_done is not None and pending == 0:
        break
    if now > timeout:
        break
    time.sleep(poll)
json.dump(dict(stream_done=stream_done, confirm_done=confirm_done, writer_done=writer_done, target_lsn=target,
               events_seen=int(last_events - base_events), watcher_done=done, watcher_dead=dead, watcher_cut=cut,
               rss_max_kib=rss_max, polls=polls, poll_cycle_max_s=round(cycle_max, 3), metrics_request_max_s=round(slow_req, 3),
               events_at=events_at[:: max(1, len(events_at) // 40)]),
          open(out, "w"))
PY

# Checks the watcher files of phase P: counts, order, types, identity.
cat >"$WORK/check.py" <<'PY'
import hashlib, json, re, sys
p, n, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
files = sys.argv[4:]
seq_re = re.compile(rb'"seq": ?(\d+)')
res = dict(files=len(files), lines=[], md5=[], errors=[], not_modified=[], seq_ok=None, seq_first_bad=None, identical=None)
first_seqs = None
for k, fn in enumerate(files):
    h = hashlib.md5(); lines = 0; errs = 0; notmod = 0; seqs = [] if k == 0 else None
    with open(fn, "rb") as f:
        for line in f:
            h.update(line); lines += 1
            if line.startswith(b'{"type":"ERROR"'): errs += 1
            elif not line.startswith(b'{"type":"MODIFIED"'): notmod += 1
            if seqs is not None:
                m = seq_re.search(line)
                seqs.append(int(m.group(1)) if m else -1)
    res["lines"].append(lines); res["md5"].append(h.hexdigest()); res["errors"].append(errs); res["not_modified"].append(notmod)
    if k == 0:
        want = list(range(p * 10000000 + 1, p * 10000000 + n + 1))
        res["seq_ok"] = seqs == want
        if seqs != want:
            bad = next((i for i, (a, b) in enumerate(zip(seqs, want)) if a != b), min(len(seqs), len(want)))
            res["seq_first_bad"] = dict(index=bad, got=seqs[bad] if bad < len(seqs) else None, want=want[bad] if bad < len(want) else None)
if files:
    res["identical"] = len(set(res["md5"])) == 1
json.dump(res, open(out, "w"))
PY

# ---------------------------------------------------------------- phases
FAILED=0
declare -a ROWS=()
RAW="$WORK/raw.txt"
: >"$RAW"
PSQL_CMD="$PG_BIN/psql"$'\x1f'-X$'\x1f'-q$'\x1f'-d$'\x1f'"$DB"$'\x1f'-Atc
p=0
for mode in $MODES; do
  for w in $WATCHERS; do
    p=$((p + 1))
    writer_sql "$p" >"$WORK/writer-$p.sql"
    wait_idle
    # The previous phase's connection threads notice that their watcher went only
    # when a write fails: the second change after it went (see the linger check).
    # Up to three throwaway changes (not in any phase's count) end them first, so
    # they do not wake with every change of this phase.
    for ((k = 1; k <= 3; k++)); do
      for ((i = 0; i < 20; i++)); do (($(proc_status Threads) <= THREADS_START)) && break; sleep 0.05; done
      (($(proc_status Threads) <= THREADS_START)) && break
      ((k > 1)) || log "phase $p: $(($(proc_status Threads) - THREADS_START)) connection threads of gone watchers are still there; flushing them with throwaway changes"
      qb "UPDATE public.jobs SET annotations = jsonb_build_object('flush', $p * 10 + $k) WHERE namespace = 'team-1' AND name = 'job-000001'" >/dev/null
      sleep 0.5
    done
    (($(proc_status Threads) <= THREADS_START)) ||
      log "phase $p: $(($(proc_status Threads) - THREADS_START)) connection threads of gone watchers are still there after three changes"
    wait_idle
    rv="$(list_rv)"
    rss_before="$(proc_status VmRSS)"; thr_before="$(proc_status Threads)"
    CURL_PIDS=()
    files=()
    for ((i = 1; i <= w; i++)); do
      f="$WORK/w$p-$i.ndjson"
      curl -sN "$BASE?watch=1&resourceVersion=$rv" >"$f" 2>/dev/null &
      CURL_PIDS+=($!)
      files+=("$f" "$!")
    done
    thr=0
    for ((i = 0; i < 200; i++)); do
      thr="$(proc_status Threads)"
      ((thr >= thr_before + w)) && break
      sleep 0.05
    done
    ((thr >= thr_before + w)) || log "phase $p: only $((thr - thr_before)) of $w watcher threads after 10 s"
    sleep 0.5
    rss_conn="$(proc_status VmRSS)"
    cpu0="$(proc_cpu)"
    ev0="$(events_total)"
    rm -f "$WORK/lsn-$p" "$WORK/t0-$p"
    python3 "$WORK/poll.py" "$WORK/t0-$p" "$DRAIN_TIMEOUT" "$POLL_MS" "http://127.0.0.1:$MPORT/metrics" "$ev0" "$N" \
      "\"seq\": ?$((p * 10000000 + N))[,}]" "$PSQL_CMD" "$WORK/lsn-$p" "$CRW_PID" "$WORK/poll-$p.json" ${files[@]+"${files[@]}"} &
    POLLER_PID=$!
    sleep 0.5 # python's start-up
    if [[ "$mode" == burst ]]; then
      kill -STOP "$CRW_PID"
      tw0=$(date +%s.%N)
      psqlx -d "$DB" -At -f "$WORK/writer-$p.sql" >"$WORK/lsn-$p.tmp"
      tw1=$(date +%s.%N)
      t0=$(date +%s.%N)
      mv "$WORK/lsn-$p.tmp" "$WORK/lsn-$p"
      touch -d "@$t0" "$WORK/lsn-$p"
      echo "$t0" >"$WORK/t0-$p.tmp" && mv "$WORK/t0-$p.tmp" "$WORK/t0-$p"
      kill -CONT "$CRW_PID"
      write_s=$(echo "$tw1 - $tw0" | bc -l)
    else
      t0=$(date +%s.%N)
      echo "$t0" >"$WORK/t0-$p.tmp" && mv "$WORK/t0-$p.tmp" "$WORK/t0-$p"
      (psqlx -d "$DB" -At -f "$WORK/writer-$p.sql" >"$WORK/lsn-$p.tmp" && mv "$WORK/lsn-$p.tmp" "$WORK/lsn-$p") &
      WRITER_PID=$!
      write_s=""
    fi
    wait "$POLLER_PID" || { log "phase $p: the poller failed"; FAILED=1; }
    POLLER_PID=""
    if [[ -n "$WRITER_PID" ]]; then wait "$WRITER_PID" || { log "phase $p: the writer failed"; FAILED=1; }; WRITER_PID=""; fi
    cpu1="$(proc_cpu)"
    rss_after="$(proc_status VmRSS)"
    for pid in "${CURL_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${CURL_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    CURL_PIDS=()
    sleep 0.5
    rss_disc="$(proc_status VmRSS)"; hwm="$(proc_status VmHWM)"; thr_disc="$(proc_status Threads)"
    wfiles=()
    for ((i = 1; i <= w; i++)); do wfiles+=("$WORK/w$p-$i.ndjson"); done
    python3 "$WORK/check.py" "$p" "$N" "$WORK/check-$p.json" ${wfiles[@]+"${wfiles[@]}"}
    ((KEEP_FILES)) || rm -f ${wfiles[@]+"${wfiles[@]}"}
    kill -0 "$CRW_PID" 2>/dev/null || { tail -n 20 "$WORK/crwatch.err" >&2; die "phase $p: crwatch exited"; }
    row="$(python3 - "$WORK/poll-$p.json" "$WORK/check-$p.json" "$mode" "$w" "$N" "${write_s:-}" \
      "$rss_before" "$rss_conn" "$rss_after" "$rss_disc" "$hwm" "$cpu0" "$cpu1" "$thr_before" "$thr" "$thr_disc" <<'PY'
import json, statistics, sys
pl = json.load(open(sys.argv[1])); ck = json.load(open(sys.argv[2]))
mode, w, n = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
write_s = float(sys.argv[6]) if sys.argv[6] else pl["writer_done"]
rss_b, rss_c, rss_a, rss_d, hwm = map(int, sys.argv[7:12]); cpu0, cpu1 = map(float, sys.argv[12:14])
thr_b, thr, thr_d = map(int, sys.argv[14:17])
errs = []
done = [d for d in pl["watcher_done"] if d is not None]
if pl["stream_done"] is None: errs.append("the stream did not emit %d events (saw %d)" % (n, pl["events_seen"]))
if pl["confirm_done"] is None: errs.append("confirmed_flush_lsn did not reach the writer's last commit")
if len(done) < w: errs.append("%d of %d watchers did not get the last change (%d cut off with ERROR, %d ended otherwise)"
                              % (w - len(done), w, sum(pl["watcher_cut"]), sum(1 for i, d in enumerate(pl["watcher_dead"]) if d is not None and not pl["watcher_cut"][i])))
if w:
    bad = [i + 1 for i, l in enumerate(ck["lines"]) if l != n]
    if bad: errs.append("watchers %s have %s lines, want %d" % (bad[:5], [ck["lines"][i - 1] for i in bad[:5]], n))
    if any(ck["errors"]): errs.append("%d ERROR events" % sum(ck["errors"]))
    if any(ck["not_modified"]): errs.append("%d lines not MODIFIED" % sum(ck["not_modified"]))
    if not ck["seq_ok"]: errs.append("watcher 1's status.seq not in write order: %s" % ck["seq_first_bad"])
    if not ck["identical"]: errs.append("files differ (%d distinct md5)" % len(set(ck["md5"])))
tmax = max(done) if done else None; tmed = statistics.median(done) if done else None
def f(x, fmt="%.2f"): return fmt % x if x is not None else "-"
out = dict(mode=mode, watchers=w, changes=n, write_s=write_s, stream_s=pl["stream_done"], confirm_s=pl["confirm_done"],
           stream_eps=(n / pl["stream_done"]) if pl["stream_done"] else None,
           watch_median_s=tmed, watch_max_s=tmax,
           per_watcher_eps_median=(n / tmed) if tmed else None, per_watcher_eps_min=(n / tmax) if tmax else None,
           total_eps=(len(done) * n / tmax) if tmax else None,
           rss_before_kib=rss_b, rss_connected_kib=rss_c, rss_after_kib=rss_a, rss_max_kib=pl["rss_max_kib"],
           rss_disconnected_kib=rss_d, hwm_kib=hwm,
           kib_per_watcher_connected=((rss_c - rss_b) / w) if w else None,
           kib_per_watcher_delivering=((pl["rss_max_kib"] - rss_b) / w) if w else None,
           threads_before=thr_b, threads_connected=thr, threads_after_disconnect=thr_d, crwatch_cpu_s=cpu1 - cpu0,
           lines=ck["lines"][:3] + (["..."] if len(ck["lines"]) > 3 else []), distinct_md5=len(set(ck["md5"])),
           cut_off=sum(pl["watcher_cut"]), polls=pl["polls"], poll_cycle_max_s=pl["poll_cycle_max_s"],
           metrics_request_max_s=pl["metrics_request_max_s"], events_at=pl["events_at"],
           verdict="ok" if not errs else "FAIL: " + "; ".join(errs))
print(json.dumps(out))
PY
)"
    ROWS+=("$row")
    echo "$row" >>"$RAW"
    grep -q '"verdict": "ok"' <<<"$row" || FAILED=1
    log "$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); f=lambda x, s="%.2f": s % x if x is not None else "-"
print("phase %s %-5s W=%-3d write %ss  stream %ss (%s ev/s) confirm %ss  watchers median %ss max %ss  RSS %d->%d->%d MiB  crwatch CPU %.2fs  %s" % (
  sys.argv[2], r["mode"], r["watchers"], f(r["write_s"]), f(r["stream_s"]), f(r["stream_eps"], "%.0f"), f(r["confirm_s"]),
  f(r["watch_median_s"]), f(r["watch_max_s"]), r["rss_before_kib"] // 1024, r["rss_connected_kib"] // 1024, r["rss_max_kib"] // 1024,
  r["crwatch_cpu_s"], r["verdict"]))' "$row" "$p")"
  done
done

# ---------------------------------------------------------------- linger
# A watcher that goes while nothing changes: crwatch notices only when it next
# writes to the connection (a change, or a bookmark/keepalive when asked for).
LINGER_LINE=""
if ((LINGER > 0)); then
  for ((i = 0; i < 100; i++)); do (($(proc_status Threads) <= THREADS_START)) && break; sleep 0.05; done
  lthr0="$(proc_status Threads)"
  rv="$(list_rv)"
  CURL_PIDS=()
  for ((i = 1; i <= 10; i++)); do
    curl -sN "$BASE?watch=1&resourceVersion=$rv" >/dev/null 2>&1 &
    CURL_PIDS+=($!)
  done
  for ((i = 0; i < 200; i++)); do (($(proc_status Threads) >= lthr0 + 10)) && break; sleep 0.05; done
  lthr1="$(proc_status Threads)"
  for pid in "${CURL_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${CURL_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  CURL_PIDS=()
  samples=()
  for ((i = 1; i <= LINGER; i++)); do sleep 1; samples+=("$(proc_status Threads)"); done
  qb "UPDATE public.jobs SET status = status || '{\"linger\": 1}' WHERE namespace = 'team-1' AND name = 'job-000001'" >/dev/null
  sleep 1.5
  lthr2="$(proc_status Threads)"
  qb "UPDATE public.jobs SET status = status || '{\"linger\": 2}' WHERE namespace = 'team-1' AND name = 'job-000001'" >/dev/null
  sleep 1.5
  lthr3="$(proc_status Threads)"
  LINGER_LINE="linger: threads $lthr0 before, $lthr1 with 10 watchers; after they went, each second for ${LINGER} s without changes: ${samples[*]}; 1.5 s after one change: $lthr2; after a second: $lthr3"
  log "$LINGER_LINE"
fi

# ---------------------------------------------------------------- stop, report
kill -TERM "$CRW_PID" 2>/dev/null || true
crw_rc=0
wait "$CRW_PID" || crw_rc=$?
CRW_PID=""
((crw_rc == 0)) || { log "crwatch exited $crw_rc on SIGTERM"; tail -n 20 "$WORK/crwatch.err" >&2; FAILED=1; }
WARNS="$(grep -c -E 'crwatch (WARN|ERROR):' "$WORK/crwatch.err" || true)"

mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/watch-$STAMP.txt"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
GIT_DIRTY="$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo dirty || echo clean)"
{
  echo
  echo "crwatch watch API fan-out benchmark — $STAMP — $CRW_VERSION (git $GIT_REV, $GIT_DIRTY, binary sha256 $CRW_SHA), PostgreSQL $PG_VERSION, $(nproc) cores"
  echo "per phase: $N single-row status UPDATEs of $OBJECTS jobs (round robin), $BATCH per transaction; watchers: curl -sN ?watch=1&resourceVersion=<the list's> into a file each"
  echo "crwatch: shape=crd, watch.history.events=${HISTORY_EFF:-?}, sink=stdout -> /dev/null; VmRSS at start $((RSS_START / 1024)) MiB, $THREADS_START threads; $WARNS warn/error log lines"
  if ((FAILED)); then echo "*** A PHASE FAILED: see the verdicts and the log above ***"; fi
  [[ -z "$LINGER_LINE" ]] || echo "$LINGER_LINE"
  echo
  printf '%-5s %4s %7s %8s %9s %8s %9s %9s %10s %10s %11s %8s %8s %8s %9s %9s %6s %6s  %s\n' mode W "write s" "stream s" "stream/s" "confirm" "watch med" "watch max" "ev/s/watch" "ev/s total" "RSS 0/conn" "max MiB" "KiB/w" "KiB/w*" "CPU s" "threads" "md5s" "cycle" verdict
  for row in "${ROWS[@]}"; do
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); f=lambda x, s="%.2f": s % x if x is not None else "-"
print("%-5s %4d %7s %8s %9s %8s %9s %9s %10s %10s %11s %8.1f %8s %8s %9.2f %9s %6s %6.2f  %s" % (
  r["mode"], r["watchers"], f(r["write_s"]), f(r["stream_s"]), f(r["stream_eps"], "%.0f"), f(r["confirm_s"]),
  f(r["watch_median_s"]), f(r["watch_max_s"]), f(r["per_watcher_eps_min"], "%.0f"), f(r["total_eps"], "%.0f"),
  "%.1f/%.1f" % (r["rss_before_kib"] / 1024, r["rss_connected_kib"] / 1024), r["rss_max_kib"] / 1024,
  f(r["kib_per_watcher_connected"], "%.0f"), f(r["kib_per_watcher_delivering"], "%.0f"), r["crwatch_cpu_s"],
  "%d->%d" % (r["threads_before"], r["threads_connected"]), r["distinct_md5"] if r["watchers"] else "-", r["poll_cycle_max_s"], r["verdict"]))' "$row"
  done
  echo
  echo "(times in seconds after t0: live = the writer's start, burst = SIGCONT of crwatch after the writer wrote everything;"
  echo " stream = crwatch_events_total grew by $N (events written to stdout); confirm = the slot's confirmed_flush_lsn reached the writer's last commit;"
  echo " watch med/max = the median and the last watcher's file ending with the last change; ev/s/watch = $N / watch max; ev/s total = W x $N / watch max;"
  echo " RSS 0/conn = crwatch VmRSS before the watchers / with them connected, idle; max = the highest VmRSS seen while delivering;"
  echo " KiB/w = (conn - 0) / W; KiB/w* = (max - 0) / W; CPU = crwatch user+sys during the phase; md5s = distinct checksums of the watchers' files (1: identical);"
  echo " every time is taken when its observation completed, so it is late by up to one poll interval (${POLL_MS} ms) plus one poll cycle: cycle = the longest cycle)"
} | tee "$WORK/table.txt"

{
  echo "# crwatch bench/watch.sh results; key=value, then one JSON line per phase"
  echo "stamp=$STAMP"
  echo "crwatch_version=$CRW_VERSION"
  echo "crwatch_binary=$CRW"
  echo "crwatch_sha256_16=$CRW_SHA"
  echo "git_rev=$GIT_REV"
  echo "git_tree=$GIT_DIRTY"
  echo "pg_version=$PG_VERSION"
  echo "cores=$(nproc)"
  echo "changes=$N"
  echo "objects=$OBJECTS"
  echo "batch=$BATCH"
  echo "spec_pad=$SPEC_PAD"
  echo "watchers=$WATCHERS"
  echo "modes=$MODES"
  echo "watch_history_events=${HISTORY_EFF:-?}"
  echo "poll_ms=$POLL_MS"
  echo "rss_start_kib=$RSS_START"
  echo "crwatch_warn_error_lines=$WARNS"
  echo "failed=$FAILED"
  [[ -z "$LINGER_LINE" ]] || echo "linger=$LINGER_LINE"
  for row in "${ROWS[@]}"; do echo "phase $row"; done
  echo "# crwatch log (warn and error lines)"
  grep -E 'crwatch (WARN|ERROR):' "$WORK/crwatch.err" | head -n 50 | sed 's/^/#   /' || true
} >"$OUT"
log "results written to $OUT"
exit "$FAILED"
