# What a newcomer trips over: expressions of every class people write,
# compared with the same SQL over the same rows; reset_offsets as a
# rebuild; resuming a stopped stream past its bad message; event times far
# in the future; a window failing on every message; honest lag; and where
# every partition starts when a worker slot frees late.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use StreamAgg;

my $node = new_node('newcomer',
	conf => [ "streamagg.batch_time = '100ms'", "streamagg.max_restart_delay = '2s'",
		"streamagg.max_workers = 1" ]);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_streamagg');
my $brokers = brokers();

# ---------------------------------------------------------------- expressions

create_topic('nc_expr', 2);
my @uas = ('Mozilla/5.0', 'curl/8.1', 'Googlebot/2.1', 'BingBot', '');
my @urls = ('/api/v1/users', '/API/v2/items', '/img/logo.png', '/index.html', '/api/v1/ÄÖü');
my @ips = ('10.0.0.1', '10.0.0.12', 'Host-A', 'host-a', '10.0.0.7');
my (@rows, @sqlrows);
for my $i (0 .. 299)
{
	my $ip     = $ips[ $i % 5 ];
	my $url    = $urls[ ($i * 3) % 5 ];
	my $ua     = $uas[ ($i * 7) % 5 ];
	my $status = (200, 301, 404, 500, 503)[ ($i * 11) % 5 ];
	my $bytes  = 100 + ($i * 37) % 1000;
	my $ts     = sprintf('2024-05-01T%02d:%02d:%02d.%03dZ', 10 + int($i / 100), ($i * 7) % 60, $i % 60, $i % 1000);
	my $meta   = $i % 3 ? qq({"w": $i, "k": "x"}) : qq({"k": "y"});
	push @rows, { partition => $i % 2, payload =>
		  qq({"ip": "$ip", "url": "$url", "ua": "$ua", "status": $status, "bytes": $bytes, "ts": "$ts", "meta": $meta}) };
	(my $m = $meta) =~ s/'/''/g;
	push @sqlrows, "('$ip', '$url', '$ua', $status, $bytes, '$ts', '$m')";
}
$node->safe_psql('postgres',
	"CREATE TABLE src (ip text, url text, ua text, status int, bytes bigint, ts timestamptz, meta jsonb);"
	  . "INSERT INTO src VALUES " . join(', ', @sqlrows));

my %win = (
	w_lower => {
		group_by => 'lower(ip) AS lip',
		aggregates => 'count(*) AS n, sum(bytes) AS b',
		filter => q{url LIKE '/api/%'} },
	w_upper => {
		group_by => 'upper(url) COLLATE "C" AS u',
		aggregates => 'count(*) AS n',
		filter => q{ua ILIKE '%bot%'} },
	w_regex => {
		group_by => 'substr(url, 1, 4) AS pre, (status >= 400) AS err',
		aggregates => 'count(*) AS n, avg(bytes) AS avgb',
		filter => q{url ~ '^/(api|img)' AND ip <> 'Host-A'} },
	w_case => {
		group_by => q{CASE WHEN status < 300 THEN 'ok' WHEN status < 500 THEN 'client' ELSE 'server' END AS cls},
		aggregates => 'count(*) AS n, max(length(ua)) AS maxua, min(bytes::numeric / 3) AS m',
		filter => undef },
	w_json => {
		group_by => q{date_trunc('hour', ts) AS hr, meta->>'k' AS k},
		aggregates => q{count(*) AS n, sum((meta->>'w')::int) AS w},
		filter => q{meta ? 'k'} },
	w_cmp => {
		group_by => q{split_part(ip, '.', 1) AS a, ip > '10.0.0.5' COLLATE "C" AS big},
		aggregates => q{count(*) AS n, max(ua) AS mua, min(url) AS murl},
		filter => q{coalesce(nullif(ua, ''), 'none') <> 'curl/8.1' AND status::text LIKE '%0%'} },
);
my ($ret, $out, $err) = $node->psql('postgres', qq{
	SELECT streamagg.create_stream('expr', 'nc_expr', '$brokers',
		'ip text, url text, ua text, status int, bytes bigint, ts timestamptz, meta jsonb',
		event_time => 'ts');});
is($ret, 0, 'stream for the expression classes') or diag $err;
for my $w (sort keys %win)
{
	my $d = $win{$w};
	my $filter = defined $d->{filter} ? ", filter => \$f\$$d->{filter}\$f\$" : '';
	($ret, $out, $err) = $node->psql('postgres',
		"SELECT streamagg.create_window('$w', 'expr', group_by => \$g\$$d->{group_by}\$g\$, "
		  . "aggregates => \$a\$$d->{aggregates}\$a\$ $filter)");
	is($ret, 0, "window $w is accepted") or diag $err;
}
produce('nc_expr', \@rows);
ok(wait_for($node, q{SELECT coalesce(sum(n), 0) FROM w_case}, '300', 60), 'every message counted');
for my $w (sort keys %win)
{
	my $d = $win{$w};
	my @names = map { /\bAS\s+(\w+)\s*$/i ? $1 : die } split /,(?![^(]*\))/, $d->{group_by} . ', ' . $d->{aggregates};
	my $cols = join(', ', @names);
	my $where = defined $d->{filter} ? "WHERE $d->{filter}" : '';
	my $ngroups = scalar(split /,(?![^(]*\))/, $d->{group_by});
	my $truth = "SELECT $d->{group_by}, $d->{aggregates} FROM src $where GROUP BY "
	  . join(', ', 1 .. $ngroups);
	my $diff = $node->safe_psql('postgres',
		"SELECT count(*) FROM ((SELECT $cols FROM $w EXCEPT ALL $truth) UNION ALL "
		  . "($truth EXCEPT ALL SELECT $cols FROM $w)) d");
	is($diff, '0', "$w equals the same SQL over the same rows");
}
is($node->safe_psql('postgres', "SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'expr'"),
	'0', 'no expression failed on any row');

# ---------------------------------------------------------------- a window failing on every message

($ret, $out, $err) = $node->psql('postgres',
	q{SELECT streamagg.create_window('w_broken', 'expr', group_by => '(bytes / 0) AS x')});
is($ret, 0, 'a window that will fail on every message is accepted') or diag $err;
produce('nc_expr', [ @rows[ 0 .. 49 ] ]);
ok(wait_for($node, q{SELECT state || ': ' || (last_error ~ '^window "w_broken" fails on every message \\(\\d+ in the last batch\\): group_by item "x": division by zero$')::int
		FROM streamagg.status WHERE stream = 'expr'}, 'failing: 1', 60),
	'a window failing on every message shows in last_error, named, with the error');
ok(wait_for($node, q{SELECT sum(n) FROM w_case}, '350', 30), 'the other windows go on counting');
$node->safe_psql('postgres', q{SELECT streamagg.drop_window('w_broken')});
produce('nc_expr', [ @rows[ 0 .. 9 ] ]);
ok(wait_for($node, q{SELECT state || ':' || coalesce(last_error, '') FROM streamagg.status WHERE stream = 'expr'},
		'running:', 60),
	'once the window is gone the error is cleared');

# ---------------------------------------------------------------- reset_offsets rebuilds

is($node->safe_psql('postgres', q{SELECT sum(n) FROM w_case}), '360', '360 messages so far');
$node->safe_psql('postgres', q{SELECT streamagg.reset_offsets('expr')});
ok(wait_for($node, q{SELECT sum(n) || '/' || (SELECT messages FROM streamagg.status WHERE stream = 'expr') FROM w_case},
		'360/360', 60),
	'after reset to earliest the tables equal the GROUP BY over the messages again, not twice');
is($node->safe_psql('postgres', q{SELECT start_from || ' ' || restart_from FROM streamagg.streams WHERE name = 'expr'}),
	'earliest earliest', 'start_from stays as given; restart_from says where it restarted');
$node->safe_psql('postgres', q{SELECT streamagg.reset_offsets('expr', "to" => 'latest')});
ok(wait_for($node, q{SELECT count(*) FROM w_case}, '0', 30), 'reset to latest empties the windows');
ok(wait_for($node, q{SELECT count(*) FROM streamagg.offsets WHERE stream = 'expr'}, '2', 30),
	'the worker placed the partitions at their end');
produce('nc_expr', [ @rows[ 0 .. 19 ] ]);
ok(wait_for($node, q{SELECT sum(n) FROM w_case}, '20', 60), 'and counts only what comes after');
$node->safe_psql('postgres', q{SELECT streamagg.reset_offsets('expr', "to" => 'earliest', replay => true)});
ok(wait_for($node, q{SELECT sum(n) FROM w_case}, '400', 60), 'replay => true aggregates into the existing rows');

# ---------------------------------------------------------------- lag is NULL when unknown

$node->safe_psql('postgres', q{SELECT streamagg.pause('expr')});
ok(wait_for($node, q{SELECT workers || ':' || coalesce(lag::text, 'null') FROM streamagg.status WHERE stream = 'expr'},
		'0:null', 30),
	'a paused stream shows lag NULL (unknown), not 0');
$node->safe_psql('postgres', q{SELECT streamagg.drop_stream('expr', cascade => true)});

# ---------------------------------------------------------------- on_error => stop, then skip

create_topic('nc_stop', 1);
$node->safe_psql('postgres', qq{
	SELECT streamagg.create_stream('st', 'nc_stop', '$brokers', 'x int', on_error => 'stop');
	SELECT streamagg.create_window('st_total', 'st', aggregates => 'count(*) AS n, sum(x) AS s');});
produce('nc_stop', [ map { { partition => 0, payload => $_ } } '{"x": 1}', '{"x": "two"}', '{"x": 4}' ]);
ok(wait_for($node, q{SELECT state FROM streamagg.status WHERE stream = 'st'}, 'stopped', 60),
	'on_error => stop stops at the bad message');
($ret, $out, $err) = $node->psql('postgres', q{SELECT streamagg.resume('st', skip => true)});
is($ret, 0, 'resume with skip => true') or diag $err;
ok(wait_for($node, q{SELECT n || ' ' || s FROM st_total}, '2 5', 60), 'it goes on past the message');
is($node->safe_psql('postgres', q{SELECT "offset" || ' ' || reason FROM streamagg.dead_letters WHERE stream = 'st'}),
	'1 decode', 'the skipped message is kept as a dead letter');
($ret, $out, $err) = $node->psql('postgres', q{SELECT streamagg.resume('expr_nosuch', skip => true)});
like($err, qr/does not exist/, 'resume of an unknown stream fails');
$node->safe_psql('postgres', q{SELECT streamagg.drop_stream('st', cascade => true)});

# ---------------------------------------------------------------- far-future event times

create_topic('nc_future', 2);
$node->safe_psql('postgres', qq{
	SELECT streamagg.create_stream('fut', 'nc_future', '$brokers', 'ts timestamptz', event_time => 'ts',
		options => '{"streamagg.idle_timeout": 500}');
	SELECT streamagg.create_window('fut_min', 'fut', size => '1 minute');});
my $now = $node->safe_psql('postgres', q{SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')});
produce('nc_future', [ { partition => 0, payload => qq({"ts": "2030-01-01T00:00:00Z"}) } ]);
produce('nc_future', [ { partition => 1, payload => qq({"ts": "$now"}) } ]);
ok(wait_for($node, q{SELECT reason FROM streamagg.dead_letters WHERE stream = 'fut'}, 'future', 60),
	'an event time years ahead is a dead letter with reason future');
ok(wait_for($node, q{SELECT sum(count) FROM fut_min}, '1', 60), 'the real event counts');
sleep 1;    # idle partitions let the watermark follow the real event
produce('nc_future', [ { partition => 1, payload => qq({"ts": "$now"}) } ]);
ok(wait_for($node, q{SELECT sum(count) FROM fut_min}, '2', 60),
	'and the next real event is not late: the watermark never went to 2030');
is($node->safe_psql('postgres', q{SELECT coalesce(streamagg.watermark('fut'), '-infinity') < '2029-01-01'}),
	't', 'the watermark stays near the real events');
$node->safe_psql('postgres', q{SELECT streamagg.drop_stream('fut', cascade => true)});

# ---------------------------------------------------------------- epoch units

create_topic('nc_units', 1);
$node->safe_psql('postgres', qq{
	SELECT streamagg.create_stream('units', 'nc_units', '$brokers',
		'a timestamptz UNIT ''s'', b timestamp UNIT ''us'', c timestamptz, d timestamptz');
	SELECT streamagg.create_window('units_w', 'units', group_by => 'a, b, c, d');});
produce('nc_units', [ { partition => 0,
	payload => '{"a": 1700000000, "b": 1700000000123456, "c": 1700000000123, "d": "2023-11-14 22:13:20"}' } ]);
ok(wait_for($node, q{SELECT a || ' | ' || b || ' | ' || c || ' | ' || d FROM units_w},
		'2023-11-14 22:13:20+00 | 2023-11-14 22:13:20.123456 | 2023-11-14 22:13:20.123+00 | 2023-11-14 22:13:20+00', 60),
	'epoch numbers in seconds, microseconds and (by default) milliseconds; a time without offset in the TimeZone (UTC here)');
$node->safe_psql('postgres', q{SELECT streamagg.drop_stream('units', cascade => true)});

# ---------------------------------------------------------------- session rows final only when nothing on time can change them

create_topic('nc_sess', 1);
$node->safe_psql('postgres', qq{
	SELECT streamagg.create_stream('sess', 'nc_sess', '$brokers', 'k text, ts timestamptz', event_time => 'ts');
	SELECT streamagg.create_window('sess_w', 'sess', size => NULL, session_gap => '60 seconds',
		group_by => 'k');});
sub sess_msg { my ($k, $t) = @_; return { partition => 0, payload => qq({"k": "$k", "ts": "2024-05-01T$t.000Z"}) }; }
produce('nc_sess', [ sess_msg('a', '12:40:00'), sess_msg('a', '12:40:30'), sess_msg('b', '12:41:40') ]);
ok(wait_for($node, q{SELECT streamagg.watermark('sess')}, '2024-05-01 12:41:40+00', 60), 'watermark at 12:41:40');
is($node->safe_psql('postgres', q{SELECT count(*) FROM sess_w_final WHERE k = 'a'}), '0',
	'the session [12:40:00, 12:41:30) is not final yet: an on-time row may still extend it');
produce('nc_sess', [ sess_msg('a', '12:40:50') ]);
ok(wait_for($node, q{SELECT count || ' ' || window_end FROM sess_w WHERE k = 'a'}, '3 2024-05-01 12:41:50+00', 60),
	'an on-time row at 12:40:50 extends it');
produce('nc_sess', [ sess_msg('b', '12:43:00') ]);
ok(wait_for($node, q{SELECT count || ' ' || window_end FROM sess_w_final WHERE k = 'a'}, '3 2024-05-01 12:41:50+00', 60),
	'once window_end + gap + lateness <= watermark it is final');
produce('nc_sess', [ sess_msg('a', '12:40:10'), sess_msg('b', '12:43:01') ]);
ok(wait_for($node, q{SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'sess' AND reason = 'late'}, '1', 60),
	'a row that would change a final session is late');
is($node->safe_psql('postgres', q{SELECT count || ' ' || window_end FROM sess_w_final WHERE k = 'a'}),
	'3 2024-05-01 12:41:50+00', 'the final row did not change');
$node->safe_psql('postgres', q{SELECT streamagg.drop_stream('sess', cascade => true)});

# ---------------------------------------------------------------- where partitions start

# One worker slot (streamagg.max_workers = 1): worker 1 of a two-worker
# stream cannot start until a slot frees.
create_topic('nc_late', 8);
produce('nc_late', [ map { { partition => $_ % 8, payload => qq({"x": $_}) } } 1 .. 8000 ]);
$node->safe_psql('postgres', qq{
	SELECT streamagg.create_stream('late', 'nc_late', '$brokers', 'x int', start_from => 'latest',
		parallelism => 2);
	SELECT streamagg.create_window('late_total', 'late', aggregates => 'count(*) AS n');});
ok(wait_for($node, q{SELECT count(*) FROM streamagg.offsets WHERE stream = 'late'}, '8', 60),
	'the first worker places every partition, its own and the others');
is($node->safe_psql('postgres', q{SELECT workers FROM streamagg.status WHERE stream = 'late'}),
	'1', 'only one of the two workers could start');
$node->append_conf('postgresql.conf', 'streamagg.max_workers = 4');
$node->restart;
ok(wait_for($node, q{SELECT workers FROM streamagg.status WHERE stream = 'late'}, '2', 60),
	'with a free slot the second worker starts');
produce('nc_late', [ map { { partition => $_ % 8, payload => qq({"x": $_}) } } 1 .. 80 ]);
ok(wait_for($node, q{SELECT coalesce(sum(n), 0) FROM late_total}, '80', 60),
	'it starts where start_from => latest placed its partitions: none of the 8000 old messages');

$node->stop;
done_testing();
