-- a range of :bigrows rows of t_a updated in one transaction (streamed to
-- crwatch's spool when over logical_decoding_work_mem), with a savepoint
-- rolled back inside it
SELECT last_value AS amax FROM t_a_id_seq \gset
\set lo random(1, :amax)
BEGIN;
UPDATE t_a SET v = v + 1 WHERE id BETWEEN :lo AND :lo + :bigrows;
SAVEPOINT s;
INSERT INTO t_a (payload) SELECT 'rolled back' FROM generate_series(1, 20);
ROLLBACK TO SAVEPOINT s;
INSERT INTO t_a (payload) SELECT md5(random()::text) FROM generate_series(1, 3);
COMMIT;
