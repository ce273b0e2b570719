# Helpers for the TAP scripts that run against a real Apache Kafka
# (scripts with a "# broker: kafka [OPTIONS]" line; see test/README.md).
#
# test/run_tests.sh starts the cluster with test/kafka/kafka.sh before the
# script and stops it afterwards, and exports
#   KAFKA_BROKERS       PLAINTEXT bootstrap list
#   KAFKA_DIR           the cluster's directory ("-" against an existing
#                       cluster: make kafkacheck)
#   KAFKA_BROKERS_SASL  SASL_PLAINTEXT bootstrap list (--sasl)
#   KAFKA_BROKERS_SSL   SSL bootstrap list (--ssl); the CA is KAFKA_DIR/ca.pem
#   KAFKA_SH            test/kafka/kafka.sh
#   KAFKA_EXTERNAL      1 against an existing cluster (no kill/restart there)

package RealKafka;

use strict;
use warnings;

use Carp;
use Exporter qw(import);
use IPC::Run;
use Test::More;
use Time::HiRes qw(time usleep);

use StreamAgg;

our @EXPORT = qw(
  kafka_dir kafka_external kafka_sh kafka_tool kafka_version
  kafka_topic kafka_create_topic kafka_add_partitions kafka_alter_topic_config
  kafka_kill kafka_stop_node kafka_restart kafka_pid
  kafka_leader kafka_end_offsets kafka_describe_group
  kafka_sasl_brokers kafka_ssl_brokers kafka_ca_pem kafka_sasl_user
  produce_transactions
  make_events load_truth differences create_counting_stream wait_caught_up
);

sub kafka_dir
{
	my $d = $ENV{KAFKA_DIR};
	croak 'KAFKA_DIR is not set: run the real-broker tests through `make test`'
	  unless defined $d && $d ne '';
	return $d;
}

sub kafka_external { return ($ENV{KAFKA_EXTERNAL} // '') eq '1'; }

sub kafka_version { return $ENV{KAFKA_VERSION} // ''; }

# A topic name unique to this run (an existing cluster may have old ones).
my $RUN_ID = sprintf('%x%04x', time() % 0xffffff, $$ % 0xffff);
sub kafka_topic
{
	my ($base) = @_;
	return kafka_external() ? "$base-$RUN_ID" : $base;
}

# kafka_sh(\@args, timeout => S, allow_fail => 1): run test/kafka/kafka.sh;
# returns stdout (dies on failure unless allow_fail, then returns undef).
sub kafka_sh
{
	my ($args, %opts) = @_;
	my $sh = $ENV{KAFKA_SH} // croak 'KAFKA_SH is not set';
	my ($out, $err) = ('', '');
	my $timeout = $opts{timeout} // 120;
	my @cmd = ('bash', $sh, @$args);
	my $ok = eval {
		IPC::Run::run(\@cmd, '<', \undef, '>', \$out, '2>', \$err,
			IPC::Run::timeout($timeout));
	};
	my $exc = $@;
	if ($exc || !$ok)
	{
		return undef if $opts{allow_fail};
		croak "kafka.sh @$args failed "
		  . ($exc ? "($exc)" : 'exit status ' . ($? >> 8))
		  . "\nstdout: $out\nstderr: $err";
	}
	return $out;
}

# kafka_tool($tool, @args): one of Kafka's tools (kafka-topics, ...)
# against this script's cluster; returns its stdout.
sub kafka_tool
{
	my ($tool, @args) = @_;
	my %opts;
	%opts = %{ pop @args } if @args && ref $args[-1] eq 'HASH';
	return kafka_sh([ 'tool', kafka_dir(), $tool, @args ], %opts);
}

# kafka_create_topic($name, $partitions, replication => N,
#   config => { 'cleanup.policy' => 'compact', ... })
sub kafka_create_topic
{
	my ($name, $parts, %opts) = @_;
	my @args = ('--create', '--topic', $name, '--partitions', $parts // 1);
	push @args, '--replication-factor', $opts{replication}
	  if $opts{replication};
	foreach my $k (sort keys %{ $opts{config} // {} })
	{
		push @args, '--config', "$k=$opts{config}{$k}";
	}
	return kafka_tool('kafka-topics', @args);
}

# kafka_add_partitions($topic, $total): kafka-topics --alter --partitions
sub kafka_add_partitions
{
	my ($topic, $total) = @_;
	return kafka_tool('kafka-topics', '--alter', '--topic', $topic,
		'--partitions', $total);
}

# kafka_alter_topic_config($topic, { key => value, ... })
sub kafka_alter_topic_config
{
	my ($topic, $config) = @_;
	return kafka_tool('kafka-configs', '--alter', '--entity-type', 'topics',
		'--entity-name', $topic, '--add-config',
		join(',', map { "$_=$config->{$_}" } sort keys %$config));
}

sub _local_only
{
	my ($what) = @_;
	croak "$what needs a cluster of our own, not KAFKA_BROKERS"
	  if kafka_external();
}

# kafka_kill($node): SIGKILL one broker JVM (default node 1)
sub kafka_kill
{
	my ($node) = @_;
	_local_only('kafka_kill');
	return kafka_sh([ 'kill', kafka_dir(), $node // 1 ]);
}

# kafka_stop_node($node): clean shutdown of one node
sub kafka_stop_node
{
	my ($node) = @_;
	_local_only('kafka_stop_node');
	return kafka_sh([ 'stop', kafka_dir(), $node // 1 ]);
}

# kafka_restart($node): start a node again (stopping it first if it runs)
# and wait until it serves
sub kafka_restart
{
	my ($node) = @_;
	_local_only('kafka_restart');
	return kafka_sh([ 'restart', kafka_dir(), $node // 1 ], timeout => 180);
}

# kafka_pid($node): pid of a running node, or undef
sub kafka_pid
{
	my ($node) = @_;
	my $out = kafka_sh([ 'pid', kafka_dir(), $node // 1 ], allow_fail => 1);
	return undef unless defined $out && $out =~ /(\d+)/;
	return $1;
}

# kafka_leader($topic, $partition): node id of the partition's leader
# (-1 when it has none), from kafka-topics --describe
sub kafka_leader
{
	my ($topic, $partition) = @_;
	my $out = kafka_tool('kafka-topics', '--describe', '--topic', $topic);
	foreach my $line (split /\n/, $out)
	{
		return $1
		  if $line =~ /Partition:\s*\Q$partition\E\s.*Leader:\s*(-?\d+|none)/
		  && $1 ne 'none';
		return -1 if $line =~ /Partition:\s*\Q$partition\E\s.*Leader:\s*none/;
	}
	croak "no partition $partition in kafka-topics --describe of $topic:\n$out";
}

# kafka_end_offsets($topic): { partition => end offset } (kcat)
sub kafka_end_offsets
{
	my ($topic, %opts) = @_;
	my ($out, $err) = ('', '');
	my @cmd = ('kcat', '-b', brokers(), '-L', '-t', $topic, '-J');
	my $meta = '';
	IPC::Run::run(\@cmd, '>', \$meta, '2>', \$err, IPC::Run::timeout(30))
	  or croak "kcat -L $topic failed: $err";
	my @parts = ($meta =~ /"partition":\s*(\d+)/g);
	my %end;
	foreach my $p (@parts)
	{
		($out, $err) = ('', '');
		IPC::Run::run([ 'kcat', '-b', brokers(), '-Q', '-t', "$topic:$p:-1" ],
			'>', \$out, '2>', \$err, IPC::Run::timeout(30))
		  or croak "kcat -Q $topic:$p failed: $err";
		$out =~ /\[\Q$p\E\]\s+offset\s+(-?\d+)/
		  or croak "cannot parse kcat -Q output: $out";
		$end{$p} = $1;
	}
	return \%end;
}

# kafka_describe_group($group): kafka-consumer-groups --describe, as a list
# of { topic, partition, current, end, lag } (current/lag undef for "-")
sub kafka_describe_group
{
	my ($group) = @_;
	my $out = kafka_tool('kafka-consumer-groups', '--describe', '--group',
		$group, { allow_fail => 1 });
	return () unless defined $out;
	my @rows;
	my @head;
	foreach my $line (split /\n/, $out)
	{
		my @f = split ' ', $line;
		next unless @f;
		if ($f[0] eq 'GROUP')
		{
			@head = @f;
			next;
		}
		next unless @head && @f >= 6;
		my %r;
		@r{@head} = @f;
		push @rows,
		  {
			topic     => $r{TOPIC},
			partition => $r{PARTITION},
			current   => ($r{'CURRENT-OFFSET'} // '-') eq '-' ? undef
			: $r{'CURRENT-OFFSET'},
			end => $r{'LOG-END-OFFSET'},
			lag => ($r{LAG} // '-') eq '-' ? undef : $r{LAG},
		  };
	}
	return sort { $a->{partition} <=> $b->{partition} } @rows;
}

sub kafka_sasl_brokers
{
	my $b = $ENV{KAFKA_BROKERS_SASL};
	croak 'no SASL listener: the script needs "# broker: kafka --sasl"'
	  unless defined $b && $b ne '';
	return $b;
}

sub kafka_ssl_brokers
{
	my $b = $ENV{KAFKA_BROKERS_SSL};
	croak 'no SSL listener: the script needs "# broker: kafka --ssl"'
	  unless defined $b && $b ne '';
	return $b;
}

# the test CA certificate (PEM text)
sub kafka_ca_pem
{
	my $f = kafka_dir() . '/ca.pem';
	open my $fh, '<', $f or croak "cannot read $f: $!";
	local $/;
	my $pem = <$fh>;
	close $fh;
	return $pem;
}

# (user, password) of the SASL listener (PLAIN and SCRAM-SHA-256/512)
sub kafka_sasl_user
{
	my $f = kafka_dir() . '/sasl_users';
	open my $fh, '<', $f or croak "cannot read $f: $!";
	my $line = <$fh>;
	close $fh;
	chomp $line;
	return split / /, $line, 2;
}

# produce_transactions($topic, [ { commit => 0|1, rows => [...] }, ... ],
#   txn_id => ID): each element is one transaction of a transactional
# producer (test/bin/sa_produce -x); rows as for produce().  Every message
# is written to the log; those of aborted transactions are aborted.
# Returns (delivered, committed, aborted).
sub produce_transactions
{
	my ($topic, $txns, %opts) = @_;
	my $input = '';
	my $n = 0;
	foreach my $t (@$txns)
	{
		foreach my $r (@{ $t->{rows} })
		{
			$input .= join("\t",
				$r->{partition} // -1,
				defined $r->{key} ? escape_bytes($r->{key}) : '\\N',
				$r->{ts} // '',
				defined $r->{payload} ? escape_bytes($r->{payload}) : '\\N')
			  . "\n";
			$n++;
		}
		$input .= $t->{commit} ? "COMMIT\n" : "ABORT\n";
	}
	my @cmd = (tool_path('sa_produce'), '-b', brokers(), '-t', $topic, '-l',
		'-x', $opts{txn_id} // "txn-$topic");
	my ($out, $err) = ('', '');
	my $ok = eval {
		IPC::Run::run(\@cmd, '<', \$input, '>', \$out, '2>', \$err,
			IPC::Run::timeout($opts{timeout} // 120));
	};
	my $exc = $@;
	croak "transactional sa_produce to $topic failed "
	  . ($exc ? "($exc)" : 'exit status ' . ($? >> 8))
	  . "\nstdout: $out\nstderr: $err"
	  if $exc || !$ok || $out !~ /^produced $n$/m;
	$out =~ /^transactions (\d+) committed (\d+) aborted$/m
	  or croak "sa_produce -x: no transaction counts in: $out";
	return ($n, $1, $2);
}

# ---------------------------------------------------------------- truth

# make_events($state, $n, %opts): $n JSON events {"k","v","ts"} as rows for
# produce(); returns (\@rows, \@lines) where @lines are the same events as
# COPY text lines "k<TAB>v<TAB>ts_ms" for load_truth.  $state (a hashref)
# carries the sequence number between calls.
#   partition => N   (default -1: the producer's partitioner, keyed)
#   ts => sub { $seq -> epoch ms } (default: spread over 40 minutes, out of
#         order); the Kafka message timestamp is the same as "ts"
sub make_events
{
	my ($state, $n, %opts) = @_;
	my (@rows, @lines);
	my $base = $state->{base} //= 1_700_000_000_000;
	for (1 .. $n)
	{
		my $seq = ++$state->{seq};
		my $k   = 'k' . ($seq % 23);
		my $v   = ($seq * 37) % 1000;
		my $ts  = $opts{ts} ? $opts{ts}->($seq) : $base + (($seq * 7919) % 2_400_000);
		push @rows,
		  {
			partition => $opts{partition} // -1,
			key       => "key$seq",
			ts        => $ts,
			payload   => sprintf('{"k":"%s","v":%d,"ts":%d}', $k, $v, $ts),
		  };
		push @lines, "$k\t$v\t$ts";
	}
	return (\@rows, \@lines);
}

# load_truth($node, $table, \@lines): append make_events lines to $table
# (k text, v int, ts timestamptz), created when missing
sub load_truth
{
	my ($node, $table, $lines) = @_;
	my $file = PostgreSQL::Test::Utils::tempdir() . "/$table.tsv";
	open(my $fh, '>', $file) or die "$file: $!";
	print $fh "$_\n" for @$lines;
	close $fh;
	$node->safe_psql('postgres', qq{
CREATE TABLE IF NOT EXISTS $table (k text, v int, ts timestamptz);
CREATE TEMP TABLE load_r (k text, v int, ms bigint);
COPY load_r FROM '$file';
INSERT INTO $table SELECT k, v, to_timestamp(ms / 1000.0) FROM load_r;});
	return scalar @$lines;
}

# differences($node, $window_table, $truth_table): rows of the window table
# (1 minute tumbling, by k: count(*) AS n, sum(v) AS s) that are not in the
# GROUP BY over the truth, plus the reverse; 0 when they are equal
sub differences
{
	my ($node, $table, $truth) = @_;
	my $q = "SELECT date_bin('1 minute', ts, 'epoch') AS ws,
	                date_bin('1 minute', ts, 'epoch') + interval '1 minute', k,
	                count(*), sum(v) FROM $truth GROUP BY 1, 2, 3";
	return $node->safe_psql('postgres', qq{
SELECT (SELECT count(*) FROM ((SELECT * FROM $table) EXCEPT ALL ($q)) a)
     + (SELECT count(*) FROM (($q) EXCEPT ALL (SELECT * FROM $table)) b)});
}

# create_counting_stream($node, $stream, $topic, %opts): a JSON stream of
# make_events and its window "${stream}_w" (1 minute, by k, count and sum,
# a day of allowed lateness so that no event is late)
#   parallelism => N, start_from => TEXT, options => { ... },
#   brokers => LIST (default the PLAINTEXT brokers)
sub create_counting_stream
{
	my ($node, $stream, $topic, %opts) = @_;
	my $b = $opts{brokers} // brokers();
	my $par = $opts{parallelism} // 1;
	my $start = $opts{start_from} // 'earliest';
	my $o = '{}';
	if ($opts{options})
	{
		$o = '{' . join(', ',
			map {
				my $v = $opts{options}{$_};
				$v =~ s/\\/\\\\/g;
				$v =~ s/"/\\"/g;
				$v =~ s/\n/\\n/g;
				"\"$_\": \"$v\""
			} sort keys %{ $opts{options} }) . '}';
	}
	$o =~ s/'/''/g;
	$node->safe_psql('postgres', qq{
BEGIN;
SELECT streamagg.create_stream(name => '$stream', topic => '$topic', brokers => '$b',
  columns => 'k text, v int, ts timestamptz', event_time => 'ts',
  parallelism => $par, start_from => '$start', options => '$o');
SELECT streamagg.create_window(name => '${stream}_w', stream => '$stream',
  size => '1 minute', group_by => 'k', allowed_lateness => '1 day',
  aggregates => 'count(*) AS n, sum(v) AS s');
COMMIT;});
	return;
}

# wait_caught_up($node, $stream, $messages, $timeout): every message
# committed and lag 0
sub wait_caught_up
{
	my ($node, $stream, $n, $timeout) = @_;
	return wait_for($node,
		"SELECT coalesce(sum(messages), 0) || ' ' || coalesce(sum(lag), -1)
		   FROM streamagg.partitions WHERE stream = '$stream'",
		"$n 0", $timeout // 120);
}

1;
