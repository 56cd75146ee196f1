-- one transaction over both tables: inserts, updates, a delete
SELECT last_value AS amax FROM t_a_id_seq \gset
SELECT last_value AS bmax FROM t_b_id \gset
\set a random(1, :amax)
\set b random(1, :bmax)
\set c random(1, :bmax)
BEGIN;
INSERT INTO t_a (payload) SELECT md5(random()::text) FROM generate_series(1, 2);
UPDATE t_a SET v = v + 1 WHERE id = :a;
INSERT INTO t_b (ns, id, body) SELECT 'ns' || (i % 3), i, '{}' FROM (SELECT nextval('t_b_id') AS i) s;
UPDATE t_b SET v = v + 1 WHERE ns = 'ns' || (:b % 3) AND id = :b;
DELETE FROM t_b WHERE ns = 'ns' || (:c % 3) AND id = :c;
COMMIT;
