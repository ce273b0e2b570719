# Privileges: three roles - an owner, an attacker granted the API with a
# schema of her own, and an outsider with no grant - and every escalation
# we know of.  Nothing user-supplied may run with more rights than the
# stream's owner has, no role may see or disturb another's streams, and a
# privilege the owner loses makes the stream 'failing' (no dead letters,
# nothing skipped) until it returns.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use StreamAgg;

my $node = new_node('priv',
	conf => [ "streamagg.batch_time = '100ms'", "streamagg.max_restart_delay = '2s'" ]);
my $super = $node->safe_psql('postgres', 'SELECT current_user');
my $marker = $node->basedir . '/kinit-ran';

# psql as a role; returns (exit code, stdout, stderr)
sub as_role
{
	my ($role, $sql, $db) = @_;
	my ($ret, $out, $err) =
	  $node->psql($db // 'postgres', $sql, extra_params => [ '-U', $role ]);
	return ($ret, $out, $err);
}

# expect an error matching $re when $role runs $sql
sub refused
{
	my ($role, $sql, $re, $name) = @_;
	my ($ret, $out, $err) = as_role($role, $sql);
	ok($ret != 0 && $err =~ $re, $name) or diag "ret=$ret out=$out err=$err";
}

sub is_superuser
{
	my ($role) = @_;
	return $node->safe_psql('postgres',
		"SELECT rolsuper FROM pg_roles WHERE rolname = '$role'");
}

$node->safe_psql('postgres', q{
	CREATE EXTENSION pg_streamagg;
	CREATE ROLE owner_r LOGIN;
	CREATE ROLE attacker LOGIN;
	CREATE ROLE outsider LOGIN;
	CREATE ROLE heir LOGIN;
	CREATE SCHEMA app AUTHORIZATION owner_r;
	CREATE SCHEMA evil AUTHORIZATION attacker;
	GRANT USAGE ON SCHEMA streamagg TO owner_r, attacker, heir;
});

my $brokers = brokers();
create_topic('priv_owner', 2);
create_topic('priv_attack', 1);

# ---------------------------------------------------------------- who may use it

refused('outsider',
	"SELECT streamagg.create_stream('o', 'priv_owner', '$brokers', 'x int')",
	qr/permission denied for schema streamagg/,
	'a role without USAGE on streamagg cannot create streams');
refused('outsider', 'SELECT * FROM streamagg.streams',
	qr/permission denied for schema streamagg/,
	'... nor read the catalog');
refused('outsider', 'SELECT * FROM streamagg.status',
	qr/permission denied for schema streamagg/, '... nor the status view');

# ---------------------------------------------------------------- the owner's stream

my ($ret, $out, $err) = as_role('owner_r', qq{
	SELECT streamagg.create_stream('victim', 'priv_owner', '$brokers',
		'ip text, status int, bytes bigint',
		options => '{"sasl.password": "s3cret-pw", "client.id": "victim"}');
	SELECT streamagg.create_window('app.hits', 'victim',
		group_by => 'ip', aggregates => 'count(*) AS n, sum(bytes) AS bytes');
});
is($ret, 0, 'an owner with USAGE creates a stream and a window') or diag $err;
is($node->safe_psql('postgres',
		"SELECT tableowner FROM pg_tables WHERE schemaname = 'app' AND tablename = 'hits'"),
	'owner_r', 'the result table belongs to the owner');

my $sent = 0;
my $bytes = 0;
sub produce_hits
{
	my ($n, $extra) = @_;
	my @rows;
	for my $i (1 .. $n)
	{
		my $b = 10 + ($i % 7);
		push @rows, { partition => $i % 2, payload => qq({"ip": "10.0.0.@{[$i % 5]}", "status": 200, "bytes": $b}) };
		$sent++;
		$bytes += $b;
	}
	push @rows, @{ $extra // [] };
	produce('priv_owner', \@rows);
}
produce_hits(200, [ { partition => 0, payload => 'not json: secret-payload' } ]);
ok(wait_for($node, "SELECT coalesce(sum(n), 0) || '/' || coalesce(sum(bytes), 0) FROM app.hits",
		"$sent/$bytes", 60),
	'the owner\'s stream aggregates as the owner');
ok(wait_for($node, "SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'victim'", '1', 30),
	'the broken message is a dead letter');

# ---------------------------------------------------------------- visibility

# a gap row of the owner's stream (as retention would record it)
$node->safe_psql('postgres',
	"INSERT INTO streamagg.gaps (stream, partition, from_offset, to_offset, messages, reason)
	 VALUES ('victim', 0, 0, 10, 10, 'retention')");
for my $rel (qw(streams windows offsets dead_letters gaps status partitions))
{
	($ret, $out, $err) = as_role('attacker',
		"SELECT count(*) FROM streamagg.$rel");
	is($out, '0', "the attacker sees none of the owner's rows in streamagg.$rel")
	  or diag $err;
	($ret, $out, $err) = as_role('owner_r',
		"SELECT count(*) > 0 FROM streamagg.$rel");
	is($out, 't', "the owner sees her rows in streamagg.$rel") or diag $err;
}
refused('attacker', 'SELECT options FROM streamagg.streams',
	qr/permission denied/, 'no role reads the options column');
refused('owner_r', 'SELECT options FROM streamagg.streams',
	qr/permission denied/, '... not even the owner (she has stream_options)');
refused('attacker', "SELECT streamagg.stream_options('victim')",
	qr/must be owner of stream "victim"/, 'stream_options is for the owner only');
($ret, $out, $err) = as_role('owner_r', "SELECT streamagg.stream_options('victim')->>'sasl.password'");
is($out, 's3cret-pw', 'the owner reads her secrets');
($ret, $out, $err) = as_role('attacker',
	"SELECT count(*) FROM streamagg._live_workers() UNION ALL SELECT count(*) FROM streamagg._live_partitions()");
is($out, "0\n0", 'live worker figures show no other role\'s streams');
($ret, $out, $err) = as_role('attacker',
	"SELECT count(*) FROM streamagg.dead_letters WHERE payload::text LIKE '%secret%' OR error LIKE '%secret%'");
is($out, '0', 'no dead-letter payload of another role is visible');

# ---------------------------------------------------------------- no disturbance

for my $call ("streamagg.pause('victim')", "streamagg.resume('victim')",
	"streamagg.reset_offsets('victim')", "streamagg.drop_stream('victim', cascade => true)",
	"streamagg.drop_window('app.hits')",
	"streamagg.create_window('evil.w', 'victim', size => '1 minute')")
{
	refused('attacker', "SELECT $call", qr/must be owner of stream "victim"/,
		"the attacker cannot call $call");
}
refused('attacker', q{UPDATE streamagg.streams SET parallelism = 4},
	qr/permission denied/, 'the catalog cannot be written directly');
refused('attacker', q{SELECT streamagg._request_manager()},
	qr/permission denied/, 'internal functions are not for users');

# DROP DATABASE by a role that may not drop it must not stop its workers
$node->safe_psql('postgres', 'CREATE DATABASE victimdb');
$node->safe_psql('victimdb', qq{
	CREATE EXTENSION pg_streamagg;
	SELECT streamagg.create_stream('vs', 'priv_owner', '$brokers', 'ip text');
	SELECT streamagg.create_window('vw', 'vs', group_by => 'ip');
});
ok(wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'victimdb' "
		  . "AND backend_type = 'pg_streamagg worker'", '1', 30),
	'a worker runs in victimdb');
my $pid = $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE datname = 'victimdb' "
	  . "AND backend_type = 'pg_streamagg worker'");
refused('attacker', 'DROP DATABASE victimdb', qr/must be owner of database/,
	'the attacker may not drop victimdb');
sleep 1;    # a stop request would have been acted on by now
is($node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE datname = 'victimdb' "
		  . "AND backend_type = 'pg_streamagg worker'"),
	$pid, '... and victimdb\'s worker was not disturbed');

# ---------------------------------------------------------------- quotas

refused('attacker',
	"SELECT streamagg.create_stream('wide', 'priv_attack', '$brokers', 'x int', parallelism => 256)",
	qr/parallelism 256 is more than streamagg.max_workers_per_stream/,
	'a non-superuser cannot take every worker slot');

# ---------------------------------------------------------------- options

for my $opt (
	[ 'sasl.kerberos.kinit.cmd', "touch $marker" ],
	[ 'ssl.ca.location', '/etc/passwd' ],
	[ 'ssl.key.location', '/etc/ssl/private/key.pem' ],
	[ 'plugin.library.paths', '/tmp/evil.so' ],
	[ 'debug', 'all' ],
	[ 'log_level', '7' ],
	[ 'sasl.oauthbearer.method', 'oidc' ],
	[ 'ssl.engine.location', '/tmp/engine.so' ],
	[ 'statistics.interval.ms', '10' ])
{
	my ($k, $v) = @$opt;
	my $sn = 'o_' . ($k =~ s/\W/_/gr);    # stream names are identifiers
	refused('attacker', qq{SELECT streamagg.create_stream('$sn', 'priv_attack', '$brokers', 'x int',
			options => '{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "GSSAPI", "$k": "$v"}')},
		qr/Kafka option "\Q$k\E" may be set only by a superuser/,
		"a non-superuser may not set $k");
}
ok(!-e $marker, 'no kinit command ran');
for my $k (qw(group.id log.queue auto.offset.reset enable.auto.commit bootstrap.servers))
{
	my ($r, $o, $e) = $node->psql('postgres', qq{SELECT streamagg.create_stream('o', 'priv_attack', '$brokers', 'x int',
			options => '{"$k": "true"}')});
	like($e, qr/Kafka option "\Q$k\E" cannot be set/, "nobody may set $k");
}
($ret, $out, $err) = as_role('attacker', qq{SELECT streamagg.create_stream('okopts', 'priv_attack', '$brokers', 'x int',
		options => '{"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": "u",
		             "sasl.password": "p", "ssl.ca.pem": "-----BEGIN CERTIFICATE-----", "isolation.level": "read_committed",
		             "socket.timeout.ms": 30000, "fetch.max.bytes": 1048576, "client.id": "me"}');
	SELECT streamagg.drop_stream('okopts')});
is($ret, 0, 'credentials, inline PEM, timeouts and sizes are allowed to owners') or diag $err;
($ret, $out, $err) = $node->psql('postgres', qq{SELECT streamagg.create_stream('su', 'priv_attack', '$brokers', 'x int',
		options => '{"debug": "broker"}'); SELECT streamagg.drop_stream('su')});
is($ret, 0, 'a superuser may set debug') or diag $err;

# ---------------------------------------------------------------- escalation through expressions

$node->safe_psql('postgres', q{
	CREATE TABLE evil_log (who text, what text);
	GRANT INSERT ON evil_log TO PUBLIC;
});
($ret, $out, $err) = as_role('attacker', q{
	CREATE FUNCTION evil.boom() RETURNS void LANGUAGE plpgsql AS
	  $$ BEGIN INSERT INTO public.evil_log VALUES (current_user, 'boom'); ALTER ROLE attacker SUPERUSER; END $$;
	-- IMMUTABLE, so the planner folds it at create time and in the worker
	CREATE FUNCTION evil.fold() RETURNS text LANGUAGE plpgsql IMMUTABLE AS
	  $$ BEGIN PERFORM evil.boom(); RETURN 'x'; END $$;
	-- runs the escalation only inside a worker
	CREATE FUNCTION evil.grp(text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS
	  $$ BEGIN
	       -- evaluated only in a worker (create_window plans, it does not evaluate)
	       PERFORM evil.boom();
	       RETURN $1;
	     END $$;
	CREATE FUNCTION evil.eq(text, text) RETURNS boolean LANGUAGE plpgsql AS
	  $$ BEGIN INSERT INTO public.evil_log VALUES (current_user, 'eq'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
	CREATE OPERATOR evil.= (FUNCTION = evil.eq, LEFTARG = text, RIGHTARG = text);
	CREATE DOMAIN evil.dom AS text CHECK (evil.grp(VALUE) IS NOT NULL);
});
is($ret, 0, 'the attacker prepares her functions, operator and domain') or diag $err;

refused('attacker', qq{SELECT streamagg.create_stream('a1', 'priv_attack', '$brokers', 'x text');
	SELECT streamagg.create_window('evil.w1', 'a1', group_by => 'evil.fold() AS k')},
	qr/permission denied to alter role|must be superuser|permission denied/,
	'constant folding at create time runs as the owner, and fails');
is(is_superuser('attacker'), 'f', '... the attacker is not superuser');

($ret, $out, $err) = as_role('attacker', qq{
	SELECT streamagg.create_stream('a2', 'priv_attack', '$brokers', 'x text, d evil.dom');
	SELECT streamagg.create_window('evil.w2', 'a2', group_by => 'evil.grp(x) AS k');
	ALTER ROLE attacker SET search_path = evil, pg_catalog;
});
is($ret, 0, 'a window calling her own function is accepted') or diag $err;
produce('priv_attack', [ map { { partition => 0, payload => qq({"x": "v$_", "d": "d$_"}) } } 1 .. 20 ]);
ok(wait_for($node, "SELECT last_error LIKE '%must be superuser to alter superuser roles%' FROM streamagg.streams WHERE name = 'a2'",
		't', 60),
	'in the worker, her function runs as her and fails for want of rights')
  or diag $node->safe_psql('postgres', "SELECT * FROM evil.w2; SELECT * FROM streamagg.offsets; "
	  . "SELECT * FROM streamagg.status; SELECT * FROM evil_log");
is(is_superuser('attacker'), 'f', 'the attacker did not become superuser');
is($node->safe_psql('postgres', "SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'a2'"),
	'0', 'a privilege error is not a dead letter');
is($node->safe_psql('postgres', "SELECT state FROM streamagg.status WHERE stream = 'a2'"),
	'failing', 'the stream shows failing');

# Her search_path (ALTER ROLE ... SET) and her = operator: API calls by her
# and by others must never run the operator as anyone but her.
as_role('attacker', qq{SELECT streamagg.pause('a2'); SELECT streamagg.resume('a2');
	SELECT streamagg.stream_options('a2'); SELECT streamagg.drop_stream('a2', cascade => true);
	SELECT streamagg.create_stream('a3', 'priv_attack', '$brokers', 'x text');
	SELECT streamagg.create_window('evil.w3', 'a3', group_by => 'x',
		filter => 'set_config(''search_path'', ''evil, pg_catalog'', false) IS NOT NULL');});
ok(wait_for($node, "SELECT coalesce(sum(count), 0) FROM evil.w3", '20', 60),
	'a filter that changes search_path still counts every message');
produce('priv_attack', [ map { { partition => 0, payload => qq({"x": "w$_"}) } } 1 .. 5 ]);
ok(wait_for($node, "SELECT coalesce(sum(count), 0) FROM evil.w3", '25', 60),
	'... and the next batch too (the change was rolled back, catalog queries unaffected)');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM evil_log WHERE who <> 'attacker'"),
	'0', 'no function or operator of hers ever ran as another role');
is(is_superuser('attacker'), 'f', 'still not superuser');

# her own function raising for one message's value: that message is a
# dead letter of that window (evaluated in a subtransaction), its
# neighbours count
($ret, $out, $err) = as_role('attacker', q{
	CREATE FUNCTION evil.picky(text) RETURNS text LANGUAGE plpgsql AS
	  $$ BEGIN
	       PERFORM pg_catalog.count(*) FROM pg_catalog.pg_class;   -- runs SQL
	       IF $1 = 'bad' THEN RAISE EXCEPTION 'picky refuses %', $1; END IF;
	       RETURN $1;
	     END $$;
	SELECT streamagg.create_window('evil.w4', 'a3', group_by => 'evil.picky(x) AS k');});
is($ret, 0, 'a window over a function that runs SQL is accepted') or diag $err;
produce('priv_attack', [ map { { partition => 0, payload => qq({"x": "$_"}) } } qw(p1 bad p3) ]);
ok(wait_for($node, "SELECT coalesce(sum(count), 0) FROM evil.w3", '28', 60),
	'the other window counts all three');
ok(wait_for($node, "SELECT string_agg(k, ',' ORDER BY k) FROM evil.w4", 'p1,p3', 30),
	'the window with the picky function counts the two it accepts');
is($node->safe_psql('postgres', "SELECT window_name || ': ' || error FROM streamagg.dead_letters "
		  . "WHERE stream = 'a3' AND reason = 'decode'"),
	'evil.w4: group_by item "k": picky refuses bad', 'the refused message is a dead letter of that window, in words');

# A SECURITY DEFINER function of a superuser, reached through a domain
# check, that raises for one message: the error must not leave the worker
# acting as the function's owner for the rest of the batch.
$node->safe_psql('postgres', q{
	CREATE FUNCTION public.to_id(t text) RETURNS int LANGUAGE plpgsql SECURITY DEFINER
	  AS $$ BEGIN RETURN t::int; END $$;
});
($ret, $out, $err) = as_role('attacker', qq{
	CREATE FUNCTION evil.who(t text) RETURNS boolean LANGUAGE plpgsql AS
	  \$\$ BEGIN INSERT INTO public.evil_log VALUES (current_user, 'who'); RETURN true; END \$\$;
	CREATE DOMAIN evil.d AS text CHECK (public.to_id(VALUE) IS NOT NULL);
	CREATE DOMAIN evil.d2 AS text CHECK (evil.who(VALUE));
	SELECT streamagg.create_stream('a4', 'priv_attack4', '$brokers', 'a text, b text');
	SELECT streamagg.create_window('evil.w5', 'a4', group_by => 'a::evil.d AS x, b::evil.d2 AS y');});
is($ret, 0, 'a window casting to her domains is accepted') or diag $err;
create_topic('priv_attack4', 1);
produce('priv_attack4', [ map { { partition => 0, payload => $_ } }
	  '{"a": "zz", "b": "x"}', '{"a": "1", "b": "x"}', '{"a": "2", "b": "x"}' ]);
ok(wait_for($node, "SELECT count(*) FROM evil.w5", '2', 60),
	'the two good messages count');
is($node->safe_psql('postgres', "SELECT count(*) FROM evil_log WHERE who <> 'attacker'"),
	'0', 'after the definer function failed, her code still ran as her');
is(is_superuser('attacker'), 'f', 'and she is not superuser');

# Worker slots are shared: one role's streams may not take them all.
($ret, $out, $err) = as_role('attacker', qq{SELECT streamagg.create_stream('q1', 'priv_attack', '$brokers', 'x int', parallelism => 4)});
is($ret, 0, 'a stream with 4 workers') or diag $err;
refused('attacker', qq{SELECT streamagg.create_stream('q2', 'priv_attack', '$brokers', 'x int', parallelism => 4)},
	qr/more than streamagg.max_workers_per_role \(8\)/, 'but not a second one past the role quota');
as_role('attacker', "SELECT streamagg.drop_stream('q1')");

# a result table in another role's schema
refused('attacker', "SELECT streamagg.create_window('app.stolen', 'a3', size => '1 minute')",
	qr/permission denied for schema app/, 'a window table cannot go into a schema the owner cannot create in');
refused('attacker', "SELECT streamagg.create_window('app.hits', 'a3', size => '1 minute')",
	qr/already exists/, 'nor take the name of an existing table');

# ---------------------------------------------------------------- a privilege lost and back

my $dead_before = $node->safe_psql('postgres', "SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'victim'");
$node->safe_psql('postgres', 'REVOKE INSERT, UPDATE ON app.hits FROM owner_r');
produce_hits(100);
ok(wait_for($node, "SELECT state || ':' || (last_error LIKE '%permission denied for table hits%')::int "
		  . "FROM streamagg.status WHERE stream = 'victim'", 'failing:1', 60),
	'without INSERT on her table the stream is failing, the error in words');
is($node->safe_psql('postgres', "SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'victim'"),
	$dead_before, 'no message became a dead letter');
$node->safe_psql('postgres', 'GRANT INSERT, UPDATE ON app.hits TO owner_r');
ok(wait_for($node, "SELECT coalesce(sum(n), 0) || '/' || coalesce(sum(bytes), 0) FROM app.hits",
		"$sent/$bytes", 90),
	'when the privilege returns the stream catches up exactly');
ok(wait_for($node, "SELECT state FROM streamagg.status WHERE stream = 'victim'", 'running', 30),
	'... and is running again, last_error cleared');

# EXECUTE revoked from a function a window calls: checked before every
# batch, not only when the worker started.
$node->safe_psql('postgres', q{
	CREATE FUNCTION public.licensed(t text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
	REVOKE EXECUTE ON FUNCTION public.licensed(text) FROM PUBLIC;
	GRANT EXECUTE ON FUNCTION public.licensed(text) TO owner_r, heir;
});
($ret, $out, $err) = as_role('owner_r', q{SELECT streamagg.create_window('app.licensed', 'victim',
	group_by => 'ip', filter => 'public.licensed(ip)')});
is($ret, 0, 'a window calling a function she may execute') or diag $err;
ok(wait_for($node, "SELECT state FROM streamagg.status WHERE stream = 'victim'", 'running', 60),
	'the stream runs with it');
$node->safe_psql('postgres', 'REVOKE EXECUTE ON FUNCTION public.licensed(text) FROM owner_r');
produce_hits(10);
ok(wait_for($node, "SELECT state || ':' || (last_error LIKE '%permission denied for function licensed%')::int "
		  . "FROM streamagg.status WHERE stream = 'victim'", 'failing:1', 60),
	'a running worker notices the revoked EXECUTE');
$node->safe_psql('postgres', 'GRANT EXECUTE ON FUNCTION public.licensed(text) TO owner_r');
ok(wait_for($node, "SELECT coalesce(sum(n), 0) FROM app.hits", $sent, 90),
	'and catches up exactly once it is granted again');

# DROP ROLE by a role that may not drop roles tells nothing about streams
($ret, $out, $err) = as_role('outsider', 'DROP ROLE owner_r');
ok($ret != 0 && $err !~ /victim|pg_streamagg/, 'a refused DROP ROLE names no stream') or diag $err;

# ---------------------------------------------------------------- owner lifecycle

($ret, $out, $err) = $node->psql('postgres', 'DROP ROLE owner_r');
ok($ret != 0 && $err =~ /owner of 1 pg_streamagg stream/, 'DROP ROLE of a stream owner fails')
  or diag $err;
like($err, qr/REASSIGN OWNED/, '... with a hint');

# in another database: the refusal comes from what its manager published
$node->safe_psql('victimdb', q{
	CREATE ROLE far LOGIN;
	GRANT USAGE ON SCHEMA streamagg TO far;
});
as_role('far', "SELECT streamagg.create_stream('fs', 'priv_owner', '$brokers', 'ip text')", 'victimdb');
ok(wait_for($node, "DO \$\$ DECLARE d text; BEGIN DROP ROLE far; RAISE EXCEPTION 'dropped'; "
		  . "EXCEPTION WHEN OTHERS THEN GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL; "
		  . "IF d NOT LIKE '%pg_streamagg streams in database \"victimdb\"%' THEN RAISE; END IF; END \$\$; "
		  . "SELECT 'refused'", 'refused', 30),
	'DROP ROLE run in another database is refused too');

$node->safe_psql('postgres', 'REASSIGN OWNED BY owner_r TO heir');
is($node->safe_psql('postgres', "SELECT owner FROM streamagg.streams WHERE name = 'victim'"),
	'heir', 'REASSIGN OWNED moves the stream');
produce_hits(10);
ok(wait_for($node, "SELECT coalesce(sum(n), 0) FROM app.hits", $sent, 60),
	'the stream runs on under its new owner');
($ret, $out, $err) = as_role('heir', "SELECT streamagg.stream_options('victim')->>'client.id'");
is($out, 'victim', 'the new owner reads the options');

$node->safe_psql('postgres', 'DROP OWNED BY heir');
is($node->safe_psql('postgres', "SELECT count(*) FROM streamagg.streams WHERE name = 'victim'"),
	'0', 'DROP OWNED drops the stream');
($ret, $out, $err) = $node->psql('postgres', 'DROP OWNED BY owner_r; DROP ROLE owner_r; DROP ROLE heir');
is($ret, 0, 'afterwards the roles can be dropped') or diag $err;

$node->stop;
done_testing();
