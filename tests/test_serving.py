"""The scoring server's front door: body-size limit (413), JSON numbers only (400), no echo.

Unit tests drive `RequestGate` as an ASGI app in-process; the slow tests send real requests
to `mlflow models serve` of a tiny VAE on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import socket
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from mlflow.exceptions import MlflowException

from mnist_vae import registry
from mnist_vae.model import load_vae
from mnist_vae.serving import (
    BadRequest,
    RequestGate,
    check_column_request,
    check_json_numbers,
    max_body_bytes,
)

MARKER = 98765.4321  # a number no reply may repeat


class _App:
    """The downstream app: records the body it was handed and answers 200."""

    def __init__(self):
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _call(gate, chunks, headers, path="/invocations"):
    """Run one request through `gate`; return (status, reply body, chunks read)."""
    pending = list(chunks)
    read = []
    sent = []

    async def receive():
        if not pending:
            return {"type": "http.disconnect"}
        chunk = pending.pop(0)
        read.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path,
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(gate(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, len(read)


JSON = {"Content-Type": "application/json"}


def test_a_valid_body_reaches_the_app_unchanged():
    app = _App()
    body = json.dumps({"inputs": [[0.5, -1, 2e-3]]}).encode()
    status, _, _ = _call(RequestGate(app, 1000), [body[:5], body[5:]], JSON)
    assert status == 200 and app.bodies == [body]


def test_an_announced_oversized_body_is_refused_before_reading_it():
    app = _App()
    status, reply, read = _call(RequestGate(app, 1000), [b"x" * 2000],
                                {**JSON, "Content-Length": "53000000"})
    assert (status, read, app.bodies) == (413, 0, [])
    assert json.loads(reply)["error_code"] == "REQUEST_TOO_LARGE"


def test_a_chunked_body_is_cut_off_at_the_limit():
    app = _App()
    status, _, read = _call(RequestGate(app, 1000), [b"[" * 600] * 10, JSON)
    assert (status, read, app.bodies) == (413, 2, [])


@pytest.mark.parametrize(("body", "path"), [
    ({"inputs": [["1.5", 0.0, 0.0]]}, "inputs[0][0] is a string"),
    ({"inputs": [[0.0, True, 0.0]]}, "inputs[0][1] is a boolean"),
    ({"instances": [[0.0, 0.0, None]]}, "instances[0][2] is null"),
    ({"inputs": {"z": [[0.0, "x", 0.0]]}}, "inputs.z[0][1] is a string"),
    ({"dataframe_split": {"columns": ["a"], "data": [[False]]}},
     "dataframe_split.data[0][0] is a boolean"),
    ({"dataframe_records": [{"a": "1"}]}, "dataframe_records[0].a is a string"),
])
def test_anything_but_json_numbers_is_a_400_naming_where(body, path):
    with pytest.raises(BadRequest) as err:
        check_json_numbers(json.dumps(body).encode())
    assert err.value.status == 400 and path in str(err.value)


@pytest.mark.parametrize("body", [b"NaN", b'{"inputs": [[NaN]]}', b'{"inputs": [[-Infinity]]}'])
def test_json_extensions_for_non_finite_numbers_are_refused(body):
    with pytest.raises(BadRequest, match="finite numbers"):
        check_json_numbers(body)


@pytest.mark.parametrize("body", [b"", b"\xff\xfe", b"[1, 2", b'"inputs"', b"[" * 100_000])
def test_non_json_bodies_are_a_400_without_echo(body):
    with pytest.raises(BadRequest) as err:
        check_json_numbers(body)
    assert err.value.status == 400


# --- a digit-drawing model: the columns z, digit, seed ----------------------------------------

@pytest.mark.parametrize("body", [{"inputs": [[0.5, -1, 2e-3], [0, 0, 1]]},
                                  {"instances": [[0.5, -1, 2e-3], [0, 0, 1]]},
                                  {"dataframe_split": {"data": [[0.5, -1, 2e-3], [0, 0, 1]]}}])
def test_unnamed_latent_vectors_reach_mlflow_as_the_z_column(body):
    app = _App()
    raw = json.dumps(body).encode()
    status, _, _ = _call(RequestGate(app, 1000, check_column_request), [raw],
                         {**JSON, "Content-Length": str(len(raw))})
    assert status == 200
    assert json.loads(app.bodies[0]) == {"dataframe_split": {
        "columns": ["z"], "data": [[[0.5, -1, 2e-3]], [[0, 0, 1]]]}}


@pytest.mark.parametrize("body", [
    {"dataframe_records": [{"digit": 7, "seed": 3}, {"digit": 0, "seed": 1}]},
    {"dataframe_records": [{"digit": 10}]},  # the generator words the range
    {"dataframe_split": {"columns": ["digit", "seed"], "data": [[7, 3]]}},
    {"dataframe_records": [{"z": [0.5, -1, 2e-3]}]},
    {"dataframe_split": {"columns": ["z"], "data": [[[0.5, -1, 2e-3]]]}},
])
def test_named_requests_pass_unchanged(body):
    raw = json.dumps(body).encode()
    assert check_column_request(raw) is raw


@pytest.mark.parametrize(("body", "message"), [
    ({"dataframe_records": [{"digit": 2.5}]}, "digit must be a whole number 0-9, got 2.5"),
    ({"dataframe_records": [{"digit": 7.0}]}, "digit must be a whole number 0-9, got 7.0"),
    ({"dataframe_records": [{"digit": [7]}]}, "digit must be a whole number 0-9, got list"),
    ({"dataframe_records": [{"digit": True}]}, "digit is a boolean"),
    ({"dataframe_records": [{"digit": "x"}]}, "digit is a string"),
    ({"dataframe_records": [{"digit": 1, "seed": 0.5}]}, "seed must be a whole number >= 0"),
    ({"dataframe_records": [{"digit": 1, "colour": 3}]}, "unknown field 'colour'"),
    ({"dataframe_records": [{"digit": 1, "seed": 2}, {"digit": 1}]}, "the same fields"),
    ({"dataframe_records": [{"digit": 1, "z": [0, 0, 0]}]}, "not both in one request"),
    ({"dataframe_records": [{"z": 0.5}]}, "must be one latent vector"),
    ({"dataframe_split": {"columns": ["digit"], "data": [[1, 2]]}}, "rows of 1 values"),
    ({"inputs": [0.5, 0.5, 0.5]}, "inputs must be a list of latent vectors"),
    ({"inputs": {"digit": [2.5]}}, "digit must be a whole number 0-9"),
])
def test_bad_digit_records_are_a_400_naming_the_problem(body, message):
    with pytest.raises(BadRequest) as err:
        check_column_request(json.dumps(body).encode())
    assert err.value.status == 400 and message in str(err.value)


def test_other_content_types_are_a_415_and_other_paths_pass():
    app = _App()
    assert _call(RequestGate(app, 1000), [b"1,2,3"], {"Content-Type": "text/csv"})[0] == 415
    assert _call(RequestGate(app, 10), [b"x" * 100], {}, path="/ping")[0] == 200


def test_the_limit_fits_the_largest_valid_request():
    rows, width = 256, 32
    z = np.random.default_rng(0).standard_normal((rows, width)) * 1e-7
    body = json.dumps({"inputs": z.tolist()}, indent=8).encode()
    assert len(body) <= max_body_bytes(rows, width)


def test_the_generator_refuses_strings_and_booleans_in_process(tiny_vae_file):
    generator = registry.DigitGenerator(load_vae(tiny_vae_file), 16)
    for bad in (np.array([["1.5", "0", "0"]]), np.array([[True, False, True]]),
                [[0.5, None, 0.5]], [[0.5, 0.5], [0.5]]):
        with pytest.raises(MlflowException) as err:
            generator.predict(bad)
        assert err.value.get_http_status_code() == 400
        assert "inputs must be numbers" in err.value.message
    assert generator.predict(np.zeros((2, 3), np.int64)).shape == (2, 28, 28)


# --- against a real `mlflow models serve` --------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_vae_file):
    from serving_helpers import ModelServer

    root = tmp_path_factory.mktemp("serve")
    registry.save_model(str(root / "model"), load_vae(tiny_vae_file), max_rows=16)
    server = ModelServer(root / "model", root / "serve.log")
    yield server
    server.close()


@pytest.mark.slow
def test_the_server_refuses_json_strings_and_booleans_without_echo(server):
    good = [[0.1, -0.2, MARKER / 1e5]]
    status, reply = server.post_json({"inputs": good})
    assert status == 200 and np.asarray(reply["predictions"]).shape == (1, 28, 28)
    bad = {
        "a quoted number": {"inputs": [["1.5", 0.0, MARKER]]},
        "a boolean": {"inputs": [[True, 0.0, MARKER]]},
        "instances with a string": {"instances": [[0.0, "0.0", MARKER]]},
        "a dataframe with a boolean": {"dataframe_split": {"columns": ["a", "b", "c"],
                                                           "data": [[False, 0.0, MARKER]]}},
        "not JSON": f"digits {MARKER} please".encode(),
        "too many rows": {"inputs": [[0.0, 0.0, MARKER]] * 17},
    }
    for what, body in bad.items():
        status, reply = server.post_json(body)
        assert status == 400, (what, status, reply)
        assert reply["message"] and str(MARKER) not in json.dumps(reply), (what, reply)


@pytest.mark.slow
def test_the_signature_shows_both_forms_and_the_server_takes_both(server, tiny_vae_file,
                                                                    tmp_path_factory):
    from mlflow.models import Model

    signature = Model.load(str(server.model_dir / "MLmodel")).signature
    inputs = {c["name"]: c for c in signature.inputs.to_dict()}
    assert inputs == {"z": {"type": "array", "items": {"type": "double"}, "name": "z",
                            "required": False},
                      "digit": {"type": "long", "name": "digit", "required": False},
                      "seed": {"type": "long", "name": "seed", "required": False}}
    vae = load_vae(tiny_vae_file)
    z = [[0.1, -0.2, 0.3], [1.0, 0.5, -2.0]]
    expected = np.asarray(vae.decode(np.asarray(z, np.float32)))[..., 0]
    for body in ({"inputs": z}, {"instances": z}, {"dataframe_split": {"data": z}},
                 {"dataframe_records": [{"z": row} for row in z]},
                 {"dataframe_split": {"columns": ["z"], "data": [[row] for row in z]}}):
        status, reply = server.post_json(body)
        assert status == 200, (body, reply)
        np.testing.assert_allclose(reply["predictions"], expected, atol=1e-5)
    seven = np.asarray(vae.sample(1, 3, digit=7))[0, ..., 0]
    for body in ({"dataframe_records": [{"digit": 7, "seed": 3}]},
                 {"dataframe_split": {"columns": ["digit", "seed"], "data": [[7, 3]]}}):
        status, reply = server.post_json(body)
        assert status == 200, (body, reply)
        np.testing.assert_allclose(reply["predictions"][0], seven, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("record", "message"), [
    ({"digit": 10}, "digit must be 0-9, got 10"), ({"digit": -1}, "digit must be 0-9, got -1"),
    ({"digit": "x"}, "digit is a string"), ({"digit": 2.5}, "whole number 0-9, got 2.5"),
    ({"digit": True}, "digit is a boolean"), ({"digit": 1, "seed": -2}, "seed must be"),
    ({"digit": 1, "colour": 3}, "unknown field 'colour'"),
])
def test_a_bad_digit_record_is_a_400_and_the_server_keeps_serving(server, record, message):
    status, reply = server.post_json({"dataframe_records": [{"seed": 0, **record}]})
    assert status == 400 and message in reply.get("message", ""), (status, reply)
    assert server.post_json({"dataframe_records": [{"digit": 4}]})[0] == 200


@pytest.mark.slow
def test_a_53_mb_body_is_refused_with_413_before_it_is_sent(server):
    before = server.rss_bytes()
    size = 53_000_000
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        start = time.monotonic()
        conn.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\n"
                     + f"Content-Length: {size}\r\n\r\n".encode() + b'{"inputs": [[')
        reply = http.client.HTTPResponse(conn)  # reads headers and body, however split
        reply.begin()
        body = reply.read().decode()
        seconds = time.monotonic() - start
    assert reply.status == 413, (reply.status, body)
    assert json.loads(body)["error_code"] == "REQUEST_TOO_LARGE"
    assert seconds < 5
    assert server.rss_bytes() - before < 20_000_000
    assert server.post_json({"inputs": [[0.0, 0.0, 0.0]]})[0] == 200  # still serving


@pytest.mark.slow
def test_a_chunked_oversized_body_is_refused_with_413(server):
    def chunks():
        for _ in range(200):
            yield b"[" + b"0.0, " * 2000

    status, raw = server.request("POST", "/invocations", chunks(),
                                 {"Content-Type": "application/json",
                                  "Transfer-Encoding": "chunked"})
    assert status == 413 and json.loads(raw)["error_code"] == "REQUEST_TOO_LARGE"


# --- properties: only the documented errors, never a crash or a silently wrong array ---------

PROPERTY = settings(max_examples=200, deadline=None)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=20)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _leaves(value):
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    return [value]


@PROPERTY
@given(st.binary(max_size=400))
def test_arbitrary_bodies_pass_or_are_a_400(body):
    try:
        check_json_numbers(body)
    except BadRequest as err:
        assert err.status == 400


@PROPERTY
@given(st.sampled_from(["inputs", "instances", "dataframe_records"]), json_values)
def test_a_body_passes_exactly_when_its_data_holds_only_finite_numbers(key, data):
    body = json.dumps({key: data}).encode()  # NaN and Infinity come out as JSON extensions
    try:
        check_json_numbers(body)
    except BadRequest as err:
        assert err.status == 400
        assert not all(_is_number(v) for v in _leaves(data))
    else:
        assert all(_is_number(v) for v in _leaves(data))


@PROPERTY
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5),
       st.one_of(st.none(), st.integers(0, 5000).map(str), st.text(max_size=4)),
       st.sampled_from(["application/json", "application/json; charset=utf-8", "text/csv", ""]))
def test_the_gate_answers_only_200_400_413_415_and_forwards_exactly_the_body(chunks, length,
                                                                               media_type):
    app = _App()
    headers = {"Content-Type": media_type}
    if length is not None:
        headers["Content-Length"] = length
    status, reply, _ = _call(RequestGate(app, 600), chunks, headers)
    body = b"".join(chunks)
    if status == 200:
        assert app.bodies == [body] and len(body) <= 600
        check_json_numbers(body)
    else:
        assert status in (400, 413, 415) and app.bodies == []
        message = json.loads(reply)["message"]
        # the body must not show, unless it is a word of the message any body gets ("applicat")
        _, empty, _ = _call(RequestGate(_App(), 600), [b""], headers)
        shown = body[:20].decode("utf-8", "replace")
        assert len(body) < 4 or shown not in message or shown in json.loads(empty)["message"]


@pytest.fixture(scope="module")
def generator(tiny_vae_file):
    return registry.DigitGenerator(load_vae(tiny_vae_file), max_rows=4)


@PROPERTY
@given(st.data())
def test_the_generator_accepts_exactly_finite_numeric_batches(generator, data):
    dtype = data.draw(st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_,
                                       np.str_, np.float16]))
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    z = data.draw(hnp.arrays(dtype, shape))
    try:
        checked = generator._checked(z)
    except MlflowException as err:
        assert err.get_http_status_code() == 400
        assert not (z.dtype.kind in "iuf" and z.ndim == 2 and z.shape[1] == 3
                    and 1 <= len(z) <= 4 and np.isfinite(z.astype(np.float32)).all())
    else:
        assert z.dtype.kind in "iuf" and checked.dtype == np.float32 and checked.shape == z.shape
        assert 1 <= len(z) <= 4 and np.isfinite(checked).all()
        np.testing.assert_array_equal(checked, z.astype(np.float32))
