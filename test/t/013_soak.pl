# Soak: producing goes on for SOAK_SECONDS (60 in `make test`, 600 or more
# with `make soak`) while faults are injected at random: workers killed
# with SIGKILL, a broker down and back, immediate shutdowns of the server,
# pauses and resumes; once a rebuild (reset_offsets to 'earliest') and once
# retention deleting records the paused stream had not read.  At the end:
#   - the window equals the GROUP BY over every message the stream could
#     read (all produced, minus the ranges in streamagg.gaps);
#   - the dead letters are exactly the hostile messages it could read;
#   - the gaps are exactly what retention deleted unread;
#   - the resident memory of every worker, sampled through the run, is
#     written to rss.tsv and drawn in rss.svg (faults in faults.tsv), in
#     SOAK_OUT (default: the script's temporary directory).
#
# The truth needs the offset of every message: one producer writes every
# partition in order, so the i-th message sent to a partition has offset
# i; the script checks this against what Kafka returns at the end.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use File::Path qw(make_path);

use StreamAgg;
use RealKafka;

my $seconds = $ENV{SOAK_SECONDS} // 60;
my $out = $ENV{SOAK_OUT} // PostgreSQL::Test::Utils::tempdir();
make_path($out);
my $seed = $ENV{SOAK_SEED} // int(time());
srand($seed);
note "soak: $seconds s, seed $seed, results in $out";

my $node = new_node(
	'soak',
	conf => [
		"streamagg.batch_time = '100ms'",
		"streamagg.batch_size = 5000",
		"streamagg.max_restart_delay = '2s'",
		"restart_after_crash = on",
	]);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_streamagg');

my $topic = 'soak';
my $nparts = 4;
like(create_topic($topic, $nparts), qr/^ok create/, "topic with $nparts partitions");
create_counting_stream($node, 'soak', $topic, parallelism => 2);

# what went to each partition, in order: [ 'E', line, bytes ] or [ 'H', payload ]
my @plog = map { [] } 1 .. $nparts;
my @pbytes = (0) x $nparts;
my %ev;
my $hostile_sent = 0;

sub send_chunk
{
	my ($n, %opts) = @_;
	my ($rows, $lines) = make_events(\%ev, $n);
	my @send;
	for my $i (0 .. $#$rows)
	{
		my $r = $rows->[$i];
		my $p = $opts{partition} // int(rand($nparts));
		$r->{partition} = $p;
		$r->{payload} =~ s/\}$/,"pad":"$opts{pad}"}/ if $opts{pad};
		push @send, $r;
		push @{ $plog[$p] }, [ 'E', $lines->[$i] ];
		$pbytes[$p] += length $r->{payload};
	}
	if (!$opts{partition} && rand() < 0.3)
	{
		my $p = int(rand($nparts));
		my $bad = rand() < 0.5 ? "not json $hostile_sent" : '{"k": "x", "v": "NaN-' . $hostile_sent . '", "ts": 1}';
		push @send, { partition => $p, key => 'bad', payload => $bad };
		push @{ $plog[$p] }, [ 'H', $bad ];
		$pbytes[$p] += length $bad;
		$hostile_sent++;
	}
	produce($topic, \@send);
}

# --- faults ----------------------------------------------------------------

my $t0 = time;
open(my $faults, '>', "$out/faults.tsv") or die;
print $faults "second\tfault\n";
open(my $rss, '>', "$out/rss.tsv") or die;
print $rss "second\tpid\trss_kb\n";
my %nfaults;

sub fault
{
	my ($what) = @_;
	$nfaults{$what}++;
	printf $faults "%.1f\t%s\n", time - $t0, $what;
}

sub sample_rss
{
	my @pids = eval { worker_pids($node, 'pg_streamagg worker%') };
	for my $pid (@pids)
	{
		open(my $fh, '<', "/proc/$pid/status") or next;
		while (<$fh>)
		{
			printf $rss "%.1f\t%d\t%d\n", time - $t0, $pid, $1 if /^VmRSS:\s+(\d+)/;
		}
		close $fh;
	}
}

sub wait_paused
{
	wait_for($node, "SELECT workers FROM streamagg.status WHERE stream = 'soak'", '0', 60)
	  or die 'the stream did not pause';
}

my %gap_expected;    # partition => [from, to]
my ($did_reset, $did_retention) = (0, 0);

sub retention
{
	$node->safe_psql('postgres', "SELECT streamagg.pause('soak')");
	wait_paused();
	my $from = $node->safe_psql('postgres',
		"SELECT next_offset FROM streamagg.offsets WHERE stream = 'soak' AND partition = 0");
	# the mock broker keeps 5 MB per partition: 6 MB more push out the oldest
	my $pad = 'p' x 1000;
	send_chunk(500, partition => 0, pad => $pad) for 1 .. 12;
	my @p0 = grep { $_->{partition} == 0 } consume_all($topic);
	$gap_expected{0} = [ $from, $p0[0]{offset} ] if $p0[0]{offset} > $from;
	$node->safe_psql('postgres', "SELECT streamagg.resume('soak')");
	fault('retention');
	note "retention: partition 0 lost offsets $from to $p0[0]{offset} unread";
	# found before more records push the log start further
	wait_for($node, "SELECT count(*) > 0 FROM streamagg.gaps WHERE stream = 'soak'", 't', 60)
	  or diag 'no gap recorded after retention';
}

my @kinds = qw(kill_worker broker_down immediate_restart pause_resume);
my $end = $t0 + $seconds;
my $next_fault = time + 2 + rand(4);
while (time < $end)
{
	send_chunk(100);
	sample_rss();
	my $elapsed = time - $t0;
	if (!$did_reset && $elapsed > $seconds / 3)
	{
		$did_reset = 1;
		# a rebuild from the first offset: nothing may have been deleted yet
		if ((sort { $b <=> $a } @pbytes)[0] < 4_000_000)
		{
			$node->safe_psql('postgres', "SELECT streamagg.reset_offsets('soak', 'earliest')");
			fault('reset_offsets earliest (rebuild)');
		}
	}
	elsif (!$did_retention && $elapsed > 2 * $seconds / 3)
	{
		$did_retention = 1;
		retention();
	}
	elsif (time > $next_fault)
	{
		my $kind = $kinds[ int(rand(@kinds)) ];
		if ($kind eq 'kill_worker')
		{
			my @pids = worker_pids($node, 'pg_streamagg worker%');
			if (@pids)
			{
				kill 'KILL', $pids[ int(rand(@pids)) ];
				fault('SIGKILL of a worker');
			}
		}
		elsif ($kind eq 'broker_down')
		{
			my $b = 1 + int(rand(3));
			broker_cmd("down $b");
			fault("broker $b down");
			sample_rss(), usleep(500_000) for 1 .. 6;
			broker_cmd("up $b");
			fault("broker $b up");
		}
		elsif ($kind eq 'immediate_restart')
		{
			$node->stop('immediate');
			fault('immediate shutdown');
			$node->start;
		}
		else
		{
			$node->safe_psql('postgres', "SELECT streamagg.pause('soak')");
			fault('pause');
			usleep(500_000 + int(rand(1_500_000)));
			$node->safe_psql('postgres', "SELECT streamagg.resume('soak')");
			fault('resume');
		}
		$next_fault = time + 1 + rand(5);
	}
	usleep(200_000);
}
retention() unless $did_retention;

# --- the truth -------------------------------------------------------------

my @kafka = consume_all($topic, timeout => 120);
my $mismatch = 0;
for my $m (@kafka)
{
	my $entry = $plog[ $m->{partition} ][ $m->{offset} ];
	if (!$entry)
	{
		$mismatch++;
		next;
	}
	if ($entry->[0] eq 'E')
	{
		my ($k, $v, $ts) = split /\t/, $entry->[1];
		$mismatch++ unless index($m->{payload} // '', qq({"k":"$k","v":$v,"ts":$ts)) == 0;
	}
	else
	{
		$mismatch++ unless ($m->{payload} // '') eq $entry->[1];
	}
}
is($mismatch, 0, 'every message is at the offset the script expects (the truth is sound)');

my (@truth, @dead_expected);
my $total = 0;
for my $p (0 .. $nparts - 1)
{
	for my $o (0 .. $#{ $plog[$p] })
	{
		$total++;
		next if $gap_expected{$p} && $o >= $gap_expected{$p}[0] && $o < $gap_expected{$p}[1];
		my $e = $plog[$p][$o];
		if ($e->[0] eq 'E') { push @truth, $e->[1]; }
		else { push @dead_expected, "$p|$o"; }
	}
}
load_truth($node, 'truth', \@truth);

my $readable = scalar(@truth) + scalar(@dead_expected);
ok(wait_for($node,
		"SELECT coalesce(sum(messages), 0) || ' ' || coalesce(sum(lag), -1)
		   FROM streamagg.partitions WHERE stream = 'soak'",
		($readable + 0) . ' 0', 180),
	"caught up: $readable messages read of $total sent")
  or diag(try_query($node, 'SELECT * FROM streamagg.status') // '?');
is(differences($node, 'soak_w', 'truth'), '0',
	'the window equals the GROUP BY over every message the stream could read');
is($node->safe_psql('postgres',
		"SELECT string_agg(partition || '|' || \"offset\", ',' ORDER BY partition, \"offset\")
		   FROM streamagg.dead_letters WHERE stream = 'soak'"),
	join(',', sort { my @x = split /\|/, $a; my @y = split /\|/, $b; $x[0] <=> $y[0] || $x[1] <=> $y[1] } @dead_expected),
	scalar(@dead_expected) . ' dead letters: exactly the hostile messages read');
is($node->safe_psql('postgres',
		"SELECT string_agg(partition || ':' || from_offset || '-' || to_offset || ':' || reason, ',')
		   FROM streamagg.gaps WHERE stream = 'soak'"),
	join(',', map { "$_:$gap_expected{$_}[0]-$gap_expected{$_}[1]:retention" } sort keys %gap_expected),
	'the gaps are what retention deleted unread');
is($node->safe_psql('postgres', "SELECT state FROM streamagg.status WHERE stream = 'soak'"),
	'running', 'the stream runs at the end');
sample_rss();
close $faults;
close $rss;

# --- memory over time ------------------------------------------------------

my (%series, $max_rss, $max_t);
open(my $fh, '<', "$out/rss.tsv") or die;
<$fh>;
while (<$fh>)
{
	chomp;
	my ($t, $pid, $kb) = split /\t/;
	push @{ $series{$pid} }, [ $t, $kb ];
	$max_rss = $kb if !$max_rss || $kb > $max_rss;
	$max_t = $t;
}
close $fh;
ok(%series, 'worker memory was sampled');
my ($w, $h) = (800, 300);
open(my $svg, '>', "$out/rss.svg") or die;
print $svg qq{<svg xmlns="http://www.w3.org/2000/svg" width="$w" height="@{[$h + 40]}">\n};
print $svg qq{<text x="10" y="15" font-size="12">worker RSS (kB) over ${max_t} s; max $max_rss kB; one line per worker process</text>\n};
for my $pid (sort keys %series)
{
	my $pts = join ' ', map {
		sprintf('%.1f,%.1f', $_->[0] / ($max_t || 1) * ($w - 20) + 10,
			$h + 20 - $_->[1] / $max_rss * ($h - 10))
	} @{ $series{$pid} };
	print $svg qq{<polyline fill="none" stroke="steelblue" points="$pts"/>\n};
}
print $svg "</svg>\n";
close $svg;

my $summary = sprintf("soak %d s (seed %s): %d messages sent (%d hostile), %d faults (%s), "
	  . "%d readable, gaps: %s, max worker RSS %d kB, samples in %s",
	$seconds, $seed, $total, $hostile_sent, eval { my $n = 0; $n += $_ for values %nfaults; $n },
	join(', ', map { "$_ x$nfaults{$_}" } sort keys %nfaults), $readable,
	join(',', map { "$_:$gap_expected{$_}[0]-$gap_expected{$_}[1]" } sort keys %gap_expected) || 'none',
	$max_rss, $out);
note $summary;
open(my $sf, '>', "$out/summary.txt") or die;
print $sf "$summary\n";
close $sf;

$node->stop;
done_testing();
