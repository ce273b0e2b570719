--
-- CREATE EXTENSION: schema streamagg, its tables, views and functions.
--
CREATE EXTENSION pg_streamagg;

SELECT extname, extversion, extnamespace::regnamespace AS schema
FROM pg_extension WHERE extname = 'pg_streamagg';

-- Every object of the extension, by kind (the catalog and the API).
SELECT pg_describe_object(classid, objid, objsubid) AS object
FROM pg_depend
WHERE refclassid = 'pg_extension'::regclass
  AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_streamagg')
  AND deptype = 'e'
ORDER BY 1;

-- The tables and views users read.
\d streamagg.streams
\d streamagg.windows
\d streamagg.offsets
\d streamagg.dead_letters
\d streamagg.gaps
\d streamagg.status
\d streamagg.partitions

-- The API, with argument names and defaults.
\x on
\df streamagg.*
\x off

-- Nothing is defined yet.
SELECT count(*) FROM streamagg.streams;
SELECT count(*) FROM streamagg.windows;
SELECT * FROM streamagg.status;
SELECT * FROM streamagg.partitions;
SELECT count(*) FROM streamagg.dead_letters;
SELECT count(*) FROM streamagg.gaps;

-- Every role may read the catalog, except the options column of streams.
SELECT grantee, privilege_type, count(*) AS columns
FROM information_schema.column_privileges
WHERE table_schema = 'streamagg' AND table_name = 'streams' AND grantee = 'PUBLIC'
GROUP BY 1, 2;
SELECT has_column_privilege('public', 'streamagg.streams', 'options', 'SELECT') AS public_reads_options,
       has_column_privilege('public', 'streamagg.streams', 'name', 'SELECT') AS public_reads_name,
       has_table_privilege('public', 'streamagg.windows', 'SELECT') AS windows,
       has_table_privilege('public', 'streamagg.offsets', 'SELECT') AS offsets,
       has_table_privilege('public', 'streamagg.dead_letters', 'SELECT') AS dead_letters,
       has_table_privilege('public', 'streamagg.gaps', 'SELECT') AS gaps,
       has_table_privilege('public', 'streamagg.status', 'SELECT') AS status,
       has_table_privilege('public', 'streamagg.partitions', 'SELECT') AS partitions,
       has_table_privilege('public', 'streamagg.streams', 'INSERT') AS public_inserts_streams;

-- GUCs use the prefix streamagg.
SELECT name, setting, unit, context FROM pg_settings
WHERE name LIKE 'streamagg.%' ORDER BY name;

-- It refuses to be relocated.
ALTER EXTENSION pg_streamagg SET SCHEMA streamagg;

-- The extension can be dropped and created again.
DROP EXTENSION pg_streamagg;
SELECT to_regclass('streamagg.streams') AS streams,
       to_regprocedure('streamagg.create_stream(text,text,text,text,text,text,text,integer,text,jsonb)') AS create_stream;
CREATE EXTENSION pg_streamagg;
SELECT to_regclass('streamagg.streams') AS streams;
