"""Tests of the event format: CSV line to bytes, and bytes to event or quarantine reason."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ml_lifecycle.ingest.events import (
    DEFAULT_MAX_EVENT_BYTES,
    EVENT_FIELDS,
    PosEvent,
    QuarantineReason,
    Rejection,
    csv_row_to_event,
    event_key,
    event_time_ms,
    parse_event,
    serialize_event,
)

GOOD_ROW = {
    "InvoiceNo": "536365",
    "StockCode": "85123A",
    "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
    "Quantity": "6",
    "InvoiceDate": "2010-12-01 08:26:00",
    "UnitPrice": "2.55",
    "CustomerID": "17850.0",
    "Country": "United Kingdom",
}
GOOD_EVENT = csv_row_to_event(GOOD_ROW)


def payload(**changes: object) -> bytes:
    """Return the good event with fields replaced; a value of ``...`` removes the field."""
    event = {**GOOD_EVENT, **changes}
    return json.dumps({key: value for key, value in event.items() if value is not ...}).encode()


def utc_ms(*parts: int) -> int:
    return int(dt.datetime(*parts, tzinfo=dt.UTC).timestamp()) * 1000


class TestCsvRowToEvent:
    def test_types_of_real_line(self):
        assert GOOD_EVENT == {
            "InvoiceNo": "536365",
            "StockCode": "85123A",
            "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
            "Quantity": 6,
            "InvoiceDate": "2010-12-01 08:26:00",
            "UnitPrice": 2.55,
            "CustomerID": 17850.0,
            "Country": "United Kingdom",
        }
        assert isinstance(GOOD_EVENT["Quantity"], int)
        assert isinstance(GOOD_EVENT["UnitPrice"], float)

    @pytest.mark.parametrize(
        ("column", "text", "expected"),
        [
            ("Quantity", "-12", -12),
            ("Quantity", "6.0", 6),
            ("Quantity", "6.5", 6.5),
            ("Quantity", "six", "six"),
            ("Quantity", "nan", "nan"),
            ("UnitPrice", "18.0", 18.0),
            ("UnitPrice", "-11062.06", -11062.06),
            ("UnitPrice", "1e3", 1000.0),
            ("UnitPrice", "inf", "inf"),
            ("UnitPrice", "2,55", "2,55"),
            ("CustomerID", "", None),
            ("CustomerID", "12a", "12a"),
            ("Description", "", None),
            ("InvoiceNo", "C536379", "C536379"),
            ("StockCode", "00123", "00123"),
        ],
    )
    def test_column_value(self, column, text, expected):
        event = csv_row_to_event({**GOOD_ROW, column: text})

        assert event[column] == expected
        assert type(event[column]) is type(expected)

    def test_absent_column_is_null(self):
        row = {key: value for key, value in GOOD_ROW.items() if key != "Description"}

        assert csv_row_to_event(row)["Description"] is None

    def test_short_line_none_is_null(self):
        # csv.DictReader fills the missing trailing fields of a short line with None.
        assert csv_row_to_event({**GOOD_ROW, "Country": None})["Country"] is None

    def test_other_columns_left_out(self):
        assert list(csv_row_to_event({**GOOD_ROW, "Extra": "x"})) == list(EVENT_FIELDS)

    def test_pound_sign_serialized_as_utf8(self):
        event = csv_row_to_event({**GOOD_ROW, "Description": "POSTAGE £5 ÉTÉ"})

        data = serialize_event(event)

        assert "£5 ÉTÉ".encode() in data
        assert b"\\u00a3" not in data

    def test_serialization_is_compact(self):
        assert b", " not in serialize_event(GOOD_EVENT)
        assert b": " not in serialize_event(GOOD_EVENT)

    def test_key_is_stock_code(self):
        assert event_key(GOOD_EVENT) == b"85123A"
        assert event_key({**GOOD_EVENT, "StockCode": None}) is None


class TestEventTime:
    @pytest.mark.parametrize(
        ("invoice_date", "expected_ms"),
        [
            # Winter: GMT equals UTC.
            ("2010-12-01 08:26:00", utc_ms(2010, 12, 1, 8, 26)),
            # Summer: BST is UTC+1.
            ("2011-06-01 08:26:00", utc_ms(2011, 6, 1, 7, 26)),
            # Last minute before the spring change at 01:00 GMT.
            ("2011-03-27 00:59:00", utc_ms(2011, 3, 27, 0, 59)),
            # 01:30 does not exist on the spring change day and reads as GMT.
            ("2011-03-27 01:30:00", utc_ms(2011, 3, 27, 1, 30)),
            ("2011-03-27 02:00:00", utc_ms(2011, 3, 27, 1, 0)),
            # 01:30 happens twice on the autumn change day; the first (BST) wins.
            ("2011-10-30 01:30:00", utc_ms(2011, 10, 30, 0, 30)),
            ("2011-10-30 02:00:00", utc_ms(2011, 10, 30, 2, 0)),
            ("2010-10-31 00:59:59", utc_ms(2010, 10, 30, 23, 59, 59)),
        ],
    )
    def test_london_wall_clock(self, invoice_date, expected_ms):
        assert event_time_ms(invoice_date) == expected_ms

    @pytest.mark.parametrize("invoice_date", ["2011-02-30 10:00:00", "2011-12-09T12:50:00", "2011-12-09"])
    def test_invalid_date_raises(self, invoice_date):
        with pytest.raises(ValueError, match="expected a real date"):
            event_time_ms(invoice_date)

    def test_event_property_matches_function(self):
        event = parse_event(serialize_event(GOOD_EVENT))

        assert isinstance(event, PosEvent)
        assert event.event_time_ms == utc_ms(2010, 12, 1, 8, 26)


REJECTIONS = [
    # (case, payload, reason, text the detail must contain)
    ("oversized", b"{" + b" " * DEFAULT_MAX_EVENT_BYTES + b"}", QuarantineReason.OVERSIZED, "16386 bytes"),
    (
        "oversized before utf8",
        b"\xff" * (DEFAULT_MAX_EVENT_BYTES + 1),
        QuarantineReason.OVERSIZED,
        "limit of",
    ),
    ("latin1 pound", payload()[:-2] + b'\xa3"}', QuarantineReason.INVALID_UTF8, "not valid UTF-8"),
    ("truncated utf8", b'{"a":"\xc2"}', QuarantineReason.INVALID_UTF8, "byte 6"),
    ("lone surrogate", payload(Description="\ud800"), QuarantineReason.INVALID_UTF8, "surrogate"),
    ("empty", b"", QuarantineReason.INVALID_JSON, "Expecting value"),
    ("tombstone", None, QuarantineReason.INVALID_JSON, "Expecting value"),
    ("truncated json", payload()[:40], QuarantineReason.INVALID_JSON, "payload starts"),
    ("csv text", b"536365,85123A,WHITE,6", QuarantineReason.INVALID_JSON, "536365,85123A"),
    ("nan", payload()[:-1] + b',"x":NaN}', QuarantineReason.INVALID_JSON, "NaN"),
    (
        "duplicate key",
        b'{"Quantity":1,"Quantity":2}',
        QuarantineReason.INVALID_JSON,
        "duplicate key 'Quantity'",
    ),
    ("array", b"[1,2]", QuarantineReason.NOT_AN_OBJECT, "payload is an array"),
    ("string", b'"536365"', QuarantineReason.NOT_AN_OBJECT, "payload is a string"),
    ("null", b"null", QuarantineReason.NOT_AN_OBJECT, "payload is null"),
    ("no quantity", payload(Quantity=...), QuarantineReason.MISSING_FIELD, "Quantity"),
    (
        "two missing",
        payload(InvoiceNo=..., Country=...),
        QuarantineReason.MISSING_FIELD,
        "InvoiceNo, Country",
    ),
    ("empty object", b"{}", QuarantineReason.MISSING_FIELD, "InvoiceNo, StockCode"),
    ("null stock code", payload(StockCode=None), QuarantineReason.NULL_VALUE, "StockCode"),
    ("null price", payload(UnitPrice=None), QuarantineReason.NULL_VALUE, "UnitPrice"),
    ("blank country", payload(Country="  "), QuarantineReason.NULL_VALUE, "Country is an empty string"),
    (
        "numeric invoice",
        payload(InvoiceNo=536365),
        QuarantineReason.WRONG_TYPE,
        "InvoiceNo is a number 536365",
    ),
    ("list description", payload(Description=["a"]), QuarantineReason.WRONG_TYPE, "Description is an array"),
    ("text customer", payload(CustomerID="12a"), QuarantineReason.WRONG_TYPE, "CustomerID is a string '12a'"),
    ("bool quantity", payload(Quantity=True), QuarantineReason.WRONG_TYPE, "Quantity is a boolean"),
    ("object price", payload(UnitPrice={"v": 1}), QuarantineReason.WRONG_TYPE, "UnitPrice is an object"),
    ("epoch date", payload(InvoiceDate=1291191960), QuarantineReason.WRONG_TYPE, "InvoiceDate is a number"),
    ("iso date", payload(InvoiceDate="2010-12-01T08:26:00"), QuarantineReason.INVALID_DATE, "2010-12-01T08"),
    ("feb 30", payload(InvoiceDate="2011-02-30 10:00:00"), QuarantineReason.INVALID_DATE, "2011-02-30"),
    ("hour 24", payload(InvoiceDate="2011-02-03 24:00:00"), QuarantineReason.INVALID_DATE, "24:00:00"),
    ("date only", payload(InvoiceDate="2011-02-03"), QuarantineReason.INVALID_DATE, "YYYY-MM-DD HH:MM:SS"),
    ("half quantity", payload(Quantity=6.5), QuarantineReason.INVALID_QUANTITY, "Quantity 6.5"),
    ("text quantity", payload(Quantity="six"), QuarantineReason.INVALID_QUANTITY, "Quantity 'six'"),
    ("huge quantity", payload(Quantity=2**63), QuarantineReason.INVALID_QUANTITY, "9223372036854775808"),
    (
        "infinite quantity",
        payload(Quantity=...)[:-1] + b',"Quantity":1e400}',
        QuarantineReason.INVALID_QUANTITY,
        "inf",
    ),
    ("text price", payload(UnitPrice="2,55"), QuarantineReason.INVALID_PRICE, "UnitPrice '2,55'"),
    (
        "infinite price",
        payload(UnitPrice=...)[:-1] + b',"UnitPrice":1e999}',
        QuarantineReason.INVALID_PRICE,
        "inf",
    ),
]


class TestParseEventRejections:
    @pytest.mark.parametrize(
        ("data", "reason", "detail_part"),
        [pytest.param(data, reason, part, id=case) for case, data, reason, part in REJECTIONS],
    )
    def test_reason_and_detail(self, data, reason, detail_part):
        result = parse_event(data)

        assert isinstance(result, Rejection)
        assert result.reason is reason
        assert detail_part in result.detail

    def test_every_parse_reason_covered(self):
        covered = {reason for _case, _data, reason, _part in REJECTIONS}

        assert covered == set(QuarantineReason) - {QuarantineReason.SINK_ERROR}

    def test_size_limit_is_configurable(self):
        data = payload()

        assert isinstance(parse_event(data, max_bytes=len(data)), PosEvent)
        result = parse_event(data, max_bytes=len(data) - 1)
        assert isinstance(result, Rejection)
        assert result.reason is QuarantineReason.OVERSIZED

    def test_long_value_truncated_in_detail(self):
        result = parse_event(payload(InvoiceDate="9" * 500))

        assert isinstance(result, Rejection)
        assert result.reason is QuarantineReason.INVALID_DATE
        assert len(result.detail) < 200
        assert "..." in result.detail

    def test_reason_values_are_stable(self):
        assert [reason.value for reason in QuarantineReason] == [
            "oversized",
            "invalid_utf8",
            "invalid_json",
            "not_an_object",
            "missing_field",
            "null_value",
            "wrong_type",
            "invalid_date",
            "invalid_quantity",
            "invalid_price",
            "sink_error",
        ]


class TestParseEventValid:
    def test_real_line(self):
        event = parse_event(serialize_event(GOOD_EVENT))

        assert isinstance(event, PosEvent)
        assert event.as_record() == GOOD_EVENT
        assert not event.is_cancellation
        assert not event.is_return

    @pytest.mark.parametrize(
        ("invoice_no", "quantity", "is_cancellation", "is_return"),
        [
            ("C536379", -1, True, True),
            ("C536379", 1, True, False),
            ("536380", -24, False, True),
            ("A563185", 1, False, False),
        ],
    )
    def test_cancellations_and_returns_are_valid(self, invoice_no, quantity, is_cancellation, is_return):
        event = parse_event(payload(InvoiceNo=invoice_no, Quantity=quantity))

        assert isinstance(event, PosEvent)
        assert event.is_cancellation is is_cancellation
        assert event.is_return is is_return

    def test_negative_price_is_valid(self):
        # The real data contains "Adjust bad debt" lines with negative prices.
        event = parse_event(payload(InvoiceNo="A563186", UnitPrice=-11062.06))

        assert isinstance(event, PosEvent)
        assert event.unit_price == -11062.06

    def test_nullable_fields_may_be_null_or_absent(self):
        for data in (payload(Description=None, CustomerID=None), payload(Description=..., CustomerID=...)):
            event = parse_event(data)

            assert isinstance(event, PosEvent)
            assert event.description is None
            assert event.customer_id is None

    def test_pound_sign_kept(self):
        event = parse_event(payload(Description="DOTCOM POSTAGE £"))

        assert isinstance(event, PosEvent)
        assert event.description == "DOTCOM POSTAGE £"
        assert "£" in event.to_json()

    def test_integral_float_quantity_becomes_int(self):
        event = parse_event(payload(Quantity=6.0))

        assert isinstance(event, PosEvent)
        assert event.quantity == 6
        assert '"Quantity":6,' in event.to_json()

    def test_integer_price_becomes_float(self):
        event = parse_event(payload(UnitPrice=18))

        assert isinstance(event, PosEvent)
        assert isinstance(event.unit_price, float)

    def test_extra_keys_kept_in_json(self):
        event = parse_event(payload(Channel="web"))

        assert isinstance(event, PosEvent)
        assert event.extra == {"Channel": "web"}
        assert json.loads(event.to_json())["Channel"] == "web"

    def test_json_is_compact_and_canonical(self):
        event = parse_event(
            b'{ "InvoiceNo" : "1", "StockCode":"2", "Quantity":3, "InvoiceDate":'
            b'"2011-01-01 10:00:00", "UnitPrice":1, "Country":"UK" }'
        )

        assert isinstance(event, PosEvent)
        assert event.to_json() == (
            '{"InvoiceNo":"1","StockCode":"2","Description":null,"Quantity":3,'
            '"InvoiceDate":"2011-01-01 10:00:00","UnitPrice":1.0,"CustomerID":null,"Country":"UK"}'
        )


# Text without surrogates, which have no UTF-8 form and cannot appear in a CSV file.
_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)
_required_text = _text.filter(lambda value: value.strip() != "")
_invoice_dates = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2030, 12, 31)).map(
    lambda value: value.strftime("%Y-%m-%d %H:%M:%S")
)
_prices = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False).map(repr)
_customers = st.one_of(st.just(""), st.integers(min_value=10_000, max_value=99_999).map(lambda n: f"{n}.0"))

csv_rows = st.fixed_dictionaries(
    {
        "InvoiceNo": st.from_regex(r"C?[0-9]{6}", fullmatch=True),
        "StockCode": _required_text,
        "Description": st.one_of(st.just(""), _text),
        "Quantity": st.integers(min_value=-(2**40), max_value=2**40).map(str),
        "InvoiceDate": _invoice_dates,
        "UnitPrice": _prices,
        "CustomerID": _customers,
        "Country": _required_text,
    }
)


class TestRoundTrip:
    @given(csv_rows)
    def test_csv_row_bytes_parse_gives_same_values(self, row):
        event = csv_row_to_event(row)

        parsed = parse_event(serialize_event(event))

        assert isinstance(parsed, PosEvent), parsed
        assert parsed.as_record() == event
        assert parsed.quantity == int(row["Quantity"])
        assert parsed.unit_price == float(row["UnitPrice"])
        assert parsed.description == (row["Description"] or None)
        assert parsed.is_cancellation is row["InvoiceNo"].startswith("C")
        assert parsed.event_time_ms == event_time_ms(row["InvoiceDate"])
        assert json.loads(parsed.to_json()) == event
