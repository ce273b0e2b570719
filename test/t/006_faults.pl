# Faults: a message that makes its batch's write fail is isolated (the
# rest of the batch is kept); a broker outage in the middle of a stream
# loses and duplicates nothing; unreachable brokers show in status as a
# failing stream with the reason; DROP DATABASE with running workers.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use StreamAgg;

my $node = new_node('fa', conf => ["streamagg.batch_time = '300ms'", "streamagg.max_restart_delay = '2s'"]);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_streamagg');
my $brokers = brokers();
my $base    = 1_704_067_200_000;

sub q1 { return $node->safe_psql('postgres', $_[0]); }

# ---------------------------------------------------------------------------
# 1. A group value too large for the result table's index fails the whole
#    batch's upsert.  The batch is replayed one message at a time and only
#    that message becomes a dead letter ('write').

create_topic('fa_poison', 1);
$node->safe_psql('postgres', qq{
BEGIN;
SELECT streamagg.create_stream(name => 'poison', topic => 'fa_poison', brokers => '$brokers',
  columns => 'k text, v int, ts timestamptz', event_time => 'ts');
SELECT streamagg.create_window(name => 'poison_w', stream => 'poison', size => '1 hour',
  group_by => 'k', aggregates => 'count(*) AS n, sum(v) AS s');
COMMIT;});
ok(wait_for($node, "SELECT workers FROM streamagg.status WHERE stream = 'poison'", '1', 60), 'poison: worker up');

srand(11);
my $huge = join('', map { chr(33 + int(rand(90))) } 1 .. 20_000);    # incompressible
$huge =~ s/["\\]/x/g;
my @rows;
push @rows, { partition => 0, payload => sprintf('{"k":"k%d","v":%d,"ts":%d}', $_ % 5, $_, $base) } for 1 .. 50;
push @rows, { partition => 0, payload => sprintf('{"k":"%s","v":1000,"ts":%d}', $huge, $base) };
push @rows, { partition => 0, payload => sprintf('{"k":"k%d","v":%d,"ts":%d}', $_ % 5, $_, $base) } for 51 .. 100;
produce('fa_poison', \@rows);
ok(wait_for($node, "SELECT messages FROM streamagg.status WHERE stream = 'poison'", '101', 120),
	'poison: all 101 messages accounted for');
is(q1("SELECT sum(n) || ' ' || sum(s) FROM poison_w"), '100 5050', 'poison: every neighbour is aggregated');
is(q1("SELECT reason || ' ' || \"offset\" FROM streamagg.dead_letters WHERE stream = 'poison'"), 'write 50',
	'poison: the message that broke the write is a dead letter, reason write');
like(q1("SELECT error FROM streamagg.dead_letters WHERE stream = 'poison'"), qr/index row/,
	'poison: its error says why the write failed');
is(q1("SELECT length(convert_from(payload, 'UTF8')) > 20000 FROM streamagg.dead_letters WHERE stream = 'poison'"),
	't', 'poison: its payload is kept');
is(q1("SELECT state FROM streamagg.status WHERE stream = 'poison'"), 'running', 'poison: the stream runs on');
produce('fa_poison', [ { partition => 0, payload => sprintf('{"k":"k1","v":1,"ts":%d}', $base) } ]);
ok(wait_for($node, "SELECT sum(n) FROM poison_w", '101', 60), 'poison: later messages are aggregated normally');

# A sum that overflows for one row: that row is a dead letter of the
# window and counts nowhere in it (not in count(*) either); its neighbours
# and the other windows count it as usual.
create_topic('fa_overflow', 1);
$node->safe_psql('postgres', qq{
BEGIN;
SELECT streamagg.create_stream(name => 'overflow', topic => 'fa_overflow', brokers => '$brokers',
  columns => 'k text, v float8, ts timestamptz', event_time => 'ts');
SELECT streamagg.create_window(name => 'overflow_sum', stream => 'overflow', size => '1 hour', slide => '30 minutes',
  group_by => 'k', aggregates => 'count(*) AS n, sum(v) AS s');
SELECT streamagg.create_window(name => 'overflow_count', stream => 'overflow', group_by => 'k', aggregates => 'count(*) AS n');
COMMIT;});
produce('fa_overflow', [ map { { partition => 0, payload => sprintf('{"k":"a","v":%s,"ts":%d}', $_, $base) } } ('1e308', '1e308', '1') ]);
ok(wait_for($node, "SELECT messages FROM streamagg.status WHERE stream = 'overflow'", '3', 60), 'overflow: all consumed');
is(q1("SELECT string_agg(n || ':' || s, ',') FROM overflow_sum"), '2:1e+308,2:1e+308',
	'overflow: the overflowing row is in no instance of the hopping window, count included');
is(q1("SELECT n FROM overflow_count"), '3', 'overflow: another window counts it');
is(q1("SELECT window_name || ' ' || \"offset\" || ' ' || reason FROM streamagg.dead_letters WHERE stream = 'overflow'"),
	'overflow_sum 1 decode', 'overflow: a dead letter for that window only');

# ---------------------------------------------------------------------------
# 2. All brokers go down in the middle of consumption and come back.

create_topic('fa_outage', 3);
my $n = 30_000;
# many small record batches (the mock broker returns one per partition per
# fetch) and a slow network, so that consumption takes seconds
for my $chunk (0 .. 29)
{
	produce('fa_outage',
		[ map { { partition => $_ % 3, payload => sprintf('{"k":%d,"v":%d,"ts":%d}', $_ % 7, $_, $base + $_) } }
			  ($chunk * 1000 + 1) .. ($chunk * 1000 + 1000) ]);
}
broker_cmd("rtt $_ 150") for 1 .. 3;
$node->safe_psql('postgres', qq{
BEGIN;
SELECT streamagg.create_stream(name => 'outage', topic => 'fa_outage', brokers => '$brokers',
  columns => 'k int, v int, ts timestamptz', event_time => 'ts', options => '{"streamagg.batch_size": 500}');
SELECT streamagg.create_window(name => 'outage_w', stream => 'outage', group_by => 'k',
  aggregates => 'count(*) AS n, sum(v) AS s');
COMMIT;});
$node->poll_query_until('postgres', "SELECT messages > 2000 FROM streamagg.status WHERE stream = 'outage'")
  or die 'outage: no progress';
broker_cmd("down $_") for 1 .. 3;
my $during = q1("SELECT messages FROM streamagg.status WHERE stream = 'outage'");
# A long outage shows: the stream is failing with the reason, its
# partitions are not 'idle' (cut off is not quiet).
ok(wait_for($node, "SELECT state || ':' || (last_error LIKE 'cannot reach the brokers % since %')::int "
		  . "FROM streamagg.status WHERE stream = 'outage'", 'failing:1', 90),
	'outage: after 30 s without brokers the status says failing, and why');
is(q1("SELECT count(*) FROM streamagg.partitions WHERE stream = 'outage' AND idle"), '0',
	'outage: no partition shows as idle while the brokers are unreachable');
broker_cmd("up $_") for 1 .. 3;
broker_cmd("rtt $_ 0") for 1 .. 3;
ok($during < $n, "outage: the brokers went down in the middle of the stream ($during of $n committed)");
ok(wait_for($node, "SELECT messages FROM streamagg.status WHERE stream = 'outage'", $n, 180),
	'outage: every message committed once the brokers are back');
my $truth = join(',', map { my $k = $_; my @v = grep { $_ % 7 == $k } 1 .. $n; scalar(@v) . ':' . eval { my $s = 0; $s += $_ for @v; $s } } 0 .. 6);
is(q1("SELECT string_agg(n || ':' || s, ',' ORDER BY k) FROM outage_w"), $truth,
	'outage: no message lost or counted twice');
is(q1("SELECT workers FROM streamagg.status WHERE stream = 'outage'"), '1', 'outage: the worker is still there');
ok(wait_for($node, "SELECT state || ':' || coalesce(last_error, '') FROM streamagg.status WHERE stream = 'outage'",
		'running:', 60),
	'outage: once the brokers are back the status is running again');

# ---------------------------------------------------------------------------
# 3. Brokers that cannot be reached: the stream is 'failing' with the reason,
#    restarted with back-off, and can be paused.

$node->safe_psql('postgres', q{
SELECT streamagg.create_stream(name => 'nowhere', topic => 't', brokers => '127.0.0.1:1',
  columns => 'v int');
SELECT streamagg.create_window(name => 'nowhere_w', stream => 'nowhere', aggregates => 'count(*) AS n');});
ok(wait_for($node, "SELECT state FROM streamagg.status WHERE stream = 'nowhere'", 'failing', 90),
	'unreachable: status says failing');
like(q1("SELECT last_error FROM streamagg.status WHERE stream = 'nowhere'"), qr/127\.0\.0\.1:1/,
	'unreachable: last_error names the brokers it could not reach');
q1("SELECT streamagg.pause('nowhere')");
ok(wait_for($node, "SELECT state || ' ' || workers FROM streamagg.status WHERE stream = 'nowhere'", 'paused 0', 30),
	'unreachable: paused, no worker');
my $restarts = () = slurp_file($node->logfile) =~ /worker 0 of stream "nowhere" stopped; restart/g;
ok($restarts >= 1 && $restarts <= 10, "unreachable: restarted with back-off, not in a loop ($restarts restarts)");

# ---------------------------------------------------------------------------
# 4. DROP DATABASE while its workers run.

$node->safe_psql('postgres', 'CREATE DATABASE dropme');
$node->safe_psql('dropme', qq{
CREATE EXTENSION pg_streamagg;
SELECT streamagg.create_stream(name => 'd', topic => 'fa_outage', brokers => '$brokers', columns => 'k int');
SELECT streamagg.create_window(name => 'd_w', stream => 'd', aggregates => 'count(*) AS n');});
ok(wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'dropme' AND backend_type = 'pg_streamagg worker'", '1', 60),
	'dropme: a worker runs in the database');
my $t0 = time();
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE dropme');
is($ret, 0, 'DROP DATABASE succeeds while workers run') or diag $err;
ok(time() - $t0 < 15, 'DROP DATABASE does not wait long');
is(q1("SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_streamagg%' AND datname = 'dropme'"), '0',
	'no worker is left behind');
sleep 2;
is(q1("SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_streamagg%' AND datname IS NOT NULL AND datname <> 'postgres'"), '0',
	'and none is started again for the dropped database');

ok(!(slurp_file($node->logfile) =~ /terminated by signal/), 'no worker crashed');
$node->stop;
done_testing();
