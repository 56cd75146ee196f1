#!/usr/bin/env bash
# bench/kafka.sh — crwatch's Kafka sink end to end:
# throughput into librdkafka's mock cluster against pg_recvlogical on the same
# WAL, commit-to-delivery latency at a fixed rate, and peak RSS.
#
#   bench/kafka.sh                         # defaults: 200k row changes, 3 repeats, 20 s latency runs
#   BENCH_TXNS=20 BENCH_BIG_ROWS=10000 BENCH_UPDATE_ROWS=10000 BENCH_LAT_SECS=5 bench/kafka.sh   # quick
#
# What it does, in one run:
#   1. a throwaway PostgreSQL (scripts/pg) in a temp dir, removed on exit;
#      crwatch and crwatch-mock-kafka built (Release) unless CRWATCH/MOCK_KAFKA are given;
#   2. one table + publication, ONE pgoutput slot (bench_src) made BEFORE the
#      workload, then the workload (many insert txns, one big insert txn,
#      batched updates); endpos = pg_current_wal_lsn() after it;
#   3. timed runs, interleaved, each on its own pg_copy_logical_replication_slot()
#      of bench_src (never consumed, so every copy starts at the same WAL) and
#      each against a fresh crwatch-mock-kafka (the mock cluster in its own
#      process, reached over loopback like a broker):
#        recvlogical    pg_recvlogical (pgoutput, proto 2, streaming) -f /dev/null: the decode ceiling
#        crwatch        crwatch stream --endpos into the mock: exits once every event is
#                       delivered (delivery reports) and confirmed
#        wal2json|kcat  pg_recvlogical (wal2json format-version 2, one line per change) | kcat -P
#                       into the mock (it confirms before delivery; crwatch does not)
#      the two Kafka contenders' topics are counted afterwards: every change must be there;
#   4. latency: crwatch streaming live into a mock while pgbench -R commits one-row
#      transactions at BENCH_LAT_RATE/s for BENCH_LAT_SECS; a kcat consumer follows
#      the topic and stamps each event on arrival; latency = arrival - the event's
#      commit time ("time"), i.e. commit -> visible to a consumer, an upper bound
#      of commit -> delivered.  Once at-least-once, once exactly-once; the
#      exactly-once run puts the mock behind its transaction relay
#      (crwatch-mock-kafka --transactions) and follows with a read_committed
#      kcat, so its figure is commit -> visible after the Kafka commit;
#   5. a table of medians, written to bench/results/kafka-<stamp>.txt.
#
# Environment (defaults in brackets):
#   BENCH_TXNS [100] BENCH_TXN_ROWS [1000] BENCH_BIG_ROWS [50000] BENCH_UPDATE_ROWS [50000]
#   BENCH_UPDATE_BATCH [1000] BENCH_REPEATS [3]
#   BENCH_LAT_RATE [2000] rows/s   BENCH_LAT_SECS [20]   BENCH_LAT_EOS [1] also time exactly-once
#   BENCH_LAT_FETCH_WAIT [5] the latency consumer's fetch.wait.max.ms (the mock answers an empty fetch
#     only after that wait, new data or not, where a broker answers as data comes: 1 is nearer a broker)
#   BENCH_LAT [1] 0: no latency runs   BENCH_CONTENDERS [recvlogical crwatch wal2json-kcat] the timed
#     runs; crwatch-eos is crwatch with delivery=exactly-once (its checkpoint topic made in the mock first),
#     crwatch-before and crwatch-before-eos the same with CRWATCH_BEFORE (added when it is given)
#   BENCH_KAFKA_OPTS, BENCH_KAFKA_BEFORE_OPTS: more -X options for this crwatch's runs and CRWATCH_BEFORE's
#   BENCH_TIMEOUT [900] s per run   BENCH_RESULTS [bench/results]   BENCH_KEEP [0]
#   BENCH_BUILD_DIR [${TMPDIR:-/tmp}/crwatch-bench-build]   CRWATCH, MOCK_KAFKA, CRWATCH_BEFORE: binaries to use
#
# Exit status: 0 the benchmark ran and validated (whatever the figures); 1 otherwise.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init bench

TXNS="${BENCH_TXNS:-100}"
TXN_ROWS="${BENCH_TXN_ROWS:-1000}"
BIG_ROWS="${BENCH_BIG_ROWS:-50000}"
UPDATE_ROWS="${BENCH_UPDATE_ROWS:-50000}"
UPDATE_BATCH="${BENCH_UPDATE_BATCH:-1000}"
REPEATS="${BENCH_REPEATS:-3}"
LAT_RATE="${BENCH_LAT_RATE:-2000}"
LAT_SECS="${BENCH_LAT_SECS:-20}"
LAT_EOS="${BENCH_LAT_EOS:-1}"
TIMEOUT="${BENCH_TIMEOUT:-900}"
LAT_FETCH_WAIT="${BENCH_LAT_FETCH_WAIT:-5}"
LAT_ON="${BENCH_LAT:-1}"
read -r -a OPTS_AFTER <<<"${BENCH_KAFKA_OPTS:-}"
read -r -a OPTS_BEFORE <<<"${BENCH_KAFKA_BEFORE_OPTS:-}"
[[ "$REPEATS" =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_REPEATS must be >= 1" >&2; exit 2; }

DB=bench
TABLE=bench_t
PUB=bench_pub
SRC_SLOT=bench_src

bench_need /usr/bin/time kcat perl bc "$PG_BIN/psql" "$PG_BIN/pg_recvlogical" "$PG_BIN/pgbench"
bench_workdir crwatch-kbench
MOCK_PID=""
CRW_PID=""
CONS_PID=""
# shellcheck disable=SC2317  # invoked by bench_cleanup
bench_on_exit() {
  [[ -n "$CRW_PID" ]] && kill "$CRW_PID" 2>/dev/null
  [[ -n "$CONS_PID" ]] && kill "$CONS_PID" 2>/dev/null
  mock_stop 2>/dev/null || true
}

# ---------------------------------------------------------------- binaries
if [[ -n "${MOCK_KAFKA:-}" ]]; then
  MOCK="$MOCK_KAFKA"
  bench_build crwatch
else
  bench_build crwatch crwatch-mock-kafka
  MOCK="$BUILD_DIR/crwatch-mock-kafka"
fi
if [[ -n "${CRWATCH_BEFORE:-}" ]]; then
  [[ -x "$CRWATCH_BEFORE" ]] || die "CRWATCH_BEFORE=$CRWATCH_BEFORE is not executable"
fi
# xopts BINARY-KIND: the -X arguments of BENCH_KAFKA_OPTS (after) or BENCH_KAFKA_BEFORE_OPTS (before).
xopts() {
  local o
  if [[ "$1" == before ]]; then
    for o in ${OPTS_BEFORE[@]+"${OPTS_BEFORE[@]}"}; do printf '%s\0%s\0' -X "$o"; done
  else
    for o in ${OPTS_AFTER[@]+"${OPTS_AFTER[@]}"}; do printf '%s\0%s\0' -X "$o"; done
  fi
}

# topic_count BS TOPIC: messages appended to TOPIC, the sum of its partitions'
# high watermarks (last offset + 1).  Reading them all back would undercount:
# the mock keeps only the last ~5 MB of each partition.  Neither contender
# writes transaction markers, so every offset is one message.
topic_count() {
  kcat -b "$1" -C -t "$2" -o -1 -e -q -f '%p %o\n' 2>/dev/null 9>&- | awk '{n += $2 + 1} END {print n + 0}'
}

# ---------------------------------------------------------------- server and workload
bench_start_pg
export PGDATABASE=$DB
CONNINFO="dbname=$DB"

bench_mixed_table
qb "CREATE TABLE public.lat_t (id bigserial PRIMARY KEY, v int, note text);
CREATE PUBLICATION lat_pub FOR TABLE public.lat_t;"
PG_VERSION="$(qb "SHOW server_version")"

bench_mixed_workload "$WORK/workload.sql"
log "workload: $TXNS x $TXN_ROWS-row inserts, 1 x $BIG_ROWS-row insert, $UPDATE_ROWS rows updated ($TOTAL_ROWS row changes)"
"$PG_BIN/psql" -X -q -d "$DB" -f "$WORK/workload.sql" >/dev/null
ENDPOS="$(qb "SELECT pg_current_wal_lsn()")"
START_LSN="$(qb "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '$SRC_SLOT'")"
WAL_MIB=$(( $(qb "SELECT pg_wal_lsn_diff('$ENDPOS', '$START_LSN')::bigint") / 1048576 ))
log "WAL $START_LSN..$ENDPOS ($WAL_MIB MiB)"

# ---------------------------------------------------------------- throughput

FAILED=0
RAW="$WORK/raw.tsv"
: >"$RAW"
run_one() { # CONTENDER ITER
  local c="$1" i="$2" slot rc=0 t0 t1 secs rss n="-" topic=""
  slot="bench_${c//[^a-z0-9]/_}_$i"
  copy_slot "$slot" "$([[ "$c" == wal2json* ]] && echo wal2json)"
  mock_start
  t0=$(date +%s.%N)
  case "$c" in
    recvlogical)
      timeout --kill-after=10 "$TIMEOUT" /usr/bin/time -f '%M' -o "$WORK/rss" \
        "$PG_BIN/pg_recvlogical" -d "$CONNINFO" --slot "$slot" --start --no-loop -o proto_version=2 \
        -o streaming=on -o "publication_names=$PUB" --endpos "$ENDPOS" -f /dev/null 2>"$WORK/$slot.err" 9>&- || rc=$?
      ;;
    crwatch | crwatch-eos | crwatch-before | crwatch-before-eos)
      topic="bench.${c//-/.}.$i"
      local bin="$CRW" kind=after delivery=at-least-once extra=()
      [[ "$c" == crwatch-before* ]] && bin="$CRWATCH_BEFORE" kind=before
      if [[ "$c" == *-eos ]]; then
        delivery=exactly-once
        mock_cmd "create crwatch.checkpoints 1" # the mock has no CreateTopics of its own
      fi
      mapfile -d '' -t extra < <(xopts "$kind")
      timeout --kill-after=10 "$TIMEOUT" /usr/bin/time -f '%M' -o "$WORK/rss" \
        "$bin" stream -d "$CONNINFO" --endpos "$ENDPOS" -X "slot.name=$slot" -X "publication.name=$PUB" \
        -X slot.create=false -X publication.create=false -X "tables=public.$TABLE" -X log.level=warn \
        -X sink=kafka -X "kafka.bootstrap.servers=$BS" -X "topic.template=$topic" -X "delivery=$delivery" \
        -X "deadletter.file=$WORK/deadletter.jsonl" ${extra[@]+"${extra[@]}"} 2>"$WORK/$slot.err" 9>&- || rc=$?
      ;;
    wal2json-kcat)
      topic="bench.wal2json.$i"
      # include-transaction=false: one line per change, no begin/commit lines.
      timeout --kill-after=10 "$TIMEOUT" /usr/bin/time -f '%M' -o "$WORK/rss" bash -o pipefail -c \
        '"$1" -d "$2" --slot "$3" --start --no-loop -o format-version=2 -o include-transaction=false \
           --endpos "$4" -f - | kcat -P -b "$5" -t "$6"' _ \
        "$PG_BIN/pg_recvlogical" "$CONNINFO" "$slot" "$ENDPOS" "$BS" "$topic" 2>"$WORK/$slot.err" 9>&- || rc=$?
      ;;
  esac
  t1=$(date +%s.%N)
  secs=$(echo "$t1 - $t0" | bc -l)
  rss=$(tail -n 1 "$WORK/rss" 2>/dev/null || echo 0)
  [[ "$rss" =~ ^[0-9]+$ ]] || rss=0
  [[ -n "$topic" ]] && n=$(topic_count "$BS" "$topic")
  mock_stop
  drop_slot "$slot"
  if ((rc != 0)); then
    log "$c run $i FAILED (exit $rc)"; tail -n 20 "$WORK/$slot.err" >&2; FAILED=1
  elif [[ "$n" != "-" && "$n" != "$TOTAL_ROWS" ]]; then
    log "$c run $i FAILED: $n messages in $topic, want $TOTAL_ROWS"; FAILED=1
  fi
  printf '%s\t%s\t%.3f\t%s\t%s\n' "$c" "$i" "$secs" "$rss" "$n" >>"$RAW"
  log "$(printf '%-14s run %d: %7.2f s  %9.0f rows/s  peak RSS %6.1f MiB  messages %s' "$c" "$i" "$secs" \
    "$(echo "$TOTAL_ROWS / $secs" | bc -l)" "$(echo "$rss / 1024" | bc -l)" "$n")"
}

read -r -a CONTENDERS <<<"${BENCH_CONTENDERS:-recvlogical crwatch wal2json-kcat}"
if [[ -n "${CRWATCH_BEFORE:-}" && -z "${BENCH_CONTENDERS:-}" ]]; then CONTENDERS+=(crwatch-before); fi
for c in "${CONTENDERS[@]}"; do
  case "$c" in
    recvlogical | crwatch | crwatch-eos | wal2json-kcat) ;;
    crwatch-before | crwatch-before-eos) [[ -n "${CRWATCH_BEFORE:-}" ]] || die "$c needs CRWATCH_BEFORE" ;;
    *) die "unknown contender $c (recvlogical crwatch crwatch-eos crwatch-before crwatch-before-eos wal2json-kcat)" ;;
  esac
done
has() { [[ " ${CONTENDERS[*]} " == *" $1 "* ]]; }
log "timed runs: ${CONTENDERS[*]}, $REPEATS each, interleaved, each on a fresh slot copy and a fresh mock broker"
for ((i = 1; i <= REPEATS; i++)); do
  for c in "${CONTENDERS[@]}"; do run_one "$c" "$i"; done
done
declare -A SECS RSS
for c in "${CONTENDERS[@]}"; do
  SECS[$c]=$(awk -F'\t' -v c="$c" '$1 == c {print $3}' "$RAW" | median)
  RSS[$c]=$(awk -F'\t' -v c="$c" '$1 == c {print $4}' "$RAW" | median)
done

# ---------------------------------------------------------------- latency
declare -A LAT LRSS LTPS
lat_run() { # DELIVERY
  local mode="$1" slot="lat_${1//-/_}" topic="lat.$1" relay=() iso=read_uncommitted
  [[ "$mode" == exactly-once ]] && relay=(--transactions) iso=read_committed
  mock_start "${relay[@]}"
  mock_cmd "create $topic 4"
  local extra=()
  mapfile -d '' -t extra < <(xopts after)
  "$CRW" stream -d "$CONNINFO" -X "slot.name=$slot" -X publication.name=lat_pub -X tables=public.lat_t \
    -X sink=kafka -X "kafka.bootstrap.servers=$BS" -X "topic.template=$topic" -X "delivery=$mode" \
    -X "deadletter.file=$WORK/deadletter.jsonl" ${extra[@]+"${extra[@]}"} 2>"$WORK/lat.$mode.err" 9>&- &
  CRW_PID=$!
  for _ in $(seq 1 200); do grep -q "streaming from slot" "$WORK/lat.$mode.err" && break; sleep 0.05; done
  # The follower: fetches without waiting long; perl stamps each line on arrival.
  # $! is kcat's pid (perl runs in the process substitution and ends with it).
  kcat -b "$BS" -C -t "$topic" -o end -u -q -X "fetch.wait.max.ms=$LAT_FETCH_WAIT" -X fetch.min.bytes=1 \
    -X "isolation.level=$iso" \
    -f '%s\n' 2>/dev/null 9>&- \
    > >(bench_stamp >"$WORK/lat.$mode.txt") &
  CONS_PID=$!
  sleep 2
  echo "INSERT INTO public.lat_t (v, note) VALUES (1, 'latency probe row, about a hundred bytes of text to be realistic');" \
    >"$WORK/lat.sql"
  "$PG_BIN/pgbench" -n -d "$DB" -R "$LAT_RATE" -T "$LAT_SECS" -c 4 -j 2 -f "$WORK/lat.sql" >"$WORK/lat.$mode.pgbench" 2>&1 9>&- ||
    { cat "$WORK/lat.$mode.pgbench" >&2; die "pgbench failed"; }
  sleep 2
  # Peak RSS (VmHWM) before the stop, then SIGTERM by pid.
  LRSS[$mode]=$(awk '/^VmHWM:/ {print $2}' "/proc/$CRW_PID/status" 2>/dev/null || echo 0)
  kill "$CRW_PID"; wait "$CRW_PID" || true; CRW_PID=""
  kill "$CONS_PID" 2>/dev/null; wait "$CONS_PID" 2>/dev/null || true; CONS_PID=""
  sleep 0.2 # the perl stamper drains and exits at kcat's EOF
  mock_stop
  LTPS[$mode]=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/lat.$mode.pgbench" | head -n 1)
  LAT[$mode]="$(bench_lat_stats "$WORK/lat.$mode.txt" || echo "- - - 0")"
  read -r p50 p99 max n <<<"${LAT[$mode]}"
  log "latency $mode: ${LTPS[$mode]} rows/s committed, $n events measured: p50 $p50 ms, p99 $p99 ms, max $max ms; peak RSS $(echo "${LRSS[$mode]} / 1024" | bc -l | xargs printf '%.1f') MiB"
  [[ "$n" -gt 0 ]] || { log "latency $mode: no events arrived"; FAILED=1; }
}
if [[ "$LAT_ON" == 1 ]]; then
  lat_run at-least-once
  [[ "$LAT_EOS" == 1 ]] && lat_run exactly-once
fi

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/kafka-$STAMP.txt"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
GIT_DIRTY="$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo dirty || echo clean)"
rss_max=$(printf '%s\n' "${RSS[crwatch]:-0}" "${LRSS[at-least-once]:-0}" | sort -n | tail -n 1)
read -r _ p99 _ _ <<<"${LAT[at-least-once]:-- - - -}"
met() { if ((FAILED)); then echo "n/a (a run failed)"; elif (($(echo "$1" | bc -l))); then echo MET; else echo MISSED; fi; }
{
  echo
  echo "crwatch Kafka benchmark — $STAMP — $CRW_VERSION (git $GIT_REV, $GIT_DIRTY), PostgreSQL $PG_VERSION, librdkafka mock cluster in its own process, $(nproc) cores"
  echo "workload: $TOTAL_ROWS row changes ($TXNS x $TXN_ROWS-row insert txns, 1 x $BIG_ROWS-row insert txn, $UPDATE_ROWS updated in $UPDATE_BATCH-row txns), $WAL_MIB MiB WAL; medians of $REPEATS"
  ((FAILED)) && echo "*** A RUN FAILED OR DID NOT VALIDATE: see the log above ***"
  printf '%-16s %10s %12s %12s\n' contender seconds rows/s "peak RSS MiB"
  for c in "${CONTENDERS[@]}"; do
    printf '%-16s %10.2f %12.0f %12.1f\n' "$c" "${SECS[$c]}" "$(echo "$TOTAL_ROWS / ${SECS[$c]}" | bc -l)" "$(echo "${RSS[$c]} / 1024" | bc -l)"
  done
  for c in "${CONTENDERS[@]}"; do
    [[ "$c" == crwatch* ]] || continue
    if has recvlogical; then
      r=$(echo "${SECS[recvlogical]} / ${SECS[$c]}" | bc -l)
      printf '%-30s %.2f  (goal >= 0.9: %s)\n' "$c / pg_recvlogical:" "$r" "$(met "$r >= 0.9")"
    fi
    if has wal2json-kcat; then
      r=$(echo "${SECS[wal2json-kcat]} / ${SECS[$c]}" | bc -l)
      printf '%-30s %.2f  (goal >= 1.0: %s)\n' "$c / wal2json|kcat:" "$r" "$(met "$r >= 1.0")"
    fi
  done
  for mode in at-least-once exactly-once; do
    [[ -n "${LAT[$mode]:-}" ]] || continue
    read -r a b c d <<<"${LAT[$mode]}"
    printf 'latency %-14s commit -> consumer at %.0f rows/s: p50 %s ms  p99 %s ms  max %s ms  (%s events)  peak RSS %.1f MiB\n' \
      "$mode" "${LTPS[$mode]}" "$a" "$b" "$c" "$d" "$(echo "${LRSS[$mode]} / 1024" | bc -l)"
  done
  [[ -n "${LAT[exactly-once]:-}" ]] &&
    echo "  (exactly-once: commit -> visible to read_committed, through the mock's transaction relay)"
  [[ -n "${LAT[at-least-once]:-}" ]] &&
    printf 'p99 latency (at-least-once, consumer fetch.wait.max.ms=%s) < 20 ms: %s\n' "$LAT_FETCH_WAIT" "$(met "${p99:-999} < 20")"
  printf 'peak RSS %.1f MiB < 48 MiB: %s\n' "$(echo "$rss_max / 1024" | bc -l)" "$(met "$rss_max < 49152")"
} | tee "$OUT"
log "results written to $OUT"
exit "$FAILED"
