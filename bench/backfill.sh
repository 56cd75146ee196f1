#!/usr/bin/env bash
# bench/backfill.sh — `crwatch backfill` (docs/snapshots.md) against COPY of the same rows, in one run.
#
#   bench/backfill.sh                      # defaults: 1M crd-shaped rows, 3 repeats
#   BENCH_ROWS=200000 bench/backfill.sh    # smaller
#   CRWATCH=/path/to/crwatch bench/backfill.sh
#
# What one run does (a throwaway PostgreSQL, sql/crwatch.sql, one managed table public.jobs in the
# crd convention, BENCH_ROWS rows in 10 namespaces, ~340-byte rows, VACUUM ANALYZE'd):
#   1. validation: one backfill to a file; it must hold BENCH_ROWS SYNC events with distinct subjects;
#   2. timed, interleaved, BENCH_REPEATS times each (median reported):
#        copy      psql -c "COPY (SELECT <every column> FROM public.jobs) TO STDOUT" > /dev/null
#        w1 w2 w4  crwatch backfill, shape=crd, stdout to /dev/null, snapshot.workers 1, 2, 4 (ctid chunks)
#        key1      the same with snapshot.chunking=key, one worker (primary-key ranges)
#        kafka     crwatch backfill into the embedded broker (librdkafka's mock cluster, in process),
#                  two workers, at-least-once
#      rows/s of each, its ratio to COPY's rate in the same run, and crwatch's peak RSS (GNU time).
#   3. prints the table and writes bench/results/backfill-<stamp>.txt.
#
# Environment (defaults in brackets):
#   BENCH_ROWS [1000000]   rows in public.jobs
#   BENCH_REPEATS [3]      timed runs per contender
#   BENCH_PG_OPTS          more server settings, space separated name=value
#   BENCH_KEEP [0]         1: keep the temp dir
#   CRWATCH                a crwatch binary to use instead of building one
#
# Needs the PostgreSQL 15 server binaries (scripts/deps), GNU time, cmake.  Changes nothing outside its
# temp dir except bench/results/ (git-ignored).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init backfill

ROWS="${BENCH_ROWS:-1000000}"
REPEATS="${BENCH_REPEATS:-3}"
DB=bench_backfill

bench_need_time
bench_need bc "$PG_BIN/psql"
bench_workdir crwatch-bench-backfill
bench_build crwatch
bench_start_pg
CONNINFO="dbname=$DB"

# ---------------------------------------------------------------- setup
q "CREATE DATABASE $DB"
psqlx -d "$DB" -f "$ROOT/sql/crwatch.sql" >/dev/null 2>&1
qb "$(bench_jobs_table public.jobs)" >/dev/null
log "loading $ROWS rows"
bench_jobs_rows public.jobs 1 "$ROWS" | psqlx -d "$DB"
qb "VACUUM ANALYZE public.jobs"
COLS="$(qb "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
  WHERE attrelid = 'public.jobs'::regclass AND attnum > 0 AND NOT attisdropped")"
TABLE_SIZE="$(qb "SELECT pg_size_pretty(pg_relation_size('public.jobs'))")"

RES=(-X resource.jobs.table=public.jobs -X resource.jobs.shape=crd -X resource.jobs.kind=VideoTranscodingJob
     -X resource.jobs.api.version=media.example.com/v1 -X "deadletter.file=$WORK/dl.jsonl"
     -X "snapshot.state.file=$WORK/backfill.state")
# Runs contender NAME (stdout: the events), timed by GNU time into $WORK/time.
run_c() { # NAME
  local t=(/usr/bin/time -f '%e %M' -o "$WORK/time")
  case "$1" in
  copy) "${t[@]}" "$PG_BIN/psql" -X -d "$CONNINFO" -Atc "COPY (SELECT $COLS FROM public.jobs) TO STDOUT" ;;
  w1 | w2 | w4) "${t[@]}" "$CRW" backfill -d "$CONNINFO" "${RES[@]}" -X "snapshot.workers=${1#w}" ;;
  key1) "${t[@]}" "$CRW" backfill -d "$CONNINFO" "${RES[@]}" -X snapshot.workers=1 -X snapshot.chunking=key ;;
  kafka) "${t[@]}" "$CRW" backfill -d "$CONNINFO" "${RES[@]}" -X snapshot.workers=2 -X sink=kafka \
    -X kafka.bootstrap.servers=embedded ;;
  esac
}
CONTENDERS=(copy w1 w2 w4 key1 kafka)

# ---------------------------------------------------------------- validation
log "validation: one backfill to a file"
run_c w2 >"$WORK/valid.jsonl" 2>"$WORK/valid.err" || die "the validation backfill failed (see $WORK/valid.err)"
n=$(grep -c '"data":{"type":"SYNC","kind":"VideoTranscodingJob"' "$WORK/valid.jsonl" || true)
subjects=$(sed -n 's/.*"subject":"\([^"]*\)".*/\1/p' "$WORK/valid.jsonl" | sort -u | wc -l)
log "validation: $n SYNC events, $subjects distinct subjects"
[[ "$n" == "$ROWS" && "$subjects" == "$ROWS" ]] || die "expected $ROWS SYNC events with distinct subjects"
rm -f "$WORK/valid.jsonl"

# ---------------------------------------------------------------- timed runs
declare -A SECS RSS
for ((r = 1; r <= REPEATS; r++)); do
  for c in "${CONTENDERS[@]}"; do
    run_c "$c" >/dev/null 2>"$WORK/run.$c.err" || { cat "$WORK/run.$c.err" >&2; die "$c failed"; }
    read -r secs kb <"$WORK/time"
    SECS[$c]+="$secs "
    RSS[$c]+="$kb "
    log "run $r $c: $secs s, $((kb / 1024)) MiB"
  done
done

# ---------------------------------------------------------------- report
med_secs() { tr ' ' '\n' <<<"${SECS[$1]}" | grep . | median; }
max_rss() { tr ' ' '\n' <<<"${RSS[$1]}" | grep . | sort -n | tail -1; }
COPY_S="$(med_secs copy)"
COPY_RATE="$(bc -l <<<"$ROWS / $COPY_S")"
OUT="$RESULTS_DIR/backfill-$STAMP.txt"
mkdir -p "$RESULTS_DIR"
{
  echo "bench/backfill.sh  $STAMP  $CRW_VERSION (sha256 $CRW_SHA)"
  echo "$ROWS crd-shaped rows ($TABLE_SIZE heap), median of $REPEATS runs, $(nproc) cores"
  echo
  printf '%-8s %9s %12s %9s %10s\n' contender seconds rows/s "x COPY" "peak RSS"
  for c in "${CONTENDERS[@]}"; do
    s="$(med_secs "$c")"
    rate="$(bc -l <<<"$ROWS / $s")"
    printf '%-8s %9.2f %12.0f %9.2f %7d MiB\n' "$c" "$s" "$rate" "$(bc -l <<<"$rate / $COPY_RATE")" \
      $(($(max_rss "$c") / 1024))
  done
  echo
  echo "copy: psql COPY of the same columns to /dev/null; w1/w2/w4: crwatch backfill (stdout to /dev/null,"
  echo "ctid chunks) with snapshot.workers 1/2/4; key1: primary-key chunks, 1 worker; kafka: into the"
  echo "embedded broker, 2 workers.  Goal: w1 >= 0.8 x COPY, peak RSS < 64 MiB."
} | tee "$OUT"
log "wrote $OUT"
