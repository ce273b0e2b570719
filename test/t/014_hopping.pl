# Hopping windows kept as slices (src/slices.c): with parallelism 1 a
# hopping window writes one row per slide and group, and materializes each
# window instance once, when it closes.  Checked against the exact GROUP BY
# that PostgreSQL computes from the produced messages themselves:
#
#   - rows in order and out of order, some late for every window of the
#     row, some late for only the older ones (exact 'late' dead letters);
#   - a worker killed with SIGKILL in the middle (exactly once);
#   - the view <name>, <name>_final (= the closed windows) and the
#     notifications on channel streamagg_closed;
#   - reset_offsets rebuilds the same results from scratch;
#   - drop_window and drop_stream leave nothing behind;
#   - a 1000-hop window: exact, with the slices it keeps bounded;
#   - parallelism 2 keeps one row per window instance (not sliced).
#
# The truth: a row with event time t, read when the watermark (one
# partition: the largest event time read before it) is wm, counts in every
# window [ws, ws + size) holding t for which ws + size + lateness > wm; it
# is a 'late' dead letter of the window when some window holding t has
# ws + size + lateness <= wm.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use StreamAgg;

my $node = new_node(
	'hop',
	conf => [
		"streamagg.batch_time = '100ms'",
		"streamagg.batch_size = 700",
		"restart_after_crash = on",
	]);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_streamagg');
$node->safe_psql('postgres',
	'CREATE TABLE raw (stream text, seq int, k text, v int, ts timestamptz)');
my $brokers = brokers();
my $base_ms = 1_704_067_200_000;    # 2024-01-01 00:00:00 UTC

sub q1 { return $node->safe_psql('postgres', $_[0]); }

# Rows in one side and not the other, both ways (duplicates count).
sub differences
{
	my ($table, $truth) = @_;
	return q1(qq{
SELECT (SELECT count(*) FROM ((SELECT * FROM $table) EXCEPT ALL ($truth)) a)
     + (SELECT count(*) FROM (($truth) EXCEPT ALL (SELECT * FROM $table)) b)});
}

# The rows of a stream with the watermark each was read at.
sub with_wm
{
	my ($stream) = @_;
	return "(SELECT *, max(ts) OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS wm
	           FROM raw WHERE stream = '$stream')";
}

# The exact result of a hopping window (sizes in seconds).
sub truth
{
	my ($stream, $size, $slide, $lateness, $groups, $aggs) = @_;
	my $g = $groups ? "$groups, " : '';
	my $r = with_wm($stream);
	return "SELECT ws, ws + interval '$size seconds', $g$aggs
	          FROM $r r, generate_series(date_bin('$slide seconds', ts, 'epoch') - interval '$size seconds' + interval '$slide seconds',
	                                     date_bin('$slide seconds', ts, 'epoch'), interval '$slide seconds') AS ws
	         WHERE wm IS NULL OR ws + interval '$size seconds' + interval '$lateness seconds' > wm
	         GROUP BY ws" . ($groups ? ", $groups" : '');
}

# Offsets that must be 'late' dead letters of a window.
sub late_truth
{
	my ($stream, $size, $slide, $lateness) = @_;
	my $r = with_wm($stream);
	return q1("SELECT coalesce(string_agg(seq::text, ',' ORDER BY seq), '') FROM $r r
	            WHERE date_bin('$slide seconds', ts, 'epoch') - interval '$size seconds' + interval '$slide seconds'
	                  + interval '$size seconds' + interval '$lateness seconds' <= wm");
}

sub late_got
{
	my ($window) = @_;
	return q1("SELECT coalesce(string_agg(\"offset\"::text, ',' ORDER BY \"offset\"), '')
	             FROM streamagg.dead_letters WHERE window_name = '$window' AND reason = 'late'");
}

my %seq;

# Produce rows [k, v, event time in ms] to a topic, and remember them in raw.
sub send_rows
{
	my ($stream, $topic, $rows) = @_;
	my (@msgs, @raw);
	for my $r (@$rows)
	{
		my ($k, $v, $ms) = @$r;
		my $seq = $seq{$stream}++;
		push @msgs,
		  {
			partition => 0,
			payload   => sprintf('{"k":"%s","v":%s,"ts":%d}', $k, $v // 'null', $ms)
		  };
		push @raw, join("\t", $stream, $seq, $k, $v // '\N', sprintf('%.3f', $ms / 1000));
	}
	my $file = PostgreSQL::Test::Utils::tempdir() . '/raw.tsv';
	open(my $fh, '>', $file) or die $!;
	print $fh "$_\n" for @raw;
	close $fh;
	q1("CREATE TEMP TABLE r (stream text, seq int, k text, v int, e numeric); COPY r FROM '$file';
	    INSERT INTO raw SELECT stream, seq, k, v, to_timestamp(e) FROM r");
	produce($topic, \@msgs);
}

sub consumed
{
	my ($stream, $n, $what) = @_;
	ok(wait_for($node, "SELECT coalesce(sum(next_offset), 0) FROM streamagg.offsets WHERE stream = '$stream'", $n, 120),
		"$stream: $what: all $n messages consumed");
}

# ---------------------------------------------------------------------------
# 1. Out-of-order rows, late rows, a SIGKILL in the middle.

create_topic('hop_t', 1);
q1(qq{
BEGIN;
SELECT streamagg.create_stream(name => 'hop', topic => 'hop_t', brokers => '$brokers',
  columns => 'k text, v int, ts timestamptz', event_time => 'ts');
SELECT streamagg.create_window(name => 'hop_w', stream => 'hop', size => '10 minutes', slide => '1 minute',
  group_by => 'k', allowed_lateness => '2 minutes',
  aggregates => 'count(*) AS n, count(v) AS nv, sum(v) AS s, min(v) AS mn, max(v) AS mx, avg(v) AS a');
SELECT streamagg.create_window(name => 'hop_all', stream => 'hop', size => '10 minutes', slide => '2 minutes',
  aggregates => 'count(*) AS n, sum(v) AS s');
SELECT streamagg.create_window(name => 'hop_c', stream => 'hop', size => '10 minutes', slide => '1 minute',
  group_by => 'k', allowed_lateness => '2 minutes',
  aggregates => 'count(v) AS nv, sum(v) AS s, avg(v) AS a, sum(v::int8) AS s8');
SELECT streamagg.create_window(name => 'hop_tumble', stream => 'hop', size => '1 minute',
  group_by => 'k', aggregates => 'count(*) AS n');
COMMIT;});

is(q1("SELECT count(*) FROM pg_attribute WHERE attrelid = 'hop_c_closed'::regclass AND attnum > 0"), '12',
	'a chained window keeps count(*) and the counts and sums it subtracts in its closed table');
is(q1("SELECT count(*) FROM pg_attribute WHERE attrelid = 'hop_w_closed'::regclass AND attnum > 0"), '9',
	'a window with min or max does not');
is(q1("SELECT string_agg(relname || ':' || relkind::text, ' ' ORDER BY relname) FROM pg_class
        WHERE relname ~ '^hop_w' AND relkind IN ('r', 'v')"),
	'hop_w:v hop_w_closed:r hop_w_final:v hop_w_slices:r',
	'a hopping window of a one-worker stream is a view over slices and closed windows');
is(q1("SELECT slice_table::text || ' ' || closed_table::text FROM streamagg.windows WHERE name = 'hop_w'"),
	'hop_w_slices hop_w_closed', 'the catalog names its tables');
is(q1("SELECT count(*) FROM pg_class WHERE relname ~ '^hop_w_state'"), '0',
	'avg needs no state table: slices keep sum and count');

my $listener;

# 6000 rows, 0.5 s apart in event time over 50 minutes; most a few seconds
# out of order, every 37th 5 minutes behind (late for the older of its
# windows only), every 101st 15 minutes behind (late for all of them).
my @rows;
for my $i (0 .. 5999)
{
	my $ms = $base_ms + $i * 500 - (($i * 7919) % 13) * 1000;
	$ms -= 300_000 if $i % 37 == 5;
	$ms -= 900_000 if $i % 101 == 7;
	push @rows, [ 'k' . ($i % 7), ($i % 17 == 0 ? undef : ($i * 31) % 1000 - 200), $ms ];
}
my $sent = 0;
for my $chunk (0 .. 11)
{
	send_rows('hop', 'hop_t', [ @rows[ $chunk * 500 .. $chunk * 500 + 499 ] ]);
	$sent += 500;
	if ($chunk == 5)
	{
		# a SIGKILLed worker in the middle of the stream: the postmaster
		# restarts everything from the committed offsets
		ok(wait_for($node, "SELECT coalesce(sum(next_offset), 0) > 2600 FROM streamagg.offsets WHERE stream = 'hop'", 't', 60),
			'part of the stream is committed');
		my ($pid) = worker_pids($node, 'pg_streamagg worker');
		ok(defined $pid && kill('KILL', $pid), 'the worker is killed with SIGKILL');
		ok(wait_for($node, "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'pg_streamagg hop/0'", 't', 120),
			'the worker runs again after the crash');
		# (the crash ended every session: listen from here on)
		$listener = $node->background_psql('postgres');
		$listener->query_safe('LISTEN streamagg_closed');
	}
}
consumed('hop', $sent, 'out of order, killed');

my $hop_truth = truth('hop', 600, 60, 120, 'k',
	'count(*), count(v), sum(v), min(v), max(v), avg(v)');
my $all_truth = truth('hop', 600, 120, 0, undef, 'count(*), sum(v)');
my $chain_truth = truth('hop', 600, 60, 120, 'k', 'count(v), sum(v), avg(v), sum(v::int8)');

sub check_all
{
	my ($label) = @_;
	is(differences('hop_w', $hop_truth), '0', "$label: hop_w equals the GROUP BY over the rows on time");
	is(differences('hop_all', $all_truth), '0', "$label: hop_all (no groups) equals the GROUP BY");
	is(differences('hop_c', $chain_truth), '0', "$label: hop_c (windows chained) equals the GROUP BY");
	is(differences('hop_c_final',
			"SELECT * FROM ($chain_truth) t WHERE ws + interval '12 minutes' <= streamagg.watermark('hop')"),
		'0', "$label: hop_c_final holds exactly its closed windows");
	is(late_got('hop_c'), late_truth('hop', 600, 60, 120), "$label: hop_c's late dead letters are exact");
	is(differences('hop_tumble', truth('hop', 60, 60, 0, 'k', 'count(*)')), '0',
		"$label: the tumbling window is right too");
	my $late = late_truth('hop', 600, 60, 120);
	ok(length($late) > 0 && $late =~ /,/, "$label: some rows are late for hop_w");
	is(late_got('hop_w'), $late, "$label: hop_w's late dead letters are exactly the rows late for one of its windows");
	is(late_got('hop_all'), late_truth('hop', 600, 120, 0), "$label: so are hop_all's");
	is(q1("SELECT count(*) FROM " . with_wm('hop') . " r
	        WHERE date_bin('1 minute', ts, 'epoch') + interval '12 minutes' > wm
	          AND date_bin('1 minute', ts, 'epoch') + interval '3 minutes' <= wm") > 0 ? 'yes' : 'no',
		'yes', "$label: some rows are late for some of their windows and on time for others");
	# _final: exactly the windows closed at the committed watermark
	is(differences('hop_w_final',
			"SELECT * FROM ($hop_truth) t WHERE ws + interval '12 minutes' <= streamagg.watermark('hop')"),
		'0', "$label: hop_w_final holds exactly the closed windows");
	is(q1("SELECT count(*) > 30 FROM hop_w_final"), 't', "$label: many windows are closed");
	# only slices of open windows are kept
	is(q1("SELECT count(DISTINCT window_start) <= 14 FROM hop_w_slices"), 't',
		"$label: the slices of closed windows are gone");
}
check_all('after a SIGKILL');

# a role granted SELECT on the view reads it whole, with no access to the
# stream's catalog rows
q1("CREATE ROLE reader; GRANT SELECT ON hop_w, hop_w_final TO reader");
is(q1("SET ROLE reader; SELECT count(*) FROM hop_w"), q1("SELECT count(*) FROM ($hop_truth) t"),
	'a reader with SELECT on the view sees every row');
is(q1("SET ROLE reader; SELECT count(*) FROM hop_w_final"), q1("SELECT count(*) FROM hop_w_final"),
	'and every final row');

# notifications: for both hopping windows, the last one covers every final row
my $out = $listener->query_safe('SELECT 1');
for my $w (qw(hop_w hop_all))
{
	my @until = $out =~ /"window": "$w", "watermark": "[^"]*", "final_until": "([^"]*)"/g;
	ok(@until > 3, "$w: notifications on streamagg_closed");
	is(q1("SELECT max(window_end) <= '$until[-1]' FROM ${w}_final"), 't',
		"$w: the last notification covers every final row") if @until;
}
$listener->quit;

# ---------------------------------------------------------------------------
# 2. reset_offsets rebuilds everything from the first message.

is(q1(qq{BEGIN;
SELECT streamagg.reset_offsets('hop', 'earliest');
SELECT (SELECT count(*) FROM hop_w) + (SELECT count(*) FROM hop_w_slices) + (SELECT count(*) FROM hop_w_closed)
     + (SELECT count(*) FROM hop_all);
COMMIT;}), "\n0", 'reset_offsets empties the view, the slices and the closed windows');
consumed('hop', $sent, 'rebuilt');
ok(wait_for($node, "SELECT count(*) FROM hop_w", q1("SELECT count(*) FROM ($hop_truth) t"), 60),
	'the rebuild has every row');
check_all('after reset_offsets');

# 2b. reset_offsets(replay => true): the closed windows keep their rows (the
#     stored horizon does not move back), the replayed rows count again in
#     the windows still open and are late for the closed ones; the view
#     never shows a window twice, and no message is blamed for it.
my $final_before = q1("SELECT count(*) || ':' || coalesce(sum(n), 0) FROM hop_w_final");
my $late_before = q1("SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'hop' AND reason = 'late'");
q1("SELECT streamagg.reset_offsets('hop', 'earliest', replay => true)");
consumed('hop', $sent, 'replayed');
ok(wait_for($node, "SELECT count(*) > $late_before FROM streamagg.dead_letters WHERE stream = 'hop' AND reason = 'late'",
		't', 60), 'replay: rows of closed windows are late for them');
is(q1("SELECT count(*) || ':' || coalesce(sum(n), 0) FROM hop_w_final"), $final_before,
	'replay: the closed windows keep their rows');
is(q1("SELECT count(*) FROM (SELECT window_start, k FROM hop_w GROUP BY 1, 2 HAVING count(*) > 1) d"), '0',
	'replay: the view shows each window and group once');
is(q1("SELECT count(*) FROM streamagg.dead_letters WHERE stream = 'hop' AND reason = 'write'"), '0',
	'replay: no message is blamed for the closed windows');
is(q1("SELECT state || ':' || coalesce(last_error, '') FROM streamagg.status WHERE stream = 'hop'"), 'running:',
	'replay: the stream runs, no error');

# ---------------------------------------------------------------------------
# 3. drop_window and drop_stream leave nothing behind.

q1("SELECT streamagg.drop_window('hop_w')");
is(q1("SELECT count(*) FROM pg_class WHERE relname ~ '^hop_w'"), '0',
	'drop_window drops the view, _final, the slices and the closed windows (indexes too)');
q1("SELECT streamagg.drop_stream('hop', cascade => true)");
is(q1("SELECT count(*) FROM pg_class WHERE relname ~ '^hop_'"), '0', 'drop_stream leaves nothing either');
is(q1("SELECT count(*) FROM streamagg.windows"), '0', 'no window definition is left');

# ---------------------------------------------------------------------------
# 4. A 1000-hop window (1000 seconds every second) over many keys: exact,
#    and it keeps slices of the open windows only.

create_topic('hop_big', 1);
q1(qq{
SELECT streamagg.create_stream(name => 'big', topic => 'hop_big', brokers => '$brokers',
  columns => 'k text, v int, ts timestamptz', event_time => 'ts');
SELECT streamagg.create_window(name => 'big_w', stream => 'big', size => '1000 seconds', slide => '1 second',
  group_by => 'k', aggregates => 'count(*) AS n, max(v) AS m, avg(v) AS a');
SELECT streamagg.create_window(name => 'big_c', stream => 'big', size => '1000 seconds', slide => '1 second',
  group_by => 'k', aggregates => 'count(*) AS n, sum(v) AS s, avg(v) AS a');});
my @big;
for my $i (0 .. 7999)
{
	push @big, [ 'key' . (($i * 7) % 400), $i % 1000, $base_ms + $i * 250 - (($i * 13) % 7) * 1000 ];
}

# the worker's private memory while it consumes: one slice group per
# message, whatever the number of hops (kept per instance, these messages
# would make 8 million groups, bounded only by streamagg.batch_memory, 64MB)
sub rss_anon_kb
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return 0;
	while (<$fh>) { return $1 if /^RssAnon:\s+(\d+) kB/; }
	return 0;
}
ok(wait_for($node, "SELECT count(*) FROM streamagg.offsets WHERE stream = 'big'", '1', 60), 'big: set up');
my $bigpid = q1("SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_streamagg big/0'");
my $idle_anon = rss_anon_kb($bigpid);
send_rows('big', 'hop_big', \@big);
my $peak_anon = $idle_anon;
for (1 .. 1200)
{
	my $a = rss_anon_kb($bigpid);
	$peak_anon = $a if $a > $peak_anon;
	last if q1("SELECT coalesce(sum(next_offset), 0) FROM streamagg.offsets WHERE stream = 'big'") == 8000;
	select(undef, undef, undef, 0.05);
}
consumed('big', 8000, '1000 hops');
note("1000-hop worker $bigpid: RssAnon idle $idle_anon kB, peak $peak_anon kB");
cmp_ok($peak_anon - $idle_anon, '<=', 24 * 1024, "the 1000-hop worker's private memory grows by less than 24MB");
is(q1("SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_streamagg big/0'"), $bigpid,
	'(the same worker did it all)');
is(differences('big_w', truth('big', 1000, 1, 0, 'k', 'count(*), max(v), avg(v)')), '0',
	'the 1000-hop window equals the GROUP BY');
is(late_got('big_w'), late_truth('big', 1000, 1, 0), 'its late dead letters are exact');
is(differences('big_c', truth('big', 1000, 1, 0, 'k', 'count(*), sum(v), avg(v)')), '0',
	'the chained 1000-hop window equals the GROUP BY');
is(differences('big_c_final', "SELECT * FROM (" . truth('big', 1000, 1, 0, 'k', 'count(*), sum(v), avg(v)')
	  . ") t WHERE ws + interval '1000 seconds' <= streamagg.watermark('big')"), '0',
	'and its closed windows are exact');
is(q1("SELECT count(*) > 0 FROM big_w_final"), 't', 'some of its windows are closed');
is(q1("SELECT count(DISTINCT window_start) <= 1002 FROM big_w_slices"), 't',
	'it keeps at most one slice per open window');
is(q1("SELECT count(*) <= 1002 * 400 FROM big_w_slices"), 't', 'and at most one row per slice and key');

# ---------------------------------------------------------------------------
# 5. Two workers keep a row per window instance.

create_topic('hop_two', 2);
q1(qq{
SELECT streamagg.create_stream(name => 'two', topic => 'hop_two', brokers => '$brokers',
  columns => 'k text, v int, ts timestamptz', event_time => 'ts', parallelism => 2);
SELECT streamagg.create_window(name => 'two_w', stream => 'two', size => '10 minutes', slide => '1 minute',
  group_by => 'k', aggregates => 'count(*) AS n');});
is(q1("SELECT relkind FROM pg_class WHERE relname = 'two_w'"), 'r', 'with parallelism 2 the window is a table');
is(q1("SELECT slice_table IS NULL FROM streamagg.windows WHERE name = 'two_w'"), 't', 'and has no slices');

done_testing();
