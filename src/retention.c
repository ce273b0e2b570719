/*-------------------------------------------------------------------------
 *
 * retention.c
 *		Deleting window rows that have aged out.
 *
 * A window with `retention` keeps rows whose end lies less than that far
 * behind the stream's committed watermark.  Worker 0 deletes the older
 * ones between batches: at most once a second per window, a few thousand
 * rows per transaction, as the stream's owner (the tables are the
 * owner's, and so are their triggers).
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#define SA_RETENTION_ROWS 5000

/* Delete one chunk of a window's old rows (and their avg state) as the owner. */
static uint64
delete_chunk(SaWorker *w, SaWindow *win, TimestampTz before)
{
	Oid			types[1] = {TIMESTAMPTZOID};
	Datum		values[1] = {TimestampTzGetDatum(before)};
	SaUserContext uctx;
	uint64		deleted;
	/* a sliced window's rows to expire are its closed windows */
	const char *table = win->sliced ? win->closed_name : win->result_name;

	sa_enter_owner(w->st->owner, &uctx);
	SPI_execute_with_args(psprintf("DELETE FROM %s WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY("
								   "SELECT ctid FROM %s WHERE window_end OPERATOR(pg_catalog.<) $1 LIMIT %d))",
								   table, table, SA_RETENTION_ROWS),
						  1, types, values, NULL, false, 0);
	deleted = SPI_processed;
	if (win->state_name)
	{
		StringInfoData sql;

		initStringInfo(&sql);
		appendStringInfo(&sql, "DELETE FROM %s s WHERE s.window_start OPERATOR(pg_catalog.<) $1 AND NOT EXISTS "
						 "(SELECT 1 FROM %s r WHERE r.window_start OPERATOR(pg_catalog.=) s.window_start",
						 win->state_name, win->result_name);
		for (int g = 0; g < win->ngroups; g++)
			appendStringInfo(&sql, " AND r.%s IS NOT DISTINCT FROM s.%s",
							 quote_identifier(win->groups[g].name),
							 quote_identifier(win->groups[g].name));
		appendStringInfoChar(&sql, ')');
		SPI_execute_with_args(sql.data, 1, types, values, NULL, false, 0);
	}
	sa_leave(&uctx);
	return deleted;
}

/*
 * Delete window rows whose end is more than `retention` behind the
 * committed watermark: a few thousand rows per transaction, between
 * batches, at most once a second per window (worker 0 only).
 */
void
sa_run_retention(SaWorker *w)
{
	TimestampTz now = GetCurrentTimestamp();

	if (w->args.index != 0 || TIMESTAMP_NOT_FINITE(w->committed_watermark))
		return;
	for (int i = 0; i < w->nwindows; i++)
	{
		SaWindow   *win = w->windows[i];
		uint64		deleted;

		if (win->retention_us < 0 || now - win->retention_done < USECS_PER_SEC)
			continue;
		win->retention_done = now;
		/* a chained window's last closed window may go: the next is put together anew */
		if (win->sliced && !TIMESTAMP_NOT_FINITE(win->closed_until) &&
			w->committed_watermark - win->retention_us > win->closed_until - win->slide_us)
			win->chain_ok = false;
		do
		{
			TimestampTz wm;

			sa_handle_interrupts();
			sa_begin_xact();
			wm = sa_catalog_watermark(w->st->name);
			deleted = TIMESTAMP_NOT_FINITE(wm) ? 0 :
				delete_chunk(w, win, wm - win->retention_us);
			sa_commit_xact();
		} while (deleted == SA_RETENTION_ROWS);
	}
}
