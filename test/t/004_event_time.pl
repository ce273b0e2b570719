# Event time: the watermark, allowed lateness, late rows as dead letters
# (per window), final rows and LISTEN notifications exactly when the
# watermark passes window_end + allowed_lateness, idle partitions, and
# retention.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use POSIX qw(floor);
use List::Util qw(min);

use StreamAgg;

my $node = new_node('et', conf => ["streamagg.batch_time = '50ms'"]);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_streamagg');
my $brokers = brokers();
my $base = 1_704_067_200_000;    # 2024-01-01 00:00:00 UTC, a minute boundary

sub q1 { return $node->safe_psql('postgres', $_[0]); }

sub ts_text
{
	my ($s) = @_;
	return q1("SELECT (timestamptz 'epoch' + ($base + $s * 1000) * interval '1 ms')::text");
}

# ---------------------------------------------------------------------------
# 1. One partition, rows in a fixed order; two windows that differ only in
#    their allowed lateness.

create_topic('et_one', 1);
$node->safe_psql('postgres', qq{
BEGIN;
SELECT streamagg.create_stream(name => 'one', topic => 'et_one', brokers => '$brokers',
  columns => 'k text, v int, ts timestamptz', event_time => 'ts',
  options => '{"streamagg.idle_timeout": 600000}');
SELECT streamagg.create_window(name => 'l30', stream => 'one', size => '1 minute',
  group_by => 'k', aggregates => 'count(*) AS n, sum(v) AS s', allowed_lateness => '30 seconds');
SELECT streamagg.create_window(name => 'l0', stream => 'one', size => '1 minute',
  aggregates => 'count(*) AS n, sum(v) AS s');
COMMIT;});

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN streamagg_closed');

# event times in seconds after $base, in arrival order
my @rows = (10, 20, 70, 95, 45, 130, 50, 85, 59, 200);
my %late;       # "offset/window" => 1, from the definition
my %sum;        # "window/start" => [count, sum] of on-time rows
my %notified;   # window => list of final_until seen so far, from the definition
my %expect_notes = (l0 => [], l30 => []);
my $wm = undef;
my %lateness = (l30 => 30, l0 => 0);
my %final_until;

for my $i (0 .. $#rows)
{
	my $t = $rows[$i];
	my $start = int($t / 60) * 60;
	for my $w (qw(l30 l0))
	{
		if (defined $wm && $start + 60 + $lateness{$w} <= $wm)
		{
			$late{"$i/$w"} = 1;
		}
		else
		{
			$sum{"$w/$start"}[0]++;
			$sum{"$w/$start"}[1] += $i + 1;
		}
	}
	$wm = $t if !defined $wm || $t > $wm;

	produce('et_one', [ { partition => 0, payload => sprintf('{"k":"a","v":%d,"ts":%d}', $i + 1, $base + $t * 1000) } ]);
	ok(wait_for($node, "SELECT messages FROM streamagg.status WHERE stream = 'one'", $i + 1, 60),
		"row $i (t=$t) committed");

	# the committed watermark is the largest event time read so far
	is(q1("SELECT watermark = timestamptz 'epoch' + ($base + $wm * 1000) * interval '1 ms' FROM streamagg.status WHERE stream = 'one'"),
		't', "row $i: watermark is $wm s");

	# final rows: exactly the windows whose end + lateness <= watermark
	for my $w (qw(l30 l0))
	{
		my @final = grep { $_ + 60 + $lateness{$w} <= $wm } map { /\/(\d+)$/ ? $1 : () } grep { /^$w\// } keys %sum;
		my $expect = join(',', sort { $a <=> $b } @final);
		is(q1("SELECT coalesce(string_agg((extract(epoch FROM window_start)::bigint - $base / 1000)::text, ',' ORDER BY window_start), '')
		         FROM (SELECT DISTINCT window_start FROM ${w}_final) f"),
			$expect, "row $i: $w" . "_final holds the windows closed at watermark $wm");

		# a notification in this commit iff final_until = watermark - lateness
		# passed a window end (windows ending before the first event read
		# never held anything)
		my $until = $wm - $lateness{$w};
		my $first = min(@rows[ 0 .. $i ]);
		my $prev  = $final_until{$w};
		$prev = $first if !defined $prev || $prev < $first;
		if ($until > $prev && floor($until / 60) != floor($prev / 60))
		{
			push @{ $expect_notes{$w} }, $until;
			$final_until{$w} = $until;
		}
	}
	my $out = $listener->query_safe('SELECT 1');
	my @notes = $out =~ /"window": "(\w+)", "watermark": "[^"]*", "final_until": "([^"]*)"/g;
	my %got;
	while (my ($w, $u) = splice(@notes, 0, 2)) { push @{ $got{$w} }, $u; }
	for my $w (qw(l30 l0))
	{
		my @want = map { ts_text($_) } @{ $expect_notes{$w} };
		is(join(' | ', @{ $got{$w} // [] }), join(' | ', @want),
			"row $i: notification for $w exactly when a window closed");
		$expect_notes{$w} = [];
	}
}
$listener->quit;

# late rows are dead letters of the window they were late for, only
is( q1("SELECT string_agg(\"offset\" || '/' || window_name, ',' ORDER BY \"offset\", window_name)
          FROM streamagg.dead_letters WHERE stream = 'one' AND reason = 'late'"),
	join(',', sort { my ($ao, $aw) = split m{/}, $a; my ($bo, $bw) = split m{/}, $b; $ao <=> $bo or $aw cmp $bw } keys %late),
	'late rows are dead letters exactly for the windows they missed');
like(q1("SELECT error FROM streamagg.dead_letters WHERE stream = 'one' AND reason = 'late' LIMIT 1"),
	qr/too late for window .* watermark .* allowed lateness/, 'a late dead letter says why');
for my $w (qw(l30 l0))
{
	my $expect = join(',', map { "$_:$sum{$_}[0]:$sum{$_}[1]" } sort { my ($x) = $a =~ /(\d+)$/; my ($y) = $b =~ /(\d+)$/; $x <=> $y } grep { /^$w\// } keys %sum);
	$expect =~ s/$w\///g;
	is(q1("SELECT string_agg((extract(epoch FROM window_start)::bigint - $base / 1000) || ':' || n || ':' || s, ',' ORDER BY window_start) FROM $w"),
		$expect, "$w holds exactly the on-time rows");
}
is(q1("SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'one' AND reason = 'late' AND \"offset\" = 7"),
	'1', 'row 7 (t=85) is late for l0 but counts in l30');

# ---------------------------------------------------------------------------
# 2. An idle partition holds the watermark back only for idle_timeout.

create_topic('et_idle', 2);
$node->safe_psql('postgres', qq{
BEGIN;
SELECT streamagg.create_stream(name => 'idle', topic => 'et_idle', brokers => '$brokers',
  columns => 'v int, ts timestamptz', event_time => 'ts',
  options => '{"streamagg.idle_timeout": 4000}');
SELECT streamagg.create_window(name => 'idle_w', stream => 'idle', size => '1 minute',
  aggregates => 'count(*) AS n');
COMMIT;});
ok(wait_for($node, "SELECT workers FROM streamagg.status WHERE stream = 'idle'", '1', 60), 'idle: worker up');
produce('et_idle', [ map { { partition => 0, payload => sprintf('{"v":1,"ts":%d}', $base + $_ * 1000) } } (5, 65, 125) ]);
ok(wait_for($node, "SELECT messages FROM streamagg.status WHERE stream = 'idle'", 3, 60), 'idle: rows committed');
my $t_commit = time();
is(q1("SELECT count(*) FROM idle_w_final"), '0',
	'idle: partition 1 (no data yet) holds the watermark back at first');
ok(wait_for($node, "SELECT count(*) FROM idle_w_final", '2', 30),
	'idle: once partition 1 is idle, the windows behind partition 0 close');
my $waited = time() - $t_commit;
ok($waited <= 15, "idle: closed within the idle timeout and a commit ($waited s)");
is(q1("SELECT watermark = timestamptz 'epoch' + ($base + 125000) * interval '1 ms' FROM streamagg.status WHERE stream = 'idle'"),
	't', 'idle: the watermark is partition 0\'s largest event time');
is(q1("SELECT idle FROM streamagg.partitions WHERE stream = 'idle' AND partition = 1"), 't',
	'idle: streamagg.partitions shows partition 1 idle');
# partition 1 rejoins with an old row: late for the closed window
produce('et_idle', [ { partition => 1, payload => sprintf('{"v":1,"ts":%d}', $base + 10_000) } ]);
ok(wait_for($node, "SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'idle' AND reason = 'late'", '1', 60),
	'idle: a row for a closed window from the rejoining partition is late');

# ---------------------------------------------------------------------------
# 3. Retention removes only windows older than the bound.

create_topic('et_ret', 1);
$node->safe_psql('postgres', qq{
BEGIN;
SELECT streamagg.create_stream(name => 'ret', topic => 'et_ret', brokers => '$brokers',
  columns => 'v int, ts timestamptz', event_time => 'ts');
SELECT streamagg.create_window(name => 'ret_w', stream => 'ret', size => '1 minute',
  group_by => 'v', aggregates => 'count(*) AS n, avg(v) AS a', retention => '3 minutes');
SELECT streamagg.create_window(name => 'keep_w', stream => 'ret', size => '1 minute',
  aggregates => 'count(*) AS n');
COMMIT;});
produce('et_ret', [ map { { partition => 0, payload => sprintf('{"v":%d,"ts":%d}', $_ % 3, $base + $_ * 30_000) } } (0 .. 20) ]);
ok(wait_for($node, "SELECT messages FROM streamagg.status WHERE stream = 'ret'", 21, 60), 'retention: rows committed');
# watermark is at 600 s: windows ending before 420 s go
ok( wait_for(
		$node,
		"SELECT min(extract(epoch FROM window_end)::bigint - $base / 1000) FROM ret_w",
		'420', 30),
	'retention: windows ending more than 3 minutes behind the watermark are deleted');
is(q1("SELECT count(DISTINCT window_start) FROM ret_w"), '5', 'retention: the newer windows stay (ends 420 to 660 s)');
is(q1("SELECT count(*) FROM keep_w"), '11', 'retention: a window without retention keeps everything');
is(q1("SELECT count(*) FROM ret_w_state s WHERE NOT EXISTS (SELECT 1 FROM ret_w r WHERE r.window_start = s.window_start AND r.v = s.v)"),
	'0', 'retention: the avg state of deleted windows goes too');

ok(!(slurp_file($node->logfile) =~ /terminated by signal/), 'no worker crashed');
$node->stop;
done_testing();
