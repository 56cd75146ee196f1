#!/usr/bin/env bash
# bench/curves.sh — the cost curves: how crwatch's rate and memory move with the work, each point a
# ratio against pg_recvlogical on the same WAL (COPY for the backfill) in the same run, drawn with gnuplot.
# See bench/README.md ("bench/curves.sh") for how to read them.
#
#   bench/curves.sh                                    # every curve at its defaults (about 15 minutes on 2 cores)
#   BENCH_CURVES="tables txn" BENCH_REPEATS=1 bench/curves.sh           # two curves, one run per contender
#   BENCH_CURVE_ROWS=50000 BENCH_CURVE_RESOURCES="10000 100000" bench/curves.sh   # smaller
#   BENCH_CURVES_PUBLISH=1 bench/curves.sh             # and copy the pictures and summary.md to docs/curves/
#   CRWATCH=/path/to/crwatch bench/curves.sh           # no build
#
# The curves (BENCH_CURVES, in this order by default: tables width txn cache backfill latency):
#   tables    rows/s and peak RSS against the watched tables in one publication (1, 100, 1000): the same
#             rows (mixed-type, ~200-byte jsonb) in 1000-row transactions, each spread over every table
#   width     against the row width: a jsonb of ~100 B, 10 KiB, 1 MiB (arrays of md5 strings, barely
#             compressible); as many rows as fit BENCH_CURVE_BYTES (at most BENCH_CURVE_ROWS), ~1 MiB per
#             transaction (1 to 1000 rows)
#   txn       against the transaction size (1 to 1,000,000 rows): BENCH_CURVE_ROWS mixed rows, or one
#             transaction when it is larger; the large ones the server streams in progress (pgoutput
#             streaming), which crwatch spools to disk until their commit
#   cache     against the resource cache's size (10k, 100k, 1M crd resources, the sql/crwatch.sql
#             convention): the slot holds their inserts (ADDED, which fill the cache: cache.seed=false) and
#             then status-only update rounds over all of them (MODIFIED, each a cache hit: oldObject and
#             `changed`), as many rounds as make BENCH_CURVE_ROWS updates (at least one), 10,000-row
#             transactions; cache.max.bytes=BENCH_CURVE_CACHE_BYTES so nothing is evicted.  An untimed pass
#             per point checks that every MODIFIED event has its oldObject
#   backfill  `crwatch backfill` rows/s against snapshot.workers (1, 2, 4), against COPY of the same
#             columns by psql, on BENCH_CURVE_BACKFILL_ROWS crd-shaped rows (as bench/backfill.sh)
#   latency   commit -> consumer p50/p99 against the commit rate: bench/latency.sh once per rate, modes
#             stdout and alo (at-least-once into crwatch-mock-kafka), one run of BENCH_CURVE_LAT_SECS each;
#             plotted against the rate pgbench reached (said when it fell short of the target)
# Stream points: a slot made before the point's workload, endpos after it; BENCH_REPEATS interleaved runs of
# pg_recvlogical (pgoutput proto 2, streaming=on, to /dev/null) and `crwatch stream --endpos` (sink=stdout to
# /dev/null), each on a fresh copy of that slot; crwatch's "stopped: N events" must say the point's events
# and each slot must be confirmed up to endpos.  Medians; peak RSS and client CPU by GNU time.
#
# Output, in bench/results/curves-<stamp>/: <curve>.dat (one line per point), <curve>.png, summary.md (the
# table of ratios; the latency table) and runs.tsv (every timed run).
#
# Environment (defaults in brackets):
#   BENCH_CURVES ["tables width txn cache backfill latency"]   the curves to draw
#   BENCH_REPEATS [3]               timed runs per contender and point (median reported)
#   BENCH_CURVE_ROWS [200000]       rows per stream point (tables, txn; the cap of width; updates of cache)
#   BENCH_CURVE_TABLES ["1 100 1000"]   BENCH_CURVE_TXN_ROWS [1000] rows per transaction of that curve
#   BENCH_CURVE_WIDTHS ["100 10240 1048576"] jsonb bytes   BENCH_CURVE_BYTES [268435456] payload per point
#   BENCH_CURVE_TXNS ["1 10 100 1000 10000 100000 1000000"] rows per transaction
#   BENCH_CURVE_RESOURCES ["10000 100000 1000000"]   BENCH_CURVE_CACHE_BYTES [4GB] cache.max.bytes
#   BENCH_CURVE_BACKFILL_ROWS [1000000]   BENCH_CURVE_WORKERS ["1 2 4"]
#   BENCH_CURVE_RATES ["100 1000 2000 5000 10000 20000"] rows/s   BENCH_CURVE_LAT_MODES ["stdout alo"]
#   BENCH_CURVE_LAT_SECS [8]        seconds of pgbench per latency run
#   BENCH_CURVES_PUBLISH [0]        1: copy the PNGs and summary.md to docs/curves/ (tracked)
#   BENCH_DECODING_WORK_MEM, BENCH_PG_OPTS   server settings (bench/lib.sh)
#   BENCH_TIMEOUT [900]             seconds before one run is killed (a failure)
#   BENCH_RESULTS [bench/results]   BENCH_BUILD_DIR [${TMPDIR:-/tmp}/crwatch-bench-build]   BENCH_KEEP [0]
#   CRWATCH, MOCK_KAFKA             binaries to use instead of building them
#
# Needs the PostgreSQL 15 server binaries, pg_recvlogical, pgbench, kcat (scripts/deps), GNU time, bc, perl
# and gnuplot (Debian's gnuplot-nox).  Changes nothing outside its temp dir but bench/results/ (git-ignored)
# and, with BENCH_CURVES_PUBLISH=1, docs/curves/.
#
# Exit status: 0 every point ran and validated (whatever the figures); 1 a run failed, timed out or did
# not validate (its point is drawn all the same, and summary.md says so); 2 a bad setting.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init curves

CURVES="${BENCH_CURVES:-tables width txn cache backfill latency}"
REPEATS="${BENCH_REPEATS:-3}"
ROWS="${BENCH_CURVE_ROWS:-200000}"
TABLES_POINTS="${BENCH_CURVE_TABLES:-1 100 1000}"
TABLES_TXN="${BENCH_CURVE_TXN_ROWS:-1000}"
WIDTH_POINTS="${BENCH_CURVE_WIDTHS:-100 10240 1048576}"
WIDTH_BYTES="${BENCH_CURVE_BYTES:-268435456}"
TXN_POINTS="${BENCH_CURVE_TXNS:-1 10 100 1000 10000 100000 1000000}"
CACHE_POINTS="${BENCH_CURVE_RESOURCES:-10000 100000 1000000}"
CACHE_BYTES="${BENCH_CURVE_CACHE_BYTES:-4GB}"
BACKFILL_ROWS="${BENCH_CURVE_BACKFILL_ROWS:-1000000}"
WORKERS_POINTS="${BENCH_CURVE_WORKERS:-1 2 4}"
LAT_RATES="${BENCH_CURVE_RATES:-100 1000 2000 5000 10000 20000}"
LAT_MODES="${BENCH_CURVE_LAT_MODES:-stdout alo}"
LAT_SECS="${BENCH_CURVE_LAT_SECS:-8}"
PUBLISH="${BENCH_CURVES_PUBLISH:-0}"
TIMEOUT="${BENCH_TIMEOUT:-900}"

bad() { echo "bench/curves.sh: $*" >&2; exit 2; }
for v in REPEATS ROWS TABLES_TXN WIDTH_BYTES BACKFILL_ROWS LAT_SECS TIMEOUT; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || bad "$v must be a positive integer, not '${!v}'"
done
for v in TABLES_POINTS WIDTH_POINTS TXN_POINTS CACHE_POINTS WORKERS_POINTS LAT_RATES; do
  for p in ${!v}; do [[ "$p" =~ ^[1-9][0-9]*$ ]] || bad "$v: '$p' is not a positive integer"; done
done
for c in $CURVES; do
  case "$c" in tables | width | txn | cache | backfill | latency) ;; *) bad "BENCH_CURVES: no curve '$c'" ;; esac
done
[[ "$PUBLISH" == 0 || "$PUBLISH" == 1 ]] || bad "BENCH_CURVES_PUBLISH must be 0 or 1"
wants() { [[ " $CURVES " == *" $1 "* ]]; }

DB=curves
CONNINFO="dbname=$DB"
API_VERSION=bench.example.com/v1
T_START=$(date +%s)
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- prerequisites
bench_need_time
bench_need bc perl gnuplot "$PG_BIN/psql" "$PG_BIN/pg_recvlogical"
wants latency && bench_need kcat "$PG_BIN/pgbench"
bench_workdir crwatch-curves
if wants latency && [[ -z "${MOCK_KAFKA:-}" ]]; then
  bench_build crwatch crwatch-mock-kafka
  MOCK_KAFKA="$BUILD_DIR/crwatch-mock-kafka"
else
  bench_build crwatch
fi
OUTDIR="$RESULTS_DIR/curves-$STAMP"
mkdir -p "$OUTDIR" "$WORK/spool"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
GIT_DIRTY="$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo dirty || echo clean)"
FAILED=0
SUMMARY="$WORK/summary.tsv" # curve point crwatch_rate ref_rate ratio crwatch_rss_kib ref_rss_kib
LATSUM="$WORK/latency.tsv"  # target mode actual p50 p99 n
: >"$SUMMARY"
: >"$LATSUM"
printf '# curve\tpoint\tcontender\trun\tseconds\tpeak_rss_kib\tcpu_s\texit\n' >"$OUTDIR/runs.tsv"

# ---------------------------------------------------------------- server
PG_VERSION=-
if wants tables || wants width || wants txn || wants cache || wants backfill; then
  bench_start_pg max_wal_size=8GB # no checkpoint forced by a point's WAL
  export PGDATABASE=$DB
  PG_VERSION="$(q "SHOW server_version")"
  q "CREATE DATABASE $DB"
  psqlx -d "$DB" -f "$ROOT/sql/crwatch.sql" >/dev/null 2>&1
  # curves.fill(schema, tables, total, per_txn, source): rows 1..total in per_txn-row transactions, row i
  # into table t<i % tables>, from `SELECT * FROM <source>` with $1, $2, $3 = first id, last id, step.
  psqlx -d "$DB" >/dev/null <<SQL
CREATE SCHEMA curves;
CREATE TABLE curves.mixed ($(bench_mixed_columns));
CREATE FUNCTION curves.mixed_rows(lo bigint, hi bigint, step bigint) RETURNS SETOF curves.mixed
  LANGUAGE sql AS \$f\$ SELECT $(bench_mixed_row) FROM generate_series(lo, hi, step) AS i \$f\$;
CREATE FUNCTION curves.wide_rows(lo bigint, hi bigint, step bigint, parts int) RETURNS TABLE (id bigint, doc jsonb)
  LANGUAGE sql AS \$f\$
  SELECT i, jsonb_build_object('id', i, 'parts',
    (SELECT jsonb_agg(md5(i || ':' || k)) FROM generate_series(1, parts) AS k))
  FROM generate_series(lo, hi, step) AS i \$f\$;
CREATE PROCEDURE curves.fill(sch text, ntables int, total bigint, per_txn bigint, src text) LANGUAGE plpgsql AS \$p\$
DECLARE lo bigint := 1; hi bigint; k int;
BEGIN
  WHILE lo <= total LOOP
    hi := least(lo + per_txn - 1, total);
    FOR k IN 0 .. least(ntables, hi - lo + 1) - 1 LOOP
      EXECUTE format('INSERT INTO %I.%I SELECT * FROM ' || src, sch, 't' || ((lo + k) % ntables))
        USING lo + k, hi, ntables::bigint;
    END LOOP;
    COMMIT;
    lo := hi + 1;
  END LOOP;
END \$p\$;
SQL
fi

# ---------------------------------------------------------------- helpers
loadavg() { cut -d' ' -f1 /proc/loadavg; }
mib() { echo "scale=1; $1 / 1024" | bc -l; }

# point_begin CURVE POINT: SCHEMA, PUB and SRC_SLOT of the point (made by the curve, dropped by point_end).
point_begin() {
  SCHEMA="cv_$1_$2"
  PUB="pub_$1_$2"
  SRC_SLOT="src_$1_$2"
  POINT_LOAD="$(loadavg)"
  log "$1 $2: workload (load average $POINT_LOAD)"
}
point_end() {
  qb "SELECT pg_drop_replication_slot('$SRC_SLOT')" >/dev/null
  qb "DROP PUBLICATION IF EXISTS $PUB; DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1
}
make_slot() { qb "SELECT pg_create_logical_replication_slot('$SRC_SLOT', 'pgoutput')" >/dev/null; }
mark_endpos() {
  ENDPOS="$(qb "SELECT pg_current_wal_lsn()")"
  local start
  start="$(qb "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = '$SRC_SLOT'")"
  WAL_MIB=$(($(qb "SELECT pg_wal_lsn_diff('$ENDPOS', '$start')::bigint") / 1048576))
}

# timed NAME CMD...: CMD under GNU time, stdout to /dev/null, stderr to $WORK/NAME.err;
# sets T_SECS (wall), T_RSS (peak KiB), T_CPU (user + sys s), T_RC.
timed() {
  local name=$1 t0 t1 u s
  shift
  T_RC=0
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$TIMEOUT" /usr/bin/time -f '%M %U %S' -o "$WORK/time" "$@" >/dev/null 2>"$WORK/$name.err" ||
    T_RC=$?
  t1=$(date +%s.%N)
  T_SECS=$(echo "$t1 - $t0" | bc -l)
  read -r T_RSS u s < <(tail -n 1 "$WORK/time" 2>/dev/null || true) || true
  [[ "${T_RSS:-}" =~ ^[0-9]+$ ]] || T_RSS=0
  T_CPU=$(echo "${u:-0} + ${s:-0}" | bc -l)
}

# record CURVE POINT CONTENDER RUN: the last timed run into runs.tsv and $WORK/point.tsv
record() {
  printf '%s\t%s\t%s\t%s\t%.3f\t%s\t%.2f\t%s\n' "$1" "$2" "$3" "$4" "$T_SECS" "$T_RSS" "$T_CPU" "$T_RC" >>"$OUTDIR/runs.tsv"
  printf '%s\t%.3f\t%s\t%.2f\n' "$3" "$T_SECS" "$T_RSS" "$T_CPU" >>"$WORK/point.tsv"
}
pmed() { awk -F'\t' -v c="$1" -v f="$2" '$1 == c {print $f}' "$WORK/point.tsv" | median; } # CONTENDER FIELD

# point_line CURVE LABEL X UNITS NOTE: medians of $WORK/point.tsv (contenders crwatch and ref) as
# a line of CURVE.dat and of the summary; rates = UNITS / seconds.
point_line() {
  local curve=$1 label=$2 x=$3 units=$4 note=$5 cs rs cr rr ratio
  cs=$(pmed crwatch 2) rs=$(pmed ref 2)
  cr=$(echo "$units / $cs" | bc -l) rr=$(echo "$units / $rs" | bc -l)
  ratio=$(echo "$cr / $rr" | bc -l)
  [[ -f "$OUTDIR/$curve.dat" ]] ||
    printf '# label x units crwatch_per_s ref_per_s ratio crwatch_rss_mib ref_rss_mib crwatch_cpu_s ref_cpu_s crwatch_s ref_s load1 note\n' \
      >"$OUTDIR/$curve.dat"
  printf '%s %s %s %.0f %.0f %.3f %s %s %s %s %.3f %.3f %s %s\n' "$label" "$x" "$units" "$cr" "$rr" "$ratio" \
    "$(mib "$(pmed crwatch 3)")" "$(mib "$(pmed ref 3)")" "$(pmed crwatch 4)" "$(pmed ref 4)" "$cs" "$rs" \
    "$POINT_LOAD" "${note:--}" >>"$OUTDIR/$curve.dat"
  printf '%s\t%s\t%.0f\t%.0f\t%.2f\t%s\t%s\n' "$curve" "$label" "$cr" "$rr" "$ratio" "$(pmed crwatch 3)" "$(pmed ref 3)" \
    >>"$SUMMARY"
  log "$(printf '%s %s: crwatch %.0f/s, reference %.0f/s, ratio %.2f; peak RSS %s vs %s MiB; crwatch CPU %s s' \
    "$curve" "$label" "$cr" "$rr" "$ratio" "$(mib "$(pmed crwatch 3)")" "$(mib "$(pmed ref 3)")" "$(pmed crwatch 4)")"
}

crw_stream_cmd() { # SLOT OPTION...: array CMD
  local slot=$1 o
  shift
  CMD=("$CRW" stream -d "$CONNINFO" --endpos "$ENDPOS" -X "slot.name=$slot" -X "publication.name=$PUB"
       -X slot.create=false -X publication.create=false -X log.level=info
       -X "deadletter.file=$WORK/deadletter.jsonl" -X "spool.dir=$WORK/spool")
  for o in "$@"; do CMD+=(-X "$o"); done
}

# stream_point CURVE LABEL X EVENTS OPTION...: the timed runs of a stream point (after mark_endpos);
# crwatch gets -X OPTION... and must report EVENTS events.  With CHECK_RE set, an untimed crwatch pass
# first counts its output lines matching CHECK_RE, which must be CHECK_WANT.
stream_point() {
  local curve=$1 label=$2 x=$3 events=$4 i c slot n behind stats streamed=0
  shift 4
  : >"$WORK/point.tsv"
  if [[ -n "${CHECK_RE:-}" ]]; then
    copy_slot "cv_${curve}_${x}_check"
    crw_stream_cmd "cv_${curve}_${x}_check" "$@"
    n=$("${CMD[@]}" 2>"$WORK/$curve-$label-check.err" | grep -c -- "$CHECK_RE" || true)
    drop_slot "cv_${curve}_${x}_check"
    if [[ "$n" != "$CHECK_WANT" ]]; then
      log "$curve $label: check FAILED: $n events match $CHECK_RE, want $CHECK_WANT"
      tail -n 5 "$WORK/$curve-$label-check.err" >&2
      FAILED=1
    else
      log "$curve $label: check: $n events match $CHECK_RE"
    fi
  fi
  for ((i = 1; i <= REPEATS; i++)); do
    for c in ref crwatch; do
      slot="cv_${curve}_${x}_${c}_$i" # names never reused: crwatch keeps a mark per slot name (crwatch.offsets)
      copy_slot "$slot"
      if [[ "$c" == ref ]]; then bench_recvlogical "$slot" "$ENDPOS"; else crw_stream_cmd "$slot" "$@"; fi
      timed "$curve-$label-$c-$i" "${CMD[@]}"
      behind=$(bench_slot_behind "$slot" "$ENDPOS")
      stats="$(bench_slot_stats "$slot")"
      drop_slot "$slot"
      record "$curve" "$label" "$c" "$i"
      read -r _ _ streamed _ <<<"$stats"
      if ((T_RC != 0)); then
        log "$curve $label: $c run $i FAILED (exit $T_RC)"
        tail -n 10 "$WORK/$curve-$label-$c-$i.err" >&2
        FAILED=1
      elif [[ ! "$behind" =~ ^-?[0-9]+$ ]] || ((behind > 0)); then
        log "$curve $label: $c run $i FAILED: the slot is confirmed ${behind:-?} bytes before endpos"
        FAILED=1
      elif [[ "$c" == crwatch ]]; then
        n="$(sed -n 's/.*stopped: \([0-9]*\) events.*/\1/p' "$WORK/$curve-$label-$c-$i.err" | tail -n 1)"
        if [[ "$n" != "$events" ]]; then
          log "$curve $label: crwatch run $i FAILED: ${n:-no} events, want $events"
          tail -n 10 "$WORK/$curve-$label-$c-$i.err" >&2
          FAILED=1
        fi
      fi
    done
  done
  point_line "$curve" "$label" "$x" "$events" "wal=${WAL_MIB}MiB,streamed_txns=${streamed:-0}"
}

human() { # N -> 1, 100, 10k, 1M, 100B, 10KiB, 1MiB (bytes with B)
  awk -v n="$1" -v b="${2:-}" 'BEGIN {
    if (b != "") { if (n >= 1048576 && n % 1048576 == 0) printf "%dMiB", n / 1048576;
                   else if (n >= 1024 && n % 1024 == 0) printf "%dKiB", n / 1024; else printf "%dB", n }
    else if (n >= 1000000 && n % 1000000 == 0) printf "%dM", n / 1000000;
    else if (n >= 1000 && n % 1000 == 0) printf "%dk", n / 1000; else printf "%d", n }'
}

# ---------------------------------------------------------------- the curves
curve_tables() {
  local t k list
  for t in $TABLES_POINTS; do
    point_begin tables "$t"
    list=""
    {
      echo "BEGIN; CREATE SCHEMA $SCHEMA;"
      for ((k = 0; k < t; k++)); do echo "CREATE TABLE $SCHEMA.t$k ($(bench_mixed_columns));"; done
      echo "CREATE PUBLICATION $PUB FOR TABLE"
      for ((k = 0; k < t; k++)); do echo "  $SCHEMA.t$k$( ((k < t - 1)) && echo ,)"; done
      echo "; COMMIT;"
    } | psqlx -d "$DB" >/dev/null
    for ((k = 0; k < t; k++)); do list+="${list:+,}$SCHEMA.t$k"; done
    make_slot
    qb "CALL curves.fill('$SCHEMA', $t, $ROWS, $TABLES_TXN, 'curves.mixed_rows(\$1, \$2, \$3)')"
    mark_endpos
    stream_point tables "$t" "$t" "$ROWS" "tables=$list"
    point_end
  done
}

curve_width() {
  local w parts n per
  for w in $WIDTH_POINTS; do
    point_begin width "$w"
    parts=$(((w - 25) / 36))
    ((parts < 1)) && parts=1
    n=$((WIDTH_BYTES / w))
    ((n > ROWS)) && n=$ROWS
    ((n < 1)) && n=1
    per=$((1048576 / w))
    ((per > 1000)) && per=1000
    ((per < 1)) && per=1
    qb "CREATE SCHEMA $SCHEMA; CREATE TABLE $SCHEMA.t0 (id bigint PRIMARY KEY, doc jsonb);
        CREATE PUBLICATION $PUB FOR TABLE $SCHEMA.t0" >/dev/null
    make_slot
    qb "CALL curves.fill('$SCHEMA', 1, $n, $per, 'curves.wide_rows(\$1, \$2, \$3, $parts)')"
    mark_endpos
    log "width $w: $n rows of $(qb "SELECT round(avg(octet_length(doc::text))) FROM $SCHEMA.t0") B, $per per transaction, ${WAL_MIB} MiB WAL"
    stream_point width "$(human "$w" B)" "$w" "$n" "tables=$SCHEMA.t0"
    point_end
  done
}

curve_txn() {
  local s n
  for s in $TXN_POINTS; do
    point_begin txn "$s"
    n=$ROWS
    ((s > n)) && n=$s
    qb "CREATE SCHEMA $SCHEMA; CREATE TABLE $SCHEMA.t0 ($(bench_mixed_columns));
        CREATE PUBLICATION $PUB FOR TABLE $SCHEMA.t0" >/dev/null
    make_slot
    qb "CALL curves.fill('$SCHEMA', 1, $n, $s, 'curves.mixed_rows(\$1, \$2, \$3)')"
    mark_endpos
    stream_point txn "$(human "$s")" "$s" "$n" "tables=$SCHEMA.t0"
    point_end
  done
}

curve_cache() {
  local n rounds r lo hi
  for n in $CACHE_POINTS; do
    point_begin cache "$n"
    rounds=$((ROWS / n))
    ((rounds < 1)) && rounds=1
    qb "CREATE SCHEMA $SCHEMA; $(bench_jobs_table "$SCHEMA.jobs") CREATE PUBLICATION $PUB FOR TABLE $SCHEMA.jobs" >/dev/null
    make_slot
    {
      bench_jobs_rows "$SCHEMA.jobs" 1 "$n" 10000
      for ((r = 1; r <= rounds; r++)); do
        for ((lo = 1; lo <= n; lo += 10000)); do
          hi=$((lo + 9999))
          ((hi > n)) && hi=$n
          echo "UPDATE $SCHEMA.jobs SET status = jsonb_build_object('phase', 'Running', 'round', $r)
            WHERE (namespace, name) IN (SELECT 'ns-' || (g % 10), 'job-' || g FROM generate_series($lo, $hi) AS g);"
        done
      done
    } | psqlx -d "$DB" >/dev/null
    mark_endpos
    log "cache $n: $n inserts, $rounds status-only update round(s), ${WAL_MIB} MiB WAL"
    CHECK_RE='"type":"MODIFIED".*"oldObject":' CHECK_WANT=$((rounds * n)) \
      stream_point cache "$(human "$n")" "$n" "$((n + rounds * n))" \
      "resource.jobs.table=$SCHEMA.jobs" resource.jobs.shape=crd resource.jobs.kind=Job \
      "resource.jobs.api.version=$API_VERSION" cache.seed=false "cache.max.bytes=$CACHE_BYTES"
    point_end
  done
}

curve_backfill() {
  local r w cols n
  SCHEMA=cv_backfill
  POINT_LOAD="$(loadavg)"
  log "backfill: loading $BACKFILL_ROWS rows (load average $POINT_LOAD)"
  qb "CREATE SCHEMA $SCHEMA; $(bench_jobs_table "$SCHEMA.jobs")" >/dev/null
  bench_jobs_rows "$SCHEMA.jobs" 1 "$BACKFILL_ROWS" | psqlx -d "$DB" >/dev/null
  qb "VACUUM ANALYZE $SCHEMA.jobs"
  cols="$(qb "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
    WHERE attrelid = '$SCHEMA.jobs'::regclass AND attnum > 0 AND NOT attisdropped")"
  local res=(-X "resource.jobs.table=$SCHEMA.jobs" -X resource.jobs.shape=crd -X resource.jobs.kind=Job
             -X "resource.jobs.api.version=$API_VERSION" -X "deadletter.file=$WORK/deadletter.jsonl"
             -X "snapshot.state.file=$WORK/backfill.state" -X log.level=info)
  : >"$WORK/bf.tsv"
  for ((r = 1; r <= REPEATS; r++)); do
    timed "backfill-copy-$r" "$PG_BIN/psql" -X -d "$CONNINFO" -Atc "COPY (SELECT $cols FROM $SCHEMA.jobs) TO STDOUT"
    ((T_RC == 0)) || { log "backfill: COPY run $r FAILED"; tail -n 5 "$WORK/backfill-copy-$r.err" >&2; FAILED=1; }
    record backfill copy ref "$r"
    printf 'ref\t%.3f\t%s\t%.2f\n' "$T_SECS" "$T_RSS" "$T_CPU" >>"$WORK/bf.tsv"
    for w in $WORKERS_POINTS; do
      timed "backfill-w$w-$r" "$CRW" backfill -d "$CONNINFO" "${res[@]}" -X "snapshot.workers=$w"
      record backfill "workers=$w" crwatch "$r"
      printf 'w%s\t%.3f\t%s\t%.2f\n' "$w" "$T_SECS" "$T_RSS" "$T_CPU" >>"$WORK/bf.tsv"
      n="$(sed -n 's/.*backfill done: \([0-9]*\) rows.*/\1/p' "$WORK/backfill-w$w-$r.err" | tail -n 1)"
      if ((T_RC != 0)) || [[ "$n" != "$BACKFILL_ROWS" ]]; then
        log "backfill: $w workers, run $r FAILED (exit $T_RC, ${n:-no} rows of $BACKFILL_ROWS)"
        tail -n 5 "$WORK/backfill-w$w-$r.err" >&2
        FAILED=1
      fi
      log "$(printf 'backfill run %d: COPY and %d workers: %.2f s, %s MiB' "$r" "$w" "$T_SECS" "$(mib "$T_RSS")")"
    done
  done
  for w in $WORKERS_POINTS; do
    awk -F'\t' -v w="w$w" '$1 == "ref" {print} $1 == w {$1 = "crwatch"; print}' OFS='\t' "$WORK/bf.tsv" >"$WORK/point.tsv"
    point_line backfill "workers=$w" "$w" "$BACKFILL_ROWS" "rows=$BACKFILL_ROWS"
  done
  qb "DROP SCHEMA $SCHEMA CASCADE" >/dev/null
}

curve_latency() {
  local r dir out m actual outs
  for r in $LAT_RATES; do
    dir="$WORK/latency-$r"
    mkdir -p "$dir"
    log "latency at $r rows/s: bench/latency.sh, modes $LAT_MODES, one run of $LAT_SECS s (load average $(loadavg))"
    CRWATCH="$CRW" MOCK_KAFKA="$MOCK_KAFKA" BENCH_RESULTS="$dir" BENCH_LAT_RATE="$r" BENCH_LAT_MODES="$LAT_MODES" \
      BENCH_LAT_SECS="$LAT_SECS" BENCH_LAT_REPEATS=1 BENCH_LAT_LOGLEVEL=info BENCH_KEEP=0 \
      "$ROOT/bench/latency.sh" >"$dir/out.txt" 2>"$dir/log.txt" ||
      { log "latency at $r rows/s: bench/latency.sh FAILED"; tail -n 10 "$dir/log.txt" >&2; FAILED=1; }
    outs=("$dir"/latency-*.txt)
    out="${outs[0]}"
    [[ -f "$out" ]] || continue
    # runs: "  mode<TAB>binary<TAB>run<TAB>rows/s<TAB>events..."; per mode, "  commit -> consumer  p50 / p99 / max (n)"
    for m in $LAT_MODES; do
      actual="$(awk -F'\t' -v m="$m" '{sub(/^ +/, "", $1)} $1 == m {print $4}' "$out" | median)"
      awk -v m="$m" -v r="$r" -v a="$actual" '
        /^[a-z]+: / {cur = $1; sub(/:$/, "", cur)}
        cur == m && /^  commit -> consumer/ {
          s = $0; sub(/^  commit -> consumer */, "", s); gsub(/[()]/, "", s); n = split(s, f, / *\/ */)
          split(f[3], g, / +/); printf "%s\t%s\t%s\t%s\t%s\t%s\n", r, m, a, f[1], f[2], g[2]; cur = "" }' "$out" >>"$LATSUM"
    done
  done
  {
    echo "# target_rows_s mode actual_rows_s p50_ms p99_ms events"
    sort -t$'\t' -k2,2 -k1,1n "$LATSUM" | tr '\t' ' '
  } >"$OUTDIR/latency.dat"
  local short
  short="$(awk -F'\t' '$3 < 0.95 * $1 {printf "%s%s/s reached %.0f/s (%s)", sep, $1, $3, $2; sep = "; "}' "$LATSUM")"
  [[ -z "$short" ]] || log "latency: pgbench fell short of the target rate: $short"
  LAT_SHORT="$short"
}

# ---------------------------------------------------------------- plots
# plot_rate CURVE TITLE XLABEL LOGX(0|1) LOGY(0|1) UNIT REF
plot_rate() {
  local curve=$1 title=$2 xlabel=$3 logx=$4 logy=$5 unit=$6 ref=$7
  [[ -f "$OUTDIR/$curve.dat" ]] || return 0
  gnuplot <<GP 2>"$WORK/gnuplot-$curve.err" || { log "gnuplot failed for $curve"; cat "$WORK/gnuplot-$curve.err" >&2; }
set terminal pngcairo noenhanced size 900,760 font ",10"
set output '$OUTDIR/$curve.png'
set datafile commentschars '#'
set multiplot layout 2,1 title "$title\n($CRW_VERSION, git $GIT_REV; $(nproc) cores; medians of $REPEATS)"
set grid
set key outside bottom center horizontal
$( ((logx)) && echo "set logscale x" )
$( ((logy)) && echo "set logscale y" || echo "set yrange [0:*]" )
set xlabel "$xlabel"
set ylabel "$unit"
set y2label "ratio crwatch / $ref"
set ytics nomirror
set y2tics
set y2range [0:*]
set offsets graph 0.05, graph 0.05, graph 0.1, 0
plot '$OUTDIR/$curve.dat' using 2:4:xtic(1) with linespoints lw 2 pt 7 title 'crwatch', \
     '' using 2:5 with linespoints lw 2 pt 5 title '$ref', \
     '' using 2:6 axes x1y2 with linespoints dt 2 lw 1 pt 6 title 'ratio (right axis)'
unset logscale y
unset y2label
unset y2tics
set ytics mirror
set ylabel "peak RSS (MiB)"
set yrange [0:*]
plot '$OUTDIR/$curve.dat' using 2:7:xtic(1) with linespoints lw 2 pt 7 title 'crwatch', \
     '' using 2:8 with linespoints lw 2 pt 5 title '$ref'
unset multiplot
GP
}

plot_latency() {
  [[ -s "$LATSUM" ]] || return 0
  local m plots=() i=0
  for m in $LAT_MODES; do
    awk -F'\t' -v m="$m" '$2 == m {print $3, $4, $5, $1}' "$LATSUM" | sort -n >"$WORK/lat-$m.dat"
    plots+=("'$WORK/lat-$m.dat' using 1:2 with linespoints lw 2 pt 7 lc $((i + 1)) title '$m p50'"
            "'$WORK/lat-$m.dat' using 1:3 with linespoints lw 2 pt 5 dt 2 lc $((i + 1)) title '$m p99'")
    i=$((i + 1))
  done
  local spec
  spec="$(printf '%s, ' "${plots[@]}")"
  gnuplot <<GP 2>"$WORK/gnuplot-latency.err" || { log "gnuplot failed for latency"; cat "$WORK/gnuplot-latency.err" >&2; }
set terminal pngcairo noenhanced size 900,520 font ",10"
set output '$OUTDIR/latency.png'
set title "commit -> consumer latency against the commit rate\n($CRW_VERSION, git $GIT_REV; $(nproc) cores; one run of ${LAT_SECS} s per point; x: the rate pgbench reached)"
set grid
set logscale xy
set xlabel "rows/s committed (one-row transactions)"
set ylabel "ms"
set key top left box opaque
set offsets graph 0.05, graph 0.05, 0, 0
plot ${spec%, }
GP
}

# ---------------------------------------------------------------- run
LAT_SHORT=""
for c in $CURVES; do
  log "curve $c"
  case "$c" in
    tables) curve_tables ;;
    width) curve_width ;;
    txn) curve_txn ;;
    cache) curve_cache ;;
    backfill) curve_backfill ;;
    latency) curve_latency ;;
  esac
done
plot_rate tables "rows/s and peak RSS against the watched tables" "tables in the publication" 1 0 "rows/s" pg_recvlogical
plot_rate width "rows/s and peak RSS against the row width" "jsonb bytes per row" 1 1 "rows/s" pg_recvlogical
plot_rate txn "rows/s and peak RSS against the transaction size" "rows per transaction" 1 0 "rows/s" pg_recvlogical
plot_rate cache "rows/s and peak RSS against the resource cache's size" "crd resources (all cached)" 1 0 "rows/s" pg_recvlogical
plot_rate backfill "backfill rows/s and peak RSS against snapshot.workers" "snapshot.workers" 0 0 "rows/s" COPY
plot_latency

# ---------------------------------------------------------------- summary
WALL=$(($(date +%s) - T_START))
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
{
  echo "# bench/curves.sh $STAMP"
  echo
  echo "$CRW_VERSION (git $GIT_REV, $GIT_DIRTY, binary sha256 $CRW_SHA), PostgreSQL $PG_VERSION, $(nproc) cores;"
  echo "curves: $CURVES; medians of $REPEATS interleaved runs; wall time $((WALL / 60)) min $((WALL % 60)) s;"
  echo "load average $LOAD_START at the start, $LOAD_END at the end."
  ((FAILED)) && echo && echo "**A run failed or did not validate: see the log; its point's figures mean nothing.**"
  if [[ -s "$SUMMARY" ]]; then
    echo
    echo "| curve | point | crwatch rows/s | reference rows/s | ratio | crwatch peak RSS | reference peak RSS |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    awk -F'\t' '{ printf "| %s | %s | %d | %d | %.2f | %.1f MiB | %.1f MiB |\n", $1, $2, $3, $4, $5, $6 / 1024, $7 / 1024 }' \
      "$SUMMARY"
    echo
    echo "Reference: pg_recvlogical (pgoutput proto 2, streaming, to /dev/null) on a copy of the same slot;"
    echo "backfill: psql COPY of the same columns to /dev/null."
  fi
  if [[ -s "$LATSUM" ]]; then
    echo
    echo "| target rows/s | mode | reached rows/s | p50 ms | p99 ms | events |"
    echo "|---:|---|---:|---:|---:|---:|"
    sort -t$'\t' -k2,2 -k1,1n "$LATSUM" | awk -F'\t' '{ printf "| %s | %s | %.0f | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }'
    [[ -z "$LAT_SHORT" ]] || { echo; echo "pgbench fell short of the target: $LAT_SHORT."; }
  fi
} >"$OUTDIR/summary.md"
cat "$OUTDIR/summary.md"
if ((PUBLISH)); then
  mkdir -p "$ROOT/docs/curves"
  cp "$OUTDIR"/*.png "$OUTDIR/summary.md" "$ROOT/docs/curves/"
  log "copied the pictures and summary.md to docs/curves/"
fi
log "results in $OUTDIR (wall time ${WALL} s)"
exit "$FAILED"
