#!/usr/bin/env bash
# bench/queues.sh — crwatch's message-queue sinks end to end: rows/s into a
# real broker with its acknowledgements on, on the bench/kafka.sh workload,
# against pg_recvlogical on the same WAL, and crwatch's peak RSS.
#
#   bench/queues.sh                  # every target
#   bench/queues.sh rabbitmq         # only the targets named
#   BENCH_TXNS=20 BENCH_BIG_ROWS=10000 BENCH_UPDATE_ROWS=10000 bench/queues.sh   # quick
#
# What it does, in one run:
#   1. a throwaway PostgreSQL (scripts/pg) in a temp dir, removed on exit;
#      crwatch built (Release) unless CRWATCH is given; each target's broker
#      started once, in the same temp dir;
#   2. one table + publication, ONE pgoutput slot (bench_src) made BEFORE the
#      workload, then the workload (bench/lib.sh: many insert txns, one big
#      insert txn, batched updates); endpos = pg_current_wal_lsn() after it;
#   3. timed runs, interleaved, each on its own pg_copy_logical_replication_slot()
#      of bench_src (so every run decodes the same WAL):
#        recvlogical   pg_recvlogical (pgoutput, proto 2, streaming) -f /dev/null: the decode ceiling
#        <target>      crwatch stream --endpos into the target's broker: it exits once every
#                      event is acknowledged by the broker and confirmed to PostgreSQL
#      and the broker must then hold every change (counted);
#   4. a table of medians, written to bench/results/queues-<stamp>.txt.
#
# Targets:
#   rabbitmq   a throwaway RabbitMQ node (scripts/rabbitmq, with the management
#              plugin for rabbitmqadmin); per run a durable topic exchange and a
#              durable lazy queue bound with '#' (every message is routed, written
#              to disk and confirmed: publisher confirms); persistent messages;
#              the password from rabbitmq.password.file.  BENCH_RMQ_OPTS: more
#              -X settings for crwatch (say "rabbitmq.max.unconfirmed=512").
#   nats       a throwaway nats-server -js (scripts/nats, its monitoring port on for
#              the count); per run a stream of its own, BENCH_<run>, created by
#              crwatch (file storage, the 2-minute duplicate window: every message
#              carries Nats-Msg-Id) on subjects bench.<run>.<table>; every message
#              acknowledged by JetStream.  BENCH_NATS_OPTS: more -X settings for
#              crwatch (say "nats.max.pending=16384").
#
# A target T is four functions, T_setup (start its broker, once), T_run I SLOT
# (crwatch stream --endpos on SLOT into the broker, under "${TIMED[@]}"),
# T_count I (how many messages of run I the broker holds) and T_teardown,
# plus its name in KNOWN_TARGETS.
#
# Environment (defaults in brackets):
#   BENCH_TXNS [100] BENCH_TXN_ROWS [1000] BENCH_BIG_ROWS [50000] BENCH_UPDATE_ROWS [50000]
#   BENCH_UPDATE_BATCH [1000] BENCH_REPEATS [3] BENCH_TIMEOUT [900] s per run
#   BENCH_RESULTS [bench/results] BENCH_KEEP [0] BENCH_BUILD_DIR [${TMPDIR:-/tmp}/crwatch-bench-build]
#   CRWATCH: the binary to use
#
# Exit status: 0 the benchmark ran and validated (whatever the figures); 1 otherwise; 2 usage.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init queues

TXNS="${BENCH_TXNS:-100}"
TXN_ROWS="${BENCH_TXN_ROWS:-1000}"
BIG_ROWS="${BENCH_BIG_ROWS:-50000}"
UPDATE_ROWS="${BENCH_UPDATE_ROWS:-50000}"
UPDATE_BATCH="${BENCH_UPDATE_BATCH:-1000}"
REPEATS="${BENCH_REPEATS:-3}"
TIMEOUT="${BENCH_TIMEOUT:-900}"
[[ "$REPEATS" =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_REPEATS must be >= 1" >&2; exit 2; }

KNOWN_TARGETS=(rabbitmq nats)
TARGETS=("$@")
((${#TARGETS[@]} > 0)) || TARGETS=("${KNOWN_TARGETS[@]}")
for t in "${TARGETS[@]}"; do
  [[ " ${KNOWN_TARGETS[*]} " == *" $t "* ]] || { echo "bench/queues.sh: unknown target '$t' (${KNOWN_TARGETS[*]})" >&2; exit 2; }
done

DB=bench
TABLE=bench_t
PUB=bench_pub
SRC_SLOT=bench_src

bench_need_time
bench_need perl bc "$PG_BIN/psql" "$PG_BIN/pg_recvlogical"
bench_workdir crwatch-qbench
SETUP_DONE=()
# shellcheck disable=SC2317  # invoked by bench_cleanup
bench_on_exit() {
  local t
  for t in ${SETUP_DONE[@]+"${SETUP_DONE[@]}"}; do "${t}_teardown" >/dev/null 2>&1 || true; done
}
bench_build crwatch
TIMED=(timeout --kill-after=10 "$TIMEOUT" /usr/bin/time -f '%M' -o "$WORK/rss")

# crwatch's settings every target shares: the slot copy, the table, --endpos.
crw_args() { # SLOT
  echo stream -d "$CONNINFO" --endpos "$ENDPOS" -X "slot.name=$1" -X "publication.name=$PUB" \
    -X slot.create=false -X publication.create=false -X "tables=public.$TABLE" -X log.level=warn \
    -X "deadletter.file=$WORK/deadletter.jsonl"
}

# ---------------------------------------------------------------- target: rabbitmq
rabbitmq_setup() {
  bench_need rabbitmqadmin
  log "starting a throwaway RabbitMQ node in $WORK/rabbitmq"
  "$ROOT/scripts/rabbitmq" start "$WORK/rabbitmq" --management --owner $$ >"$WORK/rabbitmq.start.log" 2>&1 ||
    { cat "$WORK/rabbitmq.start.log" >&2; die "scripts/rabbitmq could not start a node"; }
  # shellcheck disable=SC1091
  source "$WORK/rabbitmq/env"
  RMQ_PW_FILE="$WORK/rabbitmq.pw"
  (umask 077 && printf '%s\n' "$RABBITMQ_PASSWORD" >"$RMQ_PW_FILE")
  RMQ_URL="amqp://crwatch@127.0.0.1:$RABBITMQ_PORT/"
  RMQADMIN=(rabbitmqadmin -H 127.0.0.1 -P "$RABBITMQ_MGMT_PORT" -u crwatch -p "$RABBITMQ_PASSWORD")
  for _ in $(seq 1 100); do "${RMQADMIN[@]}" list vhosts >/dev/null 2>&1 && break; sleep 0.2; done
  RMQ_VERSION="$("$ROOT/scripts/rabbitmq" ctl "$WORK/rabbitmq" eval 'rabbit_misc:version().' 2>/dev/null | tr -d '"' || echo '?')"
}
rabbitmq_run() { # I SLOT
  local x="bench.$1" extra=() kv
  "${RMQADMIN[@]}" declare exchange name="$x" type=topic durable=true >/dev/null
  "${RMQADMIN[@]}" declare queue name="$x" durable=true arguments='{"x-queue-mode":"lazy"}' >/dev/null
  "${RMQADMIN[@]}" declare binding source="$x" destination="$x" routing_key='#' >/dev/null
  for kv in ${BENCH_RMQ_OPTS:-}; do extra+=(-X "$kv"); done
  # shellcheck disable=SC2046  # crw_args: words by design
  "${TIMED[@]}" "$CRW" $(crw_args "$2") -X sink=rabbitmq -X "rabbitmq.url=$RMQ_URL" \
    -X "rabbitmq.password.file=$RMQ_PW_FILE" -X "rabbitmq.exchange=$x" ${extra[@]+"${extra[@]}"}
}
rabbitmq_count() { # I
  local x="bench.$1" n
  n=$("$ROOT/scripts/rabbitmq" ctl "$WORK/rabbitmq" list_queues name messages 2>/dev/null |
    awk -v q="$x" '$1 == q {print $2}')
  "${RMQADMIN[@]}" delete queue name="$x" >/dev/null 2>&1 || true
  "${RMQADMIN[@]}" delete exchange name="$x" >/dev/null 2>&1 || true
  echo "${n:-0}"
}
rabbitmq_teardown() { "$ROOT/scripts/rabbitmq" stop "$WORK/rabbitmq"; }
rabbitmq_describe() { echo "RabbitMQ ${RMQ_VERSION:-?} (a throwaway node, durable lazy queue, persistent messages, publisher confirms)"; }

# ---------------------------------------------------------------- target: nats
nats_setup() {
  bench_need curl python3
  NATS_MON="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  log "starting a throwaway nats-server -js in $WORK/nats"
  "$ROOT/scripts/nats" start "$WORK/nats" -m "$NATS_MON" >"$WORK/nats.start.log" 2>&1 ||
    { cat "$WORK/nats.start.log" "$WORK/nats/server.log" >&2 2>/dev/null; die "scripts/nats could not start a server"; }
  # shellcheck disable=SC1091
  NATS_URL="$(source "$WORK/nats/env" && echo "$NATS_URL")"
  NATS_VERSION="$("$(command -v nats-server || echo /usr/sbin/nats-server)" --version 2>/dev/null || echo '?')"
}
nats_run() { # I SLOT
  local extra=() kv
  for kv in ${BENCH_NATS_OPTS:-}; do extra+=(-X "$kv"); done
  # shellcheck disable=SC2046  # crw_args: words by design
  "${TIMED[@]}" "$CRW" $(crw_args "$2") -X sink=nats -X "nats.url=$NATS_URL" -X "nats.stream=BENCH_$1" \
    -X "nats.subject.template=bench.$1.{table}" ${extra[@]+"${extra[@]}"}
}
nats_count() { # I
  curl -fsS "http://127.0.0.1:$NATS_MON/jsz?streams=true" | python3 -c '
import json, sys
for acc in json.load(sys.stdin).get("account_details", []):
    for st in acc.get("stream_detail", []):
        if st["name"] == sys.argv[1]:
            print(st["state"]["messages"]); sys.exit(0)
print(0)' "BENCH_$1"
}
nats_teardown() { "$ROOT/scripts/nats" stop "$WORK/nats"; }
nats_describe() { echo "nats-server ${NATS_VERSION#nats-server: } -js (a throwaway server, JetStream file storage, a stream per run, Nats-Msg-Id deduplication, every publish acknowledged)"; }

# ---------------------------------------------------------------- server and workload
bench_start_pg
export PGDATABASE=$DB
CONNINFO="dbname=$DB"
bench_mixed_table
PG_VERSION="$(qb "SHOW server_version")"
bench_mixed_workload "$WORK/workload.sql"
log "workload: $TXNS x $TXN_ROWS-row inserts, 1 x $BIG_ROWS-row insert, $UPDATE_ROWS rows updated ($TOTAL_ROWS row changes)"
"$PG_BIN/psql" -X -q -d "$DB" -f "$WORK/workload.sql" >/dev/null
ENDPOS="$(qb "SELECT pg_current_wal_lsn()")"
START_LSN="$(qb "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '$SRC_SLOT'")"
WAL_MIB=$(( $(qb "SELECT pg_wal_lsn_diff('$ENDPOS', '$START_LSN')::bigint") / 1048576 ))
log "WAL $START_LSN..$ENDPOS ($WAL_MIB MiB)"

for t in "${TARGETS[@]}"; do
  "${t}_setup"
  SETUP_DONE+=("$t")
done

# ---------------------------------------------------------------- throughput
FAILED=0
RAW="$WORK/raw.tsv"
: >"$RAW"
run_one() { # CONTENDER ITER
  local c="$1" i="$2" slot rc=0 t0 t1 secs rss n="-"
  slot="bench_${c//[^a-z0-9]/_}_$i"
  copy_slot "$slot"
  : >"$WORK/rss"
  t0=$(date +%s.%N)
  if [[ "$c" == recvlogical ]]; then
    "${TIMED[@]}" "$PG_BIN/pg_recvlogical" -d "$CONNINFO" --slot "$slot" --start --no-loop -o proto_version=2 \
      -o streaming=on -o "publication_names=$PUB" --endpos "$ENDPOS" -f /dev/null 2>"$WORK/$slot.err" || rc=$?
  else
    "${c}_run" "$i" "$slot" 2>"$WORK/$slot.err" || rc=$?
  fi
  t1=$(date +%s.%N)
  secs=$(echo "$t1 - $t0" | bc -l)
  rss=$(tail -n 1 "$WORK/rss" 2>/dev/null || echo 0)
  [[ "$rss" =~ ^[0-9]+$ ]] || rss=0
  [[ "$c" != recvlogical ]] && n=$("${c}_count" "$i")
  drop_slot "$slot"
  if ((rc != 0)); then
    log "$c run $i FAILED (exit $rc)"; tail -n 20 "$WORK/$slot.err" >&2; FAILED=1
  elif [[ "$n" != "-" && "$n" != "$TOTAL_ROWS" ]]; then
    log "$c run $i FAILED: the broker holds $n messages, want $TOTAL_ROWS"; FAILED=1
  fi
  printf '%s\t%s\t%.3f\t%s\t%s\n' "$c" "$i" "$secs" "$rss" "$n" >>"$RAW"
  log "$(printf '%-12s run %d: %7.2f s  %9.0f rows/s  peak RSS %6.1f MiB  messages %s' "$c" "$i" "$secs" \
    "$(echo "$TOTAL_ROWS / $secs" | bc -l)" "$(echo "$rss / 1024" | bc -l)" "$n")"
}

CONTENDERS=(recvlogical "${TARGETS[@]}")
log "timed runs: ${CONTENDERS[*]}, $REPEATS each, interleaved, each on a fresh slot copy"
for ((i = 1; i <= REPEATS; i++)); do
  for c in "${CONTENDERS[@]}"; do run_one "$c" "$i"; done
done
declare -A SECS RSS
for c in "${CONTENDERS[@]}"; do
  SECS[$c]=$(awk -F'\t' -v c="$c" '$1 == c {print $3}' "$RAW" | median)
  RSS[$c]=$(awk -F'\t' -v c="$c" '$1 == c {print $4}' "$RAW" | median)
done

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/queues-$STAMP.txt"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
GIT_DIRTY="$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo dirty || echo clean)"
{
  echo
  echo "crwatch message-queue benchmark — $STAMP — $CRW_VERSION (git $GIT_REV, $GIT_DIRTY), PostgreSQL $PG_VERSION, $(nproc) cores"
  echo "workload: $TOTAL_ROWS row changes ($TXNS x $TXN_ROWS-row insert txns, 1 x $BIG_ROWS-row insert txn, $UPDATE_ROWS updated in $UPDATE_BATCH-row txns), $WAL_MIB MiB WAL; medians of $REPEATS"
  for t in "${TARGETS[@]}"; do echo "$t: $("${t}_describe")"; done
  ((FAILED)) && echo "*** A RUN FAILED OR DID NOT VALIDATE: see the log above ***"
  printf '%-14s %10s %12s %12s %18s\n' contender seconds rows/s "peak RSS MiB" "/ pg_recvlogical"
  for c in "${CONTENDERS[@]}"; do
    printf '%-14s %10.2f %12.0f %12.1f %18.2f\n' "$c" "${SECS[$c]}" "$(echo "$TOTAL_ROWS / ${SECS[$c]}" | bc -l)" \
      "$(echo "${RSS[$c]} / 1024" | bc -l)" "$(echo "${SECS[recvlogical]} / ${SECS[$c]}" | bc -l)"
  done
} | tee "$OUT"
log "results written to $OUT"
exit "$FAILED"
