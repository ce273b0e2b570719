# A worker's setup is not in anyone's way: what it asks Kafka (the
# topic's partitions, where new partitions start) it asks before it locks
# the stream's row, in tries that grow from 0.5 s to 4 s and answer
# interrupts in between.
#   1. a round trip of 1 s to every broker: the stream starts and reads
#      everything (tries of a fixed 0.5 s never got an answer)
#   2. the leader of a new topic's partitions is down: metadata answers but
#      the start offsets cannot be asked; pause returns at once and the
#      worker asking leaves within seconds; with the leader back the
#      stream reads everything
#   3. a topic of 300 partitions for one worker (a worker takes at most
#      256): the stream is failing and says so; with parallelism 2 it
#      reads everything

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use StreamAgg;
use RealKafka;

my $node = new_node('setup', conf => ["streamagg.batch_time = '100ms'"]);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_streamagg');

# --- a slow network: setup is not in anyone's way -------------------------
like(create_topic('slow', 2), qr/^ok create/, 'topic slow');
my %ev;
my ($rows, $lines) = make_events(\%ev, 100);
$_->{partition} = $_->{ts} % 2 for @$rows;
produce('slow', $rows);
load_truth($node, 'truth', $lines);

broker_cmd('rtt -1 1000');
my $t0 = time();
create_counting_stream($node, 'slow', 'slow');
ok(wait_caught_up($node, 'slow', 100, 180), 'a 1 s round trip: the stream starts and reads everything');
diag(sprintf('caught up after %.1f s', time() - $t0));
is(differences($node, 'slow_w', 'truth'), '0', 'window equals the truth');
broker_cmd('rtt -1 0');

# the leader of a new topic's partitions is down: metadata answers, the
# start offsets cannot be asked.  A worker setting up keeps asking; pause
# neither waits for it nor for a lock it holds, and it leaves at once
like(create_topic('headless', 2), qr/^ok create/, 'topic headless');
broker_cmd("leader headless $_ 3") for (0, 1);
broker_cmd('down 3');
create_counting_stream($node, 'slow2', 'headless');
ok(wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_streamagg worker' AND application_name LIKE '%slow2%'", '1', 60),
	'leader down: a worker is setting up');
sleep 3;
$t0 = time();
$node->safe_psql('postgres', "SELECT streamagg.pause('slow2')");
my $took = time() - $t0;
ok($took < 1, sprintf('pause returns at once (%.2f s)', $took));
ok(wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_streamagg worker' AND application_name LIKE '%slow2%'", '0', 10),
	'the worker in setup leaves within 10 s');
diag(sprintf('worker gone after %.1f s', time() - $t0));
broker_cmd('up 3');
$node->safe_psql('postgres', "SELECT streamagg.resume('slow2')");
my ($rows2, $lines2) = make_events(\%ev, 50);
$_->{partition} = $_->{ts} % 2 for @$rows2;
produce('headless', $rows2);
ok(wait_caught_up($node, 'slow2', 50, 60), 'leader back: everything read');

# --- more partitions than a worker takes -----------------------------------
like(create_topic('wide', 300), qr/^ok create/, 'topic with 300 partitions');
create_counting_stream($node, 'wide1', 'wide');
ok(wait_for($node, "SELECT state || ': ' || (last_error LIKE '%would give worker 0 300 partitions; a worker takes at most 256%')::text
                     FROM streamagg.status WHERE stream = 'wide1'", 'failing: true', 60),
	'300 partitions for one worker: failing, and says why');
$node->safe_psql('postgres', "SELECT streamagg.drop_stream('wide1', cascade => true)");
my %ev3;
my ($rows3, $lines3) = make_events(\%ev3, 600);
my $i3 = 0;
$_->{partition} = $i3++ % 300 for @$rows3;
produce('wide', $rows3);
load_truth($node, 'truth3', $lines3);
create_counting_stream($node, 'wide2', 'wide', parallelism => 2);
ok(wait_caught_up($node, 'wide2', 600, 120), 'with parallelism 2 (150 partitions each) everything is read');
is(differences($node, 'wide2_w', 'truth3'), '0', 'window equals the truth');
done_testing();
