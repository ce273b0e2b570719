/*-------------------------------------------------------------------------
 *
 * eventtime.c
 *		Event time: each message's, the stream's watermark, and telling
 *		listeners which windows became final.
 *
 * The watermark is the smallest, over the stream's partitions, of the
 * largest event time read in each.  It moves row by row as rows are read,
 * is stored with the offsets at each commit and recovered from there
 * after a crash.  A window is closed once window_end + allowed_lateness
 * <= watermark; its rows then show in the _final view and a notification
 * goes out on channel streamagg_closed.
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "commands/async.h"
#include "lib/stringinfo.h"
#include "utils/json.h"
#include "utils/timestamp.h"

/*
 * How far behind the watermark a window's rows are final.  For time
 * windows it is the allowed lateness.  A session can still be extended by
 * an on-time row while one fits before its end: such a row has t + gap +
 * lateness > watermark and t < window_end, so a session row is final only
 * once window_end + gap + lateness <= watermark; then no row that is not
 * late can change it (a row behind that is counted only when every session
 * it touches is still open: sa_session_late).  The _final view,
 * final_until and the notifications all use this horizon.
 */
int64
sa_final_horizon(SaWindow *win)
{
	return win->lateness_us + (win->kind == SA_WIN_SESSION ? win->gap_us : 0);
}

char *
sa_ts_text(TimestampTz t)
{
	return pstrdup(timestamptz_to_str(t));
}

/* The event time of the decoded message, or false with *error. */
bool
sa_event_time(SaWorker *w, int64 *t, char **error)
{
	int			col = w->st->event_col >= 0 ? w->st->event_col : w->st->ncols + SA_META_TIMESTAMP;
	ParamExternData *prm = &w->params->params[col];

	if (prm->isnull)
	{
		*error = w->st->event_col >= 0 ?
			psprintf("event time column \"%s\" is null", w->st->cols[col].name) :
			pstrdup("message has no Kafka timestamp");
		return false;
	}
	*t = DatumGetTimestampTz(prm->value);
	if (TIMESTAMP_NOT_FINITE(*t))
	{
		*error = w->st->event_col >= 0 ?
			psprintf("event time column \"%s\" is %s, not a point in time",
					 w->st->cols[col].name, sa_ts_text(*t)) :
			psprintf("Kafka timestamp is %s, not a point in time", sa_ts_text(*t));
		return false;
	}

	/*
	 * Window arithmetic needs room on both sides of the event time (and is
	 * done in Unix time, 30 years past PostgreSQL's epoch).  An event time
	 * at the very ends of the timestamp range is refused here, before it
	 * can drag the watermark to the year 294276.
	 */
	if (*t < MIN_TIMESTAMP + 2 * w->max_span ||
		*t > END_TIMESTAMP - ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY) - 2 * w->max_span)
	{
		*error = psprintf("event time %s is out of the range windows can hold", sa_ts_text(*t));
		return false;
	}
	return true;
}

/*
 * The watermark: the smallest, over the stream's partitions, of the
 * largest event time read in each.  A partition that has been silent for
 * idle_timeout and has nothing unread in Kafka does not hold it back (a
 * partition that is merely slow to be fetched, or whose worker is not
 * running, does); when all are idle it
 * is the largest event time read anywhere.  It never moves backwards.
 */
void
sa_update_watermark(SaWorker *w, TimestampTz now)
{
	TimestampTz low = DT_NOEND;
	TimestampTz high = DT_NOBEGIN;
	bool		active = false;

	for (int i = 0; i < w->nparts + w->nothers; i++)
	{
		bool		mine = i < w->nparts;
		SaPartition *part = mine ? &w->parts[i] : NULL;
		SaPartLive *other = mine ? NULL : &w->others[i - w->nparts];
		TimestampTz met = mine ? part->max_event_time : other->max_event_time;
		TimestampTz last = mine ? part->last_message : other->last_message;
		int64		hw = mine ? part->high_watermark : other->high_watermark;
		int64		position = mine ? part->next_offset : other->committed;

		if (met > high)
			high = met;
		if (w->idle_us > 0 && now - last > w->idle_us && hw >= 0 && position >= hw)
			continue;
		active = true;
		if (met < low)
			low = met;
	}
	if (!active)
		low = high;
	if (low > w->watermark && !TIMESTAMP_NOT_FINITE(low))
		w->watermark = low;
}

/*
 * Tell listeners (channel streamagg_closed) which windows became final in
 * this transaction: one notification per window whose final_until
 * (watermark - allowed_lateness) passed at least one window end.  Only
 * worker 0 of a stream notifies.
 */
void
sa_notify_closed_windows(SaWorker *w)
{
	TimestampTz wm = w->args.index == 0 ? sa_catalog_watermark(w->st->name) : DT_NOBEGIN;

	for (int i = 0; i < w->nwindows; i++)
	{
		SaWindow   *win = w->windows[i];
		TimestampTz until;
		TimestampTz from = win->final_until;
		StringInfoData payload;

		win->pending_until = win->final_until;
		if (w->args.index != 0 || TIMESTAMP_NOT_FINITE(wm) ||
			TIMESTAMP_NOT_FINITE(w->min_event))
			continue;
		/* windows ending before the first event read never held anything */
		if (TIMESTAMP_NOT_FINITE(from) || from < w->min_event)
			from = w->min_event;
		until = wm - sa_final_horizon(win);
		if (!sa_window_closing(win, from, until))
			continue;
		initStringInfo(&payload);
		appendStringInfoString(&payload, "{\"stream\": ");
		escape_json(&payload, w->st->name);
		appendStringInfoString(&payload, ", \"window\": ");
		escape_json(&payload, win->name);
		appendStringInfoString(&payload, ", \"watermark\": ");
		escape_json(&payload, sa_ts_text(wm));
		appendStringInfoString(&payload, ", \"final_until\": ");
		escape_json(&payload, sa_ts_text(until));
		appendStringInfoChar(&payload, '}');
		Async_Notify("streamagg_closed", payload.data);
		win->pending_until = until;
	}
}
