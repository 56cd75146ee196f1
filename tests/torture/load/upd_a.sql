-- one row of t_a updated (a deleted or never committed id: no change)
SELECT last_value AS amax FROM t_a_id_seq \gset
\set id random(1, :amax)
UPDATE t_a SET v = v + 1, payload = md5(random()::text) WHERE id = :id;
