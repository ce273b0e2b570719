/*-------------------------------------------------------------------------
 *
 * guc.c
 *		The streamagg.* settings.
 *
 * Everything that a reload can apply is PGC_SIGHUP; only the size of the
 * shared worker table needs a restart.  Per-stream overrides of the batch
 * bounds live in the stream's options (see catalog.c).
 *
 *-------------------------------------------------------------------------
 */
#include "pg_streamagg.h"

#include "utils/guc.h"

int			sa_max_workers = 32;
int			sa_batch_size = 200000;
int			sa_batch_time_ms = 100;
int			sa_max_restart_delay_s = 60;
int			sa_idle_timeout_ms = 10000;
int			sa_queue_kbytes = 32768;
int			sa_batch_memory_kb = 65536;
int			sa_max_workers_per_stream = 4;
int			sa_max_workers_per_role = 8;

void
sa_define_gucs(void)
{
	DefineCustomIntVariable("streamagg.max_workers",
							"Maximum number of stream workers in the cluster.",
							"Sizes the shared table of workers; each stream uses parallelism workers.",
							&sa_max_workers, 32, 1, 1024,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("streamagg.batch_size",
							"Messages after which a worker commits a batch.",
							"Batches reach this size while a backlog drains; when caught up, streamagg.batch_time closes them first.",
							&sa_batch_size, 200000, 1, 10000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("streamagg.batch_time",
							"Time after which a worker commits a batch that is not full.",
							"Bounds how stale window tables can be at low message rates.",
							&sa_batch_time_ms, 100, 1, 600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);

	DefineCustomIntVariable("streamagg.batch_memory",
							"Memory a worker's batch may hold before it is committed early.",
							"Counts the in-memory aggregation (groups, sessions, dead letters) of one batch; a batch reaching it commits before streamagg.batch_size.  A stream's option streamagg.batch_memory overrides it.",
							&sa_batch_memory_kb, 65536, SA_BATCH_MEMORY_MIN_KB, MAX_KILOBYTES,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);

	DefineCustomIntVariable("streamagg.max_restart_delay",
							"Longest wait before restarting a failing stream worker.",
							"The delay doubles with every failure in a row, from one second up to this.",
							&sa_max_restart_delay_s, 60, 1, 3600,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);

	DefineCustomIntVariable("streamagg.idle_timeout",
							"Default time after which a partition without messages stops holding the watermark back.",
							"A stream's option streamagg.idle_timeout overrides it.",
							&sa_idle_timeout_ms, 10000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);

	DefineCustomIntVariable("streamagg.queue_kbytes",
							"Prefetch bound of each worker's Kafka consumer, in kilobytes.",
							"Passed to librdkafka as queued.max.messages.kbytes unless the stream's options set it.",
							&sa_queue_kbytes, 32768, 1024, 2097151,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);

	DefineCustomIntVariable("streamagg.max_workers_per_stream",
							"Most workers (parallelism) a stream of a non-superuser may ask for.",
							"Worker slots are shared by the whole cluster; superusers are not limited.",
							&sa_max_workers_per_stream, 4, 1, 256,
							PGC_SIGHUP, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("streamagg.max_workers_per_role",
							"Most workers the running streams of one non-superuser may ask for, per database.",
							"Counted over the role's running streams at create_stream and resume; superusers are not limited.",
							&sa_max_workers_per_role, 8, 1, 1024,
							PGC_SIGHUP, 0, NULL, NULL, NULL);

#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("streamagg");
#else
	EmitWarningsOnPlaceholders("streamagg");
#endif
}
