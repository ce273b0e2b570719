# Real Apache Kafka: a round trip, exactly once through SIGKILLed workers,
# an immediate shutdown and a SIGKILLed broker, and streamagg.kafka_group
# (Kafka's own group tool sees the stream's offsets, lag 0).
#
# The truth is a plain table loaded with the same events; the window table
# must equal the GROUP BY over it (EXCEPT ALL both ways).
#
# broker: kafka
# kafkacheck: yes

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use StreamAgg;
use RealKafka;

my $node = new_node(
	'kbasics',
	conf => [
		"streamagg.batch_time = '100ms'",
		"streamagg.batch_size = 2000",
		"restart_after_crash = on",
	]);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_streamagg');

my %ev;

# ---------------------------------------------------------------------------
# 1. Round trip, with the offsets also committed to a Kafka consumer group.

my $topic = kafka_topic('k_basics');
my $group = kafka_topic('sa_group_basics');
like(kafka_create_topic($topic, 3), qr/Created topic/, 'topic with 3 partitions created');

my ($rows, $lines) = make_events(\%ev, 3000);
is(produce($topic, $rows), 3000, 'produced 3000 events');
load_truth($node, 'truth_basics', $lines);

create_counting_stream($node, 'basics', $topic,
	options => { 'streamagg.kafka_group' => $group });
ok(wait_caught_up($node, 'basics', 3000), 'all 3000 messages committed, lag 0');
is(differences($node, 'basics_w', 'truth_basics'), '0',
	'window equals the GROUP BY over every message');
is($node->safe_psql('postgres',
		"SELECT state || ' ' || partitions || ' ' || lag FROM streamagg.status WHERE stream = 'basics'"),
	'running 3 0', 'status: running, 3 partitions, lag 0');

# Kafka's group tool shows the group at the committed offsets, lag 0
my $end = kafka_end_offsets($topic);
my $want = join(',', map { "$_:$end->{$_}:0" } sort keys %$end);
my $seen = '';
for (1 .. 100)
{
	my @g = kafka_describe_group($group);
	$seen = join(',', map { "$_->{partition}:" . ($_->{current} // '-') . ':' . ($_->{lag} // '-') } @g);
	last if $seen eq $want;
	sleep 1;
}
is($seen, $want, "kafka-consumer-groups --describe --group: committed offsets = end offsets, lag 0");
is($node->safe_psql('postgres',
		"SELECT string_agg(partition || ':' || \"offset\", ',' ORDER BY partition)
		   FROM streamagg.partitions WHERE stream = 'basics'"),
	join(',', map { "$_:$end->{$_}" } sort keys %$end),
	'streamagg.partitions shows the same offsets');

# the group follows new commits
($rows, $lines) = make_events(\%ev, 500);
produce($topic, $rows);
load_truth($node, 'truth_basics', $lines);
ok(wait_caught_up($node, 'basics', 3500), '500 more committed');
$end = kafka_end_offsets($topic);
$want = join(',', map { "$_:$end->{$_}:0" } sort keys %$end);
for (1 .. 100)
{
	my @g = kafka_describe_group($group);
	$seen = join(',', map { "$_->{partition}:" . ($_->{current} // '-') . ':' . ($_->{lag} // '-') } @g);
	last if $seen eq $want;
	sleep 1;
}
is($seen, $want, 'the group follows the stream');
is(differences($node, 'basics_w', 'truth_basics'), '0', 'window still exact');
$node->safe_psql('postgres', "SELECT streamagg.drop_stream('basics', cascade => true)");

# ---------------------------------------------------------------------------
# 2. Exactly once through crashes: SIGKILL of a worker, an immediate
#    shutdown, and (on a broker of our own) SIGKILL of the broker JVM, each
#    while the stream is in the middle of a chunk.

my $ctopic = kafka_topic('k_crash');
kafka_create_topic($ctopic, 4);
create_counting_stream($node, 'crash', $ctopic, parallelism => 2);

my @plan = ('worker', 'immediate', 'broker', 'worker');
@plan = ('worker', 'immediate', 'worker') if kafka_external();
my $total = 0;
my $chunk = 20_000;
foreach my $round (0 .. $#plan)
{
	my $what = $plan[$round];
	($rows, $lines) = make_events(\%ev, $chunk);
	$total += produce($ctopic, $rows, lz4 => 1);
	load_truth($node, 'truth_crash', $lines);
	my $target = $total - $chunk + 2000 + int(rand($chunk - 8000));
	ok(wait_for($node,
			"SELECT coalesce(sum(messages), 0) >= $target FROM streamagg.offsets WHERE stream = 'crash'",
			't', 120),
		"round $round: the stream is inside the chunk (>= $target)");
	if ($what eq 'worker')
	{
		my @pids = worker_pids($node, 'pg_streamagg worker');
		ok(@pids >= 1, "round $round: workers are running");
		kill 'KILL', $pids[ int(rand(@pids)) ];
	}
	elsif ($what eq 'immediate')
	{
		$node->stop('immediate');
		$node->start;
	}
	else
	{
		kafka_kill(1);
		ok(!defined kafka_pid(1), "round $round: the broker JVM is gone");
		# down for as long as a start takes (~5-10 s)
		kafka_restart(1);
		ok(defined kafka_pid(1), "round $round: the broker runs again");
	}
	note("round $round: $what at about $target of $total");
}
ok(wait_caught_up($node, 'crash', $total, 300),
	"all $total messages committed after the crashes, lag 0");
is(differences($node, 'crash_w', 'truth_crash'), '0',
	'window equals the GROUP BY after ' . join(', ', @plan));
is($node->safe_psql('postgres',
		"SELECT sum(next_offset) FROM streamagg.offsets WHERE stream = 'crash'"),
	$total, 'offsets cover exactly the produced messages');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'crash'"),
	'0', 'no dead letters');

$node->stop;
done_testing();
