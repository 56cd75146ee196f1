#!/usr/bin/env bash
# tests/valgrind/stream.sh CRWATCH — one `crwatch stream --endpos` under
# valgrind (memcheck) over a mixed workload: crd and row kinds, the resource
# cache, TOASTed specs, the patch, updates, deletes, a TRUNCATE, on the
# server of the PG* environment (scripts/test's).  Fails on any memcheck error or leak
# (definite, indirect or possible), or when an event is missing.
set -euo pipefail
crwatch="${1:?usage: tests/valgrind/stream.sh CRWATCH}"
command -v valgrind >/dev/null || { echo "tests/valgrind/stream.sh: valgrind is not installed (scripts/deps installs it)" >&2; exit 1; }
root="$(cd "$(dirname "$0")/../.." && pwd)"
db="vg_$$"
work="$(mktemp -d)"
trap 'psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $db"
psql -X -q -v ON_ERROR_STOP=1 -d "$db" -f "$root/sql/crwatch.sql" >/dev/null 2>&1
psql -X -q -o /dev/null -v ON_ERROR_STOP=1 -d "$db" <<'SQL'
CREATE TABLE jobs (namespace text NOT NULL DEFAULT 'default', name text NOT NULL, uid uuid NOT NULL DEFAULT gen_random_uuid(),
  generation bigint NOT NULL DEFAULT 1, resource_version bigint NOT NULL DEFAULT 1, labels jsonb NOT NULL DEFAULT '{}',
  annotations jsonb NOT NULL DEFAULT '{}', spec jsonb NOT NULL, status jsonb, created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(), deleted_at timestamptz, PRIMARY KEY (namespace, name));
CREATE TABLE items (id int PRIMARY KEY, note text, price numeric, tags text[], doc json);
CREATE PUBLICATION vg FOR TABLE jobs, items;
SELECT 1 FROM pg_create_logical_replication_slot('vg_slot', 'pgoutput');
SQL
psql -X -q -v ON_ERROR_STOP=1 -d "$db" <<'SQL'
INSERT INTO jobs (name, spec, labels) SELECT 'job-' || g, jsonb_build_object('steps',
  (SELECT jsonb_agg(jsonb_build_object('image', md5(g::text || s::text), 'n', s)) FROM generate_series(1, 60) s)),
  jsonb_build_object('team', CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END) FROM generate_series(1, 200) g;
UPDATE jobs SET status = '{"phase":"Running"}', resource_version = resource_version + 1;
UPDATE jobs SET status = '{"phase":"Done"}', resource_version = resource_version + 1 WHERE name LIKE 'job-1%';
DELETE FROM jobs WHERE name LIKE 'job-2%';
INSERT INTO items SELECT g, 'note ' || g, g * 1.5, ARRAY['x', 'y'], '{"k": [1, 2, {"z": null}]}' FROM generate_series(1, 300) g;
UPDATE items SET note = NULL, tags = '{}' WHERE id % 3 = 0;
DELETE FROM items WHERE id % 5 = 0;
TRUNCATE items;
SQL
endpos="$(psql -X -At -d "$db" -c 'SELECT pg_current_wal_lsn()')"
# jobs: 200 ADDED, 200 + 111 (job-1, job-1x, job-1xx) MODIFIED, 12 (job-2, job-2x, job-200) DELETED;
# items: 300 ADDED, 100 MODIFIED, 60 DELETED, 1 TRUNCATED
want=984
# one transaction after endpos: the stream sees it and stops there
psql -X -q -d "$db" -c "INSERT INTO items VALUES (0, 'fence')"
set +e
valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect,possible \
  --errors-for-leak-kinds=definite,indirect,possible --track-origins=yes --log-file="$work/valgrind.log" \
  "$crwatch" stream -d "dbname=$db" --endpos "$endpos" -X slot.name=vg_slot -X publication.name=vg \
  -X slot.create=false -X publication.create=false -X resource.jobs.table=public.jobs -X resource.jobs.kind=Job \
  -X resource.jobs.shape=crd -X resource.jobs.api.version=ex.com/v1 -X resource.items.table=public.items \
  -X resource.items.kind=Item -X cache.max.entries=1000 -X cache.seed=false -X event.patch=true -X log.level=debug \
  -X deadletter.file="$work/dead.jsonl" >"$work/out.jsonl" 2>"$work/err.log"
rc=$?
set -e
got="$(grep -c . "$work/out.jsonl" || true)"
echo "tests/valgrind/stream.sh: crwatch exit $rc, $got events (want $want), endpos $endpos"
if [[ -s "$work/valgrind.log" ]]; then
  echo "--- valgrind:" >&2
  cat "$work/valgrind.log" >&2
fi
if ((rc != 0)); then
  echo "--- crwatch stderr (tail):" >&2
  tail -n 20 "$work/err.log" >&2
  exit 1
fi
[[ ! -s "$work/valgrind.log" ]] || exit 1
[[ "$got" == "$want" ]] || { echo "tests/valgrind/stream.sh: $got events, want $want" >&2; exit 1; }
python3 - "$work/out.jsonl" <<'PY'
import json, sys
types = {}
for line in open(sys.argv[1], encoding="utf-8"):
    e = json.loads(line)
    t = e["data"]["type"]
    types[t] = types.get(t, 0) + 1
    if t == "MODIFIED" and e["data"]["kind"] == "Job":
        assert "oldObject" in e["data"], line[:300]
        assert e["data"]["changed"], line[:300]
print("tests/valgrind/stream.sh: events by type", types)
PY
echo "tests/valgrind/stream.sh: no memcheck error, no leak"
