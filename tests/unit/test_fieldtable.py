"""The field-table codec that qsupervisor installs into pika (qsupervisor/broker/fieldtable.py).

Frames are built here byte by byte as Node's amqplib and php-amqplib write them, and read
through pika's own BasicProperties.decode, so the tests pass only when pika really uses
the codec; CI runs them on pika 1.4 and on Debian 12's pika 1.2, whose decoding of 'b',
'B', 'l' and 'T' differs from 1.4's.
"""

from __future__ import annotations

import datetime
import decimal
import struct
from typing import Any

import pika
import pika.data
import pytest

import qsupervisor.broker  # noqa: F401 - installs the codec
from qsupervisor.broker import fieldtable
from qsupervisor.broker.fieldtable import OutOfRangeTimestamp, UnencodableValue

UTC = datetime.timezone.utc


def field(key: str, tag: bytes, payload: bytes) -> bytes:
    raw = key.encode()
    return bytes([len(raw)]) + raw + tag + payload


def table(*fields: bytes) -> bytes:
    body = b"".join(fields)
    return struct.pack(">I", len(body)) + body


def long_bytes(tag: bytes, data: bytes) -> bytes:
    return tag + struct.pack(">I", len(data)) + data


def received(encoded_table: bytes) -> dict[str, Any]:
    """The headers pika hands a consumer for a content header carrying this table."""
    properties = pika.BasicProperties()
    properties.decode(struct.pack(">H", pika.BasicProperties.FLAG_HEADERS) + encoded_table)
    return properties.headers


def republished(headers: dict[str, Any]) -> dict[str, Any]:
    """What a consumer receives of a copy pika publishes with these headers."""
    encoded = b"".join(pika.BasicProperties(headers=headers).encode())
    copy = pika.BasicProperties()
    copy.decode(encoded)
    return copy.headers


# (tag, payload as the client writes it, the value the handler receives)
TYPES = [
    ("bool", b"t", b"\x01", True),
    ("byte -5 (Node's small ints)", b"b", struct.pack(">b", -5), -5),
    ("unsigned byte 250", b"B", struct.pack(">B", 250), 250),
    ("short -1000 (Node, php 'rabbit')", b"s", struct.pack(">h", -1000), -1000),
    ("short 'U' -1000 (php 0-9-1)", b"U", struct.pack(">h", -1000), -1000),
    ("unsigned short 65535", b"u", struct.pack(">H", 65535), 65535),
    ("int -100000", b"I", struct.pack(">i", -100000), -100000),
    ("unsigned int 4000000000", b"i", struct.pack(">I", 4000000000), 4000000000),
    ("long-long -2**40 (Node, php)", b"l", struct.pack(">q", -(1 << 40)), -(1 << 40)),
    ("long-long 'L' -2**40", b"L", struct.pack(">q", -(1 << 40)), -(1 << 40)),
    ("float 2.5", b"f", struct.pack(">f", 2.5), 2.5),
    ("float 0.1", b"f", struct.pack(">f", 0.1), 0.1),
    ("double 2.5 (Node's 2.5)", b"d", struct.pack(">d", 2.5), 2.5),
    ("double -0.000123", b"d", struct.pack(">d", -0.000123), -0.000123),
    ("decimal 2.50", b"D", struct.pack(">Bi", 2, 250), decimal.Decimal("2.50")),
    ("decimal -7", b"D", struct.pack(">Bi", 0, -7), decimal.Decimal("-7")),
    ("string", b"S", struct.pack(">I", 5) + "héé".encode(), "héé"),
    ("bytes", b"x", struct.pack(">I", 3) + b"\x00\xff\x10", b"\x00\xff\x10"),
    ("timestamp", b"T", struct.pack(">Q", 1700000000),
     datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
    ("void", b"V", b"", None),
]


@pytest.mark.parametrize("name, tag, payload, expected", TYPES, ids=[t[0] for t in TYPES])
def test_every_field_type_reaches_the_handler_as_sent_and_survives_a_republish(
        name: str, tag: bytes, payload: bytes, expected: Any) -> None:
    headers = received(table(field("h", tag, payload)))
    assert headers == {"h": expected}
    assert type(headers["h"]) is type(expected)
    if isinstance(expected, float):
        assert repr(headers["h"]) == repr(expected)  # not merely close
    again = republished(headers)
    assert again == headers and type(again["h"]) is type(expected)
    if isinstance(expected, decimal.Decimal):
        assert str(again["h"]) == str(expected)  # the scale too: 2.50 stays 2.50


def test_nested_tables_and_arrays_keep_their_floats_and_signs() -> None:
    inner = table(field("price", b"d", struct.pack(">d", 2.5)),
                  field("n", b"b", struct.pack(">b", -1)))
    items = b"".join([b"d" + struct.pack(">d", 0.5), b"b" + struct.pack(">b", -3),
                      long_bytes(b"S", b"x"), b"F" + table()])
    headers = received(table(field("meta", b"F", inner),
                             field("list", b"A", struct.pack(">I", len(items)) + items)))
    expected = {"meta": {"price": 2.5, "n": -1}, "list": [0.5, -3, "x", {}]}
    assert headers == expected
    assert republished(headers) == expected


def test_a_float_is_republished_as_a_double_and_an_unsigned_int_as_a_wider_signed_one() -> None:
    pieces: list[bytes] = []
    fieldtable.encode_table(pieces, {"f": 2.5, "i": 4000000000, "u": 65535})
    encoded = b"".join(pieces)
    assert encoded == table(field("f", b"d", struct.pack(">d", 2.5)),
                            field("i", b"l", struct.pack(">q", 4000000000)),
                            field("u", b"I", struct.pack(">i", 65535)))


@pytest.mark.parametrize("value", [
    "text", "", "é", b"\x00bytes", True, False, 0, 1, -1, 127, -129, 2 ** 31 - 1, 2 ** 31,
    -(2 ** 31), -(2 ** 31) - 1, 2 ** 63 - 1, -(2 ** 63), decimal.Decimal("2.5"),
    decimal.Decimal("-12.25"), decimal.Decimal("300"),
    datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), datetime.datetime(2024, 1, 2, 3, 4, 5),
    None, [1, "a", None, [True]],
])
def test_values_pika_can_encode_are_encoded_byte_for_byte_as_pika_does(value: Any) -> None:
    ours: list[bytes] = []
    fieldtable.encode_value(ours, value)
    pikas: list[bytes] = []
    pika.data.encode_value(pikas, value)  # pika's own, which install() leaves in place
    theirs = b"".join(pikas)
    if theirs[:1] == b"L" and isinstance(value, int) and value < 0:
        # pika 1.3 (Debian 13) tags a negative long-long 'L', 1.2 and 1.4 'l'; RabbitMQ
        # and our decoder read both as a signed 64-bit integer, so the two are the same
        # value on the wire.
        theirs = b"l" + theirs[1:]
    assert b"".join(ours) == theirs


def test_a_non_utf8_string_stays_bytes_and_a_non_utf8_key_too() -> None:
    raw = table(bytes([2]) + b"\xff\xfe" + long_bytes(b"S", b"\xff"))
    headers = received(raw)
    assert headers == {b"\xff\xfe": b"\xff"}
    assert republished(headers) == headers  # sent back as a byte array 'x'


def test_a_timestamp_past_year_9999_reaches_the_handler_as_seconds_and_goes_back_as_such() -> None:
    seconds = 2 ** 40
    headers = received(table(field("t", b"T", struct.pack(">Q", seconds))))
    assert headers == {"t": seconds} and isinstance(headers["t"], OutOfRangeTimestamp)
    pieces: list[bytes] = []
    fieldtable.encode_table(pieces, headers)
    assert b"".join(pieces) == table(field("t", b"T", struct.pack(">Q", seconds)))


def test_the_shortest_float32_is_chosen_and_specials_pass() -> None:
    for value in (0.1, 1e-7, 3.4028234663852886e38, -0.0, 16777216.0, 1.0 / 3):
        (decoded, offset) = fieldtable.decode_value(b"f" + struct.pack(">f", value), 0)
        assert struct.pack(">f", decoded) == struct.pack(">f", value) and offset == 5
        assert len(repr(decoded).replace("e+38", "")) <= 12  # at most 9 digits, not 17
    inf, _ = fieldtable.decode_value(b"f" + struct.pack(">f", float("inf")), 0)
    assert inf == float("inf")


@pytest.mark.parametrize("headers, message", [
    ({"price": object()}, "headers['price']: object has no AMQP field type"),
    ({"big": 2 ** 64}, "headers['big']: 18446744073709551616 does not fit a signed 64-bit"),
    ({"a": [1, {"b": {1, 2}}]}, "headers['a'][1]['b']: set has no AMQP field type"),
    ({"k" * 256: 1}, "a key is at most 255 bytes in UTF-8, this one is 256"),
    ({1: "x"}, "headers[1]: a key must be a string, not int"),
    ({"d": decimal.Decimal("NaN")}, "headers['d']: Decimal NaN has no AMQP encoding"),
    ({"d": decimal.Decimal("1.0000000001")}, "needs more than the 32-bit digits"),
    ({"t": datetime.datetime(1960, 1, 1, tzinfo=UTC)}, "a timestamp before 1970"),
])
def test_a_value_no_field_type_holds_is_named_with_its_path(headers: dict[Any, Any],
                                                           message: str) -> None:
    with pytest.raises(UnencodableValue) as caught:
        fieldtable.check_table(headers)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_pika_reads_and_writes_every_table_through_the_installed_codec() -> None:
    assert pika.data.encode_table is fieldtable.encode_table
    assert pika.data.decode_table is fieldtable.decode_table
