#!/usr/bin/env bash
# bench/latency.sh — commit -> consumer latency of `crwatch stream` at a paced rate, split into its steps.
#
#   bench/latency.sh                                          # this tree: stdout, alo, eos, poll; 5 runs of 8 s
#   CRWATCH_BEFORE=/path/to/older/crwatch bench/latency.sh    # the same runs with an older build too, interleaved
#   BENCH_LAT_MODES="alo eos" BENCH_LAT_SECS=10 bench/latency.sh
#
# One run (a throwaway PostgreSQL in a temp dir, removed on exit), for each mode, BENCH_LAT_REPEATS times,
# each binary in turn ("before" first when CRWATCH_BEFORE is given, then "after", this tree's):
#   a fresh crwatch-mock-kafka (--transactions for eos), crwatch streaming live into it on a slot of its own,
#   a consumer following the topic (kcat, fetch.wait.max.ms=BENCH_LAT_FETCH_WAIT) whose every message is
#   stamped on arrival, and pgbench -R BENCH_LAT_RATE committing one-row transactions for BENCH_LAT_SECS s.
# Modes:
#   stdout  sink=stdout, its lines stamped as they come (no broker)
#   alo     sink=kafka, delivery=at-least-once, read_uncommitted consumer
#   eos     sink=kafka, delivery=exactly-once, through the mock's transaction relay, read_committed consumer
#   poll    source=poll at poll.interval.ms=BENCH_POLL_INTERVAL into sink=kafka at-least-once
#           (a table in the sql/crwatch.sql convention; "commit" is then the writer's now())
# crwatch runs at log.level=debug, whose lines time each step of each event: the Kafka sink's
# "delivered to T [p] offset o, X ms after produce() (produced at S)" per message, exactly-once's
# "committed a transaction ... the commit took X ms (committed at S)", polling's "poll: batch N: ... in X ms".
# They are joined with the consumer's (partition, offset):
#   commit -> produce()       walsender -> crwatch, decoding, mapping (poll: "commit -> poll starts", the wait
#                             for the next poll, and "poll starts -> produce()", its query, decoding, mapping)
#   produce() -> ack          the producer's queue and linger, the broker, the delivery report served
#   commit -> ack             at-least-once: what crwatch_commit_to_ack_seconds measures
#   produce() -> Kafka commit exactly-once: the event waits for its Kafka transaction to be committed
#   Kafka commit              exactly-once: flushing what is queued, then EndTxn
#   Kafka commit -> consumer  exactly-once: the markers, the read_committed fetch
#   produce() -> consumer,    the broker and the consumer's fetch; from the delivery report on
#   ack -> consumer
#   commit -> consumer        the whole (an event's "time" is its transaction's commit time)
# A build without those debug lines (one before they existed) gives commit -> consumer only.
# Every figure: p50, p99 and max in ms over the events after the first second of each run, the runs of a
# mode and binary pooled; the load average at each run's start is logged with it.
#
# Environment (defaults in brackets):
#   BENCH_LAT_RATE [2000] rows/s   BENCH_LAT_SECS [8]   BENCH_LAT_REPEATS [5] (short runs, each on a fresh
#     mock: librdkafka 2.0.2's mock finds a fetch's offset by walking every message set the partition
#     keeps, so it slows down as a run fills it, the more the smaller the produce requests)
#   BENCH_LAT_MODES [stdout alo eos poll]   BENCH_LAT_FETCH_WAIT [1] the consumer's fetch.wait.max.ms
#     (the mock answers an empty fetch only after that wait, new data or not; a broker answers at once)
#   BENCH_POLL_INTERVAL [100] ms   BENCH_LAT_OPTS: more -X options for the "after" runs ("kafka.linger.ms=5"),
#   BENCH_LAT_BEFORE_OPTS: for the "before" runs (CRWATCH_BEFORE may be this tree's binary, with other options)
#   BENCH_LAT_VARIANTS: instead of before/after, any number of contenders, "NAME=BINARY[,OPTION...] ...",
#     e.g. "linger5=build/crwatch,kafka.linger.ms=5 default=build/crwatch" (options without -X)
#   BENCH_LAT_LOGLEVEL [debug]: info measures without the per-message lines (commit -> consumer only)
#   CRWATCH, MOCK_KAFKA: binaries to use (else built, Release)   CRWATCH_BEFORE: a second crwatch
#   BENCH_RESULTS [bench/results]   BENCH_KEEP [0] keep the temp dir
#
# Exit status: 0 every run gave events; 1 otherwise.
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init latency

RATE="${BENCH_LAT_RATE:-2000}"
SECS="${BENCH_LAT_SECS:-8}"
REPEATS="${BENCH_LAT_REPEATS:-5}"
MODES="${BENCH_LAT_MODES:-stdout alo eos poll}"
FETCH_WAIT="${BENCH_LAT_FETCH_WAIT:-1}"
POLL_IV="${BENCH_POLL_INTERVAL:-100}"
LOGLEVEL="${BENCH_LAT_LOGLEVEL:-debug}"
DB=bench_lat

bench_need kcat perl curl "$PG_BIN/psql" "$PG_BIN/pgbench"
bench_workdir crwatch-lat
MOCK_PID=""
CRW_PID=""
CONS_PID=""
# shellcheck disable=SC2317  # invoked by bench_cleanup
bench_on_exit() {
  [[ -n "$CRW_PID" ]] && kill "$CRW_PID" 2>/dev/null
  [[ -n "$CONS_PID" ]] && kill "$CONS_PID" 2>/dev/null
  mock_stop 2>/dev/null || true
}

if [[ -n "${MOCK_KAFKA:-}" ]]; then
  MOCK="$MOCK_KAFKA"
  bench_build crwatch
else
  bench_build crwatch crwatch-mock-kafka
  MOCK="$BUILD_DIR/crwatch-mock-kafka"
fi
declare -A OPTS=([after]="${BENCH_LAT_OPTS:-}" [before]="${BENCH_LAT_BEFORE_OPTS:-}")
declare -A BIN=([after]="$CRW")
BINS=(after)
if [[ -n "${CRWATCH_BEFORE:-}" ]]; then
  [[ -x "$CRWATCH_BEFORE" ]] || die "CRWATCH_BEFORE=$CRWATCH_BEFORE is not executable"
  BIN[before]="$CRWATCH_BEFORE"
  BINS=(before after)
fi
if [[ -n "${BENCH_LAT_VARIANTS:-}" ]]; then
  BINS=()
  for v in $BENCH_LAT_VARIANTS; do
    name="${v%%=*}" vspec="${v#*=}"
    [[ "$name" =~ ^[A-Za-z0-9_-]+$ && "$vspec" != "$v" ]] || die "BENCH_LAT_VARIANTS: '$v' is not NAME=BINARY[,OPTION...]"
    BIN[$name]="${vspec%%,*}"
    OPTS[$name]=""
    if [[ "$vspec" == *,* ]]; then OPTS[$name]="${vspec#*,}"; OPTS[$name]="${OPTS[$name]//,/ }"; fi
    [[ -x "${BIN[$name]}" ]] || die "BENCH_LAT_VARIANTS: ${BIN[$name]} is not executable"
    BINS+=("$name")
  done
fi


# ---------------------------------------------------------------- server and tables
# shellcheck disable=SC2119  # no server options here
bench_start_pg
export PGDATABASE=$DB
CONNINFO="dbname=$DB"
q "CREATE DATABASE $DB"
psqlx -d "$DB" -f "$ROOT/sql/crwatch.sql" >/dev/null 2>&1
qb "CREATE TABLE public.lat_t (id bigserial PRIMARY KEY, v int, note text);
CREATE PUBLICATION lat_pub FOR TABLE public.lat_t;
CREATE TABLE public.lat_jobs (
  namespace text NOT NULL DEFAULT 'default', name text NOT NULL, uid uuid NOT NULL, generation bigint NOT NULL,
  resource_version bigint NOT NULL, labels jsonb NOT NULL DEFAULT '{}', annotations jsonb NOT NULL DEFAULT '{}',
  spec jsonb NOT NULL, status jsonb NOT NULL DEFAULT '{}', created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL, deleted_at timestamptz, PRIMARY KEY (namespace, name));
SELECT crwatch.manage('public.lat_jobs');
CREATE SEQUENCE public.lat_seq;" >/dev/null
PG_VERSION="$(qb "SHOW server_version")"
echo "INSERT INTO public.lat_t (v, note) VALUES (1, 'latency probe row, about a hundred bytes of text to be realistic');" \
  >"$WORK/logical.sql"
echo "INSERT INTO public.lat_jobs (name, spec) VALUES ('j' || nextval('public.lat_seq'), '{\"preset\":\"720p\"}');" \
  >"$WORK/poll.sql"

# cpu_of PID: the CPU seconds PID used so far, "-" when it is not there.
cpu_of() {
  [[ -n "$1" ]] || { echo -; return; }
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo -
}

# ---------------------------------------------------------------- one run
FAILED=0
RUN_N=0
# lat_one MODE BINARY REPEAT: writes $WORK/<tag>.cons (consumer lines) and $WORK/<tag>.err (crwatch's log).
lat_one() {
  local mode="$1" b="$2" rep="$3" tag="$1.$2.$3" crw="${BIN[$2]}" relay=() iso=read_uncommitted
  local topic="lat.$tag" slot script="$WORK/logical.sql" load
  RUN_N=$((RUN_N + 1))
  slot="lat_${mode}_${b,,}_${rep}"
  slot="${slot//-/_}"
  local args=(stream -d "$CONNINFO" -X "slot.name=$slot" -X "log.level=$LOGLEVEL" -X "deadletter.file=$WORK/dl.jsonl"
    -X http.listen=127.0.0.1:0)
  case "$mode" in
    stdout) args+=(-X publication.name=lat_pub -X tables=public.lat_t) ;;
    alo | eos) args+=(-X publication.name=lat_pub -X tables=public.lat_t) ;;
    poll) args+=(-X source=poll -X tables=public.lat_jobs -X "poll.interval.ms=$POLL_IV"); script="$WORK/poll.sql" ;;
  esac
  if [[ "$mode" != stdout ]]; then
    [[ "$mode" == eos ]] && relay=(--transactions) iso=read_committed
    mock_start "${relay[@]}"
    mock_cmd "create $topic 4"
    args+=(-X sink=kafka -X "kafka.bootstrap.servers=$BS" -X "topic.template=$topic"
      -X "delivery=$([[ "$mode" == eos ]] && echo exactly-once || echo at-least-once)")
  fi
  local o
  for o in ${OPTS[$b]}; do args+=(-X "$o"); done
  if [[ "$mode" == stdout ]]; then
    "$crw" "${args[@]}" 2>"$WORK/$tag.err" 9>&- > >(bench_stamp >"$WORK/$tag.cons") &
    CRW_PID=$!
  else
    "$crw" "${args[@]}" 2>"$WORK/$tag.err" >/dev/null 9>&- &
    CRW_PID=$!
  fi
  for _ in $(seq 1 200); do grep -q "streaming \(from slot\|by polling\)" "$WORK/$tag.err" && break; sleep 0.05; done
  if [[ "$mode" != stdout ]]; then
    kcat -b "$BS" -C -t "$topic" -o end -u -q -X "fetch.wait.max.ms=$FETCH_WAIT" -X fetch.min.bytes=1 \
      -X "isolation.level=$iso" -f '%p %o %s\n' 2>/dev/null 9>&- > >(bench_stamp >"$WORK/$tag.cons") &
    CONS_PID=$!
  fi
  sleep 2
  load="$(cut -d' ' -f1-3 /proc/loadavg)"
  "$PG_BIN/pgbench" -n -d "$DB" -R "$RATE" -T "$SECS" -c 4 -j 2 -f "$script" >"$WORK/$tag.pgbench" 2>&1 9>&- ||
    { cat "$WORK/$tag.pgbench" >&2; die "pgbench failed"; }
  sleep 2
  local port cpu mcpu ccpu
  port="$(sed -n 's/.*http: .* on [^ ]*:\([0-9][0-9]*\)$/\1/p' "$WORK/$tag.err" | head -n 1)"
  if [[ -n "$port" ]]; then curl -s "http://127.0.0.1:$port/metrics" >"$WORK/$tag.metrics" 2>/dev/null || true; fi
  # CPU seconds (utime + stime) of crwatch, the mock and the consumer: what a mode costs.
  cpu="$(cpu_of "$CRW_PID")" mcpu="$(cpu_of "$MOCK_PID")" ccpu="$(cpu_of "$CONS_PID")"
  kill "$CRW_PID"; wait "$CRW_PID" || true; CRW_PID=""
  if [[ -n "$CONS_PID" ]]; then kill "$CONS_PID" 2>/dev/null; wait "$CONS_PID" 2>/dev/null || true; CONS_PID=""; fi
  sleep 0.3 # the stamper drains and exits
  mock_stop
  for _ in $(seq 1 100); do
    [[ "$(qb "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot' AND active")" == 0 ]] && break
    sleep 0.05
  done
  qb "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$slot'" >/dev/null
  local tps n
  tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/$tag.pgbench" | head -n 1)"
  n="$(wc -l <"$WORK/$tag.cons")"
  printf '%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$b" "$rep" "${tps:-0}" "$n" "$cpu" "$mcpu" "$ccpu" "$load" \
    >>"$WORK/runs.tsv"
  log "$(printf '%-6s %-9s run %d: %.0f rows/s committed, %s events, CPU s: crwatch %s, mock %s, consumer %s; load %s' \
    "$mode" "$b" "$rep" "${tps:-0}" "$n" "$cpu" "$mcpu" "$ccpu" "$load")"
  ((n > 0)) || { log "$tag: no events arrived (see $WORK/$tag.err)"; FAILED=1; }
}

# ---------------------------------------------------------------- the breakdown
# breakdown MODE FILE...: "step<TAB>p50<TAB>p99<TAB>max<TAB>n" per step, over the runs given as tags
# ($WORK/<tag>.cons and .err).
breakdown() {
  local mode="$1"
  shift
  perl -MTime::Local=timegm -e '
    my ($mode, $work, @tags) = @ARGV;
    my %s;   # step -> [ms...]
    my @order = $mode eq "eos"
      ? ("commit -> produce()", "produce() -> Kafka commit", "Kafka commit", "Kafka commit -> consumer", "commit -> consumer")
      : $mode eq "poll"
      ? ("commit -> poll starts", "poll starts -> produce()", "produce() -> ack", "commit -> ack", "produce() -> consumer", "commit -> consumer")
      : $mode eq "stdout" ? ("commit -> consumer")
      : ("commit -> produce()", "produce() -> ack", "commit -> ack", "produce() -> consumer", "ack -> consumer", "commit -> consumer");
    sub iso { my ($y,$mo,$d,$h,$mi,$se,$f) = $_[0] =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)(\.\d+)?/ or return undef;
              timegm($se, $mi, $h, $d, $mo - 1, $y) + ($f // 0) }
    for my $tag (@tags) {
      my (%dr, @batches, @pending);
      open(my $e, "<", "$work/$tag.err") or next;
      while (<$e>) {
        if (/kafka: delivered to \S+ \[(\d+)\] offset (\d+), ([\d.]+) ms after produce\(\) \(produced at ([\d.]+)\)/) {
          my $r = $dr{"$1/$2"} = {prod => $4, ack => $4 + $3 / 1000};
          push @pending, $r;
        } elsif (/kafka: committed a transaction of .* the commit took ([\d.]+) ms \(committed at ([\d.]+)\)/) {
          for my $r (@pending) { $r->{cend} = $2; $r->{cstart} = $2 - $1 / 1000 }
          @pending = ();
        } elsif (/^(\S+) crwatch debug: poll: batch \d+: \d+ changes in ([\d.]+) ms/i) {
          my $end = iso($1); push @batches, [$end - $2 / 1000, $end] if defined $end;
        }
      }
      close $e;
      my (@ev, $t0);
      open(my $c, "<", "$work/$tag.cons") or next;
      while (<$c>) {
        my ($arr, $p, $o) = $mode eq "stdout" ? (/^(\d+\.\d+) /) : (/^(\d+\.\d+) (\d+) (\d+) /) or next;
        my ($t) = /"time":"([^"]+)"/ or next;
        my $commit = iso($t) // next;
        push @ev, [$commit, $arr, defined $p ? $dr{"$p/$o"} : undef];
        $t0 = $commit if !defined $t0 || $commit < $t0;
      }
      close $c;
      my $bi = 0;
      for my $x (sort { $a->[0] <=> $b->[0] } @ev) {
        my ($commit, $arr, $r) = @$x;
        next if $commit < $t0 + 1; # the first second: connections warming up
        push @{$s{"commit -> consumer"}}, ($arr - $commit) * 1000;
        next unless $r;
        if ($mode eq "eos") {
          push @{$s{"commit -> produce()"}}, ($r->{prod} - $commit) * 1000;
          next unless defined $r->{cend};
          push @{$s{"produce() -> Kafka commit"}}, ($r->{cstart} - $r->{prod}) * 1000;
          push @{$s{"Kafka commit"}}, ($r->{cend} - $r->{cstart}) * 1000;
          push @{$s{"Kafka commit -> consumer"}}, ($arr - $r->{cend}) * 1000;
          next;
        }
        if ($mode eq "poll") {
          # the batch read while the event was produced: the last one to start before it
          my $start;
          for my $b (@batches) { $start = $b->[0] if $b->[0] <= $r->{prod} + 0.001 }
          if (defined $start) {
            push @{$s{"commit -> poll starts"}}, ($start - $commit) * 1000;
            push @{$s{"poll starts -> produce()"}}, ($r->{prod} - $start) * 1000;
          }
        } else {
          push @{$s{"commit -> produce()"}}, ($r->{prod} - $commit) * 1000;
          push @{$s{"ack -> consumer"}}, ($arr - $r->{ack}) * 1000;
        }
        push @{$s{"produce() -> ack"}}, ($r->{ack} - $r->{prod}) * 1000;
        push @{$s{"commit -> ack"}}, ($r->{ack} - $commit) * 1000;
        push @{$s{"produce() -> consumer"}}, ($arr - $r->{prod}) * 1000;
      }
    }
    for my $k (@order) {
      my @v = sort { $a <=> $b } @{$s{$k} // []};
      if (!@v) { printf "%s\t-\t-\t-\t0\n", $k; next }
      printf "%s\t%.2f\t%.2f\t%.2f\t%d\n", $k, $v[int(@v * 0.5)], $v[int(@v * 0.99)], $v[-1], scalar @v;
    }' "$mode" "$WORK" "$@"
}

# ---------------------------------------------------------------- runs
: >"$WORK/runs.tsv"
log "modes: $MODES; binaries: ${BINS[*]}; $REPEATS runs each at $RATE rows/s for $SECS s; consumer fetch.wait.max.ms=$FETCH_WAIT"
for ((r = 1; r <= REPEATS; r++)); do
  for mode in $MODES; do
    for b in "${BINS[@]}"; do lat_one "$mode" "$b" "$r"; done
  done
done

# ---------------------------------------------------------------- report
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/latency-$STAMP.txt"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
GIT_DIRTY="$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo dirty || echo clean)"
{
  echo
  echo "crwatch latency — $STAMP — $CRW_VERSION (git $GIT_REV, $GIT_DIRTY), PostgreSQL $PG_VERSION, $(nproc) cores"
  echo "pgbench -R $RATE one-row transactions for $SECS s, $REPEATS runs per mode and binary (pooled); consumer kcat, fetch.wait.max.ms=$FETCH_WAIT; log.level=$LOGLEVEL"
  ((FAILED)) && echo "*** A RUN GAVE NO EVENTS: see the log above ***"
  for b in "${BINS[@]}"; do echo "$b: ${BIN[$b]}${OPTS[$b]:+ -X ${OPTS[$b]}}"; done
  echo "runs (mode, binary, run, rows/s, events, CPU s of crwatch, the mock and the consumer, load average at start):"
  sed 's/^/  /' "$WORK/runs.tsv"
  for mode in $MODES; do
    echo
    case "$mode" in
      stdout) echo "stdout: sink=stdout" ;;
      alo) echo "alo: sink=kafka, at-least-once" ;;
      eos) echo "eos: sink=kafka, exactly-once (transaction relay, read_committed consumer)" ;;
      poll) echo "poll: source=poll, poll.interval.ms=$POLL_IV, sink=kafka at-least-once" ;;
    esac
    hdr="$(printf '  %-28s' step)"
    for b in "${BINS[@]}"; do hdr+="$(printf ' %30s' "$b p50 / p99 / max ms")"; done
    echo "$hdr"
    declare -A ROWS=()
    steps=()
    for b in "${BINS[@]}"; do
      tags=()
      for ((r = 1; r <= REPEATS; r++)); do tags+=("$mode.$b.$r"); done
      first=$((${#steps[@]} == 0))
      while IFS=$'\t' read -r step p50 p99 max n; do
        ((first)) && steps+=("$step")
        ROWS["$b|$step"]="$(printf '%s / %s / %s (%s)' "$p50" "$p99" "$max" "$n")"
      done < <(breakdown "$mode" "${tags[@]}")
    done
    for step in "${steps[@]}"; do
      line="$(printf '  %-28s' "$step")"
      for b in "${BINS[@]}"; do line+="$(printf ' %30s' "${ROWS["$b|$step"]:--}")"; done
      echo "$line"
    done
    unset ROWS
  done
} | tee "$OUT"
log "results written to $OUT"
exit "$FAILED"
