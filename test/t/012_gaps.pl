# Gaps: what Kafka no longer has is recorded, never skipped silently.
#   1. retention: the mock broker keeps at most 5 MB per partition and
#      drops its oldest records beyond that.  Records a paused stream had
#      not read are deleted; on resume the stream records a 'retention'
#      gap (in the transaction that moves its offset to the log start),
#      goes on there, and its window equals the GROUP BY over what it read.
#   2. truncated: the partition ends before the committed offset (here the
#      offset is moved past the log end, as a re-created topic does): the
#      stream stops with the reason and a 'truncated' gap; resume stops it
#      again (one gap row); reset_offsets rebuilds it.
# The same on a real broker (DeleteRecords, a re-created topic):
# 105_kafka_gaps.pl.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use StreamAgg;
use RealKafka;

my $node = new_node('gaps', conf => ["streamagg.batch_time = '100ms'"]);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_streamagg');

my $topic = 'gaps_retention';
like(create_topic($topic, 2), qr/^ok create/, 'topic with 2 partitions');

my %ev;
my ($rows, $lines) = make_events(\%ev, 200);
$_->{partition} = $_->{ts} % 2 for @$rows;
produce($topic, $rows);
load_truth($node, 'truth', $lines);
create_counting_stream($node, 'g', $topic);
ok(wait_caught_up($node, 'g', 200), 'the first 200 messages are read');
is(differences($node, 'g_w', 'truth'), '0', 'window equals the truth');

# --- 1. retention --------------------------------------------------------

$node->safe_psql('postgres', "SELECT streamagg.pause('g')");
ok(wait_for($node, "SELECT workers FROM streamagg.status WHERE stream = 'g'", '0', 30),
	'paused: no worker');
my ($p0_before) = $node->safe_psql('postgres',
	"SELECT next_offset FROM streamagg.offsets WHERE stream = 'g' AND partition = 0");

# 7,000 records of about 1 kB on partition 0: the broker keeps the last 5 MB
my $pad = 'x' x 1000;
my @big;
for my $r (@{ (make_events(\%ev, 7000, partition => 0))[0] })
{
	$r->{payload} =~ s/\}$/,"pad":"$pad"}/;
	push @big, $r;
}
produce($topic, \@big);
my @left = grep { $_->{partition} == 0 } consume_all($topic);
my $lo = $left[0]{offset};
my $hi = $left[-1]{offset} + 1;
cmp_ok($lo, '>', $p0_before, "the broker deleted unread records (log start $lo > offset $p0_before)");

# the truth: what was read before, plus what is still there
my @new_lines;
for my $m (@left)
{
	next if $m->{offset} < $p0_before;
	my ($k, $v, $ts) = $m->{payload} =~ /"k":"([^"]+)","v":(\d+),"ts":(\d+)/;
	push @new_lines, "$k\t$v\t$ts";
}
load_truth($node, 'truth', \@new_lines);

$node->safe_psql('postgres', "SELECT streamagg.resume('g')");
ok(wait_caught_up($node, 'g', 200 + scalar @new_lines),
	'resumed: every record still in Kafka is read');
is($node->safe_psql('postgres',
		"SELECT partition, from_offset, to_offset, messages, reason FROM streamagg.gaps WHERE stream = 'g'"),
	"0|$p0_before|$lo|" . ($lo - $p0_before) . "|retention",
	'one retention gap: from the committed offset to the log start');
is(differences($node, 'g_w', 'truth'), '0', 'window equals the GROUP BY over what was read');
is($node->safe_psql('postgres',
		"SELECT state, gaps, last_error IS NULL FROM streamagg.status WHERE stream = 'g'"),
	'running|1|t', 'status: running, one gap, no error');
is($node->safe_psql('postgres',
		"SELECT \"offset\" FROM streamagg.partitions WHERE stream = 'g' AND partition = 0"),
	$hi, 'partition 0 committed up to the log end');
my $log = slurp_file($node->logfile);
like($log, qr/partition 0 of topic "$topic" lost \d+ unread messages to retention/,
	'the log says what was lost');

# --- 2. truncated --------------------------------------------------------

$node->safe_psql('postgres', "SELECT streamagg.pause('g')");
ok(wait_for($node, "SELECT workers FROM streamagg.status WHERE stream = 'g'", '0', 30),
	'paused again');
my $past = $hi + 50;
$node->safe_psql('postgres',
	"UPDATE streamagg.offsets SET next_offset = $past WHERE stream = 'g' AND partition = 0");
$node->safe_psql('postgres', "SELECT streamagg.resume('g')");
ok(wait_for($node, "SELECT state FROM streamagg.status WHERE stream = 'g'", 'stopped', 60),
	'a log that ends before the committed offset stops the stream');
like($node->safe_psql('postgres', "SELECT last_error FROM streamagg.status WHERE stream = 'g'"),
	qr/partition 0 of topic "$topic" now ends at offset $hi, before the committed offset $past/,
	'last_error says where the log ends and where the stream was');
is($node->safe_psql('postgres',
		"SELECT partition, from_offset, to_offset, messages IS NULL FROM streamagg.gaps
		  WHERE stream = 'g' AND reason = 'truncated'"),
	"0|$hi|$past|t", 'a truncated gap from the log end to the committed offset');
is($node->safe_psql('postgres',
		"SELECT next_offset FROM streamagg.offsets WHERE stream = 'g' AND partition = 0"),
	$past, 'the offset did not move');

# resumed without a reset, it stops again: the 'running' state in between
# lasts a fraction of a second, so the log tells that it ran
my $stops = sub { my $n = () = slurp_file($node->logfile) =~ /stream "g" stopped: partition 0 /g; $n };
my $stops_before = $stops->();
$node->safe_psql('postgres', "SELECT streamagg.resume('g')");
my $stopped_again = 0;
for (1 .. 600)
{
	last if ($stopped_again = $stops->() > $stops_before);
	usleep(100_000);
}
ok($stopped_again, 'resumed without a reset, a worker ran and stopped again');
ok(wait_for($node, "SELECT state FROM streamagg.status WHERE stream = 'g'", 'stopped', 60),
	'it stops again at the same place');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM streamagg.gaps WHERE stream = 'g' AND reason = 'truncated'"),
	'1', 'the same gap is recorded once');
my ($ret, $out, $err) = $node->psql('postgres', "SELECT streamagg.resume('g', skip => true)");
isnt($ret, 0, 'skip => true is refused: there is no message to skip');

my @all = consume_all($topic);
$node->safe_psql('postgres', "SELECT streamagg.reset_offsets('g', 'earliest')");
$node->safe_psql('postgres', "SELECT streamagg.resume('g')");
ok(wait_caught_up($node, 'g', scalar @all),
	'reset to earliest and resumed: everything in Kafka read again');
is($node->safe_psql('postgres', "SELECT count(*) FROM streamagg.gaps WHERE stream = 'g'"),
	'0', 'the rebuild forgets the old gaps');
is($node->safe_psql('postgres', "SELECT state, gaps FROM streamagg.status WHERE stream = 'g'"),
	'running|0', 'running again');

# what a rebuild from the earliest offset must equal: what Kafka has now
$node->safe_psql('postgres', 'TRUNCATE truth');
my @all_lines;
for my $m (@all)
{
	my ($k, $v, $ts) = $m->{payload} =~ /"k":"([^"]+)","v":(\d+),"ts":(\d+)/;
	push @all_lines, "$k\t$v\t$ts";
}
load_truth($node, 'truth', \@all_lines);
is(differences($node, 'g_w', 'truth'), '0', 'the rebuilt window equals the GROUP BY over Kafka now');

$node->stop;
done_testing();
