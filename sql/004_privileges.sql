--
-- Privileges: who may use the API, options reserved to superusers, the
-- worker quota, name resolution with a fixed search_path, and what each
-- role sees.  No broker is needed (windows are created, nothing is read).
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_streamagg;
RESET client_min_messages;
\set VERBOSITY default

CREATE ROLE regress_sa_user;
CREATE ROLE regress_sa_nogrant;
CREATE SCHEMA regress_sa_s AUTHORIZATION regress_sa_user;
CREATE FUNCTION public.double_it(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';

-- Without USAGE on schema streamagg nothing is reachable.
SET ROLE regress_sa_nogrant;
SELECT streamagg.create_stream('p', 't', '127.0.0.1:9', 'x int');
SELECT count(*) FROM streamagg.status;
RESET ROLE;

GRANT USAGE ON SCHEMA streamagg TO regress_sa_user;
SET ROLE regress_sa_user;

-- Quota on workers.
SELECT streamagg.create_stream('p', 't', '127.0.0.1:9', 'x int', parallelism => 5);

-- librdkafka properties that touch the server are for superusers ...
SELECT streamagg.create_stream('p', 't', '127.0.0.1:9', 'x int',
    options => '{"ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt"}');
SELECT streamagg.create_stream('p', 't', '127.0.0.1:9', 'x int',
    options => '{"sasl.kerberos.kinit.cmd": "true"}');
SELECT streamagg.create_stream('p', 't', '127.0.0.1:9', 'x int',
    options => '{"plugin.library.paths": "/tmp/x.so"}');
SELECT streamagg.create_stream('p', 't', '127.0.0.1:9', 'x int',
    options => '{"debug": "all"}');
-- ... and some are for nobody.
SELECT streamagg.create_stream('p', 't', '127.0.0.1:9', 'x int',
    options => '{"group.id": "mine"}');
SELECT streamagg.create_stream('p', 't', '127.0.0.1:9', 'x int',
    options => '{"log.queue": false}');

-- Types outside pg_catalog are named with their schema.
SELECT streamagg.create_stream('p', 't', '127.0.0.1:9', 'x int, y no_such_type');

-- Credentials and inline PEM are fine.
SELECT streamagg.create_stream('p', 't', '127.0.0.1:9', 'x int',
    options => '{"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN",
                 "sasl.username": "u", "sasl.password": "pw", "ssl.ca.pem": "-----BEGIN CERTIFICATE-----"}');

-- Functions outside pg_catalog are qualified, too.
SELECT streamagg.create_window('regress_sa_s.w', 'p', group_by => 'double_it(x) AS d');
SELECT streamagg.create_window('regress_sa_s.w', 'p', group_by => 'public.double_it(x) AS d');
-- A result table goes only where the owner may create it.
SELECT streamagg.create_window('public.w2', 'p', group_by => 'x');
SELECT name, owner, state FROM streamagg.streams;
SELECT name, stream FROM streamagg.windows;
SELECT stream FROM streamagg.status;
SELECT options FROM streamagg.streams;
SELECT streamagg.stream_options('p') ->> 'sasl.username' AS username;
RESET ROLE;

-- Another role sees none of it, and may not change it.
GRANT USAGE ON SCHEMA streamagg TO regress_sa_nogrant;
SET ROLE regress_sa_nogrant;
SELECT count(*) FROM streamagg.streams;
SELECT count(*) FROM streamagg.windows;
SELECT count(*) FROM streamagg.status;
SELECT streamagg.pause('p');
SELECT streamagg.stream_options('p');
SELECT streamagg.drop_window('regress_sa_s.w');
RESET ROLE;

-- A superuser sees all; the owner cannot be dropped while she owns a stream.
SELECT name, owner FROM streamagg.streams;
DROP ROLE regress_sa_user;
DROP OWNED BY regress_sa_user;
SELECT count(*) FROM streamagg.streams;
DROP OWNED BY regress_sa_nogrant;
DROP ROLE regress_sa_user;
DROP ROLE regress_sa_nogrant;
DROP FUNCTION public.double_it(int);
