/*-------------------------------------------------------------------------
 *
 * catalog.c
 *		Every query on the extension's own tables (streamagg.streams,
 *		windows, offsets), apart from the batch's writes in sink.c.
 *
 * Each statement is fixed text, run through run() in the catalog context
 * of usercontext.c: as the owner of the extension's tables, with
 * search_path = pg_catalog, pg_temp.  No user text is ever part of it;
 * user values go in as parameters.  Callers are connected to SPI and in a
 * transaction; results are copied into the caller's memory context.
 *
 *-------------------------------------------------------------------------
 */
#include "pg_streamagg.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#define TEXT_ARG(s) CStringGetTextDatum(s)

/* Run one catalog statement; returns the number of rows processed. */
static uint64
run(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
	bool read_only, int expect)
{
	SaUserContext ctx;
	int			rc;

	sa_enter_catalog(&ctx);
	rc = SPI_execute_with_args(sql, nargs, types, values, nulls, read_only, 0);
	sa_leave(&ctx);
	if (rc < 0 || (expect != 0 && rc != expect))
		elog(ERROR, "catalog statement failed (%s): %s", SPI_result_code_string(rc), sql);
	return SPI_processed;
}

/* A statement with the stream (or window) name as its only parameter. */
static uint64
run_name(const char *sql, const char *name, bool read_only, int expect)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {TEXT_ARG(name)};

	return run(sql, 1, types, values, NULL, read_only, expect);
}

static Datum
getbin(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

/* Text of a result column, in the caller's memory context. */
static char *
gettext_in(MemoryContext cxt, int row, int col)
{
	char	   *v = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col);

	return v ? MemoryContextStrdup(cxt, v) : NULL;
}

/* ---------- streams ---------- */

bool
sa_catalog_stream_exists(const char *name)
{
	return run_name("SELECT 1 FROM streamagg.streams WHERE name = $1", name, true, SPI_OK_SELECT) > 0;
}

/*
 * Lock a stream's row until the end of the transaction: FOR UPDATE by the
 * API, FOR SHARE by a worker setting itself up, so that definitions never
 * change in the middle of a setup.  Returns false if there is no such
 * stream.
 */
bool
sa_catalog_lock_stream(const char *name, bool exclusive)
{
	return run_name(exclusive ?
					"SELECT 1 FROM streamagg.streams WHERE name = $1 FOR UPDATE" :
					"SELECT 1 FROM streamagg.streams WHERE name = $1 FOR SHARE",
					name, false, SPI_OK_SELECT) > 0;
}

/* A stream's owner, or InvalidOid when there is no such stream. */
Oid
sa_catalog_stream_owner(const char *name)
{
	bool		isnull;

	if (run_name("SELECT owner::oid FROM streamagg.streams WHERE name = $1",
				 name, true, SPI_OK_SELECT) == 0)
		return InvalidOid;
	return DatumGetObjectId(getbin(0, 1, &isnull));
}

bool
sa_catalog_stream_running(const char *name)
{
	return run_name("SELECT 1 FROM streamagg.streams WHERE name = $1 AND state = 'running'",
					name, true, SPI_OK_SELECT) > 0;
}

/* Workers the running streams of a role ask for, here. */
int64
sa_catalog_role_workers(Oid role)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(role)};
	bool		isnull;
	Datum		d;

	run("SELECT pg_catalog.sum(parallelism) FROM streamagg.streams "
		"WHERE owner = $1::pg_catalog.regrole AND state = 'running'",
		1, types, values, NULL, true, SPI_OK_SELECT);
	d = getbin(0, 1, &isnull);
	return isnull ? 0 : DatumGetInt64(d);
}

/* Load a stream definition, in the caller's memory context. */
SaStream *
sa_load_stream(const char *name)
{
	MemoryContext cxt = CurrentMemoryContext;
	SaStream   *st;
	bool		isnull;
	char	   *columns;
	char	   *event_time;

	if (run_name("SELECT topic, brokers, columns, format, event_time, "
				 "COALESCE(restart_from, start_from), "
				 "parallelism, on_error, options, owner::oid, "
				 "COALESCE(skip_partition, -1), COALESCE(skip_offset, -1) "
				 "FROM streamagg.streams WHERE name = $1", name, true, SPI_OK_SELECT) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("stream \"%s\" does not exist", name)));
	MemoryContextSwitchTo(cxt);
	st = palloc0(sizeof(SaStream));
	st->name = pstrdup(name);
	st->topic = gettext_in(cxt, 0, 1);
	st->brokers = gettext_in(cxt, 0, 2);
	columns = gettext_in(cxt, 0, 3);
	st->format = sa_parse_format(gettext_in(cxt, 0, 4));
	event_time = gettext_in(cxt, 0, 5);
	st->start_from = gettext_in(cxt, 0, 6);
	st->parallelism = DatumGetInt32(getbin(0, 7, &isnull));
	st->on_error = sa_parse_on_error(gettext_in(cxt, 0, 8));
	st->options = DatumGetJsonbPCopy(getbin(0, 9, &isnull));
	st->owner = DatumGetObjectId(getbin(0, 10, &isnull));
	st->skip_partition = DatumGetInt32(getbin(0, 11, &isnull));
	st->skip_offset = DatumGetInt64(getbin(0, 12, &isnull));
	st->cols = sa_parse_columns(columns, &st->ncols);
	sa_add_meta_columns(st);
	st->event_col = event_time ? sa_column_index(st, event_time) : -1;
	sa_apply_stream_options(st, false);
	return st;
}

void
sa_catalog_insert_stream(SaStream *st, const char *columns, const char *format,
						 const char *event_time, const char *on_error)
{
	Oid			types[11] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		TEXTOID, INT4OID, TEXTOID, JSONBOID, OIDOID};
	Datum		values[11];
	char		nulls[11] = "          ";

	values[0] = TEXT_ARG(st->name);
	values[1] = TEXT_ARG(st->topic);
	values[2] = TEXT_ARG(st->brokers);
	values[3] = TEXT_ARG(columns);
	values[4] = TEXT_ARG(format);
	values[5] = event_time ? TEXT_ARG(event_time) : (Datum) 0;
	nulls[5] = event_time ? ' ' : 'n';
	values[6] = TEXT_ARG(st->start_from);
	values[7] = Int32GetDatum(st->parallelism);
	values[8] = TEXT_ARG(on_error);
	values[9] = JsonbPGetDatum(st->options);
	values[10] = ObjectIdGetDatum(st->owner);
	run("INSERT INTO streamagg.streams (name, topic, brokers, columns, format, "
		"event_time, start_from, parallelism, on_error, options, owner) "
		"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::pg_catalog.regrole)",
		11, types, values, nulls, false, SPI_OK_INSERT);
}

/* Running or paused; resuming clears the last error. */
void
sa_catalog_set_state(const char *name, const char *state)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {TEXT_ARG(name), TEXT_ARG(state)};

	run("UPDATE streamagg.streams SET state = $2, "
		"last_error = CASE WHEN $2 = 'running' THEN NULL ELSE last_error END "
		"WHERE name = $1", 2, types, values, NULL, false, SPI_OK_UPDATE);
}

/*
 * Record (message) or clear (NULL) why a stream cannot run.  The reason a
 * stream stopped stays until it is resumed or reset, whatever its other
 * workers see meanwhile.
 */
void
sa_catalog_set_last_error(const char *name, const char *message)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {TEXT_ARG(name), message ? TEXT_ARG(message) : (Datum) 0};
	char		nulls[2] = {' ', message ? ' ' : 'n'};

	run("UPDATE streamagg.streams SET last_error = $2 WHERE name = $1 "
		"AND last_error IS DISTINCT FROM $2 AND state <> 'stopped'",
		2, types, values, nulls, false, SPI_OK_UPDATE);
}

/* on_error = 'stop' met a bad message: stop the stream with the reason. */
void
sa_catalog_stop_stream(const char *name, const char *message, int32 partition, int64 offset)
{
	Oid			types[4] = {TEXTOID, TEXTOID, INT4OID, INT8OID};
	Datum		values[4] = {TEXT_ARG(name), TEXT_ARG(message), Int32GetDatum(partition),
	Int64GetDatum(offset)};

	char		nulls[4] = {' ', ' ', ' ', ' '};

	/*
	 * A stop that is not at a message (a truncated log) leaves nothing to
	 * skip; another worker's truncated partitions stopping the same stream
	 * add their reason to the first.
	 */
	if (partition < 0)
		nulls[2] = nulls[3] = 'n';
	run("UPDATE streamagg.streams SET state = 'stopped', "
		"last_error = CASE WHEN $3 IS NULL AND state = 'stopped' AND failed_partition IS NULL "
		"AND last_error IS NOT NULL AND strpos(last_error, $2) = 0 "
		"THEN last_error || '; ' || $2 ELSE $2 END, "
		"failed_partition = $3, failed_offset = $4 WHERE name = $1",
		4, types, values, nulls, false, SPI_OK_UPDATE);
}

/*
 * Record a range of offsets the stream could not read.  The same gap met
 * again (a stream resumed without a reset stops at it again) is recorded
 * once.  messages < 0: unknown.
 */
void
sa_catalog_insert_gap(const char *stream, int32 partition, int64 from_offset,
					  int64 to_offset, int64 messages, const char *reason)
{
	Oid			types[6] = {TEXTOID, INT4OID, INT8OID, INT8OID, INT8OID, TEXTOID};
	Datum		values[6] = {TEXT_ARG(stream), Int32GetDatum(partition),
		Int64GetDatum(from_offset), Int64GetDatum(to_offset), Int64GetDatum(messages),
	TEXT_ARG(reason)};
	char		nulls[6] = {' ', ' ', ' ', ' ', messages < 0 ? 'n' : ' ', ' '};

	run("INSERT INTO streamagg.gaps (stream, partition, from_offset, to_offset, messages, reason) "
		"SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS "
		"(SELECT 1 FROM streamagg.gaps g WHERE g.stream = $1 AND g.partition = $2 "
		"AND g.from_offset = $3 AND g.to_offset = $4 AND g.reason = $6)",
		6, types, values, nulls, false, SPI_OK_INSERT);
}

void
sa_catalog_delete_gaps(const char *stream)
{
	run_name("DELETE FROM streamagg.gaps WHERE stream = $1", stream, false, SPI_OK_DELETE);
}

/*
 * resume(skip => true): the message the stream stopped at becomes a dead
 * letter when it is read again.  Returns false when it stopped at none.
 */
bool
sa_catalog_skip_failed(const char *name)
{
	return run_name("UPDATE streamagg.streams SET skip_partition = failed_partition, "
					"skip_offset = failed_offset WHERE name = $1 AND failed_offset IS NOT NULL",
					name, false, SPI_OK_UPDATE) > 0;
}

bool
sa_catalog_has_last_error(const char *name)
{
	return run_name("SELECT 1 FROM streamagg.streams WHERE name = $1 AND last_error IS NOT NULL",
					name, true, SPI_OK_SELECT) > 0;
}

/* reset_offsets: where the stream starts again (start_from stays as given). */
void
sa_catalog_set_restart_from(const char *name, const char *restart_from)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {TEXT_ARG(name), TEXT_ARG(restart_from)};

	run("UPDATE streamagg.streams SET restart_from = $2 WHERE name = $1",
		2, types, values, NULL, false, SPI_OK_UPDATE);
}

void
sa_catalog_delete_dead_letters(const char *stream)
{
	run_name("DELETE FROM streamagg.dead_letters WHERE stream = $1", stream, false, SPI_OK_DELETE);
}

/* A stream's offsets, dead letters and definition (its windows are gone). */
void
sa_catalog_delete_stream(const char *name)
{
	sa_catalog_delete_offsets(name);
	sa_catalog_delete_dead_letters(name);
	sa_catalog_delete_gaps(name);
	run_name("DELETE FROM streamagg.streams WHERE name = $1", name, false, SPI_OK_DELETE);
}

/*
 * The streams that should have workers: running, with at least one
 * window.  A list of SaStreamRef in the caller's memory context.
 */
List *
sa_catalog_running_streams(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *result = NIL;
	uint64		n;

	n = run("SELECT s.name, s.parallelism, s.owner::oid FROM streamagg.streams s "
			"WHERE s.state = 'running' "
			"AND EXISTS (SELECT 1 FROM streamagg.windows w WHERE w.stream = s.name)",
			0, NULL, NULL, NULL, true, SPI_OK_SELECT);
	for (uint64 r = 0; r < n; r++)
	{
		SaStreamRef *ref = MemoryContextAllocZero(cxt, sizeof(SaStreamRef));
		bool		isnull;

		ref->name = gettext_in(cxt, r, 1);
		ref->parallelism = DatumGetInt32(getbin(r, 2, &isnull));
		ref->owner = DatumGetObjectId(getbin(r, 3, &isnull));
		result = lappend(result, ref);
	}
	MemoryContextSwitchTo(cxt);
	return result;
}

/* Names of the streams a role owns, in the caller's memory context. */
List *
sa_catalog_streams_owned_by(Oid role)
{
	MemoryContext cxt = CurrentMemoryContext;
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(role)};
	List	   *result = NIL;
	uint64		n;

	n = run("SELECT name FROM streamagg.streams WHERE owner = $1::pg_catalog.regrole ORDER BY name",
			1, types, values, NULL, true, SPI_OK_SELECT);
	for (uint64 r = 0; r < n; r++)
		result = lappend(result, gettext_in(cxt, r, 1));
	MemoryContextSwitchTo(cxt);
	return result;
}

/* The roles that own streams here (a list of Oid). */
List *
sa_catalog_stream_owners(void)
{
	List	   *result = NIL;
	uint64		n;

	n = run("SELECT DISTINCT owner::oid FROM streamagg.streams", 0, NULL, NULL, NULL, true, SPI_OK_SELECT);
	for (uint64 r = 0; r < n; r++)
	{
		bool		isnull;

		result = lappend_oid(result, DatumGetObjectId(getbin(r, 1, &isnull)));
	}
	return result;
}

/* REASSIGN OWNED: the streams of one role go to another. */
void
sa_catalog_reassign(Oid from, Oid to)
{
	Oid			types[2] = {OIDOID, OIDOID};
	Datum		values[2] = {ObjectIdGetDatum(from), ObjectIdGetDatum(to)};

	run("UPDATE streamagg.streams SET owner = $2::pg_catalog.regrole "
		"WHERE owner = $1::pg_catalog.regrole",
		2, types, values, NULL, false, SPI_OK_UPDATE);
}

/* ---------- windows ---------- */

bool
sa_catalog_window_exists(const char *name)
{
	return run_name("SELECT 1 FROM streamagg.windows WHERE name = $1", name, true, SPI_OK_SELECT) > 0;
}

/* values/nulls: the 13 columns in the order of the INSERT below. */
void
sa_catalog_insert_window(Datum *values, const char *nulls)
{
	Oid			types[15] = {TEXTOID, TEXTOID, OIDOID, OIDOID, TEXTOID, INTERVALOID, INTERVALOID,
		INTERVALOID, TEXTOID, TEXTOID, TEXTOID, INTERVALOID, INTERVALOID, OIDOID, OIDOID};

	run("INSERT INTO streamagg.windows (name, stream, result_table, state_table, "
		"kind, size, slide, session_gap, group_by, aggregates, filter, "
		"allowed_lateness, retention, slice_table, closed_table) "
		"VALUES ($1, $2, $3::pg_catalog.regclass, $4::pg_catalog.regclass, $5, $6, $7, $8, "
		"$9, $10, $11, $12, $13, $14::pg_catalog.regclass, $15::pg_catalog.regclass)",
		15, types, values, nulls, false, SPI_OK_INSERT);
}

/*
 * A window's stream, result table (or view) and its other tables: avg
 * state, slices, closed windows (InvalidOid where there is none; rels
 * may be NULL).  Returns false when there is no such window.
 */
bool
sa_catalog_window_lookup(const char *name, char **stream, Oid *result, Oid *state)
{
	Oid			rels[3];

	if (!sa_catalog_window_rels(name, stream, result, rels))
		return false;
	*state = rels[0];
	return true;
}

bool
sa_catalog_window_rels(const char *name, char **stream, Oid *result, Oid *rels)
{
	MemoryContext cxt = CurrentMemoryContext;
	bool		isnull;

	if (run_name("SELECT stream, result_table::oid, state_table::oid, slice_table::oid, "
				 "closed_table::oid FROM streamagg.windows WHERE name = $1",
				 name, true, SPI_OK_SELECT) == 0)
		return false;
	*stream = gettext_in(cxt, 0, 1);
	*result = DatumGetObjectId(getbin(0, 2, &isnull));
	for (int i = 0; i < 3; i++)
	{
		Datum		d = getbin(0, 3 + i, &isnull);

		rels[i] = isnull ? InvalidOid : DatumGetObjectId(d);
	}
	MemoryContextSwitchTo(cxt);
	return true;
}

void
sa_catalog_delete_window(const char *name)
{
	run_name("DELETE FROM streamagg.windows WHERE name = $1", name, false, SPI_OK_DELETE);
}

/* Names of a stream's windows, in the caller's memory context. */
List *
sa_catalog_window_names(const char *stream)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *result = NIL;
	uint64		n;

	n = run_name("SELECT name FROM streamagg.windows WHERE stream = $1 ORDER BY name",
				 stream, true, SPI_OK_SELECT);
	for (uint64 r = 0; r < n; r++)
		result = lappend(result, gettext_in(cxt, r, 1));
	MemoryContextSwitchTo(cxt);
	return result;
}

/*
 * The window definitions of a stream, left in SPI_tuptable for window.c
 * (columns: name, kind, result_table, state_table, size, slide,
 * session_gap, group_by, aggregates, filter, allowed_lateness, retention,
 * slice_table, closed_table).
 */
uint64
sa_catalog_window_rows(const char *stream)
{
	return run_name("SELECT name, kind, result_table::oid, state_table::oid, size, slide, "
					"session_gap, group_by, aggregates, filter, allowed_lateness, retention, "
					"slice_table::oid, closed_table::oid FROM streamagg.windows WHERE stream = $1 ORDER BY created_at, name",
					stream, true, SPI_OK_SELECT);
}

/* ---------- offsets ---------- */

/* Make running workers of a stream drop their batch and reload. */
void
sa_catalog_reset_epoch(const char *stream)
{
	run_name("UPDATE streamagg.offsets SET epoch = 0 WHERE stream = $1", stream, false, SPI_OK_UPDATE);
}

void
sa_catalog_delete_offsets(const char *stream)
{
	run_name("DELETE FROM streamagg.offsets WHERE stream = $1", stream, false, SPI_OK_DELETE);
}

bool
sa_catalog_has_offsets(const char *stream)
{
	return run_name("SELECT 1 FROM streamagg.offsets WHERE stream = $1 LIMIT 1",
					stream, false, SPI_OK_SELECT) > 0;
}

int64
sa_catalog_next_epoch(void)
{
	bool		isnull;

	run("SELECT pg_catalog.nextval('streamagg.epoch_seq')", 0, NULL, NULL, NULL, false, SPI_OK_SELECT);
	return DatumGetInt64(getbin(0, 1, &isnull));
}

static void
read_claim(SaClaim *claim)
{
	bool		isnull;
	Datum		d;

	claim->next_offset = DatumGetInt64(getbin(0, 1, &isnull));
	d = getbin(0, 2, &isnull);
	claim->max_event_time = isnull ? DT_NOBEGIN : DatumGetTimestampTz(d);
	d = getbin(0, 3, &isnull);
	claim->watermark = isnull ? DT_NOBEGIN : DatumGetTimestampTz(d);
}

/*
 * Stamp a partition's offsets row with our epoch.  Returns false when the
 * partition has no row yet.
 */
bool
sa_catalog_claim_partition(const char *stream, int32 partition, int64 epoch, SaClaim *claim)
{
	Oid			types[3] = {TEXTOID, INT4OID, INT8OID};
	Datum		values[3] = {TEXT_ARG(stream), Int32GetDatum(partition), Int64GetDatum(epoch)};

	if (run("UPDATE streamagg.offsets SET epoch = $3 "
			"WHERE stream = $1 AND partition = $2 "
			"RETURNING next_offset, max_event_time, watermark",
			3, types, values, NULL, false, SPI_OK_UPDATE_RETURNING) == 0)
		return false;
	read_claim(claim);
	return true;
}

/* A new partition's offsets row, claimed with our epoch. */
void
sa_catalog_insert_partition(const char *stream, int32 partition, int64 epoch,
							int64 next_offset, SaClaim *claim)
{
	Oid			types[4] = {TEXTOID, INT4OID, INT8OID, INT8OID};
	Datum		values[4] = {TEXT_ARG(stream), Int32GetDatum(partition), Int64GetDatum(epoch),
	Int64GetDatum(next_offset)};

	run("INSERT INTO streamagg.offsets (stream, partition, epoch, next_offset) "
		"VALUES ($1, $2, $3, $4) RETURNING next_offset, max_event_time, watermark",
		4, types, values, NULL, false, SPI_OK_INSERT_RETURNING);
	read_claim(claim);
}

/*
 * Place a partition at the start of a stream (or of a reset) for
 * whichever worker will own it; a row already there stays.
 */
void
sa_catalog_place_partition(const char *stream, int32 partition, int64 next_offset)
{
	Oid			types[3] = {TEXTOID, INT4OID, INT8OID};
	Datum		values[3] = {TEXT_ARG(stream), Int32GetDatum(partition), Int64GetDatum(next_offset)};

	run("INSERT INTO streamagg.offsets (stream, partition, epoch, next_offset) "
		"VALUES ($1, $2, 0, $3) ON CONFLICT DO NOTHING",
		3, types, values, NULL, false, SPI_OK_INSERT);
}

/*
 * All partitions of a stream with their largest committed event time,
 * left in SPI_tuptable (columns: partition, max_event_time).  Not read
 * only: the rows this transaction just placed are seen too.
 */
uint64
sa_catalog_partition_rows(const char *stream)
{
	return run_name("SELECT partition, max_event_time FROM streamagg.offsets WHERE stream = $1",
					stream, false, SPI_OK_SELECT);
}

/* How many of a stream's offsets rows carry this epoch. */
int64
sa_catalog_count_epoch(const char *stream, int64 epoch)
{
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2] = {TEXT_ARG(stream), Int64GetDatum(epoch)};
	bool		isnull;

	run("SELECT pg_catalog.count(*) FROM streamagg.offsets WHERE stream = $1 AND epoch = $2",
		2, types, values, NULL, true, SPI_OK_SELECT);
	return DatumGetInt64(getbin(0, 1, &isnull));
}

/*
 * The stream's committed watermark as this transaction sees it: the
 * smallest of its workers' watermarks at their last commit (the one the
 * _final views use).  DT_NOBEGIN when unknown.
 */
TimestampTz
sa_catalog_watermark(const char *stream)
{
	bool		isnull;
	Datum		d;

	run_name("SELECT pg_catalog.min(watermark) FROM streamagg.offsets WHERE stream = $1",
			 stream, false, SPI_OK_SELECT);
	d = getbin(0, 1, &isnull);
	return isnull ? DT_NOBEGIN : DatumGetTimestampTz(d);
}
