"""AMQP field tables (message headers, queue and consume arguments), encoded and decoded so
that every field type arrives as it was sent, on every pika release we support.

pika's own codec (pika.data) loses values, differently per release:

- it decodes a float ('f') or a double ('d') with int(): a header `price: 2.5` sent by
  Node's amqplib reaches the handler as 2 (pika 1.2 to 1.4);
- it cannot encode a float at all (UnsupportedAMQPFieldException), so a worker could not
  republish such a message as a retry or a dead letter;
- pika 1.2 (Debian 12) decodes a signed byte 'b' as unsigned and 'B' as signed, and a
  signed long-long 'l' as unsigned: -5 from Node arrives as 251, -2**40 as 2**64 - 2**40;
- pika 1.2 decodes a timestamp 'T' as a naive datetime, pika 1.4 as one in UTC.

`install()` puts `encode_table` and `decode_table` in pika.data's place. pika.spec reads
and writes every table through those two module attributes (`data.encode_table(pieces,
table)`, `data.decode_table(encoded, offset)`), with the same signatures in 1.2 and 1.4;
nothing else of pika is relied on. The codec follows RabbitMQ's reading of the field types
(the AMQP 0-9-1 errata): 's' and 'U' are signed shorts, 'l' and 'L' signed long-longs.
What a handler receives for each type, and what a republished copy carries, is the table
in docs/messages.md ("Header types").
"""

from __future__ import annotations

import calendar
import datetime
import decimal
import math
import struct
from collections.abc import Mapping
from typing import Any, Callable

import pika.data
import pika.exceptions

INT32 = (-(1 << 31), (1 << 31) - 1)
INT64 = (-(1 << 63), (1 << 63) - 1)
MAX_SHORT_STRING = 255  # bytes: table keys are AMQP short strings


class UnencodableValue(ValueError):
    """A value no AMQP field type holds; `path` says where it is, as `['a'][0]`."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


class OutOfRangeTimestamp(int):
    """A timestamp 'T' past year 9999, which datetime cannot hold: the handler gets its
    seconds as an int, and a republished copy carries it as a timestamp again."""


# -- decoding -------------------------------------------------------------------------------

_Decoder = Callable[[bytes, int], "tuple[Any, int]"]


def decode_table(encoded: bytes, offset: int) -> tuple[dict[Any, Any], int]:
    """The table at `offset` and the offset after it (pika.data.decode_table's contract)."""
    (size,) = struct.unpack_from(">I", encoded, offset)
    offset += 4
    end = offset + size
    result: dict[Any, Any] = {}
    while offset < end:
        length = encoded[offset]
        key = _text(encoded[offset + 1:offset + 1 + length])
        value, offset = decode_value(encoded, offset + 1 + length)
        result[key] = value
    return result, offset


def decode_value(encoded: bytes, offset: int) -> tuple[Any, int]:
    kind = encoded[offset:offset + 1]
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise pika.exceptions.InvalidFieldTypeException(kind)
    return decoder(encoded, offset + 1)


def _text(raw: bytes) -> str | bytes:
    # As pika: a string that is not UTF-8 stays bytes rather than failing the delivery.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _number(fmt: str) -> _Decoder:
    size = struct.calcsize(fmt)

    def decode(encoded: bytes, offset: int) -> tuple[Any, int]:
        return struct.unpack_from(fmt, encoded, offset)[0], offset + size
    return decode


def _float32(encoded: bytes, offset: int) -> tuple[float, int]:
    """The shortest decimal that is the same float32: a producer's 0.1f is 0.1 here, not
    0.10000000149011612 (the float32 nearest 0.1, widened to a double)."""
    raw = encoded[offset:offset + 4]
    (value,) = struct.unpack(">f", raw)
    if math.isfinite(value):
        for digits in range(1, 10):  # 9 significant digits always give the float32 back
            short = float(f"{value:.{digits}g}")
            try:
                if struct.pack(">f", short) == raw:
                    return short, offset + 4
            except OverflowError:  # near the float32 maximum, rounding up overshoots it
                continue
    return value, offset + 4


def _decimal(encoded: bytes, offset: int) -> tuple[decimal.Decimal, int]:
    scale, raw = struct.unpack_from(">Bi", encoded, offset)
    # Built from its digits, not by arithmetic, so no context rounds it and the scale is
    # kept: 'D' 2, 250 is Decimal('2.50').
    sign, digits, _ = decimal.Decimal(raw).as_tuple()
    return decimal.Decimal((sign, digits, -scale)), offset + 5


def _long_string(encoded: bytes, offset: int) -> tuple[str | bytes, int]:
    (length,) = struct.unpack_from(">I", encoded, offset)
    offset += 4
    return _text(encoded[offset:offset + length]), offset + length


def _bytes(encoded: bytes, offset: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from(">I", encoded, offset)
    offset += 4
    return bytes(encoded[offset:offset + length]), offset + length


def _array(encoded: bytes, offset: int) -> tuple[list[Any], int]:
    (length,) = struct.unpack_from(">I", encoded, offset)
    offset += 4
    end = offset + length
    values = []
    while offset < end:
        value, offset = decode_value(encoded, offset)
        values.append(value)
    return values, offset


def _timestamp(encoded: bytes, offset: int) -> tuple[Any, int]:
    (seconds,) = struct.unpack_from(">Q", encoded, offset)
    try:
        when: Any = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        # Failing here would fail the whole delivery, again on every redelivery.
        when = OutOfRangeTimestamp(seconds)
    return when, offset + 8


def _bool(encoded: bytes, offset: int) -> tuple[bool, int]:
    return encoded[offset] != 0, offset + 1


_DECODERS: dict[bytes, _Decoder] = {
    b"t": _bool,
    b"b": _number(">b"), b"B": _number(">B"),
    b"s": _number(">h"), b"U": _number(">h"), b"u": _number(">H"),
    b"I": _number(">i"), b"i": _number(">I"),
    b"l": _number(">q"), b"L": _number(">q"),
    b"f": _float32, b"d": _number(">d"),
    b"D": _decimal,
    b"S": _long_string, b"x": _bytes,
    b"A": _array, b"T": _timestamp, b"F": decode_table,
    b"V": lambda encoded, offset: (None, offset),
}


# -- encoding -------------------------------------------------------------------------------


def encode_table(pieces: list[bytes], table: Mapping[Any, Any] | None,
                 path: str = "") -> int:
    """Append `table` to `pieces`; return the bytes added (pika.data.encode_table's
    contract). Byte for byte what pika writes for every value pika can encode, except a
    Decimal, whose scale is kept (pika normalizes Decimal('2.50') to 2.5); beyond pika, a
    float is a double 'd' and a tuple an array. UnencodableValue for anything else."""
    body: list[bytes] = []
    for key, value in (table or {}).items():
        where = f"{path}[{key!r}]"
        if isinstance(key, str):
            raw_key = key.encode("utf-8")
        elif isinstance(key, bytes):
            raw_key = key
        else:
            raise UnencodableValue(where, f"a key must be a string, not {type(key).__name__}")
        if len(raw_key) > MAX_SHORT_STRING:
            raise UnencodableValue(where, f"a key is at most {MAX_SHORT_STRING} bytes "
                                          f"in UTF-8, this one is {len(raw_key)}")
        body.append(struct.pack("B", len(raw_key)))
        body.append(raw_key)
        encode_value(body, value, where)
    size = sum(len(piece) for piece in body)
    pieces.append(struct.pack(">I", size))
    pieces.extend(body)
    return size + 4


def encode_value(pieces: list[bytes], value: Any, path: str = "") -> int:
    """Append one tagged value to `pieces`; return the bytes added."""
    start = len(pieces)
    if isinstance(value, str):
        data = value.encode("utf-8")
        pieces.append(struct.pack(">cI", b"S", len(data)) + data)
    elif isinstance(value, (bytes, bytearray)):
        pieces.append(struct.pack(">cI", b"x", len(value)) + bytes(value))
    elif isinstance(value, bool):
        pieces.append(struct.pack(">cB", b"t", int(value)))
    elif isinstance(value, OutOfRangeTimestamp):
        pieces.append(struct.pack(">cQ", b"T", value))
    elif isinstance(value, int):
        pieces.append(_int(value, path))
    elif isinstance(value, float):
        pieces.append(struct.pack(">cd", b"d", value))
    elif isinstance(value, decimal.Decimal):
        pieces.append(_decimal_bytes(value, path))
    elif isinstance(value, datetime.datetime):
        seconds = calendar.timegm(value.utctimetuple())
        if seconds < 0:
            raise UnencodableValue(path, f"a timestamp before 1970 ({value.isoformat()}) "
                                         "has no AMQP encoding (unsigned seconds)")
        pieces.append(struct.pack(">cQ", b"T", seconds))
    elif isinstance(value, Mapping):
        pieces.append(b"F")
        encode_table(pieces, value, path)
    elif isinstance(value, (list, tuple)):
        items: list[bytes] = []
        for index, item in enumerate(value):
            encode_value(items, item, f"{path}[{index}]")
        data = b"".join(items)
        pieces.append(struct.pack(">cI", b"A", len(data)) + data)
    elif value is None:
        pieces.append(b"V")
    else:
        raise UnencodableValue(path, f"{type(value).__name__} has no AMQP field type (use "
                                     "str, bytes, bool, int, float, Decimal, datetime, "
                                     "dict, list or None)")
    return sum(len(piece) for piece in pieces[start:])


def _int(value: int, path: str) -> bytes:
    if INT32[0] <= value <= INT32[1]:
        return struct.pack(">ci", b"I", value)
    if INT64[0] <= value <= INT64[1]:
        return struct.pack(">cq", b"l", value)
    raise UnencodableValue(path, f"{value} does not fit a signed 64-bit integer, the "
                                 "largest AMQP integer (send it as a string)")


def _decimal_bytes(value: decimal.Decimal, path: str) -> bytes:
    if not value.is_finite():
        raise UnencodableValue(path, f"Decimal {value} has no AMQP encoding")
    for candidate in (value, value.normalize()):
        exponent = int(candidate.as_tuple().exponent)
        scale = max(0, -exponent)
        raw = int(candidate.scaleb(scale))
        if scale <= 255 and INT32[0] <= raw <= INT32[1]:
            return struct.pack(">cBi", b"D", scale, raw)
    raise UnencodableValue(path, f"Decimal {value} needs more than the 32-bit digits of "
                                 "an AMQP decimal (send it as a string or a float)")


def check_table(table: Mapping[Any, Any] | None, path: str = "headers") -> None:
    """UnencodableValue, naming the value, if `table` cannot be sent; nothing otherwise."""
    encode_table([], table, path)


def install() -> None:
    """Make pika read and write every field table with this module (see the docstring)."""
    setattr(pika.data, "encode_table", encode_table)  # noqa: B010 - says it is a patch
    setattr(pika.data, "decode_table", decode_table)  # noqa: B010
