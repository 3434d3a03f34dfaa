"""The scoring server's front door: bounded request bodies (413) and JSON numbers only (400).

`mlflow models serve` (MLflow 3.17) reads the whole body, parses it and casts every value to
the signature's float32, so `"1.5"` and `true` reach the model as 1.5 and 1.0, and a 53 MB
body is parsed whole before the row limit can answer. Neither MLflow nor uvicorn has a
body-size setting. `RequestGate`, an ASGI layer in front of the scoring app, answers before
MLflow sees the request: 413 from the Content-Length header (or once a chunked body passes
the limit), 400 for a body that is not JSON or holds anything but numbers where the latent
vectors go, 415 for a body that is not JSON. Its messages never repeat the request.

A model that also draws chosen digits declares the columns `z` (a latent vector per row),
`digit` and `seed` (optional each). MLflow casts 2.5 to the digit 2 and drops unknown fields
with a warning, and cannot read unnamed vectors against that schema, so its gate also checks
digit records (whole numbers, known fields, the same fields in every record) and hands
`{"inputs": [[...], ...]}` on as the `z` column (`check_column_request`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DATA_KEYS = ("inputs", "instances", "dataframe_records")  # their every value must be a number
LATENT = "z"  # a digit-drawing model's column of latent vectors
WHOLE = ("digit", "seed")  # its digit-record fields: JSON whole numbers only
COLUMNS = (LATENT, *WHOLE)
BYTES_PER_NUMBER = 64  # room for `-1.2345678901234567e-05, ` with indentation
BODY_OVERHEAD = 64 * 1024  # keys, brackets, whitespace, dataframe column names
_GATE_MARK = "_mnist_vae_request_gate"


class BadRequest(ValueError):
    """A request the gate refuses; `status` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def max_body_bytes(max_rows: int, width: int) -> int:
    """The largest body a request of at most `max_rows` vectors of `width` numbers needs."""
    return max_rows * width * BYTES_PER_NUMBER + BODY_OVERHEAD


def check_json_numbers(body: bytes) -> bytes:
    """`body` itself; BadRequest(400) unless it is a JSON object whose data holds only numbers."""
    _numbers_only(body)
    return body


def check_column_request(body: bytes) -> bytes:
    """The body for a model whose signature is the columns z, digit, seed: unnamed latent
    vectors become the `z` column; digit records must hold whole numbers and known fields;
    BadRequest(400) otherwise."""
    request = _numbers_only(body)
    rows = _unnamed_vectors(request)
    if rows is not None:
        return json.dumps({"dataframe_split": {"columns": [LATENT],
                                               "data": [[row] for row in rows]}}).encode()
    records = _records(request)
    if records is None:
        return body
    fields = None
    for path, record in records:
        for name, value in record.items():
            _check_field(f"{path}.{name}", name, value)
        if fields is not None and set(record) != fields:
            raise BadRequest(400, f"every record needs the same fields; {path} has "
                                  f"{sorted(record)}, the first {sorted(fields)}")
        fields = set(record)
    if fields and LATENT in fields and fields & set(WHOLE):
        raise BadRequest(400, f"send latent vectors ({LATENT}) or digit records "
                              f"({', '.join(WHOLE)}), not both in one request")
    return body


def _unnamed_vectors(request: dict) -> list | None:
    """The rows of `{"inputs" | "instances": [[...], ...]}` or a dataframe_split without
    columns (latent vectors without a column name), else None."""
    for key in ("inputs", "instances"):
        value = request.get(key)
        if isinstance(value, list) and not any(isinstance(v, dict) for v in value):
            if not value or not all(isinstance(v, list) for v in value):
                raise BadRequest(400, f"{key} must be a list of latent vectors, each a list of "
                                      f"numbers")
            return value
    split = request.get("dataframe_split")
    if isinstance(split, dict) and "columns" not in split and isinstance(split.get("data"), list):
        return split["data"]
    return None


def _records(request: dict) -> list[tuple[str, dict]] | None:
    """(path, {field: value}) of every record in the request's named forms, else None."""
    for key in ("dataframe_records", "instances"):
        value = request.get(key)
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            return [(f"{key}[{i}]", v) for i, v in enumerate(value)]
    split = request.get("dataframe_split")
    if isinstance(split, dict) and isinstance(split.get("columns"), list):
        columns, data = split["columns"], split.get("data")
        if not isinstance(data, list) or not all(
                isinstance(row, list) and len(row) == len(columns) for row in data):
            raise BadRequest(400, f"dataframe_split.data must hold rows of {len(columns)} "
                                  f"values, one per column")
        return [(f"dataframe_split.data[{i}]", dict(zip(map(str, columns), row, strict=True)))
                for i, row in enumerate(data)]
    inputs = request.get("inputs")
    if isinstance(inputs, dict):
        return [("inputs", inputs)]
    return None


def _check_field(path: str, name: str, value: Any) -> None:
    if name not in COLUMNS:
        raise BadRequest(400, f"unknown field {name!r} at {path}: send latent vectors "
                              f"({LATENT}) or digit records ({', '.join(WHOLE)})")
    if name == LATENT and not (isinstance(value, list)
                               and all(not isinstance(v, (list, dict)) for v in value)):
        raise BadRequest(400, f"{path} must be one latent vector, a list of numbers")
    if name in WHOLE and not isinstance(value, int):
        rule = "a whole number 0-9" if name == "digit" else "a whole number >= 0"
        shown = value if isinstance(value, float) else type(value).__name__
        raise BadRequest(400, f"{name} must be {rule}, got {shown} (at {path})")


def _numbers_only(body: bytes) -> dict:
    """The parsed request; BadRequest(400) unless a JSON object whose data holds only numbers."""
    try:
        request = json.loads(body, parse_constant=_refuse_constant)
    except BadRequest:
        raise
    except UnicodeDecodeError:
        raise BadRequest(400, "the request body is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise BadRequest(400, f"the request body is not valid JSON ({err.msg} at line "
                              f"{err.lineno}, column {err.colno})") from None
    except RecursionError:
        raise BadRequest(400, "the request body nests too deeply") from None
    if not isinstance(request, dict):
        raise BadRequest(400, 'send a JSON object such as {"inputs": [[0.1, ...], ...]}')
    for key in DATA_KEYS:
        if key in request:
            _only_numbers(request[key], key)
    split = request.get("dataframe_split")
    if isinstance(split, dict) and "data" in split:
        _only_numbers(split["data"], "dataframe_split.data")
    return request


def _refuse_constant(name: str) -> float:
    raise BadRequest(400, f"inputs must be finite numbers: JSON has no {name}")


def _only_numbers(value: Any, where: str) -> None:
    for path, leaf in _leaves(value, where):
        if isinstance(leaf, bool) or not isinstance(leaf, (int, float)):
            kind = {bool: "a boolean", str: "a string", type(None): "null"}.get(type(leaf),
                                                                                "a non-number")
            raise BadRequest(400, f"inputs must be JSON numbers; {path} is {kind} (write the "
                                  f"number itself, unquoted)")


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(path, value) of every scalar inside nested lists and objects."""
    stack = [(path, value)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(value))))
        elif isinstance(value, dict):
            stack.extend((f"{path}.{k}", v) for k, v in reversed(list(value.items())))
        else:
            yield path, value


class RequestGate:
    """ASGI middleware: POST /invocations must be JSON, at most `max_bytes`, numbers only."""

    def __init__(self, app: ASGIApp, max_bytes: int,
                 check: Callable[[bytes], bytes] = check_json_numbers):
        self.app = app
        self.max_bytes = max_bytes
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/invocations":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(scope, receive)
            checked = self.check(body)
        except BadRequest as err:
            await _reply(send, err.status, str(err))
            return
        if checked is not body:  # rewritten: the header must announce the new length
            scope = {**scope, "headers": [
                *((k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"),
                (b"content-length", str(len(checked)).encode())]}
        await self.app(scope, _replay(checked, receive), _without_echo(send))

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body, refusing before reading when the header announces too much."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise BadRequest(415, "send the latent vectors as JSON (Content-Type: "
                                  "application/json)")
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BadRequest(400, "the Content-Length header is not a number")
            self._limit(int(declared))
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest(400, "the client went away before sending the whole body")
            body += message.get("body", b"")
            self._limit(len(body))
            if not message.get("more_body", False):
                return bytes(body)

    def _limit(self, size: int) -> None:
        if size > self.max_bytes:
            raise BadRequest(413, f"the request body is over {self.max_bytes:,} bytes, the most "
                                  f"this model takes; send fewer latent vectors per request")


# MLflow's wrappers of a model's error, or of a schema check, repeat the input before the error
ECHOES = (("Failed to predict data '", "\nError: "), ("Failed to enforce schema of data '",
                                                      "'. Error: "))


def _without_echo(send: Send) -> Send:
    """A send channel that drops the request MLflow repeats in a 400's message, keeping the
    model's own error after it (a message must never echo what was sent)."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def filtered(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start" and message.get("status") == 400:
            start = message
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = _drop_echo(b"".join(chunks))
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return filtered


def _drop_echo(body: bytes) -> bytes:
    """The JSON error body with `message` cut to the model's own error, when MLflow wrapped it."""
    try:
        reply = json.loads(body)
    except ValueError:
        return body
    message = reply.get("message") if isinstance(reply, dict) else None
    for prefix, split in ECHOES:
        if isinstance(message, str) and message.startswith(prefix) and split in message:
            reply["message"] = message.split(split, 1)[1]
            return json.dumps(reply).encode()
    return body


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that hands the app the body already read, then the real channel."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _reply(send: Send, status: int, message: str) -> None:
    code = {413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}.get(
        status, "INVALID_PARAMETER_VALUE")
    payload = json.dumps({"error_code": code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})


def install_request_gate(max_bytes: int,
                         check: Callable[[bytes], bytes] = check_json_numbers) -> None:
    """Put `RequestGate` in front of every FastAPI app this process builds afterwards.

    The scoring server builds its app right after loading the model and gives the model no
    handle on it, so the pyfunc loader calls this: FastAPI builds an app's middleware stack
    on its first request, and the gate wraps that stack. Calling it again changes nothing.
    """
    from fastapi import FastAPI

    build = FastAPI.build_middleware_stack
    if getattr(build, _GATE_MARK, False):
        return

    def gated(app: FastAPI) -> ASGIApp:
        return RequestGate(build(app), max_bytes, check)

    setattr(gated, _GATE_MARK, True)
    FastAPI.build_middleware_stack = gated
