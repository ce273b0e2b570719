/* pg_streamagg 0.1: the catalog, the views and the SQL API. */

\echo Use "CREATE EXTENSION pg_streamagg" to load this file. \quit

-- The schema is a member of the extension: DROP EXTENSION removes it.
-- Nobody but superusers may use it until a superuser grants a role
-- USAGE ON SCHEMA streamagg.
CREATE SCHEMA streamagg;
REVOKE ALL ON SCHEMA streamagg FROM PUBLIC;

-- Streams: where rows come from.  `options` may hold secrets (SASL
-- passwords, SSL keys): only the table owner reads that column directly;
-- a stream's owner reads it through streamagg.stream_options(name).
CREATE TABLE streamagg.streams (
    name         text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 63),
    topic        text NOT NULL,
    brokers      text NOT NULL,
    columns      text NOT NULL,
    format       text NOT NULL CHECK (format IN ('json', 'csv', 'text')),
    event_time   text,
    start_from   text NOT NULL,  -- as given at create time (times in UTC)
    restart_from text,           -- the last reset_offsets, if any
    parallelism  int  NOT NULL CHECK (parallelism BETWEEN 1 AND 256),
    on_error     text NOT NULL CHECK (on_error IN ('dead_letter', 'skip', 'stop')),
    options      jsonb NOT NULL DEFAULT '{}',
    owner        regrole NOT NULL,
    state        text NOT NULL DEFAULT 'running'
                 CHECK (state IN ('running', 'paused', 'stopped')),
    last_error   text,
    failed_partition int,        -- on_error = 'stop': the message it stopped at
    failed_offset    bigint,
    skip_partition   int,        -- resume(skip => true): treat it as a dead letter
    skip_offset      bigint,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Windows: what is maintained, and where.
CREATE TABLE streamagg.windows (
    name             text PRIMARY KEY,
    stream           text NOT NULL REFERENCES streamagg.streams (name),
    result_table     regclass NOT NULL,   -- a view for sliced hopping windows
    state_table      regclass,
    slice_table      regclass,            -- sliced hopping windows: per-slide partial rows
    closed_table     regclass,            -- ... and the windows materialized when they closed
    kind             text NOT NULL CHECK (kind IN ('tumbling', 'hopping', 'session', 'global')),
    size             interval,
    slide            interval,
    session_gap      interval,
    group_by         text,
    aggregates       text NOT NULL,
    filter           text,
    allowed_lateness interval NOT NULL DEFAULT '0',
    retention        interval,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON streamagg.windows (stream);

-- Consumer offsets, committed in the same transaction as the window rows
-- and dead letters they cover.  `epoch` fences workers: a worker claims
-- its partitions with a fresh epoch and every commit checks it, so two
-- workers can never both commit the same partition; changing a stream's
-- windows resets the epoch, which makes its workers reload.
CREATE TABLE streamagg.offsets (
    stream          text NOT NULL REFERENCES streamagg.streams (name) ON DELETE CASCADE,
    partition       int NOT NULL,
    next_offset     bigint NOT NULL,
    epoch           bigint NOT NULL DEFAULT 0,
    max_event_time  timestamptz,
    watermark       timestamptz,    -- the owning worker's watermark at its last commit
    messages        bigint NOT NULL DEFAULT 0,
    dead_letters    bigint NOT NULL DEFAULT 0,
    last_commit     timestamptz,
    PRIMARY KEY (stream, partition)
);
CREATE SEQUENCE streamagg.epoch_seq;

-- Messages that could not be aggregated, and why.
CREATE TABLE streamagg.dead_letters (
    stream       text NOT NULL,
    window_name  text,
    partition    int NOT NULL,
    "offset"     bigint NOT NULL,
    key          bytea,
    payload      bytea,
    reason       text NOT NULL,
    error        text,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON streamagg.dead_letters (stream, partition, "offset");

-- Offsets the stream could not read, recorded in the transaction that
-- moves past them: 'retention' (Kafka deleted them unread; the stream goes
-- on at the log start) or 'truncated' (the log now ends before the
-- committed offset; the stream stops).  to_offset is exclusive; messages
-- is NULL when unknown (a truncated log).
CREATE TABLE streamagg.gaps (
    stream       text NOT NULL REFERENCES streamagg.streams (name) ON DELETE CASCADE,
    partition    int NOT NULL,
    from_offset  bigint NOT NULL,
    to_offset    bigint NOT NULL,
    messages     bigint,
    reason       text NOT NULL CHECK (reason IN ('retention', 'truncated')),
    detected_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON streamagg.gaps (stream, partition, from_offset);

SELECT pg_catalog.pg_extension_config_dump('streamagg.streams', '');
SELECT pg_catalog.pg_extension_config_dump('streamagg.windows', '');
SELECT pg_catalog.pg_extension_config_dump('streamagg.offsets', '');
SELECT pg_catalog.pg_extension_config_dump('streamagg.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('streamagg.gaps', '');
SELECT pg_catalog.pg_extension_config_dump('streamagg.epoch_seq', '');

-- Who sees what: a role sees the rows of the streams it owns (or is a
-- member of the owner of); superusers see all.  Column `options` (it may
-- hold secrets) is readable by no one but the extension's owner; a
-- stream's owner reads it through streamagg.stream_options(name).
REVOKE ALL ON streamagg.streams, streamagg.windows, streamagg.offsets,
              streamagg.dead_letters, streamagg.gaps FROM PUBLIC;
GRANT SELECT (name, topic, brokers, columns, format, event_time, start_from,
              restart_from, parallelism, on_error, owner, state, last_error,
              failed_partition, failed_offset, skip_partition, skip_offset, created_at)
    ON streamagg.streams TO PUBLIC;
GRANT SELECT ON streamagg.windows, streamagg.offsets, streamagg.dead_letters,
                streamagg.gaps TO PUBLIC;

ALTER TABLE streamagg.streams ENABLE ROW LEVEL SECURITY;
ALTER TABLE streamagg.windows ENABLE ROW LEVEL SECURITY;
ALTER TABLE streamagg.offsets ENABLE ROW LEVEL SECURITY;
ALTER TABLE streamagg.dead_letters ENABLE ROW LEVEL SECURITY;
ALTER TABLE streamagg.gaps ENABLE ROW LEVEL SECURITY;

CREATE POLICY own_streams ON streamagg.streams FOR SELECT
    USING (pg_catalog.pg_has_role(owner::pg_catalog.oid, 'USAGE'));
CREATE POLICY own_streams ON streamagg.windows FOR SELECT
    USING (EXISTS (SELECT 1 FROM streamagg.streams s
                   WHERE s.name OPERATOR(pg_catalog.=) stream
                     AND pg_catalog.pg_has_role(s.owner::pg_catalog.oid, 'USAGE')));
CREATE POLICY own_streams ON streamagg.offsets FOR SELECT
    USING (EXISTS (SELECT 1 FROM streamagg.streams s
                   WHERE s.name OPERATOR(pg_catalog.=) stream
                     AND pg_catalog.pg_has_role(s.owner::pg_catalog.oid, 'USAGE')));
CREATE POLICY own_streams ON streamagg.dead_letters FOR SELECT
    USING (EXISTS (SELECT 1 FROM streamagg.streams s
                   WHERE s.name OPERATOR(pg_catalog.=) stream
                     AND pg_catalog.pg_has_role(s.owner::pg_catalog.oid, 'USAGE')));
CREATE POLICY own_streams ON streamagg.gaps FOR SELECT
    USING (EXISTS (SELECT 1 FROM streamagg.streams s
                   WHERE s.name OPERATOR(pg_catalog.=) stream
                     AND pg_catalog.pg_has_role(s.owner::pg_catalog.oid, 'USAGE')));

-- Live figures from shared memory.
CREATE FUNCTION streamagg._live_partitions(
    OUT stream text, OUT partition int, OUT pid int, OUT worker int,
    OUT high_watermark bigint, OUT max_event_time timestamptz,
    OUT last_message timestamptz, OUT unreachable boolean)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'sa_live_partitions' LANGUAGE C;

CREATE FUNCTION streamagg._live_workers(
    OUT stream text, OUT worker int, OUT pid int, OUT started_at timestamptz,
    OUT watermark timestamptz)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'sa_live_workers' LANGUAGE C;

CREATE FUNCTION streamagg._request_manager() RETURNS void
AS 'MODULE_PATHNAME', 'sa_request_manager' LANGUAGE C;

-- The committed watermark of a stream: the smallest of its workers'
-- watermarks at their last commit.  A window row is final once
-- window_end + allowed_lateness <= this.
-- A stream the caller cannot see is an error, as in the other functions.
CREATE FUNCTION streamagg._no_watermark(stream text) RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$$ BEGIN
     IF NOT EXISTS (SELECT 1 FROM streamagg.streams s WHERE s.name = stream) THEN
       RAISE EXCEPTION 'stream "%" does not exist', stream USING ERRCODE = 'undefined_object';
     END IF;
     RETURN NULL;
   END $$;

-- A stream name as stored: SQL identifier rules (see create_stream).
CREATE FUNCTION streamagg._stream_name(stream text) RETURNS text
AS 'MODULE_PATHNAME', 'sa_stream_name' LANGUAGE C IMMUTABLE STRICT;

CREATE FUNCTION streamagg.watermark(stream text) RETURNS timestamptz
LANGUAGE sql STABLE AS
$$ SELECT COALESCE(
       (SELECT pg_catalog.min(o.watermark) FROM streamagg.offsets o
        WHERE o.stream OPERATOR(pg_catalog.=) streamagg._stream_name($1)),
       streamagg._no_watermark(streamagg._stream_name($1))) $$;

-- One row per partition: committed offset, Kafka's high watermark, lag
-- (NULL when unknown: no live worker has asked Kafka) and the largest
-- event time committed.  The views read the tables as their owner, so
-- they filter on the caller's streams themselves (security_barrier keeps
-- the caller's own conditions from seeing other rows first).
CREATE VIEW streamagg.partitions WITH (security_barrier) AS
SELECT o.stream, o.partition, o.next_offset AS "offset", l.high_watermark,
       CASE WHEN l.high_watermark IS NOT NULL
            THEN greatest(l.high_watermark - o.next_offset, 0) END AS lag,
       o.max_event_time, o.messages, o.dead_letters, o.last_commit, l.last_message,
       l.last_message < now() - make_interval(secs => coalesce(
           (SELECT (s.options->>'streamagg.idle_timeout')::float8 / 1000
              FROM streamagg.streams s WHERE s.name = o.stream),
           extract(epoch FROM current_setting('streamagg.idle_timeout')::interval)::float8))
         AND NOT l.unreachable AS idle,   -- quiet, never cut off
       l.pid AS worker_pid
FROM streamagg.offsets o
LEFT JOIN streamagg._live_partitions() l USING (stream, partition)
WHERE EXISTS (SELECT 1 FROM streamagg.streams s
              WHERE s.name = o.stream AND pg_catalog.pg_has_role(s.owner::oid, 'USAGE'));

-- One row per stream.  'failing': the last attempt to run it failed, for
-- the reason in last_error (cleared by the next batch that commits).
CREATE VIEW streamagg.status WITH (security_barrier) AS
SELECT s.name AS stream,
       CASE WHEN s.state <> 'running' THEN s.state
            WHEN NOT EXISTS (SELECT 1 FROM streamagg.windows x WHERE x.stream = s.name) THEN 'idle'
            WHEN s.last_error IS NOT NULL THEN 'failing'
            WHEN coalesce(w.workers, 0) >= s.parallelism THEN 'running'
            ELSE 'starting' END AS state,
       coalesce(w.workers, 0) AS workers,
       coalesce(p.partitions, 0) AS partitions,
       p.lag,
       coalesce(p.messages, 0) AS messages,
       coalesce(p.dead_letters, 0) AS dead_letters,
       p.watermark,
       p.last_commit,
       s.last_error,
       (SELECT count(*) FROM streamagg.gaps g WHERE g.stream = s.name) AS gaps
FROM streamagg.streams s
LEFT JOIN LATERAL (SELECT count(*)::int AS workers
                   FROM streamagg._live_workers() lw WHERE lw.stream = s.name) w ON true
LEFT JOIN LATERAL (SELECT count(*)::int AS partitions,
                          CASE WHEN count(*) = count(pp.lag) THEN sum(pp.lag)::bigint END AS lag,
                          sum(pp.messages)::bigint AS messages,
                          sum(pp.dead_letters)::bigint AS dead_letters,
                          streamagg.watermark(s.name) AS watermark,
                          max(pp.last_commit) AS last_commit
                   FROM streamagg.partitions pp WHERE pp.stream = s.name) p ON true
WHERE pg_catalog.pg_has_role(s.owner::oid, 'USAGE');

GRANT SELECT ON streamagg.status, streamagg.partitions TO PUBLIC;

-- Internal: used by the views (which filter by owner) and at install.
REVOKE EXECUTE ON FUNCTION streamagg._request_manager() FROM PUBLIC;

-- The API.
CREATE FUNCTION streamagg.create_stream(
    name        text,
    topic       text,
    brokers     text,
    columns     text,
    format      text DEFAULT 'json',
    event_time  text DEFAULT NULL,
    start_from  text DEFAULT 'earliest',
    parallelism int DEFAULT 1,
    on_error    text DEFAULT 'dead_letter',
    options     jsonb DEFAULT '{}')
RETURNS text AS 'MODULE_PATHNAME', 'sa_create_stream' LANGUAGE C CALLED ON NULL INPUT;

CREATE FUNCTION streamagg.create_window(
    name             text,
    stream           text,
    size             interval DEFAULT NULL,
    slide            interval DEFAULT NULL,
    group_by         text DEFAULT NULL,
    aggregates       text DEFAULT 'count(*) AS count',
    filter           text DEFAULT NULL,
    allowed_lateness interval DEFAULT '0',
    session_gap      interval DEFAULT NULL,
    retention        interval DEFAULT NULL)
RETURNS regclass AS 'MODULE_PATHNAME', 'sa_create_window' LANGUAGE C CALLED ON NULL INPUT;

CREATE FUNCTION streamagg.drop_window(name text) RETURNS void
AS 'MODULE_PATHNAME', 'sa_drop_window' LANGUAGE C;

CREATE FUNCTION streamagg.drop_stream(name text, cascade boolean DEFAULT false) RETURNS void
AS 'MODULE_PATHNAME', 'sa_drop_stream' LANGUAGE C;

CREATE FUNCTION streamagg.pause(stream text) RETURNS void
AS 'MODULE_PATHNAME', 'sa_pause' LANGUAGE C;

CREATE FUNCTION streamagg.resume(stream text, skip boolean DEFAULT false) RETURNS void
AS 'MODULE_PATHNAME', 'sa_resume' LANGUAGE C;

-- "to" is a reserved word in SQL: in named notation write "to" => ...
CREATE FUNCTION streamagg.reset_offsets(stream text, "to" text DEFAULT 'earliest',
                                        replay boolean DEFAULT false)
RETURNS void AS 'MODULE_PATHNAME', 'sa_reset_offsets' LANGUAGE C;

CREATE FUNCTION streamagg.stream_options(name text) RETURNS jsonb
AS 'MODULE_PATHNAME', 'sa_stream_options' LANGUAGE C STRICT;

-- Start serving this database now rather than at the next server start.
SELECT streamagg._request_manager();
