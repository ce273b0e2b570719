--
-- create_window: the table layouts, every validation error; drop_window,
-- drop_stream, pause, resume and reset_offsets.
--
-- No broker listens on 127.0.0.1:9: the workers started for these streams
-- fail to reach Kafka, so only columns that do not depend on them are shown.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_streamagg;
RESET client_min_messages;
\set VERBOSITY terse

SELECT streamagg.create_stream('access', 'access-log', '127.0.0.1:9',
    'ip text, status int, bytes bigint, ts timestamptz, path text, price numeric(10,2), ok boolean, at point',
    event_time => 'ts');

-- Tumbling: window_start, window_end, the group columns, the aggregates;
-- key (window_start, group columns) with NULL groups equal to each other.
SELECT streamagg.create_window(
    name       => 'hits_per_ip',
    stream     => 'access',
    size       => '1 minute',
    slide      => NULL,
    group_by   => 'ip',
    aggregates => 'count(*) AS hits, sum(bytes) AS bytes, max(ts) AS last_seen',
    filter     => 'status >= 400',
    allowed_lateness => '30 seconds');
\d hits_per_ip

-- Every aggregate and its column type; an expression as group key.
SELECT streamagg.create_window('all_aggs', 'access', size => '1 hour',
    group_by => 'status / 100 AS class, lower(path) AS path',
    aggregates => 'count(*), count(ip) AS ips, sum(bytes) AS sum_bytes, sum(status) AS sum_status,
                   sum(price) AS sum_price, min(ip) AS min_ip, max(price) AS max_price,
                   min(ts) AS first_seen, max(ok::int) AS any_ok, avg(bytes) AS avg_bytes,
                   avg(price * 2) AS avg_price, sum(bytes * status + 1) AS weighted');
\d all_aggs

-- Hopping (slide < size), keyed on Kafka metadata.
SELECT streamagg.create_window('hopping', 'access', size => '10 minutes', slide => '1 minute',
    group_by => 'kafka_partition', aggregates => 'max(kafka_offset) AS last_offset');
\d hopping
-- With one worker a hopping window is kept as slices (one row per slide and
-- group, an avg as its sum and count) and its windows are put in
-- hopping_closed as they close; the view hopping shows both.
\d hopping_slices
\d hopping_closed
\d hopping_final
SELECT streamagg.create_window('hop_avg', 'access', size => '1 hour', slide => '10 minutes',
    group_by => 'ip', aggregates => 'avg(bytes) AS a, sum(status) AS a_count, count(*) AS n');
\d hop_avg_slices
-- Counts and sums of integers: each window is chained from the previous one
-- (minus the slice that left, plus the one that came in), so the closed
-- table keeps count(*), the count of each sum and the sum of each avg.
\d hop_avg_closed
\d hop_avg_final
-- A float sum could overflow when slices are added up: one row per window.
SELECT streamagg.create_window('hop_float', 'access', size => '1 hour', slide => '10 minutes',
    aggregates => 'sum(bytes::float8) AS f');
\d hop_float
SELECT to_regclass('hop_float_slices') AS no_slices;
-- A slide equal to the size is a tumbling window.
SELECT streamagg.create_window('slide_eq_size', 'access', size => '5 minutes', slide => '5 minutes');
\d slide_eq_size

-- No time window: one running row per group, no window_start/window_end.
SELECT streamagg.create_window('per_status', 'access', group_by => 'status',
    aggregates => 'count(*) AS n, sum(bytes) AS bytes');
\d per_status
-- No time window and no group: one row in all.
SELECT streamagg.create_window('total', 'access', aggregates => 'count(*) AS n');
\d total

-- Schema-qualified names; quoted identifiers.
CREATE SCHEMA reports;
SELECT streamagg.create_window('reports.daily', 'access', size => '1 day',
    group_by => 'ip', aggregates => 'avg(bytes) AS avg_bytes');
\d reports.daily
SELECT streamagg.create_window('reports."Mixed Case"', 'access', size => '1 day');
\d reports."Mixed Case"

SELECT name, stream, result_table, kind, size, slide, session_gap, group_by,
       aggregates, filter, allowed_lateness, retention, state_table IS NOT NULL AS has_state,
       slice_table, closed_table
FROM streamagg.windows ORDER BY name;

-- avg keeps an exact sum and count in a state table in schema streamagg,
-- owned like the result table.
SELECT w.name, c.relnamespace::regnamespace AS schema,
       c.relname ~ '^avg_state_[0-9]+$' AS named_by_oid,
       pg_get_userbyid(c.relowner) = current_user AS owned_by_me
FROM streamagg.windows w JOIN pg_class c ON c.oid = w.state_table
ORDER BY w.name;
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull
FROM pg_attribute a
WHERE a.attrelid = (SELECT state_table FROM streamagg.windows WHERE name = 'all_aggs')
  AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;
SELECT pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = (SELECT state_table FROM streamagg.windows WHERE name = 'all_aggs');

-- The result table is an ordinary table: one row per window and group, a
-- NULL group is a group of its own.
INSERT INTO hits_per_ip VALUES
    ('2024-01-01 00:00:00+00', '2024-01-01 00:01:00+00', NULL, 1, 10, NULL);
INSERT INTO hits_per_ip VALUES
    ('2024-01-01 00:00:00+00', '2024-01-01 00:01:00+00', NULL, 1, 10, NULL);
DELETE FROM hits_per_ip;

-- Required arguments.
SELECT streamagg.create_window(NULL, 'access');
SELECT streamagg.create_window('w', NULL);
SELECT streamagg.create_window('w', 'access', aggregates => NULL);

-- Unknown stream.
SELECT streamagg.create_window('w', 'no_such_stream', size => '1 minute');

-- Names.
SELECT streamagg.create_window('hits_per_ip', 'access', size => '1 minute');
SELECT streamagg.create_window('public.hits_per_ip', 'access', size => '1 minute');
CREATE TABLE taken (x int);
SELECT streamagg.create_window('taken', 'access', size => '1 minute');
DROP TABLE taken;
SELECT streamagg.create_window('no_such_schema.w', 'access', size => '1 minute');
SELECT streamagg.create_window('a.b.c.d', 'access', size => '1 minute');
SELECT streamagg.create_window('bad name', 'access', size => '1 minute');
SELECT streamagg.create_window('', 'access', size => '1 minute');

-- Unknown columns.
SELECT streamagg.create_window('w', 'access', group_by => 'host');
SELECT streamagg.create_window('w', 'access', aggregates => 'sum(size) AS s');
SELECT streamagg.create_window('w', 'access', filter => 'code = 500');
SELECT streamagg.create_window('w', 'access', group_by => 'access.ip');

-- group_by.
SELECT streamagg.create_window('w', 'access', group_by => 'count(*)');
SELECT streamagg.create_window('w', 'access', group_by => 'status / 100');
SELECT streamagg.create_window('w', 'access', group_by => 'ip, ip');
SELECT streamagg.create_window('w', 'access', group_by => 'ip AS window_start', size => '1 minute');
SELECT streamagg.create_window('w', 'access', group_by => 'ip', aggregates => 'count(*) AS ip');
SELECT streamagg.create_window('w', 'access', group_by => 'at');
SELECT streamagg.create_window('w', 'access', group_by => 'generate_series(1, status) AS g');
SELECT streamagg.create_window('w', 'access', group_by => '(SELECT 1) AS one');
SELECT streamagg.create_window('w', 'access', group_by => 'ip,');
SELECT streamagg.create_window('w', 'access', group_by => 'ip FROM pg_class');
SELECT streamagg.create_window('w', 'access', group_by => 'ip; DROP TABLE hits_per_ip');
SELECT streamagg.create_window('w', 'access', group_by => '');

-- aggregates.
SELECT streamagg.create_window('w', 'access', aggregates => 'stddev(bytes) AS sd');
SELECT streamagg.create_window('w', 'access', aggregates => 'count(DISTINCT ip) AS ips');
SELECT streamagg.create_window('w', 'access', aggregates => 'sum(bytes) + 1 AS s');
SELECT streamagg.create_window('w', 'access', aggregates => 'sum(bytes) FILTER (WHERE status = 200) AS s');
SELECT streamagg.create_window('w', 'access', aggregates => 'max(ip ORDER BY ip) AS m');
SELECT streamagg.create_window('w', 'access', aggregates => 'string_agg(ip, '','') AS ips');
SELECT streamagg.create_window('w', 'access', aggregates => 'bytes');
SELECT streamagg.create_window('w', 'access', aggregates => 'sum(ip)');
SELECT streamagg.create_window('w', 'access', aggregates => 'sum(sum(bytes)) AS s');
SELECT streamagg.create_window('w', 'access', aggregates => 'row_number() OVER () AS r');
SELECT streamagg.create_window('w', 'access', aggregates => 'count(*) AS n, count(*) AS n');
SELECT streamagg.create_window('w', 'access', aggregates => 'count(*), count(ip)');
SELECT streamagg.create_window('w', 'access', aggregates => 'count(*) AS window_end', size => '1 minute');
SELECT streamagg.create_window('w', 'access', aggregates => 'max((SELECT 1)) AS m');
SELECT streamagg.create_window('w', 'access', aggregates => '');
SELECT streamagg.create_window('w', 'access', aggregates => 'count(*) AS n WHERE true');

-- filter.
SELECT streamagg.create_window('w', 'access', filter => 'count(*) > 1');
SELECT streamagg.create_window('w', 'access', filter => 'ip IN (SELECT ip FROM hits_per_ip)');
SELECT streamagg.create_window('w', 'access', filter => 'status');
SELECT streamagg.create_window('w', 'access', filter => 'status >');
SELECT streamagg.create_window('w', 'access', filter => 'true; SELECT 1');
SELECT streamagg.create_window('w', 'access', filter => '');

-- Timing.
SELECT streamagg.create_window('w', 'access', size => '0');
SELECT streamagg.create_window('w', 'access', size => '-1 minute');
SELECT streamagg.create_window('w', 'access', size => '1 month');
SELECT streamagg.create_window('w', 'access', size => '1 year');
SELECT streamagg.create_window('w', 'access', size => '1 minute', slide => '2 minutes');
SELECT streamagg.create_window('w', 'access', size => '10 minutes', slide => '3 minutes');
SELECT streamagg.create_window('w', 'access', size => '1 day', slide => '1 second');
SELECT streamagg.create_window('w', 'access', size => '1 minute', slide => '0');
SELECT streamagg.create_window('w', 'access', slide => '1 minute');
SELECT streamagg.create_window('w', 'access', size => '1 minute', session_gap => '5 minutes');
SELECT streamagg.create_window('w', 'access', size => '1 minute', allowed_lateness => '-1 second');
SELECT streamagg.create_window('w', 'access', size => '1 minute', allowed_lateness => '1 month');
SELECT streamagg.create_window('w', 'access', size => '1 minute', retention => '0');

-- None of the failed calls left a window or a table behind.
SELECT name FROM streamagg.windows ORDER BY name;
SELECT count(*) FROM pg_class WHERE relname = 'w';

-- Another role may not add or drop windows of a stream it does not own;
-- on its own stream, the result and state tables are its own.
SET client_min_messages = warning;
CREATE ROLE regress_streamagg_other;
RESET client_min_messages;
GRANT USAGE ON SCHEMA streamagg TO regress_streamagg_other;
CREATE SCHEMA regress_other AUTHORIZATION regress_streamagg_other;
SET ROLE regress_streamagg_other;
SELECT streamagg.create_window('regress_other.w', 'access', size => '1 minute');
SELECT streamagg.drop_window('hits_per_ip');
SELECT streamagg.create_stream('mine', 't', '127.0.0.1:9', 'x int');
SELECT streamagg.create_window('regress_other.mine', 'mine', aggregates => 'avg(x) AS avg_x');
SELECT streamagg.create_window('public.mine', 'mine', aggregates => 'avg(x) AS avg_x');
SELECT streamagg.create_window('streamagg.mine', 'mine', aggregates => 'avg(x) AS avg_x');
RESET ROLE;
SELECT w.name, r.relowner::regrole AS result_owner, s.relowner::regrole AS state_owner
FROM streamagg.windows w
JOIN pg_class r ON r.oid = w.result_table
JOIN pg_class s ON s.oid = w.state_table
WHERE w.stream = 'mine';
SELECT streamagg.drop_window('regress_other.mine');
SELECT streamagg.drop_stream('mine');
DROP SCHEMA regress_other;
REVOKE USAGE ON SCHEMA streamagg FROM regress_streamagg_other;
DROP ROLE regress_streamagg_other;

-- drop_window removes the definition, the result table and the avg state.
SELECT state_table::oid AS daily_state FROM streamagg.windows WHERE name = 'reports.daily' \gset
SELECT streamagg.drop_window('reports.daily');
SELECT to_regclass('reports.daily') AS result_table,
       (SELECT count(*) FROM pg_class WHERE oid = :daily_state) AS state_tables;
SELECT streamagg.drop_window('reports.daily');
SELECT streamagg.drop_window('no_such_window');
SELECT streamagg.drop_window('reports."Mixed Case"');
DROP SCHEMA reports;

-- A window whose result table was dropped by hand can still be dropped.
SELECT streamagg.create_window('dropped_by_hand', 'access', size => '1 minute');
DROP TABLE dropped_by_hand CASCADE;  -- its _final view goes with it
SELECT streamagg.drop_window('dropped_by_hand');

-- pause, resume, reset_offsets.
SELECT streamagg.pause('access');
SELECT name, state, start_from, restart_from FROM streamagg.streams;
SELECT streamagg.pause('access');
SELECT streamagg.resume('access');
SELECT name, state, start_from, restart_from FROM streamagg.streams;
SELECT streamagg.reset_offsets('access', "to" => 'latest');
SELECT name, state, start_from, restart_from FROM streamagg.streams;
SELECT streamagg.reset_offsets('access', '2024-06-01 12:00:00+00');
SELECT name, state, start_from, restart_from FROM streamagg.streams;
SELECT streamagg.reset_offsets('access');
SELECT name, state, start_from, restart_from FROM streamagg.streams;
SELECT count(*) FROM streamagg.offsets WHERE stream = 'access';
SELECT streamagg.reset_offsets('access', "to" => 'yesterday-ish');
SELECT streamagg.reset_offsets('access', NULL);
SELECT streamagg.pause('no_such_stream');
SELECT streamagg.resume('no_such_stream');
SELECT streamagg.reset_offsets('no_such_stream', "to" => 'latest');
SELECT streamagg.pause(NULL);

-- status: one row per stream (state, workers and last_error depend on the
-- unreachable broker and are not shown).
SELECT stream, partitions, lag, messages, dead_letters, watermark
FROM streamagg.status;

-- Session windows: (window_start, window_end, groups, aggregates), an index
-- on (groups, window_end) to find neighbouring sessions, a _final view.
SELECT streamagg.create_window('sessions', 'access', session_gap => '5 minutes',
       group_by => 'ip', aggregates => 'count(*) AS n, avg(bytes) AS avg_bytes',
       allowed_lateness => '1 minute', retention => '1 day');
\d sessions
\d sessions_final
SELECT kind, session_gap, allowed_lateness, retention FROM streamagg.windows WHERE name = 'sessions';
SELECT streamagg.create_window('bad_retention', 'access', size => '1 minute',
       allowed_lateness => '1 hour', retention => '10 minutes');
SELECT streamagg.create_window('bad_retention', 'access', retention => '10 minutes');
SELECT streamagg.drop_window('sessions');
SELECT to_regclass('sessions') AS sessions, to_regclass('sessions_state') AS state,
       to_regclass('sessions_final') AS final;

-- drop_stream refuses while windows read the stream; cascade drops them.
SELECT streamagg.drop_stream('access');
SELECT streamagg.drop_stream('access', cascade => false);
SELECT streamagg.drop_stream('no_such_stream');
SELECT streamagg.drop_stream('access', cascade => true);
SELECT count(*) AS streams FROM streamagg.streams;
SELECT count(*) AS windows FROM streamagg.windows;
SELECT count(*) AS tables FROM pg_class
WHERE relname IN ('hits_per_ip', 'all_aggs', 'hopping', 'slide_eq_size', 'per_status', 'total')
   OR relname ~ '^(hopping|hop_avg|hop_float)'
   OR (relnamespace = 'streamagg'::regnamespace AND relname LIKE 'avg_state_%');
SELECT * FROM streamagg.status;

-- Names: streams and windows alike follow the rules of SQL identifiers.
-- Unquoted names fold to lower case, double quotes keep case and other
-- characters; every function accepts any spelling create_* accepted.
SELECT streamagg.create_stream('Clicks', 't', '127.0.0.1:9', 'x int');
SELECT streamagg.create_stream('"Clicks"', 't', '127.0.0.1:9', 'x int');
SELECT streamagg.create_stream('"My Stream.v2"', 't', '127.0.0.1:9', 'x int');
SELECT streamagg.create_stream('clicks', 't', '127.0.0.1:9', 'x int');
SELECT streamagg.create_stream('"clicks"', 't', '127.0.0.1:9', 'x int');
SELECT name FROM streamagg.streams ORDER BY name COLLATE "C";
SELECT streamagg.create_window('PerX', 'CLICKS', group_by => 'x');
SELECT streamagg.create_window('"PerX"', '"Clicks"', group_by => 'x');
SELECT streamagg.create_window('"Per X.v2"', '"My Stream.v2"');
SELECT name, stream FROM streamagg.windows ORDER BY name COLLATE "C";
SELECT to_regclass('perx') AS perx, to_regclass('"PerX"') AS "PerX",
       to_regclass('"Per X.v2"') AS "Per X.v2", to_regclass('"Per X.v2_final"') AS final;
SELECT streamagg.pause('ClIcKs');
SELECT streamagg.pause('"Clicks"');
SELECT name, state FROM streamagg.streams ORDER BY name COLLATE "C";
SELECT streamagg.resume('"clicks"');
SELECT streamagg.resume('"Clicks"', skip => false);
SELECT streamagg.watermark('CLICKS'), streamagg.watermark('"My Stream.v2"');
SELECT streamagg.stream_options('"My Stream.v2"');
SELECT streamagg.reset_offsets('Clicks');
-- bad names: the error says why
\set VERBOSITY default
SELECT streamagg.create_stream('My Stream', 't', '127.0.0.1:9', 'x int');
SELECT streamagg.create_stream('public.clicks', 't', '127.0.0.1:9', 'x int');
SELECT streamagg.create_stream('"unterminated', 't', '127.0.0.1:9', 'x int');
SELECT streamagg.create_stream('""', 't', '127.0.0.1:9', 'x int');
SELECT streamagg.create_stream('"' || repeat('N', 62) || '"', 't', '127.0.0.1:9', 'x int');
SELECT streamagg.create_window('Per X', 'clicks');
SELECT streamagg.pause('My Stream.v2');
SELECT streamagg.watermark('"CLICKS"');
\set VERBOSITY terse
SELECT streamagg.drop_window('"perx"');
SELECT streamagg.drop_window('"Per X.v2"');
SELECT streamagg.drop_stream('CLICKS', cascade => true);
SELECT streamagg.drop_stream('"Clicks"', cascade => true);
SELECT streamagg.drop_stream('"My Stream.v2"');
SELECT count(*) AS streams FROM streamagg.streams;
SELECT count(*) AS windows FROM streamagg.windows;
