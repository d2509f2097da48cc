"""Fleet-indexing queries as AWS documents their syntax ("Query syntax", AWS IoT developer guide).

Supported here as there: ``field:value`` terms (field names case sensitive, values matched case
insensitively), quoted phrases, prefix and single-character wildcards (``*``, ``?``; a leading wildcard
in one term of a query at most, and then a query of at most 100 characters), ranges (``[a TO b]``
inclusive, ``{a TO b}`` exclusive, ``*`` open; numeric when the bounds and the value are numbers),
the operators ``AND``, ``OR``, ``NOT`` and ``-``, the default operator AND, grouping with parentheses
and field grouping (``field:(a OR b)``), ``\\`` escapes; a term without a field searches every field.
The fields are the registry's: ``thingName``, ``thingId``, ``thingTypeName``, ``thingGroupNames`` and
``attributes.<name>``. A query this cannot parse, or one on a field the local index does not hold
(shadow, connectivity, Device Defender), is refused with ``InvalidQueryException`` as AWS refuses one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from moto.core.exceptions import JsonRESTError

Document = dict[str, Any]  # thingName, thingId, thingTypeName, thingGroupNames (list), attributes (dict)
Predicate = Callable[[Document], bool]
REGISTRY_FIELDS = ("thingName", "thingId", "thingTypeName", "thingGroupNames")
# AWS: "Queries that include a leading wildcard have a max query length of 100 characters."
LEADING_WILDCARD_MAX_QUERY = 100
# Characters AWS lists as unsupported (unless escaped).
_UNSUPPORTED = set("`@#%/';,")


class InvalidQueryException(JsonRESTError):
    code = 400

    def __init__(self, message: str) -> None:
        super().__init__("InvalidQueryException", message)


_TOKEN = re.compile(
    r'\s*(?:(?P<open>\()|(?P<close>\))|(?P<range>[\[{][^\]}]*[\]}])|(?P<quoted>"(?:[^"\\]|\\.)*")'
    r"|(?P<word>(?:\\.|[^\s()\"\[\]{}])+))"
)


def _tokens(query: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(query):
        if query[position:].strip() == "":
            break
        match = _TOKEN.match(query, position)
        if match is None or match.end() == position:
            raise InvalidQueryException(f"cannot parse the query at character {position}: {query[position:][:20]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _split_field(word: str) -> tuple[str | None, str]:
    """``attributes.x:abc`` -> (``attributes.x``, ``abc``); an escaped colon is part of the value."""
    match = re.match(r"^((?:[^:\\]|\\.)+):(.*)$", word, re.DOTALL)
    if match is None:
        return None, word
    return _unescape(match.group(1)), match.group(2)


def _values(document: Document, field: str | None) -> list[str]:
    if field is None:
        attributes = list((document.get("attributes") or {}).values())
        return [document.get("thingName") or "", document.get("thingTypeName") or "", *document["thingGroupNames"],
                *attributes]  # fmt: skip
    if field == "thingGroupNames":
        return list(document["thingGroupNames"])
    if field.startswith("attributes."):
        value = (document.get("attributes") or {}).get(field.removeprefix("attributes."))
        return [] if value is None else [str(value)]
    if field in REGISTRY_FIELDS:
        value = document.get(field)
        return [] if value is None else [str(value)]
    fields = ", ".join(REGISTRY_FIELDS)
    raise InvalidQueryException(f"field {field!r}: the local index holds {fields} and attributes.<name> only")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _range(field: str | None, text: str) -> Predicate:
    match = re.match(r"^([\[{])\s*(\S+)\s+TO\s+(\S+)\s*([\]}])$", text)
    if match is None:
        raise InvalidQueryException(f"range {text!r}: write [low TO high] or {{low TO high}}")
    low, high = _unescape(match.group(2)).strip('"'), _unescape(match.group(3)).strip('"')
    inclusive_low, inclusive_high = match.group(1) == "[", match.group(4) == "]"
    numeric = all(bound == "*" or _number(bound) is not None for bound in (low, high))

    def within(value: str) -> bool:
        key: Any = value.casefold()
        lo: Any = low.casefold()
        hi: Any = high.casefold()
        if numeric:
            number = _number(value)
            if number is None:
                return False
            key = number
            lo = None if low == "*" else float(low)
            hi = None if high == "*" else float(high)
        else:
            lo, hi = (None if low == "*" else lo), (None if high == "*" else hi)
        if lo is not None and (key < lo or (key == lo and not inclusive_low)):
            return False
        return not (hi is not None and (key > hi or (key == hi and not inclusive_high)))

    return lambda document: any(within(value) for value in _values(document, field))


def _term(field: str | None, raw: str, leading: list[int]) -> Predicate:
    if raw.startswith('"'):
        wanted = _unescape(raw[1:-1]).casefold()
        return lambda document: any(value.casefold() == wanted for value in _values(document, field))
    if set(re.sub(r"\\.", "", raw)) & _UNSUPPORTED:
        raise InvalidQueryException(f"term {raw!r}: the query syntax does not support the characters ` @ # % / ' ; ,")
    if raw in ("*",) and field is None:
        return lambda document: True
    if raw.startswith(("*", "?")):
        leading.append(1)
    wildcard = bool(re.search(r"(?<!\\)[*?]", raw))
    if not wildcard:
        wanted = _unescape(raw).casefold()
        return lambda document: any(value.casefold() == wanted for value in _values(document, field))
    pattern = re.compile(
        "".join(
            ".*" if part == "*" else "." if part == "?" else re.escape(_unescape(part))
            for part in re.findall(r"\\.|\*|\?|[^*?\\]+", raw)
        ),
        re.IGNORECASE | re.DOTALL,
    )
    return lambda document: any(pattern.fullmatch(value) for value in _values(document, field))


class _Parser:
    def __init__(self, query: str) -> None:
        self.tokens = _tokens(query)
        self.position = 0
        self.leading: list[int] = []

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise InvalidQueryException("the query ends where a term was expected")
        self.position += 1
        return token

    def parse(self, field: str | None = None, *, nested: bool = False) -> Predicate:
        alternatives = [self.conjunction(field)]
        while (token := self.peek()) is not None and token == ("word", "OR"):
            self.take()
            alternatives.append(self.conjunction(field))
        if not nested and self.peek() is not None:
            raise InvalidQueryException(f"unexpected {self.peek()[1]!r} in the query")  # type: ignore[index]
        if len(alternatives) == 1:
            return alternatives[0]
        return lambda document: any(p(document) for p in alternatives)

    def conjunction(self, field: str | None) -> Predicate:
        parts = [self.negation(field)]
        while (token := self.peek()) is not None and token[0] != "close" and token != ("word", "OR"):
            if token == ("word", "AND"):
                self.take()
            parts.append(self.negation(field))
        if len(parts) == 1:
            return parts[0]
        return lambda document: all(p(document) for p in parts)

    def negation(self, field: str | None) -> Predicate:
        kind, text = self.take()
        if (kind, text) == ("word", "NOT") or (kind == "word" and text.startswith("-") and len(text) > 1):
            if text != "NOT":
                self.position -= 1
                self.tokens[self.position] = ("word", text[1:])
            inner = self.negation(field)
            return lambda document: not inner(document)
        if kind == "open":
            inner = self.parse(field, nested=True)
            if self.take()[0] != "close":
                raise InvalidQueryException("a parenthesis is not closed")
            return inner
        if kind == "range":
            return _range(field, text)
        if kind == "quoted":
            return _term(field, text, self.leading)
        if kind != "word" or text in ("AND", "OR"):
            raise InvalidQueryException(f"unexpected {text!r} in the query")
        name, value = _split_field(text) if field is None else (None, text)
        if name is not None:
            _values({"thingGroupNames": [], "attributes": {}}, name)  # refuses a field the index does not hold
            if value == "":
                kind, text = self.take()
                if kind == "open":
                    inner = self.parse(name, nested=True)
                    if self.take()[0] != "close":
                        raise InvalidQueryException("a parenthesis is not closed")
                    return inner
                if kind == "range":
                    return _range(name, text)
                return _term(name, text, self.leading)
            return _term(name, value, self.leading)
        return _term(field, text, self.leading)


def compile_query(query: str) -> Predicate:
    """The predicate a fleet-indexing query string stands for; InvalidQueryException if it is not one."""
    if not query or not query.strip():
        raise InvalidQueryException("the query string is empty")
    parser = _Parser(query)
    predicate = parser.parse()
    if len(parser.leading) > 1:
        raise InvalidQueryException("a leading wildcard is allowed in one term of a query only")
    if parser.leading and len(query) > LEADING_WILDCARD_MAX_QUERY:
        raise InvalidQueryException(
            f"a query with a leading wildcard is at most {LEADING_WILDCARD_MAX_QUERY} characters long"
        )
    return predicate
