--
-- create_stream: the happy paths, every validation error, and who may read
-- a stream's options.  No Kafka broker is needed: nothing here starts a
-- worker (a stream without windows is idle).
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_streamagg;
RESET client_min_messages;
\set VERBOSITY terse

-- Happy paths: json (with PATH), csv, text.
SELECT streamagg.create_stream(
    name        => 'access',
    topic       => 'access-log',
    brokers     => '127.0.0.1:9',
    columns     => 'ip text, status int, bytes bigint, ts timestamptz, ua text PATH ''$.request."user agent"''',
    format      => 'json',
    event_time  => 'ts',
    start_from  => 'earliest',
    parallelism => 2,
    on_error    => 'dead_letter',
    options     => '{"security.protocol": "plaintext", "fetch.min.bytes": 1}');
SELECT streamagg.create_stream('csv_in', 'csv-topic', '127.0.0.1:9',
    'host text, "Load" numeric(6,2), at timestamptz',
    format => 'csv', event_time => 'at', start_from => 'latest', on_error => 'skip',
    options => '{"streamagg.csv_delimiter": ";", "streamagg.csv_quote": "''", "streamagg.batch_size": 500}');
SELECT streamagg.create_stream('lines', 'text-topic', '127.0.0.1:9', 'line text',
    format => 'text', start_from => '2024-01-01 00:00:00+00', on_error => 'stop');
-- Defaults: json, Kafka record time, earliest, one worker, dead letters.
SELECT streamagg.create_stream('defaults', 't', '127.0.0.1:9', 'x int');
-- event_time => 'kafka_timestamp' is the same as NULL.
SELECT streamagg.create_stream('meta_time', 't', '127.0.0.1:9', 'x int',
    event_time => 'kafka_timestamp');
-- Any PostgreSQL type, arrays and domains included.
CREATE DOMAIN pct AS int CHECK (VALUE BETWEEN 0 AND 100);
SELECT streamagg.create_stream('types', 't', '127.0.0.1:9',
    'a int[], b jsonb, c inet, d public.pct, e varchar(10), f timestamp with time zone, g numeric(10, 3)',
    event_time => 'f');

SELECT name, topic, brokers, columns, format, event_time, start_from,
       parallelism, on_error, options, owner, state, last_error
FROM streamagg.streams ORDER BY name;
SELECT stream, state, workers, partitions, lag, messages, dead_letters, watermark, last_commit, last_error
FROM streamagg.status ORDER BY stream;

-- The owner reads the options through stream_options().
SELECT streamagg.stream_options('access');
SELECT streamagg.stream_options('csv_in');
SELECT streamagg.stream_options('no_such_stream');

-- Required arguments.
SELECT streamagg.create_stream(NULL, 't', '127.0.0.1:9', 'x int');
SELECT streamagg.create_stream('s', NULL, '127.0.0.1:9', 'x int');
SELECT streamagg.create_stream('s', 't', NULL, 'x int');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', NULL);
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', format => NULL);
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', start_from => NULL);
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', on_error => NULL);
-- NULL parallelism and options take the defaults.
SELECT streamagg.create_stream('null_defaults', 't', '127.0.0.1:9', 'x int',
    parallelism => NULL, options => NULL);
SELECT parallelism, streamagg.stream_options(name) AS options
FROM streamagg.streams WHERE name = 'null_defaults';
SELECT streamagg.drop_stream('null_defaults');

-- Names.
SELECT streamagg.create_stream('', 't', '127.0.0.1:9', 'x int');
SELECT streamagg.create_stream(repeat('n', 64), 't', '127.0.0.1:9', 'x int');
SELECT streamagg.create_stream(repeat('n', 63), 't', '127.0.0.1:9', 'x int');
SELECT streamagg.drop_stream(repeat('n', 63));
SELECT streamagg.create_stream('access', 'other', '127.0.0.1:9', 'x int');

-- Format and error policy.
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', format => 'avro');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', format => 'JSON');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', on_error => 'ignore');

-- Column lists.
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', '');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int,');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', ', x int');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int, y');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x no_such_type');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int int');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int, X bigint');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'kafka_key text');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int, kafka_timestamp timestamptz');
-- Quoted names keep their case, so "X" and x are two columns.
SELECT streamagg.create_stream('quoted', 't', '127.0.0.1:9', 'x int, "X" bigint, "a b" text');
SELECT columns FROM streamagg.streams WHERE name = 'quoted';
SELECT streamagg.drop_stream('quoted');

-- PATH clauses.
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int PATH ''a.b''');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int PATH ''$''');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int PATH ''$.a..b''');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int PATH ''$.a.''');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int PATH ''$."a''');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int PATH ''$.a[0]''');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int PATH ''''');

-- Format text takes exactly one column.
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'a text, b text', format => 'text');

-- event_time.
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', event_time => 'ts');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int, ts timestamp', event_time => 'ts');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int, ts text', event_time => 'ts');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', event_time => 'kafka_offset');

-- start_from.
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', start_from => 'beginning');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', start_from => '');

-- parallelism.
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', parallelism => 0);
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', parallelism => -1);
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', parallelism => 257);

-- options: librdkafka properties and the streamagg.* ones.
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', options => '[]');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', options => '"a"');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', options => '{"no.such.property": "x"}');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', options => '{"security.protocol": "carrier-pigeon"}');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', options => '{"fetch.min.bytes": "many"}');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', options => '{"fetch.min.bytes": null}');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', options => '{"fetch.min.bytes": {"a": 1}}');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', options => '{"streamagg.no_such": 1}');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', options => '{"streamagg.batch_size": 0}');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', options => '{"streamagg.batch_size": "ten"}');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', options => '{"streamagg.batch_time": 600001}');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', options => '{"streamagg.idle_timeout": -1}');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', options => '{"streamagg.csv_delimiter": ";;"}');
SELECT streamagg.create_stream('s', 't', '127.0.0.1:9', 'x int', options => '{"streamagg.csv_quote": ""}');

-- None of the failed calls left anything behind.
SELECT name FROM streamagg.streams ORDER BY name;

-- Another role: reads the catalog but not the options, and cannot touch
-- streams it does not own.
SET client_min_messages = warning;
CREATE ROLE regress_streamagg_other;
CREATE ROLE regress_streamagg_owner;
RESET client_min_messages;
-- (roles use the API once they may use schema streamagg)
GRANT USAGE ON SCHEMA streamagg TO regress_streamagg_other, regress_streamagg_owner;
SET ROLE regress_streamagg_other;
SELECT name, topic, owner FROM streamagg.streams WHERE name = 'access';
SELECT options FROM streamagg.streams WHERE name = 'access';
SELECT * FROM streamagg.streams WHERE name = 'access';
SELECT streamagg.stream_options('access');
SELECT streamagg.create_window('other_hits', 'access', size => '1 minute');
SELECT streamagg.pause('access');
SELECT streamagg.resume('access');
SELECT streamagg.reset_offsets('access');
SELECT streamagg.drop_stream('access');
UPDATE streamagg.streams SET state = 'paused' WHERE name = 'access';
DELETE FROM streamagg.streams;
INSERT INTO streamagg.offsets VALUES ('access', 0, 0);
-- ... but it may create streams of its own, and read their options.
SELECT streamagg.create_stream('others', 't', '127.0.0.1:9', 'x int',
    options => '{"sasl.password": "secret"}');
SELECT streamagg.stream_options('others');
RESET ROLE;
SELECT name, owner FROM streamagg.streams WHERE name = 'others';
-- A member of the owning role counts as the owner.
GRANT regress_streamagg_other TO regress_streamagg_owner;
SET ROLE regress_streamagg_owner;
SELECT streamagg.stream_options('others');
SELECT streamagg.stream_options('access');
RESET ROLE;
-- A superuser may read everything.
SELECT streamagg.stream_options('others');
SET ROLE regress_streamagg_other;
SELECT streamagg.drop_stream('others');
SELECT count(*) FROM streamagg.streams WHERE name = 'others';
RESET ROLE;

-- Arguments Kafka or the stream cannot use are refused at create time.
SELECT streamagg.create_stream('v', 'bad topic!', '127.0.0.1:9', 'x int');
SELECT streamagg.create_stream('v', '..', '127.0.0.1:9', 'x int');
SELECT streamagg.create_stream('v', 't', 'localhost', 'x int');
SELECT streamagg.create_stream('v', 't', 'h1:9092,:9092', 'x int');
SELECT streamagg.create_stream('v', 't', 'h1:99999', 'x int');
SELECT streamagg.create_stream('v', 't', 'h1:9092, [::1]:9093,SSL://h2:9094', 'x int');
SELECT streamagg.drop_stream('v');
SELECT streamagg.create_stream('v', 't', '127.0.0.1:9', 'x int PATH ''$.a.x''', format => 'csv');
SELECT streamagg.create_stream('v', 't', '127.0.0.1:9', 'x int',
    options => '{"streamagg.csv_delimiter": ";"}');
SELECT streamagg.create_stream('v', 't', '127.0.0.1:9', 'x int', start_from => 'infinity');
-- Arguments are checked before the name: a bad call says what is wrong with it.
SELECT streamagg.create_stream('access', 't', '127.0.0.1:9', 'x nosuchtype');
-- 'now' and local times are stored as the UTC instant they meant.
SET TimeZone = 'Europe/Paris';
SELECT streamagg.create_stream('v', 't', '127.0.0.1:9', 'x int', start_from => '2024-06-01 14:00');
SELECT start_from FROM streamagg.streams WHERE name = 'v';
SELECT streamagg.create_stream('v2', 't', '127.0.0.1:9', 'x int', start_from => 'now');
SELECT start_from::timestamptz BETWEEN now() - interval '1 minute' AND now() + interval '1 minute'
  FROM streamagg.streams WHERE name = 'v2';
RESET TimeZone;
SELECT streamagg.drop_stream('v');
SELECT streamagg.drop_stream('v2');
SELECT streamagg.watermark('nosuch');

-- Clean up.
SELECT streamagg.drop_stream(name) FROM streamagg.streams ORDER BY name;
-- Limits are refused at create time, never silently wrong: a JSON stream
-- of more than 64 columns, intervals whose microseconds overflow.
SELECT streamagg.create_stream('wide', 't', '127.0.0.1:9',
    (SELECT string_agg('c' || i || ' int', ', ') FROM generate_series(1, 65) i));
SELECT streamagg.create_stream('lim', 't', '127.0.0.1:9', 'x int, ts timestamptz', event_time => 'ts');
SELECT streamagg.create_window('lim_w', 'lim', size => '200000000 days', group_by => 'x',
    aggregates => 'count(*) AS n');
SELECT streamagg.create_window('lim_w', 'lim', size => '1 minute', group_by => 'x',
    aggregates => 'count(*) AS n', allowed_lateness => '200000000 days');
SELECT streamagg.create_window('lim_w', 'lim', size => NULL, session_gap => '200000000 days',
    group_by => 'x', aggregates => 'count(*) AS n');
SELECT streamagg.drop_stream('lim');
SELECT count(*) FROM streamagg.streams;
DROP DOMAIN pct;
REVOKE USAGE ON SCHEMA streamagg FROM regress_streamagg_other, regress_streamagg_owner;
DROP ROLE regress_streamagg_other;
DROP ROLE regress_streamagg_owner;
