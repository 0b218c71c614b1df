"""Framing and shapes of control messages; shared by the daemon and by clients.

One JSON object per line (UTF-8, no embedded newlines, which JSON never needs). A request
is `{"v": 1, "id": ..., "cmd": NAME, "args": {...}}`. Every request gets exactly one final
reply, `{"v": 1, "id": ..., "ok": true, "result": ...}` or `{"v": 1, "id": ..., "ok": false,
"error": {"code": CODE, "message": TEXT}}`; streaming commands send `{"v": 1, "id": ...,
"stream": ...}` lines before it.
"""

from __future__ import annotations

import json
from typing import Any

VERSION = 1
MAX_LINE = 1024 * 1024  # a request longer than this is refused, not buffered forever

# Error codes, and the qsupervisorctl exit code each maps to.
BAD_REQUEST = "bad_request"  # not JSON, wrong shape, unknown command, bad arguments
VERSION_MISMATCH = "version"
REFUSED = "refused"  # peer not allowed
NOT_FOUND = "not_found"  # no such program
CONFIG_ERROR = "config_error"
FAILED = "failed"  # the command ran and did not succeed
TOO_LARGE = "too_large"
SHUTTING_DOWN = "shutting_down"

EXIT_CODES = {BAD_REQUEST: 2, VERSION_MISMATCH: 2, NOT_FOUND: 2, CONFIG_ERROR: 2,
              REFUSED: 1, FAILED: 1, TOO_LARGE: 2, SHUTTING_DOWN: 1}


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def encode(message: dict[str, Any]) -> bytes:
    """One line of strict JSON (no NaN or Infinity, which no other JSON parser reads)."""
    return json.dumps(message, separators=(",", ":"), default=str,
                      allow_nan=False).encode() + b"\n"


def request(cmd: str, args: dict[str, Any] | None = None, req_id: Any = 1) -> dict[str, Any]:
    return {"v": VERSION, "id": req_id, "cmd": cmd, "args": args or {}}


def ok(req_id: Any, result: Any) -> dict[str, Any]:
    return {"v": VERSION, "id": req_id, "ok": True, "result": result}


def error(req_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"v": VERSION, "id": req_id, "ok": False, "error": {"code": code, "message": message}}


def stream(req_id: Any, item: Any) -> dict[str, Any]:
    return {"v": VERSION, "id": req_id, "stream": item}


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]}{'...' if len(text) > 20 else ''} is too large")
    return value


def parse_request(line: bytes) -> dict[str, Any]:
    """Validate one request line; raises ProtocolError with a message a human can act on.
    Strict JSON only: NaN, Infinity and numbers that overflow are refused, so nothing a
    client sends can come back as invalid JSON (a request's id is copied into its reply)."""
    try:
        msg = json.loads(line, parse_constant=_not_json, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as exc:  # UnicodeDecodeError: not UTF-8
        raise ProtocolError(BAD_REQUEST, f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(BAD_REQUEST, "not valid JSON: nested too deeply") from None
    if not isinstance(msg, dict):
        raise ProtocolError(BAD_REQUEST, "a request must be a JSON object")
    if type(msg.get("v")) is not int or msg["v"] != VERSION:  # true and 1.0 are not 1
        raise ProtocolError(VERSION_MISMATCH,
                            f"protocol version {msg.get('v')!r} not supported; this daemon speaks {VERSION}")
    if not isinstance(msg.get("cmd"), str):
        raise ProtocolError(BAD_REQUEST, "'cmd' must be a string")
    args = msg.setdefault("args", {})
    if not isinstance(args, dict):
        raise ProtocolError(BAD_REQUEST, "'args' must be an object")
    return msg
