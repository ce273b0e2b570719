# Exactly once: window tables equal the GROUP BY over every message of the
# topic, first in a clean run, then through SIGKILLed workers and an
# immediate shutdown in the middle of consumption.  Event times are out of
# order over 40 minutes; an allowed lateness of an hour keeps every row on
# time (lateness itself is tested in 004).
#
# The truth is computed by PostgreSQL itself: every produced message is
# also loaded into a plain table `raw`, and each window table must equal
# the same GROUP BY over `raw` (EXCEPT ALL both ways, so a lost or a
# double-counted message shows up as a row difference).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use StreamAgg;

my $node = new_node(
	'eo',
	conf => [
		"streamagg.batch_time = '100ms'",
		"streamagg.batch_size = 5000",
		"restart_after_crash = on",
	]);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_streamagg');
$node->safe_psql('postgres',
	'CREATE TABLE raw (ip text, status int, bytes bigint, ts timestamptz)');

my $base_ms = 1_700_000_000_000;
my $seq     = 0;

# Make $n access-log messages; remember each one in @$raw_lines (COPY text).
sub make_rows
{
	my ($n, $raw_lines) = @_;
	my @rows;
	for (1 .. $n)
	{
		$seq++;
		my $ip = sprintf('10.1.%d.%d', ($seq * 7) % 13, ($seq * 31) % 17);
		my $status = ($seq % 97 == 0) ? undef : (($seq % 11 == 0) ? 503 : 200);
		my $bytes  = ($seq % 89 == 0) ? undef : ($seq * 37) % 100_000;
		# event times spread over ~40 minutes, not in order
		my $ts = $base_ms + (($seq * 7919) % 2_400_000);
		my $json = sprintf('{"ip":"%s","status":%s,"bytes":%s,"ts":%d}',
			$ip, $status // 'null', $bytes // 'null', $ts);
		push @rows, { partition => -1, key => "k$seq", payload => $json };
		push @$raw_lines,
		  join("\t", $ip, $status // '\N', $bytes // '\N',
			sprintf('%.3f', $ts / 1000));
	}
	return \@rows;
}

# Load the truth for a chunk of messages into `raw`.
sub load_raw
{
	my ($lines) = @_;
	my $file = PostgreSQL::Test::Utils::tempdir() . '/raw.tsv';
	open(my $fh, '>', $file) or die $!;
	print $fh "$_\n" for @$lines;
	close $fh;
	$node->safe_psql('postgres',
		"CREATE TEMP TABLE r (ip text, status int, bytes bigint, e numeric);"
		  . "COPY r FROM '$file';"
		  . "INSERT INTO raw SELECT ip, status, bytes, to_timestamp(e) FROM r");
}

sub create_pipeline
{
	my ($stream, $topic, $parallelism) = @_;
	my $b = brokers();
	$node->safe_psql(
		'postgres', qq{
BEGIN;
SELECT streamagg.create_stream(name => '$stream', topic => '$topic', brokers => '$b',
  columns => 'ip text, status int, bytes bigint, ts timestamptz',
  event_time => 'ts', parallelism => $parallelism);
SELECT streamagg.create_window(name => '${stream}_tumble', stream => '$stream',
  size => '1 minute', group_by => 'ip', allowed_lateness => '1 hour',
  aggregates => 'count(*) AS hits, count(bytes) AS with_bytes, sum(bytes) AS bytes,
                 min(bytes) AS min_b, max(bytes) AS max_b, avg(bytes) AS avg_b');
SELECT streamagg.create_window(name => '${stream}_hop', stream => '$stream',
  size => '5 minutes', slide => '1 minute', group_by => 'ip', allowed_lateness => '1 hour',
  aggregates => 'count(*) AS errors', filter => 'status >= 500');
SELECT streamagg.create_window(name => '${stream}_total', stream => '$stream',
  group_by => 'status', aggregates => 'count(*) AS n, sum(bytes) AS b');
COMMIT;});
}

# Rows that are in one side and not the other, both ways.
sub differences
{
	my ($table, $truth) = @_;
	return $node->safe_psql('postgres', qq{
SELECT (SELECT count(*) FROM ((SELECT * FROM $table) EXCEPT ALL ($truth)) a)
     + (SELECT count(*) FROM (($truth) EXCEPT ALL (SELECT * FROM $table)) b)});
}

sub check_truth
{
	my ($stream, $label) = @_;
	is( differences(
			"${stream}_tumble",
			"SELECT date_bin('1 minute', ts, 'epoch') AS window_start,
			        date_bin('1 minute', ts, 'epoch') + interval '1 minute',
			        ip, count(*), count(bytes), sum(bytes), min(bytes), max(bytes), avg(bytes)
			   FROM raw GROUP BY 1, 2, 3"),
		'0',
		"$label: tumbling window equals GROUP BY over all messages");
	is( differences(
			"${stream}_hop",
			"SELECT ws, ws + interval '5 minutes', ip, count(*)
			   FROM raw, generate_series(date_bin('1 minute', ts, 'epoch') - interval '4 minutes',
			                             date_bin('1 minute', ts, 'epoch'), '1 minute') AS ws
			  WHERE status >= 500 GROUP BY 1, 2, 3"),
		'0',
		"$label: hopping filtered window equals the truth");
	is( differences(
			"${stream}_total",
			"SELECT status, count(*), sum(bytes) FROM raw GROUP BY status"),
		'0',
		"$label: no-window totals (NULL group included) equal the truth");
}

sub committed
{
	my ($stream) = @_;
	return $node->safe_psql('postgres',
		"SELECT coalesce(sum(messages), 0) FROM streamagg.offsets WHERE stream = '$stream'");
}

# ---------------------------------------------------------------------------
# 1. A clean run over 120k messages on 4 partitions, two workers.

create_topic('eo_clean', 4);
my @raw;
my $n_clean = 120_000;
is(produce('eo_clean', make_rows($n_clean, \@raw), lz4 => 1),
	$n_clean, "produced $n_clean messages");
load_raw(\@raw);

my $t0 = time();
create_pipeline('clean', 'eo_clean', 2);
ok(wait_for($node, "SELECT " . "coalesce(sum(messages), 0) FROM streamagg.offsets WHERE stream = 'clean'",
		$n_clean, 300),
	'all messages committed');
my $elapsed = time() - $t0;
my $db_elapsed = $node->safe_psql('postgres',
	"SELECT extract(epoch FROM max(o.last_commit) - s.created_at)
	   FROM streamagg.offsets o JOIN streamagg.streams s ON s.name = o.stream
	  WHERE s.name = 'clean' GROUP BY s.created_at");
diag(sprintf('clean run: %d messages in %.2f s (create to last commit) = %.0f msg/s, 3 windows, 2 workers',
		$n_clean, $db_elapsed, $n_clean / $db_elapsed));
check_truth('clean', 'clean run');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'clean'"),
	'0', 'no dead letters in the clean run');
is($node->safe_psql('postgres',
		"SELECT workers || ' ' || partitions FROM streamagg.status WHERE stream = 'clean'"),
	'2 4', 'status: two workers share four partitions');
my $split = $node->safe_psql('postgres',
	"SELECT string_agg(partition || ':' || (SELECT worker FROM streamagg._live_workers() w WHERE w.pid = p.worker_pid), ',' ORDER BY partition)
	   FROM streamagg.partitions p WHERE stream = 'clean'");
is($split, '0:0,1:1,2:0,3:1', 'partitions split between the workers by index');
is($node->safe_psql('postgres',
		"SELECT sum(lag) FROM streamagg.partitions WHERE stream = 'clean'"),
	'0', 'lag is zero once drained');

# ---------------------------------------------------------------------------
# 2. The same through crashes: SIGKILL a worker at random moments while it
#    consumes, and one immediate shutdown, then compare again.

$node->safe_psql('postgres',
	"SELECT streamagg.drop_stream('clean', cascade => true); TRUNCATE raw");
create_topic('eo_crash', 4);
create_pipeline('crash', 'eo_crash', 2);

my $total  = 0;
my $chunks = 5;
my $chunk  = 25_000;
srand(42);
for my $round (1 .. $chunks)
{
	my @lines;
	$total += produce('eo_crash', make_rows($chunk, \@lines), lz4 => 1);
	load_raw(\@lines);

	# wait until the workers are somewhere inside this chunk, then strike
	my $target = $total - $chunk + 1000 + int(rand($chunk - 5000));
	$node->poll_query_until('postgres',
		"SELECT coalesce(sum(messages), 0) >= $target FROM streamagg.offsets WHERE stream = 'crash'")
	  or die "stream did not reach $target";
	my $before = join(',', sort { $a <=> $b } worker_pids($node, 'pg_streamagg worker'));
	if ($round == 3)
	{
		$node->stop('immediate');
		$node->start;
		note("round $round: immediate shutdown and restart at about $target");
	}
	else
	{
		my @pids = worker_pids($node, 'pg_streamagg worker');
		ok(@pids >= 1, "round $round: workers are running");
		kill 'KILL', $pids[ int(rand(@pids)) ];
		note("round $round: SIGKILL at about $target");
	}
	# new worker processes (not the ones that were there before the crash)
	my $back = 0;
	for (1 .. 600)
	{
		# the server may still be in crash recovery
		my $out = try_query($node,
			"SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_streamagg worker'");
		my @now = defined $out ? split(/\n/, $out) : ();
		my %old = map { $_ => 1 } split(/,/, $before);
		if (@now == 2 && !grep { $old{$_} } @now) { $back = 1; last; }
		select(undef, undef, undef, 0.2);
	}
	ok($back, "round $round: two new workers are running");
}

ok(wait_for($node, "SELECT coalesce(sum(messages), 0) FROM streamagg.offsets WHERE stream = 'crash'",
		$total, 300),
	"all $total messages committed after the crashes");
check_truth('crash', 'after 4 SIGKILLs and an immediate shutdown');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'crash'"),
	'0', 'no dead letters after the crashes');
is($node->safe_psql('postgres',
		"SELECT sum(next_offset) FROM streamagg.offsets WHERE stream = 'crash'"),
	$total, 'offsets cover exactly the produced messages');

$node->stop;
done_testing();
