-- tests/torture/schema.sql: the tables the torture load writes, and the log
-- that makes the expected changes exact: a row trigger appends every change
-- (table, key, op, version) to torture.log in the writing transaction, so
-- the log holds what committed and nothing else, whatever was killed.
-- torture.log is not watched (not in the publication).
CREATE SCHEMA torture;

CREATE TABLE torture.log (
  seq bigserial PRIMARY KEY,
  tbl text NOT NULL,
  key text NOT NULL,
  op  "char" NOT NULL,                         -- I, U, D, T
  v   bigint,                                  -- the row's version (NULL for T)
  xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);

-- Row trigger: TG_ARGV names the key columns; the key is their text values
-- joined by '/', as crwatch forms the event's key (a NULL one: empty).
CREATE FUNCTION torture.log_row() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r jsonb := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
  k text;
BEGIN
  SELECT string_agg(coalesce(r ->> c, ''), '/' ORDER BY o) INTO k FROM unnest(TG_ARGV) WITH ORDINALITY AS a(c, o);
  INSERT INTO torture.log (tbl, key, op, v) VALUES (TG_TABLE_NAME, k, left(TG_OP, 1), (r ->> 'v')::bigint);
  RETURN NULL;
END $$;

CREATE FUNCTION torture.log_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO torture.log (tbl, key, op) VALUES (TG_TABLE_NAME, '', 'T');
  RETURN NULL;
END $$;

-- torture.watch(table, key columns...): the triggers above on a table.
CREATE FUNCTION torture.watch(tbl regclass, VARIADIC keys text[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('CREATE TRIGGER torture_log AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW '
                 'EXECUTE FUNCTION torture.log_row(%s)', tbl,
                 (SELECT string_agg(quote_literal(k), ', ') FROM unnest(keys) k));
  EXECUTE format('CREATE TRIGGER torture_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT '
                 'EXECUTE FUNCTION torture.log_truncate()', tbl);
END $$;

-- The expected changes, in commit order (xid order within a commit does
-- not matter: identities are unique), as tests/torture/check.py reads them.
CREATE VIEW torture.expected AS
  SELECT tbl, key, op::text AS op,
         CASE WHEN op = 'T' THEN (xid::text::bigint % 4294967296)::text ELSE v::text END AS v
  FROM torture.log ORDER BY seq;

-- The load's tables.  Keys are never reused (inserts take new ones from a
-- sequence); every update bumps v.  t_b has a two-column key and REPLICA
-- IDENTITY FULL (deletes carry the old row), t_a the default identity.
CREATE TABLE t_a (id bigserial PRIMARY KEY, v bigint NOT NULL DEFAULT 1, payload text);
CREATE TABLE t_b (ns text NOT NULL, id bigint NOT NULL, v bigint NOT NULL DEFAULT 1, body jsonb,
                  PRIMARY KEY (ns, id));
ALTER TABLE t_b REPLICA IDENTITY FULL;
CREATE SEQUENCE t_b_id;
SELECT torture.watch('t_a', 'id');
SELECT torture.watch('t_b', 'ns', 'id');
