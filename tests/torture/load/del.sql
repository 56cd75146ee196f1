-- one row of each table deleted
SELECT last_value AS amax FROM t_a_id_seq \gset
SELECT last_value AS bmax FROM t_b_id \gset
\set a random(1, :amax)
\set b random(1, :bmax)
DELETE FROM t_a WHERE id = :a;
DELETE FROM t_b WHERE ns = 'ns' || (:b % 3) AND id = :b;
