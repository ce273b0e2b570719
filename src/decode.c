/*-------------------------------------------------------------------------
 *
 * decode.c
 *		One Kafka message -> the typed values of the stream's columns.
 *
 * The values land in the worker's parameter list (one entry per column,
 * Kafka metadata last), which is what window expressions read.  Every
 * value goes through its type's input function, so any PostgreSQL type
 * works and bad values are judged exactly as INSERT would judge them.
 *
 * Decoding never throws: anything wrong with a message (null or empty
 * payload, broken JSON, a value its type refuses, invalid UTF-8, NUL
 * bytes...) comes back as false plus a sentence saying what was wrong,
 * which the worker stores as a dead letter.
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

/* The column being decoded, to say which one a type error is about. */
static int	decode_col = -1;

/* Store a value given as text (not NUL-terminated) into column col. */
void
sa_set_value(SaWorker *w, int col, const char *text, size_t len)
{
	SaColumn   *c = &w->st->cols[col];
	ParamExternData *prm = &w->params->params[col];
	char	   *s;

	char		buf[128];
	TimestampTz ts;

	decode_col = col;
	if (memchr(text, '\0', len) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("value contains a NUL byte")));
	prm->isnull = false;
	if (GetDatabaseEncoding() == PG_UTF8 && c->typmod < 0)
	{
		/* the usual event time, and text: what their input functions give */
		if (c->typid == TIMESTAMPTZOID && sa_parse_iso_timestamptz(text, len, &ts))
		{
			prm->value = TimestampTzGetDatum(ts);
			decode_col = -1;
			return;
		}
		if (c->typid == TEXTOID)
		{
			prm->value = PointerGetDatum(cstring_to_text_with_len(text, len));
			decode_col = -1;
			return;
		}
	}
	if (len < sizeof(buf) && GetDatabaseEncoding() == PG_UTF8 && c->typid < FirstGenbkiObjectId)
	{
		/* built-in input functions keep no pointer into their argument */
		memcpy(buf, text, len);
		buf[len] = '\0';
		s = buf;
	}
	else
	{
		s = pnstrdup(text, len);
		if (GetDatabaseEncoding() != PG_UTF8)
			s = pg_any_to_server(s, len, PG_UTF8);
	}
	prm->value = InputFunctionCall(&c->input, s, c->typioparam, c->typmod);
	decode_col = -1;
}

void
sa_set_null(SaWorker *w, int col)
{
	w->params->params[col].value = (Datum) 0;
	w->params->params[col].isnull = true;
}

static void
set_metadata(SaWorker *w, const rd_kafka_message_t *msg)
{
	int			base = w->st->ncols;
	rd_kafka_timestamp_type_t tstype;
	int64		ts = rd_kafka_message_timestamp(msg, &tstype);
	ParamExternData *p = &w->params->params[base];

	p[SA_META_PARTITION].value = Int32GetDatum(msg->partition);
	p[SA_META_PARTITION].isnull = false;
	p[SA_META_OFFSET].value = Int64GetDatum(msg->offset);
	p[SA_META_OFFSET].isnull = false;
	p[SA_META_TIMESTAMP].isnull = (ts < 0);
	if (ts >= 0)
		p[SA_META_TIMESTAMP].value =
			TimestampTzGetDatum(ts * 1000 - ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY));

	/* a key that is not valid text is NULL as kafka_key; it is kept as bytes in dead letters */
	p[SA_META_KEY].isnull = true;
	if (msg->key != NULL && memchr(msg->key, '\0', msg->key_len) == NULL &&
		pg_verify_mbstr(PG_UTF8, msg->key, msg->key_len, true))
	{
		p[SA_META_KEY].value = PointerGetDatum(cstring_to_text_with_len(msg->key, msg->key_len));
		p[SA_META_KEY].isnull = false;
	}
}

static bool
decode_text(SaWorker *w, const char *data, size_t len, char **error)
{
	const char *nul = memchr(data, '\0', len);

	if (nul != NULL)
	{
		*error = psprintf("payload contains a NUL byte at byte %d", (int) (nul - data));
		return false;
	}
	if (!pg_verify_mbstr(PG_UTF8, data, len, true))
	{
		*error = pstrdup("payload is not valid UTF-8");
		return false;
	}
	sa_set_value(w, 0, data, len);
	return true;
}

static bool
decode_payload(SaWorker *w, const rd_kafka_message_t *msg, char **error)
{
	const char *data = msg->payload;
	size_t		len = msg->len;

	for (int i = 0; i < w->st->ncols; i++)
		sa_set_null(w, i);
	switch (w->st->format)
	{
		case SA_FORMAT_JSON:
			return sa_decode_json(w, data, len, error);
		case SA_FORMAT_CSV:
			return sa_decode_csv(w, data, len, error);
		case SA_FORMAT_TEXT:
			return decode_text(w, data, len, error);
	}
	return false;
}

/*
 * Decode one message into the parameter list.  Returns false with *error
 * set when the message cannot be decoded.  Type input errors are caught;
 * for types outside the built-in ones (domains with checks, extension
 * types) the attempt runs in a subtransaction so that whatever the input
 * function did is cleaned up.
 */
bool
sa_decode_message(SaWorker *w, const rd_kafka_message_t *msg, char **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = false;

	set_metadata(w, msg);
	if (msg->payload == NULL)
	{
		*error = pstrdup("payload is null (a tombstone)");
		return false;
	}
	if (msg->len == 0)
	{
		*error = pstrdup("payload is empty");
		return false;
	}

	if (!w->all_builtin_types)
	{
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(cxt);		/* values live in the message's memory */
	}
	PG_TRY();
	{
		ok = decode_payload(w, msg, error);
		if (!w->all_builtin_types)
		{
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		int			col = decode_col;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (!sa_is_data_error(edata->sqlerrcode))
			PG_RE_THROW();		/* a cancel or out of memory is not the message's fault */
		FlushErrorState();
		if (!w->all_builtin_types)
		{
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
		}
		/* say what went wrong in words, naming the column when there is one */
		if (col >= 0 && strncmp(edata->message, "column \"", 8) != 0)
			*error = psprintf("column \"%s\": %s", w->st->cols[col].name, edata->message);
		else
			*error = pstrdup(edata->message);
		decode_col = -1;
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}
