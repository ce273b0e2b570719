/*-------------------------------------------------------------------------
 *
 * decode_csv.c
 *		CSV payloads: one record per message, fields in column order.
 *
 * Follows COPY's CSV rules: fields are separated by the delimiter
 * (streamagg.csv_delimiter, default ','); a field may be quoted
 * (streamagg.csv_quote, default '"') and a doubled quote inside it stands
 * for one; an unquoted empty field is NULL, a quoted empty one is an empty
 * string.  A trailing newline is ignored.  The number of fields must equal
 * the number of declared columns.
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"

bool
sa_decode_csv(SaWorker *w, const char *data, size_t len, char **error)
{
	const char	delim = w->st->csv_delimiter;
	const char	quote = w->st->csv_quote;
	const char *p = data;
	const char *end = data + len;
	StringInfoData field;
	int			col = 0;
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
	while (end > p && (end[-1] == '\n' || end[-1] == '\r'))
		end--;
	initStringInfo(&field);
	for (;;)
	{
		bool		quoted = false;

		resetStringInfo(&field);
		if (p < end && *p == quote)
		{
			quoted = true;
			for (p++;; p++)
			{
				if (p >= end)
				{
					*error = psprintf("unterminated quoted field %d", col + 1);
					return false;
				}
				if (*p == quote)
				{
					if (p + 1 < end && p[1] == quote)
					{
						appendStringInfoChar(&field, quote);
						p++;
						continue;
					}
					p++;
					break;
				}
				appendStringInfoChar(&field, *p);
			}
			if (p < end && *p != delim)
			{
				*error = psprintf("unexpected character after quoted field %d", col + 1);
				return false;
			}
		}
		else
		{
			const char *start = p;

			while (p < end && *p != delim)
				p++;
			appendBinaryStringInfo(&field, start, p - start);
		}

		if (col >= w->st->ncols)
		{
			*error = psprintf("expected %d fields, found more", w->st->ncols);
			return false;
		}
		if (!quoted && field.len == 0)
			sa_set_null(w, col);
		else
			sa_set_value(w, col, field.data, field.len);
		col++;
		if (p >= end)
			break;
		p++;					/* the delimiter */
	}
	if (col != w->st->ncols)
	{
		*error = psprintf("expected %d fields, found %d", w->st->ncols, col);
		return false;
	}
	return true;
}
