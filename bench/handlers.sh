#!/usr/bin/env bash
# bench/handlers.sh — local handler throughput and added latency.
#
#   bench/handlers.sh                         # defaults below, ~2 minutes
#   BENCH_ROWS=20000 BENCH_LAT_SECONDS=5 bench/handlers.sh
#
# What it measures, on a throwaway PostgreSQL (scripts/pg) and a Release build:
#   1. throughput: one source slot is created, then BENCH_ROWS rows are inserted
#      (BENCH_TXN_ROWS per transaction) into bench_t, and BENCH_PE_ROWS into pe_t.
#      Each contender reads a fresh copy of that slot, so all read the same WAL; a
#      run ends when the slot is confirmed past the last change (every event handled):
#        stdout        sink=stdout > /dev/null (the baseline: no handler)
#        exec-stream   sink=exec, exec.mode=stream, a C handler answering "ok" per line
#        plugin        sink=plugin, examples/example_plugin.so (counts, answers OK)
#        exec-per-event  sink=exec, exec.mode=per-event, `cat >/dev/null` (pe_t only:
#                      a process per event is slow by design)
#      events/s = events / (start of crwatch -> confirmed past the last change), median
#      of BENCH_REPEATS; it includes connecting and up to ~100 ms of status interval.
#   2. added latency: pgbench inserts single-row transactions at BENCH_LAT_RATE/s for
#      BENCH_LAT_SECONDS while crwatch streams live.  The receiving end records
#      (receive time - commit time in the event) per event: for stdout a reader
#      of crwatch's stdout, for exec the stream handler, for the plugin a tiny
#      latency plugin.  "added" = handler percentile - stdout percentile.
#
# Environment (defaults in brackets): BENCH_ROWS [100000], BENCH_TXN_ROWS [1000],
# BENCH_PE_ROWS [2000], BENCH_REPEATS [3], BENCH_LAT_RATE [500], BENCH_LAT_SECONDS [10],
# BENCH_WORKERS [1], BENCH_BUILD_DIR [${TMPDIR:-/tmp}/crwatch-bench-handlers-build],
# BENCH_RESULTS [bench/results], BENCH_KEEP [0] (1: keep the temp dir).
# Exit status: 0 ran and every contender handled every event; 1 otherwise.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init bench
BUILD_DIR="${BENCH_BUILD_DIR:-${TMPDIR:-/tmp}/crwatch-bench-handlers-build}"
ROWS="${BENCH_ROWS:-100000}"
TXN_ROWS="${BENCH_TXN_ROWS:-1000}"
PE_ROWS="${BENCH_PE_ROWS:-2000}"
REPEATS="${BENCH_REPEATS:-3}"
LAT_RATE="${BENCH_LAT_RATE:-500}"
LAT_SECONDS="${BENCH_LAT_SECONDS:-10}"
WORKERS="${BENCH_WORKERS:-1}"
DB=bench

bench_workdir crwatch-bench-h

# ---------------------------------------------------------------- build
bench_build crwatch crwatch_example_plugin
PLUGIN="$BUILD_DIR/example_plugin.so"

# Bench-only helpers: a latency recorder (exec handler or stdout reader) and a latency plugin.
cat >"$WORK/lat.h" <<'EOF'
#include <stdint.h>
#include <string.h>
#include <time.h>
/* The event's commit time ("time":"YYYY-MM-DDTHH:MM:SS.ffffffZ") in Unix microseconds; 0 if absent. */
static int64_t event_time_us(const char *line) {
    const char *p = strstr(line, "\"time\":\"");
    struct tm tm;
    int us = 0;
    if (!p)
        return 0;
    memset(&tm, 0, sizeof tm);
    if (sscanf(p + 8, "%4d-%2d-%2dT%2d:%2d:%2d.%6d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec, &us) != 7)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000000 + us;
}
static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
EOF
cat >"$WORK/lat.c" <<'EOF'
/* lat reply|read OUT: one latency (us) per input line to OUT; "reply": answer "ok" per line. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "lat.h"
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int reply = argv[1][0] == 'r' && argv[1][2] == 'p';
    FILE *out = fopen(argv[2], "w");
    if (!out) return 1;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, stdin) > 0) {
        int64_t t = event_time_us(line), now = now_us();
        if (reply && write(1, "ok\n", 3) != 3) return 1;
        fprintf(out, "%lld\n", t ? (long long)(now - t) : -1LL);
    }
    fclose(out);
    return 0;
}
EOF
cat >"$WORK/latplug.c" <<'EOF'
/* A handler plugin recording (receive - commit) per event; plugin.config = output file. */
#define _GNU_SOURCE
#include <crwatch/handler.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include "lat.h"
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static FILE *out;
static int init(const crw_handler_init_t *in, void **state, char *err, size_t n) {
    (void)state;
    out = fopen(in->config, "w");
    if (!out) { snprintf(err, n, "cannot open %s", in->config); return -1; }
    return 0;
}
static int on_event(void *state, const crw_handler_event_t *ev, char *reason, size_t n) {
    (void)state; (void)reason; (void)n;
    int64_t t = event_time_us(ev->event), now = now_us();
    pthread_mutex_lock(&mu);
    fprintf(out, "%lld\n", t ? (long long)(now - t) : -1LL);
    pthread_mutex_unlock(&mu);
    return CRW_HANDLER_OK;
}
static void fini(void *state) { (void)state; fclose(out); }
CRW_HANDLER_EXPORT const crw_handler_t crw_handler = {.abi_version = CRW_HANDLER_ABI_VERSION, .name = "latency",
                                                      .init = init, .on_event = on_event, .fini = fini};
EOF
cc -O2 -o "$WORK/lat" "$WORK/lat.c" || die "cannot build the latency helper"
cc -O2 -shared -fPIC -I "$ROOT/include" -o "$WORK/latplug.so" "$WORK/latplug.c" -lpthread ||
  die "cannot build the latency plugin"

# ---------------------------------------------------------------- server + workload
bench_start_pg
export PGDATABASE=$DB
q "CREATE DATABASE $DB"
qb "CREATE TABLE bench_t (id bigint PRIMARY KEY, name text, qty int, payload jsonb);
    CREATE TABLE pe_t (id bigint PRIMARY KEY, name text);
    CREATE TABLE lat_t (id bigserial PRIMARY KEY, name text, at timestamptz DEFAULT now());
    CREATE PUBLICATION bench_pub FOR TABLE bench_t;
    CREATE PUBLICATION pe_pub FOR TABLE pe_t;
    CREATE PUBLICATION lat_pub FOR TABLE lat_t;"
qb "SELECT pg_create_logical_replication_slot('bench_src', 'pgoutput')" >/dev/null
log "workload: $ROWS rows into bench_t ($TXN_ROWS per transaction), $PE_ROWS into pe_t"
{
  for ((lo = 1; lo <= ROWS; lo += TXN_ROWS)); do
    hi=$((lo + TXN_ROWS - 1)); ((hi > ROWS)) && hi=$ROWS
    echo "INSERT INTO bench_t SELECT i, 'item-' || i, i % 1000,
      jsonb_build_object('sku', 'SKU-' || i, 'tags', jsonb_build_array('a', 'b'), 'seq', i)
      FROM generate_series($lo, $hi) i;"
  done
  echo "INSERT INTO pe_t SELECT i, 'pe-' || i FROM generate_series(1, $PE_ROWS) i;"
} >"$WORK/workload.sql"
"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$DB" -f "$WORK/workload.sql" >/dev/null
ENDPOS="$(qb "SELECT pg_current_wal_lsn()")"

# ---------------------------------------------------------------- throughput
declare -A SECS EVENTS
FAILED=0
RAW="$WORK/raw.tsv"
: >"$RAW"

# The last change's commit LSN of each publication: a validation pass with --endpos
# through the stdout sink (synchronous, so it exits at endpos at once).
last_pglsn() { # PUBLICATION TABLE WANT
  local slot="val_$1" n
  qb "SELECT pg_copy_logical_replication_slot('bench_src', '$slot')" >/dev/null
  timeout 600 "$CRW" stream -d "dbname=$DB" --endpos "$ENDPOS" -X "slot.name=$slot" -X "publication.name=$1" \
    -X slot.create=false -X publication.create=false -X "tables=public.$2" -X log.level=warn \
    >"$WORK/val.out" 2>"$WORK/val.err" || { cat "$WORK/val.err" >&2; die "validation pass ($1) failed"; }
  qb "SELECT pg_drop_replication_slot('$slot')" >/dev/null
  n=$(wc -l <"$WORK/val.out")
  ((n == $3)) || die "validation pass ($1): $n events, want $3"
  tail -n 1 "$WORK/val.out" | grep -o '"pglsn":"[^"]*"' | cut -d'"' -f4
}
TARGET_BENCH="$(last_pglsn bench_pub bench_t "$ROWS")"
TARGET_PE="$(last_pglsn pe_pub pe_t "$PE_ROWS")"
log "validation passes ok; last commits at $TARGET_BENCH (bench_t), $TARGET_PE (pe_t)"

# One timed run: crwatch starts on a fresh copy of the source slot; the time is taken
# when the slot's confirmed position passes the last change (every event handled and
# acknowledged; status.interval.ms=100, so up to ~100 ms of it is reporting delay).
# (Not crwatch's exit at --endpos: the figure should not include shutting down, nor a
# wait for a server keepalive when endpos lies past the last commit.)
run_tp() { # CONTENDER ITERATION
  local c="$1" i="$2" slot="tp_${1//-/_}_$2" pub=bench_pub table=bench_t want=$ROWS target=$TARGET_BENCH
  local rc=0 t0 t1 got pid done=0
  [[ "$c" == exec-per-event ]] && { pub=pe_pub; table=pe_t; want=$PE_ROWS; target=$TARGET_PE; }
  qb "SELECT pg_copy_logical_replication_slot('bench_src', '$slot')" >/dev/null
  local cmd=("$CRW" stream -d "dbname=$DB" -X "slot.name=$slot" -X "publication.name=$pub"
             -X slot.create=false -X publication.create=false -X "tables=public.$table" -X log.level=info
             -X status.interval.ms=100 -X "workers=$WORKERS")
  case "$c" in
    stdout) ;;
    exec-stream) cmd+=(-X sink=exec -X "exec.command=exec $WORK/lat reply /dev/null") ;;
    exec-per-event) cmd+=(-X sink=exec -X exec.mode=per-event -X "exec.command=cat >/dev/null") ;;
    plugin) cmd+=(-X sink=plugin -X "plugin.path=$PLUGIN") ;;
  esac
  t0=$(date +%s.%N)
  "${cmd[@]}" >"$WORK/tp.out" 2>"$WORK/tp.err" &
  pid=$!
  local deadline=$((SECONDS + 900))
  while ((SECONDS < deadline)) && kill -0 "$pid" 2>/dev/null; do
    if [[ "$(qb "SELECT confirmed_flush_lsn > '$target'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$slot'")" == t ]]; then
      done=1
      break
    fi
    sleep 0.02
  done
  t1=$(date +%s.%N)
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || rc=$?
  qb "SELECT pg_drop_replication_slot('$slot')" >/dev/null
  if [[ "$c" == stdout ]]; then
    got=$(wc -l <"$WORK/tp.out")
  else
    got=$(sed -n 's/.*: \([0-9]*\) events handled, \([0-9]*\) dead-lettered.*/\1/p' "$WORK/tp.err" | tail -n 1)
  fi
  if ((rc != 0 || done != 1)) || [[ "${got:-0}" != "$want" ]]; then
    log "$c run $i FAILED: exit $rc, confirmed past the last change: $done, $got of $want events handled"
    tail -n 20 "$WORK/tp.err" >&2
    FAILED=1
  fi
  local secs; secs=$(echo "$t1 - $t0" | bc -l)
  printf '%s\t%s\t%.3f\t%s\n' "$c" "$i" "$secs" "$want" >>"$RAW"
  log "$(printf '%-15s run %d: %7.2f s  %8.0f events/s' "$c" "$i" "$secs" "$(echo "$want / $secs" | bc -l)")"
}

CONTENDERS=(stdout exec-stream plugin exec-per-event)
log "throughput: ${CONTENDERS[*]}, $REPEATS runs each, interleaved"
for ((i = 1; i <= REPEATS; i++)); do
  for c in "${CONTENDERS[@]}"; do run_tp "$c" "$i"; done
done
for c in "${CONTENDERS[@]}"; do
  SECS[$c]=$(awk -F'\t' -v c="$c" '$1 == c {print $3}' "$RAW" | median)
  EVENTS[$c]=$(awk -F'\t' -v c="$c" '$1 == c {print $4; exit}' "$RAW")
done

# ---------------------------------------------------------------- latency
declare -A P50 P99 NLAT
pct() { # FILE P -> microseconds
  grep -v '^-' "$1" | sort -n | awk -v p="$2" '{a[NR]=$1} END {if (NR == 0) {print 0; exit} i = int(NR * p / 100 + 0.999); if (i < 1) i = 1; print a[i]}'
}
run_lat() { # CONTENDER
  local c="$1" slot="lat_${1//-/_}" out="$WORK/$1.lat" pid rc=0
  local cmd=("$CRW" stream -d "dbname=$DB" -X "slot.name=$slot" -X publication.name=lat_pub -X tables=public.lat_t
             -X log.level=info -X status.interval.ms=1000 -X "workers=$WORKERS")
  case "$c" in
    stdout) ;;
    exec-stream) cmd+=(-X sink=exec -X "exec.command=exec $WORK/lat reply $out.w\$CRWATCH_WORKER") ;; # a file per child
    plugin) cmd+=(-X sink=plugin -X "plugin.path=$WORK/latplug.so" -X "plugin.config=$out") ;;
  esac
  local reader=""
  if [[ "$c" == stdout ]]; then
    rm -f "$WORK/lat.fifo"
    mkfifo "$WORK/lat.fifo"
    "$WORK/lat" read "$out" <"$WORK/lat.fifo" &
    reader=$!
    "${cmd[@]}" >"$WORK/lat.fifo" 2>"$WORK/lat.err" &
  else
    "${cmd[@]}" >/dev/null 2>"$WORK/lat.err" &
  fi
  pid=$!
  for _ in $(seq 1 100); do grep -q "streaming from slot" "$WORK/lat.err" 2>/dev/null && break; sleep 0.1; done
  grep -q "streaming from slot" "$WORK/lat.err" || { cat "$WORK/lat.err" >&2; die "crwatch ($c) did not start"; }
  echo "INSERT INTO lat_t (name) VALUES ('x');" >"$WORK/lat.sql"
  "$PG_BIN/pgbench" -n -d "$DB" -f "$WORK/lat.sql" -c 1 -R "$LAT_RATE" -T "$LAT_SECONDS" >"$WORK/pgbench.log" 2>&1 ||
    { cat "$WORK/pgbench.log" >&2; die "pgbench failed"; }
  sleep 1
  kill -TERM "$pid"
  wait "$pid" || rc=$?
  [[ -z "$reader" ]] || wait "$reader" || true
  if [[ "$c" == exec-stream ]]; then cat "$out".w* >"$out"; fi
  qb "SELECT pg_drop_replication_slot('$slot')" >/dev/null
  NLAT[$c]=$(grep -vc '^-' "$out" || true)
  P50[$c]=$(pct "$out" 50)
  P99[$c]=$(pct "$out" 99)
  log "$(printf 'latency %-12s %6d events  p50 %7d us  p99 %7d us' "$c" "${NLAT[$c]}" "${P50[$c]}" "${P99[$c]}")"
  ((rc == 0)) || { log "latency run $c: exit $rc"; FAILED=1; }
}
log "latency: single-row transactions at $LAT_RATE/s for $LAT_SECONDS s per contender"
for c in stdout exec-stream plugin; do run_lat "$c"; done

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/handlers-$STAMP.txt"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
{
  echo
  echo "crwatch local handler benchmark — $STAMP — git $GIT_REV, $(nproc) cores, workers=$WORKERS"
  echo "throughput: $ROWS rows ($TXN_ROWS per txn) through stdout/exec-stream/plugin; $PE_ROWS through exec-per-event; median of $REPEATS"
  printf '%-15s %9s %9s %12s\n' contender events seconds events/s
  for c in "${CONTENDERS[@]}"; do
    printf '%-15s %9d %9.2f %12.0f\n' "$c" "${EVENTS[$c]}" "${SECS[$c]}" "$(echo "${EVENTS[$c]} / ${SECS[$c]}" | bc -l)"
  done
  echo
  echo "latency: commit -> handler, single-row txns at $LAT_RATE/s for $LAT_SECONDS s (us)"
  printf '%-12s %8s %8s %8s %12s %12s\n' contender events p50 p99 "added p50" "added p99"
  for c in stdout exec-stream plugin; do
    printf '%-12s %8d %8d %8d %12d %12d\n' "$c" "${NLAT[$c]}" "${P50[$c]}" "${P99[$c]}" \
      $((P50[$c] - P50[stdout])) $((P99[$c] - P99[stdout]))
  done
  echo "(added = handler percentile - stdout percentile; stdout is crwatch's own sink read by a pipe reader)"
  echo "failed=$FAILED"
  echo "# raw throughput runs: contender iteration seconds events"
  sed 's/^/raw\t/' "$RAW"
} | tee "$OUT"
log "results written to $OUT"
exit "$FAILED"
