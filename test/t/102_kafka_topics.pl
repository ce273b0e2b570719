# Real Apache Kafka: what the mock broker cannot do.
#   1. partitions added to a running topic (kafka-topics --alter) are picked
#      up (metadata is checked every 10 s) and read from offset 0
#   2. start_from => timestamptz and reset_offsets("to" => timestamptz)
#      start at the first message at or after it, per partition
#   3. a transactional producer: aborted transactions are never aggregated,
#      lag reaches 0 and the watermark is not held back by the markers
#   4. a compacted topic: the results equal the messages that remain, lag 0
#   5. the topic does not exist yet when the stream starts (the broker does
#      not create topics on request): the stream shows 'failing' with the
#      reason, retries with back-off, and consumes everything once the
#      topic is created
#
# broker: kafka
# kafkacheck: yes

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use StreamAgg;
use RealKafka;

my $node = new_node('ktopics', conf => ["streamagg.batch_time = '100ms'"]);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_streamagg');

my %ev;

sub per_partition
{
	my ($stream, $col) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(partition || ':' || $col, ',' ORDER BY partition)
		   FROM streamagg.partitions WHERE stream = '$stream'");
}

# ---------------------------------------------------------------------------
# 1. Partitions added while the stream runs.  The stream starts at 'latest':
#    new partitions must still be read from their first offset.

{
	my $topic = kafka_topic('k_grow');
	kafka_create_topic($topic, 2);
	my ($rows) = make_events(\%ev, 100);
	produce($topic, $rows);    # before the stream: not read ('latest')

	create_counting_stream($node, 'grow', $topic, start_from => 'latest');
	ok(wait_for($node, "SELECT count(*) FROM streamagg.offsets WHERE stream = 'grow'", '2', 60),
		'the stream claimed its 2 partitions at the latest offset');
	my $lines;
	($rows, $lines) = make_events(\%ev, 400);
	produce($topic, $rows);
	load_truth($node, 'truth_grow', $lines);
	ok(wait_caught_up($node, 'grow', 400), '400 new messages on 2 partitions committed');

	like(kafka_add_partitions($topic, 4), qr/^$|succeeded|Adding partitions/i,
		'kafka-topics --alter --partitions 4');
	# written at once, long before the worker's next metadata check
	my @new;
	for my $p (2, 3)
	{
		my ($r, $l) = make_events(\%ev, 150 + $p, partition => $p);
		produce($topic, $r);
		push @new, @$l;
	}
	load_truth($node, 'truth_grow', \@new);
	my $n = 400 + scalar @new;
	ok(wait_for($node, "SELECT count(*) FROM streamagg.offsets WHERE stream = 'grow'", '4', 40),
		'the new partitions are picked up within 40 s');
	ok(wait_caught_up($node, 'grow', $n), "all $n messages committed, lag 0");
	is($node->safe_psql('postgres',
			"SELECT string_agg(partition || ':' || messages || ':' || \"offset\", ',' ORDER BY partition)
			   FROM streamagg.partitions WHERE stream = 'grow' AND partition >= 2"),
		'2:152:152,3:153:153', 'new partitions read from offset 0: every message counted');
	is(differences($node, 'grow_w', 'truth_grow'), '0', 'window equals the truth');
	$node->safe_psql('postgres', "SELECT streamagg.drop_stream('grow', cascade => true)");
}

# ---------------------------------------------------------------------------
# 2. Offsets for times.  Partition p holds 100 messages with increasing
#    timestamps base + i * 1000 + p * 300 (i = 0..99).

{
	my $topic = kafka_topic('k_time');
	kafka_create_topic($topic, 3);
	my $base = recent_base();
	my @all;
	for my $p (0 .. 2)
	{
		my $i = 0;
		my ($r, $l) = make_events(\%ev, 100, partition => $p,
			ts => sub { $base + ($i++) * 1000 + $p * 300 });
		produce($topic, $r);
		push @all, map { [ $p, $_ ] } @$l;
	}
	# $t falls between messages in every partition: the first message at
	# or after it is i = 41 in partitions 0 and 1, i = 40 in partition 2
	my $t_ms = $base + 40_500;
	my $t = $node->safe_psql('postgres', "SELECT to_timestamp($t_ms / 1000.0)::text");
	my @after = grep { (split /\t/, $_->[1])[2] >= $t_ms } @all;
	load_truth($node, 'truth_time', [ map { $_->[1] } @after ]);
	my %count;
	$count{ $_->[0] }++ foreach @after;
	my $want = join(',', map { "$_:" . ($count{$_} // 0) } 0 .. 2);
	is($want, '0:59,1:59,2:60', 'the expected counts per partition (test data)');

	create_counting_stream($node, 'since', $topic, start_from => $t);
	ok(wait_caught_up($node, 'since', scalar @after), 'start_from => timestamp: caught up');
	is(per_partition('since', 'messages'), $want,
		'start_from => timestamp: per partition, exactly the messages at or after it');
	is(differences($node, 'since_w', 'truth_time'), '0',
		'start_from => timestamp: window equals the GROUP BY over those messages');

	# reset_offsets to a later time; the window is re-created in the same
	# transaction, so that it sees exactly what is read from the new start
	my $t2_ms = $base + 80_000;    # exactly the timestamp of i = 80 in partition 0
	my $t2 = $node->safe_psql('postgres', "SELECT to_timestamp($t2_ms / 1000.0)::text");
	my @after2 = grep { (split /\t/, $_->[1])[2] >= $t2_ms } @all;
	my %count2;
	$count2{ $_->[0] }++ foreach @after2;
	my $want2 = join(',', map { "$_:" . ($count2{$_} // 0) } 0 .. 2);
	is($want2, '0:20,1:20,2:20', 'the expected counts after the reset (test data)');
	$node->safe_psql('postgres', "CREATE TABLE truth_time2 (k text, v int, ts timestamptz)");
	load_truth($node, 'truth_time2', [ map { $_->[1] } @after2 ]);
	$node->safe_psql('postgres', qq{
BEGIN;
SELECT streamagg.drop_window('since_w');
SELECT streamagg.reset_offsets('since', "to" => '$t2');
SELECT streamagg.create_window(name => 'since_w', stream => 'since',
  size => '1 minute', group_by => 'k', allowed_lateness => '1 day',
  aggregates => 'count(*) AS n, sum(v) AS s');
COMMIT;});
	ok(wait_caught_up($node, 'since', scalar @after2), 'reset_offsets to a timestamp: caught up');
	is(per_partition('since', 'messages'), $want2,
		'reset_offsets("to" => timestamp): per partition, the messages at or after it');
	is(per_partition('since', '"offset"'), '0:100,1:100,2:100', 'and up to the end');
	is(differences($node, 'since_w', 'truth_time2'), '0',
		'reset_offsets("to" => timestamp): window equals the GROUP BY over those messages');
	$node->safe_psql('postgres', "SELECT streamagg.drop_stream('since', cascade => true)");
}

# ---------------------------------------------------------------------------
# 3. Transactions: committed and aborted ones interleaved on 2 partitions;
#    the last one, aborted, carries the largest event times.

{
	my $topic = kafka_topic('k_txn');
	kafka_create_topic($topic, 2);
	my $base = recent_base() + 3_600_000;
	my (@txns, @committed);
	for my $t (0 .. 5)
	{
		my $commit = ($t % 2 == 0) ? 1 : 0;
		my ($r, $l) = make_events(\%ev, 300,
			ts => sub { $base + $t * 60_000 + ($_[0] % 600) * 10 });
		my $i = 0;
		$_->{partition} = ($i++) % 2 foreach @$r;
		push @txns, { commit => $commit, rows => $r };
		push @committed, @$l if $commit;
	}
	my ($late_r) = make_events(\%ev, 50, ts => sub { $base + 3_600_000 + $_[0] });
	my $j = 0;
	$_->{partition} = ($j++) % 2 foreach @$late_r;
	push @txns, { commit => 0, rows => $late_r };

	my ($n, $nc_txn, $na_txn) = produce_transactions($topic, \@txns);
	is("$n $nc_txn $na_txn", '1850 3 4', '1850 messages in 3 committed and 4 aborted transactions');
	load_truth($node, 'truth_txn', \@committed);

	create_counting_stream($node, 'txn', $topic,
		options => { 'streamagg.idle_timeout' => '3600000' });
	my $nc = scalar @committed;
	ok(wait_for($node,
			"SELECT sum(messages) FROM streamagg.partitions WHERE stream = 'txn'", $nc, 60),
		"exactly the $nc messages of the committed transactions are committed");
	is(differences($node, 'txn_w', 'truth_txn'), '0',
		'window equals the GROUP BY over the committed transactions only');
	is($node->safe_psql('postgres',
			"SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'txn'"),
		'0', 'no dead letters');
	# watermark: smallest over the partitions of the largest committed event
	# time (the markers and the aborted late messages do not count)
	my %maxts;
	foreach my $t (grep { $_->{commit} } @txns)
	{
		foreach my $r (@{ $t->{rows} })
		{
			$maxts{ $r->{partition} } = $r->{ts}
			  if ($maxts{ $r->{partition} } // 0) < $r->{ts};
		}
	}
	my ($min_ms) = sort { $a <=> $b } values %maxts;
	my $want_wm = $node->safe_psql('postgres', "SELECT to_timestamp($min_ms / 1000.0)");
	ok(wait_for($node, "SELECT watermark = '$want_wm' FROM streamagg.status WHERE stream = 'txn'",
			't', 30),
		"watermark is the committed data's ($want_wm)")
	  or diag('watermark: '
		  . $node->safe_psql('postgres', "SELECT watermark FROM streamagg.status WHERE stream = 'txn'")
		  . "\nlargest committed event time per partition (ms): "
		  . join(', ', map { "$_: $maxts{$_}" } sort keys %maxts)
		  . "\nstreamagg.partitions: "
		  . $node->safe_psql('postgres',
			"SELECT string_agg(partition || ' ' || max_event_time || ' ' || idle, ', ' ORDER BY partition)
			   FROM streamagg.partitions WHERE stream = 'txn'"));
	# Aborted messages and markers after the last committed message are
	# never delivered: the worker moves past them to the consumer's position.
	ok(wait_caught_up($node, 'txn', $nc, 30),
		'lag reaches 0 past the trailing aborted transactions and markers');
	is($node->safe_psql('postgres', "SELECT lag FROM streamagg.status WHERE stream = 'txn'"),
		'0', 'status.lag is 0');
	$node->safe_psql('postgres', "SELECT streamagg.drop_stream('txn', cascade => true)");
}

# ---------------------------------------------------------------------------
# 4. A compacted topic: 20 keys written 2000 times, small segments rolled
#    every 100 ms, so that the cleaner really removes most of them.

{
	my $topic = kafka_topic('k_compact');
	kafka_create_topic($topic, 1,
		config => {
			'cleanup.policy'            => 'compact',
			'segment.ms'                => '100',
			'min.cleanable.dirty.ratio' => '0.01',
			'min.compaction.lag.ms'     => '0',
			'delete.retention.ms'       => '100',
		});
	# wall-clock timestamps: segment.ms rolls by message time
	my $produced = 0;
	my $now_ms = sub { int(Time::HiRes::time() * 1000) };
	for my $round (1 .. 5)
	{
		my ($r) = make_events(\%ev, 400, key => sub { 'c' . ($_[0] % 20) },
			ts => $now_ms);
		$produced += produce($topic, $r);
		# let the segment age past segment.ms, so that the next write rolls it
		usleep(150_000);
	}
	my ($last) = make_events(\%ev, 1, key => sub { 'roll' }, ts => $now_ms);
	$produced += produce($topic, $last);

	# every segment but the active one (holding "roll") gets cleaned: the
	# latest message of each of the 20 keys and "roll" remain
	my @msgs;
	for (1 .. 120)
	{
		@msgs = consume_all($topic);
		last if @msgs == 21;
		sleep 1;
	}
	is(scalar @msgs, 21, "compaction ran: 21 of $produced messages remain");
	my @lines;
	foreach my $m (@msgs)
	{
		$m->{payload} =~ /"k":"([^"]+)","v":(\d+),"ts":(\d+)/ or die "bad payload";
		push @lines, "$1\t$2\t$3";
	}
	load_truth($node, 'truth_compact', \@lines);
	my $end = kafka_end_offsets($topic)->{0};
	ok($end == $produced && $msgs[-1]{offset} == $end - 1,
		"offsets have holes: " . scalar(@msgs) . " messages up to offset " . ($end - 1));

	create_counting_stream($node, 'compact', $topic);
	ok(wait_caught_up($node, 'compact', scalar @msgs),
		'every remaining message committed, lag 0');
	is(per_partition('compact', '"offset"'), "0:$end", 'offset is the end of the log');
	my @again = consume_all($topic);
	is(scalar @again, scalar @msgs, 'the log did not change meanwhile');
	is(differences($node, 'compact_w', 'truth_compact'), '0',
		'window equals the GROUP BY over the remaining messages');
	$node->safe_psql('postgres', "SELECT streamagg.drop_stream('compact', cascade => true)");
}

# ---------------------------------------------------------------------------
# 5. A stream created before its topic.
{
	my $topic = kafka_topic('not_yet');
	create_counting_stream($node, 'notyet', $topic);
	ok(wait_for($node,
		"SELECT state || ': ' || (last_error LIKE '%topic \"$topic\" is not available%')::text
		   FROM streamagg.status WHERE stream = 'notyet'",
		'failing: true', 60),
		'topic missing: the stream is failing and says the topic is not available');
	sleep 10;
	my $lines = () = slurp_file($node->logfile) =~ /ERROR: .*topic "\Q$topic\E" is not available/g;
	ok($lines >= 1 && $lines <= 8, "topic missing: retried with back-off ($lines failures logged)");

	kafka_create_topic($topic, 2);
	my ($rows, $truth) = make_events(\%ev, 300);
	$_->{partition} = $_->{ts} % 2 for @$rows;
	produce($topic, $rows);
	load_truth($node, 'truth_notyet', $truth);
	ok(wait_caught_up($node, 'notyet', 300, 180), 'topic created: every message is read');
	is(differences($node, 'notyet_w', 'truth_notyet'), '0', 'window equals the truth');
	ok(wait_for($node, "SELECT state || ':' || coalesce(last_error, 'none') FROM streamagg.status WHERE stream = 'notyet'",
		'running:none', 30), 'the error clears once the topic is there');
	$node->safe_psql('postgres', "SELECT streamagg.drop_stream('notyet', cascade => true)");
}

$node->stop;
done_testing();
