#!/usr/bin/env bash
# bench/idle_wal.sh — how much WAL an idle crwatch slot retains while the
# server is busy with tables crwatch does not watch, with the heartbeat
# (heartbeat.interval.ms, 10 s by default) and, for comparison, without it.
# See bench/README.md for how to read the output.
#
#   bench/idle_wal.sh                        # 5 minutes of load + 30 s, about 6 minutes
#   BENCH_COMPARE=1 bench/idle_wal.sh        # and again with heartbeat.interval.ms=0 (about 12 minutes)
#   BENCH_SECONDS=60 bench/idle_wal.sh       # a short load
#   CRWATCH=/path/to/crwatch bench/idle_wal.sh   # no build
#
# What it does, in one run:
#   1. starts a throwaway PostgreSQL (scripts/pg) in a temp dir, removed on exit;
#      applies sql/crwatch.sql (crwatch.offsets: crwatch stores its position, as
#      in a real deployment; BENCH_OFFSETS=0 leaves it out);
#   2. builds crwatch (Release) unless CRWATCH is given;
#   3. creates public.watched (stays empty: nothing is ever written to it) and
#      public.busy (not in the publication);
#   4. for each pass (heartbeat: the defaults; nohb: -X heartbeat.interval.ms=0,
#      with BENCH_COMPARE=1): starts crwatch (tables=public.watched, sink=stdout
#      into a file, default status.interval.ms, http.listen on a free port) on a
#      slot of its own, which it creates; waits BENCH_SETTLE seconds; then pgbench
#      inserts BENCH_ROW_BYTES-byte rows into public.busy, one per transaction, at
#      BENCH_RATE/s (0: as fast as it can) for BENCH_SECONDS; every BENCH_SAMPLE
#      seconds, during the load and BENCH_AFTER seconds after it, it samples
#        retained   pg_current_wal_lsn() - restart_lsn of the slot
#        confirmed  pg_current_wal_lsn() - confirmed_flush_lsn
#        written    pg_current_wal_lsn() - the LSN when the load started
#      and crwatch's /metrics (crwatch_slot_retained_wal_bytes,
#      crwatch_heartbeats_total, crwatch_source_lag_seconds); then it stops
#      crwatch and drops its slot;
#   5. prints per pass: WAL written by the load, retained WAL max / at the last
#      load sample / at the last sample after the load, and writes
#      bench/results/idle_wal-<stamp>.txt (with every sample).
#
# Environment (defaults in brackets):
#   BENCH_SECONDS [300]       seconds of load
#   BENCH_AFTER [30]          seconds of sampling after the load stops
#   BENCH_SAMPLE [5]          seconds between samples
#   BENCH_SETTLE [5]          seconds between crwatch streaming and the load
#   BENCH_RATE [1000]         pgbench transactions per second (0: unthrottled)
#   BENCH_ROW_BYTES [1000]    bytes of text per inserted row
#   BENCH_COMPARE [0]         1: a second pass with -X heartbeat.interval.ms=0
#   BENCH_OFFSETS [1]         0: do not apply sql/crwatch.sql (no stored position)
#   BENCH_CRWATCH_OPTS        more -X settings for crwatch (every pass), space separated key=value
#   BENCH_PG_OPTS             more server settings, space separated name=value
#   BENCH_RESULTS [bench/results] where the result file goes
#   BENCH_BUILD_DIR [${TMPDIR:-/tmp}/crwatch-bench-build]   Release build dir (kept)
#   BENCH_KEEP [0]            1: keep the temp dir (cluster stopped, logs kept)
#   CRWATCH                   a crwatch binary to use instead of building one
#
# Needs the PostgreSQL 15 server binaries and pgbench (scripts/deps), curl, cmake.
# Exit status: 0 every pass ran (crwatch streamed throughout and wrote no event);
# 1 otherwise.  It judges no WAL figure.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init idle_wal

LOAD_SECONDS="${BENCH_SECONDS:-300}"
AFTER="${BENCH_AFTER:-30}"
SAMPLE="${BENCH_SAMPLE:-5}"
SETTLE="${BENCH_SETTLE:-5}"
RATE="${BENCH_RATE:-1000}"
ROW_BYTES="${BENCH_ROW_BYTES:-1000}"
COMPARE="${BENCH_COMPARE:-0}"
OFFSETS="${BENCH_OFFSETS:-1}"
DB=bench
PUB=idle_pub

bench_need "$PG_BIN/psql" "$PG_BIN/pgbench" curl
bench_workdir crwatch-bench-idle

CRW_PID=""
LOAD_PID=""
# shellcheck disable=SC2317  # invoked by bench_cleanup
bench_on_exit() {
  if [[ -n "$LOAD_PID" ]]; then kill -TERM "$LOAD_PID" 2>/dev/null || true; fi
  if [[ -n "$CRW_PID" ]]; then kill -9 "$CRW_PID" 2>/dev/null || true; fi
  wait 2>/dev/null || true
}

bench_build crwatch

bench_start_pg
export PGDATABASE=$DB
q "CREATE DATABASE $DB"
if [[ "$OFFSETS" == 1 ]]; then psqlx -d "$DB" -f "$ROOT/sql/crwatch.sql" >/dev/null 2>&1; fi
qb "CREATE TABLE public.watched (id bigint PRIMARY KEY, v text);
    CREATE TABLE public.busy (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload text NOT NULL)"
PG_VERSION="$(qb "SHOW server_version")"
CHECKPOINT_TIMEOUT="$(qb "SHOW checkpoint_timeout")"
MAX_WAL_SIZE="$(qb "SHOW max_wal_size")"
printf "INSERT INTO public.busy (payload) VALUES (repeat('x', %d));\n" "$ROW_BYTES" >"$WORK/busy.sql"
read -r -a EXTRA_OPTS <<<"${BENCH_CRWATCH_OPTS:-}"

mib() { awk -v b="$1" 'BEGIN { if (b == "" || b == "-") print "-"; else printf "%.1f", b / 1048576 }'; }
metric() { awk -v m="$1" '$1 == m {print $2; exit}' "$2" 2>/dev/null || true; }

PASSES=(heartbeat)
[[ "$COMPARE" == 1 ]] && PASSES+=(nohb)
FAILED=0
declare -A R
SAMPLES="$WORK/samples.tsv"
: >"$SAMPLES"

run_pass() {
  local pass=$1 slot="idle_$1" opts=() x port="" lsn0 t0 now phase lsn_end=""
  for x in ${EXTRA_OPTS[@]+"${EXTRA_OPTS[@]}"}; do opts+=(-X "$x"); done
  [[ "$pass" == nohb ]] && opts+=(-X heartbeat.interval.ms=0)
  log "pass $pass: crwatch on slot $slot${opts[*]:+ (${opts[*]})}"
  (cd "$WORK" && exec "$CRW" stream -d "dbname=$DB" -X "slot.name=$slot" -X "publication.name=$PUB" \
    -X tables=public.watched -X sink=stdout -X http.listen=127.0.0.1:0 -X "deadletter.file=$WORK/dl.$pass.jsonl" \
    ${opts[@]+"${opts[@]}"} >"$WORK/out.$pass.jsonl" 2>"$WORK/err.$pass.log") &
  CRW_PID=$!
  local deadline=$((SECONDS + 30))
  until grep -q 'streaming from slot' "$WORK/err.$pass.log" 2>/dev/null; do
    if ! kill -0 "$CRW_PID" 2>/dev/null || ((SECONDS >= deadline)); then
      cat "$WORK/err.$pass.log" >&2
      die "crwatch does not stream"
    fi
    sleep 0.1
  done
  port="$(sed -n 's/.*\/readyz on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$WORK/err.$pass.log" | head -n 1)"
  sleep "$SETTLE"

  lsn0="$(qb "SELECT pg_current_wal_lsn()")"
  local rate=()
  ((RATE > 0)) && rate=(-R "$RATE")
  log "pass $pass: load for $LOAD_SECONDS s (pgbench ${rate[*]:-unthrottled}, $ROW_BYTES-byte rows into public.busy), samples every $SAMPLE s"
  rm -f "$WORK/lsn_end.$pass"
  ("$PG_BIN/pgbench" -n -d "$DB" -c 1 ${rate[@]+"${rate[@]}"} -T "$LOAD_SECONDS" -f "$WORK/busy.sql" \
    >"$WORK/pgbench.$pass.log" 2>&1 || echo "pgbench exited $?" >>"$WORK/pgbench.$pass.log"
   echo "$(date +%s.%N) $(qb "SELECT pg_current_wal_lsn()")" >"$WORK/lsn_end.$pass.tmp"
   mv "$WORK/lsn_end.$pass.tmp" "$WORK/lsn_end.$pass") &
  LOAD_PID=$!
  t0=$(date +%s.%N)
  local after_until="" t_end="" max=0 last_load="" last_after="" n=0 cmax=0
  while :; do
    now=$(date +%s.%N)
    if [[ -z "$lsn_end" && -s "$WORK/lsn_end.$pass" ]]; then
      read -r t_end lsn_end <"$WORK/lsn_end.$pass"
      after_until=$(echo "$t_end + $AFTER" | bc -l)
    fi
    phase=$([[ -z "$lsn_end" ]] && echo load || echo after)
    local row
    row="$(qb "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,
                      pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,
                      pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')::bigint, wal_status, active
                 FROM pg_replication_slots WHERE slot_name = '$slot'" | tr '|' ' ')"
    local retained confirmed written status active
    read -r retained confirmed written status active <<<"$row"
    [[ "$retained" =~ ^-?[0-9]+$ && "$confirmed" =~ ^-?[0-9]+$ ]] ||
      { log "pass $pass: no position for slot $slot ('$row')"; tail -n 20 "$WORK/err.$pass.log" >&2; FAILED=1; break; }
    curl -s -m 2 "http://127.0.0.1:$port/metrics" >"$WORK/metrics.txt" 2>/dev/null || : >"$WORK/metrics.txt"
    local m_ret m_hb m_lag
    m_ret="$(metric crwatch_slot_retained_wal_bytes "$WORK/metrics.txt")"
    m_hb="$(metric crwatch_heartbeats_total "$WORK/metrics.txt")"
    m_lag="$(metric crwatch_source_lag_seconds "$WORK/metrics.txt")"
    printf '%s\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$pass" "$(echo "$now - $t0" | bc -l)" "$phase" \
      "$retained" "$confirmed" "$written" "$status" "$active" "${m_ret:--}" "${m_hb:--}" "${m_lag:--}" >>"$SAMPLES"
    ((retained > max)) && max=$retained
    ((confirmed > cmax)) && cmax=$confirmed
    if [[ "$phase" == load ]]; then last_load=$retained; else last_after=$retained; fi
    n=$((n + 1))
    if ((n % 6 == 0)) || [[ "$phase" == after ]]; then
      log "$(printf 'pass %s %5.0f s %-5s retained %7s MiB  confirmed behind %7s MiB  written %7s MiB  heartbeats %s' "$pass" \
        "$(echo "$now - $t0" | bc -l)" "$phase" "$(mib "$retained")" "$(mib "$confirmed")" "$(mib "$written")" "${m_hb:--}")"
    fi
    [[ "$active" == t ]] || { log "pass $pass: the slot is not active: crwatch stopped streaming"; FAILED=1; }
    kill -0 "$CRW_PID" 2>/dev/null || { log "pass $pass: crwatch exited"; tail -n 20 "$WORK/err.$pass.log" >&2; FAILED=1; break; }
    if [[ -n "$after_until" ]] && (($(echo "$now + 0.5 >= $after_until" | bc -l))); then break; fi
    # the next sample SAMPLE s after this one started, and one at AFTER s after the load
    local next
    next=$(echo "$now + $SAMPLE" | bc -l)
    [[ -n "$after_until" ]] && (($(echo "$next > $after_until" | bc -l))) && next=$after_until
    sleep "$(echo "s = $next - $(date +%s.%N); if (s < 0) 0 else s" | bc -l)"
  done
  wait "$LOAD_PID" 2>/dev/null || true
  LOAD_PID=""
  [[ -n "$lsn_end" ]] || lsn_end="$(qb "SELECT pg_current_wal_lsn()")"
  # Whatever crwatch itself wrote in the pass: heartbeats and stored positions.
  kill -TERM "$CRW_PID" 2>/dev/null || true
  wait "$CRW_PID" 2>/dev/null || true
  CRW_PID=""
  qb "SELECT pg_drop_replication_slot('$slot')" >/dev/null
  R[$pass.written]="$(qb "SELECT pg_wal_lsn_diff('$lsn_end', '$lsn0')::bigint")"
  R[$pass.max]=$max
  R[$pass.last_load]=${last_load:--}
  R[$pass.last_after]=${last_after:--}
  R[$pass.confirmed_max]=$cmax
  R[$pass.tps]="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/pgbench.$pass.log" | head -n 1)"
  R[$pass.events]=$(wc -l <"$WORK/out.$pass.jsonl")
  R[$pass.heartbeats]="$(awk -F'\t' -v p="$pass" '$1 == p && $10 != "-" {h = $10} END {print h + 0}' "$SAMPLES")"
  R[$pass.lag_max]="$(awk -F'\t' -v p="$pass" '$1 == p && $11 != "-" && $11 > m {m = $11} END {printf "%g", m + 0}' "$SAMPLES")"
  R[$pass.warnings]="$(grep -cE ' (WARN|ERROR):' "$WORK/err.$pass.log" || true)"
  if [[ "${R[$pass.events]}" != 0 ]]; then log "pass $pass: crwatch wrote ${R[$pass.events]} events for an idle table"; FAILED=1; fi
  if grep -qE ' (WARN|ERROR):' "$WORK/err.$pass.log"; then
    log "pass $pass: crwatch logged:"
    grep -E ' (WARN|ERROR):' "$WORK/err.$pass.log" | head -n 10 >&2
  fi
  log "pass $pass: load wrote $(mib "${R[$pass.written]}") MiB of WAL at ${R[$pass.tps]:-?} tps; retained max $(mib "$max") MiB, last under load $(mib "${R[$pass.last_load]}") MiB, $AFTER s after $(mib "${R[$pass.last_after]}") MiB"
}

for p in "${PASSES[@]}"; do run_pass "$p"; done

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/idle_wal-$STAMP.txt"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
GIT_DIRTY="$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo dirty || echo clean)"
label() { if [[ "$1" == nohb ]]; then echo "heartbeat off (heartbeat.interval.ms=0)"; else echo "heartbeat on (default 10 s)"; fi; }
{
  echo
  echo "crwatch idle-slot WAL benchmark — $STAMP — $CRW_VERSION (git $GIT_REV, $GIT_DIRTY, binary sha256 $CRW_SHA), PostgreSQL $PG_VERSION, $(nproc) cores"
  echo "load: ${LOAD_SECONDS} s of pgbench $( ((RATE > 0)) && echo "-R $RATE" || echo unthrottled), one $ROW_BYTES-byte row per transaction into an unwatched table; crwatch watches an idle table"
  echo "samples every $SAMPLE s, then $AFTER s after the load; status.interval.ms default; checkpoint_timeout $CHECKPOINT_TIMEOUT, max_wal_size $MAX_WAL_SIZE; stored position: $( [[ "$OFFSETS" == 1 ]] && echo crwatch.offsets || echo none)"
  ((FAILED)) && echo "*** A PASS FAILED (see the log above) ***"
  echo
  printf '%-40s %10s %8s %12s %14s %14s %14s %11s %9s\n' pass "WAL MiB" tps "retained max" "last in load" "${AFTER}s after" "conf. behind" heartbeats "lag max s"
  for p in "${PASSES[@]}"; do
    printf '%-40s %10s %8.0f %12s %14s %14s %14s %11s %9s\n' "$(label "$p")" "$(mib "${R[$p.written]}")" "${R[$p.tps]:-0}" \
      "$(mib "${R[$p.max]}")" "$(mib "${R[$p.last_load]}")" "$(mib "${R[$p.last_after]}")" "$(mib "${R[$p.confirmed_max]}")" \
      "${R[$p.heartbeats]}" "${R[$p.lag_max]}"
  done
  echo "(retained = pg_current_wal_lsn() - restart_lsn, in MiB; conf. behind = max of pg_current_wal_lsn() - confirmed_flush_lsn)"
} | tee "$WORK/table.txt"
{
  echo "# crwatch bench/idle_wal.sh results; key=value, then raw samples"
  echo "stamp=$STAMP"
  echo "crwatch_version=$CRW_VERSION"
  echo "crwatch_binary=$CRW"
  echo "crwatch_sha256_16=$CRW_SHA"
  echo "git_rev=$GIT_REV"
  echo "git_tree=$GIT_DIRTY"
  echo "pg_version=$PG_VERSION"
  echo "cores=$(nproc)"
  echo "load_seconds=$LOAD_SECONDS"
  echo "after_seconds=$AFTER"
  echo "sample_seconds=$SAMPLE"
  echo "rate=$RATE"
  echo "row_bytes=$ROW_BYTES"
  echo "stored_position=$OFFSETS"
  echo "checkpoint_timeout=$CHECKPOINT_TIMEOUT"
  echo "max_wal_size=$MAX_WAL_SIZE"
  echo "crwatch_opts=${BENCH_CRWATCH_OPTS:-}"
  for p in "${PASSES[@]}"; do
    echo "${p}_wal_written_bytes=${R[$p.written]}"
    echo "${p}_tps=${R[$p.tps]}"
    echo "${p}_retained_max_bytes=${R[$p.max]}"
    echo "${p}_retained_last_load_bytes=${R[$p.last_load]}"
    echo "${p}_retained_after_bytes=${R[$p.last_after]}"
    echo "${p}_confirmed_behind_max_bytes=${R[$p.confirmed_max]}"
    echo "${p}_heartbeats=${R[$p.heartbeats]}"
    echo "${p}_source_lag_max_seconds=${R[$p.lag_max]}"
    echo "${p}_events=${R[$p.events]}"
    echo "${p}_warnings=${R[$p.warnings]}"
  done
  echo "failed=$FAILED"
  echo "# raw: pass seconds_since_load_start phase retained_bytes confirmed_behind_bytes written_bytes wal_status active metric_retained_bytes metric_heartbeats_total metric_source_lag_seconds"
  sed 's/^/raw\t/' "$SAMPLES"
} >"$OUT"
log "results written to $OUT"
exit "$FAILED"
