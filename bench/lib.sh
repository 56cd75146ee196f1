# bench/lib.sh — what every benchmark in bench/ starts with.  Sourced, never
# run: `source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"`.
#
#   bench_init TAG           ROOT, PG_BIN, STAMP, RESULTS_DIR, BUILD_DIR; log and die print [TAG hh:mm:ss]
#   bench_need_time          GNU /usr/bin/time for peak RSS (installed when missing and run as root)
#   bench_need PROGRAM...    each must be on PATH (or a path that exists)
#   bench_workdir PREFIX     WORK (a temp dir, world-readable for the server) and PGDIR; on exit the
#                            server stops and WORK goes (BENCH_KEEP=1 keeps it); a bench_on_exit
#                            function, when defined, runs first
#   bench_build TARGET...    builds TARGETs (Release, no tests) into BUILD_DIR; sets CRW to crwatch,
#                            CRW_VERSION and CRW_SHA.  CRWATCH=/path skips building crwatch itself
#   bench_start_pg OPT...    a throwaway PostgreSQL in PGDIR (scripts/pg) with -c OPTs, plus
#                            BENCH_DECODING_WORK_MEM and BENCH_PG_OPTS; its env is sourced
#   psqlx ARG... / q SQL / qb SQL    psql -X -q, ON_ERROR_STOP; q in postgres, qb in $DB (-Atc)
#   median                   the median of the numbers on stdin
#   bench_mixed_columns      the mixed-type row's columns, for CREATE TABLE (bigint key id, ~200-byte jsonb)
#   bench_mixed_row          its SELECT list for the id i (every column set)
#   bench_mixed_table        creates public.$TABLE (the mixed-type row), publication $PUB and, before
#                            any workload, the pgoutput slot $SRC_SLOT, in $DB
#   bench_mixed_workload OUT writes OUT: TXNS x TXN_ROWS-row inserts, one BIG_ROWS-row insert, the first
#                            UPDATE_ROWS rows updated in UPDATE_BATCH-row transactions; sets INSERT_ROWS
#                            and TOTAL_ROWS (UPDATE_ROWS capped at the rows inserted)
#   bench_stamp              copies stdin to stdout, each line prefixed with its arrival time (epoch s)
#   bench_lat_stats FILE     "p50 p99 max n" in ms of arrival - the event's "time", over bench_stamp lines
#   mock_start [--transactions] / mock_cmd LINE / mock_stop   a crwatch-mock-kafka ($MOCK) of the script's: BS
#   bench_jobs_table TABLE   SQL: TABLE in the crd convention (sql/crwatch.sql loaded), crwatch.manage'd
#   bench_jobs_rows TABLE LO HI [BATCH]   SQL: rows job-LO..job-HI of it (~340 bytes, 10 namespaces),
#                            BATCH [100000] rows per INSERT
#   copy_slot NAME [PLUGIN] / drop_slot NAME   copies of $SRC_SLOT, which nothing consumes, so every
#                            copy decodes the same WAL
#   bench_slot_stats SLOT    spill_txns spill_bytes stream_txns stream_bytes total_txns total_bytes
#   bench_slot_behind SLOT ENDPOS   bytes SLOT's confirmed_flush_lsn is behind ENDPOS (<= 0: reached)
#   bench_recvlogical SLOT ENDPOS   array CMD: pg_recvlogical (pgoutput proto 2, streaming, messages,
#                            publication $PUB) from SLOT to ENDPOS into /dev/null
# shellcheck shell=bash
# shellcheck disable=SC2034  # what these functions set is the sourcing script's

bench_init() {
  BENCH_TAG=$1
  ROOT="$(cd "$(dirname "${BASH_SOURCE[1]}")/.." && pwd -P)"
  PG_BIN="${PG_BINDIR:-/usr/lib/postgresql/15/bin}"
  [[ -x "$PG_BIN/psql" ]] || PG_BIN="$(dirname "$(command -v psql)")"
  STAMP="$(date +%Y%m%d-%H%M%S)"
  RESULTS_DIR="${BENCH_RESULTS:-$ROOT/bench/results}"
  BUILD_DIR="${BENCH_BUILD_DIR:-${TMPDIR:-/tmp}/crwatch-bench-build}"
}

log() { printf '[%s %(%H:%M:%S)T] %s\n' "$BENCH_TAG" -1 "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

bench_need_time() {
  [[ -x /usr/bin/time ]] && return 0
  log "installing GNU time (/usr/bin/time is missing)"
  if ((EUID == 0)); then
    (apt-get install -y -qq time >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq time; }) ||
      die "could not install the 'time' package"
  else
    die "/usr/bin/time is missing: apt-get install time"
  fi
}

bench_need() {
  local b
  for b in "$@"; do
    command -v "$b" >/dev/null || die "$b is missing (scripts/deps installs the project's packages)"
  done
}

# shellcheck disable=SC2317  # invoked by the trap
bench_cleanup() {
  local rc=$?
  declare -F bench_on_exit >/dev/null && bench_on_exit
  "$ROOT/scripts/pg" stop "$PGDIR" >/dev/null 2>&1 || true
  if [[ "${BENCH_KEEP:-0}" == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}

bench_workdir() {
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
  chmod 755 "$WORK" # scripts/pg may run the server as another OS user
  PGDIR="$WORK/pg"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_build() {
  local targets=("$@")
  if [[ -n "${CRWATCH:-}" ]]; then
    [[ -x "$CRWATCH" ]] || die "CRWATCH=$CRWATCH is not executable"
    CRW="$(cd "$(dirname "$CRWATCH")" && pwd -P)/$(basename "$CRWATCH")"
    local t rest=()
    for t in "${targets[@]}"; do [[ "$t" == crwatch ]] || rest+=("$t"); done
    targets=(${rest[@]+"${rest[@]}"})
  else
    CRW="$BUILD_DIR/crwatch"
  fi
  if ((${#targets[@]} > 0)); then
    log "building ${targets[*]} (Release) in $BUILD_DIR"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCRW_TESTS=OFF >"$WORK/cmake.log" 2>&1 ||
      { cat "$WORK/cmake.log" >&2; die "cmake configure failed"; }
    cmake --build "$BUILD_DIR" -j"$(nproc)" --target "${targets[@]}" >>"$WORK/cmake.log" 2>&1 ||
      { tail -n 40 "$WORK/cmake.log" >&2; die "build failed"; }
  fi
  CRW_VERSION="$("$CRW" --version 2>/dev/null || echo unknown)"
  CRW_SHA="$(sha256sum "$CRW" | cut -c1-16)"
}

bench_start_pg() {
  local opts=() kv
  for kv in "$@"; do opts+=(-c "$kv"); done
  [[ -n "${BENCH_DECODING_WORK_MEM:-}" ]] && opts+=(-c "logical_decoding_work_mem=$BENCH_DECODING_WORK_MEM")
  for kv in ${BENCH_PG_OPTS:-}; do opts+=(-c "$kv"); done
  log "starting a throwaway PostgreSQL in $PGDIR"
  "$ROOT/scripts/pg" start "$PGDIR" ${opts[@]+"${opts[@]}"} >/dev/null
  # shellcheck disable=SC1091
  source "$PGDIR/env"
}

psqlx() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
q() { psqlx -d postgres -Atc "$1"; }
qb() { psqlx -d "$DB" -Atc "$1"; }

median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print 0; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

bench_mixed_columns() {
  echo "id bigint PRIMARY KEY, name text NOT NULL, qty int, price numeric(12,2), created_at timestamptz, payload jsonb,
  active boolean"
}

# One row, i being the id: ~200-byte jsonb, every column set.
bench_mixed_row() {
  echo "i, 'item-' || i || '-' || md5(i::text), (i % 100000)::int, round((i * 1.37)::numeric % 100000, 2),
  timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second',
  jsonb_build_object('sku', 'SKU-' || lpad(i::text, 10, '0'), 'tags', jsonb_build_array('alpha', 'beta', 'gamma'),
    'dims', jsonb_build_object('w', i % 100, 'h', i % 37, 'd', 12.5), 'seq', i,
    'note', 'lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor'),
  i % 2 = 0"
}

bench_mixed_table() {
  q "CREATE DATABASE $DB"
  qb "
CREATE TABLE public.$TABLE ($(bench_mixed_columns));
CREATE PUBLICATION $PUB FOR TABLE public.$TABLE;"
  qb "SELECT pg_create_logical_replication_slot('$SRC_SLOT', 'pgoutput')" >/dev/null
}

bench_mixed_workload() {
  ((UPDATE_ROWS > TXNS * TXN_ROWS + BIG_ROWS)) && UPDATE_ROWS=$((TXNS * TXN_ROWS + BIG_ROWS))
  INSERT_ROWS=$((TXNS * TXN_ROWS + BIG_ROWS))
  TOTAL_ROWS=$((INSERT_ROWS + UPDATE_ROWS))
  local row t lo hi
  row="$(bench_mixed_row)"
  {
    echo "\\set ON_ERROR_STOP 1"
    for ((t = 0; t < TXNS; t++)); do
      echo "INSERT INTO public.$TABLE SELECT $row FROM generate_series($((t * TXN_ROWS + 1)), $(((t + 1) * TXN_ROWS))) AS i;"
    done
    if ((BIG_ROWS > 0)); then
      echo "INSERT INTO public.$TABLE SELECT $row FROM generate_series($((TXNS * TXN_ROWS + 1)), $INSERT_ROWS) AS i;"
    fi
    for ((lo = 1; lo <= UPDATE_ROWS; lo += UPDATE_BATCH)); do
      hi=$((lo + UPDATE_BATCH - 1))
      ((hi > UPDATE_ROWS)) && hi=$UPDATE_ROWS
      echo "UPDATE public.$TABLE SET qty = qty + 1, price = price + 0.01, active = NOT active,
      payload = jsonb_set(payload, '{seq}', to_jsonb(id + 1)) WHERE id BETWEEN $lo AND $hi;"
    done
  } >"$1"
}

copy_slot() {
  if [[ -n "${2:-}" ]]; then
    qb "SELECT pg_copy_logical_replication_slot('$SRC_SLOT', '$1', false, '$2')" >/dev/null
  else
    qb "SELECT pg_copy_logical_replication_slot('$SRC_SLOT', '$1')" >/dev/null
  fi
}
drop_slot() { qb "SELECT pg_drop_replication_slot('$1')" >/dev/null; }
bench_slot_stats() {
  qb "SELECT spill_txns, spill_bytes, stream_txns, stream_bytes, total_txns, total_bytes
        FROM pg_stat_replication_slots WHERE slot_name = '$1'" | tr '|' ' '
}
bench_slot_behind() {
  qb "SELECT pg_wal_lsn_diff('$2', confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = '$1'"
}
bench_recvlogical() {
  CMD=("$PG_BIN/pg_recvlogical" -d "$CONNINFO" --slot "$1" --start --no-loop
       -o proto_version=2 -o streaming=on -o messages=true -o "publication_names=$PUB" --endpos "$2" -f /dev/null)
}

bench_jobs_table() {
  echo "CREATE TABLE $1 (
  namespace text NOT NULL, name text NOT NULL, uid uuid NOT NULL DEFAULT gen_random_uuid(),
  generation bigint NOT NULL DEFAULT 1, resource_version bigint NOT NULL DEFAULT 0,
  labels jsonb NOT NULL DEFAULT '{}', annotations jsonb NOT NULL DEFAULT '{}', spec jsonb NOT NULL,
  status jsonb NOT NULL DEFAULT '{}', created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(), deleted_at timestamptz, PRIMARY KEY (namespace, name));
  SELECT crwatch.manage('$1');"
}

bench_jobs_rows() {
  local tbl=$1 from=$2 to=$3 batch=${4:-100000} lo hi
  for ((lo = from; lo <= to; lo += batch)); do
    hi=$((lo + batch - 1))
    ((hi > to)) && hi=$to
    echo "INSERT INTO $tbl (namespace, name, labels, spec, status)
    SELECT 'ns-' || (g % 10), 'job-' || g, '{\"app\": \"transcoder\"}',
      jsonb_build_object('input', 's3://media/in/' || g || '.mov', 'output', 's3://media/out/' || g,
        'codec', 'h264', 'bitrate', 4000 + g % 1000, 'resolutions', jsonb_build_array('1080p', '720p', '480p')),
      '{\"phase\": \"Pending\"}'
    FROM generate_series($lo, $hi) g;"
  done
}

bench_stamp() { perl -MTime::HiRes=time -ne 'BEGIN { $| = 1 } printf "%.6f %s", time(), $_'; }

# Prints "p50 p99 max n" in ms of arrival - commit time over the lines of FILE
# ("<epoch arrival> <event JSON>"), skipping the first second of events.
bench_lat_stats() {
  perl -MTime::Local=timegm -ne '
    next unless /^(\d+\.\d+) .*?"time":"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)(\.\d+)?Z"/;
    my $c = timegm($7, $6, $5, $4, $3 - 1, $2) + ($8 // 0);
    push @l, [$c, ($1 - $c) * 1000];
    END {
      exit 1 unless @l;
      my $t0 = $l[0][0]; my @v = sort { $a <=> $b } map { $_->[1] } grep { $_->[0] >= $t0 + 1 } @l;
      exit 1 unless @v;
      printf "%.2f %.2f %.2f %d\n", $v[int(@v * 0.5)], $v[int(@v * 0.99)], $v[-1], scalar @v;
    }' "$1"
}

# mock_start [--transactions]: a fresh crwatch-mock-kafka ($MOCK) in WORK; sets BS and MOCK_PID.  Its
# stdin is a FIFO held open on fd 9, so it lives until mock_stop closes it; start every other child
# with 9>&- so only the script holds the FIFO.  mock_cmd LINE sends it a command.
MOCK_N=0
mock_start() {
  MOCK_N=$((MOCK_N + 1))
  local fifo="$WORK/mock.$MOCK_N.in"
  mkfifo "$fifo"
  "$MOCK" "$@" <"$fifo" >"$WORK/mock.$MOCK_N.out" 2>"$WORK/mock.$MOCK_N.err" 9>&- &
  MOCK_PID=$!
  exec 9>"$fifo"
  BS=""
  for _ in $(seq 1 100); do
    BS="$(head -n 1 "$WORK/mock.$MOCK_N.out" 2>/dev/null || true)"
    [[ "$BS" == *:* ]] && break
    sleep 0.05
  done
  [[ "$BS" == *:* ]] || die "crwatch-mock-kafka printed no address"
}
mock_cmd() { echo "$*" >&9; }
mock_stop() {
  [[ -n "$MOCK_PID" ]] || return 0
  exec 9>&-
  wait "$MOCK_PID" 2>/dev/null || true
  MOCK_PID=""
}
