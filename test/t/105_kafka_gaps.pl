# Real Apache Kafka: gaps.
#   1. records a paused stream had not read are deleted (DeleteRecords,
#      what retention does): on resume a 'retention' gap per partition, the
#      stream goes on at the log start, the window equals the GROUP BY over
#      what was read
#   2. the topic is deleted and re-created with fewer records: the stream
#      stops with a 'truncated' gap for every partition and the reason;
#      reset_offsets rebuilds it from the new topic
#   3. a partition added while the stream is paused, whose first records
#      are deleted before the stream resumes: the stream reads the new
#      partition from offset 0, so the deleted ones are a 'retention' gap
#
# broker: kafka

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use StreamAgg;
use RealKafka;

my $node = new_node('kgaps', conf => ["streamagg.batch_time = '100ms'"]);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_streamagg');

my $topic = kafka_topic('k_gaps');
kafka_create_topic($topic, 2);

my %ev;
my ($rows, $lines) = make_events(\%ev, 300);
produce($topic, $rows);
load_truth($node, 'truth', $lines);
create_counting_stream($node, 'kg', $topic);
ok(wait_caught_up($node, 'kg', 300), '300 messages read');

# --- 1. retention (DeleteRecords) ------------------------------------------

$node->safe_psql('postgres', "SELECT streamagg.pause('kg')");
ok(wait_for($node, "SELECT workers FROM streamagg.status WHERE stream = 'kg'", '0', 30),
	'paused');
my %committed = map { split /\|/ } split /\n/, $node->safe_psql('postgres',
	"SELECT partition, next_offset FROM streamagg.offsets WHERE stream = 'kg'");

($rows, $lines) = make_events(\%ev, 600);
produce($topic, $rows);
my $end = kafka_end_offsets($topic);
my %cut = map { $_ => $committed{$_} + 40 } keys %committed;
my $file = PostgreSQL::Test::Utils::tempdir() . '/delete.json';
open(my $fh, '>', $file) or die;
print $fh '{"version": 1, "partitions": ['
  . join(', ', map { qq({"topic": "$topic", "partition": $_, "offset": $cut{$_}}) } sort keys %cut)
  . ']}';
close $fh;
kafka_tool('kafka-delete-records', '--offset-json-file', $file);

my @left = consume_all($topic);
my @new_lines;
for my $m (@left)
{
	next if $m->{offset} < $committed{ $m->{partition} };
	my ($k, $v, $ts) = $m->{payload} =~ /"k":"([^"]+)","v":(\d+),"ts":(\d+)/;
	push @new_lines, "$k\t$v\t$ts";
}
is(scalar @new_lines, 600 - 80, '80 unread records deleted, 40 per partition');
load_truth($node, 'truth', \@new_lines);

$node->safe_psql('postgres', "SELECT streamagg.resume('kg')");
ok(wait_caught_up($node, 'kg', 300 + scalar @new_lines), 'resumed: the rest is read');
is($node->safe_psql('postgres',
		"SELECT string_agg(partition || ':' || from_offset || '-' || to_offset || ':' || messages || ':' || reason,
		                   ',' ORDER BY partition) FROM streamagg.gaps WHERE stream = 'kg'"),
	join(',', map { "$_:$committed{$_}-$cut{$_}:40:retention" } sort keys %cut),
	'a retention gap per partition, from the committed offset to the log start');
is(differences($node, 'kg_w', 'truth'), '0', 'window equals the GROUP BY over what was read');
is($node->safe_psql('postgres',
		"SELECT state, gaps, last_error IS NULL FROM streamagg.status WHERE stream = 'kg'"),
	'running|2|t', 'status: running with 2 gaps');

# --- 2. the topic deleted and re-created -----------------------------------

$node->safe_psql('postgres', "SELECT streamagg.pause('kg')");
ok(wait_for($node, "SELECT workers FROM streamagg.status WHERE stream = 'kg'", '0', 30),
	'paused');
%committed = map { split /\|/ } split /\n/, $node->safe_psql('postgres',
	"SELECT partition, next_offset FROM streamagg.offsets WHERE stream = 'kg'");
kafka_tool('kafka-topics', '--delete', '--topic', $topic);
# the create fails while the deletion is still in progress
my $created;
for (1 .. 60)
{
	$created = eval { kafka_create_topic($topic, 2); 1 };
	last if $created;
	sleep 1;
}
ok($created, 'topic re-created');
my ($rows2, $lines2) = make_events(\%ev, 20);
produce($topic, $rows2);
my $end2 = kafka_end_offsets($topic);

$node->safe_psql('postgres', "SELECT streamagg.resume('kg')");
ok(wait_for($node, "SELECT state FROM streamagg.status WHERE stream = 'kg'", 'stopped', 90),
	'the stream stops');
my ($c0, $c1, $e0, $e1) = ($committed{0}, $committed{1}, $end2->{0}, $end2->{1});
my $why = $node->safe_psql('postgres', "SELECT last_error FROM streamagg.status WHERE stream = 'kg'");
like($why, qr/partition 0 of topic "\Q$topic\E" now ends at offset $e0, before the committed offset $c0/,
	'last_error names partition 0, its new end and the committed offset');
like($why, qr/partition 1 of topic .* now ends at offset $e1, before the committed offset $c1/,
	'and partition 1');
like($why, qr/deleted and re-created/, 'and says what may have happened');
is($node->safe_psql('postgres',
		"SELECT string_agg(partition || ':' || from_offset || '-' || to_offset, ',' ORDER BY partition)
		   FROM streamagg.gaps WHERE stream = 'kg' AND reason = 'truncated'"),
	"0:$end2->{0}-$committed{0},1:$end2->{1}-$committed{1}",
	'a truncated gap per partition');

$node->safe_psql('postgres', "SELECT streamagg.reset_offsets('kg', 'earliest')");
$node->safe_psql('postgres', "SELECT streamagg.resume('kg')");
ok(wait_caught_up($node, 'kg', 20), 'rebuilt from the new topic');
$node->safe_psql('postgres', 'TRUNCATE truth');
load_truth($node, 'truth', $lines2);
is(differences($node, 'kg_w', 'truth'), '0', 'window equals the GROUP BY over the new topic');
is($node->safe_psql('postgres', "SELECT state, gaps FROM streamagg.status WHERE stream = 'kg'"),
	'running|0', 'running, the old gaps forgotten by the rebuild');

# --- 3. a new partition loses records before it is first read --------------

my $topic3 = kafka_topic('k_gaps_new');
kafka_create_topic($topic3, 1);
my %ev3;
my ($rows3, $lines3) = make_events(\%ev3, 50);
$_->{partition} = 0 for @$rows3;
produce($topic3, $rows3);
create_counting_stream($node, 'kn', $topic3);
ok(wait_caught_up($node, 'kn', 50), 'new partition: the first 50 read');
$node->safe_psql('postgres', "SELECT streamagg.pause('kn')");
ok(wait_for($node, "SELECT workers FROM streamagg.status WHERE stream = 'kn'", '0', 30),
	'new partition: paused');
kafka_add_partitions($topic3, 2);
my ($rows4, $lines4) = make_events(\%ev3, 50);
$_->{partition} = 1 for @$rows4;
produce($topic3, $rows4);
my $file3 = PostgreSQL::Test::Utils::tempdir() . '/delete3.json';
open(my $fh3, '>', $file3) or die;
print $fh3 qq({"version": 1, "partitions": [{"topic": "$topic3", "partition": 1, "offset": 20}]});
close $fh3;
kafka_tool('kafka-delete-records', '--offset-json-file', $file3);
$node->safe_psql('postgres', "SELECT streamagg.resume('kn')");
ok(wait_caught_up($node, 'kn', 80), 'new partition: the 30 records left are read');
is($node->safe_psql('postgres',
		"SELECT string_agg(partition || ':' || from_offset || '-' || to_offset || ':' || messages || ':' || reason, ',')
		   FROM streamagg.gaps WHERE stream = 'kn'"),
	'1:0-20:20:retention', 'new partition: its deleted records are a retention gap from offset 0');
load_truth($node, 'truth3', [ @$lines3, @{$lines4}[20 .. 49] ]);
is(differences($node, 'kn_w', 'truth3'), '0', 'new partition: window equals the GROUP BY over what was read');

$node->stop;
done_testing();
