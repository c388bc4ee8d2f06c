"""Convert sales lines to Kafka events and validate events read back from Kafka.

An event is one line of the UCI Online Retail data as a compact UTF-8 JSON
object whose keys are the CSV column names. Numbers are JSON numbers,
empty fields are ``null``, and the Kafka key is the StockCode.

:func:`parse_event` turns message bytes into a :class:`PosEvent` or a
:class:`Rejection` with a stable :class:`QuarantineReason`. It never raises
for bad input, so the sink can quarantine every message it cannot use.
Cancellations (InvoiceNo starting with "C") and returns (negative
Quantity) are valid events.

This module does no I/O and imports nothing from Airflow.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final
from zoneinfo import ZoneInfo

EVENT_FIELDS: Final = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
REQUIRED_FIELDS: Final = ("InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "Country")
NULLABLE_FIELDS: Final = ("Description", "CustomerID")

# Events of the real data are 150 to 300 bytes, so a payload this large is
# not a sales line.
DEFAULT_MAX_EVENT_BYTES: Final = 16_384

# The shop's wall-clock times are UK local time.
SHOP_TIMEZONE: Final = ZoneInfo("Europe/London")
INVOICE_DATE_FORMAT: Final = "%Y-%m-%d %H:%M:%S"

# Quantities must fit Snowflake's and most consumers' 64-bit integers.
_MAX_QUANTITY: Final = 2**63 - 1
# Offending values are cut to this many characters in rejection details.
_DETAIL_VALUE_CHARS: Final = 80

_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INVOICE_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})")
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MILLISECOND: Final = dt.timedelta(milliseconds=1)


class QuarantineReason(StrEnum):
    """Reason code of a quarantined message, stored in ``POS_QUARANTINE.REASON``."""

    OVERSIZED = "oversized"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    NULL_VALUE = "null_value"
    WRONG_TYPE = "wrong_type"
    INVALID_DATE = "invalid_date"
    INVALID_QUANTITY = "invalid_quantity"
    INVALID_PRICE = "invalid_price"
    # Set by the sink, never by parse_event: handling the message raised an
    # unexpected exception.
    SINK_ERROR = "sink_error"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A message that cannot be used, with the reason code and a detail naming the field and value."""

    reason: QuarantineReason
    detail: str


@dataclass(frozen=True, slots=True)
class PosEvent:
    """One validated sales line.

    :param extra: top-level keys of the message other than the CSV columns,
        kept so that the landed record contains everything the producer sent.
    """

    invoice_no: str
    stock_code: str
    description: str | None
    quantity: int
    invoice_date: str
    unit_price: float
    customer_id: float | None
    country: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_cancellation(self) -> bool:
        """Return whether the line belongs to a cancelled invoice (InvoiceNo starting with "C")."""
        return self.invoice_no.startswith("C")

    @property
    def is_return(self) -> bool:
        """Return whether goods came back: a negative Quantity, on a cancellation or not."""
        return self.quantity < 0

    @property
    def event_time_ms(self) -> int:
        """Return InvoiceDate in Europe/London as epoch milliseconds; see :func:`event_time_ms`."""
        return event_time_ms(self.invoice_date)

    def as_record(self) -> dict[str, Any]:
        """Return the event as a dictionary keyed by CSV column name, in column order."""
        return {
            "InvoiceNo": self.invoice_no,
            "StockCode": self.stock_code,
            "Description": self.description,
            "Quantity": self.quantity,
            "InvoiceDate": self.invoice_date,
            "UnitPrice": self.unit_price,
            "CustomerID": self.customer_id,
            "Country": self.country,
        }

    def to_json(self) -> str:
        """Serialize the event, extra keys included, as compact JSON text."""
        return json.dumps({**self.as_record(), **self.extra}, ensure_ascii=False, separators=(",", ":"))


# --- CSV line to event -------------------------------------------------------


def _number_or_text(value: str) -> float | str:
    if _DECIMAL.fullmatch(value.strip()):
        number = float(value)
        if math.isfinite(number):
            return number
    return value


def _quantity_or_text(value: str) -> int | float | str:
    if _INTEGER.fullmatch(value.strip()):
        return int(value)
    number = _number_or_text(value)
    if isinstance(number, float) and number.is_integer():
        return int(number)
    return number


def csv_row_to_event(row: Mapping[str, str | None]) -> dict[str, Any]:
    """Convert one CSV line, as read by :class:`csv.DictReader`, to an event dictionary.

    Quantity becomes an int, UnitPrice and CustomerID floats. A value that
    does not parse as a finite number stays a string, so the sink
    quarantines the event instead of the producer dropping it. Empty or
    absent fields become ``None``. Columns other than :data:`EVENT_FIELDS`
    are left out.
    """
    event: dict[str, Any] = {}
    for name in EVENT_FIELDS:
        raw = row.get(name)
        if raw is None or raw == "":
            event[name] = None
        elif name == "Quantity":
            event[name] = _quantity_or_text(raw)
        elif name in ("UnitPrice", "CustomerID"):
            event[name] = _number_or_text(raw)
        else:
            event[name] = raw
    return event


def serialize_event(event: Mapping[str, Any]) -> bytes:
    """Serialize an event as compact UTF-8 JSON, non-ASCII text kept as is."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def event_key(event: Mapping[str, Any]) -> bytes | None:
    """Return the Kafka key of an event: its StockCode as UTF-8, or None without one."""
    stock_code = event.get("StockCode")
    if stock_code is None:
        return None
    return str(stock_code).encode("utf-8")


# Sales lines of one invoice share their time, so a few thousand distinct
# values cover hundreds of thousands of lines; caching both conversions keeps
# them out of the per-event cost.
_DATE_CACHE_SIZE = 1 << 16


@functools.lru_cache(maxsize=_DATE_CACHE_SIZE)
def _parse_invoice_date(value: str) -> dt.datetime | None:
    match = _INVOICE_DATE.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    try:
        return dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


@functools.lru_cache(maxsize=_DATE_CACHE_SIZE)
def event_time_ms(invoice_date: str) -> int:
    """Return a ``YYYY-MM-DD HH:MM:SS`` Europe/London wall-clock time as epoch milliseconds.

    At the autumn change a wall-clock time between 01:00 and 02:00 happens
    twice, and this returns the first occurrence (BST, UTC+1). At the spring
    change such a time does not exist, and this reads it with the offset in
    force before the change (GMT), so 01:30 becomes 01:30 UTC, which the
    shop's clocks showed as 02:30 BST. Both follow :pep:`495` with
    ``fold=0``. The shop's data has no sales at those hours.

    :raises ValueError: if ``invoice_date`` is not a real date in that format.
    """
    local = _parse_invoice_date(invoice_date)
    if local is None:
        raise ValueError(f"invalid InvoiceDate {invoice_date!r}: expected a real date as YYYY-MM-DD HH:MM:SS")
    return (local.replace(tzinfo=SHOP_TIMEZONE) - _EPOCH) // _ONE_MILLISECOND


# --- Bytes to event or rejection -----------------------------------------------


class _DuplicateKeyError(ValueError):
    pass


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Snowflake's PARSE_JSON rejects objects with duplicate keys, so such a
    # payload could never be landed.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _shorten(value: Any) -> str:
    text = repr(value)
    if len(text) > _DETAIL_VALUE_CHARS:
        return text[: _DETAIL_VALUE_CHARS - 3] + "..."
    return text


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _is_number(value: Any) -> bool:
    # json.loads reads 1e400 as float infinity, which has no JSON form.
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _decode(payload: bytes, max_bytes: int) -> tuple[dict[str, Any], str] | Rejection:
    if len(payload) > max_bytes:
        return Rejection(
            QuarantineReason.OVERSIZED, f"payload is {len(payload)} bytes, more than the limit of {max_bytes}"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        return Rejection(
            QuarantineReason.INVALID_UTF8,
            f"byte {err.start}: {_shorten(payload[err.start : err.start + 8])} is not valid UTF-8",
        )
    try:
        document = json.loads(text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        return Rejection(QuarantineReason.INVALID_JSON, f"{err}; payload starts {_shorten(text[:40])}")
    if not isinstance(document, dict):
        return Rejection(
            QuarantineReason.NOT_AN_OBJECT, f"payload is {_json_type(document)}, expected a JSON object"
        )
    return document, text


def _check_text(document: Mapping[str, Any], name: str) -> Rejection | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        return Rejection(
            QuarantineReason.WRONG_TYPE, f"{name} is {_json_type(value)} {_shorten(value)}, expected a string"
        )
    if name in REQUIRED_FIELDS and not value.strip():
        return Rejection(QuarantineReason.NULL_VALUE, f"{name} is an empty string {value!r}")
    return None


def _check_quantity(value: Any) -> Rejection | None:
    if not _is_number(value) and not isinstance(value, str | float):
        return Rejection(
            QuarantineReason.WRONG_TYPE,
            f"Quantity is {_json_type(value)} {_shorten(value)}, expected an integral number",
        )
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if not _is_number(value) or not integral or abs(value) > _MAX_QUANTITY:
        return Rejection(
            QuarantineReason.INVALID_QUANTITY,
            f"Quantity {_shorten(value)} is not an integral number between -2^63 and 2^63-1",
        )
    return None


def _check_price(value: Any) -> Rejection | None:
    if not _is_number(value) and not isinstance(value, str | float):
        return Rejection(
            QuarantineReason.WRONG_TYPE,
            f"UnitPrice is {_json_type(value)} {_shorten(value)}, expected a number",
        )
    if not _is_number(value):
        return Rejection(
            QuarantineReason.INVALID_PRICE, f"UnitPrice {_shorten(value)} is not a finite number"
        )
    return None


def _check_fields(document: Mapping[str, Any]) -> Rejection | None:
    missing = [name for name in REQUIRED_FIELDS if name not in document]
    if missing:
        return Rejection(QuarantineReason.MISSING_FIELD, f"missing required field(s): {', '.join(missing)}")
    nulls = [name for name in REQUIRED_FIELDS if document[name] is None]
    if nulls:
        return Rejection(QuarantineReason.NULL_VALUE, f"required field(s) are null: {', '.join(nulls)}")

    for name in ("InvoiceNo", "StockCode", "Description", "InvoiceDate", "Country"):
        rejection = _check_text(document, name)
        if rejection is not None:
            return rejection

    customer_id = document.get("CustomerID")
    if customer_id is not None and not _is_number(customer_id):
        return Rejection(
            QuarantineReason.WRONG_TYPE,
            f"CustomerID is {_json_type(customer_id)} {_shorten(customer_id)}, expected a number or null",
        )

    if _parse_invoice_date(document["InvoiceDate"]) is None:
        return Rejection(
            QuarantineReason.INVALID_DATE,
            f"InvoiceDate {_shorten(document['InvoiceDate'])} is not a real date as YYYY-MM-DD HH:MM:SS",
        )
    return _check_quantity(document["Quantity"]) or _check_price(document["UnitPrice"])


def validate_event(payload: bytes | None, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> Rejection | None:
    """Check a message value and return the reason to quarantine it, or None if it is a valid event.

    It applies the checks of :func:`parse_event` without building the event,
    for callers that land the message text as it is.
    """
    decoded = _decode(payload if payload is not None else b"", max_bytes)
    if isinstance(decoded, Rejection):
        return decoded
    document, text = decoded
    return _check_fields(document) or _check_encodable(document, text)


def _check_encodable(document: Mapping[str, Any], text: str) -> Rejection | None:
    # A JSON escape such as "\ud800" decodes to a lone surrogate, which has
    # no UTF-8 form, so the landed record could not be written. Only a \u
    # escape can produce one, so payloads without any skip the costly check.
    if "\\u" not in text:
        return None
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        return Rejection(QuarantineReason.INVALID_UTF8, f"escaped lone surrogate in a string: {err.reason}")
    return None


def parse_event(payload: bytes | None, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> PosEvent | Rejection:
    """Validate a message value and return the event or the reason to quarantine it.

    Checks run in this order and the first failure decides the reason:
    size, UTF-8, JSON syntax (duplicate keys, NaN and Infinity included),
    top-level object, presence of the required fields, nulls, JSON types,
    then InvoiceDate, Quantity and UnitPrice values. Description and
    CustomerID may be null or absent. A JSON string where a number belongs
    is ``invalid_quantity`` or ``invalid_price`` for those two fields (the
    producer keeps unparsable CSV numbers as strings) and ``wrong_type``
    elsewhere.

    :param payload: the message value; None (a tombstone) is treated as empty.
    :param max_bytes: payloads longer than this are rejected as ``oversized``.
    """
    decoded = _decode(payload if payload is not None else b"", max_bytes)
    if isinstance(decoded, Rejection):
        return decoded
    document, text = decoded
    rejection = _check_fields(document) or _check_encodable(document, text)
    if rejection is not None:
        return rejection

    quantity = document["Quantity"]
    customer_id = document.get("CustomerID")
    return PosEvent(
        invoice_no=document["InvoiceNo"],
        stock_code=document["StockCode"],
        description=document.get("Description"),
        quantity=int(quantity),
        invoice_date=document["InvoiceDate"],
        unit_price=float(document["UnitPrice"]),
        customer_id=float(customer_id) if customer_id is not None else None,
        country=document["Country"],
        extra={key: value for key, value in document.items() if key not in EVENT_FIELDS},
    )
