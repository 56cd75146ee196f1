#!/usr/bin/env bash
# bench/crd.sh — `crwatch stream` on crd-shaped tables:
# status-only updates of resources with a large jsonb spec, with and without
# the resource cache, under REPLICA IDENTITY DEFAULT and FULL, against
# pg_recvlogical on the same WAL; and the WAL each identity costs per update.
# See bench/README.md ("bench/crd.sh") for how to read the output.
#
#   bench/crd.sh                                   # defaults: 20,000 resources x 5 rounds, specs ~2 and ~4 KiB
#   BENCH_RESOURCES=5000 BENCH_SPEC_BYTES=2048 bench/crd.sh         # smaller, one spec size
#   CRWATCH=/path/to/crwatch bench/crd.sh                            # no build
#
# What it does, in one run:
#   1. starts a throwaway PostgreSQL (scripts/pg) in a temp dir, removed on exit;
#   2. builds crwatch (Release) unless CRWATCH is given;
#   3. for each spec size, two databases with the same table public.jobs in the
#      crwatch convention (sql/crwatch.sql + crwatch.manage), one REPLICA
#      IDENTITY DEFAULT and one FULL, each with its own publication;
#   4. per database, one after the other (so no slot's WAL range holds the other
#      database's changes): insert the resources in BATCH-row transactions,
#      create the source slot, CHECKPOINT, then ROUNDS status-only UPDATE rounds
#      over all resources in BATCH-row transactions; the WAL of the update phase
#      is measured (LSN diff, and per resource manager with pg_walinspect);
#   5. validation pass per crwatch contender (event counts, distinct ids, which
#      MODIFIED events list "/spec" in data.unknown, and on a sample that
#      object.spec (and oldObject.spec) equal the table's spec);
#   6. timed passes, interleaved, each on a fresh copy of its source slot;
#   7. prints the tables and writes bench/results/crd-<stamp>.txt.
#
# Environment (defaults in brackets):
#   BENCH_RESOURCES [20000]     resources (rows) per table
#   BENCH_SPEC_BYTES ["2048 4096"] target spec sizes (jsonb text bytes), one table pair each
#   BENCH_ROUNDS [5]            status-only update rounds over all resources
#   BENCH_BATCH [1000]          rows per insert / update transaction (= resources per namespace)
#   BENCH_INCLUDE_INSERTS [0]   1: create the slots before the inserts (the stream holds
#                               ADDED events too); 0: after them, so it holds only the updates
#   BENCH_CACHE_ENTRIES [200000] cache.max.entries of the *-cache contenders (must be >= resources)
#   BENCH_CACHE_BYTES           cache.max.bytes for every crwatch contender (e.g. 16MB, 1GB; a binary
#                               with the byte bound only; unset: its default, 64 MiB); the nocache
#                               contenders are unaffected (their kind is not cached)
#   BENCH_CACHE_SEED [1]        0: -X cache.seed=false for the cached contenders: the cache is filled by
#                               the stream only (use with BENCH_INCLUDE_INSERTS=1, whose ADDED events
#                               fill it). A crwatch with the cache horizon (b6baa15 and later) treats
#                               every replayed change older than its listing as a miss, so with the
#                               seed on, the cached contenders of this replay never hit
#   BENCH_REPEATS [3]           timed runs per contender (median reported)
#   BENCH_EXTRA [0]             1: also time crw-full-cache (and, with the byte-bound binary,
#                               crw-full-nocache)
#   BENCH_SAMPLE_EVERY [50]     validation: parse and compare every Nth event in full
#   BENCH_FENCE [1]             1: right after endpos, commit one row to bench.fence (in the
#                               publication) so crwatch sees the next transaction at once;
#                               0: no fence (see README: crwatch then reads on to the end of WAL)
#   BENCH_PG_OPTS               more server settings, space separated name=value
#   BENCH_TIMEOUT [900]         seconds before one contender run is killed (counts as a failure)
#   BENCH_PROFILE               callgrind: one more pass of crw-default, crw-default-cache and
#                               crw-full (first spec size) under valgrind; use a small BENCH_RESOURCES
#   BENCH_RESULTS [bench/results] where the result file goes
#   BENCH_BUILD_DIR [${TMPDIR:-/tmp}/crwatch-bench-build]   Release build dir
#   BENCH_KEEP [0]              1: keep the temp dir (cluster stopped, logs kept)
#   CRWATCH                     a crwatch binary to use instead of building one
#
# Exit status: 0 the benchmark ran and validated (whatever the figures);
# 1 a contender failed, timed out or crwatch's output did not validate.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init crd

N="${BENCH_RESOURCES:-20000}"
SIZES="${BENCH_SPEC_BYTES:-2048 4096}"
ROUNDS="${BENCH_ROUNDS:-5}"
BATCH="${BENCH_BATCH:-1000}"
INCLUDE_INSERTS="${BENCH_INCLUDE_INSERTS:-0}"
CACHE_ENTRIES="${BENCH_CACHE_ENTRIES:-200000}"
CACHE_BYTES="${BENCH_CACHE_BYTES:-}"
CACHE_SEED="${BENCH_CACHE_SEED:-1}"
[[ "$CACHE_SEED" == 0 || "$CACHE_SEED" == 1 ]] || { echo "bench/crd.sh: BENCH_CACHE_SEED must be 0 or 1" >&2; exit 2; }
REPEATS="${BENCH_REPEATS:-3}"
EXTRA="${BENCH_EXTRA:-0}"
SAMPLE_EVERY="${BENCH_SAMPLE_EVERY:-50}"
FENCE="${BENCH_FENCE:-1}"
TIMEOUT="${BENCH_TIMEOUT:-900}"
PROFILE="${BENCH_PROFILE:-}"

for v in N ROUNDS BATCH REPEATS SAMPLE_EVERY CACHE_ENTRIES; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "bench/crd.sh: $v must be a positive integer" >&2; exit 2; }
done
for s in $SIZES; do
  if [[ ! "$s" =~ ^[0-9]+$ ]] || ((s < 300)); then
    echo "bench/crd.sh: BENCH_SPEC_BYTES: '$s' is not a size >= 300" >&2; exit 2
  fi
done
((CACHE_ENTRIES >= N)) || { echo "bench/crd.sh: BENCH_CACHE_ENTRIES ($CACHE_ENTRIES) < BENCH_RESOURCES ($N)" >&2; exit 2; }
[[ -z "$PROFILE" || "$PROFILE" == callgrind ]] || { echo "bench/crd.sh: BENCH_PROFILE must be callgrind" >&2; exit 2; }

PUB=crd_pub
API_VERSION=bench.example.com/v1

# ---------------------------------------------------------------- prerequisites
bench_need_time
bench_need "$PG_BIN/psql" "$PG_BIN/pg_recvlogical" python3 bc
bench_workdir crwatch-crdbench
bench_build crwatch
# Which resource cache the binary has: since bce3872 it is on by default for crd
# kinds, bounded by cache.max.bytes, with resource.<id>.cache; before, only
# with cache.max.entries > 0 (and no byte bound).
# (The help is read whole first: `grep -q` on the pipe would end it early and,
# under pipefail, the SIGPIPE of crwatch would read as "no such key".)
CRW_HELP="$("$CRW" --help 2>&1 || true)"
if grep -q '^ *cache\.max\.bytes ' <<<"$CRW_HELP"; then
  BYTE_CACHE=1
  CACHE_BYTES_EFF="$(awk '$1 == "cache.max.bytes" {print $2}' <<<"$CRW_HELP")"
else
  BYTE_CACHE=0
  CACHE_BYTES_EFF=""
  [[ -z "$CACHE_BYTES" ]] || die "BENCH_CACHE_BYTES: this crwatch has no cache.max.bytes (cache only with cache.max.entries > 0)"
fi
if [[ -n "$CACHE_BYTES" ]]; then
  CACHE_BYTES_EFF="$(awk -v v="$CACHE_BYTES" 'BEGIN {
    n = v + 0; u = toupper(substr(v, length(n "") + 1)); gsub(/ /, "", u)
    m = (u == "" || u == "B") ? 1 : (u == "KB" ? 1024 : (u == "MB" ? 1048576 : (u == "GB" ? 1073741824 : -1)))
    if (m < 0) exit 1; printf "%d\n", n * m }')" || die "BENCH_CACHE_BYTES: '$CACHE_BYTES' is not a size (B, kB, MB, GB)"
fi

# ---------------------------------------------------------------- server
# No checkpoint during a measured update phase: the script checkpoints right
# before each one, so both identities pay the same full-page images.
# full_page_writes is on (scripts/pg turns it off) so the WAL figures are a
# production server's; the FPI share is reported on its own.
bench_start_pg max_wal_size=64GB checkpoint_timeout=1h full_page_writes=on

qd() { psqlx -d "$1" -Atc "$2"; } # DB SQL

PG_VERSION="$(q "SHOW server_version")"
LDWM="$(q "SHOW logical_decoding_work_mem")"
q "CREATE EXTENSION IF NOT EXISTS pg_walinspect" >/dev/null 2>&1 && HAVE_WALINSPECT=1 || HAVE_WALINSPECT=0

# ---------------------------------------------------------------- workload
# The spec of resource i: ~210 bytes of fixed fields plus `steps` objects of
# ~211 bytes each (image digests and tokens are md5 hex: pglz gets ~30% out
# of the whole, mostly from the repeated keys and prefixes; not trivially
# compressible).
nsteps_for() { local s=$(( ($1 - 195 + 105) / 211 )); ((s < 1)) && s=1; echo "$s"; }

setup_db() { # DB IDENTITY(default|full) NSTEPS
  local db="$1" ident="$2" nsteps="$3"
  q "CREATE DATABASE $db"
  psqlx -d "$db" -f "$ROOT/sql/crwatch.sql" >/dev/null
  psqlx -d "$db" >/dev/null <<SQL
CREATE TABLE public.jobs (
  namespace        text,
  name             text,
  uid              uuid,
  generation       bigint,
  resource_version bigint,
  labels           jsonb,
  annotations      jsonb,
  spec             jsonb,
  status           jsonb,
  created_at       timestamptz,
  updated_at       timestamptz,
  deleted_at       timestamptz,
  PRIMARY KEY (namespace, name)
) WITH (autovacuum_enabled = false);
SELECT crwatch.manage('public.jobs');
ALTER TABLE public.jobs REPLICA IDENTITY $( [[ $ident == full ]] && echo FULL || echo DEFAULT );
SELECT crwatch.publish('$PUB', 'public.jobs');
CREATE SCHEMA bench;
CREATE TABLE bench.fence (id int PRIMARY KEY, at timestamptz);
SELECT crwatch.publish('$PUB', 'bench.fence');
CREATE FUNCTION bench.spec(i int) RETURNS jsonb LANGUAGE sql IMMUTABLE AS \$\$
SELECT jsonb_build_object(
  'preset', 'h264-1080p-' || (i % 7),
  'priority', i % 10,
  'input', jsonb_build_object('uri', 's3://media-' || (i % 13) || '/in/' || md5(i::text) || '.mov',
                              'checksum', 'sha256:' || md5(i || 'a') || md5(i || 'b')),
  'steps', (SELECT jsonb_agg(jsonb_build_object(
             'name', 'step-' || k,
             'image', 'registry.example.com/media/worker@sha256:' || md5(i || ':' || k) || md5(k || ':' || i),
             'args', jsonb_build_array('--chunk', k, '--token', md5(i || '-' || k || 't'))))
            FROM generate_series(1, $nsteps) AS k))
\$\$;
CREATE FUNCTION bench.status(i int, r int) RETURNS jsonb LANGUAGE sql AS \$\$
SELECT jsonb_build_object(
  'phase', (ARRAY['Pending', 'Running', 'Running', 'Succeeded', 'Failed'])[1 + (i + r) % 5],
  'observedGeneration', 1,
  'progress', (i * 7 + r * 13) % 101,
  'attempt', r,
  'conditions', jsonb_build_array(jsonb_build_object(
    'type', 'Ready', 'status', CASE WHEN (i + r) % 3 = 0 THEN 'False' ELSE 'True' END,
    'reason', 'Round' || r, 'lastTransitionTime', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    'message', 'chunk ' || r || ' of job ' || i || ' done')))
\$\$;
SQL
}

# Namespaces team-000.. hold BATCH resources each: one transaction = one namespace.
insert_sql() {
  local lo hi ns
  echo "\\set ON_ERROR_STOP 1"
  for ((lo = 1; lo <= N; lo += BATCH)); do
    hi=$((lo + BATCH - 1)); ((hi > N)) && hi=$N
    ns=$(( (lo - 1) / BATCH ))
    echo "INSERT INTO public.jobs (namespace, name, labels, annotations, spec, status)
      SELECT 'team-$(printf %03d "$ns")', 'job-' || lpad(i::text, 7, '0'),
        jsonb_build_object('app.kubernetes.io/name', 'transcoder', 'team', 'team-$(printf %03d "$ns")', 'tier', 'batch-' || (i % 4)),
        jsonb_build_object('bench.example.com/source', 'bench/crd.sh'),
        bench.spec(i), jsonb_build_object('phase', 'Pending')
      FROM generate_series($lo, $hi) AS i;"
  done
}
update_sql() {
  local r lo ns
  echo "\\set ON_ERROR_STOP 1"
  for ((r = 1; r <= ROUNDS; r++)); do
    for ((lo = 1; lo <= N; lo += BATCH)); do
      ns=$(( (lo - 1) / BATCH ))
      echo "UPDATE public.jobs SET status = bench.status(substr(name, 5)::int, $r) WHERE namespace = 'team-$(printf %03d "$ns")';"
    done
  done
}

declare -A ENDPOS UPD_WAL UPD_WALS INS_WAL TOASTED SPECTXT SPECCOL ROWCOL EVENTS
# run_workload KEY DB: inserts, slot, checkpoint, updates; records the figures.
run_workload() {
  local key="$1" db="$2" l0 l1 l2 w0 w1 toast
  local slot="src_$key"
  insert_sql >"$WORK/insert-$key.sql"
  update_sql >"$WORK/update-$key.sql"
  ((INCLUDE_INSERTS)) && qd "$db" "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput')" >/dev/null
  l0="$(q "SELECT pg_current_wal_lsn()")"
  psqlx -d "$db" -f "$WORK/insert-$key.sql" >/dev/null
  l1="$(q "SELECT pg_current_wal_lsn()")"
  INS_WAL[$key]="$(q "SELECT pg_wal_lsn_diff('$l1', '$l0')::bigint")"
  ((INCLUDE_INSERTS)) || qd "$db" "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput')" >/dev/null
  qd "$db" "VACUUM (ANALYZE) public.jobs" >/dev/null # hint bits and VM set now, not during the measured phase
  q "CHECKPOINT"
  l1="$(q "SELECT pg_current_wal_lsn()")"
  w0=$(date +%s.%N)
  psqlx -d "$db" -f "$WORK/update-$key.sql" >/dev/null
  w1=$(date +%s.%N)
  l2="$(q "SELECT pg_current_wal_lsn()")"
  ENDPOS[$key]="$l2"
  # The fence: the first transaction past endpos in this database.
  if ((FENCE)); then qd "$db" "INSERT INTO bench.fence VALUES (1, now())" >/dev/null; fi
  UPD_WAL[$key]="$(q "SELECT pg_wal_lsn_diff('$l2', '$l1')::bigint")"
  if ((HAVE_WALINSPECT)); then
    # resource_manager count record_size fpi_size combined_size, for the update phase
    UPD_WALS[$key]="$(q "SELECT string_agg(format('%s:%s:%s:%s', \"resource_manager/record_type\", count, record_size, fpi_size), ' '
                           ORDER BY combined_size DESC)
                         FROM pg_get_wal_stats('$l1', '$l2') WHERE count > 0")"
  fi
  # How the spec is stored: externally TOASTed values are chunk_ids in the toast table.
  toast="$(qd "$db" "SELECT reltoastrelid::regclass FROM pg_class WHERE oid = 'public.jobs'::regclass")"
  TOASTED[$key]="$(qd "$db" "SELECT count(DISTINCT chunk_id) FROM $toast")"
  read -r "SPECTXT[$key]" "SPECCOL[$key]" "ROWCOL[$key]" < <(qd "$db" \
    "SELECT round(avg(octet_length(spec::text))), round(avg(pg_column_size(spec))), round(avg(pg_column_size(j.*)))
       FROM public.jobs j" | tr '|' ' ')
  EVENTS[$key]=$((ROUNDS * N + (INCLUDE_INSERTS ? N : 0)))
  [[ "$(qd "$db" "SELECT count(*) FROM public.jobs WHERE generation = 1 AND status->>'attempt' = '$ROUNDS'")" == "$N" ]] ||
    die "$db: not every resource got $ROUNDS status-only updates with generation 1"
  log "$(printf '%-14s updates took %5.1f s; update WAL %s MiB (%s B/update); spec ~%s B text, %s B stored, %s of %s specs TOASTed' \
    "$key" "$(echo "$w1 - $w0" | bc -l)" "$((UPD_WAL[$key] / 1048576))" "$((UPD_WAL[$key] / (ROUNDS * N)))" \
    "${SPECTXT[$key]}" "${SPECCOL[$key]}" "${TOASTED[$key]}" "$N")"
}

KEYS=()
for s in $SIZES; do
  nsteps=$(nsteps_for "$s")
  for ident in default full; do
    key="s${s}_$ident"
    KEYS+=("$key")
    setup_db "crd_$key" "$ident" "$nsteps"
  done
done
log "workload per table: $N resources (spec sizes: $SIZES), inserted in $BATCH-row txns, then $ROUNDS status-only rounds in $BATCH-row txns; slots created $( ((INCLUDE_INSERTS)) && echo before the inserts || echo after the inserts, before the updates)"
for key in "${KEYS[@]}"; do run_workload "$key" "crd_$key"; done

# ---------------------------------------------------------------- contenders
# NAME -> "size-independent identity:cache"; rl = pg_recvlogical
if ((BYTE_CACHE)); then
  # crw-default and crw-full have the default cache (crd kinds); -nocache turns it off for the kind.
  CONTENDERS=(rl-default crw-default crw-default-nocache crw-default-cache rl-full crw-full)
  ((EXTRA)) && CONTENDERS+=(crw-full-cache crw-full-nocache)
else
  CONTENDERS=(rl-default crw-default crw-default-cache rl-full crw-full)
  ((EXTRA)) && CONTENDERS+=(crw-full-cache)
fi
# is_cached CONTENDER: whether crwatch keeps the kind in the resource cache in that run
is_cached() {
  case "$1" in
    rl-* | *-nocache) return 1 ;;
    *-cache) return 0 ;;
    *) ((BYTE_CACHE)) ;;
  esac
}
ident_of() { case "$1" in *-default*) echo default ;; *) echo full ;; esac; }

copy_slot() { qd "$1" "SELECT pg_copy_logical_replication_slot('$2', '$3')" >/dev/null; } # DB SRC NAME
drop_slot() { qd "$1" "SELECT pg_drop_replication_slot('$2')" >/dev/null; }
slot_stats() {
  qd "$1" "SELECT spill_txns, spill_bytes, stream_txns, stream_bytes, total_txns, total_bytes
             FROM pg_stat_replication_slots WHERE slot_name = '$2'" | tr '|' ' '
}
confirmed_behind() { # DB SLOT ENDPOS
  qd "$1" "SELECT pg_wal_lsn_diff('$3', confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = '$2'"
}

# cmd_for CONTENDER DB SLOT ENDPOS [LOGLEVEL] -> array CMD
cmd_for() {
  local c="$1" db="$2" slot="$3" endpos="$4" level="${5:-warn}"
  case "$c" in
    rl-*) CMD=("$PG_BIN/pg_recvlogical" -d "dbname=$db" --slot "$slot" --start --no-loop
               -o proto_version=2 -o streaming=on -o messages=true -o "publication_names=$PUB"
               --endpos "$endpos" -f /dev/null) ;;
    crw-*) CMD=("$CRW" stream -d "dbname=$db" --endpos "$endpos"
               -X "slot.name=$slot" -X "publication.name=$PUB" -X slot.create=false -X publication.create=false
               -X resource.jobs.table=public.jobs -X resource.jobs.kind=Job -X resource.jobs.shape=crd
               -X "resource.jobs.api.version=$API_VERSION" -X "log.level=$level"
               -X "deadletter.file=$WORK/deadletter-$slot.jsonl")
           if [[ "$c" == *-nocache ]]; then CMD+=(-X resource.jobs.cache=false)
           elif [[ "$c" == *-cache ]]; then CMD+=(-X "cache.max.entries=$CACHE_ENTRIES"); fi
           if [[ -n "$CACHE_BYTES" && "$c" != *-nocache ]]; then CMD+=(-X "cache.max.bytes=$CACHE_BYTES"); fi
           if ((CACHE_SEED == 0)) && is_cached "$c"; then CMD+=(-X cache.seed=false); fi ;;
    *) die "unknown contender $c" ;;
  esac
}

FAILED=0
RAW="$WORK/raw.tsv"
: >"$RAW"

# run_one KEY CONTENDER ITER
run_one() {
  local key="$1" c="$2" i="$3" db="crd_$1" slot="t_${2//-/_}_$3" rc=0 t0 t1 secs rss cpu cpu_u cpu_s behind stats
  copy_slot "$db" "src_$key" "$slot"
  cmd_for "$c" "$db" "$slot" "${ENDPOS[$key]}"
  t0=$(date +%s.%N)
  (cd "$WORK" && timeout --kill-after=10 "$TIMEOUT" /usr/bin/time -f '%M %U %S' -o "$WORK/rss" "${CMD[@]}") \
    >/dev/null 2>"$WORK/$key-$slot.err" || rc=$?
  t1=$(date +%s.%N)
  secs=$(echo "$t1 - $t0" | bc -l)
  read -r rss cpu_u cpu_s < <(tail -n 1 "$WORK/rss" 2>/dev/null || true) || true
  [[ "${rss:-}" =~ ^[0-9]+$ ]] || rss=0
  cpu=$(echo "${cpu_u:-0} + ${cpu_s:-0}" | bc -l)
  behind=$(confirmed_behind "$db" "$slot" "${ENDPOS[$key]}")
  stats="$(slot_stats "$db" "$slot")"
  drop_slot "$db" "$slot"
  printf '%s\t%s\t%s\t%.3f\t%s\t%s\t%s\t%.2f\t%s\n' "$key" "$c" "$i" "$secs" "$rss" "$rc" "$behind" "$cpu" "${stats// /$'\t'}" >>"$RAW"
  if ((rc != 0)); then
    log "$key $c run $i FAILED (exit $rc)"; sed 's/^/    /' "$WORK/$key-$slot.err" | tail -n 20 >&2
    FAILED=1
  elif [[ ! "$behind" =~ ^-?[0-9]+$ ]] || ((behind > 0)); then
    log "$key $c run $i FAILED: exit 0 but confirmed_flush_lsn is ${behind:-?} bytes before endpos"
    FAILED=1
  fi
  log "$(printf '%-14s %-17s run %d: %7.2f s  client CPU %6.2f s  peak RSS %7.1f MiB  exit %d' \
    "$key" "$c" "$i" "$secs" "$cpu" "$(echo "$rss / 1024" | bc -l)" "$rc")"
}

# ---------------------------------------------------------------- validation
# Reads crwatch's CloudEvents on stdin. Counts events, verbs and distinct ids;
# counts the events with data.unknown and those listing "/spec"; every Nth event
# is parsed whole and its object.spec (and oldObject.spec, when present)
# compared with the table's spec (which status-only updates never change).
cat >"$WORK/validate.py" <<'PY'
import json, sys
specs_file, every, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
specs = {}
with open(specs_file, encoding="utf-8") as f:
    for line in f:
        k, _, v = line.rstrip("\n").partition("\t")
        specs[k] = v
n = 0; verbs = {}; ids = set(); unknown_any = 0; unknown_spec = 0; with_old = 0; with_changed = 0
old_unknown = 0; unknown_spec_with_old = 0; old_on_modified = 0
sampled = 0; old_newer = 0; spec_ok = 0; spec_missing = 0; spec_bad = 0; old_ok = 0; old_bad = 0; first = {}
changed_kinds = {}
for line in sys.stdin:
    n += 1
    i = line.find('"id":"'); j = line.find('"', i + 6)
    ids.add(line[i + 6:j])
    t = line.find('"data":{"type":"'); verb = line[t + 16:line.find('"', t + 16)]
    verbs[verb] = verbs.get(verb, 0) + 1
    has_old = '"oldObject":' in line
    if has_old and verb == "MODIFIED":
        old_on_modified += 1
    if '"oldObjectUnknown":true' in line:
        old_unknown += 1
    u = line.rfind(',"unknown":[')
    if u >= 0:
        unknown_any += 1
        arr = json.loads(line[u + 11:line.find("]", u) + 1])
        if "/spec" in arr:
            unknown_spec += 1
            if has_old:
                unknown_spec_with_old += 1
    full = n % every == 0 or verb not in first
    if not full:
        if has_old:
            with_old += 1
        if '"changed":' in line:
            with_changed += 1
        continue
    ev = json.loads(line); d = ev["data"]
    if "oldObject" in d: with_old += 1
    if "changed" in d:
        with_changed += 1
        key = ",".join(d["changed"]); changed_kinds[key] = changed_kinds.get(key, 0) + 1
    if verb not in first:
        o = dict(d)
        for k in ("object", "oldObject"):
            if k in o:
                o[k] = {kk: ("<%d keys>" % len(vv) if isinstance(vv, dict) and kk == "spec" else vv)
                        for kk, vv in o[k].items()}
        first[verb] = o
    sampled += 1
    want = json.loads(specs[d["key"]])
    obj = d.get("object", {})
    if "spec" not in obj: spec_missing += 1
    elif obj["spec"] == want: spec_ok += 1
    else: spec_bad += 1
    if "oldObject" in d:
        if d["oldObject"].get("spec") == want: old_ok += 1
        else: old_bad += 1
        # a cache seeded from the table's current state can be ahead of the stream
        if int(d["oldObject"]["metadata"]["resourceVersion"]) > int(obj["metadata"]["resourceVersion"]):
            old_newer += 1
res = dict(events=n, verbs=verbs, distinct_ids=len(ids), unknown_any=unknown_any, unknown_spec=unknown_spec,
           with_oldObject=with_old, with_changed=with_changed, oldObjectUnknown=old_unknown, oldObject_on_modified=old_on_modified,
           unknown_spec_with_oldObject=unknown_spec_with_old, sampled=sampled, sample_spec_equal=spec_ok,
           sample_spec_missing=spec_missing, sample_spec_different=spec_bad,
           sample_oldObject_spec_equal=old_ok, sample_oldObject_spec_different=old_bad,
           sample_oldObject_newer_than_object=old_newer,
           sample_changed=changed_kinds, first_events=first)
with open(out, "w") as f:
    json.dump(res, f, indent=1, sort_keys=True)
PY

declare -A VALID HITS SEEDLOG
# validate KEY CONTENDER
validate() {
  local key="$1" c="$2" db="crd_$1" slot="v_${2//-/_}" vrc=0 res
  [[ -f "$WORK/specs-$key.tsv" ]] ||
    qd "$db" "SELECT namespace || '/' || name, spec::text FROM public.jobs" | tr '|' '\t' >"$WORK/specs-$key.tsv"
  copy_slot "$db" "src_$key" "$slot"
  cmd_for "$c" "$db" "$slot" "${ENDPOS[$key]}" info
  set +o pipefail
  (cd "$WORK" || exit 1; r=0; timeout --kill-after=10 "$TIMEOUT" "${CMD[@]}" 2>"$WORK/validate-$key-$c.err" || r=$?; echo "$r" >"$WORK/vrc") |
    python3 "$WORK/validate.py" "$WORK/specs-$key.tsv" "$SAMPLE_EVERY" "$WORK/validate-$key-$c.json"
  set -o pipefail
  vrc=$(cat "$WORK/vrc")
  drop_slot "$db" "$slot"
  res="$WORK/validate-$key-$c.json"
  # What the stream must show. Without the cache under DEFAULT: "/spec" unknown on
  # every MODIFIED of a TOASTed spec, no oldObject. With the cache under DEFAULT:
  # a hit has oldObject and the whole spec; a miss (evicted by the byte bound)
  # says oldObjectUnknown and, for a TOASTed spec, lists "/spec" unknown; never
  # both an oldObject and an unknown spec. FULL: whole specs everywhere.
  local mode=full
  if [[ "$(ident_of "$c")" == default ]]; then is_cached "$c" && mode=cached || mode=plain; fi
  VALID[$key/$c]="$(python3 - "$res" "$vrc" "${EVENTS[$key]}" "$((ROUNDS * N))" "$mode" "$((ROUNDS * TOASTED[$key]))" \
    "$((TOASTED[$key] == N ? 1 : 0))" "$WORK/deadletter-$slot.jsonl" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1])); vrc = int(sys.argv[2]); events, modified = map(int, sys.argv[3:5])
mode = sys.argv[5]; toasted_updates = int(sys.argv[6]); all_toasted = sys.argv[7] == "1"; dl = sys.argv[8]
errs = []
if vrc != 0: errs.append("crwatch exited %d" % vrc)
if r["events"] != events: errs.append("%d events, want %d" % (r["events"], events))
if r["verbs"].get("MODIFIED", 0) != modified: errs.append("%d MODIFIED, want %d" % (r["verbs"].get("MODIFIED", 0), modified))
if r["distinct_ids"] != events: errs.append("%d distinct ids, want %d" % (r["distinct_ids"], events))
us, ou = r["unknown_spec"], r["oldObjectUnknown"]
if mode == "plain":
    if us != toasted_updates: errs.append('%d events list "/spec" unknown, want %d' % (us, toasted_updates))
    if ou or r["with_oldObject"]: errs.append("no cache, yet %d oldObjectUnknown and %d oldObject" % (ou, r["with_oldObject"]))
elif mode == "cached":
    if r["unknown_spec_with_oldObject"]: errs.append('%d events have an oldObject and list "/spec" unknown' % r["unknown_spec_with_oldObject"])
    if r["oldObject_on_modified"] + ou != modified: errs.append("%d oldObject + %d oldObjectUnknown != %d MODIFIED" % (r["oldObject_on_modified"], ou, modified))
    if toasted_updates == 0 and us: errs.append('%d events list "/spec" unknown, no spec is TOASTED' % us)
    if all_toasted and us != ou: errs.append('%d events list "/spec" unknown, %d cache misses: want equal' % (us, ou))
    if us > ou: errs.append('%d events list "/spec" unknown, more than the %d cache misses' % (us, ou))
else:
    if us or ou: errs.append('FULL, yet %d events list "/spec" unknown and %d oldObjectUnknown' % (us, ou))
if r["unknown_any"] != r["unknown_spec"]: errs.append("%d events with other unknown fields" % (r["unknown_any"] - r["unknown_spec"]))
if r["sample_spec_different"] or r["sample_oldObject_spec_different"]:
    errs.append("sampled specs differ from the table: %d object, %d oldObject" % (r["sample_spec_different"], r["sample_oldObject_spec_different"]))
if us == 0 and r["sample_spec_missing"]: errs.append("%d sampled objects lack spec" % r["sample_spec_missing"])
if os.path.exists(dl) and os.path.getsize(dl) > 0: errs.append("dead-letter file not empty")
print("ok" if not errs else "FAIL: " + "; ".join(errs))
PY
)"
  # The cache hit rate of the pass (MODIFIED with an oldObject; DEFAULT, cached), and crwatch's seed line.
  [[ "$mode" == cached ]] && HITS[$key/$c]="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); m=r["verbs"].get("MODIFIED",0); print("%.1f" % (100.0*r["oldObject_on_modified"]/m) if m else "-")' "$res")"
  SEEDLOG[$key/$c]="$(grep -o 'cache: [0-9]* of [0-9]* rows.*' "$WORK/validate-$key-$c.err" | head -n 1 || true)"
  [[ "${VALID[$key/$c]}" == ok ]] || { FAILED=1; tail -n 20 "$WORK/validate-$key-$c.err" | sed 's/^/    /' >&2; }
  log "$(printf 'validation %-14s %-17s %s' "$key" "$c" \
    "$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%d events %s, %d distinct ids, unknown /spec on %d, oldObject on %d, oldObjectUnknown on %d; sampled %d: spec equal %d, missing %d, oldObject newer %d" % (r["events"], r["verbs"], r["distinct_ids"], r["unknown_spec"], r["with_oldObject"], r["oldObjectUnknown"], r["sampled"], r["sample_spec_equal"], r["sample_spec_missing"], r["sample_oldObject_newer_than_object"]))' "$res"): ${VALID[$key/$c]}")"
}

for key in "${KEYS[@]}"; do
  for c in "${CONTENDERS[@]}"; do
    [[ "$c" == crw-* && "$(ident_of "$c")" == "${key##*_}" ]] && validate "$key" "$c"
  done
done

# ---------------------------------------------------------------- timed runs
log "timed runs: ${CONTENDERS[*]} on each spec size, $REPEATS each, interleaved"
for ((i = 1; i <= REPEATS; i++)); do
  for s in $SIZES; do
    for c in "${CONTENDERS[@]}"; do run_one "s${s}_$(ident_of "$c")" "$c" "$i"; done
  done
done

# ---------------------------------------------------------------- optional profile
PROFILE_OUT=""
if [[ "$PROFILE" == callgrind ]]; then
  command -v valgrind >/dev/null || die "BENCH_PROFILE=callgrind: valgrind is not installed"
  mkdir -p "$RESULTS_DIR"
  PROFILE_OUT="$RESULTS_DIR/crd-$STAMP-callgrind.txt"
  s1="${SIZES%% *}"
  for c in crw-default crw-default-cache crw-full; do
    key="s${s1}_$(ident_of "$c")"
    copy_slot "crd_$key" "src_$key" p_slot
    cmd_for "$c" "crd_$key" p_slot "${ENDPOS[$key]}"
    log "profile: $c ($key) under valgrind --tool=callgrind"
    prc=0
    (cd "$WORK" && timeout "$TIMEOUT" valgrind -q --tool=callgrind --callgrind-out-file="$WORK/callgrind-$c.out" "${CMD[@]}") \
      >/dev/null 2>"$WORK/profile.err" || prc=$?
    drop_slot "crd_$key" p_slot
    ((prc == 0)) || { log "profile run exited $prc"; tail -n 20 "$WORK/profile.err" >&2; }
    {
      echo "# callgrind (instructions), one $c pass over $key (${EVENTS[$key]} events)"
      callgrind_annotate --inclusive=no "$WORK/callgrind-$c.out" 2>/dev/null | head -n 50 || true
      echo "## inclusive"
      callgrind_annotate --inclusive=yes "$WORK/callgrind-$c.out" 2>/dev/null | sed -n '/Ir/,$p' | head -n 40 || true
    } >>"$PROFILE_OUT"
  done
  log "profile written to $PROFILE_OUT"
fi

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/crd-$STAMP.txt"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
GIT_DIRTY="$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo dirty || echo clean)"

declare -A SECS RSS CPU
for key in "${KEYS[@]}"; do
  for c in "${CONTENDERS[@]}"; do
    [[ "$(ident_of "$c")" == "${key##*_}" ]] || continue
    SECS[$key/$c]=$(awk -F'\t' -v k="$key" -v c="$c" '$1 == k && $2 == c {print $4}' "$RAW" | median)
    RSS[$key/$c]=$(awk -F'\t' -v k="$key" -v c="$c" '$1 == k && $2 == c {print $5}' "$RAW" | median)
    CPU[$key/$c]=$(awk -F'\t' -v k="$key" -v c="$c" '$1 == k && $2 == c {print $8}' "$RAW" | median)
  done
done

walstat() { # KEY RMGR FIELD(2 count, 3 record, 4 fpi) -> value
  tr ' ' '\n' <<<"${UPD_WALS[$1]:-}" | awk -F: -v r="$2" -v f="$3" '$1 == r {print $f; found=1} END {if (!found) print 0}'
}
walsum() { # KEY FIELD
  tr ' ' '\n' <<<"${UPD_WALS[$1]:-}" | awk -F: -v f="$2" 'NF {s += $f} END {print s + 0}'
}

{
  echo
  echo "crwatch crd benchmark — $STAMP — $CRW_VERSION (git $GIT_REV, $GIT_DIRTY, binary sha256 $CRW_SHA), PostgreSQL $PG_VERSION, $(nproc) cores"
  echo "workload per table: $N crd-shaped resources, inserted in $BATCH-row txns; then $ROUNDS status-only update rounds over all of them in $BATCH-row txns"
  echo "streamed (timed): $( ((INCLUDE_INSERTS)) && echo "the inserts and the updates ($N ADDED + $((ROUNDS * N)) MODIFIED per table)" || echo "the updates only ($((ROUNDS * N)) MODIFIED per table; slot created after the inserts)")"
  echo "endpos: the end of each table's update phase; $( ((FENCE)) && echo "a one-row fence transaction follows it in the same database" || echo "no fence (crwatch reads on until a keepalive past endpos)")"
  echo "logical_decoding_work_mem = $LDWM"
  if ((BYTE_CACHE)); then
    echo "resource cache: on by default for crd kinds (crw-default, crw-full), cache.max.bytes=${CACHE_BYTES:-default} ($CACHE_BYTES_EFF B); *-nocache: resource.jobs.cache=false; *-cache: + cache.max.entries=$CACHE_ENTRIES"
  else
    echo "resource cache: only with cache.max.entries > 0 (this binary has no byte bound): *-cache contenders, cache.max.entries=$CACHE_ENTRIES"
  fi
  if ((CACHE_SEED)); then
    echo "cached runs are seeded at start by listing the table (inside the timed run); 'hits' = MODIFIED events with an oldObject in the validation pass"
  else
    echo "cached runs: cache.seed=false (filled by the stream$( ((INCLUDE_INSERTS)) && echo "'s ADDED events" || echo " only: no inserts in it, so no hits")); 'hits' = MODIFIED events with an oldObject in the validation pass"
  fi
  if ((FAILED)); then echo "*** A RUN FAILED OR DID NOT VALIDATE: the figures below mean nothing (see the log above) ***"; fi
  for s in $SIZES; do
    kd="s${s}_default"; kf="s${s}_full"
    echo
    echo "spec ~${SPECTXT[$kd]} B as JSON text, ${SPECCOL[$kd]} B stored (pg_column_size; row ~${ROWCOL[$kd]} B); externally TOASTed: ${TOASTED[$kd]} of $N specs"
    printf '  %-19s %8s %10s %7s %13s %13s %7s  %s\n' contender seconds rows/s "vs rl" "peak RSS MiB" "client CPU s" "hits %" validation
    for c in "${CONTENDERS[@]}"; do
      key="s${s}_$(ident_of "$c")"; rl="rl-$(ident_of "$c")"
      printf '  %-19s %8.2f %10.0f %7.2f %13.1f %13.2f %7s  %s\n' "$c" "${SECS[$key/$c]}" \
        "$(echo "${EVENTS[$key]} / ${SECS[$key/$c]}" | bc -l)" "$(echo "${SECS[$key/$rl]} / ${SECS[$key/$c]}" | bc -l)" \
        "$(echo "${RSS[$key/$c]} / 1024" | bc -l)" "${CPU[$key/$c]}" "${HITS[$key/$c]:--}" "${VALID[$key/$c]:--}"
    done
    for c in "${CONTENDERS[@]}"; do
      if [[ "$c" != crw-default* ]] || ! is_cached "$c"; then continue; fi
      key="s${s}_default"
      r=$(echo "${SECS[$key/rl-default]} / ${SECS[$key/$c]}" | bc -l)
      g1=$( (($(echo "$r >= 0.9" | bc -l))) && echo MET || echo "NOT MET")
      if [[ -n "$CACHE_BYTES_EFF" ]]; then
        lim=$(( (CACHE_BYTES_EFF + 16 * 1048576) / 1024 ))
        g2="peak RSS $(printf '%.1f' "$(echo "${RSS[$key/$c]} / 1024" | bc -l)") MiB <= cache.max.bytes + 16 MiB = $((lim / 1024)) MiB: $( ((${RSS[$key/$c]%.*} <= lim)) && echo MET || echo "NOT MET")"
      else
        g2="no byte bound in this binary"
      fi
      printf '  goal %-19s vs rl %.2f >= 0.90: %s; %s\n' "$c" "$r" "$g1" "$g2"
    done
    echo "  WAL of the status-only update phase ($((ROUNDS * N)) updates, after a CHECKPOINT):"
    printf '  %-9s %8s %9s %9s %9s %9s %12s %10s\n' identity "MiB" "B/update" "heap B/u" "btree B/u" "FPI B/u" "B/u w/o FPI" "vs DEFAULT"
    for k in "$kd" "$kf"; do
      u=$((ROUNDS * N))
      printf '  %-9s %8.1f %9.0f %9s %9s %9s %12s %10.2f\n' "$(tr "[:lower:]" "[:upper:]" <<<"${k##*_}")" "$(echo "${UPD_WAL[$k]} / 1048576" | bc -l)" \
        "$(echo "${UPD_WAL[$k]} / $u" | bc -l)" \
        "$( ((HAVE_WALINSPECT)) && echo $(( ($(walstat "$k" Heap 3) + $(walstat "$k" Heap2 3)) / u )) || echo -)" \
        "$( ((HAVE_WALINSPECT)) && echo $(( $(walstat "$k" Btree 3) / u )) || echo -)" \
        "$( ((HAVE_WALINSPECT)) && echo $(( $(walsum "$k" 4) / u )) || echo -)" \
        "$( ((HAVE_WALINSPECT)) && echo $(( (UPD_WAL[$k] - $(walsum "$k" 4)) / u )) || echo -)" \
        "$(echo "${UPD_WAL[$k]} / ${UPD_WAL[$kd]}" | bc -l)"
    done
  done
  echo
  echo "(medians of $REPEATS interleaved runs, wall clock incl. connect and, for *-cache, the table listing; rows/s = events / seconds;"
  echo " rl = pg_recvlogical proto_version=2 streaming=on messages=true -> /dev/null on the same WAL (the DEFAULT or the FULL table's);"
  echo " crw = crwatch stream, crd shape, CloudEvents -> /dev/null; 'vs rl' = rows/s ratio to the rl row of the same WAL)"
} | tee "$WORK/table.txt"

{
  echo "# crwatch bench/crd.sh results; key=value, then raw runs"
  echo "stamp=$STAMP"
  echo "crwatch_version=$CRW_VERSION"
  echo "crwatch_binary=$CRW"
  echo "crwatch_sha256_16=$CRW_SHA"
  echo "git_rev=$GIT_REV"
  echo "git_tree=$GIT_DIRTY"
  echo "pg_version=$PG_VERSION"
  echo "cores=$(nproc)"
  echo "logical_decoding_work_mem=$LDWM"
  echo "resources=$N"
  echo "rounds=$ROUNDS"
  echo "batch=$BATCH"
  echo "include_inserts=$INCLUDE_INSERTS"
  echo "fence=$FENCE"
  echo "cache_max_entries=$CACHE_ENTRIES"
  echo "cache_seed=$CACHE_SEED"
  echo "byte_cache=$BYTE_CACHE"
  echo "cache_max_bytes=${CACHE_BYTES_EFF:-none}"
  echo "repeats=$REPEATS"
  for key in "${KEYS[@]}"; do
    echo "${key}_events=${EVENTS[$key]}"
    echo "${key}_spec_text_bytes=${SPECTXT[$key]}"
    echo "${key}_spec_stored_bytes=${SPECCOL[$key]}"
    echo "${key}_row_bytes=${ROWCOL[$key]}"
    echo "${key}_specs_toasted=${TOASTED[$key]}"
    echo "${key}_insert_wal_bytes=${INS_WAL[$key]}"
    echo "${key}_update_wal_bytes=${UPD_WAL[$key]}"
    echo "${key}_update_wal_bytes_per_update=$((UPD_WAL[$key] / (ROUNDS * N)))"
    echo "${key}_update_wal_by_rmgr=${UPD_WALS[$key]:-n/a} (rmgr:count:record_bytes:fpi_bytes)"
    echo "${key}_endpos=${ENDPOS[$key]}"
    for c in "${CONTENDERS[@]}"; do
      [[ "$(ident_of "$c")" == "${key##*_}" ]] || continue
      k="${key}_${c//-/_}"
      echo "${k}_median_seconds=${SECS[$key/$c]}"
      echo "${k}_rows_per_second=$(printf '%.0f' "$(echo "${EVENTS[$key]} / ${SECS[$key/$c]}" | bc -l)")"
      echo "${k}_peak_rss_kib=${RSS[$key/$c]}"
      echo "${k}_client_cpu_seconds=${CPU[$key/$c]}"
      [[ -n "${VALID[$key/$c]:-}" ]] && echo "${k}_validation=${VALID[$key/$c]}"
      [[ -n "${HITS[$key/$c]:-}" ]] && echo "${k}_cache_hit_percent=${HITS[$key/$c]}"
      [[ -n "${SEEDLOG[$key/$c]:-}" ]] && echo "${k}_seed_log=${SEEDLOG[$key/$c]}"
    done
  done
  echo "failed=$FAILED"
  [[ -n "$PROFILE_OUT" ]] && echo "profile=$PROFILE_OUT"
  for f in "$WORK"/validate-*.json; do
    [[ -f "$f" ]] || continue
    echo "# $(basename "$f" .json)"
    sed 's/^/#   /' "$f"
  done
  echo "# raw: table contender iteration seconds peak_rss_kib exit_code confirmed_flush_bytes_before_endpos client_cpu_seconds spill_txns spill_bytes stream_txns stream_bytes total_txns total_bytes"
  sed 's/^/raw\t/' "$RAW"
} >"$OUT"
log "results written to $OUT"

exit "$FAILED"
