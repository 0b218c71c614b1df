"""Control protocol framing: bad input becomes a precise error, never an exception."""

from __future__ import annotations

import json

import pytest

from qsupervisor.control import protocol
from qsupervisor.control.protocol import ProtocolError


def test_a_well_formed_request_parses_and_gets_default_args() -> None:
    req = protocol.parse_request(b'{"v": 1, "id": 7, "cmd": "status"}')
    assert req["cmd"] == "status" and req["args"] == {} and req["id"] == 7


@pytest.mark.parametrize("line,code,fragment", [
    (b"not json", protocol.BAD_REQUEST, "not valid JSON"),
    (b"\xff\xfe", protocol.BAD_REQUEST, "not valid JSON"),
    (b"[1, 2]", protocol.BAD_REQUEST, "must be a JSON object"),
    (b'{"v": 99, "cmd": "status"}', protocol.VERSION_MISMATCH, "version 99"),
    (b'{"cmd": "status"}', protocol.VERSION_MISMATCH, "version None"),
    (b'{"v": 1, "cmd": 5}', protocol.BAD_REQUEST, "'cmd' must be a string"),
    (b'{"v": 1, "cmd": "status", "args": []}', protocol.BAD_REQUEST, "'args' must be an object"),
    # Each of these used to get through, or past the parser's error handling.
    (b"[" * 100_000, protocol.BAD_REQUEST, "nested too deeply"),
    (b'{"v": 1, "id": NaN, "cmd": "status"}', protocol.BAD_REQUEST, "NaN is not JSON"),
    (b'{"v": 1, "id": Infinity, "cmd": "status"}', protocol.BAD_REQUEST, "Infinity is not JSON"),
    (b'{"v": 1, "id": -Infinity, "cmd": "status"}', protocol.BAD_REQUEST, "-Infinity is not JSON"),
    (b'{"v": 1, "id": 1e999, "cmd": "status"}', protocol.BAD_REQUEST, "too large"),
    (b'{"v": 1, "cmd": "st\xc3\x28tus"}', protocol.BAD_REQUEST, "not valid JSON"),
    (b'{"v": true, "cmd": "status"}', protocol.VERSION_MISMATCH, "version True"),
    (b'{"v": 1.0, "cmd": "status"}', protocol.VERSION_MISMATCH, "version 1.0"),
    (b'{"v": "1", "cmd": "status"}', protocol.VERSION_MISMATCH, "version '1'"),
])
def test_malformed_requests_are_refused_with_a_reason(line: bytes, code: str, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.parse_request(line)
    assert info.value.code == code
    assert fragment in info.value.message


def test_messages_are_one_line_of_json() -> None:
    data = protocol.encode(protocol.ok(3, {"text": "two\nlines"}))
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert json.loads(data) == {"v": 1, "id": 3, "ok": True, "result": {"text": "two\nlines"}}


def test_every_error_code_maps_to_a_ctl_exit_code() -> None:
    codes = [getattr(protocol, name) for name in dir(protocol)
             if name.isupper() and isinstance(getattr(protocol, name), str)]
    assert set(codes) == set(protocol.EXIT_CODES)
    assert set(protocol.EXIT_CODES.values()) <= {1, 2}


def test_the_daemon_never_writes_nan_or_infinity() -> None:
    with pytest.raises(ValueError):
        protocol.encode(protocol.ok(1, {"rate": float("nan")}))
    assert json.loads(protocol.encode(protocol.ok(1, {"rate": 0.5}))) == protocol.ok(1, {"rate": 0.5})
