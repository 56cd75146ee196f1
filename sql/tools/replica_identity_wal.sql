-- sql/tools/replica_identity_wal.sql — what each REPLICA IDENTITY costs in WAL.
--
--     createdb walbench
--     psql -X -q -v ON_ERROR_STOP=1 -d walbench -f sql/tools/replica_identity_wal.sql [-v rows=1000]
--
-- Run it in a scratch database on an otherwise idle server: all WAL written
-- meanwhile counts. For each case it loads :rows rows into a table in the
-- crwatch convention, then measures the WAL inserted by :rows status-only
-- UPDATEs and by :rows DELETEs, one transaction each (as an application
-- writes them; each includes its ~40-byte commit record).
--
-- Specs: 2 KiB of compressible JSON (kept inline, compressed), 2 KiB and
-- 10 KiB of incompressible JSON (moved out of line to TOAST). Identities:
-- DEFAULT (the primary key), USING INDEX (a unique index on uid), FULL; and
-- DEFAULT on the same table without crwatch.manage() and managed without
-- the txid index, to show what the convention's triggers and that index add.
-- Prints bytes per statement; drops what it made.
\if :{?rows}
\else
\set rows 1000
\endif
\ir ../crwatch.sql
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS crwatch_walbench CASCADE;
CREATE SCHEMA crwatch_walbench;
CREATE TABLE crwatch_walbench.result (
    ord int, spec text, identity text, managed text, row_bytes int,
    update_bytes numeric, delete_bytes numeric);

-- A spec of about n bytes of JSON text: compressible (a repeated structure)
-- or not (hex digits of md5s).
CREATE FUNCTION crwatch_walbench.spec(compressible bool, n int, seed int) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT CASE WHEN compressible
        THEN jsonb_build_object('input', 's3://in/' || seed || '.mov',
                 'renditions', (SELECT jsonb_agg(jsonb_build_object('preset', '1080p', 'codec', 'h264',
                                     'bitrate', 5000000 + g, 'audio', 'aac', 'container', 'mp4'))
                                  FROM generate_series(1, n / 90) g))
        ELSE jsonb_build_object('input', 's3://in/' || seed || '.mov',
                 'blob', (SELECT string_agg(md5(seed || ':' || g), '') FROM generate_series(1, n / 32) g))
    END
$$;

-- managed: 'no' (no triggers), 'yes' (crwatch.manage), 'no txid index'
-- (crwatch.manage(..., txid_index => false)).
CREATE PROCEDURE crwatch_walbench.measure(ord int, compressible bool, n int, identity text,
                                          managed text, rows int)
LANGUAGE plpgsql AS $$
DECLARE
    lsn0 pg_lsn;
    lsn1 pg_lsn;
    lsn2 pg_lsn;
    rowb int;
BEGIN
    CREATE TABLE crwatch_walbench.t (
        namespace text NOT NULL DEFAULT 'default', name text NOT NULL,
        uid uuid NOT NULL DEFAULT gen_random_uuid(), generation bigint NOT NULL DEFAULT 1,
        resource_version bigint NOT NULL DEFAULT 1, labels jsonb NOT NULL DEFAULT '{}',
        annotations jsonb NOT NULL DEFAULT '{}', spec jsonb NOT NULL, status jsonb NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
        deleted_at timestamptz, txid xid8, PRIMARY KEY (namespace, name)
    ) WITH (autovacuum_enabled = off);
    CREATE UNIQUE INDEX t_uid ON crwatch_walbench.t (uid);
    IF managed = 'yes' THEN
        PERFORM crwatch.manage('crwatch_walbench.t');
    ELSIF managed = 'no txid index' THEN
        PERFORM crwatch.manage('crwatch_walbench.t', txid_index => false);
    END IF;
    EXECUTE format('ALTER TABLE crwatch_walbench.t REPLICA IDENTITY %s',
                   CASE identity WHEN 'USING INDEX' THEN 'USING INDEX t_uid' ELSE identity END);
    INSERT INTO crwatch_walbench.t (name, spec, status)
        SELECT 'job-' || g, crwatch_walbench.spec(compressible, n, g), '{"phase":"Pending"}'
          FROM generate_series(1, rows) g;
    SELECT avg(pg_column_size(t.*))::int INTO rowb FROM crwatch_walbench.t t;
    COMMIT;

    lsn0 := pg_current_wal_insert_lsn();
    FOR i IN 1..rows LOOP
        UPDATE crwatch_walbench.t SET status = '{"phase":"Running"}'
         WHERE namespace = 'default' AND name = 'job-' || i;
        COMMIT;
    END LOOP;
    lsn1 := pg_current_wal_insert_lsn();
    FOR i IN 1..rows LOOP
        DELETE FROM crwatch_walbench.t WHERE namespace = 'default' AND name = 'job-' || i;
        COMMIT;
    END LOOP;
    lsn2 := pg_current_wal_insert_lsn();

    INSERT INTO crwatch_walbench.result VALUES (
        ord, format('%s KiB %s', n / 1024, CASE WHEN compressible THEN 'compressible' ELSE 'incompressible' END),
        identity, managed, rowb,
        round(pg_wal_lsn_diff(lsn1, lsn0) / rows), round(pg_wal_lsn_diff(lsn2, lsn1) / rows));
    DROP TABLE crwatch_walbench.t;
    DELETE FROM crwatch.tombstones WHERE relid IS NULL OR NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = relid);
    COMMIT;
END
$$;

CALL crwatch_walbench.measure(1, true, 2048, 'DEFAULT', 'no', :rows);
CALL crwatch_walbench.measure(2, true, 2048, 'DEFAULT', 'no txid index', :rows);
CALL crwatch_walbench.measure(3, true, 2048, 'DEFAULT', 'yes', :rows);
CALL crwatch_walbench.measure(4, true, 2048, 'USING INDEX', 'yes', :rows);
CALL crwatch_walbench.measure(5, true, 2048, 'FULL', 'yes', :rows);
CALL crwatch_walbench.measure(6, true, 2048, 'FULL', 'no txid index', :rows);
CALL crwatch_walbench.measure(7, false, 2048, 'DEFAULT', 'no', :rows);
CALL crwatch_walbench.measure(8, false, 2048, 'DEFAULT', 'no txid index', :rows);
CALL crwatch_walbench.measure(9, false, 2048, 'DEFAULT', 'yes', :rows);
CALL crwatch_walbench.measure(10, false, 2048, 'USING INDEX', 'yes', :rows);
CALL crwatch_walbench.measure(11, false, 2048, 'FULL', 'yes', :rows);
CALL crwatch_walbench.measure(12, false, 2048, 'FULL', 'no txid index', :rows);
CALL crwatch_walbench.measure(13, false, 10240, 'DEFAULT', 'yes', :rows);
CALL crwatch_walbench.measure(14, false, 10240, 'FULL', 'yes', :rows);

\pset footer off
SELECT spec, identity AS "replica identity", managed AS "crwatch.manage",
       row_bytes AS "row bytes (stored)", update_bytes AS "WAL bytes / UPDATE", delete_bytes AS "WAL bytes / DELETE",
       current_setting('full_page_writes') AS "full_page_writes"
  FROM crwatch_walbench.result ORDER BY ord;
DROP SCHEMA crwatch_walbench CASCADE;
