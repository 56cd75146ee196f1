#!/usr/bin/env bash
# bench/poll.sh — the polling source (docs/poll.md) against the logical source, in one run on the same data.
#
#   bench/poll.sh                         # defaults: 200k-change backlog, 3 repeats, 15 s latency runs
#   BENCH_REPEATS=5 bench/poll.sh         # steadier medians
#   CRWATCH=/path/to/crwatch bench/poll.sh
#
# What one run does (a throwaway PostgreSQL, sql/crwatch.sql, managed tables):
#   1. catch-up: public.jobs gets BENCH_PRELOAD rows; then, with a logical slot and a poll watermark
#      taken at that point, a backlog of BENCH_PRELOAD updates of those rows and BENCH_PRELOAD new
#      rows (1000-row transactions): 2 x BENCH_PRELOAD changes, one event each from either source.
#      crwatch reads the backlog with source=logical (a copy of the slot) and with source=poll (the
#      watermark put back), in turn, to stdout, until the last event; rows/s of each and their ratio.
#      A validation pass counts ADDED / MODIFIED and distinct ids of each.
#   2. latency: pgbench commits single-row updates at BENCH_LAT_RATE/s for BENCH_LAT_SECS s while
#      crwatch polls at poll.interval.ms 100 and then 1000; each event is stamped on arrival; latency
#      = arrival - the event's time (the writer's now()); p50 / p99 / max.
#   3. idle poll cost: crwatch polls an idle 10k-row and an idle 1M-row table every 10 ms for
#      BENCH_IDLE_SECS s; the median and p99 of one whole poll (its log line at log.level=debug).
#      It must not grow with the table.
#
# Needs the PostgreSQL 15 server binaries and pgbench (scripts/deps), perl, cmake.  Changes nothing
# outside its temp dir except bench/results/ (git-ignored).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init poll

PRELOAD="${BENCH_PRELOAD:-100000}"
REPEATS="${BENCH_REPEATS:-3}"
LAT_RATE="${BENCH_LAT_RATE:-1000}"
LAT_SECS="${BENCH_LAT_SECS:-15}"
IDLE_SECS="${BENCH_IDLE_SECS:-5}"
DB=bench_poll

bench_need perl bc "$PG_BIN/psql" "$PG_BIN/pgbench"
bench_workdir crwatch-bench-poll
bench_build crwatch
bench_start_pg
CONNINFO="dbname=$DB"

# ---------------------------------------------------------------- setup
q "CREATE DATABASE $DB"
psqlx -d "$DB" -f "$ROOT/sql/crwatch.sql" >/dev/null 2>&1
managed_table() { # NAME
  qb "CREATE TABLE public.$1 (
    namespace text NOT NULL DEFAULT 'default', name text NOT NULL, uid uuid NOT NULL, generation bigint NOT NULL,
    resource_version bigint NOT NULL, labels jsonb NOT NULL DEFAULT '{}', annotations jsonb NOT NULL DEFAULT '{}',
    spec jsonb NOT NULL, status jsonb NOT NULL DEFAULT '{}', created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL, deleted_at timestamptz, PRIMARY KEY (namespace, name));
  SELECT crwatch.manage('public.$1');" >/dev/null
}
# ROWS rows into TABLE in 10k-row transactions, named PREFIX<i>.
fill() { # TABLE ROWS PREFIX [FIRST]
  local first="${4:-1}" lo hi
  for ((lo = first; lo < first + $2; lo += 10000)); do
    hi=$((lo + 9999))
    ((hi >= first + $2)) && hi=$((first + $2 - 1))
    echo "INSERT INTO public.$1 (name, spec) SELECT '$3' || i, jsonb_build_object('preset', '720p', 'n', i,
      'source', 's3://media/in/' || md5(i::text) || '.mov') FROM generate_series($lo, $hi) i;"
  done | psqlx -d "$DB"
}
managed_table jobs
fill jobs "$PRELOAD" p
qb "SELECT crwatch.publish('bench_pub', 'public.jobs')" >/dev/null
qb "VACUUM ANALYZE public.jobs"
SRC_SLOT=bench_src
qb "SELECT pg_create_logical_replication_slot('$SRC_SLOT', 'pgoutput')" >/dev/null
qb "INSERT INTO crwatch.offsets (name, position, watermark, watermark_time)
    VALUES ('bench_poll', 1, pg_current_snapshot(), now())"
WM_SAVED="$(qb "SELECT watermark::text || '|' || watermark_time::text FROM crwatch.offsets WHERE name = 'bench_poll'")"

log "backlog: $PRELOAD updates and $PRELOAD inserts in 1000-row transactions"
{
  for ((lo = 1; lo <= PRELOAD; lo += 1000)); do
    echo "UPDATE public.jobs SET status = jsonb_build_object('phase', 'Running', 'progress', 50)
      WHERE namespace = 'default' AND name IN (SELECT 'p' || i FROM generate_series($lo, $((lo + 999))) i);"
  done
  for ((lo = 1; lo <= PRELOAD; lo += 1000)); do
    echo "INSERT INTO public.jobs (name, spec) SELECT 'n' || i, jsonb_build_object('preset', '1080p', 'n', i)
      FROM generate_series($lo, $((lo + 999))) i;"
  done
} | psqlx -d "$DB"
CHANGES=$((2 * PRELOAD))

reset_poll() {
  qb "UPDATE crwatch.offsets SET position = 1, watermark = split_part('$WM_SAVED', '|', 1)::pg_snapshot,
      watermark_time = split_part('$WM_SAVED', '|', 2)::timestamptz WHERE name = 'bench_poll'"
}
# The command that reads the backlog with KIND, to stdout (exec: run in the background, $! is crwatch).
run_kind() { # KIND RUN
  if [[ "$1" == logical ]]; then
    exec "$CRW" stream -d "$CONNINFO" -X source=logical -X "slot.name=bench_l$2" -X publication.name=bench_pub \
      -X tables=public.jobs -X slot.create=false -X "deadletter.file=$WORK/dl.jsonl"
  else
    exec "$CRW" stream -d "$CONNINFO" -X source=poll -X slot.name=bench_poll -X tables=public.jobs \
      -X poll.interval.ms=100 -X "deadletter.file=$WORK/dl.jsonl"
  fi
}
prepare() { # KIND RUN
  if [[ "$1" == logical ]]; then copy_slot "bench_l$2"; else reset_poll; fi
}
finish() { # KIND RUN: the stopped crwatch's walsender lets go of the slot a moment later
  [[ "$1" == logical ]] || return 0
  for _ in $(seq 1 100); do
    [[ "$(qb "SELECT active FROM pg_replication_slots WHERE slot_name = 'bench_l$2'")" == f ]] && break
    sleep 0.05
  done
  drop_slot "bench_l$2"
}
# Reads the backlog with KIND into OUT, up to its last event; crwatch is stopped then (it would go on
# waiting for more).  Sets T0 and T1, the epoch seconds around the read.
read_backlog() { # KIND RUN OUT
  rm -f "$WORK/fifo"
  mkfifo "$WORK/fifo"
  T0=$(date +%s.%N)
  run_kind "$1" "$2" >"$WORK/fifo" 2>"$WORK/run.$1.err" &
  local pid=$!
  head -n "$CHANGES" <"$WORK/fifo" >"$3"
  T1=$(date +%s.%N)
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- validation
declare -A VALID
for kind in logical poll; do
  prepare "$kind" v
  read_backlog "$kind" v "$WORK/valid.$kind.jsonl"
  finish "$kind" v
  added=$(grep -c '"data":{"type":"ADDED"' "$WORK/valid.$kind.jsonl" || true)
  modified=$(grep -c '"data":{"type":"MODIFIED"' "$WORK/valid.$kind.jsonl" || true)
  ids=$(sed -n 's/^{"specversion":"1.0","id":"\([^"]*\)".*/\1/p' "$WORK/valid.$kind.jsonl" | sort -u | wc -l)
  VALID[$kind]="$added ADDED, $modified MODIFIED, $ids distinct ids"
  log "validation $kind: ${VALID[$kind]}"
  [[ "$added" == "$PRELOAD" && "$modified" == "$PRELOAD" && "$ids" == "$CHANGES" ]] ||
    die "$kind did not give $PRELOAD ADDED and $PRELOAD MODIFIED with distinct ids (see $WORK/run.$kind.err)"
done

# ---------------------------------------------------------------- catch-up
RAW="$WORK/catchup.tsv"
: >"$RAW"
for ((r = 1; r <= REPEATS; r++)); do
  for kind in logical poll; do
    prepare "$kind" "$r"
    read_backlog "$kind" "$r" /dev/null
    finish "$kind" "$r"
    secs=$(echo "$T1 - $T0" | bc -l)
    printf '%s\t%s\t%s\n' "$kind" "$r" "$secs" >>"$RAW"
    log "catch-up $kind run $r: $(printf '%.2f' "$secs") s"
  done
done
declare -A SECS RATE
for kind in logical poll; do
  SECS[$kind]=$(awk -F'\t' -v k="$kind" '$1 == k {print $3}' "$RAW" | median)
  RATE[$kind]=$(echo "$CHANGES / ${SECS[$kind]}" | bc -l)
done
RATIO=$(echo "${RATE[poll]} / ${RATE[logical]}" | bc -l)

# ---------------------------------------------------------------- latency
declare -A LAT LTPS
lat_run() { # INTERVAL_MS
  local iv="$1"
  # A watermark of its own, taken at its first start: live changes only.
  "$CRW" stream -d "$CONNINFO" -X source=poll -X "slot.name=lat_$iv" -X tables=public.jobs \
    -X "poll.interval.ms=$iv" -X "deadletter.file=$WORK/dl.jsonl" 2>"$WORK/lat.$iv.err" 9>&- \
    > >(bench_stamp >"$WORK/lat.$iv.txt") &
  local pid=$!
  for _ in $(seq 1 200); do grep -q "streaming by polling" "$WORK/lat.$iv.err" && break; sleep 0.05; done
  echo "\\set k random(1, $PRELOAD)
UPDATE public.jobs SET status = jsonb_build_object('phase', 'Running', 'progress', :k)
  WHERE namespace = 'default' AND name = 'p' || :k;" \
    >"$WORK/lat.sql"
  "$PG_BIN/pgbench" -n -d "$DB" -R "$LAT_RATE" -T "$LAT_SECS" -c 4 -j 2 -f "$WORK/lat.sql" >"$WORK/lat.$iv.pgbench" 2>&1 9>&- ||
    { cat "$WORK/lat.$iv.pgbench" >&2; die "pgbench failed"; }
  sleep "$(echo "$iv / 1000 + 1" | bc -l)"
  kill "$pid"
  wait "$pid" || true
  sleep 0.2
  LTPS[$iv]=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/lat.$iv.pgbench" | head -n 1)
  LAT[$iv]="$(bench_lat_stats "$WORK/lat.$iv.txt" || echo "- - - 0")"
  read -r p50 p99 max n <<<"${LAT[$iv]}"
  log "latency at poll.interval.ms=$iv: ${LTPS[$iv]} changes/s committed, $n events: p50 $p50 ms, p99 $p99 ms, max $max ms"
}
lat_run 100
lat_run 1000

# ---------------------------------------------------------------- idle poll cost
declare -A IDLE
idle_run() { # TABLE ROWS
  managed_table "$1"
  fill "$1" "$2" i
  qb "VACUUM ANALYZE public.$1"
  "$CRW" stream -d "$CONNINFO" -X source=poll -X "slot.name=idle_$1" -X "tables=public.$1" -X poll.interval.ms=10 \
    -X log.level=debug -X "deadletter.file=$WORK/dl.jsonl" >/dev/null 2>"$WORK/idle.$1.err" &
  local pid=$!
  sleep "$IDLE_SECS"
  kill "$pid"
  wait "$pid" || true
  # Skip the first polls (connection warm-up); then the time of each whole idle poll.
  IDLE[$1]=$(sed -n 's/.*poll: batch [0-9]*: 0 changes in \([0-9.]*\) ms.*/\1/p' "$WORK/idle.$1.err" | tail -n +11 |
    sort -g | awk '{a[NR] = $1}
      END {if (!NR) {print "- - 0"; exit} i = int(NR * 0.99); if (i < 1) i = 1; printf "%.3f %.3f %d\n", a[int((NR + 1) / 2)], a[i], NR}')
  log "idle poll, $2-row table: median / p99 ms, polls: ${IDLE[$1]}"
}
idle_run idle_10k 10000
idle_run idle_1m 1000000

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/poll-$STAMP.txt"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
GIT_DIRTY="$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo dirty || echo clean)"
read -r i10_med i10_p99 i10_n <<<"${IDLE[idle_10k]}"
read -r i1m_med i1m_p99 i1m_n <<<"${IDLE[idle_1m]}"
{
  printf 'crwatch %s (sha256 %s, git %s %s), %s\n' "$CRW_VERSION" "$CRW_SHA" "$GIT_REV" "$GIT_DIRTY" "$STAMP"
  printf 'validation logical: %s\n' "${VALID[logical]}"
  printf 'validation poll:    %s\n' "${VALID[poll]}"
  printf 'catch-up of %d changes (median of %d): logical %.2f s (%.0f changes/s), poll %.2f s (%.0f changes/s); poll/logical %.2f\n' \
    "$CHANGES" "$REPEATS" "${SECS[logical]}" "${RATE[logical]}" "${SECS[poll]}" "${RATE[poll]}" "$RATIO"
  for iv in 100 1000; do
    read -r p50 p99 max n <<<"${LAT[$iv]}"
    printf 'latency poll.interval.ms=%-4s commit -> event at %.0f changes/s: p50 %s ms  p99 %s ms  max %s ms  (%s events)\n' \
      "$iv" "${LTPS[$iv]:-0}" "$p50" "$p99" "$max" "$n"
  done
  printf 'idle poll, 10k-row table: median %s ms, p99 %s ms (%s polls)\n' "$i10_med" "$i10_p99" "$i10_n"
  printf 'idle poll, 1M-row table:  median %s ms, p99 %s ms (%s polls); 1M/10k median %.2f\n' "$i1m_med" "$i1m_p99" \
    "$i1m_n" "$(echo "$i1m_med / $i10_med" | bc -l)"
} | tee "$OUT"
log "results in $OUT"
