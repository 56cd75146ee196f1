-- sql/crwatch.sql — the crwatch custom-resource table convention (docs/sql.md).
--
-- Safe to apply again and again: every statement creates what is missing and
-- leaves what exists as it is (same OIDs, same definitions, same sequence
-- value), so it can sit in a migration that runs on every deploy:
--
--     psql -v ON_ERROR_STOP=1 -f sql/crwatch.sql            # statement by statement
--     psql -v ON_ERROR_STOP=1 -1 -f sql/crwatch.sql         # all or nothing
--
-- It also runs inside a migration tool's own transaction (it has no BEGIN or
-- COMMIT of its own). Concurrent applies are serialized by an advisory lock.
-- Needs PostgreSQL 13+ (xid8, pg_current_xact_id, gen_random_uuid in core).
--
-- What it creates, all in schema crwatch (docs/sql.md has the details):
--
--   crwatch.resource_version      the one global sequence resourceVersions come from
--   crwatch.tombstones            deleted rows, for the polling source (RLS: a reader
--                                 sees only tombstones of tables it may SELECT)
--   crwatch.offsets               where each crwatch (by slot.name) has confirmed up to:
--                                 the polling source's watermark (RLS: a role sees and
--                                 writes only its own rows)
--   crwatch.manage(tbl)           checks that tbl follows the convention and installs
--                                 the triggers, the txid column and its index
--                                 (txid_index => false: no index, see below), and
--                                 the created_txid column
--   crwatch.publish(pub, tbl...)  creates or extends a publication
--   crwatch.create_role(r, tbl...) a least-privilege LOGIN REPLICATION role for crwatch
--   crwatch.prune_tombstones(age) deletes tombstones older than age
--   crwatch.prune_seen_tombstones() deletes the tombstones every poller of crwatch.offsets
--                                 has seen (crwatch's role may call it)
--   crwatch.is_managed(tbl)       true when manage(tbl) would have nothing to do
--   crwatch.convention_triggers() the triggers manage() installs
--   crwatch.tg_write(), crwatch.tg_created(), crwatch.tg_tombstone(), crwatch.tg_truncate()
--                                 the trigger functions manage() installs
--
-- The trigger functions are SECURITY DEFINER (owned by whoever first applied
-- this file), so the roles that write managed tables need no privilege on
-- anything in schema crwatch: they cannot take sequence values or forge
-- tombstones themselves, and nothing they write to the system-maintained
-- columns survives. EXECUTE on every crwatch function is revoked from PUBLIC;
-- the owner (or a role it grants EXECUTE) calls manage/publish/create_role.

-- Plain SQL only (no psql meta-commands), so any client can run it.

-- One installer at a time (two deploys applying this at once would otherwise
-- race on CREATE SCHEMA and CREATE OR REPLACE FUNCTION). The session lock is
-- released at the end of the file; the transaction lock on the same key
-- matters when the file runs inside a transaction (psql -1, a migration
-- tool): it is held until that transaction commits, so the next installer
-- sees the committed objects. Outside a transaction it ends with the DO.
DO $do$
BEGIN
    PERFORM pg_catalog.pg_advisory_lock(pg_catalog.hashtext('crwatch.sql'));
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('crwatch.sql'));
END
$do$;

CREATE SCHEMA IF NOT EXISTS crwatch;
COMMENT ON SCHEMA crwatch IS
    'crwatch custom-resource table convention (sql/crwatch.sql, convention version 1)';

-- ---------------------------------------------------------------------------
-- Resource versions: one global sequence, so resourceVersions of all managed
-- tables are unique and a resource's versions strictly increase. They are
-- NOT a commit-order watermark (a transaction that took a value earlier may
-- commit later); the polling source uses the txid column for that.
CREATE SEQUENCE IF NOT EXISTS crwatch.resource_version AS bigint;
COMMENT ON SEQUENCE crwatch.resource_version IS
    'global source of resource_version for every table crwatch.manage() manages';

-- ---------------------------------------------------------------------------
-- Tombstones: one row per deleted (or truncated) row of a managed table, so
-- the polling source can emit DELETED. Prune them with prune_tombstones()
-- once every poller is past them.
CREATE TABLE IF NOT EXISTS crwatch.tombstones (
    resource_version bigint      NOT NULL PRIMARY KEY, -- version of the deletion (global sequence)
    relid            regclass    NOT NULL,             -- the managed table the row left
    namespace        text,
    name             text,
    kind             text,                             -- the row's kind column; NULL without one
    uid              uuid,
    txid             xid8        NOT NULL,             -- the deleting transaction
    deleted_at       timestamptz NOT NULL,             -- when it was deleted (now() of that transaction)
    object           jsonb       NOT NULL              -- the row as it was (to_jsonb of the old row)
);
-- truncated: the row went with a TRUNCATE (the polling source emits one TRUNCATED for them).
ALTER TABLE crwatch.tombstones ADD COLUMN IF NOT EXISTS truncated boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS tombstones_relid_txid_idx ON crwatch.tombstones (relid, txid);
COMMENT ON TABLE crwatch.tombstones IS
    'rows deleted from managed tables, for the polling source; see crwatch.prune_tombstones()';

-- Readers see only the tombstones of tables they may SELECT; nobody but the
-- owner (through the SECURITY DEFINER triggers) writes them.
ALTER TABLE crwatch.tombstones ENABLE ROW LEVEL SECURITY;
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy
                   WHERE polrelid = 'crwatch.tombstones'::regclass
                     AND polname = 'tombstones_of_readable_tables') THEN
        CREATE POLICY tombstones_of_readable_tables ON crwatch.tombstones
            FOR SELECT USING (pg_catalog.has_table_privilege(relid, 'SELECT'));
    END IF;
END
$do$;

-- ---------------------------------------------------------------------------
-- Offsets: one row per crwatch (its slot.name): the position it last
-- confirmed, and for the polling source the watermark, a snapshot: every
-- change whose writer is visible in it has been delivered to every sink.
-- crwatch writes its own row (create_role grants it); the policy keeps a
-- role to its own rows, so two crwatch roles cannot move each other's.
CREATE TABLE IF NOT EXISTS crwatch.offsets (
    name       text        NOT NULL PRIMARY KEY,          -- slot.name
    position   bigint      NOT NULL,                      -- the last confirmed position (polling: batch number)
    watermark  pg_snapshot,                               -- polling: changes visible in it are delivered
    watermark_time timestamptz,                           -- polling: when that snapshot was taken
    pending    jsonb       NOT NULL DEFAULT '[]',         -- polling, exactly-once: batches delivered, not yet
                                                          -- confirmed [{position, watermark, watermark_time}]
    owner      name        NOT NULL DEFAULT current_user, -- the role that keeps the row
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Logical replication (slot safety, docs/operations.md): the row named
-- 'logical:<slot.name>' holds the position the stream last confirmed (always at
-- or ahead of what the slot was told) with the server's system identifier and
-- timeline, so a slot dropped and created again while crwatch was away, or a
-- failover to a server without it, is seen as the gap it is.
ALTER TABLE crwatch.offsets ADD COLUMN IF NOT EXISTS system_identifier text;
ALTER TABLE crwatch.offsets ADD COLUMN IF NOT EXISTS timeline integer;
COMMENT ON TABLE crwatch.offsets IS
    'what each crwatch (by slot.name) has confirmed; the polling source''s watermark';
ALTER TABLE crwatch.offsets ENABLE ROW LEVEL SECURITY;
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy
                   WHERE polrelid = 'crwatch.offsets'::regclass AND polname = 'offsets_of_their_owner') THEN
        CREATE POLICY offsets_of_their_owner ON crwatch.offsets
            USING (owner = current_user) WITH CHECK (owner = current_user);
    END IF;
END
$do$;

-- ---------------------------------------------------------------------------
-- BEFORE INSERT OR UPDATE, per row. The system-maintained columns are the
-- trigger's: whatever the statement wrote to them is replaced.
CREATE OR REPLACE FUNCTION crwatch.tg_write()
    RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    NEW.resource_version := nextval('crwatch.resource_version'::regclass);
    NEW.txid := pg_current_xact_id();
    IF TG_OP = 'INSERT' THEN
        NEW.generation := 1;
        NEW.uid := coalesce(NEW.uid, gen_random_uuid());
        NEW.created_at := coalesce(NEW.created_at, now());
        NEW.updated_at := coalesce(NEW.updated_at, now());
    ELSE
        -- Kubernetes: generation counts spec changes only (jsonb equality:
        -- key order and whitespace do not count).
        NEW.generation := coalesce(OLD.generation, 1)
            + CASE WHEN NEW.spec IS DISTINCT FROM OLD.spec THEN 1 ELSE 0 END;
        NEW.uid := OLD.uid;                 -- immutable
        NEW.created_at := OLD.created_at;   -- immutable
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$fn$;
COMMENT ON FUNCTION crwatch.tg_write() IS
    'crwatch.manage() trigger: resource_version, generation, uid, created_at, updated_at, txid';

-- BEFORE INSERT OR UPDATE, per row: created_txid, the transaction that
-- created the row (the polling source tells ADDED from MODIFIED by it). A
-- trigger of its own, so a table managed before it existed keeps working
-- until manage() runs again and adds the column.
CREATE OR REPLACE FUNCTION crwatch.tg_created()
    RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.created_txid := pg_current_xact_id();
    ELSE
        NEW.created_txid := OLD.created_txid;   -- immutable
    END IF;
    RETURN NEW;
END
$fn$;
COMMENT ON FUNCTION crwatch.tg_created() IS
    'crwatch.manage() trigger: created_txid, the transaction that inserted the row';

-- AFTER DELETE, per row: a tombstone for the polling source.
CREATE OR REPLACE FUNCTION crwatch.tg_tombstone()
    RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    obj jsonb := to_jsonb(OLD);
BEGIN
    INSERT INTO crwatch.tombstones
        (resource_version, relid, namespace, name, kind, uid, txid, deleted_at, object)
    VALUES (nextval('crwatch.resource_version'::regclass), TG_RELID, OLD.namespace, OLD.name,
            obj ->> 'kind', OLD.uid, pg_current_xact_id(), now(), obj);
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION crwatch.tg_tombstone() IS
    'crwatch.manage() trigger: writes a crwatch.tombstones row for each deleted row';

-- BEFORE TRUNCATE, per statement: TRUNCATE fires no DELETE triggers, so the
-- rows about to vanish are tombstoned here (one scan of the table).
CREATE OR REPLACE FUNCTION crwatch.tg_truncate()
    RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    EXECUTE format(
        'INSERT INTO crwatch.tombstones '
        '(resource_version, relid, namespace, name, kind, uid, txid, deleted_at, object, truncated) '
        'SELECT nextval(''crwatch.resource_version''::regclass), $1, t.namespace, t.name, '
        'to_jsonb(t) ->> ''kind'', t.uid, pg_current_xact_id(), now(), to_jsonb(t), true FROM %I.%I AS t',
        TG_TABLE_SCHEMA, TG_TABLE_NAME)
        USING TG_RELID;
    RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION crwatch.tg_truncate() IS
    'crwatch.manage() trigger: tombstones every row of a table being truncated';

-- ---------------------------------------------------------------------------
-- The triggers manage() installs. Named zz_* because triggers of one kind
-- fire in name order: crwatch's run last, so the values they set are the
-- ones stored. tgtype bits: ROW 1, BEFORE 2, INSERT 4, DELETE 8, UPDATE 16,
-- TRUNCATE 32.
CREATE OR REPLACE FUNCTION crwatch.convention_triggers(
        OUT name text, OUT fn regprocedure, OUT type int2, OUT events text, OUT level text)
    RETURNS SETOF record
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $fn$
    VALUES ('zz_crwatch_write', 'crwatch.tg_write()'::regprocedure, 23::int2,
            'BEFORE INSERT OR UPDATE', 'ROW'),
           ('zz_crwatch_created', 'crwatch.tg_created()'::regprocedure, 23::int2,
            'BEFORE INSERT OR UPDATE', 'ROW'),
           ('zz_crwatch_tombstone', 'crwatch.tg_tombstone()'::regprocedure, 9::int2,
            'AFTER DELETE', 'ROW'),
           ('zz_crwatch_truncate', 'crwatch.tg_truncate()'::regprocedure, 34::int2,
            'BEFORE TRUNCATE', 'STATEMENT');
$fn$;
COMMENT ON FUNCTION crwatch.convention_triggers() IS
    'the triggers crwatch.manage() installs (name, function, pg_trigger.tgtype, events, level)';

-- Signatures of the first version (before txid_index): next to the new ones
-- they would make manage('t') ambiguous. Gone after the first apply.
DROP FUNCTION IF EXISTS crwatch.manage(regclass);
DROP FUNCTION IF EXISTS crwatch.is_managed(regclass);

-- is_managed(tbl [, txid_index]): true when tbl has the txid column (and,
-- unless txid_index is false, an index leading with it), created_txid and
-- the four triggers exactly as manage() installs them, enabled.
CREATE OR REPLACE FUNCTION crwatch.is_managed(tbl regclass, txid_index boolean DEFAULT true)
    RETURNS boolean
    LANGUAGE sql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = tbl AND a.attname = 'txid' AND NOT a.attisdropped
                      AND a.atttypid = 'xid8'::regtype
                      AND (NOT txid_index OR EXISTS (SELECT 1 FROM pg_index i
                                   WHERE i.indrelid = tbl AND i.indkey[0] = a.attnum
                                     AND i.indpred IS NULL AND i.indisvalid)))
       AND EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = tbl AND a.attname = 'created_txid' AND NOT a.attisdropped
                      AND a.atttypid = 'xid8'::regtype)
       AND NOT EXISTS (SELECT 1 FROM crwatch.convention_triggers() w
                        WHERE NOT EXISTS (SELECT 1 FROM pg_trigger t
                                           WHERE t.tgrelid = tbl AND t.tgname = w.name
                                             AND NOT t.tgisinternal AND t.tgfoid = w.fn
                                             AND t.tgtype = w.type AND t.tgnargs = 0
                                             AND t.tgattr::text = '' AND t.tgqual IS NULL
                                             AND t.tgenabled = 'O'));
$fn$;
COMMENT ON FUNCTION crwatch.is_managed(regclass, boolean) IS
    'true when crwatch.manage() has nothing left to do on the table';

-- ---------------------------------------------------------------------------
-- manage(tbl [, txid_index]): check the convention, add txid (and an index
-- on it) and created_txid when missing, install the four triggers. Calling
-- it again changes nothing.
--
-- txid_index => false skips the index (an existing one is kept): the polling
-- source needs it, but it makes every UPDATE non-HOT, since txid changes on
-- every write (docs/sql.md has the WAL numbers). For tables watched only
-- through logical replication.
CREATE OR REPLACE FUNCTION crwatch.manage(tbl regclass, txid_index boolean DEFAULT true)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    relkind  "char";
    problems text[];
    txid_att int2;
    trg      record;
    cur      record;
BEGIN
    SELECT c.relkind INTO relkind FROM pg_class c WHERE c.oid = tbl;
    IF relkind <> 'r' THEN
        RAISE EXCEPTION 'crwatch.manage: % is not an ordinary table (relkind %)', tbl, relkind
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Partitioned tables, views and foreign tables are not supported.';
    END IF;

    -- Every required column with its exact type; kind and txid are optional
    -- but must have their type when present.
    SELECT array_agg(CASE WHEN a.attname IS NULL
                          THEN format('missing column %I %s', w.col, w.typ)
                          ELSE format('column %I is %s, want %s', w.col,
                                      format_type(a.atttypid, a.atttypmod), w.typ) END
                     ORDER BY w.ord)
      INTO problems
      FROM (VALUES (1, 'namespace', 'text', true), (2, 'name', 'text', true),
                   (3, 'uid', 'uuid', true), (4, 'generation', 'bigint', true),
                   (5, 'resource_version', 'bigint', true), (6, 'labels', 'jsonb', true),
                   (7, 'annotations', 'jsonb', true), (8, 'spec', 'jsonb', true),
                   (9, 'status', 'jsonb', true), (10, 'created_at', 'timestamp with time zone', true),
                   (11, 'updated_at', 'timestamp with time zone', true),
                   (12, 'deleted_at', 'timestamp with time zone', true),
                   (13, 'kind', 'text', false), (14, 'txid', 'xid8', false),
                   (15, 'created_txid', 'xid8', false))
           AS w(ord, col, typ, required)
      LEFT JOIN pg_attribute a
             ON a.attrelid = tbl AND a.attname = w.col AND a.attnum > 0 AND NOT a.attisdropped
     WHERE (a.attname IS NULL AND w.required) OR a.atttypid <> w.typ::regtype;
    IF problems IS NOT NULL THEN
        RAISE EXCEPTION 'crwatch.manage: % does not follow the crwatch table convention', tbl
            USING ERRCODE = 'invalid_table_definition',
                  DETAIL = array_to_string(problems, '; '),
                  HINT = 'See sql/examples/video_transcoding_job.sql for a table in the convention.';
    END IF;

    -- A table already managed is left alone, not even locked.
    IF crwatch.is_managed(tbl, txid_index) THEN
        RETURN;
    END IF;
    -- Serializes concurrent manage() calls on this table; every step below
    -- looks again before it changes anything.
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', tbl);

    SELECT a.attnum INTO txid_att FROM pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = 'txid' AND NOT a.attisdropped;
    IF txid_att IS NULL THEN
        -- Metadata only (no default, no rewrite). Existing rows keep NULL:
        -- they were committed before any poller's first snapshot.
        EXECUTE format('ALTER TABLE %s ADD COLUMN txid xid8', tbl);
        SELECT a.attnum INTO txid_att FROM pg_attribute a
         WHERE a.attrelid = tbl AND a.attname = 'txid' AND NOT a.attisdropped;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute a
                    WHERE a.attrelid = tbl AND a.attname = 'created_txid' AND NOT a.attisdropped) THEN
        -- Metadata only too; existing rows keep NULL (the polling source then
        -- tells ADDED by their timestamps).
        EXECUTE format('ALTER TABLE %s ADD COLUMN created_txid xid8', tbl);
    END IF;
    -- The polling source reads "txid >= its low watermark". Any valid index
    -- leading with txid will do (e.g. one built beforehand CONCURRENTLY).
    IF txid_index AND NOT EXISTS (SELECT 1 FROM pg_index i
                    WHERE i.indrelid = tbl AND i.indkey[0] = txid_att
                      AND i.indpred IS NULL AND i.indisvalid) THEN
        EXECUTE format('CREATE INDEX ON %s (txid)', tbl);
    END IF;

    FOR trg IN SELECT * FROM crwatch.convention_triggers() LOOP
        SELECT t.tgfoid = trg.fn AND t.tgtype = trg.type AND t.tgnargs = 0
                   AND t.tgattr::text = '' AND t.tgqual IS NULL AS same_def,
               t.tgenabled = 'O' AS enabled
          INTO cur
          FROM pg_trigger t
         WHERE t.tgrelid = tbl AND t.tgname = trg.name AND NOT t.tgisinternal;
        IF FOUND AND cur.same_def AND cur.enabled THEN
            CONTINUE;
        ELSIF FOUND AND cur.same_def THEN
            -- Disabled (or set to fire on replica only/always): back to the
            -- default, so the convention holds for every ordinary write.
            EXECUTE format('ALTER TABLE %s ENABLE TRIGGER %I', tbl, trg.name);
            CONTINUE;
        ELSIF FOUND THEN
            -- A different definition (an older convention, or a hand-made one).
            EXECUTE format('DROP TRIGGER %I ON %s', trg.name, tbl);
        END IF;
        EXECUTE format('CREATE TRIGGER %I %s ON %s FOR EACH %s EXECUTE FUNCTION %s()',
                       trg.name, trg.events, tbl, trg.level, trg.fn::oid::regproc);
    END LOOP;
END
$fn$;
COMMENT ON FUNCTION crwatch.manage(regclass, boolean) IS
    'install the crwatch convention triggers (resource_version, generation, updated_at, txid, tombstones) on a table; idempotent';

-- ---------------------------------------------------------------------------
-- publish(pub, tables...): create the publication with the tables, or add
-- the ones it lacks. Existing options (publish actions, row filters, column
-- lists) are left alone. Refuses a table without a usable replica identity:
-- once published, its UPDATEs and DELETEs would fail.
CREATE OR REPLACE FUNCTION crwatch.publish(pubname text, VARIADIC tables regclass[])
    RETURNS integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    pub     record;
    t       regclass;
    missing text[];
    bad     text[];
BEGIN
    IF pubname IS NULL OR pubname = '' OR tables IS NULL OR cardinality(tables) = 0 THEN
        RAISE EXCEPTION 'crwatch.publish: a publication name and at least one table are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(format('%s (%s)', c.oid::regclass,
                            CASE WHEN c.relkind <> 'r' THEN 'not an ordinary table'
                                 WHEN c.relreplident = 'n' THEN 'REPLICA IDENTITY NOTHING'
                                 ELSE 'no primary key and REPLICA IDENTITY DEFAULT' END))
      INTO bad
      FROM pg_class c
     WHERE c.oid = ANY (tables)
       AND (c.relkind <> 'r' OR c.relreplident = 'n'
            OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i
                                                     WHERE i.indrelid = c.oid AND i.indisprimary)));
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'crwatch.publish: no usable replica identity: %', array_to_string(bad, ', ')
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'Give the table a primary key, or ALTER TABLE ... REPLICA IDENTITY FULL '
                         '(or USING INDEX); see docs/sql.md.';
    END IF;

    SELECT p.oid, p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete INTO pub
      FROM pg_publication p WHERE p.pubname = publish.pubname;
    IF NOT FOUND THEN
        SELECT array_agg(DISTINCT x::text) INTO missing FROM unnest(tables) AS x;
        EXECUTE format('CREATE PUBLICATION %I FOR TABLE %s', pubname, array_to_string(missing, ', '));
        RETURN cardinality(missing);
    END IF;
    IF NOT (pub.pubinsert AND pub.pubupdate AND pub.pubdelete) THEN
        RAISE WARNING 'crwatch.publish: publication % does not publish every insert, update and delete; '
                      'crwatch will miss the others', pubname;
    END IF;
    IF pub.puballtables THEN
        RETURN 0;
    END IF;
    SELECT array_agg(DISTINCT x::text) INTO missing
      FROM unnest(tables) AS x
      JOIN pg_class c ON c.oid = x
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE NOT EXISTS (SELECT 1 FROM pg_publication_tables pt
                        WHERE pt.pubname = publish.pubname
                          AND pt.schemaname = n.nspname AND pt.tablename = c.relname);
    IF missing IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', pubname, array_to_string(missing, ', '));
    RETURN cardinality(missing);
END
$fn$;
COMMENT ON FUNCTION crwatch.publish(text, regclass[]) IS
    'create a publication for the tables, or add those it lacks; returns how many were added';

-- ---------------------------------------------------------------------------
-- create_role(role, tables...): the least-privilege role crwatch streams as.
-- LOGIN REPLICATION and nothing else: CONNECT on this database, USAGE on the
-- tables' schemas, SELECT on the tables, and SELECT on crwatch.tombstones
-- (whose policy shows it only the tombstones of those same tables). No
-- password is set here (it would land in logs): use \password, a .pgpass
-- entry on the crwatch side, or certificate authentication.
-- Creating a REPLICATION role needs a superuser on PostgreSQL 15 and older.
CREATE OR REPLACE FUNCTION crwatch.create_role(rolename text, VARIADIC tables regclass[])
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r      record;
    nsp    text;
    t      regclass;
    extra  text[];
BEGIN
    IF rolename IS NULL OR rolename = '' OR tables IS NULL OR cardinality(tables) = 0 THEN
        RAISE EXCEPTION 'crwatch.create_role: a role name and at least one table are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM pg_roles WHERE rolname = rolename;
    IF NOT FOUND THEN
        EXECUTE format('CREATE ROLE %I LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE '
                       'NOBYPASSRLS', rolename);
    ELSE
        extra := array_remove(ARRAY[CASE WHEN r.rolsuper THEN 'SUPERUSER' END,
                                    CASE WHEN r.rolcreatedb THEN 'CREATEDB' END,
                                    CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END,
                                    CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END], NULL)
              || ARRAY(SELECT format('membership in %I', g.rolname)
                         FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                        WHERE m.member = r.oid ORDER BY 1);
        IF cardinality(extra) > 0 THEN
            -- Never demote an existing role someone else relies on.
            RAISE EXCEPTION 'crwatch.create_role: role % exists with %, more than crwatch needs',
                            rolename, array_to_string(extra, ', ')
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Choose another name for crwatch''s role.';
        END IF;
        IF NOT (r.rolcanlogin AND r.rolreplication) THEN
            EXECUTE format('ALTER ROLE %I LOGIN REPLICATION', rolename);
        END IF;
    END IF;

    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), rolename);
    FOR nsp IN SELECT DISTINCT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.oid = ANY (tables) LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', nsp, rolename);
    END LOOP;
    FOREACH t IN ARRAY tables LOOP
        EXECUTE format('GRANT SELECT ON TABLE %s TO %I', t, rolename);
    END LOOP;
    -- The polling source reads tombstones (the policy limits them to the
    -- tables granted above), keeps its watermark in crwatch.offsets (its own
    -- rows only) and prunes the tombstones every poller has seen. The logical
    -- source keeps its last confirmed position there too (slot safety). Its
    -- heartbeat, pg_logical_emit_message, needs no grant: EXECUTE on it is
    -- PUBLIC's in PostgreSQL, and the walsender's REPLICATION covers the rest.
    EXECUTE format('GRANT USAGE ON SCHEMA crwatch TO %I', rolename);
    EXECUTE format('GRANT SELECT ON TABLE crwatch.tombstones TO %I', rolename);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON TABLE crwatch.offsets TO %I', rolename);
    EXECUTE format('GRANT EXECUTE ON FUNCTION crwatch.prune_seen_tombstones() TO %I', rolename);
END
$fn$;
COMMENT ON FUNCTION crwatch.create_role(text, regclass[]) IS
    'create (or check) a LOGIN REPLICATION role with SELECT on the given tables only';

-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION crwatch.prune_tombstones(older_than interval)
    RETURNS bigint
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH gone AS (DELETE FROM crwatch.tombstones WHERE deleted_at < now() - older_than RETURNING 1)
    SELECT count(*) FROM gone;
$fn$;
COMMENT ON FUNCTION crwatch.prune_tombstones(interval) IS
    'delete tombstones older than the interval (a poller further behind than that misses those deletes); returns how many';

-- prune_seen_tombstones(): deletes the tombstones that every poller with a
-- watermark in crwatch.offsets has seen (their writer is older than every
-- watermark's xmin).  With no poller registered it deletes nothing: pollers
-- that never ran are covered by prune_tombstones(age).  SECURITY DEFINER so
-- crwatch's role, which may not delete tombstones, can run it.
CREATE OR REPLACE FUNCTION crwatch.prune_seen_tombstones()
    RETURNS bigint
    LANGUAGE sql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH low AS (SELECT min(pg_snapshot_xmin(o.watermark)) AS xmin FROM crwatch.offsets o
                  WHERE o.watermark IS NOT NULL),
         gone AS (DELETE FROM crwatch.tombstones t USING low WHERE t.txid < low.xmin RETURNING 1)
    SELECT count(*) FROM gone;
$fn$;
COMMENT ON FUNCTION crwatch.prune_seen_tombstones() IS
    'delete the tombstones every poller registered in crwatch.offsets is past; returns how many';

-- Nobody but the owner calls these unless granted (the triggers fire as the
-- owner whatever the writer's privileges).
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA crwatch FROM PUBLIC;

DO $do$ BEGIN PERFORM pg_catalog.pg_advisory_unlock(pg_catalog.hashtext('crwatch.sql')); END $do$;
