# Hostile messages: broken and malicious payloads interleaved with good ones.
#
# A JSON stream and a CSV stream read multi-partition topics on which good
# messages are mixed with every kind of bad input we could think of (broken
# JSON, wrong types, out-of-range numbers, bad timestamps, NUL bytes,
# invalid UTF-8, deep nesting, megabyte payloads, empty and null payloads).
# The truth is computed here, in Perl, and checked against:
#   - the window tables, row by row (good messages aggregated exactly once);
#   - streamagg.dead_letters (each bad message stored once, at its exact
#     partition and offset, byte-exact, with an error that says what is
#     wrong);
#   - the counters (aggregated + dead letters = produced);
#   - the worker (same process before and after, nothing crashed).
# Small streams then check event times no window can hold (infinity, the
# ends of the timestamp range), on_error => 'skip' and on_error => 'stop'.

use strict;
use warnings;

use Digest::MD5 qw(md5_hex);
use JSON::PP;
use POSIX qw(floor strftime);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use StreamAgg;

srand(20240603);

my $T0     = 1_700_000_000_000;    # 2023-11-14 22:13:20 UTC, epoch ms
my $MINUTE = 60_000;
my $WAIT   = 90;                   # seconds, for each wait_for

# json_agg output is UTF-8 bytes; decoding it without ->utf8 keeps every
# string as bytes, which is how the payloads below are written.
my $JSON = JSON::PP->new;

my $node = new_node('hostile', conf => ["streamagg.batch_time = '100ms'"]);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_streamagg');

# Topics first: the test broker auto-creates unknown topics on first use.
create_topic('hostile_json', 4);
create_topic('hostile_csv',  2);
create_topic('hostile_edge', 1);
create_topic('hostile_skip', 1);
create_topic('hostile_stop', 1);

# ------------------------------------------------------------ helpers

sub sql_json
{
	my ($sql) = @_;
	my $out = $node->safe_psql('postgres', $sql);
	return $JSON->decode($out eq '' ? 'null' : $out);
}

sub query1
{
	my ($sql) = @_;
	return $node->safe_psql('postgres', $sql);
}

# ISO 8601 text of epoch milliseconds, UTC.
sub iso_ms
{
	my ($ms, $sep) = @_;
	$sep //= 'T';
	my $s = floor($ms / 1000);
	return strftime("%Y-%m-%d${sep}%H:%M:%S", gmtime $s)
	  . sprintf('.%03d', $ms - $s * 1000);
}

# A JSON string literal; with $all_u every character is a \u escape
# (surrogate pairs above U+FFFF).  Input and output are UTF-8 bytes.
sub jstr
{
	my ($bytes, $all_u) = @_;
	if ($all_u)
	{
		my $chars = $bytes;
		utf8::decode($chars) or die 'jstr: not UTF-8';
		my $out = '';
		foreach my $cp (map { ord } split //, $chars)
		{
			if ($cp > 0xFFFF)
			{
				my $v = $cp - 0x10000;
				$out .= sprintf('\\u%04x\\u%04X',
					0xD800 + ($v >> 10), 0xDC00 + ($v & 0x3FF));
			}
			else
			{
				$out .= sprintf('\\u%04x', $cp);
			}
		}
		return qq("$out");
	}
	(my $s = $bytes) =~ s/(["\\])/\\$1/g;
	return qq("$s");
}

my %next_offset;    # topic => partition => next offset

# Give each message its partition (round robin unless set) and offset, in
# the order sa_produce sends them (per-partition order is kept), and
# produce them.
sub send_messages
{
	my ($topic, $nparts, $msgs) = @_;
	my $i = 0;
	foreach my $m (@$msgs)
	{
		$m->{partition} //= $i++ % $nparts;
		$m->{offset} = $next_offset{$topic}{ $m->{partition} }++;
	}
	my @rows = map {
		+{
			partition => $_->{partition},
			key       => $_->{key},
			ts        => $T0,
			payload   => $_->{payload}
		}
	} @$msgs;
	return produce($topic, \@rows, timeout => 120);
}

sub shuffle
{
	my @a = @_;
	for (my $i = $#a; $i > 0; $i--)
	{
		my $j = int rand($i + 1);
		@a[ $i, $j ] = @a[ $j, $i ];
	}
	return @a;
}

sub pick { return $_[ int rand @_ ] }

sub wait_messages
{
	my ($stream, $n) = @_;
	return wait_for($node,
		"SELECT coalesce(sum(messages), 0) FROM streamagg.offsets "
		  . "WHERE stream = '$stream'",
		$n, $WAIT);
}

sub worker_pid
{
	my ($stream) = @_;
	return query1("SELECT string_agg(pid::text, ',') FROM pg_stat_activity "
		  . "WHERE backend_type = 'pg_streamagg worker' "
		  . "AND application_name = 'pg_streamagg $stream/0'");
}

# ------------------------------------------------------------ truth

# Window rows as [window_start_ms, group..., count, sum] keyed by group.
sub truth_per_ip
{
	my (@good) = @_;
	my %acc;
	foreach my $g (@good)
	{
		my $ws = floor($g->{ts} / $MINUTE) * $MINUTE;
		my $k = join "\0", $ws, $g->{ip} // "\x{1}NULL";
		my $row = $acc{$k} //= [ $ws, $g->{ip}, 0, undef ];
		$row->[2]++;
		$row->[3] = ($row->[3] // 0) + $g->{bytes} if defined $g->{bytes};
	}
	return [ map { [ @$_[ 0 .. 2 ], defined $_->[3] ? "$_->[3]" : undef ] }
		  values %acc ];
}

sub sort_rows
{
	my ($rows) = @_;
	return [
		sort {
			my $c = 0;
			for my $i (0 .. $#$a)
			{
				my ($x, $y) = ($a->[$i] // "\x{1}", $b->[$i] // "\x{1}");
				$c = $x cmp $y and last;
			}
			$c
		} @$rows
	];
}

# ------------------------------------------------------------ JSON messages

my @IPS = (
	'10.0.0.1', '10.0.0.2', '10.0.0.3', '192.168.1.7',
	"caf\xc3\xa9", "smile\xf0\x9f\x98\x80");
my @KEYS = ('k0', 'k1', 'k2', undef, '');

# A good JSON message in one of several shapes; the truth rides along.
sub good_json
{
	my ($variant) = @_;
	my $ip     = pick(@IPS);
	my $bytes  = int rand 100_000;
	my $ts     = $T0 + int rand(10 * $MINUTE);
	my $region = undef;
	my $p;
	my $v = $variant % 10;
	if ($v == 0)
	{
		$p = sprintf('{"ip":%s,"status":200,"bytes":%d,"ts":%d}',
			jstr($ip), $bytes, $ts);
	}
	elsif ($v == 1)
	{
		$region = pick('eu', 'us');
		$p = sprintf(
			'{"ip":%s,"status":201,"bytes":%d,"ts":"%s","geo":{"city":"x","region":"%s"}}',
			jstr($ip), $bytes, iso_ms($ts) . 'Z', $region);
	}
	elsif ($v == 2)
	{
		$region = 'ap';
		$p = sprintf(
			'{"ts":%d,"extra":{"a":[1,2.5e-3,{"b":[true,false,null,"}"]}],"deep":%s},'
			  . '"geo":{"region":"ap","region2":{"region":"no"}},"bytes":%d,"ip":%s,"status":404}',
			$ts, ('[' x 200) . (']' x 200), $bytes, jstr($ip));
	}
	elsif ($v == 3)
	{
		$p = sprintf('{"ip":%s,"status":200,"bytes":%d,"ts":%d}',
			jstr($ip, 1), $bytes, $ts);
	}
	elsif ($v == 4)
	{
		$p = sprintf('{"ip":%s,"status":"302","bytes":"%d","ts":%d}',
			jstr($ip), $bytes, $ts);
	}
	elsif ($v == 5)
	{
		$p = sprintf(
			qq(\n\t{ "ip" : %s , "status" : null , "bytes" : %d ,\r\n "ts" : %d }\r\n ),
			jstr($ip), $bytes, $ts);
	}
	elsif ($v == 6)
	{
		$p = sprintf('{"ip":%s,"bytes":null,"ts":%d}', jstr($ip), $ts);
		$bytes = undef;
	}
	elsif ($v == 7)
	{
		$p = sprintf('{"ip":%s,"status":200,"bytes":%d,"ts":%.12e}',
			jstr($ip), $bytes, $ts);
	}
	elsif ($v == 8)
	{
		$p = sprintf('{"ip":%s,"status":500,"bytes":%d,"ts":%d.25}',
			jstr($ip), $bytes, $ts);
	}
	else
	{
		$p = sprintf(
			'{"note":"tab\\there \\"q\\" \\u00e9 \\/","geo":"eu","ip":%s,"status":200,"bytes":%d,"ts":%d}',
			jstr($ip), $bytes, $ts);
	}
	return {
		payload => $p,
		key     => pick(@KEYS),
		good    => { ip => $ip, bytes => $bytes, ts => $ts, region => $region },
	};
}

my $TS = $T0 + 12_345;
my $OK = qq("ip":"10.0.0.1","status":200,"bytes":5,"ts":$TS);

# [label, payload, error pattern, column the error is about]
my @bad_json = (
	[ 'truncated',         qq({$OK,"x":[1,2),              qr/invalid JSON/ ],
	[ 'truncated in key',  qq({"ip":"10.0),                qr/invalid JSON.*unterminated/ ],
	[ 'trailing garbage',  qq({$OK} xyz),                  qr/invalid JSON.*after the object/ ],
	[ 'two objects',       qq({$OK}{$OK}),                 qr/invalid JSON.*after the object/ ],
	[ 'bare words',        'hello world',                  qr/not a JSON object/ ],
	[ 'unquoted keys',     qq({ip:"10.0.0.1","ts":$TS}),   qr/invalid JSON.*key/ ],
	[ 'single quotes',     qq({'ip':'10.0.0.1'}),          qr/invalid JSON/ ],
	[ 'trailing comma',    qq({$OK,}),                     qr/invalid JSON/ ],
	[ 'missing comma',     qq({"ip":"a" "ts":$TS}),        qr/invalid JSON/ ],
	[ 'raw newline in string', qq({"ip":"a\nb","ts":$TS}), qr/invalid JSON.*control character/ ],
	[ 'bad escape',        qq({"ip":"a\\qb","ts":$TS}),    qr/invalid JSON.*escape/ ],
	[ 'lone surrogate',    qq({"ip":"a\\ud800b","ts":$TS}), qr/surrogate/ ],
	[ 'NaN',               qq({$OK,"x":NaN}),              qr/invalid JSON/ ],
	[ 'leading zero',      qq({"ip":"a","bytes":012,"ts":$TS}), qr/invalid JSON/ ],
	[ 'binary garbage',    "\xde\xad\xbe\xef\x01\x02\x7f\xfe",    qr/UTF-8/ ],
	[ 'binary with NUL',   "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", qr/NUL/ ],
	[ 'empty payload',     '',                             qr/empty/ ],
	[ 'null payload',      undef,                          qr/null/ ],
	[ 'status "abc"',      qq({"ip":"a","status":"abc","ts":$TS}),  qr/"status".*integer/ , 'status' ],
	[ 'bytes 1.5',         qq({"ip":"a","bytes":1.5,"ts":$TS}),     qr/"bytes".*bigint/ , 'bytes' ],
	[ 'bytes "12x"',       qq({"ip":"a","bytes":"12x","ts":$TS}),   qr/"bytes".*bigint/ , 'bytes' ],
	[ 'bytes true',        qq({"ip":"a","bytes":true,"ts":$TS}),    qr/"bytes".*bigint/ , 'bytes' ],
	[ 'bytes object',      qq({"ip":"a","bytes":{"n":1},"ts":$TS}), qr/"bytes".*bigint/ , 'bytes' ],
	[ 'status 99999999999', qq({"ip":"a","status":99999999999,"ts":$TS}), qr/"status".*out of range/ , 'status' ],
	[ 'bytes 1e400',       qq({"ip":"a","bytes":1e400,"ts":$TS}),   qr/"bytes".*bigint/ , 'bytes' ],
	[ 'bytes 2^63',        qq({"ip":"a","bytes":9223372036854775808,"ts":$TS}), qr/"bytes".*out of range/ , 'bytes' ],
	[ 'ts "yesterday-ish"', qq({"ip":"a","ts":"yesterday-ish"}),    qr/"ts".*timestamp/ , 'ts' ],
	[ 'ts 1e30',           qq({"ip":"a","ts":1e30}),       qr/timestamp out of range: .*epoch milliseconds/, 'ts' ],
	[ 'ts 1e400',          qq({"ip":"a","ts":1e400}),      qr/timestamp out of range: .*epoch milliseconds/, 'ts' ],
	[ 'ts -1e30',          qq({"ip":"a","ts":-1e30}),      qr/timestamp out of range: .*epoch milliseconds/, 'ts' ],
	[ 'ts null',           qq({"ip":"a","bytes":1,"ts":null}), qr/"ts".*null/ , 'ts' ],
	[ 'ts missing',        qq({"ip":"a","bytes":1}),       qr/"ts".*null/ , 'ts' ],
	[ 'ts object',         qq({"ip":"a","ts":{"ms":$TS}}), qr/"ts".*timestamp/ , 'ts' ],
	[ 'raw NUL',           qq({"ip":"10.0\x00.0.1","ts":$TS}), qr/NUL byte at byte 11\b/ ],
	[ 'NUL at end',        qq({$OK}\x00),                  qr/NUL/ ],
	[ '\u0000 in a read key', qq({"ip":"a\\u0000b","ts":$TS}), qr/\\u0000/ ],
	[ 'invalid UTF-8 (bad continuation)', qq({"ip":"\xc3\x28","ts":$TS}), qr/UTF-8/ ],
	[ 'invalid UTF-8 (0xff)',       qq({"ip":"a\xffb","ts":$TS}),      qr/UTF-8/ ],
	[ 'invalid UTF-8 (overlong)',   qq({"ip":"\xc0\xaf","ts":$TS}),    qr/UTF-8/ ],
	[ 'invalid UTF-8 (surrogate)',  qq({"ip":"\xed\xa0\x80","ts":$TS}), qr/UTF-8/ ],
	[ 'invalid UTF-8 (cut at end)', qq({"ip":"a","ts":$TS}\xe2\x82),   qr/UTF-8/ ],
	[ 'invalid UTF-8 in unread key', qq({$OK,"junk":"\xfe"}),          qr/UTF-8/ ],
	[ 'deep [ in unread key',
		qq({$OK,"deep":) . ('[' x 100_000) . (']' x 100_000) . '}',
		qr/nested deeper/ ],
	[ 'deep { in unread key',
		qq({$OK,"deep":) . ('{"a":' x 100_000) . ('}' x 100_000) . '}',
		qr/nested deeper/ ],
	[ 'deep [ in read key',
		qq({"ts":$TS,"ip":) . ('[' x 100_000) . (']' x 100_000) . '}',
		qr/nested deeper/ ],
	[ 'deep { in read path',
		qq({"ts":$TS,"geo":) . ('{"region":' x 100_000) . '1' . ('}' x 100_000) . '}',
		qr/nested deeper/ ],
	[ 'deep [ unclosed', ('[' x 100_000), qr/not a JSON object/ ],
	[ 'deep { unclosed', '{"a":' x 100_000, qr/nested deeper/ ],
	[ 'top-level array',  qq([{$OK}]),                   qr/not a JSON object/ ],
	[ 'top-level number', '42',                          qr/not a JSON object/ ],
	[ 'top-level string', qq("{$OK}"),                   qr/not a JSON object/ ],
	[ 'top-level null',   'null',                        qr/not a JSON object/ ],
	[ 'whitespace only',  " \n\t ",                      qr/not a JSON object/ ],
	[ '1 MB broken',
		qq({$OK,"pad":") . ('x' x 1_000_000),
		qr/invalid JSON.*unterminated string/ ],
);

# Good messages that look odd.
my $big_ts = $T0 + 3 * $MINUTE + 1;
my @odd_good = (
	{
		label   => '1 MB valid message',
		payload => qq({"ip":"10.0.0.1","status":200,"bytes":777,"ts":$big_ts,"pad":")
		  . ('y' x 1_000_000) . '"}',
		key  => 'big',
		good => { ip => '10.0.0.1', bytes => 777, ts => $big_ts },
	},
	{
		label   => 'invalid UTF-8 key',
		payload => qq({"ip":"10.0.0.2","status":200,"bytes":31,"ts":$big_ts}),
		key     => "\xff\xfe\x80k",
		good    => { ip => '10.0.0.2', bytes => 31, ts => $big_ts },
	},
	{
		label   => 'key with a NUL byte',
		payload => qq({"ip":"10.0.0.2","status":200,"bytes":37,"ts":$big_ts}),
		key     => "k\x00k",
		good    => { ip => '10.0.0.2', bytes => 37, ts => $big_ts },
	},
	{
		label   => 'ip missing (NULL group)',
		payload => qq({"status":200,"bytes":41,"ts":$big_ts}),
		key     => 'k0',
		good    => { ip => undef, bytes => 41, ts => $big_ts },
	},
	{
		label   => 'empty ip',
		payload => qq({"ip":"","bytes":43,"ts":$big_ts}),
		key     => 'k0',
		good    => { ip => '', bytes => 43, ts => $big_ts },
	},
	{
		label   => 'escaped key name',
		payload => qq({"\\u0069p":"10.0.0.3","bytes":53,"ts":$big_ts}),
		key     => 'k1',
		good    => { ip => '10.0.0.3', bytes => 53, ts => $big_ts },
	},
	{
		label   => 'escaped backslash before u0000',
		payload => qq({"ip":"back\\\\u0000slash","bytes":59,"ts":$big_ts}),
		key     => 'k1',
		good    => { ip => 'back\\u0000slash', bytes => 59, ts => $big_ts },
	},
	{
		label   => 'object into a text column',
		payload => qq({"ip":{"v":[1,"x"]},"bytes":47,"ts":$big_ts}),
		key     => 'k1',
		good    => { ip => '{"v":[1,"x"]}', bytes => 47, ts => $big_ts },
	},
);

# ------------------------------------------------------------ the JSON stream

$node->safe_psql(
	'postgres', q{
BEGIN;
SELECT streamagg.create_stream(
    name => 'hj', topic => 'hostile_json', brokers => '} . brokers() . q{',
    columns => 'ip text, status int, bytes bigint, ts timestamptz, '
               'region text PATH ''$.geo.region''',
    format => 'json', event_time => 'ts');
SELECT streamagg.create_window(
    name => 'hj_per_ip', stream => 'hj', size => '1 minute',
    group_by => 'ip', aggregates => 'count(*) AS hits, sum(bytes) AS bytes',
    allowed_lateness => '1 day');
SELECT streamagg.create_window(
    name => 'hj_total', stream => 'hj',
    aggregates => 'count(*) AS n, sum(bytes) AS bytes');
SELECT streamagg.create_window(
    name => 'hj_by_key', stream => 'hj',
    group_by => 'kafka_key, region', aggregates => 'count(*) AS n');
COMMIT;
});

# Phase 1: good messages only, so that the worker is up and known.
my @json_msgs = map { good_json($_) } 0 .. 39;
send_messages('hostile_json', 4, \@json_msgs);
ok(wait_messages('hj', scalar @json_msgs), 'JSON stream: first good messages consumed');
my $hj_pid = worker_pid('hj');
like($hj_pid, qr/^\d+$/, 'JSON stream: one worker');

# Phase 2: the hostile mix.
my @phase2 = (
	(map { good_json($_) } 40 .. 439),
	(map { +{ %$_ } } @odd_good),
	(map { +{ label => $bad_json[$_][0], payload => $bad_json[$_][1],
			error => $bad_json[$_][2], column => $bad_json[$_][3],
			key => "bad-$_" } } 0 .. $#bad_json),
);
@phase2 = shuffle(@phase2);
send_messages('hostile_json', 4, \@phase2);
push @json_msgs, @phase2;

my @json_good = grep { $_->{good} } @json_msgs;
my @json_bad  = grep { !$_->{good} } @json_msgs;
my $n_json    = scalar @json_msgs;

ok(wait_messages('hj', $n_json), "JSON stream: all $n_json messages consumed");

is(worker_pid('hj'), $hj_pid, 'JSON stream: same worker process before and after the hostile messages');
is(query1("SELECT state || ' / ' || coalesce(last_error, '-') FROM streamagg.status WHERE stream = 'hj'"),
	'running / -', 'JSON stream: running, no error');

# -- window tables, row by row

my $got = sql_json(q{
SELECT json_agg(json_build_array(
         (extract(epoch FROM window_start) * 1000)::bigint, ip, hits, bytes::text))
FROM hj_per_ip});
is_deeply(sort_rows($got), sort_rows(truth_per_ip(map { $_->{good} } @json_good)),
	'JSON stream: per-ip 1-minute windows equal the truth');

is(query1(q{SELECT count(*) FROM hj_per_ip
            WHERE window_end <> window_start + interval '1 minute'}),
	'0', 'JSON stream: every window is one minute long');

my $sum = 0;
$sum += $_->{good}{bytes} // 0 for @json_good;
is(query1('SELECT n || \' \' || bytes FROM hj_total'),
	scalar(@json_good) . " $sum", 'JSON stream: total count(*) and sum(bytes) equal the truth');

my %by_key;
foreach my $m (@json_good)
{
	my $k = $m->{key};
	# the good keys are ASCII but for the two hostile ones
	$k = undef if defined $k && $k =~ /[\x00\x80-\xff]/;
	my $r = $m->{good}{region};
	my $kk = join "\0", $k // "\x{1}", $r // "\x{1}";
	$by_key{$kk} //= [ $k, $r, 0 ];
	$by_key{$kk}[2]++;
}
$got = sql_json('SELECT json_agg(json_build_array(kafka_key, region, n)) FROM hj_by_key');
is_deeply(sort_rows($got), sort_rows([ values %by_key ]),
	'JSON stream: counts per kafka_key and PATH column equal the truth (invalid keys are NULL)');

# -- dead letters

my $dl = sql_json(q{
SELECT json_agg(json_build_object(
         'partition', partition, 'offset', "offset", 'window', window_name,
         'reason', reason, 'error', error, 'key', encode(key, 'hex'),
         'hex', CASE WHEN length(payload) <= 4096 THEN encode(payload, 'hex') END,
         'md5', md5(payload), 'len', length(payload), 'null', payload IS NULL)
       ORDER BY partition, "offset")
FROM streamagg.dead_letters WHERE stream = 'hj'}) // [];

is(scalar @$dl, scalar @json_bad,
	'JSON stream: one dead letter per bad message (' . scalar(@json_bad) . ')');

my %dl_at = map { ("$_->{partition}/$_->{offset}" => $_) } @$dl;
is(scalar keys %dl_at, scalar @$dl, 'JSON stream: no message is a dead letter twice');

my @expect_at = sort map { "$_->{partition}/$_->{offset}" } @json_bad;
is_deeply([ sort keys %dl_at ], \@expect_at,
	'JSON stream: dead letters are exactly the bad messages, at their partition and offset');

foreach my $m (@json_bad)
{
	my $d = $dl_at{"$m->{partition}/$m->{offset}"};
	my $what = "JSON dead letter '$m->{label}'";
	if (!$d)
	{
		fail("$what is stored");
		next;
	}
	my $p = $m->{payload};
	my %want = (
		reason => 'decode',
		window => undef,
		key    => unpack('H*', $m->{key}),
		null   => defined $p ? 0 : 1,
		len    => defined $p ? length $p : undef,
		md5    => defined $p ? md5_hex($p) : undef,
		hex    => defined $p && length $p <= 4096 ? unpack('H*', $p) : undef,
	);
	my %have = map { ($_ => $d->{$_}) } keys %want;
	$have{null} = $d->{null} ? 1 : 0;
	is_deeply(\%have, \%want, "$what: reason, key and payload byte-exact");
	like($d->{error} // '', $m->{error}, "$what: error says what is wrong")
	  or diag "payload starts with: " . escape_bytes(substr($p // '', 0, 80));
	like($d->{error} // '', qr/\bcolumn "\Q$m->{column}\E"/, "$what: error names column $m->{column}")
	  if defined $m->{column};
}

# -- accounting

my $bad_n = scalar @json_bad;
is( query1(q{SELECT messages || ' ' || dead_letters FROM streamagg.status WHERE stream = 'hj'}),
	"$n_json $bad_n",
	'JSON stream: status counts every message once and every bad one as a dead letter');
my %per_part;
$per_part{ $_->{partition} }++ for @json_msgs;
is( query1(q{SELECT string_agg(partition || ':' || next_offset || ':' || messages, ' ' ORDER BY partition)
             FROM streamagg.offsets WHERE stream = 'hj'}),
	join(' ', map { "$_:$per_part{$_}:$per_part{$_}" } sort keys %per_part),
	'JSON stream: each partition committed up to its last offset');
is(query1(q{SELECT count(*) FROM streamagg.dead_letters WHERE reason <> 'decode'}),
	'0', 'no late or write dead letters');

# ------------------------------------------------------------ the CSV stream

$node->safe_psql(
	'postgres', q{
BEGIN;
SELECT streamagg.create_stream(
    name => 'hc', topic => 'hostile_csv', brokers => '} . brokers() . q{',
    columns => 'ip text, status int, bytes bigint, ts timestamptz',
    format => 'csv', event_time => 'ts',
    options => '{"streamagg.csv_delimiter": ";"}');
SELECT streamagg.create_window(
    name => 'hc_per_ip', stream => 'hc', size => '1 minute',
    group_by => 'ip', aggregates => 'count(*) AS hits, sum(bytes) AS bytes',
    allowed_lateness => '1 day');
SELECT streamagg.create_window(
    name => 'hc_total', stream => 'hc', aggregates => 'count(*) AS n');
COMMIT;
});

sub good_csv
{
	my ($variant) = @_;
	my $ip    = pick('10.0.0.1', '10.0.0.2', "caf\xc3\xa9");
	my $bytes = int rand 100_000;
	my $ts    = $T0 + int rand(5 * $MINUTE);
	my $tstxt = iso_ms($ts, ' ') . '+00';
	my $v     = $variant % 8;
	my $p;
	if    ($v == 0) { $p = "$ip;200;$bytes;$tstxt"; }
	elsif ($v == 1) { $p = qq("$ip";"200";$bytes;"$tstxt"); }
	elsif ($v == 2) { $ip = '10.0.0.9;x'; $p = qq("$ip";200;$bytes;$tstxt\n); }
	elsif ($v == 3) { $ip = 'say "hi"'; $p = qq("say ""hi""";200;$bytes;$tstxt\r\n); }
	elsif ($v == 4) { $p = "$ip;;;$tstxt"; $bytes = undef; }
	elsif ($v == 5) { $ip = ''; $p = qq("";200;$bytes;$tstxt); }
	elsif ($v == 6) { $ip = undef; $p = ";200;$bytes;$tstxt"; }
	else            { $ip = "multi\nline"; $p = qq("multi\nline";200;$bytes;$tstxt); }
	return {
		payload => $p,
		key     => pick(@KEYS),
		good    => { ip => $ip, bytes => $bytes, ts => $ts },
	};
}

my $CTS = iso_ms($T0 + 5000, ' ') . '+00';
my @bad_csv = (
	[ 'three fields',       "10.0.0.1;200;5",                   qr/expected 4 fields, found 3/ ],
	[ 'five fields',        "10.0.0.1;200;5;$CTS;extra",        qr/expected 4 fields, found more/ ],
	[ 'newline only',       "\n",                               qr/expected 4 fields, found 1/ ],
	[ 'comma delimited',    "10.0.0.1,200,5,$CTS",              qr/expected 4 fields/ ],
	[ 'unterminated quote', qq("10.0.0.1;200;5;$CTS),           qr/unterminated quoted field 1/ ],
	[ 'unterminated quote at end', qq(10.0.0.1;200;5;"$CTS),    qr/unterminated quoted field 4/ ],
	[ 'text after a quote', qq("10.0.0.1"x;200;5;$CTS),         qr/after quoted field 1/ ],
	[ 'bad int',            "10.0.0.1;abc;5;$CTS",              qr/"status".*integer/ , 'status' ],
	[ 'bad bigint',         "10.0.0.1;200;12x;$CTS",            qr/"bytes".*bigint/ , 'bytes' ],
	[ 'int out of range',   "10.0.0.1;99999999999;5;$CTS",      qr/"status".*out of range/ , 'status' ],
	[ 'bad timestamp',      "10.0.0.1;200;5;yesterday-ish",     qr/"ts".*timestamp/ , 'ts' ],
	[ 'epoch ms as text',   "10.0.0.1;200;5;1700000000000",     qr/"ts".*date\/time field value out of range/ , 'ts' ],
	[ 'empty timestamp',    "10.0.0.1;200;5;",                  qr/"ts".*null/ , 'ts' ],
	[ 'invalid UTF-8',      "10.0.0.\xff;200;5;$CTS",           qr/UTF-8/ ],
	[ 'NUL byte',           "10.0\x00.0.1;200;5;$CTS",          qr/NUL/ ],
	[ 'empty payload',      '',                                 qr/empty/ ],
	[ 'null payload',       undef,                              qr/null/ ],
	[ 'binary garbage',     "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", qr/NUL|UTF-8/ ],
);

my @csv_msgs = shuffle(
	(map { good_csv($_) } 0 .. 119),
	(map { +{ label => $bad_csv[$_][0], payload => $bad_csv[$_][1],
			error => $bad_csv[$_][2], column => $bad_csv[$_][3],
			key => "bad-$_" } } 0 .. $#bad_csv));
send_messages('hostile_csv', 2, \@csv_msgs);
my @csv_good = grep { $_->{good} } @csv_msgs;
my @csv_bad  = grep { !$_->{good} } @csv_msgs;
my $n_csv    = scalar @csv_msgs;

ok(wait_messages('hc', $n_csv), "CSV stream: all $n_csv messages consumed");
my $hc_pid = worker_pid('hc');
like($hc_pid, qr/^\d+$/, 'CSV stream: one worker, still running');

$got = sql_json(q{
SELECT json_agg(json_build_array(
         (extract(epoch FROM window_start) * 1000)::bigint, ip, hits, bytes::text))
FROM hc_per_ip});
is_deeply(sort_rows($got), sort_rows(truth_per_ip(map { $_->{good} } @csv_good)),
	'CSV stream: per-ip 1-minute windows equal the truth');
is(query1('SELECT n FROM hc_total'), scalar(@csv_good), 'CSV stream: total count(*) equals the truth');

$dl = sql_json(q{
SELECT json_agg(json_build_object(
         'partition', partition, 'offset', "offset", 'window', window_name,
         'reason', reason, 'error', error, 'key', encode(key, 'hex'),
         'hex', encode(payload, 'hex'), 'null', payload IS NULL)
       ORDER BY partition, "offset")
FROM streamagg.dead_letters WHERE stream = 'hc'}) // [];
%dl_at = map { ("$_->{partition}/$_->{offset}" => $_) } @$dl;
is_deeply(
	[ sort map { "$_->{partition}/$_->{offset}" } @$dl ],
	[ sort map { "$_->{partition}/$_->{offset}" } @csv_bad ],
	'CSV stream: dead letters are exactly the bad messages, at their partition and offset');
foreach my $m (@csv_bad)
{
	my $d = $dl_at{"$m->{partition}/$m->{offset}"} or next;
	my $p = $m->{payload};
	my $what = "CSV dead letter '$m->{label}'";
	is_deeply(
		[ $d->{reason}, $d->{window}, $d->{key}, $d->{hex}, $d->{null} ? 1 : 0 ],
		[ 'decode', undef, unpack('H*', $m->{key}), defined $p ? unpack('H*', $p) : undef,
			defined $p ? 0 : 1 ],
		"$what: reason, key and payload byte-exact");
	like($d->{error} // '', $m->{error}, "$what: error says what is wrong");
	like($d->{error} // '', qr/\bcolumn "\Q$m->{column}\E"/, "$what: error names column $m->{column}")
	  if defined $m->{column};
}
is( query1(q{SELECT messages || ' ' || dead_letters || ' ' || state
             FROM streamagg.status WHERE stream = 'hc'}),
	"$n_csv " . scalar(@csv_bad) . ' running',
	'CSV stream: messages and dead letters add up, stream running');

# ------------------------------------------------------------ edge event times

# Event times that timestamptz accepts but no window can hold (infinity),
# and the ends of its range, where a window's start or end would fall
# outside it.  Each must end up aggregated or a dead letter, and the
# window table must stay readable.
$node->safe_psql(
	'postgres', q{
BEGIN;
SELECT streamagg.create_stream(
    name => 'he', topic => 'hostile_edge', brokers => '} . brokers() . q{',
    columns => 'ip text, bytes bigint, ts timestamptz',
    format => 'json', event_time => 'ts');
SELECT streamagg.create_window(
    name => 'he_per_min', stream => 'he', size => '1 minute',
    group_by => 'ip', aggregates => 'count(*) AS hits, sum(bytes) AS bytes',
    allowed_lateness => '1 day');
SELECT streamagg.create_window(
    name => 'he_total', stream => 'he', aggregates => 'count(*) AS n');
COMMIT;
});
my @edge_msgs = (
	{ payload => qq({"ip":"a","bytes":1,"ts":$TS}) },
	{ payload => qq({"ip":"inf","bytes":2,"ts":"infinity"}),   label => 'ts "infinity"' },
	{ payload => qq({"ip":"-inf","bytes":4,"ts":"-infinity"}), label => 'ts "-infinity"' },
	{ payload => qq({"ip":"max","bytes":8,"ts":"294276-12-31 23:59:30+00"}), edge => 1 },
	{ payload => qq({"ip":"min","bytes":16,"ts":"4714-11-24 00:00:30+00 BC"}), edge => 1 },
	{ payload => qq({"ip":"maxms","bytes":32,"ts":9224318015950000}), edge => 1 },
	{ payload => qq({"ip":"a","bytes":64,"ts":$TS}) },
);
send_messages('hostile_edge', 1, \@edge_msgs);
ok(wait_messages('he', scalar @edge_msgs), 'edge stream: all messages consumed');

# psql output, or the error text: these queries fail on a corrupt table
sub try_query
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql);
	return $ret == 0 ? $out : "ERROR: $err";
}

my $edge_dl = sql_json(q{
SELECT json_object_agg("offset" || coalesce('/' || window_name, ''), error)
FROM streamagg.dead_letters WHERE stream = 'he'}) // {};
foreach my $o (1, 2)
{
	like($edge_dl->{$o} // '', qr/"ts".*(infinit|finite|out of range)/i,
		"edge stream: $edge_msgs[$o]{label} is a dead letter that says so");
}
note 'edge stream dead letters: ' . join('; ', map { "$_ => $edge_dl->{$_}" } sort keys %$edge_dl);
like(try_query(q{SELECT count(*) FROM (SELECT window_start::text, window_end::text FROM he_per_min) s}),
	qr/^\d+$/, 'edge stream: the window table can be read');
is( try_query(q{SELECT ip FROM he_per_min
                WHERE NOT (isfinite(window_start) AND isfinite(window_end)
                           AND window_start BETWEEN '4714-11-24 00:00:00+00 BC' AND '294276-12-31 23:59:59+00'
                           AND window_end BETWEEN '4714-11-24 00:00:00+00 BC' AND '294276-12-31 23:59:59+00')
                   OR window_end <> window_start + interval '1 minute'
                   OR extract(epoch FROM window_start)::numeric % 60 <> 0
                ORDER BY ip}),
	'', 'edge stream: every stored window is in range, aligned and one minute long');
foreach my $o (grep { $edge_msgs[$_]{edge} } 0 .. $#edge_msgs)
{
	my ($ip) = $edge_msgs[$o]{payload} =~ /"ip":"(\w+)"/;
	my $in_window = query1("SELECT count(*) FROM he_per_min WHERE ip = '$ip'");
	my $dead = exists $edge_dl->{"$o/he_per_min"} || exists $edge_dl->{$o};
	ok(($in_window eq '1') != $dead,
		"edge stream: ts of '$ip' is either in one window or a dead letter for it")
	  or diag "in windows: $in_window; dead letters: "
	  . join(', ', map { "$_ => $edge_dl->{$_}" } sort keys %$edge_dl);
}
is(query1(q{SELECT sum(hits) || ' ' || sum(bytes) FROM he_per_min WHERE ip = 'a'}), '2 65',
	'edge stream: the ordinary messages around them are aggregated');
is(query1(q{SELECT state || ' / ' || coalesce(last_error, '-') FROM streamagg.status WHERE stream = 'he'}),
	'running / -', 'edge stream: running, no error');

# ------------------------------------------------------------ on_error => 'skip'

$node->safe_psql(
	'postgres', q{
BEGIN;
SELECT streamagg.create_stream(
    name => 'hs', topic => 'hostile_skip', brokers => '} . brokers() . q{',
    columns => 'ip text, bytes bigint, ts timestamptz',
    format => 'json', event_time => 'ts', on_error => 'skip');
SELECT streamagg.create_window(
    name => 'hs_total', stream => 'hs', aggregates => 'count(*) AS n, sum(bytes) AS bytes');
COMMIT;
});
my @skip_msgs = (
	{ payload => qq({"ip":"a","bytes":1,"ts":$TS}) },
	{ payload => qq({"ip":"a","bytes":) },
	{ payload => qq({"ip":"b","bytes":2,"ts":$TS}) },
	{ payload => undef },
	{ payload => qq({"ip":"c","bytes":"12x","ts":$TS}) },
	{ payload => qq({"ip":"c","bytes":4,"ts":$TS}) },
);
send_messages('hostile_skip', 1, \@skip_msgs);
ok(wait_messages('hs', 6), 'skip stream: all 6 messages consumed');
is(query1('SELECT n || \' \' || bytes FROM hs_total'), '3 7',
	'skip stream: the good messages are aggregated');
is(query1(q{SELECT messages || ' ' || dead_letters || ' ' || state
            FROM streamagg.status WHERE stream = 'hs'}),
	'6 3 running', 'skip stream: bad messages are counted, the stream keeps running');
is(query1(q{SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'hs'}),
	'0', 'skip stream: bad messages are not stored');

# ------------------------------------------------------------ on_error => 'stop'

$node->safe_psql(
	'postgres', q{
BEGIN;
SELECT streamagg.create_stream(
    name => 'hstop', topic => 'hostile_stop', brokers => '} . brokers() . q{',
    columns => 'ip text, bytes bigint, ts timestamptz',
    format => 'json', event_time => 'ts', on_error => 'stop');
SELECT streamagg.create_window(
    name => 'hstop_total', stream => 'hstop',
    aggregates => 'count(*) AS n, sum(bytes) AS bytes');
COMMIT;
});
my @stop_msgs = (
	{ payload => qq({"ip":"a","bytes":1,"ts":$TS}) },
	{ payload => qq({"ip":"a","bytes":2,"ts":$TS}) },
	{ payload => qq({"ip":"a","bytes":4,"ts":$TS}) },
	{ payload => qq({"ip":"a","bytes":"12x","ts":$TS}) },    # offset 3
	{ payload => qq({"ip":"a","bytes":8,"ts":$TS}) },
	{ payload => qq({"ip":"a","bytes":16,"ts":$TS}) },
);
send_messages('hostile_stop', 1, \@stop_msgs);

my $stopped = q{SELECT state = 'stopped' AND last_error IS NOT NULL
                FROM streamagg.streams WHERE name = 'hstop'};
ok(wait_for($node, $stopped, 't', $WAIT), 'stop stream: stopped at the bad message');
my $last_error = query1(q{SELECT last_error FROM streamagg.streams WHERE name = 'hstop'});
like($last_error, qr/partition 0 offset 3\b/, 'stop stream: last_error names the partition and offset');
like($last_error, qr/"bytes".*bigint.*12x/, 'stop stream: last_error says what is wrong');
is(query1(q{SELECT state FROM streamagg.status WHERE stream = 'hstop'}), 'stopped',
	'stop stream: status says stopped');
is(query1('SELECT n || \' \' || bytes FROM hstop_total'), '3 7',
	'stop stream: the messages before the bad one are aggregated, none after');
is(query1(q{SELECT next_offset || ' ' || messages FROM streamagg.offsets WHERE stream = 'hstop'}),
	'3 3', 'stop stream: committed up to the bad message');
is(query1(q{SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'hstop'}), '0',
	'stop stream: no dead letter');
ok(wait_for($node, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_streamagg hstop/0'",
		'0', $WAIT),
	'stop stream: its worker has exited');

query1(q{SELECT streamagg.resume('hstop')});
ok(wait_for($node, $stopped, 't', $WAIT), 'stop stream: after resume it stops again');
is(query1(q{SELECT last_error FROM streamagg.streams WHERE name = 'hstop'}), $last_error,
	'stop stream: at the same message, with the same error');
is(query1('SELECT n || \' \' || bytes FROM hstop_total'), '3 7',
	'stop stream: still nothing after the bad message aggregated');

# Skip past it: start again at the end of the partition.
query1(q{SELECT streamagg.reset_offsets('hstop', "to" => 'latest', replay => true); SELECT streamagg.resume('hstop')});
ok(wait_for($node, q{SELECT next_offset FROM streamagg.offsets WHERE stream = 'hstop'}, '6', $WAIT),
	'stop stream: resumed at the end of the partition');
send_messages('hostile_stop', 1,
	[ { payload => qq({"ip":"a","bytes":32,"ts":$TS}) }, { payload => qq({"ip":"a","bytes":64,"ts":$TS}) } ]);
ok(wait_for($node, 'SELECT n || \' \' || bytes FROM hstop_total', '5 103', $WAIT),
	'stop stream: new messages are aggregated after the reset');
is(query1(q{SELECT state || ' / ' || coalesce(last_error, '-') FROM streamagg.status WHERE stream = 'hstop'}),
	'running / -', 'stop stream: running again, error cleared');

# ------------------------------------------------------------ nothing crashed

is(worker_pid('hj'), $hj_pid, 'JSON stream: still the same worker at the end');
is(worker_pid('hc'), $hc_pid, 'CSV stream: still the same worker at the end');
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal|PANIC|TRAP:/, 'no process crashed');
unlike($log, qr/background worker "pg_streamagg worker" \(PID \d+\) exited with exit code [1-9]/,
	'no worker exited with an error');

$node->stop;
done_testing();
