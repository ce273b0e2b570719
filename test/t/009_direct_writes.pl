# Direct writes (src/sink_direct.c) and the event-time fast path
# (src/decode_time.c).
#
# A stream with parallelism 1 is its windows' only writer: new rows go in
# by heap multi-insert and known rows are updated by TID.  Its tables must
# still equal the GROUP BY over every message, through SIGKILLed workers
# (the row map is rebuilt from the table), rows a user inserted or updated
# meanwhile (the map's knowledge is wrong: the SQL upsert takes over), and
# a table the direct path must not touch (a trigger on it: its rows go
# through SQL, and the trigger sees them).  ISO-8601 event times read by
# the fast path must equal timestamptz input, also in a non-UTC TimeZone.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use StreamAgg;

my $node = new_node(
	'dw',
	conf => [
		"streamagg.batch_time = '100ms'",
		"streamagg.batch_size = 3000",
		"restart_after_crash = on",
	]);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_streamagg');
$node->safe_psql('postgres',
	'CREATE TABLE raw (ip text, bytes bigint, ts timestamptz)');
my $brokers = brokers();
my $base_ms = 1_704_067_200_000;    # 2024-01-01 00:00:00 UTC
my $seq     = 0;

sub q1 { return $node->safe_psql('postgres', $_[0]); }

# ISO-8601 text of epoch milliseconds, at a given offset (minutes east).
sub iso
{
	my ($ms, $east) = @_;
	my @t = gmtime(int($ms / 1000) + $east * 60);
	my $off = $east == 0 ? 'Z'
	  : sprintf('%s%02d:%02d', $east < 0 ? '-' : '+', abs($east) / 60, abs($east) % 60);
	return sprintf('%04d-%02d-%02dT%02d:%02d:%02d.%03d%s',
		$t[5] + 1900, $t[4] + 1, $t[3], $t[2], $t[1], $t[0], $ms % 1000, $off);
}

# $n messages over ~12 minutes of event time, out of order; event times as
# ISO strings at assorted offsets or as epoch milliseconds.
sub make_rows
{
	my ($n, $raw) = @_;
	my @rows;
	for (1 .. $n)
	{
		$seq++;
		my $ip    = sprintf('10.2.%d.%d', $seq % 7, ($seq * 13) % 29);
		my $bytes = ($seq % 53 == 0) ? undef : ($seq * 41) % 70_000;
		my $ms    = $base_ms + (($seq * 7919) % 720_000);
		my $ts    = $seq % 5 == 0 ? $ms : '"' . iso($ms, (0, 120, -300, 330)[$seq % 4]) . '"';
		push @rows,
		  {
			partition => -1,
			payload   => sprintf('{"ip":"%s","bytes":%s,"ts":%s}', $ip, $bytes // 'null', $ts)
		  };
		push @$raw, join("\t", $ip, $bytes // '\N', sprintf('%.3f', $ms / 1000));
	}
	return \@rows;
}

sub load_raw
{
	my ($lines) = @_;
	my $file = PostgreSQL::Test::Utils::tempdir() . '/raw.tsv';
	open(my $fh, '>', $file) or die $!;
	print $fh "$_\n" for @$lines;
	close $fh;
	q1("CREATE TEMP TABLE r (ip text, bytes bigint, e numeric); COPY r FROM '$file';"
		  . "INSERT INTO raw SELECT ip, bytes, to_timestamp(e) FROM r");
}

sub differences
{
	my ($table, $truth) = @_;
	return q1(qq{
SELECT (SELECT count(*) FROM ((SELECT * FROM $table) EXCEPT ALL ($truth)) a)
     + (SELECT count(*) FROM (($truth) EXCEPT ALL (SELECT * FROM $table)) b)});
}

my $tumble_truth = "SELECT date_bin('1 minute', ts, 'epoch'), date_bin('1 minute', ts, 'epoch') + interval '1 minute',
        ip, count(*), count(bytes), sum(bytes), min(bytes), max(bytes) FROM raw GROUP BY 1, 2, 3";
my $hop_truth = "SELECT ws, ws + interval '3 minutes', ip, count(*), sum(bytes)
   FROM raw, generate_series(date_bin('1 minute', ts, 'epoch') - interval '2 minutes',
                             date_bin('1 minute', ts, 'epoch'), '1 minute') AS ws
  GROUP BY 1, 2, 3";

sub check_truth
{
	my ($label) = @_;
	is(differences('d_tumble', $tumble_truth), '0', "$label: direct tumbling window equals GROUP BY");
	is(differences('d_hop',    $hop_truth),    '0', "$label: direct hopping window equals GROUP BY");
	is(differences('t_trig',   $tumble_truth), '0', "$label: window with a trigger equals GROUP BY");
}

sub committed
{
	return q1("SELECT coalesce(sum(messages), 0) FROM streamagg.offsets WHERE stream = 'dw'");
}

# ---------------------------------------------------------------------------
# 1. Three windows of one worker; a trigger on one of the tables.

create_topic('dw', 2);
q1(qq{
BEGIN;
SELECT streamagg.create_stream(name => 'dw', topic => 'dw', brokers => '$brokers',
  columns => 'ip text, bytes bigint, ts timestamptz', event_time => 'ts', parallelism => 1);
SELECT streamagg.create_window(name => 'd_tumble', stream => 'dw', size => '1 minute',
  group_by => 'ip', allowed_lateness => '1 day',
  aggregates => 'count(*) AS hits, count(bytes) AS with_bytes, sum(bytes) AS bytes,
                 min(bytes) AS min_b, max(bytes) AS max_b');
SELECT streamagg.create_window(name => 'd_hop', stream => 'dw', size => '3 minutes',
  slide => '1 minute', group_by => 'ip', allowed_lateness => '1 day',
  aggregates => 'count(*) AS hits, sum(bytes) AS bytes');
SELECT streamagg.create_window(name => 't_trig', stream => 'dw', size => '1 minute',
  group_by => 'ip', allowed_lateness => '1 day',
  aggregates => 'count(*) AS hits, count(bytes) AS with_bytes, sum(bytes) AS bytes,
                 min(bytes) AS min_b, max(bytes) AS max_b');
CREATE TABLE audit (op text);
CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS
  \$\$ BEGIN INSERT INTO public.audit VALUES (TG_OP); RETURN NEW; END \$\$;  -- workers run with search_path = pg_catalog, pg_temp
CREATE TRIGGER t_trig_audit AFTER INSERT OR UPDATE ON t_trig
  FOR EACH ROW EXECUTE FUNCTION audit_row();
COMMIT;});

# 2. Chunks of messages, a SIGKILL of the worker inside each but the first.
my $total = 0;
srand(7);
for my $round (1 .. 4)
{
	my @lines;
	my $chunk = 12_000;
	$total += produce('dw', make_rows($chunk, \@lines), lz4 => 1);
	load_raw(\@lines);
	next if $round == 1;
	my $target = $total - $chunk + 1000 + int(rand($chunk - 4000));
	$node->poll_query_until('postgres',
		"SELECT coalesce(sum(messages), 0) >= $target FROM streamagg.offsets WHERE stream = 'dw'")
	  or die "stream did not reach $target";
	my @pids = worker_pids($node, 'pg_streamagg worker');
	is(scalar @pids, 1, "round $round: one worker");
	kill 'KILL', $pids[0];
	note("round $round: SIGKILL at about $target");
	ok(wait_for($node,
			"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_streamagg worker' AND pid <> $pids[0]",
			'1', 120),
		"round $round: a new worker runs");
}
ok(wait_for($node, "SELECT coalesce(sum(messages), 0) FROM streamagg.offsets WHERE stream = 'dw'",
		$total, 300),
	"all $total messages committed");
check_truth('after 3 SIGKILLs');
is(q1("SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'dw'"), '0', 'no dead letters');
ok(q1("SELECT count(*) > 0 FROM audit"), 'the trigger saw the rows of its table');

# ---------------------------------------------------------------------------
# 3. Rows someone else wrote: a row inserted into a window the worker has
#    not seen yet, and a row updated after the worker wrote it.

my $later = $base_ms + 3_600_000;    # an hour later: new windows
q1("INSERT INTO d_tumble VALUES (to_timestamp($later / 1000.0), to_timestamp($later / 1000.0) + interval '1 minute',
      'foreign', 1000, 1000, 5, 5, 5)");
q1("UPDATE d_tumble SET hits = hits + 7
     WHERE (window_start, ip) = (SELECT window_start, ip FROM d_tumble WHERE ip <> 'foreign'
                                 ORDER BY window_start DESC, ip LIMIT 1)");
my $updated = q1("SELECT window_start || '|' || ip FROM d_tumble WHERE ip <> 'foreign'
                   ORDER BY window_start DESC, ip LIMIT 1");
my ($uws, $uip) = split /\|/, $updated;
my $ums = q1("SELECT (extract(epoch FROM timestamptz '$uws') * 1000)::bigint + 100");
my @more;
for my $i (1 .. 5)
{
	push @more, { partition => 0, payload => sprintf('{"ip":"foreign","bytes":10,"ts":%d}', $later + $i) };
	push @more, { partition => 1, payload => sprintf('{"ip":"%s","bytes":20,"ts":"%s"}', $uip, iso($ums + $i, 60)) };
}
$total += produce('dw', \@more);
ok(wait_for($node, "SELECT coalesce(sum(messages), 0) FROM streamagg.offsets WHERE stream = 'dw'",
		$total, 120),
	'the extra messages were committed');
is(q1("SELECT hits || ' ' || with_bytes || ' ' || bytes || ' ' || min_b || ' ' || max_b
         FROM d_tumble WHERE ip = 'foreign'"),
	'1005 1005 55 5 10', 'a row inserted by someone else is combined, not duplicated');
is(q1("SELECT count(*) FROM d_tumble WHERE ip = 'foreign'"), '1', 'one row per window and group');
q1("INSERT INTO raw SELECT '$uip', 20, timestamptz '$uws' + interval '100 ms' + i * interval '1 ms'
      FROM generate_series(1, 5) i");
is(q1("SELECT t.hits - g.n FROM d_tumble t,
         (SELECT count(*) AS n FROM raw WHERE ip = '$uip' AND date_bin('1 minute', ts, 'epoch') = '$uws') g
        WHERE t.window_start = '$uws' AND t.ip = '$uip'"),
	'7', 'a row updated by someone else keeps their change and gets ours');

# The direct path probes no index per row; the SQL upsert probes one per
# row.  Counters from zero, then a chunk of messages in new windows.
q1("SELECT pg_stat_reset_single_table_counters(oid) FROM pg_class
     WHERE oid IN ('d_tumble'::regclass, 't_trig'::regclass)
        OR oid IN (SELECT indexrelid FROM pg_index WHERE indrelid IN ('d_tumble'::regclass, 't_trig'::regclass))");
$base_ms += 7_200_000;
my @lines;
$total += produce('dw', make_rows(6000, \@lines), lz4 => 1);
load_raw(\@lines);
ok(wait_for($node, "SELECT coalesce(sum(messages), 0) FROM streamagg.offsets WHERE stream = 'dw'",
		$total, 120),
	'a chunk in new windows was committed');
my $groups = q1("SELECT count(DISTINCT (date_bin('1 minute', ts, 'epoch'), ip)) FROM raw
                  WHERE ts >= to_timestamp($base_ms / 1000.0)");
ok($node->poll_query_until('postgres',
		"SELECT bool_and(n_tup_ins + n_tup_upd >= $groups) FROM pg_stat_user_tables
		  WHERE relname IN ('d_tumble', 't_trig')"),
	"statistics of both tables arrived ($groups rows each at least)");
sub probes
{
	my ($table) = @_;
	return q1("SELECT i.idx_scan || ' ' || (t.n_tup_ins + t.n_tup_upd)
		   FROM pg_stat_user_tables t JOIN pg_stat_user_indexes i USING (relid) WHERE t.relname = '$table'");
}
my ($tp, $tw) = split / /, probes('t_trig');
cmp_ok($tp, '>=', $tw, "the table with a trigger was upserted through SQL ($tp index probes, $tw rows written)");
my ($dp, $dw) = split / /, probes('d_tumble');
cmp_ok($dp, '<', $dw / 4, "the direct table was written without a probe per row ($dp probes, $dw rows written)");

# ---------------------------------------------------------------------------
# 4. ISO-8601 event times: the fast path equals timestamptz input, in a
#    session TimeZone that is not UTC (strings without offset read in it).

q1("ALTER DATABASE postgres SET timezone = 'America/New_York'");
create_topic('dw_ts', 1);
q1(qq{
BEGIN;
SELECT streamagg.create_stream(name => 'ts', topic => 'dw_ts', brokers => '$brokers',
  columns => 's text, t timestamptz');
SELECT streamagg.create_window(name => 'ts_seen', stream => 'ts', group_by => 's, t',
  aggregates => 'count(*) AS n');
COMMIT;});
my @good = (
	'2024-01-01T00:00:00Z',           '2024-01-01T00:00:00.5Z',
	'2024-01-01T00:00:00.123456Z',    '2024-01-01T00:00:00.1234567Z',
	'2024-02-29T23:59:59.999+05:30',  '2024-07-01T12:00:00-0800',
	'2024-07-01T12:00:00+02',         '2024-07-01 12:00:00+02:00',
	'2024-07-01T12:00:00',            '2024-03-10T02:30:00',
	'2024-11-03T01:30:00.25',         '2024-07-01t12:00:00z',
	'2024-07-01T24:00:00Z',           '0001-01-01T00:00:00Z',
	'9999-12-31T23:59:59.999999Z',    '2024-07-01T12:00:00+15:59',
	'2024-07-01T12:00:00 UTC',        '1999-12-31T23:59:59.000001-00:01');
my @bad = ('2023-02-29T00:00:00Z', '2024-13-01T00:00:00Z', '2024-01-01T00:60:00Z',
	'2024-07-01T12:00:00+16:00');
my @msgs = map { { partition => 0, payload => sprintf('{"s":"%s","t":"%s"}', $_, $_) } } @good, @bad;
produce('dw_ts', \@msgs);
ok(wait_for($node, "SELECT coalesce(sum(messages), 0) FROM streamagg.offsets WHERE stream = 'ts'",
		scalar @msgs, 60),
	'the timestamp messages were committed');
is(q1("SELECT count(*) FROM ts_seen"), scalar @good, 'every valid timestamp was read');
is(q1("SELECT string_agg(s, ', ') FROM ts_seen WHERE t IS DISTINCT FROM s::timestamptz"), '',
	'every timestamp equals timestamptz input of the same text');
is(q1("SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'ts' AND reason = 'decode'"),
	scalar @bad, 'invalid timestamps are dead letters');

$node->stop;
done_testing();
