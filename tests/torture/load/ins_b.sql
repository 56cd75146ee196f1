-- a few new rows of t_b
\set n random(1, 3)
INSERT INTO t_b (ns, id, body)
  SELECT 'ns' || (i % 3), i, jsonb_build_object('i', i, 'r', random()) FROM (SELECT nextval('t_b_id') AS i FROM generate_series(1, :n)) s;
