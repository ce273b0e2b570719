# Helpers shared by the pg_streamagg TAP tests (test/t/*.pl).
#
# The tests are run by test/run_tests.sh, which starts a test broker for each
# script and exports KAFKA_BROKERS and MOCK_BROKER_DIR.  See test/README.md
# ("Harness") for the list of helpers.

package StreamAgg;

use strict;
use warnings;

use Carp;
use Cwd qw(abs_path);
use Exporter qw(import);
use Fcntl qw(O_WRONLY O_NONBLOCK);
use File::Basename qw(dirname);
use IPC::Run;
use POSIX qw(:errno_h);
use Test::More;
use Time::HiRes qw(usleep time);

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

our @EXPORT = qw(
  new_node brokers broker_dir broker_cmd create_topic
  produce consume_all escape_bytes unescape_bytes
  wait_for try_query worker_pids tool_path
);

# test/bin, next to test/lib where this file lives
my $TEST_DIR = abs_path(dirname(__FILE__) . '/..');

# Absolute path of a test tool built by `make -C test` (test/bin/NAME).
sub tool_path
{
	my ($name) = @_;
	my $path = "$TEST_DIR/bin/$name";
	croak "test tool $path is missing (run `make -C test`)" unless -x $path;
	return $path;
}

# new_node($name, %opts): init + configure + start a PostgreSQL::Test::Cluster.
#   preload          => 0 to leave shared_preload_libraries unset (default 1)
#   log_min_messages => level (default 'info')
#   conf             => extra postgresql.conf text (string or array of lines)
#   init             => hashref of options for $node->init
#   start            => 0 to return the node without starting it
sub new_node
{
	my ($name, %opts) = @_;
	my $preload = exists $opts{preload} ? $opts{preload} : 1;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(%{ $opts{init} // {} });

	my @conf;
	push @conf, "shared_preload_libraries = 'pg_streamagg'" if $preload;
	push @conf, 'max_worker_processes = 32';
	push @conf, 'log_min_messages = ' . ($opts{log_min_messages} // 'info');
	if (defined $opts{conf})
	{
		push @conf,
		  ref $opts{conf} eq 'ARRAY' ? @{ $opts{conf} } : ($opts{conf});
	}
	$node->append_conf('postgresql.conf', join("\n", @conf) . "\n");

	$node->start unless exists $opts{start} && !$opts{start};
	return $node;
}

# Bootstrap list of the test broker.
sub brokers
{
	my $b = $ENV{KAFKA_BROKERS};
	croak 'KAFKA_BROKERS is not set: run the tests through `make test`'
	  unless defined $b && $b ne '';
	return $b;
}

# Directory of the test broker (bootstrap, control FIFO, control.log).
sub broker_dir
{
	my $d = $ENV{MOCK_BROKER_DIR};
	croak 'MOCK_BROKER_DIR is not set: run the tests through `make test`'
	  unless defined $d && $d ne '';
	return $d;
}

# Size of control.log now (answers to new commands are appended after it).
sub _control_log_size
{
	my $log = broker_dir() . '/control.log';
	return -e $log ? -s $log : 0;
}

# Write one line to the control FIFO without blocking forever when the
# broker is not reading it.
sub _write_fifo
{
	my ($line, $timeout) = @_;
	my $fifo = broker_dir() . '/control';
	my $deadline = time + $timeout;
	my $fh;
	while (1)
	{
		last if sysopen($fh, $fifo, O_WRONLY | O_NONBLOCK);
		croak "cannot open broker control FIFO $fifo: $!"
		  unless $! == ENXIO || $! == ENOENT;
		croak "broker control FIFO $fifo has no reader after ${timeout}s"
		  if time > $deadline;
		usleep(50_000);
	}
	my $buf = "$line\n";
	my $n = syswrite($fh, $buf);
	close $fh;
	croak "short write to $fifo: $!" unless defined $n && $n == length $buf;
	return;
}

# Read the complete lines appended to control.log after byte $offset.
sub _control_lines_after
{
	my ($offset) = @_;
	my $log = broker_dir() . '/control.log';
	open my $fh, '<', $log or return ();
	binmode $fh;
	seek $fh, $offset, 0;
	local $/;
	my $text = <$fh> // '';
	close $fh;
	$text =~ s/[^\n]*\z//;    # drop an incomplete last line
	return split /\n/, $text;
}

# broker_cmd($line, %opts): send a fault/control command to the test broker
# and wait for its answer in control.log.  The broker answers every command
# with "ok COMMAND" or "error COMMAND: REASON"; returns the answer line, and
# dies on an error answer unless allow_error => 1.
#   timeout => seconds (default 20)
sub broker_cmd
{
	my ($line, %opts) = @_;
	my $timeout = $opts{timeout} // 20;
	croak "broker command must be one line" if $line =~ /[\r\n]/;
	(my $cmd = $line) =~ s/^[ \t]+|[ \t]+$//g;
	croak "empty broker command" if $cmd eq '' || $cmd =~ /^#/;

	my $offset = _control_log_size();
	_write_fifo($cmd, $timeout);

	my $deadline = time + $timeout;
	while (1)
	{
		foreach my $answer (_control_lines_after($offset))
		{
			return $answer if $answer eq "ok $cmd";
			if (index($answer, "error $cmd: ") == 0)
			{
				croak "test broker rejected '$cmd': $answer"
				  unless $opts{allow_error};
				return $answer;
			}
		}
		if (time > $deadline)
		{
			my @seen = _control_lines_after($offset);
			croak "no answer from the test broker to '$cmd' after ${timeout}s"
			  . (@seen ? "; control.log got:\n" . join("\n", @seen) : '');
		}
		usleep(20_000);
	}
}

# create_topic($name, $partitions): create a topic on the test broker.
sub create_topic
{
	my ($name, $nparts, %opts) = @_;
	$nparts //= 1;
	croak "bad topic name '$name'" unless $name =~ /^[A-Za-z0-9._-]+$/;
	return broker_cmd("create $name $nparts", %opts);
}

# escape_bytes($bytes): batch-format escaping used by sa_produce.
# Characters above 0xFF are UTF-8 encoded first.
sub escape_bytes
{
	my ($s) = @_;
	croak 'escape_bytes(undef)' unless defined $s;
	if ($s =~ /[^\x00-\xff]/)
	{
		utf8::encode($s);
	}
	my $out = '';
	foreach my $c (split //, $s)
	{
		my $o = ord $c;
		if    ($c eq '\\') { $out .= '\\\\'; }
		elsif ($c eq "\t") { $out .= '\\t'; }
		elsif ($c eq "\n") { $out .= '\\n'; }
		elsif ($c eq "\r") { $out .= '\\r'; }
		elsif ($o >= 0x20 && $o < 0x7f) { $out .= $c; }
		else { $out .= sprintf('\\x%02x', $o); }
	}
	return $out;
}

# unescape_bytes($text): inverse of escape_bytes (returns bytes).
sub unescape_bytes
{
	my ($s) = @_;
	croak 'unescape_bytes(undef)' unless defined $s;
	$s =~ s/\\(x([0-9A-Fa-f]{2})|[\\tnr])/
	  defined $2 ? chr(hex $2)
	  : $1 eq 't' ? "\t"
	  : $1 eq 'n' ? "\n"
	  : $1 eq 'r' ? "\r"
	  : '\\'/ge;
	return $s;
}

# produce($topic, \@rows, %opts): send messages with test/bin/sa_produce.
# Each row: { partition => -1|N, key => bytes|undef, ts => epoch_ms|undef,
#             payload => bytes|undef }  (undef key/payload = NULL).
#   lz4     => 1 to produce lz4-compressed batches
#   timeout => seconds (default 60)
# Returns the number of messages produced; dies on any failure.
sub produce
{
	my ($topic, $rows, %opts) = @_;
	croak 'produce: rows must be an array ref' unless ref $rows eq 'ARRAY';
	my $input = '';
	foreach my $r (@$rows)
	{
		my $part = $r->{partition} // -1;
		croak "produce: bad partition '$part'" unless $part =~ /^-?\d+$/;
		my $ts = $r->{ts} // '';
		croak "produce: bad timestamp '$ts'" unless $ts =~ /^\d*$/;
		$input .= join("\t",
			$part,
			defined $r->{key}     ? escape_bytes($r->{key})     : '\\N',
			$ts,
			defined $r->{payload} ? escape_bytes($r->{payload}) : '\\N')
		  . "\n";
	}
	my @cmd = (tool_path('sa_produce'), '-b', brokers(), '-t', $topic, '-l');
	push @cmd, '-z', 'lz4' if $opts{lz4};
	my ($out, $err) = ('', '');
	my $timeout = $opts{timeout} // 60;
	my $ok = eval {
		IPC::Run::run(\@cmd, '<', \$input, '>', \$out, '2>', \$err,
			IPC::Run::timeout($timeout));
	};
	my $exc = $@;
	my $n = scalar @$rows;
	if ($exc || !$ok || $out !~ /^produced $n$/m)
	{
		my $why = $exc ? "($exc)" : 'exit status ' . ($? >> 8);
		croak "sa_produce to topic '$topic' failed $why\n"
		  . "stdout: $out\nstderr: $err";
	}
	return $n;
}

# consume_all($topic, %opts): read the whole topic back with kcat.
# Returns a list of { partition, offset, ts, key, payload } hashrefs
# (key/payload undef for NULL), ordered by partition then offset.
#   timeout => seconds (default 30)
sub consume_all
{
	my ($topic, %opts) = @_;
	my @cmd = (
		'kcat', '-C', '-b', brokers(), '-t', $topic,
		'-o', 'beginning', '-e', '-q',
		'-f', '%p\t%o\t%T\t%K\t%S\t%k%s\n');
	my ($out, $err) = ('', '');
	my $timeout = $opts{timeout} // 30;
	my $ok = eval {
		IPC::Run::run(\@cmd, '>', \$out, '2>', \$err,
			IPC::Run::timeout($timeout));
	};
	my $exc = $@;
	croak "kcat on topic '$topic' failed "
	  . ($exc ? "($exc)" : 'exit status ' . ($? >> 8))
	  . "\nstderr: $err"
	  if $exc || !$ok;

	my @msgs;
	pos($out) = 0;
	while (pos($out) < length $out)
	{
		$out =~ /\G(-?\d+)\t(-?\d+)\t(-?\d+)\t(-?\d+)\t(-?\d+)\t/gc
		  or croak 'cannot parse kcat output at byte ' . pos($out);
		my ($p, $o, $ts, $klen, $slen) = ($1, $2, $3, $4, $5);
		my $at = pos($out);
		my $key = $klen >= 0 ? substr($out, $at, $klen) : undef;
		$at += $klen if $klen > 0;
		my $payload = $slen >= 0 ? substr($out, $at, $slen) : undef;
		$at += $slen if $slen > 0;
		croak "kcat output: missing record separator at byte $at"
		  unless substr($out, $at, 1) eq "\n";
		pos($out) = $at + 1;
		push @msgs,
		  {
			partition => $p,
			offset    => $o,
			ts        => $ts,
			key       => $key,
			payload   => $payload,
		  };
	}
	return sort {
		$a->{partition} <=> $b->{partition}
		  || $a->{offset} <=> $b->{offset}
	} @msgs;
}

# wait_for($node, $sql, $expected, $timeout_s, %opts): poll $sql on $node
# until its output (psql -At) equals $expected.  Returns 1/0; on timeout
# prints a diagnostic with the query, the expectation, the last output and
# the tail of the server log.
#   dbname => database (default 'postgres')
sub wait_for
{
	my ($node, $sql, $expected, $timeout_s, %opts) = @_;
	$expected  //= 't';
	$timeout_s //= 60;
	my $dbname = $opts{dbname} // 'postgres';
	my $t0 = time;

	# Polls with try_query, not poll_query_until: right after a crash the
	# server refuses connections, and psql can exit before the query is
	# written to it (IPC::Run then dies with a broken pipe).
	while (time - $t0 < $timeout_s)
	{
		my $out = try_query($node, $sql, dbname => $dbname);
		return 1 if defined $out && $out eq $expected;
		select(undef, undef, undef, 0.1);
	}

	my $logtail = '';
	if (open my $fh, '<', $node->logfile)
	{
		my @lines = <$fh>;
		close $fh;
		splice(@lines, 0, @lines - 30) if @lines > 30;
		$logtail = join '', @lines;
	}
	diag sprintf(
		"wait_for on node %s gave up after %.0fs (limit %ss)\n"
		  . "query:    %s\nexpected: %s\nserver log (tail):\n%s",
		$node->name, time - $t0, $timeout_s, $sql, $expected, $logtail);
	return 0;
}

# try_query($node, $sql, %opts): the output of $sql (psql -At), or undef
# when it fails, also while the server is restarting after a crash.
#   dbname => database (default 'postgres')
sub try_query
{
	my ($node, $sql, %opts) = @_;
	my ($ret, $out);
	local $SIG{PIPE} = 'IGNORE';
	eval { ($ret, $out) = $node->psql($opts{dbname} // 'postgres', $sql); 1 }
	  or return undef;
	return (defined $ret && $ret == 0) ? $out : undef;
}

# worker_pids($node, $pattern): pids of pg_streamagg background workers whose
# backend_type matches the SQL LIKE $pattern (default: all of them).
sub worker_pids
{
	my ($node, $pattern) = @_;
	$pattern //= '%pg_streamagg%';
	(my $quoted = $pattern) =~ s/'/''/g;
	my $out = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity "
		  . "WHERE backend_type LIKE '%pg_streamagg%' "
		  . "AND backend_type LIKE '$quoted' ORDER BY pid");
	return grep { length } split /\n/, $out;
}

1;
