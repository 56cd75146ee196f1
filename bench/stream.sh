#!/usr/bin/env bash
# bench/stream.sh — throughput of `crwatch stream` against pg_recvlogical on
# the same WAL.  See bench/README.md for how to read the output.
#
#   bench/stream.sh                      # defaults: ~400k row changes, 3 repeats
#   BENCH_TXNS=50 BENCH_BIG_ROWS=20000 BENCH_UPDATE_ROWS=20000 bench/stream.sh   # smaller
#   CRWATCH=/path/to/crwatch bench/stream.sh                                       # no build
#
# What it does, in one run:
#   1. starts a throwaway PostgreSQL (scripts/pg) in a temp dir, removed on exit;
#   2. builds crwatch (Release) unless CRWATCH is given;
#   3. creates a mixed-type table + publication, then ONE pgoutput slot
#      (bench_src) BEFORE the workload;
#   4. runs the workload (many small insert txns, one big insert txn, batched
#      updates) and records endpos = pg_current_wal_lsn() after it;
#   5. validation pass: a copy of bench_src read by crwatch into a counter; the
#      event count, the per-verb counts and the distinct event ids must match;
#   6. timed passes, interleaved (recvlogical, crwatch, recvlogical, ...), each
#      on a fresh pg_copy_logical_replication_slot() of bench_src (which is never
#      consumed, so every copy starts at the same WAL), to --endpos;
#   7. prints a table of medians and writes bench/results/stream-<stamp>.txt.
#
# Environment (defaults in brackets):
#   BENCH_TXNS [200]          small insert transactions
#   BENCH_TXN_ROWS [1000]     rows per small insert transaction
#   BENCH_BIG_ROWS [100000]   rows of the one big insert transaction (0: none)
#   BENCH_UPDATE_ROWS [100000] rows updated (the first N ids; capped at the rows inserted)
#   BENCH_UPDATE_BATCH [1000] rows per update transaction
#   BENCH_REPEATS [3]         timed runs per contender (median reported)
#   BENCH_EXTRA [0]           1: also time pg_recvlogical proto 1 (no streaming) and
#                             pg_recvlogical + wal2json (format 2) to /dev/null (if wal2json is installed)
#   BENCH_HTTP [0]            1: also time "crwatch+http", the crwatch contender with
#                             -X http.listen=127.0.0.1:0 (the /metrics endpoint on; the cost of
#                             the metrics on the hot path), and report its ratio to crwatch; an
#                             untimed extra pass scrapes /metrics while it streams
#   BENCH_DECODING_WORK_MEM   set logical_decoding_work_mem on the server (e.g. 256MB); default: server default
#   BENCH_PG_OPTS             more server settings, space separated name=value
#   BENCH_TIMEOUT [900]       seconds before one contender run is killed (counts as a failure)
#   BENCH_RESULTS [bench/results] where the machine-readable result file goes
#   BENCH_BUILD_DIR [${TMPDIR:-/tmp}/crwatch-bench-build]   Release build dir (kept for incremental builds)
#   BENCH_KEEP [0]            1: keep the temp dir (cluster stopped, logs kept)
#   CRWATCH                   a crwatch binary to use instead of building one
#
# Exit status: 0 the benchmark ran and validated (whatever the figures);
# 1 a contender failed, timed out or crwatch's output did not validate.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init bench

TXNS="${BENCH_TXNS:-200}"
TXN_ROWS="${BENCH_TXN_ROWS:-1000}"
BIG_ROWS="${BENCH_BIG_ROWS:-100000}"
UPDATE_ROWS="${BENCH_UPDATE_ROWS:-100000}"
UPDATE_BATCH="${BENCH_UPDATE_BATCH:-1000}"
REPEATS="${BENCH_REPEATS:-3}"
[[ "$REPEATS" =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_REPEATS must be >= 1" >&2; exit 2; }
EXTRA="${BENCH_EXTRA:-0}"
HTTP="${BENCH_HTTP:-0}"
TIMEOUT="${BENCH_TIMEOUT:-900}"

PROFILE="${BENCH_PROFILE:-}"
DB=bench
TABLE=bench_t
PUB=bench_pub
SRC_SLOT=bench_src

# ---------------------------------------------------------------- prerequisites
bench_need_time
bench_need "$PG_BIN/psql" "$PG_BIN/pg_recvlogical"
bench_workdir crwatch-bench
bench_build crwatch

# ---------------------------------------------------------------- server
bench_start_pg
export PGDATABASE=$DB
CONNINFO="dbname=$DB"

bench_mixed_table

PG_VERSION="$(qb "SHOW server_version")"
LDWM="$(qb "SHOW logical_decoding_work_mem")"

# ---------------------------------------------------------------- workload
bench_mixed_workload "$WORK/workload.sql"

log "workload: $TXNS x $TXN_ROWS-row inserts, 1 x $BIG_ROWS-row insert, $UPDATE_ROWS rows updated in $UPDATE_BATCH-row txns ($TOTAL_ROWS row changes)"
w0=$(date +%s.%N)
"$PG_BIN/psql" -X -q -d "$DB" -f "$WORK/workload.sql" >/dev/null
w1=$(date +%s.%N)
ENDPOS="$(qb "SELECT pg_current_wal_lsn()")"
START_LSN="$(qb "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '$SRC_SLOT'")"
WAL_BYTES="$(qb "SELECT pg_wal_lsn_diff('$ENDPOS', '$START_LSN')::bigint")"
PAYLOAD_BYTES="$(qb "SELECT round(avg(length(payload::text))) FROM public.$TABLE")"
[[ "$(qb "SELECT count(*) FROM public.$TABLE")" == "$INSERT_ROWS" ]] || die "the table does not hold $INSERT_ROWS rows"
log "workload took $(printf '%.1f' "$(echo "$w1 - $w0" | bc -l)") s; WAL $START_LSN..$ENDPOS ($((WAL_BYTES / 1048576)) MiB), payload ~$PAYLOAD_BYTES bytes"

# ---------------------------------------------------------------- helpers
# cmd_for CONTENDER SLOT -> the command line in array CMD
cmd_for() {
  case "$1" in
    recvlogical) bench_recvlogical "$2" "$ENDPOS" ;;
    recvlogical-v1) CMD=("$PG_BIN/pg_recvlogical" -d "$CONNINFO" --slot "$2" --start --no-loop
                      -o proto_version=1 -o "publication_names=$PUB" --endpos "$ENDPOS" -f /dev/null) ;;
    wal2json) CMD=("$PG_BIN/pg_recvlogical" -d "$CONNINFO" --slot "$2" --start --no-loop
                      -o format-version=2 -o include-lsn=true -o include-timestamp=true
                      --endpos "$ENDPOS" -f /dev/null) ;;
    crwatch) CMD=("$CRW" stream -d "$CONNINFO" --endpos "$ENDPOS" -X "slot.name=$2" -X "publication.name=$PUB"
                      -X slot.create=false -X publication.create=false -X "tables=public.$TABLE"
                      -X log.level=warn) ;;
    crwatch+http) cmd_for crwatch "$2"; CMD+=(-X http.listen=127.0.0.1:0) ;;
    *) die "unknown contender $1" ;;
  esac
}
plugin_for() { if [[ "$1" == wal2json ]]; then echo wal2json; fi; }

FAILED=0
declare -A SECS RSS CPU
RAW="$WORK/raw.tsv"
: >"$RAW"

# run_one CONTENDER ITER: one timed run on a fresh slot copy.
run_one() {
  local c="$1" i="$2" slot="bench_${1//[^a-z0-9_]/_}_$2" rc=0 t0 t1 secs rss cpu cpu_u cpu_s behind stats
  copy_slot "$slot" "$(plugin_for "$c")"
  cmd_for "$c" "$slot"
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$TIMEOUT" /usr/bin/time -f '%M %U %S' -o "$WORK/rss" "${CMD[@]}" >/dev/null 2>"$WORK/$slot.err" || rc=$?
  t1=$(date +%s.%N)
  secs=$(echo "$t1 - $t0" | bc -l)
  read -r rss cpu_u cpu_s < <(tail -n 1 "$WORK/rss" 2>/dev/null || true) || true
  [[ "${rss:-}" =~ ^[0-9]+$ ]] || rss=0
  cpu=$(echo "${cpu_u:-0} + ${cpu_s:-0}" | bc -l)
  behind=$(bench_slot_behind "$slot" "$ENDPOS")
  stats="$(bench_slot_stats "$slot")"
  drop_slot "$slot"
  printf '%s\t%s\t%.3f\t%s\t%s\t%s\t%.2f\t%s\n' "$c" "$i" "$secs" "$rss" "$rc" "$behind" "$cpu" "${stats// /$'\t'}" >>"$RAW"
  if ((rc != 0)); then
    log "$c run $i FAILED (exit $rc)"; sed 's/^/    /' "$WORK/$slot.err" | tail -n 20 >&2
    FAILED=1
  elif [[ ! "$behind" =~ ^-?[0-9]+$ ]] || ((behind > 0)); then
    # Exit 0 without confirming up to endpos: it stopped early.
    log "$c run $i FAILED: exit 0 but the slot's confirmed_flush_lsn is ${behind:-?} bytes before endpos"
    FAILED=1
  fi
  log "$(printf '%-15s run %d: %7.2f s  client CPU %6.2f s  peak RSS %6.1f MiB  exit %d  confirmed_flush %s endpos' \
    "$c" "$i" "$secs" "$cpu" "$(echo "$rss / 1024" | bc -l)" "$rc" "$( ((${behind:-1} <= 0)) && echo at/past || echo "${behind:-?} B before")")"
}

verdict() { if ((FAILED)); then echo "n/a (invalid run)"; elif (($1)); then echo MET; else echo MISSED; fi; }

# ---------------------------------------------------------------- validation pass
# Also warms the page cache for the timed runs.
log "validation pass: crwatch into a counter"
copy_slot bench_validate
cmd_for crwatch bench_validate
vrc=0
timeout --kill-after=10 "$TIMEOUT" "${CMD[@]}" >"$WORK/validate.jsonl" 2>"$WORK/validate.err" || vrc=$?
VSTATS="$(bench_slot_stats bench_validate)"
drop_slot bench_validate
V_LINES=$(wc -l <"$WORK/validate.jsonl")
V_ADDED=$(grep -c '"data":{"type":"ADDED"' "$WORK/validate.jsonl" || true)
V_MODIFIED=$(grep -c '"data":{"type":"MODIFIED"' "$WORK/validate.jsonl" || true)
V_IDS=$({ grep -o '^{[^{]*"id":"[^"]*"' "$WORK/validate.jsonl" || true; } | sed 's/.*"id":"//' | sort -u | wc -l)
V_BYTES=$(stat -c %s "$WORK/validate.jsonl")
VALID=ok
if ((vrc != 0)); then
  VALID="FAIL: crwatch exited $vrc"
  sed 's/^/    /' "$WORK/validate.err" | tail -n 20 >&2
elif ((V_LINES != TOTAL_ROWS || V_ADDED != INSERT_ROWS || V_MODIFIED != UPDATE_ROWS || V_IDS != TOTAL_ROWS)); then
  VALID="FAIL: $V_LINES events ($V_ADDED added, $V_MODIFIED modified, $V_IDS distinct ids), want $TOTAL_ROWS ($INSERT_ROWS added, $UPDATE_ROWS modified)"
fi
log "validation: $V_LINES events, $V_ADDED added, $V_MODIFIED modified, $V_IDS distinct ids, $((V_BYTES / 1048576)) MiB of JSON: $VALID"
[[ "$VALID" == ok ]] || FAILED=1
read -r v_spill_txns v_spill_bytes v_stream_txns v_stream_bytes v_total_txns v_total_bytes <<<"$VSTATS"
if ((v_stream_txns > 0)); then
  BIG_TXN="streamed in progress (server stream_txns=$v_stream_txns, $((v_stream_bytes / 1048576)) MiB streamed)"
elif ((v_spill_txns > 0)); then
  BIG_TXN="spilled to disk by the server, not streamed (spill_txns=$v_spill_txns)"
else
  BIG_TXN="not streamed: decoded in memory, sent at commit (stream_txns=0, spill_txns=0)"
fi

# ---------------------------------------------------------------- timed runs
CONTENDERS=(recvlogical crwatch)
[[ "$HTTP" == 1 ]] && CONTENDERS+=(crwatch+http)
if [[ "$EXTRA" == 1 ]]; then
  CONTENDERS+=(recvlogical-v1)
  if [[ -n "$(qb "SELECT 1 FROM pg_available_extensions WHERE name = 'wal2json'")" ||
        -f "$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo /nonexistent)/wal2json.so" ||
        -f /usr/lib/postgresql/15/lib/wal2json.so ]]; then
    CONTENDERS+=(wal2json)
  else
    log "wal2json is not installed: skipping that contender (apt-get install postgresql-15-wal2json)"
  fi
fi
log "timed runs: ${CONTENDERS[*]}, $REPEATS each, interleaved"
for ((i = 1; i <= REPEATS; i++)); do
  for c in "${CONTENDERS[@]}"; do run_one "$c" "$i"; done
done

# ---------------------------------------------------------------- /metrics under load (BENCH_HTTP=1)
# One more crwatch+http pass, untimed and not in the table: /metrics is scraped
# every 0.2 s while it streams, to show that the endpoint answers under load.
SCRAPES_OK=0
SCRAPES_FAILED=0
SCRAPE_EVENTS=""
if [[ "$HTTP" == 1 ]]; then
  bench_need curl
  log "scrape pass: crwatch+http (log.level=info, for the port), /metrics every 0.2 s while it streams"
  copy_slot bench_http_scrape
  cmd_for crwatch+http bench_http_scrape
  CMD+=(-X log.level=info)
  "${CMD[@]}" >/dev/null 2>"$WORK/scrape.err" &
  spid=$!
  sport=""
  while [[ -z "$sport" ]] && kill -0 "$spid" 2>/dev/null; do
    sport="$(sed -n 's/.*\/readyz on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$WORK/scrape.err" 2>/dev/null | head -n 1 || true)"
    [[ -n "$sport" ]] || sleep 0.02
  done
  while [[ -n "$sport" ]] && kill -0 "$spid" 2>/dev/null; do
    if curl -fsS -m 2 "http://127.0.0.1:$sport/metrics" >"$WORK/scrape.txt" 2>/dev/null; then
      SCRAPES_OK=$((SCRAPES_OK + 1))
      SCRAPE_EVENTS+="$(awk '/^crwatch_events_total/ {s += $NF} END {printf "%d", s}' "$WORK/scrape.txt") "
    elif kill -0 "$spid" 2>/dev/null && ! grep -q 'stopped:' "$WORK/scrape.err"; then
      SCRAPES_FAILED=$((SCRAPES_FAILED + 1)) # failed while it streamed, not while it shut down
    fi
    sleep 0.2
  done
  src=0
  wait "$spid" || src=$?
  drop_slot bench_http_scrape
  [[ -n "$sport" ]] || { log "scrape pass: no port in crwatch's log"; tail -n 20 "$WORK/scrape.err" >&2; }
  ((src == 0)) || { log "scrape pass: crwatch exited $src"; tail -n 20 "$WORK/scrape.err" >&2; }
  log "scrape pass: $SCRAPES_OK scrapes answered, $SCRAPES_FAILED failed while streaming; crwatch_events_total seen: ${SCRAPE_EVENTS:-none}"
fi

# ---------------------------------------------------------------- optional profile
# One more crwatch pass (not timed, not in the table) under a profiler.
PROFILE_OUT=""
if [[ -n "$PROFILE" ]]; then
  mkdir -p "$RESULTS_DIR"
  PROFILE_OUT="$RESULTS_DIR/stream-$STAMP-$PROFILE.txt"
  copy_slot bench_profile
  cmd_for crwatch bench_profile
  prc=0
  case "$PROFILE" in
    perf)
      command -v perf >/dev/null || die "BENCH_PROFILE=perf: perf is not installed (apt-get install linux-perf)"
      log "profile: crwatch under perf record, and this cluster's postmaster + children (the walsender) alongside"
      pm_pid="$(head -n 1 "$PGDIR/data/postmaster.pid")"
      perf record -q -e cpu-clock -F 999 -p "$pm_pid" -o "$WORK/perf-server.data" >/dev/null 2>"$WORK/perf-server.err" &
      perf_srv=$!
      sleep 1
      perf record -q -e cpu-clock -F 999 -o "$WORK/perf-crwatch.data" -- "${CMD[@]}" >/dev/null 2>"$WORK/profile.err" || prc=$?
      kill -INT "$perf_srv" 2>/dev/null || true
      wait "$perf_srv" 2>/dev/null || true
      # The same for pg_recvlogical, for scale (its own slot copy).
      copy_slot bench_profile_rl
      cmd_for recvlogical bench_profile_rl
      perf record -q -e cpu-clock -F 999 -o "$WORK/perf-recvlogical.data" -- "${CMD[@]}" >/dev/null 2>>"$WORK/profile.err" || prc=$?
      drop_slot bench_profile_rl
      top() { # DATA N SORT: flat self-time profile, headers dropped
        perf report -i "$1" --stdio --no-children --sort "$3" 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n "$2" || true
      }
      samples() { perf script -i "$1" -F comm 2>/dev/null | wc -l; }
      {
        echo "# perf cpu-clock at 999 Hz (1 sample ~ 1 ms of CPU), one crwatch pass over $TOTAL_ROWS row changes"
        echo "# samples: crwatch $(samples "$WORK/perf-crwatch.data"); server (postmaster + children, during the crwatch pass) $(samples "$WORK/perf-server.data"); pg_recvlogical (separate pass, for scale) $(samples "$WORK/perf-recvlogical.data")"
        echo "## crwatch, by object"
        top "$WORK/perf-crwatch.data" 10 dso
        echo "## pg_recvlogical, by object"
        top "$WORK/perf-recvlogical.data" 10 dso
        echo "## crwatch, by symbol (self time)"
        top "$WORK/perf-crwatch.data" 40 dso,symbol
        echo "## server, by process"
        top "$WORK/perf-server.data" 8 comm
        echo "## server, by object"
        top "$WORK/perf-server.data" 8 dso
        echo "## server, by symbol (self time)"
        top "$WORK/perf-server.data" 30 dso,symbol
      } >"$PROFILE_OUT"
      ;;
    callgrind)
      command -v valgrind >/dev/null || die "BENCH_PROFILE=callgrind: valgrind is not installed"
      log "profile: crwatch under valgrind --tool=callgrind (slow: use a smaller workload)"
      timeout "$TIMEOUT" valgrind -q --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" "${CMD[@]}" \
        >/dev/null 2>"$WORK/profile.err" || prc=$?
      {
        echo "# callgrind (instructions), one crwatch pass ($TOTAL_ROWS row changes)"
        callgrind_annotate --inclusive=no "$WORK/callgrind.out" 2>/dev/null | head -n 60 || true
        echo "## inclusive"
        callgrind_annotate --inclusive=yes "$WORK/callgrind.out" 2>/dev/null | sed -n '/Ir/,$p' | head -n 40 || true
      } >"$PROFILE_OUT"
      ;;
    *) die "BENCH_PROFILE must be perf or callgrind, not '$PROFILE'" ;;
  esac
  drop_slot bench_profile
  if ((prc != 0)); then
    log "profile run exited $prc"; tail -n 20 "$WORK/profile.err" >&2
  fi
  log "profile written to $PROFILE_OUT"
fi

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/stream-$STAMP.txt"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
GIT_DIRTY="$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo dirty || echo clean)"

for c in "${CONTENDERS[@]}"; do
  SECS[$c]=$(awk -F'\t' -v c="$c" '$1 == c {print $3}' "$RAW" | median)
  RSS[$c]=$(awk -F'\t' -v c="$c" '$1 == c {print $4}' "$RAW" | median)
  CPU[$c]=$(awk -F'\t' -v c="$c" '$1 == c {print $7}' "$RAW" | median)
done
ratio=$(echo "${SECS[recvlogical]} / ${SECS[crwatch]}" | bc -l)
[[ "$HTTP" == 1 ]] && http_ratio=$(echo "${SECS[crwatch]} / ${SECS[crwatch+http]}" | bc -l)
crw_rss_mib=$(echo "${RSS[crwatch]} / 1024" | bc -l)
ratio_ok=$(echo "$ratio >= 0.9" | bc -l)
rss_ok=$(echo "$crw_rss_mib < 32" | bc -l)
if ((FAILED)); then ratio_ok=0; rss_ok=0; fi

{
  echo
  echo "crwatch stream benchmark — $STAMP — $CRW_VERSION (git $GIT_REV, $GIT_DIRTY, binary sha256 $CRW_SHA), PostgreSQL $PG_VERSION, $(nproc) cores"
  echo "workload: $TOTAL_ROWS row changes ($TXNS x $TXN_ROWS-row insert txns, 1 x $BIG_ROWS-row insert txn, $UPDATE_ROWS updated in $UPDATE_BATCH-row txns), $((WAL_BYTES / 1048576)) MiB WAL"
  echo "logical_decoding_work_mem = $LDWM; the $BIG_ROWS-row transaction was $BIG_TXN"
  echo "validation (crwatch -> counter): $VALID"
  ((FAILED)) && echo "*** A RUN FAILED OR DID NOT VALIDATE: the figures below mean nothing (see the log above) ***"
  echo
  printf '%-15s %9s %12s %14s %14s\n' contender seconds rows/s "peak RSS MiB" "client CPU s"
  for c in "${CONTENDERS[@]}"; do
    printf '%-15s %9.2f %12.0f %14.1f %14.2f\n' "$c" "${SECS[$c]}" "$(echo "$TOTAL_ROWS / ${SECS[$c]}" | bc -l)" \
      "$(echo "${RSS[$c]} / 1024" | bc -l)" "${CPU[$c]}"
  done
  echo
  printf 'ratio crwatch/pg_recvlogical (rows/s): %.2f   goal >= 0.90: %s\n' "$ratio" "$(verdict "$ratio_ok")"
  printf 'crwatch peak RSS: %.1f MiB             goal < 32 MiB: %s\n' "$crw_rss_mib" "$(verdict "$rss_ok")"
  if [[ "$HTTP" == 1 ]]; then
    printf 'ratio crwatch+http/crwatch (rows/s): %.3f   (http.listen on vs off; client CPU %.2f s vs %.2f s)\n' \
      "$http_ratio" "${CPU[crwatch+http]}" "${CPU[crwatch]}"
    echo "/metrics under load (untimed pass): $SCRAPES_OK scrapes answered, $SCRAPES_FAILED failed; crwatch_events_total seen: ${SCRAPE_EVENTS:-none}"
  fi
  echo "(medians of $REPEATS runs; pg_recvlogical: proto_version=2 streaming=on messages=true -> /dev/null; crwatch: CloudEvents -> /dev/null)"
} | tee "$WORK/table.txt"

{
  echo "# crwatch bench/stream.sh results; key=value, then raw runs"
  echo "stamp=$STAMP"
  echo "crwatch_version=$CRW_VERSION"
  echo "crwatch_binary=$CRW"
  echo "crwatch_sha256_16=$CRW_SHA"
  echo "git_rev=$GIT_REV"
  echo "git_tree=$GIT_DIRTY"
  echo "pg_version=$PG_VERSION"
  echo "cores=$(nproc)"
  echo "logical_decoding_work_mem=$LDWM"
  echo "big_txn=$BIG_TXN"
  echo "rows_total=$TOTAL_ROWS"
  echo "rows_inserted=$INSERT_ROWS"
  echo "rows_updated=$UPDATE_ROWS"
  echo "txns_small=$TXNS"
  echo "txn_rows=$TXN_ROWS"
  echo "big_txn_rows=$BIG_ROWS"
  echo "update_batch=$UPDATE_BATCH"
  echo "wal_bytes=$WAL_BYTES"
  echo "endpos=$ENDPOS"
  echo "repeats=$REPEATS"
  echo "validation=$VALID"
  echo "validation_events=$V_LINES"
  echo "validation_json_bytes=$V_BYTES"
  echo "slot_stats_validation=spill_txns:$v_spill_txns spill_bytes:$v_spill_bytes stream_txns:$v_stream_txns stream_bytes:$v_stream_bytes total_txns:$v_total_txns total_bytes:$v_total_bytes"
  for c in "${CONTENDERS[@]}"; do
    k=${c//[^a-z0-9_]/_}
    echo "${k}_median_seconds=${SECS[$c]}"
    echo "${k}_rows_per_second=$(printf '%.0f' "$(echo "$TOTAL_ROWS / ${SECS[$c]}" | bc -l)")"
    echo "${k}_peak_rss_kib=${RSS[$c]}"
    echo "${k}_client_cpu_seconds=${CPU[$c]}"
  done
  printf 'ratio_crwatch_over_recvlogical=%.3f\n' "$ratio"
  echo "goal_ratio_met=$( ((ratio_ok)) && echo yes || echo no)"
  echo "goal_rss_met=$( ((rss_ok)) && echo yes || echo no)"
  if [[ "$HTTP" == 1 ]]; then
    printf 'ratio_crwatch_http_over_crwatch=%.3f\n' "$http_ratio"
    echo "http_scrapes_ok=$SCRAPES_OK"
    echo "http_scrapes_failed=$SCRAPES_FAILED"
    echo "http_scrape_events_total=${SCRAPE_EVENTS% }"
  fi
  echo "failed=$FAILED"
  [[ -n "$PROFILE_OUT" ]] && echo "profile=$PROFILE_OUT"
  echo "# raw: contender iteration seconds peak_rss_kib exit_code confirmed_flush_bytes_before_endpos client_cpu_seconds spill_txns spill_bytes stream_txns stream_bytes total_txns total_bytes"
  sed 's/^/raw\t/' "$RAW"
} >"$OUT"
log "results written to $OUT"

exit "$FAILED"
