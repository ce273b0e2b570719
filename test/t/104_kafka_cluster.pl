# Real Apache Kafka, a 3-node cluster (replication factor 3): the leader of
# a partition is shut down cleanly while the stream reads, later (with that
# node back) the new leader is killed with SIGKILL; the stream goes on and
# its window stays exact.
#
# broker: kafka --nodes 3

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use StreamAgg;
use RealKafka;

my $node = new_node(
	'kcluster',
	conf => [ "streamagg.batch_time = '100ms'", "streamagg.batch_size = 2000" ]);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_streamagg');

my %ev;
my $topic = 'k_replicated';
kafka_create_topic($topic, 3, replication => 3);
create_counting_stream($node, 'repl', $topic);

my $total = 0;
my $chunk = 15_000;

# produce a chunk and wait until the stream is inside it
sub next_chunk
{
	my ($label) = @_;
	my ($rows, $lines) = make_events(\%ev, $chunk);
	$total += produce($topic, $rows, lz4 => 1);
	load_truth($node, 'truth_repl', $lines);
	my $target = $total - $chunk + 2000 + int(rand($chunk - 8000));
	ok(wait_for($node,
			"SELECT coalesce(sum(messages), 0) >= $target FROM streamagg.offsets WHERE stream = 'repl'",
			't', 120),
		"$label: the stream is inside the chunk (>= $target of $total)");
}

next_chunk('chunk 1');
my $leader = kafka_leader($topic, 0);
ok($leader >= 1 && $leader <= 3, "partition 0 is led by node $leader");
kafka_stop_node($leader);
ok(!defined kafka_pid($leader), "node $leader shut down cleanly");

my $new_leader = -1;
for (1 .. 60)
{
	$new_leader = kafka_leader($topic, 0);
	last if $new_leader >= 1 && $new_leader != $leader;
	sleep 1;
}
isnt($new_leader, $leader, "partition 0 moved to node $new_leader");
next_chunk('chunk 2 (one node down)');

# bring the node back, so that two of three controllers remain after the kill
kafka_restart($leader);
ok(defined kafka_pid($leader), "node $leader is back");
next_chunk('chunk 3');
$new_leader = kafka_leader($topic, 0);
kafka_kill($new_leader);
ok(!defined kafka_pid($new_leader), "node $new_leader (leader of partition 0) killed with SIGKILL");
next_chunk('chunk 4 (leader killed)');

ok(wait_caught_up($node, 'repl', $total, 180), "all $total messages committed, lag 0");
is(differences($node, 'repl_w', 'truth_repl'), '0',
	'window equals the GROUP BY after a clean shutdown and a SIGKILL of leaders');
is($node->safe_psql('postgres',
		"SELECT sum(next_offset) FROM streamagg.offsets WHERE stream = 'repl'"),
	$total, 'offsets cover exactly the produced messages');

$node->stop;
done_testing();
