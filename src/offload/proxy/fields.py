"""Header fields as a shared HTTP cache reads them: strict parsers and the proxy's own fields (RFC 9110, 9111, 9213).

Pure functions, no I/O:

* :func:`end_to_end` drops the hop-by-hop fields (RFC 9110 7.6.1): ``Connection``
  and the fields it names, ``Keep-Alive``, ``TE``, ``Trailer``,
  ``Transfer-Encoding``, ``Upgrade`` and every ``Proxy-*`` field, which are for
  this hop (or for a forward proxy's authentication) and never stored.
* :func:`forwarded` adds ``X-Forwarded-For``, ``X-Forwarded-Proto``,
  ``X-Forwarded-Host``, ``Forwarded`` (RFC 7239) and ``Via`` (RFC 9110 7.6.3)
  to a request sent upstream.
* :func:`directives` parses ``Cache-Control`` by its grammar (RFC 9111 5.2):
  a directive is a token, optionally ``=`` then a token or a quoted string,
  with no space around ``=``; names are case-insensitive; the first
  occurrence of a directive wins. :func:`cdn_directives` parses
  ``CDN-Cache-Control`` as a Structured Fields dictionary (RFC 9213, RFC 8941):
  a field that does not parse, or whose lifetimes are not integers, is ignored.
* :func:`delta_seconds`, :func:`age_of` and :func:`http_date` read numbers,
  ``Age`` and dates the way RFC 9111 1.2.2, 5.1 and RFC 9110 5.6.7 ask: an
  ``Age`` that is not a non-negative integer is ignored, dates are
  IMF-fixdate, RFC 850 or asctime only (names case-insensitive).
"""

from __future__ import annotations

import calendar
import email.utils
import re
import time
from collections.abc import Iterable, Sequence

Fields = Sequence[tuple[str, str]]

#: Fields that describe one connection or a forward proxy's exchange, never a message (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)

#: The largest delta-seconds a cache must represent (RFC 9111 1.2.2): larger values count as this.
MAX_DELTA = 2**31

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def is_hop_by_hop(name: str, listed: frozenset[str] = frozenset()) -> bool:
    """Whether a field (lowercase name) belongs to one hop: hop-by-hop, ``Proxy-*``, or named by ``Connection``."""
    return name in HOP_BY_HOP or name.startswith("proxy-") or name in listed


def connection_tokens(fields: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The field names every ``Connection`` field lists, lowercase."""
    return frozenset(
        token.strip().lower()
        for name, value in fields
        if name.lower() == "connection"
        for token in value.split(",")
        if token.strip()
    )


def end_to_end(fields: Fields) -> list[tuple[str, str]]:
    """The fields a proxy forwards or a cache stores: all but those of one hop, in order.

    >>> end_to_end([("Connection", "a"), ("A", "1"), ("Keep-Alive", "x"), ("Proxy-Authenticate", "y"), ("C", "3")])
    [('C', '3')]
    """
    listed = connection_tokens(fields)
    return [(name, value) for name, value in fields if not is_hop_by_hop(name.lower(), listed)]


def forwarded(
    fields: list[tuple[str, str]], client: str, scheme: str, host: str, via: str = "1.1 offload"
) -> list[tuple[str, str]]:
    """A request's end-to-end fields with what a reverse proxy adds for the server behind it.

    ``X-Forwarded-For`` and ``Forwarded`` get the client's address appended to
    any the request carried; ``X-Forwarded-Proto`` and ``X-Forwarded-Host``
    say what the client asked for (replacing any it sent); ``Via`` names this
    proxy (RFC 9110 7.6.3).

    >>> sent = dict(forwarded([("Accept", "*/*"), ("Via", "1.0 edge")], "192.0.2.1", "https", "example.com"))
    >>> sent["Forwarded"], sent["X-Forwarded-For"], sent["Via"]
    ('for=192.0.2.1;host=example.com;proto=https', '192.0.2.1', '1.0 edge, 1.1 offload')
    """
    replaced = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "via"}
    prior = {name: [v for n, v in fields if n.lower() == name] for name in ("x-forwarded-for", "forwarded", "via")}
    out = [(name, value) for name, value in fields if name.lower() not in replaced]
    node = client or "unknown"
    out.append(("X-Forwarded-For", ", ".join([*prior["x-forwarded-for"], node])))
    out.append(("X-Forwarded-Proto", scheme))
    out.append(("X-Forwarded-Host", host))
    element = f"for={_forwarded_node(node)};host={_forwarded_value(host)};proto={scheme}"
    out.append(("Forwarded", ", ".join([*prior["forwarded"], element])))
    out.append(("Via", ", ".join([*prior["via"], via])))
    return out


def _forwarded_node(address: str) -> str:
    """A node of ``Forwarded`` (RFC 7239 6): an IPv6 address is bracketed and quoted."""
    if ":" in address and not address.startswith("["):
        return f'"[{address}]"'
    return _forwarded_value(address)


def _forwarded_value(value: str) -> str:
    return value if _TOKEN.fullmatch(value) else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- Cache-Control --------------------------------------------------------------------------------------


def directives(fields: Fields, name: str = "cache-control") -> dict[str, str | None]:
    """The directives of every ``name`` field, lowercase, each with its argument (None when bare).

    Directives that break the grammar (``max-age =1``, ``max-age= 1``) are
    skipped; a quoted argument is unquoted; the first occurrence wins.

    >>> directives([("Cache-Control", 'Max-Age=60, no-cache="Set-Cookie, A", max-age=1, max-age =5')])
    {'max-age': '60', 'no-cache': 'Set-Cookie, A'}
    """
    found: dict[str, str | None] = {}
    for key, value in fields:
        if key.lower() != name:
            continue
        for part in list_members(value):
            parsed = _directive(part)
            if parsed is not None and parsed[0] not in found:
                found[parsed[0]] = parsed[1]
    return found


def _directive(part: str) -> tuple[str, str | None] | None:
    name, sep, argument = part.partition("=")
    if not _TOKEN.fullmatch(name):
        return None
    if not sep:
        return name.lower(), None
    if _TOKEN.fullmatch(argument):
        return name.lower(), argument
    quoted = _QUOTED.fullmatch(argument)
    if quoted:
        return name.lower(), re.sub(r"\\(.)", r"\1", quoted.group(1))
    return None


def list_members(value: str) -> list[str]:
    """The members of a comma-separated field value, trimmed; commas inside quoted strings are left alone.

    >>> list_members(' a ,b,, "c, d" ')
    ['a', 'b', '"c, d"']
    """
    members: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            members.append("".join(current).strip(" \t"))
            current = []
            continue
        current.append(char)
    members.append("".join(current).strip(" \t"))
    return [member for member in members if member]


def field_names(argument: str | None) -> frozenset[str]:
    """The field names a qualified ``no-cache`` or ``private`` lists, lowercase."""
    if not argument:
        return frozenset()
    return frozenset(name.strip().lower() for name in argument.split(",") if name.strip())


def delta_seconds(argument: str | None) -> int | None:
    """A delta-seconds argument (1*DIGIT, RFC 9111 1.2.2), capped at 2**31; None when absent or invalid.

    >>> delta_seconds("003600"), delta_seconds("-1"), delta_seconds("36.5"), delta_seconds("99999999999")
    (3600, None, None, 2147483648)
    """
    if argument is None or not argument.isascii() or not argument.isdigit():
        return None
    return min(int(argument), MAX_DELTA)


# -- CDN-Cache-Control (RFC 9213: a Structured Fields dictionary) -----------------------------------------

_SF_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_SF_INTEGER = re.compile(r"-?[0-9]{1,15}")
_SF_DECIMAL = re.compile(r"-?[0-9]{1,12}\.[0-9]{1,3}")
_SF_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_SF_BYTES = re.compile(r":[A-Za-z0-9+/=]*:")
_SF_BOOLEAN = re.compile(r"\?[01]")
#: Directives whose value is a number of seconds, an Integer in the structured field.
_SF_INTEGER_DIRECTIVES = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})


def cdn_directives(fields: Fields, name: str = "cdn-cache-control") -> dict[str, str | None] | None:
    """The directives of a targeted field such as ``CDN-Cache-Control``, or None when absent or invalid.

    >>> cdn_directives([("CDN-Cache-Control", "max-age=60, no-transform")])
    {'max-age': '60', 'no-transform': None}
    >>> cdn_directives([("CDN-Cache-Control", 'max-age="60"')]) is None, cdn_directives([]) is None
    (True, True)
    """
    values = [value for key, value in fields if key.lower() == name]
    if not values:
        return None
    parsed = _sf_dictionary(", ".join(values))
    if parsed is None:
        return None
    found: dict[str, str | None] = {}
    for key, value in parsed:
        if key in _SF_INTEGER_DIRECTIVES and (value is None or not _SF_INTEGER.fullmatch(value) or value[0] == "-"):
            return None  # a lifetime of the wrong type: the field is not understood, so it is ignored
        found[key] = None if value in (None, "?1") else value
    return found


def _sf_dictionary(text: str) -> list[tuple[str, str | None]] | None:
    """Members of a Structured Fields dictionary as ``(key, bare item text)``; None when it does not parse.

    Inner lists and parameters are accepted and left out; the last occurrence of a key wins (RFC 8941 4.2.2).
    """
    members: dict[str, str | None] = {}
    position, end = 0, len(text)
    position = _skip(text, position, " ")
    while position < end:
        key = _SF_KEY.match(text, position)
        if key is None:
            return None
        position = key.end()
        value: str | None = None
        if position < end and text[position] == "=":
            position += 1
            if position < end and text[position] == "(":
                close = text.find(")", position)
                if close < 0:
                    return None
                value, position = "(inner-list)", close + 1
            else:
                item = _sf_bare_item(text, position)
                if item is None:
                    return None
                value, position = text[position:item], item
        position = _sf_parameters(text, position)
        if position < 0:
            return None
        members[key.group()] = value
        position = _skip(text, position, " \t")
        if position >= end:
            break
        if text[position] != ",":
            return None
        position = _skip(text, position + 1, " \t")
        if position >= end:
            return None  # a trailing comma
    return list(members.items())


def _sf_bare_item(text: str, position: int) -> int | None:
    for pattern in (_SF_DECIMAL, _SF_INTEGER, _SF_STRING, _SF_TOKEN, _SF_BYTES, _SF_BOOLEAN):
        match = pattern.match(text, position)
        if match is not None:
            return match.end()
    return None


def _sf_parameters(text: str, position: int) -> int:
    while position < len(text) and text[position] == ";":
        position = _skip(text, position + 1, " ")
        key = _SF_KEY.match(text, position)
        if key is None:
            return -1
        position = key.end()
        if position < len(text) and text[position] == "=":
            item = _sf_bare_item(text, position + 1)
            if item is None:
                return -1
            position = item
    return position


def _skip(text: str, position: int, spaces: str) -> int:
    while position < len(text) and text[position] in spaces:
        position += 1
    return position


# -- Age and dates --------------------------------------------------------------------------------------


def age_of(fields: Fields) -> int:
    """The ``Age`` of a response: the first member of its first field, if a non-negative integer; else 0.

    >>> age_of([("Age", "7200, 0")]), age_of([("Age", "abc")]), age_of([("Age", "0"), ("Age", "7200")])
    (7200, 0, 0)
    """
    for name, value in fields:
        if name.lower() == "age":
            first = value.split(",")[0].strip()
            return delta_seconds(first) or 0
    return 0


_MONTHS = {name: number for number, name in enumerate(calendar.month_abbr) if name}
_MONTHS_LOWER = {name.lower(): number for name, number in _MONTHS.items()}
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_LONG_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_IMF = re.compile(r"([A-Za-z]{3}), (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) ([Gg][Mm][Tt])")
_RFC850 = re.compile(r"([A-Za-z]{6,9}), (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) ([Gg][Mm][Tt])")
_ASCTIME = re.compile(r"([A-Za-z]{3}) ([A-Za-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})")


def http_date(text: str | None, now: float | None = None) -> float | None:
    """An HTTP-date (RFC 9110 5.6.7) as a Unix time, or None when it is not one.

    Day and month names are read case-insensitively; a two-digit RFC 850 year
    more than 50 years ahead of ``now`` is taken from the past century.

    >>> http_date("Sun, 06 Nov 1994 08:49:37 GMT"), http_date("Sunday, 06-Nov-94 08:49:37 GMT")
    (784111777.0, 784111777.0)
    >>> http_date("Sun Nov  6 08:49:37 1994"), http_date("Sun, 06 Nov 1994 08:49:37 UTC")
    (784111777.0, None)
    """
    if text is None:
        return None
    text = text.strip()
    match = _IMF.fullmatch(text)
    if match is not None:
        day_name, day, month, year, hour, minute, second, _ = match.groups()
        if day_name.lower() not in _DAYS:
            return None
        return _timestamp(int(year), month, int(day), int(hour), int(minute), int(second))
    match = _RFC850.fullmatch(text)
    if match is not None:
        day_name, day, month, short_year, hour, minute, second, _ = match.groups()
        if day_name.lower() not in _LONG_DAYS:
            return None
        year = _full_year(int(short_year), now)
        return _timestamp(year, month, int(day), int(hour), int(minute), int(second))
    match = _ASCTIME.fullmatch(text)
    if match is not None:
        day_name, month, day, hour, minute, second, year = match.groups()
        if day_name.lower() not in _DAYS or not day.strip().isdigit():
            return None
        return _timestamp(int(year), month, int(day.strip()), int(hour), int(minute), int(second))
    return None


def _full_year(short: int, now: float | None) -> int:
    this_year = time.gmtime(now if now is not None else time.time()).tm_year
    year = this_year - this_year % 100 + short
    if year > this_year + 50:
        year -= 100
    return year


def _timestamp(year: int, month_name: str, day: int, hour: int, minute: int, second: int) -> float | None:
    month = _MONTHS_LOWER.get(month_name.lower())
    if month is None or not (1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60):
        return None
    try:
        return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def imf_date(timestamp: float) -> str:
    """A Unix time as an IMF-fixdate, the form a ``Date`` field is sent in.

    >>> imf_date(784111777)
    'Sun, 06 Nov 1994 08:49:37 GMT'
    """
    return email.utils.formatdate(timestamp, usegmt=True)
