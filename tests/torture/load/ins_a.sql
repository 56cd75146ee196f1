-- a few new rows of t_a
\set n random(1, 4)
INSERT INTO t_a (payload) SELECT md5(random()::text) FROM generate_series(1, :n);
