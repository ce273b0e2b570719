# Basic checks: preload requirement, extension life cycle, launcher worker,
# and a round trip through the test broker.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use StreamAgg;

# --- without shared_preload_libraries -------------------------------------

my $plain = new_node('nopreload', preload => 0);

my ($ret, $out, $err) =
  $plain->psql('postgres', 'CREATE EXTENSION pg_streamagg');
isnt($ret, 0, 'CREATE EXTENSION fails without shared_preload_libraries');
like(
	$err,
	qr/shared_preload_libraries = 'pg_streamagg'/,
	'the error tells which shared_preload_libraries line to add');
is($plain->safe_psql('postgres',
		"SELECT count(*) FROM pg_namespace WHERE nspname = 'streamagg'"),
	'0', 'no streamagg schema left behind');
is($plain->safe_psql('postgres', 'SELECT 1'), '1',
	'server still works after the failed CREATE EXTENSION');
$plain->stop;

# --- with shared_preload_libraries ----------------------------------------

my $node = new_node('main');
is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'),
	'pg_streamagg', 'server started with pg_streamagg preloaded');

($ret, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION pg_streamagg');
is($ret, 0, 'CREATE EXTENSION pg_streamagg succeeds') or diag $err;

is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_namespace WHERE nspname = 'streamagg'"),
	'1', 'schema streamagg exists');

ok( wait_for(
		$node,
		"SELECT count(*) > 0 FROM pg_stat_activity "
		  . "WHERE backend_type = 'pg_streamagg launcher'",
		't', 30),
	'launcher shows up in pg_stat_activity');
my @launchers = worker_pids($node, 'pg_streamagg launcher');
is(scalar @launchers, 1, 'exactly one launcher');

# --- test broker round trip ----------------------------------------------

like(brokers(), qr/\S:\d+/, 'KAFKA_BROKERS looks like a bootstrap list');

my $topic = 'basics_roundtrip';
like(create_topic($topic, 3), qr/^ok create \Q$topic\E/, 'topic created');

my @rows = (
	{
		partition => 0,
		key       => 'key-0',
		ts        => 1700000000000,
		payload   => '{"v": 1}'
	},
	{
		partition => 1,
		key       => undef,
		ts        => 1700000000001,
		payload   => "tab\there\nnewline \\ back\x00nul\xffhigh"
	},
	{
		partition => 2,
		key       => "bin\x01\tkey",
		ts        => 1700000000002,
		payload   => undef
	},);
is(produce($topic, \@rows), 3, 'produced 3 messages');

my @got = consume_all($topic);
my @want = map {
	{
		partition => $rows[$_]{partition},
		offset    => 0,
		ts        => $rows[$_]{ts},
		key       => $rows[$_]{key},
		payload   => $rows[$_]{payload},
	}
} 0 .. $#rows;
is_deeply(\@got, \@want, 'kcat reads back exactly what was produced');

# lz4-compressed batches with the default partitioner
my $ztopic = 'basics_lz4';
create_topic($ztopic, 1);
my @zrows =
  map { { key => "k$_", payload => ('x' x 100) . $_ } } 1 .. 5;
is(produce($ztopic, \@zrows, lz4 => 1), 5, 'produced 5 lz4 messages');
@got = consume_all($ztopic);
is_deeply(
	[ map { [ $_->{offset}, $_->{key}, $_->{payload} ] } @got ],
	[ map { [ $_ - 1, "k$_", ('x' x 100) . $_ ] } 1 .. 5 ],
	'lz4 messages read back in order');

# --- DROP / CREATE again ---------------------------------------------------

($ret, $out, $err) = $node->psql('postgres', 'DROP EXTENSION pg_streamagg');
is($ret, 0, 'DROP EXTENSION pg_streamagg succeeds') or diag $err;
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_namespace WHERE nspname = 'streamagg'"),
	'0', 'schema streamagg is gone');

($ret, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION pg_streamagg');
is($ret, 0, 'CREATE EXTENSION pg_streamagg works again') or diag $err;
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_namespace WHERE nspname = 'streamagg'"),
	'1', 'schema streamagg exists again');

$node->stop;
done_testing();
