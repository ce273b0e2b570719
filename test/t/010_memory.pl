# Bounded memory: a batch closes early when its in-memory aggregation
# reaches streamagg.batch_memory, so a hopping window of 1,000 hops per
# message cannot grow a worker without bound; the results stay exact.
#
# Each message has a key of its own and falls into 1,000 windows (size
# 1000 seconds, slide 1 second): every message adds 1,000 groups to the
# batch.  (The float sum keeps the window on that path, one row per window
# instance: a one-worker hopping window of counts, min, max and exact sums
# is kept as slices instead, one group per message - see 014_hopping.)  With batch_size and batch_time out of the way, only the memory
# budget closes batches.  The worker's peak resident size (VmHWM, reset
# through /proc/PID/clear_refs once the worker is set up and idle) must
# stay within its idle size plus the budget plus a fixed overhead, while
# all the groups of the run need many times the budget: run without a
# budget (streamagg.batch_memory = 1GB) this script fails, with one batch
# and a peak of about +138MB over the idle worker (+21MB with the 4MB
# budget; private memory, RssAnon: +123MB against +7MB).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use StreamAgg;

my $budget_kb = 4096;    # the stream's streamagg.batch_memory
my $messages  = 300;     # 300,000 groups: ~70MB in one batch without a budget

# What the worker may hold above its idle size besides the batch itself,
# in kB: the pages of shared_buffers (16MB here) that its writes touch
# count in its resident size; and 8MB of private memory for writing a
# batch (one array per result column, which unnest() materialises: about
# half the batch's own size), the first write's plans and caches, and the
# blocks glibc keeps for reuse.  Measured: +21MB of VmHWM, of which +7MB
# private, for the 4MB budget.
my $shmem_kb    = 16384;
my $private_kb  = 8192;
my $overhead_kb = $shmem_kb + $private_kb;

my $node = new_node(
	'mem',
	conf => [
		"shared_buffers = '16MB'",
		"streamagg.batch_time = '10s'",       # longer than the whole run
		"streamagg.batch_size = 10000000",
		"streamagg.queue_kbytes = 1024",
	]);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_streamagg');
$node->safe_psql('postgres', 'CREATE TABLE raw (k text, v int, ts timestamptz)');

my $b = brokers();

# --- the option is checked at create time ----------------------------------

foreach my $bad ('"lots"', '"512kB"', '"-1"', '"3 apples"')
{
	my ($ret, $out, $err) = $node->psql('postgres', qq{
SELECT streamagg.create_stream(name => 'bad', topic => 'mem_bad', brokers => '$b',
  columns => 'k text', options => '{"streamagg.batch_memory": $bad}')});
	isnt($ret, 0, "streamagg.batch_memory = $bad is refused");
	like($err, qr/invalid value .* for option "streamagg\.batch_memory"/,
		"the error for $bad names the option");
}

# --- a 1000-hop window under a 4MB budget --------------------------------

create_topic('mem_hop', 1);
$node->safe_psql(
	'postgres', qq{
SELECT streamagg.create_stream(name => 'hop', topic => 'mem_hop', brokers => '$b',
  columns => 'k text, v int, ts timestamptz', event_time => 'ts',
  options => '{"streamagg.batch_memory": "${budget_kb}kB"}');
SELECT streamagg.create_window(name => 'hop_w', stream => 'hop',
  size => '1000 seconds', slide => '1 second', group_by => 'k',
  allowed_lateness => '1 day', aggregates => 'count(*) AS n, max(v) AS m, sum(v::float8) AS f');});

my $base_ms = 1_700_000_000_000;
my $seq     = 0;

sub send_messages
{
	my ($n) = @_;
	my (@rows, @raw);
	for (1 .. $n)
	{
		$seq++;
		my $ts = $base_ms + $seq * 1000;
		push @rows,
		  {
			partition => 0,
			payload   => sprintf('{"k":"key%d","v":%d,"ts":%d}', $seq, $seq % 1000, $ts)
		  };
		push @raw, sprintf("key%d\t%d\t%.3f", $seq, $seq % 1000, $ts / 1000);
	}
	my $file = PostgreSQL::Test::Utils::tempdir() . '/raw.tsv';
	open(my $fh, '>', $file) or die $!;
	print $fh "$_\n" for @raw;
	close $fh;
	$node->safe_psql('postgres',
		"CREATE TEMP TABLE r (k text, v int, e numeric); COPY r FROM '$file';"
		  . "INSERT INTO raw SELECT k, v, to_timestamp(e) FROM r");
	produce('mem_hop', \@rows);
}

sub committed
{
	return $node->safe_psql('postgres',
		"SELECT coalesce(sum(messages), 0) FROM streamagg.offsets WHERE stream = 'hop'");
}

sub status_kb
{
	my ($pid, $field) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	while (<$fh>)
	{
		return $1 if /^\Q$field\E:\s+(\d+) kB/;
	}
	return undef;
}

# the worker has claimed its partition: it is set up and idle
ok(wait_for($node, "SELECT count(*) FROM streamagg.offsets WHERE stream = 'hop'", '1', 60),
	'the worker claimed its partition');
my ($pid) = worker_pids($node, 'pg_streamagg worker');
ok(defined $pid && -e "/proc/$pid/status", 'found the worker process')
  or BAIL_OUT('no worker');

# idle size of the worker, then reset its peak (clear_refs 5: VmHWM = VmRSS)
my $idle_kb   = status_kb($pid, 'VmRSS');
my $idle_anon = status_kb($pid, 'RssAnon');
{
	open(my $fh, '>', "/proc/$pid/clear_refs") or die "clear_refs: $!";
	print $fh "5\n";
	close $fh;
}
note("worker $pid idle: VmRSS $idle_kb kB, RssAnon $idle_anon kB");

my $t0 = time;
send_messages($messages);
my ($max_rss, $max_anon) = (0, 0);
my $want = $messages;
my $done = 0;
while (time - $t0 < 240)
{
	my $rss  = status_kb($pid, 'VmRSS')   // 0;
	my $anon = status_kb($pid, 'RssAnon') // 0;
	$max_rss  = $rss  if $rss > $max_rss;
	$max_anon = $anon if $anon > $max_anon;
	if (committed() == $want) { $done = 1; last; }
	usleep(20_000);
}
ok($done, "all $want messages committed") or diag('committed: ' . committed());
my $hwm = status_kb($pid, 'VmHWM');
is((worker_pids($node, 'pg_streamagg worker'))[0], $pid, 'the same worker did all of it');
note(sprintf('budget %d kB; idle VmRSS %d kB, RssAnon %d kB; peak VmHWM %d kB (+%d over idle); '
	  . 'sampled peak VmRSS %d kB, RssAnon %d kB (+%d); %.1fs',
	$budget_kb, $idle_kb, $idle_anon, $hwm, $hwm - $idle_kb, $max_rss, $max_anon,
	$max_anon - $idle_anon, time - $t0));
my $batches = $node->safe_psql('postgres',
	"SELECT count(DISTINCT xmin::text) FROM hop_w");
note("result rows were written by $batches transactions");
cmp_ok($batches, '>', 5, 'the budget split the run into several batches');
cmp_ok($hwm - $idle_kb, '<=', $budget_kb + $overhead_kb,
	"peak VmRSS stays within the budget + ${overhead_kb} kB over the idle worker");
cmp_ok($max_anon - $idle_anon, '<=', $budget_kb + $private_kb,
	"sampled private memory stays within the budget + ${private_kb} kB over the idle worker");

# --- exact results ----------------------------------------------------------

my $diff = $node->safe_psql('postgres', q{
WITH truth AS (
  SELECT ws AS window_start, ws + interval '1000 seconds' AS window_end, k,
         count(*) AS n, max(v) AS m, sum(v::float8) AS f
    FROM raw, generate_series(date_bin('1 second', ts, 'epoch') - interval '999 seconds',
                              date_bin('1 second', ts, 'epoch'), '1 second') AS ws
   GROUP BY 1, 2, 3)
SELECT (SELECT count(*) FROM ((SELECT * FROM hop_w) EXCEPT ALL (SELECT * FROM truth)) a)
     + (SELECT count(*) FROM ((SELECT * FROM truth) EXCEPT ALL (SELECT * FROM hop_w)) b)});
is($diff, '0', 'the hopping window equals GROUP BY over every message');
is($node->safe_psql('postgres', 'SELECT count(*) FROM hop_w'),
	1000 * $want, 'one row per message and hop');

# --- reloads free what the old definitions kept ----------------------------
#
# Every create_window or drop_window makes the worker reload its
# definitions; the plans it prepared for the old ones (kept with
# SPI_keepplan, outside its own memory contexts) must go with them.  The
# worker's memory is read with pg_log_backend_memory_contexts ("Grand
# total" in the server log) after a first round of reloads and again after
# many more: it must not grow with their number.

$node->safe_psql('postgres', "SELECT streamagg.drop_stream('hop', cascade => true)");
create_topic('mem_reload', 1);
$node->safe_psql(
	'postgres', qq{
SELECT streamagg.create_stream(name => 'rl', topic => 'mem_reload', brokers => '$b',
  columns => 'k text, v int, ts timestamptz', event_time => 'ts',
  options => '{"streamagg.batch_time": 100}');
SELECT streamagg.create_window(name => 'rl_w', stream => 'rl', size => '1 minute',
  group_by => 'k', allowed_lateness => '1 day',
  aggregates => 'count(*) AS n, sum(v) AS s, avg(v) AS a');});

my $sent = 0;

# one message, and wait until the worker has written it
sub one_message
{
	$sent++;
	produce('mem_reload',
		[ { partition => 0, payload => sprintf('{"k":"k%d","v":%d,"ts":%d}', $sent % 7, $sent, $base_ms + $sent * 1000) } ]);
	return wait_for($node, 'SELECT sum(n) FROM rl_w', $sent, 60);
}

# one reload: the temporary window comes or goes, then a message is written
my $tmp_exists = 0;
sub reload_once
{
	$node->safe_psql('postgres',
		$tmp_exists
		? "SELECT streamagg.drop_window('rl_tmp')"
		: "SELECT streamagg.create_window(name => 'rl_tmp', stream => 'rl', size => '1 minute',
		     group_by => 'k', allowed_lateness => '1 day', aggregates => 'count(*) AS n, avg(v) AS a')");
	$tmp_exists = !$tmp_exists;
	return one_message();
}

sub rl_pid
{
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE application_name = 'pg_streamagg rl/0'");
}

# the worker's memory, as pg_log_backend_memory_contexts tells the log
sub memory_total
{
	my ($pid) = @_;
	my $from = -s $node->logfile;
	$node->safe_psql('postgres', "SELECT pg_log_backend_memory_contexts($pid)");
	my $t0 = time;
	while (time - $t0 < 60)
	{
		my $log = substr(slurp_file($node->logfile), $from);
		return $1 if $log =~ /\[$pid\] LOG:  Grand total: (\d+) bytes/;
		usleep(100_000);
	}
	return undef;
}

ok(one_message(), 'the reload stream counts its first message');
my $ok = 1;
$ok &&= reload_once() for 1 .. 10;
ok($ok, 'messages counted through the first 10 reloads');
my $rpid = rl_pid();
my $before = memory_total($rpid);
$ok &&= reload_once() for 1 .. 60;
ok($ok, 'messages counted through 60 more reloads');
is(rl_pid(), $rpid, 'the same worker reloaded in place');
my $after = memory_total($rpid);
ok(defined $before && defined $after, 'the worker logged its memory contexts');
note("worker memory after 10 reloads: $before bytes; after 70: $after bytes");
cmp_ok($after - $before, '<', 128 * 1024,
	'60 reloads do not grow the worker by 128kB (kept plans are freed)');

$node->stop;
done_testing();
