-- one row of t_b updated
SELECT last_value AS bmax FROM t_b_id \gset
\set id random(1, :bmax)
UPDATE t_b SET v = v + 1, body = jsonb_set(coalesce(body, '{}'), '{r}', to_jsonb(random())) WHERE ns = 'ns' || (:id % 3) AND id = :id;
