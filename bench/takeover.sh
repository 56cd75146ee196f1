#!/usr/bin/env bash
# bench/takeover.sh — how long a standby crwatch takes to take over a slot after
# the active one is killed (kill -9), and whether a row goes missing.  See
# bench/README.md for how to read the output.
#
#   bench/takeover.sh                        # 10 rounds at 100 rows/s, about 2.5 minutes
#   BENCH_ROUNDS=3 bench/takeover.sh         # quicker
#   CRWATCH=/path/to/crwatch bench/takeover.sh   # no build
#
# What it does, in one run:
#   1. starts a throwaway PostgreSQL (scripts/pg) in a temp dir, removed on exit;
#      applies sql/crwatch.sql (crwatch.offsets, so each instance stores what it
#      confirmed, as in a real deployment; BENCH_OFFSETS=0 leaves it out);
#   2. builds crwatch (Release) unless CRWATCH is given;
#   3. creates public.tk (bigint identity id) and starts instance 1 (slot.name=tk,
#      tables=public.tk, sink=stdout into a file of its own, http.listen on a free
#      port); once it streams (it creates the publication and the slot), instance 2
#      with the same settings, which must say "standing by";
#   4. starts a writer: pgbench -R BENCH_RATE, one single-row INSERT per transaction;
#   5. BENCH_ROUNDS rounds: the active instance is the one whose /readyz is 200 (the
#      other must answer 503); it gets kill -9; the takeover time is from just
#      before the kill to the timestamp of the survivor's log line "slot tk: this
#      instance is the active one now" (also: to the first 200 of its /readyz,
#      polled every 20 ms); then the killed one is started again (a new output file)
#      and must say "standing by"; BENCH_ROUND_GAP seconds of streaming follow;
#      afterwards, "replayed" counts the ids in the survivor's output that an
#      earlier instance had already written (at-least-once: what was delivered
#      but not yet confirmed to the slot comes again);
#   6. stops the writer, waits until every row of public.tk is in the union of
#      the output files (or BENCH_DRAIN_TIMEOUT), stops both instances (SIGTERM);
#   7. counts the ids of public.tk missing from the union (at-least-once: must be
#      0; duplicates are allowed and counted), checks that no instance streamed
#      before its take-over, and writes bench/results/takeover-<stamp>.txt.
#
# Environment (defaults in brackets):
#   BENCH_ROUNDS [10]           kill/take-over rounds
#   BENCH_RATE [100]            writer rows per second (one row per transaction)
#   BENCH_ROUND_GAP [12]        seconds of streaming under the new active one before the next kill;
#                               longer than status.interval.ms (10 s), so each active instance has
#                               confirmed a position before it is killed (below it, every survivor
#                               replays everything since the slot was created)
#                               (plus a random 0-999 ms, so kills fall anywhere in the standby's
#                               one-second cycle of lock attempts)
#   BENCH_TAKEOVER_TIMEOUT [30] seconds to wait for a take-over (a round past it counts as failed)
#   BENCH_DRAIN_TIMEOUT [60]    seconds to wait, after the writer stops, for the last rows
#   BENCH_OFFSETS [1]           0: do not apply sql/crwatch.sql (no stored position)
#   BENCH_CRWATCH_OPTS          more -X settings for both instances, space separated key=value
#   BENCH_PG_OPTS               more server settings, space separated name=value
#   BENCH_RESULTS [bench/results] where the result file goes
#   BENCH_BUILD_DIR [${TMPDIR:-/tmp}/crwatch-bench-build]   Release build dir (kept)
#   BENCH_KEEP [0]              1: keep the temp dir (cluster stopped, logs and outputs kept)
#   CRWATCH                     a crwatch binary to use instead of building one
#
# Needs the PostgreSQL 15 server binaries and pgbench (scripts/deps), curl, cmake.
# Exit status: 0 every round took over and no row is missing; 1 otherwise.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init takeover

ROUNDS="${BENCH_ROUNDS:-10}"
RATE="${BENCH_RATE:-100}"
GAP="${BENCH_ROUND_GAP:-12}"
TAKEOVER_TIMEOUT="${BENCH_TAKEOVER_TIMEOUT:-30}"
DRAIN_TIMEOUT="${BENCH_DRAIN_TIMEOUT:-60}"
OFFSETS="${BENCH_OFFSETS:-1}"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_ROUNDS must be >= 1" >&2; exit 2; }
DB=bench
SLOT=tk
PUB=tk_pub

bench_need "$PG_BIN/psql" "$PG_BIN/pgbench" curl
bench_workdir crwatch-bench-takeover

# Everything this script starts, by pid; stopped on exit.
declare -A PID PORT
WRITER=""
# shellcheck disable=SC2317  # invoked by bench_cleanup
bench_on_exit() {
  local p
  if [[ -n "$WRITER" ]]; then kill -TERM "$WRITER" 2>/dev/null || true; fi
  for p in "${PID[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

bench_build crwatch

bench_start_pg
export PGDATABASE=$DB
q "CREATE DATABASE $DB"
if [[ "$OFFSETS" == 1 ]]; then psqlx -d "$DB" -f "$ROOT/sql/crwatch.sql" >/dev/null; fi
qb "CREATE TABLE public.tk (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"
PG_VERSION="$(qb "SHOW server_version")"

now_ms() { date +%s%3N; }
# The epoch ms of a crwatch log line ("2026-12-01T14:33:30.180Z crwatch INFO: ...").
line_ms() { date -u -d "${1%% *}" +%s%3N; }
http_code() { curl -s -o /dev/null -w '%{http_code}' -m 1 "http://127.0.0.1:$1$2" 2>/dev/null || true; }

read -r -a EXTRA_OPTS <<<"${BENCH_CRWATCH_OPTS:-}"
NINST=0
# start_instance: starts instance NINST+1 in the background; sets LAST to its number.
start_instance() {
  NINST=$((NINST + 1))
  local n=$NINST x opts=()
  for x in ${EXTRA_OPTS[@]+"${EXTRA_OPTS[@]}"}; do opts+=(-X "$x"); done
  (cd "$WORK" && exec "$CRW" stream -d "dbname=$DB" -X "slot.name=$SLOT" -X "publication.name=$PUB" \
    -X tables=public.tk -X sink=stdout -X http.listen=127.0.0.1:0 -X "deadletter.file=$WORK/dl.$n.jsonl" \
    ${opts[@]+"${opts[@]}"} >"$WORK/out.$n.jsonl" 2>"$WORK/err.$n.log") &
  PID[$n]=$!
  LAST=$n
  local deadline=$((SECONDS + 15)) port=""
  while [[ -z "$port" ]]; do
    port="$(sed -n 's/.*\/readyz on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$WORK/err.$n.log" 2>/dev/null | head -n 1 || true)" # (the file may not exist yet)
    [[ -n "$port" ]] && break
    kill -0 "${PID[$n]}" 2>/dev/null || { cat "$WORK/err.$n.log" >&2; die "instance $n exited at start"; }
    ((SECONDS < deadline)) || { cat "$WORK/err.$n.log" >&2; die "instance $n logged no http port"; }
    sleep 0.02
  done
  PORT[$n]=$port
}
# wait_log N TEXT SECONDS: until instance N's log has TEXT; fails after SECONDS.
wait_log() {
  local deadline=$((SECONDS + $3))
  until grep -q -- "$2" "$WORK/err.$1.log" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    kill -0 "${PID[$1]}" 2>/dev/null || return 1
    sleep 0.02
  done
}
stop_instance() { # N: SIGTERM, then kill -9 after 15 s
  local n=$1 i
  kill -TERM "${PID[$n]}" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do kill -0 "${PID[$n]}" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "${PID[$n]}" 2>/dev/null; then
    log "instance $n did not stop within 15 s of SIGTERM: kill -9"
    kill -9 "${PID[$n]}" 2>/dev/null || true
  fi
  wait "${PID[$n]}" 2>/dev/null || true
  unset "PID[$n]"
}
ids_of() { cat "$@" 2>/dev/null | grep -o '"subject":"[0-9]*"' | tr -dc '0-9\n' || true; }

# ---------------------------------------------------------------- the two instances and the writer
log "instance 1: creates the publication and the slot, and streams"
start_instance
A=$LAST
wait_log "$A" "streaming from slot" 30 || { cat "$WORK/err.$A.log" >&2; die "instance $A does not stream"; }
log "instance 2: the standby"
start_instance
B=$LAST
wait_log "$B" "standing by" 30 || { cat "$WORK/err.$B.log" >&2; die "instance $B does not stand by"; }

printf 'INSERT INTO public.tk DEFAULT VALUES;\n' >"$WORK/writer.sql"
log "writer: pgbench -R $RATE, one row per transaction"
"$PG_BIN/pgbench" -n -d "$DB" -c 1 -R "$RATE" -T 86400 -f "$WORK/writer.sql" >"$WORK/pgbench.log" 2>&1 &
WRITER=$!
sleep "$GAP.$(printf '%03d' $((RANDOM % 1000)))"

# ---------------------------------------------------------------- rounds
RAW="$WORK/rounds.tsv"
: >"$RAW"
FAILED=0
ANOMALIES=()
EARLY=0
for ((r = 1; r <= ROUNDS; r++)); do
  # Which one is active: exactly one /readyz 200 and the other 503 (waits up to 10 s for it).
  act="" sby="" deadline=$((SECONDS + 10))
  while :; do
    ca="$(http_code "${PORT[$A]}" /readyz)" cb="$(http_code "${PORT[$B]}" /readyz)"
    if [[ "$ca" == 200 && "$cb" == 503 ]]; then act=$A sby=$B; break; fi
    if [[ "$cb" == 200 && "$ca" == 503 ]]; then act=$B sby=$A; break; fi
    if ((SECONDS >= deadline)); then
      ANOMALIES+=("round $r: /readyz of instances $A and $B answered $ca and $cb, not one 200 and one 503")
      log "${ANOMALIES[-1]}"
      FAILED=1
      break 2
    fi
    sleep 0.1
  done
  lines_before=$(wc -l <"$WORK/out.$sby.jsonl")
  t_kill=$(now_ms)
  kill -9 "${PID[$act]}"
  wait "${PID[$act]}" 2>/dev/null || true
  unset "PID[$act]"
  t_log="" t_ready="" t_event=""
  deadline=$((SECONDS + TAKEOVER_TIMEOUT))
  while [[ -z "$t_log" || -z "$t_ready" || -z "$t_event" ]] && ((SECONDS < deadline)); do
    if [[ -z "$t_log" ]]; then
      line="$(grep -m 1 'this instance is the active one now' "$WORK/err.$sby.log" || true)"
      [[ -n "$line" ]] && t_log=$(line_ms "$line")
    fi
    [[ -z "$t_ready" && "$(http_code "${PORT[$sby]}" /readyz)" == 200 ]] && t_ready=$(now_ms)
    [[ -z "$t_event" ]] && (($(wc -l <"$WORK/out.$sby.jsonl") > lines_before)) && t_event=$(now_ms)
    sleep 0.02
  done
  if [[ -z "$t_log" || -z "$t_ready" ]]; then
    ANOMALIES+=("round $r: instance $sby did not take over within $TAKEOVER_TIMEOUT s of the kill of instance $act (log line: ${t_log:-none}, readyz 200: ${t_ready:-never})")
    log "${ANOMALIES[-1]}"
    tail -n 20 "$WORK/err.$sby.log" >&2
    FAILED=1
    printf '%d\t%d\t%d\t%s\t%s\t%s\t-\n' "$r" "$act" "$sby" - - - >>"$RAW"
    break
  fi
  ms_log=$((t_log - t_kill)) ms_ready=$((t_ready - t_kill))
  line="$(grep -m 1 'streaming from slot' "$WORK/err.$sby.log" || true)"
  if [[ -n "$line" ]] && (($(line_ms "$line") < t_kill)); then
    EARLY=$((EARLY + 1))
    ANOMALIES+=("round $r: instance $sby streamed before instance $act was killed: $line")
  fi
  ms_event=$([[ -n "$t_event" ]] && echo $((t_event - t_kill)) || echo -)
  ((ms_log > 10000)) && ANOMALIES+=("round $r: take-over took $ms_log ms (over 10 s)")
  # The killed one comes back as the new standby.
  t_start=$(now_ms)
  start_instance
  if ! wait_log "$LAST" "standing by" 30; then
    ANOMALIES+=("round $r: the restarted instance $LAST did not stand by within 30 s")
    log "${ANOMALIES[-1]}"
    tail -n 20 "$WORK/err.$LAST.log" >&2
    FAILED=1
    break
  fi
  ms_standby=$(($(line_ms "$(grep -m 1 'standing by' "$WORK/err.$LAST.log")") - t_start))
  printf '%d\t%d\t%d\t%d\t%d\t%s\t%d\n' "$r" "$act" "$sby" "$ms_log" "$ms_ready" "$ms_event" "$ms_standby" >>"$RAW"
  log "$(printf 'round %2d: killed %d; %d active after %5d ms (log), /readyz 200 after %5d ms, first event after %s ms; %d standing by' \
    "$r" "$act" "$sby" "$ms_log" "$ms_ready" "$ms_event" "$LAST")"
  A=$sby B=$LAST
  # GAP seconds and a random 0-999 ms, so that the kill falls anywhere in the
  # standby's one-second cycle of lock attempts.
  sleep "$GAP.$(printf '%03d' $((RANDOM % 1000)))"
done

# ---------------------------------------------------------------- drain and count
log "stopping the writer"
kill -TERM "$WRITER" 2>/dev/null || true # (a background job ignores SIGINT)
wait "$WRITER" 2>/dev/null || true
WRITER=""
qb "SELECT id FROM public.tk ORDER BY id" | sort -u >"$WORK/expected.txt"
ROWS=$(wc -l <"$WORK/expected.txt")
log "$ROWS rows written; waiting up to $DRAIN_TIMEOUT s for all of them in the outputs"
deadline=$((SECONDS + DRAIN_TIMEOUT))
while :; do
  ids_of "$WORK"/out.*.jsonl | sort -u >"$WORK/seen.txt"
  MISSING=$(comm -23 "$WORK/expected.txt" "$WORK/seen.txt" | wc -l)
  ((MISSING == 0 || SECONDS >= deadline)) && break
  sleep 1
done
SUM_ACTIVE=0
for n in "${!PID[@]}"; do
  a=$(curl -s -m 2 "http://127.0.0.1:${PORT[$n]}/metrics" | awk '$1 == "crwatch_active" {print $2}' || true)
  SUM_ACTIVE=$((SUM_ACTIVE + ${a:-0}))
done
for n in "${!PID[@]}"; do stop_instance "$n"; done
ids_of "$WORK"/out.*.jsonl | sort -u >"$WORK/seen.txt"
MISSING=$(comm -23 "$WORK/expected.txt" "$WORK/seen.txt" | wc -l)
EVENTS=$(ids_of "$WORK"/out.*.jsonl | wc -l)
DISTINCT=$(wc -l <"$WORK/seen.txt")
EXTRA_IDS=$(comm -13 "$WORK/expected.txt" "$WORK/seen.txt" | wc -l)
DUPLICATES=$((EVENTS - DISTINCT))
((MISSING == 0)) || { FAILED=1; ANOMALIES+=("$MISSING of $ROWS rows missing from every output (first: $(comm -23 "$WORK/expected.txt" "$WORK/seen.txt" | head -n 5 | tr '\n' ' '))"); }
((SUM_ACTIVE == 1)) || ANOMALIES+=("sum of crwatch_active over the two last instances is $SUM_ACTIVE, not 1")

# No instance streamed before it was the active one: a survivor's first
# "streaming from slot" line is not older than the kill of its round (checked
# in the rounds), and the last standby has none.
if grep -q 'streaming from slot' "$WORK/err.$B.log"; then
  EARLY=$((EARLY + 1))
  ANOMALIES+=("the last standby, instance $B, streamed: $(grep -m 1 'streaming from slot' "$WORK/err.$B.log")")
fi
((EARLY == 0)) || FAILED=1
# Warnings and errors of every instance, counted by message (LSNs and numbers blurred).
cat "$WORK"/err.*.log | grep -E ' (WARN|ERROR):' | sed -E 's/^[^ ]+ //; s/[0-9A-F]+\/[0-9A-F]+/<lsn>/g; s/[0-9]+/N/g' |
  sort | uniq -c | sort -rn >"$WORK/warnings.txt" || true

# Replayed per round: ids of the survivor's output that earlier outputs hold.
: >"$WORK/earlier.txt"
ids_of "$WORK/out.1.jsonl" | sort -u >"$WORK/earlier.txt"
while IFS=$'\t' read -r r k a rest; do
  ids_of "$WORK/out.$a.jsonl" | sort -u >"$WORK/this.txt"
  printf '%s\t%s\t%s\t%s\t%d\n' "$r" "$k" "$a" "$rest" "$(comm -12 "$WORK/earlier.txt" "$WORK/this.txt" | wc -l)"
  sort -u -m "$WORK/earlier.txt" "$WORK/this.txt" -o "$WORK/earlier.txt"
done <"$RAW" >"$RAW.2"
mv "$RAW.2" "$RAW"

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/takeover-$STAMP.txt"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
GIT_DIRTY="$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo dirty || echo clean)"
DONE=$(wc -l <"$RAW")
stat_of() { # COLUMN -> "min median max" of the finished rounds
  awk -F'\t' -v c="$1" '$c ~ /^[0-9]+$/ {print $c}' "$RAW" | sort -n | awk '{a[NR]=$1} END {
    if (!NR) {print "- - -"; exit}
    m = NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%d %g %d\n", a[1], m, a[NR]}'
}
read -r LOG_MIN LOG_MED LOG_MAX < <(stat_of 4)
read -r RDY_MIN RDY_MED RDY_MAX < <(stat_of 5)
read -r EV_MIN EV_MED EV_MAX < <(stat_of 6)
read -r RP_MIN RP_MED RP_MAX < <(stat_of 8)
{
  echo
  echo "crwatch take-over benchmark — $STAMP — $CRW_VERSION (git $GIT_REV, $GIT_DIRTY, binary sha256 $CRW_SHA), PostgreSQL $PG_VERSION, $(nproc) cores"
  echo "writer: $RATE rows/s (pgbench -R, one row per transaction); $DONE of $ROUNDS rounds; stored position: $( [[ "$OFFSETS" == 1 ]] && echo crwatch.offsets || echo none)"
  ((FAILED)) && echo "*** A ROUND FAILED OR ROWS ARE MISSING (see below and the log above) ***"
  echo
  printf '%5s %7s %7s %12s %12s %13s %12s %9s\n' round killed active "takeover ms" "readyz ms" "1st event ms" "standby ms" replayed
  while IFS=$'\t' read -r r k a ml mr me ms rp; do
    printf '%5s %7s %7s %12s %12s %13s %12s %9s\n' "$r" "$k" "$a" "$ml" "$mr" "$me" "$ms" "$rp"
  done <"$RAW"
  echo
  echo "take-over (kill -9 -> 'this instance is the active one now'): min $LOG_MIN  median $LOG_MED  max $LOG_MAX ms"
  echo "take-over (kill -9 -> /readyz 200):                           min $RDY_MIN  median $RDY_MED  max $RDY_MAX ms"
  echo "kill -9 -> first event in the survivor's output:              min $EV_MIN  median $EV_MED  max $EV_MAX ms"
  echo "rows replayed by the survivor per take-over:                min $RP_MIN  median $RP_MED  max $RP_MAX"
  echo "rows: $ROWS written, $MISSING missing, $DUPLICATES duplicate events ($EVENTS events, $DISTINCT distinct ids, $EXTRA_IDS ids not in the table)"
  echo "instances that streamed before taking over: $EARLY; sum(crwatch_active) at the end: $SUM_ACTIVE"
  if [[ -s "$WORK/warnings.txt" ]]; then
    echo "warnings and errors logged by the instances (count, message):"
    sed 's/^/  /' "$WORK/warnings.txt" | head -n 20
  fi
  for x in ${ANOMALIES[@]+"${ANOMALIES[@]}"}; do echo "ANOMALY: $x"; done
} | tee "$WORK/table.txt"
{
  echo "# crwatch bench/takeover.sh results; key=value, then raw rounds"
  echo "stamp=$STAMP"
  echo "crwatch_version=$CRW_VERSION"
  echo "crwatch_binary=$CRW"
  echo "crwatch_sha256_16=$CRW_SHA"
  echo "git_rev=$GIT_REV"
  echo "git_tree=$GIT_DIRTY"
  echo "pg_version=$PG_VERSION"
  echo "cores=$(nproc)"
  echo "rounds=$ROUNDS"
  echo "rounds_done=$DONE"
  echo "writer_rows_per_second=$RATE"
  echo "round_gap_seconds=$GAP"
  echo "stored_position=$OFFSETS"
  echo "crwatch_opts=${BENCH_CRWATCH_OPTS:-}"
  echo "takeover_log_ms_min=$LOG_MIN"
  echo "takeover_log_ms_median=$LOG_MED"
  echo "takeover_log_ms_max=$LOG_MAX"
  echo "takeover_readyz_ms_min=$RDY_MIN"
  echo "takeover_readyz_ms_median=$RDY_MED"
  echo "takeover_readyz_ms_max=$RDY_MAX"
  echo "first_event_ms_median=$EV_MED"
  echo "replayed_rows_min=$RP_MIN"
  echo "replayed_rows_median=$RP_MED"
  echo "replayed_rows_max=$RP_MAX"
  echo "rows_written=$ROWS"
  echo "rows_missing=$MISSING"
  echo "events=$EVENTS"
  echo "distinct_ids=$DISTINCT"
  echo "duplicate_events=$DUPLICATES"
  echo "ids_not_in_table=$EXTRA_IDS"
  echo "streamed_before_takeover=$EARLY"
  echo "sum_crwatch_active_end=$SUM_ACTIVE"
  echo "failed=$FAILED"
  for x in ${ANOMALIES[@]+"${ANOMALIES[@]}"}; do echo "anomaly=$x"; done
  sed 's/^/warning\t/' "$WORK/warnings.txt"
  echo "# raw: round killed_instance new_active takeover_log_ms takeover_readyz_ms first_event_ms restarted_to_standing_by_ms replayed_rows"
  sed 's/^/raw\t/' "$RAW"
} >"$OUT"
log "results written to $OUT"
exit "$FAILED"
