"""The ranges every input of the jobs API falls in, defined once for server, SDK and worker.

- Timestamps: timezone-aware ISO 8601 strings (never numbers, at most microseconds) from
  `MIN_TIMESTAMP` to `MAX_TIMESTAMP`, compared in UTC. PostgreSQL's timestamptz, Python's
  datetime and JSON all hold every such value and its conversion to any offset from -14:00 to
  +14:00.
- Text: no NUL (U+0000) and no unpaired UTF-16 surrogate, which PostgreSQL's text and jsonb
  cannot store. Input text holding one is refused (`Text`); a handler's error text is kept with
  each replaced by U+FFFD (`ReportedText`), so a failure is never lost for its message.
- JSON values stored for a job (payload, result): finite numbers, text as above, nested at most
  `MAX_PAYLOAD_DEPTH` levels, which every parser on the way (the worker's included) reads.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    JsonValue,
    WithJsonSchema,
)

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "MAX_BATCH_FAILED_IDS",
    "MAX_BATCH_JOBS",
    "MAX_EXPIRE_GRACE_SECONDS",
    "MAX_GRAPH_NODES",
    "MAX_PARENTS",
    "MAX_PAYLOAD_DEPTH",
    "MAX_RETRY_DELAY_SECONDS",
    "MAX_TIMESTAMP",
    "MAX_UNIQUE_SECONDS",
    "MIN_TIMESTAMP",
    "JsonInt",
    "JsonRefused",
    "ReportedText",
    "Text",
    "Timestamp",
    "WholeNumber",
    "check_payload",
    "check_text",
    "clamp_timestamp",
    "json_text",
    "replace_unstorable",
    "zoned",
]

MIN_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP = datetime(9999, 1, 1, tzinfo=UTC)
MAX_PAYLOAD_DEPTH = 32
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
MAX_RETRY_DELAY_SECONDS = 365 * 86_400  # a handler's Retry(delay=...) is capped here
MAX_UNIQUE_SECONDS = 365 * 86_400  # the longest uniqueness window (UniqueRule.seconds)
MAX_EXPIRE_GRACE_SECONDS = 30 * 86_400  # the longest grace past a deadline (miss policy expire)
# workflows (docs/workflows.md)
MAX_PARENTS = 100  # parents of one job (its depends_on entries)
MAX_GRAPH_NODES = 1000  # jobs of one graph request (the batch limit: every node is an item)
MAX_BATCH_JOBS = 10_000  # jobs of one batch, over every request that adds to it
MAX_BATCH_FAILED_IDS = 1000  # the failures a batch lists (its callback's payload too)

_RANGE = f"{MIN_TIMESTAMP.isoformat()} to {MAX_TIMESTAMP.isoformat()}"
_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")
_FINER_THAN_MICROSECONDS = re.compile(r"[.,]\d{7}")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# \u0000 in JSON text, not the text "\u0000" (an escaped backslash before it)
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


# -- timestamps --------------------------------------------------------------------------------


def _time_text(value: Any) -> Any:
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError(
            "give a time as an ISO 8601 string with a zone (e.g. 2026-01-31T12:00:00Z), "
            "not a number"
        )
    if isinstance(value, str) and _FINER_THAN_MICROSECONDS.search(value):
        raise ValueError("give a time to the microsecond at most (6 fractional digits)")
    return value


def _in_range(value: datetime) -> datetime:
    if not MIN_TIMESTAMP <= value <= MAX_TIMESTAMP:
        raise ValueError(f"time out of range: give one from {_RANGE} (UTC)")
    return value


# The document states the range as a pattern (JSON Schema has no bounds for date-time), a year
# narrower on each side so that every zone offset of a matching time is in range.
_TIMESTAMP_SCHEMA = {
    "type": "string",
    "format": "date-time",
    "pattern": (
        r"^(197[1-9]|19[89][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
        r"-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
        r"(\.[0-9]{1,6})?(Z|[+-](0[0-9]|1[0-4]):[0-5][0-9])$"
    ),
    "description": f"an ISO 8601 time with a zone, from {_RANGE}",
}

Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_time_text),
    AfterValidator(_in_range),
    WithJsonSchema(_TIMESTAMP_SCHEMA),
]
"""A time the API takes: timezone-aware, not a number, from MIN_TIMESTAMP to MAX_TIMESTAMP."""


def clamp_timestamp(value: datetime) -> datetime:
    """`value` as an aware time within the range, for readers of stored rows: a naive value
    (asyncpg's reading of +/-infinity) counts as UTC, and one out of range becomes its bound."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if MIN_TIMESTAMP <= value <= MAX_TIMESTAMP:
        return value  # every row the API wrote: two comparisons, no min/max calls
    return MIN_TIMESTAMP if value < MIN_TIMESTAMP else MAX_TIMESTAMP


def zoned(value: datetime) -> datetime:
    """`value` with a zone: a naive one (asyncpg reads +/-infinity so) counts as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# -- integers ---------------------------------------------------------------------------------


def _whole_number(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("give a number, not true or false")
    if isinstance(value, float) and value.is_integer():
        return int(value)  # JSON Schema's integer: 3.0 is the integer 3
    return value


WholeNumber = BeforeValidator(_whole_number)
JsonInt = Annotated[int, WholeNumber]
"""An integer as JSON Schema has it (3 or 3.0), never a bool; use with `Field(strict=True)`,
which refuses strings and fractions. Optional: `Annotated[int, Field(...), WholeNumber] | None`
(bounds given outside the union would not reach the document)."""


# -- text --------------------------------------------------------------------------------------


def check_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text holds a NUL character (\\u0000), which cannot be stored; remove it")
    if not value.isascii() and _UNSTORABLE.search(value):
        raise ValueError("text holds an unpaired UTF-16 surrogate; send valid Unicode text")
    return value


def replace_unstorable(value: str) -> str:
    """`value` with each NUL and unpaired surrogate replaced by U+FFFD."""
    if "\x00" in value or (not value.isascii() and _UNSTORABLE.search(value)):
        return _UNSTORABLE.sub("\ufffd", value)
    return value


Text = Annotated[
    str, AfterValidator(check_text), Field(json_schema_extra={"pattern": "^[^\\u0000]*$"})
]
"""Text the API takes and stores: refused when it holds NUL or an unpaired surrogate."""


def _replaced(value: Any) -> Any:
    # before pydantic's own str check, which refuses unpaired surrogates
    return replace_unstorable(value) if isinstance(value, str) else value


ReportedText = Annotated[str, BeforeValidator(_replaced)]
"""A handler's error text: kept, with what cannot be stored replaced by U+FFFD."""


# -- JSON values -------------------------------------------------------------------------------


class JsonRefused(ValueError):
    """A JSON value (payload or result) that cannot be stored or parsed on its way."""


# One encoder, built once (json.dumps builds one per call). allow_nan=False: NaN and Infinity
# are not JSON, and jsonb refuses them.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def json_text(value: Any, *, what: str = "payload") -> str:
    """`value` as compact JSON; JsonRefused names what breaks a rule of this module."""
    try:
        text = _encode(value)
    except ValueError as exc:
        raise JsonRefused(
            f"{what} holds a number JSON cannot carry (NaN or Infinity); send a finite number"
        ) from exc
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise JsonRefused(f"{what} holds a NUL character (\\u0000), which cannot be stored")
    if "\\ud" in text:  # rare: only then look for unpaired surrogates
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError as exc:
            raise JsonRefused(
                f"{what} holds an unpaired UTF-16 surrogate; send valid Unicode text"
            ) from exc
    # fewer brackets than the limit cannot nest deeper than it: the walk is for the rest
    if text.count("[") + text.count("{") > MAX_PAYLOAD_DEPTH and _depth(value) > MAX_PAYLOAD_DEPTH:
        raise JsonRefused(
            f"{what} nests deeper than {MAX_PAYLOAD_DEPTH} levels of objects and arrays; flatten it"
        )
    return text


def _depth(value: Any) -> int:
    """Levels of objects and arrays in `value`, counted up to one past the limit."""
    if not isinstance(value, dict | list):
        return 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_PAYLOAD_DEPTH:
            return level
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, level + 1) for c in children if isinstance(c, dict | list))
    return deepest


def check_payload(value: dict[str, Any]) -> dict[str, Any]:
    """The payload, or ValueError saying which rule it breaks (the enqueue models' check)."""
    json_text(value, what="payload")
    return value


Payload = dict[str, JsonValue]
# A payload the API takes: storable, and within the nesting every parser on its way reads.
CheckedPayload = Annotated[Payload, AfterValidator(check_payload)]
# A tenant's, key's or name's text as the API takes it.
Key = Annotated[Text, Field(min_length=1, max_length=200)]
