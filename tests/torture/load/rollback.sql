-- a transaction rolled back: none of it may reach a sink
SELECT last_value AS amax FROM t_a_id_seq \gset
\set a random(1, :amax)
BEGIN;
INSERT INTO t_a (payload) SELECT 'rolled back' FROM generate_series(1, 3);
UPDATE t_a SET v = v + 1 WHERE id = :a;
ROLLBACK;
