/*-------------------------------------------------------------------------
 *
 * decode_time.c
 *		A fast path for the event times streams usually carry: ISO-8601
 *		strings with an explicit offset, and epoch milliseconds.
 *
 * timestamptz input is general (any date style, time zone names,
 * abbreviations, 'now', 'epoch', ...) and costs more than the rest of a
 * message's decoding.  The strings almost every producer writes,
 *
 *	 YYYY-MM-DD[T ]HH:MM:SS[.f{1,6}](Z | +HH | +HH:MM | +HHMM | -...)
 *
 * are read here directly.  Anything else, and anything out of the plain
 * ranges (hour 24, second 60, more than six fraction digits, year 0, an
 * offset past 15 hours, a string without offset, which reads in the
 * session's TimeZone), returns false and goes through timestamptz_in, so
 * the result is always the one timestamptz_in gives, errors included.
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "datatype/timestamp.h"
#include "utils/datetime.h"

static inline bool
digits(const char *s, int n, int *out)
{
	int			v = 0;

	for (int i = 0; i < n; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

/* An ISO-8601 timestamp with an explicit offset, or false. */
bool
sa_parse_iso_timestamptz(const char *s, size_t len, TimestampTz *result)
{
	const char *p = s;
	const char *end = s + len;
	int			year,
				mon,
				mday,
				hour,
				min,
				sec,
				fsec = 0,
				tzsec = 0;

	if (len < 20 || p[4] != '-' || p[7] != '-' || (p[10] != 'T' && p[10] != ' ') ||
		p[13] != ':' || p[16] != ':' ||
		!digits(p, 4, &year) || !digits(p + 5, 2, &mon) || !digits(p + 8, 2, &mday) ||
		!digits(p + 11, 2, &hour) || !digits(p + 14, 2, &min) || !digits(p + 17, 2, &sec))
		return false;
	if (year < 1 || mon < 1 || mon > MONTHS_PER_YEAR ||
		mday < 1 || mday > day_tab[isleap(year)][mon - 1] ||
		hour > 23 || min > 59 || sec > 59)
		return false;
	p += 19;
	if (p < end && *p == '.')
	{
		int			n = 0;

		p++;
		while (p + n < end && n < 7 && p[n] >= '0' && p[n] <= '9')
			n++;
		if (n < 1 || n > 6)
			return false;
		(void) digits(p, n, &fsec);
		for (int i = n; i < 6; i++)
			fsec *= 10;
		p += n;
	}
	if (p >= end)
		return false;			/* no offset: the session's TimeZone decides */
	if (*p == 'Z')
		p++;
	else if (*p == '+' || *p == '-')
	{
		int			sign = *p == '-' ? -1 : 1;
		int			tzh,
					tzm = 0;

		p++;
		if (end - p < 2 || !digits(p, 2, &tzh))
			return false;
		p += 2;
		if (end - p == 3 && *p == ':')
			p++;
		if (end - p == 2)
		{
			if (!digits(p, 2, &tzm))
				return false;
			p += 2;
		}
		if (tzh > MAX_TZDISP_HOUR || tzm >= MINS_PER_HOUR)
			return false;
		tzsec = sign * (tzh * SECS_PER_HOUR + tzm * SECS_PER_MINUTE);
	}
	else
		return false;
	if (p != end)
		return false;

	*result = ((int64) (date2j(year, mon, mday) - POSTGRES_EPOCH_JDATE) * SECS_PER_DAY +
			   hour * SECS_PER_HOUR + min * SECS_PER_MINUTE + sec - tzsec) * USECS_PER_SEC + fsec;
	return true;
}

/*
 * A JSON number that is a plain integer of epoch milliseconds, or false
 * (fractions, exponents and long numbers take the general path).
 */
bool
sa_parse_epoch_millis(const char *s, size_t len, TimestampTz *result)
{
	int64		ms = 0;
	bool		neg = len > 0 && s[0] == '-';

	if (len - neg < 1 || len - neg > 15)
		return false;
	for (size_t i = neg; i < len; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return false;
		ms = ms * 10 + (s[i] - '0');
	}
	if (neg)
		ms = -ms;
	*result = ms * 1000 - ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
	/* as the general path: strictly inside the range */
	return *result > MIN_TIMESTAMP && *result < END_TIMESTAMP;
}
