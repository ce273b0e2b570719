# Session windows: out-of-order rows that bridge sessions merge them; the
# table equals a batch computation over all rows (gaps and islands in
# SQL), whatever the arrival order, across tiny batches (so sessions merge
# with stored ones), and through worker kills.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use List::Util qw(shuffle);

use StreamAgg;

my $node = new_node('ss', conf => ["streamagg.batch_time = '50ms'", "restart_after_crash = on"]);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_streamagg');
$node->safe_psql('postgres', 'CREATE TABLE raw (k text, v int, ts timestamptz)');
my $brokers = brokers();
my $base    = 1_704_067_200_000;
my $gap_s   = 10;

sub q1 { return $node->safe_psql('postgres', $_[0]); }

# Bursts of events per group, so that sessions form, touch and bridge.
srand(7);
my @events;
for my $k ('a', 'b', 'c', undef)
{
	my $t = int(rand(50)) * 1000;
	for (1 .. 60)
	{
		# mostly small steps (same session), sometimes a jump (new session),
		# sometimes exactly the gap (a new session: closer than the gap only)
		my $r = rand();
		$t += $r < 0.75 ? int(rand(9_000)) : $r < 0.9 ? $gap_s * 1000 : 15_000 + int(rand(30_000));
		push @events, { k => $k, v => int(rand(1000)) - 100, ms => $base + $t };
	}
}
my $lines = join("\n", map { join("\t", $_->{k} // '\N', $_->{v}, sprintf('%.3f', $_->{ms} / 1000)) } @events) . "\n";
my $file = PostgreSQL::Test::Utils::tempdir() . '/raw.tsv';
open(my $fh, '>', $file) or die $!;
print $fh $lines;
close $fh;
$node->safe_psql('postgres',
	"CREATE TEMP TABLE r (k text, v int, e numeric); COPY r FROM '$file';"
	  . "INSERT INTO raw SELECT k, v, to_timestamp(e) FROM r");

sub rows_of
{
	my (@evs) = @_;
	return [ map { {
		partition => 0,
		payload => sprintf('{"k":%s,"v":%d,"ts":%d}', defined $_->{k} ? qq("$_->{k}") : 'null', $_->{v}, $_->{ms})
	} } @evs ];
}

sub create_session_stream
{
	my ($name, $batch) = @_;
	create_topic("ss_$name", 1);
	$node->safe_psql('postgres', qq{
BEGIN;
SELECT streamagg.create_stream(name => '$name', topic => 'ss_$name', brokers => '$brokers',
  columns => 'k text, v int, ts timestamptz', event_time => 'ts',
  options => '{"streamagg.batch_size": $batch}');
SELECT streamagg.create_window(name => '${name}_sess', stream => '$name',
  session_gap => '$gap_s seconds', group_by => 'k', allowed_lateness => '1 day',
  aggregates => 'count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi, avg(v) AS a');
COMMIT;});
}

my $truth = qq{
WITH r AS (SELECT k, v, ts,
                  CASE WHEN ts - lag(ts) OVER (PARTITION BY k ORDER BY ts) < interval '$gap_s seconds'
                       THEN 0 ELSE 1 END AS brk
             FROM raw),
     s AS (SELECT *, sum(brk) OVER (PARTITION BY k ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid FROM r)
SELECT min(ts) AS window_start, max(ts) + interval '$gap_s seconds' AS window_end, k,
       count(*), sum(v), min(v), max(v), avg(v)
  FROM s GROUP BY k, sid};

sub differences
{
	my ($table) = @_;
	return q1(qq{
SELECT (SELECT count(*) FROM ((SELECT * FROM $table) EXCEPT ALL ($truth)) a)
     + (SELECT count(*) FROM (($truth) EXCEPT ALL (SELECT * FROM $table)) b)});
}

my $n_events = scalar @events;
my $n_sessions = q1("SELECT count(*) FROM ($truth) t");
ok($n_sessions > 20 && $n_sessions < $n_events / 2, "the data forms $n_sessions sessions from $n_events rows");

# 1. In event-time order, batches of 3 rows.
create_session_stream('ordered', 3);
produce('ss_ordered', rows_of(sort { $a->{ms} <=> $b->{ms} } @events));
ok(wait_for($node, "SELECT messages FROM streamagg.status WHERE stream = 'ordered'", $n_events, 120),
	'ordered: all rows committed');
is(differences('ordered_sess'), '0', 'ordered: sessions equal the batch computation');

# 2. Shuffled, batches of 2: rows arrive between and bridge stored sessions.
create_session_stream('shuffled', 2);
produce('ss_shuffled', rows_of(shuffle @events));
ok(wait_for($node, "SELECT messages FROM streamagg.status WHERE stream = 'shuffled'", $n_events, 120),
	'shuffled: all rows committed');
is(differences('shuffled_sess'), '0', 'shuffled: bridging rows merged stored sessions; equal to the batch computation');
is(q1("SELECT count(*) FROM ((SELECT * FROM ordered_sess) EXCEPT ALL (SELECT * FROM shuffled_sess)) d"), '0',
	'the same table whatever the arrival order');
is(q1("SELECT count(*) FROM streamagg.dead_letters"), '0', 'no dead letters');
is(q1("SELECT count(*) FROM shuffled_sess_state"), $n_sessions, 'one avg state row per session');

# A row exactly between two sessions bridges them into one row.
my ($s1_end, $s2_start) = split /\|/, q1(qq{
SELECT extract(epoch FROM a.window_end)::numeric * 1000, extract(epoch FROM b.window_start)::numeric * 1000
  FROM shuffled_sess a JOIN shuffled_sess b ON a.k = b.k AND b.window_start > a.window_end - interval '$gap_s seconds'
 WHERE b.window_start - (a.window_end - interval '$gap_s seconds') < interval '19 seconds'
   AND NOT EXISTS (SELECT 1 FROM shuffled_sess c WHERE c.k = a.k AND c.window_start > a.window_start AND c.window_start < b.window_start)
 ORDER BY a.window_start LIMIT 1});
SKIP:
{
	skip 'no pair of sessions less than two gaps apart', 2 unless defined $s2_start && $s2_start ne '';
	my $before = q1('SELECT count(*) FROM shuffled_sess');
	my $last1 = $s1_end - $gap_s * 1000;
	my $mid = int(($last1 + $s2_start) / 2);
	my ($k) = q1(qq{SELECT k FROM shuffled_sess WHERE extract(epoch FROM window_end)::numeric * 1000 = $s1_end LIMIT 1});
	produce('ss_shuffled', [ { partition => 0, payload => sprintf('{"k":"%s","v":1,"ts":%d}', $k, $mid) } ]);
	$node->safe_psql('postgres', "INSERT INTO raw VALUES ('$k', 1, timestamptz 'epoch' + $mid * interval '1 ms')");
	ok(wait_for($node, 'SELECT count(*) FROM shuffled_sess', $before - 1, 60),
		'a bridging row merges two stored sessions into one row');
	is(differences('shuffled_sess'), '0', 'after the bridge: still equal to the batch computation');
}

# 3. Through worker kills: many tiny batches, SIGKILL in the middle.
$node->safe_psql('postgres', "SELECT streamagg.drop_stream('ordered', cascade => true)");
create_session_stream('killed', 4);
my @shuffled = shuffle @events;
my $half = int(@shuffled / 2);
produce('ss_killed', rows_of(@shuffled[ 0 .. $half - 1 ]));
$node->poll_query_until('postgres',
	"SELECT coalesce(messages, 0) >= 40 FROM streamagg.status WHERE stream = 'killed'")
  or die 'killed: no progress';
my @pids = worker_pids($node, 'pg_streamagg worker');
kill 'KILL', @pids;
note('SIGKILL of the workers at about 40 rows');
# the server restarts after the crash: wait until it answers again
wait_for($node, 'SELECT true', 't', 120) or die 'server did not come back';
produce('ss_killed', rows_of(@shuffled[ $half .. $#shuffled ]));
# the bridging row of section 2 is in raw too: produce it here as well
my $extra = q1("SELECT count(*) FROM raw") - $n_events;
if ($extra > 0)
{
	my ($k, $ms) = split /\|/, q1("SELECT k, extract(epoch FROM ts)::numeric * 1000 FROM raw ORDER BY ctid DESC LIMIT 1");
	produce('ss_killed', [ { partition => 0, payload => sprintf('{"k":"%s","v":1,"ts":%d}', $k, $ms) } ]);
}
ok( wait_for(
		$node, "SELECT messages FROM streamagg.status WHERE stream = 'killed'",
		$n_events + $extra, 180),
	'killed: all rows committed after the crash');
is(differences('killed_sess'), '0', 'killed: sessions exact through a SIGKILL');

# 4. Lateness: a row is late only when it cannot join a session that is
# still open.  Gap 5 s, no allowed lateness, one partition: the watermark
# is the largest event time read.  A session is final once window_end +
# gap + lateness <= watermark.  Group w only moves the watermark.
create_topic('ss_lat', 1);
$node->safe_psql('postgres', q{
SELECT streamagg.create_stream(name => 'lat', topic => 'ss_lat', brokers => '} . $brokers . q{',
  columns => 'k text, v int, ts timestamptz', event_time => 'ts',
  options => '{"streamagg.batch_size": 100}');
SELECT streamagg.create_window(name => 'lat_sess', stream => 'lat', size => NULL,
  session_gap => '5 seconds', group_by => 'k', aggregates => 'count(*) AS n, sum(v) AS s');
CREATE TABLE lat_seen AS SELECT * FROM lat_sess_final WHERE false;});
my $lat_sent = 0;
sub lat_step
{
	my ($what, @evs) = @_;
	produce('ss_lat', [ map { { partition => 0,
		payload => sprintf('{"k":"%s","v":1,"ts":%d}', $_->[0], $base + $_->[1] * 1000) } } @evs ]);
	$lat_sent += @evs;
	ok(wait_for($node, "SELECT messages FROM streamagg.status WHERE stream = 'lat'", $lat_sent, 60),
		"lat: $what committed");
	# everything _final ever lists must stay as it is
	q1('INSERT INTO lat_seen SELECT * FROM lat_sess_final');
}
sub lat_sessions
{
	my ($k) = @_;
	return q1(qq{SELECT string_agg((extract(epoch FROM window_start) - 1704067200)::bigint
	                  || '-' || (extract(epoch FROM window_end) - 1704067200)::bigint
	                  || ':' || n, ' ' ORDER BY window_start) FROM lat_sess WHERE k = '$k'});
}
sub lat_late
{
	return q1(q{SELECT coalesce(string_agg(trim_scale(((convert_from(payload, 'UTF8')::json->>'ts')::bigint - 1704067200000) / 1000.0)
	                           || '', ' ' ORDER BY "offset"), '')
	              FROM streamagg.dead_letters WHERE stream = 'lat' AND reason = 'late'});
}

# The case of the issue: events at 3, 6, 9 s, then one at 4 s at watermark
# 9 s (its own session [4, 9) would be closed): it falls into the open
# session [3, 14) and is counted.  Once with the session stored by an
# earlier batch (a), once within one batch (c).
lat_step('3, 6, 9 s', [ 'a', 3 ], [ 'a', 6 ], [ 'c', 3 ], [ 'c', 6 ], [ 'a', 9 ], [ 'c', 9 ], [ 'c', 4 ]);
is(lat_sessions('a'), '3-14:3', 'session [3, 14) of three rows');
is(lat_sessions('c'), '3-14:4', 'a row at 4 s after watermark 9 s falls into the open session of its batch: counted');
lat_step('4 s after watermark 9 s', [ 'a', 4 ]);
is(lat_sessions('a'), '3-14:4', 'the row at 4 s falls into the stored open session: counted, four rows');
is(lat_late(), '', 'neither is a late dead letter');

# Watermark 22: [3, 14) is final (14 + 5 <= 22); [16, 25) and [22, 27) are open.
lat_step('16, 20, 22 s', [ 'a', 16 ], [ 'a', 20 ], [ 'b', 22 ]);
is(q1("SELECT string_agg(k || ':' || n, ' ' ORDER BY k) FROM lat_sess_final"), 'a:4 c:4',
	'the sessions [3, 14) are final at watermark 22');

# Watermark 27.  Every row below has event_time + gap <= watermark.
lat_step('rows behind watermark 27',
	[ 'w', 27 ],
	[ 'a', 12.5 ],    # would bridge the final [3, 14) with the open [16, 25)
	[ 'a', 21 ],      # falls into the open [16, 25): counted, [16, 26)
	[ 'a', -5 ],      # touches nothing: would only start a closed session
	[ 'a', 11 ]);     # would only extend the final [3, 14)
is(lat_sessions('a'), '3-14:4 16-26:3',
	'a row extending an open session is counted; bridging into a final one is not');
is(lat_late(), '12.5 -5 11', 'bridging into a final session, starting a closed one and extending a final one are late');
is(q1("SELECT window_name FROM streamagg.dead_letters WHERE stream = 'lat' AND reason = 'late' LIMIT 1"), 'lat_sess',
	'late dead letters name the window');

# Watermark 31: [16, 26) becomes final; a row at 25 s bridges the two open
# sessions [22, 27) and [28, 33) of b into one.
lat_step('a bridge of two open sessions at watermark 31', [ 'b', 28 ], [ 'w', 31 ], [ 'b', 25 ], [ 'a', 23 ]);
is(lat_sessions('b'), '22-33:3', 'a row bridging two open sessions merges them into one row');
is(lat_late(), '12.5 -5 11 23', 'a row extending the session that just became final is late');
is(q1("SELECT string_agg(k || ':' || n, ' ' ORDER BY k, window_start) FROM lat_sess_final"), 'a:4 a:3 c:4',
	'final at watermark 31: the sessions ending at or before 26');
ok(q1('SELECT count(*) FROM lat_seen') >= 5, 'the final view listed rows along the way');
is(q1('SELECT count(*) FROM (SELECT * FROM lat_seen EXCEPT SELECT * FROM lat_sess) d'), '0',
	'no row listed in _final changed later');

ok(!(slurp_file($node->logfile) =~ /terminated by signal 11/), 'no worker crashed on its own');
$node->stop;
done_testing();
