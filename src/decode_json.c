/*-------------------------------------------------------------------------
 *
 * decode_json.c
 *		JSON payloads: a validating single-pass scanner that extracts only
 *		the values the stream's columns ask for.
 *
 * The whole message is checked (a broken message is a dead letter even
 * when the broken part is in a key nobody reads), but only the wanted
 * values are unescaped and converted.  A column reads the top-level key of
 * its name, or the nested key its PATH names.  Conversion rules:
 *
 *	 string		  -> the type's input function on the unescaped text
 *	 number		  -> input function on the number's text; for timestamptz,
 *					 epoch milliseconds (Kafka's convention)
 *	 true/false	  -> input function on "true"/"false"
 *	 null/missing -> NULL
 *	 object/array -> input function on the JSON text (json/jsonb columns
 *					 always receive the JSON text of the value)
 *
 * Nesting is limited to SA_JSON_MAX_DEPTH levels, so hostile input cannot
 * exhaust the stack.
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/timestamp.h"

#define SA_JSON_MAX_DEPTH 512

typedef struct JsonScan
{
	const char *start;
	const char *p;
	const char *end;
	SaWorker   *w;
	char	   *error;
	StringInfoData buf;
} JsonScan;

static bool skip_value(JsonScan *s, int depth);
static bool scan_object(JsonScan *s, int depth, int *cands, int ncands);

static bool
fail(JsonScan *s, const char *what)
{
	if (s->error == NULL)
		s->error = psprintf("invalid JSON at byte %d: %s", (int) (s->p - s->start), what);
	return false;
}

static inline void
skip_ws(JsonScan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

/* Bytes that end a run of ordinary string characters: controls, '"', '\\'. */
static const unsigned char json_special[256] = {
	[0] = 1, [1] = 1, [2] = 1, [3] = 1, [4] = 1, [5] = 1, [6] = 1, [7] = 1,
	[8] = 1, [9] = 1, [10] = 1, [11] = 1, [12] = 1, [13] = 1, [14] = 1, [15] = 1,
	[16] = 1, [17] = 1, [18] = 1, [19] = 1, [20] = 1, [21] = 1, [22] = 1, [23] = 1,
	[24] = 1, [25] = 1, [26] = 1, [27] = 1, [28] = 1, [29] = 1, [30] = 1, [31] = 1,
	['"'] = 1, ['\\'] = 1
};

/* At a '"': move past the string, giving its inside span. */
static bool
scan_string(JsonScan *s, const char **raw, size_t *len, bool *escaped)
{
	const char *q = ++s->p;

	*escaped = false;
	while (q < s->end)
	{
		unsigned char c;

		while (q < s->end && !json_special[(unsigned char) *q])
			q++;
		if (q >= s->end)
			break;
		c = (unsigned char) *q;
		if (c == '"')
		{
			*raw = s->p;
			*len = q - s->p;
			s->p = q + 1;
			return true;
		}
		if (c < 0x20)
		{
			s->p = q;
			return fail(s, "control character in string");
		}
		if (c == '\\')
		{
			*escaped = true;
			q++;
			if (q >= s->end)
				break;
			if (*q == 'u')
			{
				for (int i = 1; i <= 4; i++)
					if (q + i >= s->end || !isxdigit((unsigned char) q[i]))
					{
						s->p = q;
						return fail(s, "bad \\u escape");
					}
				q += 4;
			}
			else if (strchr("\"\\/bfnrt", *q) == NULL)
			{
				s->p = q;
				return fail(s, "bad escape");
			}
		}
		q++;
	}
	s->p = s->end;
	return fail(s, "unterminated string");
}

static unsigned int
hex4(const char *h)
{
	unsigned int v = 0;

	for (int i = 0; i < 4; i++)
	{
		char		c = h[i];

		v = v * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
	}
	return v;
}

/* Unescape a string's inside (already checked by scan_string) into s->buf. */
static bool
unescape(JsonScan *s, const char *raw, size_t len)
{
	const char *q = raw;
	const char *end = raw + len;

	resetStringInfo(&s->buf);
	while (q < end)
	{
		if (*q != '\\')
		{
			appendStringInfoChar(&s->buf, *q++);
			continue;
		}
		q++;
		switch (*q)
		{
			case 'b': appendStringInfoChar(&s->buf, '\b'); break;
			case 'f': appendStringInfoChar(&s->buf, '\f'); break;
			case 'n': appendStringInfoChar(&s->buf, '\n'); break;
			case 'r': appendStringInfoChar(&s->buf, '\r'); break;
			case 't': appendStringInfoChar(&s->buf, '\t'); break;
			case 'u':
				{
					pg_wchar	cp = hex4(q + 1);
					unsigned char utf8[8];

					q += 4;
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						if (q + 6 < end + 0 && q[1] == '\\' && q[2] == 'u' &&
							hex4(q + 3) >= 0xDC00 && hex4(q + 3) <= 0xDFFF)
						{
							cp = 0x10000 + ((cp - 0xD800) << 10) + (hex4(q + 3) - 0xDC00);
							q += 6;
						}
						else
							return fail(s, "unpaired surrogate in \\u escape");
					}
					else if (cp >= 0xDC00 && cp <= 0xDFFF)
						return fail(s, "unpaired surrogate in \\u escape");
					if (cp == 0)
						return fail(s, "\\u0000 cannot be stored in text");
					unicode_to_utf8(cp, utf8);
					appendBinaryStringInfo(&s->buf, (char *) utf8, pg_utf_mblen(utf8));
					break;
				}
			default:
				appendStringInfoChar(&s->buf, *q);
		}
		q++;
	}
	return true;
}

static bool
scan_number(JsonScan *s)
{
	const char *q = s->p;

	if (q < s->end && *q == '-')
		q++;
	if (q >= s->end || !isdigit((unsigned char) *q))
		return fail(s, "bad number");
	if (*q == '0')
		q++;
	else
		while (q < s->end && isdigit((unsigned char) *q))
			q++;
	if (q < s->end && *q == '.')
	{
		q++;
		if (q >= s->end || !isdigit((unsigned char) *q))
			return fail(s, "bad number");
		while (q < s->end && isdigit((unsigned char) *q))
			q++;
	}
	if (q < s->end && (*q == 'e' || *q == 'E'))
	{
		q++;
		if (q < s->end && (*q == '+' || *q == '-'))
			q++;
		if (q >= s->end || !isdigit((unsigned char) *q))
			return fail(s, "bad number");
		while (q < s->end && isdigit((unsigned char) *q))
			q++;
	}
	s->p = q;
	return true;
}

static bool
scan_literal(JsonScan *s, const char *lit)
{
	size_t		n = strlen(lit);

	if ((size_t) (s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
		return fail(s, "unexpected character");
	s->p += n;
	return true;
}

static bool
skip_array(JsonScan *s, int depth)
{
	s->p++;
	skip_ws(s);
	if (s->p < s->end && *s->p == ']')
	{
		s->p++;
		return true;
	}
	for (;;)
	{
		if (!skip_value(s, depth + 1))
			return false;
		skip_ws(s);
		if (s->p >= s->end)
			return fail(s, "unterminated array");
		if (*s->p == ']')
		{
			s->p++;
			return true;
		}
		if (*s->p++ != ',')
			return fail(s, "expected ',' or ']'");
		skip_ws(s);
	}
}

/* Move past one value, checking it. */
static bool
skip_value(JsonScan *s, int depth)
{
	const char *raw;
	size_t		len;
	bool		esc;

	if (depth > SA_JSON_MAX_DEPTH)
		return fail(s, psprintf("nested deeper than %d levels", SA_JSON_MAX_DEPTH));
	skip_ws(s);
	if (s->p >= s->end)
		return fail(s, "unexpected end");
	switch (*s->p)
	{
		case '{':
			return scan_object(s, depth, NULL, 0);
		case '[':
			return skip_array(s, depth);
		case '"':
			return scan_string(s, &raw, &len, &esc);
		case 't':
			return scan_literal(s, "true");
		case 'f':
			return scan_literal(s, "false");
		case 'n':
			return scan_literal(s, "null");
		default:
			return scan_number(s);
	}
}

/*
 * A JSON number of epoch seconds, milliseconds (the default, Kafka's
 * convention) or microseconds (the column's UNIT) -> timestamptz, or
 * timestamp read as UTC.
 */
static void
set_epoch(JsonScan *s, int col, const char *text, size_t len)
{
	SaColumn   *c = &s->w->st->cols[col];
	char	   *num;
	double		us;
	TimestampTz ts;

	if (c->epoch_unit_us == 1000 && sa_parse_epoch_millis(text, len, &ts))
	{
		/* a plain integer of milliseconds: exact, as the arithmetic below */
		s->w->params->params[col].value = TimestampTzGetDatum(ts);
		s->w->params->params[col].isnull = false;
		return;
	}
	num = pnstrdup(text, len);
	us = strtod(num, NULL) * (double) c->epoch_unit_us -
		(double) ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
	if (!(us > (double) MIN_TIMESTAMP && us < (double) END_TIMESTAMP))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("column \"%s\": timestamp out of range: %s epoch %s",
						c->name, num, c->epoch_unit_us == 1 ? "microseconds" :
						c->epoch_unit_us == 1000 ? "milliseconds" : "seconds")));
	ts = (TimestampTz) (us >= 0 ? us + 0.5 : us - 0.5);
	s->w->params->params[col].value = TimestampTzGetDatum(ts);
	s->w->params->params[col].isnull = false;
}

/* Give the value spanning [from, s->p) to a column. */
static bool
assign(JsonScan *s, int col, const char *from, const char *raw, size_t rawlen, bool esc)
{
	SaColumn   *c = &s->w->st->cols[col];
	char		first = *from;

	if (first == 'n')
		sa_set_null(s->w, col);
	else if (c->is_json || first == '{' || first == '[' || first == 't' || first == 'f')
		sa_set_value(s->w, col, from, s->p - from);
	else if (first == '"')
	{
		if (esc)
		{
			if (!unescape(s, raw, rawlen))
				return false;
			sa_set_value(s->w, col, s->buf.data, s->buf.len);
		}
		else
			sa_set_value(s->w, col, raw, rawlen);
	}
	else if (c->is_timestamptz || c->is_timestamp)
		set_epoch(s, col, from, s->p - from);
	else
		sa_set_value(s->w, col, from, s->p - from);
	return true;
}

/*
 * Scan the value of a key: descend into it when a column wants something
 * inside, then give it to the columns whose path ends here.
 */
static bool
scan_member_value(JsonScan *s, int depth, int *finals, int nfinals, int *deeper, int ndeeper)
{
	const char *from;
	const char *raw = NULL;
	size_t		rawlen = 0;
	bool		esc = false;
	bool		ok;

	skip_ws(s);
	from = s->p;
	if (s->p >= s->end)
		return fail(s, "unexpected end");
	if (ndeeper > 0 && *s->p == '{')
		ok = scan_object(s, depth + 1, deeper, ndeeper);
	else if (nfinals > 0 && *s->p == '"')
		ok = scan_string(s, &raw, &rawlen, &esc);
	else
		ok = skip_value(s, depth + 1);
	if (!ok)
		return false;
	for (int i = 0; i < nfinals; i++)
		if (!assign(s, finals[i], from, raw, rawlen, esc))
			return false;
	return true;
}

/*
 * At a '{': scan an object.  cands are the columns whose path matched the
 * keys above this object (NULL: nobody reads inside).
 */
static bool
scan_object(JsonScan *s, int depth, int *cands, int ncands)
{
	int			finals[64];
	int			deeper[64];

	if (depth > SA_JSON_MAX_DEPTH)
		return fail(s, psprintf("nested deeper than %d levels", SA_JSON_MAX_DEPTH));
	s->p++;
	skip_ws(s);
	if (s->p < s->end && *s->p == '}')
	{
		s->p++;
		return true;
	}
	for (;;)
	{
		const char *key;
		size_t		keylen;
		bool		esc;
		int			nf = 0;
		int			nd = 0;

		skip_ws(s);
		if (s->p >= s->end || *s->p != '"')
			return fail(s, "expected a string key");
		if (!scan_string(s, &key, &keylen, &esc))
			return false;
		if (esc && ncands > 0)
		{
			if (!unescape(s, key, keylen))
				return false;
			key = pstrdup(s->buf.data);
			keylen = s->buf.len;
		}
		for (int i = 0; i < ncands; i++)
		{
			SaColumn   *c = &s->w->st->cols[cands[i]];

			if ((size_t) c->pathkeylen[depth] == keylen &&
				memcmp(c->path[depth], key, keylen) == 0)
			{
				if (c->pathlen == depth + 1 && nf < lengthof(finals))
					finals[nf++] = cands[i];
				else if (nd < lengthof(deeper))
					deeper[nd++] = cands[i];
			}
		}
		skip_ws(s);
		if (s->p >= s->end || *s->p++ != ':')
			return fail(s, "expected ':'");
		if (!scan_member_value(s, depth, finals, nf, deeper, nd))
			return false;
		skip_ws(s);
		if (s->p >= s->end)
			return fail(s, "unterminated object");
		if (*s->p == '}')
		{
			s->p++;
			return true;
		}
		if (*s->p++ != ',')
			return fail(s, "expected ',' or '}'");
	}
}

/*
 * Decode a JSON object payload into the stream's columns.  Structural
 * problems come back as false with *error; type errors are raised by the
 * input functions and caught by the caller.
 */
bool
sa_decode_json(SaWorker *w, const char *data, size_t len, char **error)
{
	JsonScan	s;
	int			cands[64];
	int			ncands = Min(w->st->ncols, (int) lengthof(cands));
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
	memset(&s, 0, sizeof(s));
	s.start = s.p = data;
	s.end = data + len;
	s.w = w;
	initStringInfo(&s.buf);
	for (int i = 0; i < ncands; i++)
		cands[i] = i;

	skip_ws(&s);
	if (s.p >= s.end || *s.p != '{')
	{
		*error = pstrdup("payload is not a JSON object");
		return false;
	}
	if (scan_object(&s, 0, cands, ncands))
	{
		skip_ws(&s);
		if (s.p < s.end)
			fail(&s, "unexpected data after the object");
	}
	if (s.error)
	{
		*error = s.error;
		return false;
	}
	return true;
}
