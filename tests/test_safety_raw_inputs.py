"""Raw JSON from a client that skips the page: every number input of every endpoint, sent NaN, ±Infinity,
2^70, 1e400, text, a list, an object, true or null, gets a message that says what was expected (or a
valid answer where the value is acceptable), never Python's own words; and the server keeps serving.

The requests are real JSON text with the `NaN` / `Infinity` tokens and 2^70 as a bare integer, POSTed to
`/gradio_api/call/<endpoint>` and read back from its event stream: gradio_client would clean them first.
"""
from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from vae_explorer.server import ViewError, number_input

from .conftest import REPO

requests = pytest.importorskip("requests")

# label -> the JSON token sent in place of a number
HOSTILE = {
    "NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity", "2^70": str(2**70), "1e400": "1e400",
    "text": '"many"', "list": "[1, 2]", "object": '{"value": 1}', "true": "true", "null": "null",
}
# Values an endpoint may accept: null can mean "default", and 2^70 is a number (an index past the end
# highlights nothing on the map, a β of 2^70 is a weight). The rest are never numbers.
MAY_BE_ACCEPTED = {"2^70", "null"}
# Python's words and Gradio's preprocessing errors: never for a user.
LEAKS = ("Original error", "object at 0x", "Traceback", "Something went wrong", "Error:", "<class", "not supported "
         "between", "could not convert", "cannot convert", "NoneType", "Could not preprocess", "unexpected")
# A clear refusal says what was expected (or names the setting that was wrong).
EXPECTED = re.compile(r"must be|out of range|at most|at least|larger than|too large|does not apply|needs|choose")
# /train_start with every setting valid ends at its last check, the checkpoint name: nothing starts.
TAKEN_NAME = "digits_vae"
ACCEPTED_TRAINING = f"a checkpoint named '{TAKEN_NAME}' exists already"


# ---- the check itself, as functions -------------------------------------------------------------

@pytest.mark.parametrize("value,shown", [
    (float("nan"), "NaN"), (float("inf"), "Infinity"), (float("-inf"), "-Infinity"), ("many", '"many"'),
    ([1, 2], "[1, 2]"), ({"value": 1}, '{"value": 1}'), (True, "true"), (None, "null"), (2**70, str(2**70)),
    (10**400, "1" + "0" * 36 + "..."), (-1, "-1"), (26, "26"),
])
def test_number_input_names_the_field_the_range_and_what_came(value, shown):
    with pytest.raises(ViewError) as e:
        number_input(value, "Grid size", 5, 25, whole=True)
    assert str(e.value) == f"Grid size must be a whole number from 5 to 25, got {shown}"


def test_number_input_passes_numbers_through_unchanged():
    assert number_input(5, "n", 5, 25) == 5 and number_input(25.0, "n", 5, 25) == 25.0
    assert number_input(2**70, "index", 0) == 2**70  # no maximum: the handler says what is in range
    assert number_input(-1e300, "x") == -1e300
    with pytest.raises(ViewError, match="x must be a number of at least 0, got -0.5"):
        number_input(-0.5, "x", 0)
    with pytest.raises(ViewError, match="x must be a number of at most 1, got 2"):
        number_input(2, "x", maximum=1)


def test_the_page_widgets_check_and_draw_like_gradios():
    import gradio as gr

    import app

    assert not (REPO / "app.pyi").exists()  # defining the widgets wrote no stub file into the checkout
    box = app.CheckedNumber(value=0, precision=0, minimum=0, label="Test item")
    slider = app.CheckedSlider(0, 1, value=0.5, step=0.01, label="Noise level")
    assert (box.get_block_name(), slider.get_block_name()) == ("number", "slider")  # the page's own widgets
    # What the page sends comes out as gr.Number's and gr.Slider's preprocessing makes it.
    for value in (0, 3, 2.4, 2**70):
        assert box.preprocess(value) == gr.Number(precision=0, minimum=0).preprocess(value)
    for value in (0, 0.25, 1):
        assert slider.preprocess(value) == gr.Slider(0, 1, step=0.01).preprocess(value)
    assert box.preprocess(None) is None  # an empty box: the handler decides
    for widget, value, message in [(box, float("nan"), "Test item must be a whole number of at least 0, got NaN"),
                                   (box, "3", 'Test item must be a whole number of at least 0, got "3"'),
                                   (slider, None, "Noise level must be a number from 0 to 1, got null"),
                                   (slider, 1.5, "Noise level must be a number from 0 to 1, got 1.5")]:
        with pytest.raises(gr.Error) as e:
            widget.preprocess(value)
        assert e.value.message == message


# ---- through the server, as raw JSON ----------------------------------------------------------------

@pytest.fixture(scope="module")
def server(app_server):
    url, _ = app_server
    http = requests.Session()
    info = http.get(f"{url}/gradio_api/info", timeout=30).json()
    return url, http, info["named_endpoints"]


def call(http, url: str, endpoint: str, tokens: list[str]) -> tuple[str, object]:
    """POST raw JSON text (`tokens` are JSON values as written) and read the event stream:
    ("complete", outputs) or ("error", message)."""
    body = '{"data": [' + ", ".join(tokens) + "]}"
    r = http.post(f"{url}/gradio_api/call{endpoint}", data=body, headers={"content-type": "application/json"},
                  timeout=60)
    if r.status_code != 200:
        return "http", f"{r.status_code}: {r.text[:300]}"
    stream = http.get(f"{url}/gradio_api/call{endpoint}/{r.json()['event_id']}", timeout=120).text
    events = re.findall(r"^event: (\w+)\ndata: (.*)$", stream, flags=re.M)
    kind, data = events[-1]
    data = json.loads(data) if data not in ("", "null") else None
    if kind == "error":
        return "error", data.get("error") if isinstance(data, dict) else data
    return kind, data


def defaults(endpoint: str, params: list[dict]) -> list[str]:
    """Each parameter's default as JSON text: a call that works."""
    tokens = [json.dumps(p.get("parameter_default")) for p in params]
    if endpoint == "/train_start":
        tokens[[p["parameter_name"] for p in params].index("run_name")] = json.dumps(TAKEN_NAME)
    return tokens


def accepted(endpoint: str, kind: str, answer) -> bool:
    if endpoint == "/train_start":
        return kind == "error" and ACCEPTED_TRAINING in str(answer)
    return kind == "complete"


def numeric_inputs(endpoints: dict) -> list[tuple[str, int, str]]:
    """(endpoint, parameter index, parameter name) of every input whose API type is a number."""
    return [(name, i, p["parameter_name"]) for name, ep in endpoints.items() for i, p in enumerate(ep["parameters"])
            if p.get("type", {}).get("type") in ("number", "integer")]


def test_every_number_input_refuses_what_is_not_a_number_clearly(server):
    url, http, endpoints = server
    inputs = numeric_inputs(endpoints)
    # The page has a dozen endpoints with numbers: discovery found them (not an empty loop that passes).
    assert len({e for e, _, _ in inputs}) >= 12 and len(inputs) >= 30, inputs
    for endpoint in {e for e, _, _ in inputs}:  # with the defaults every call works, so a refusal below is the value's
        kind, answer = call(http, url, endpoint, defaults(endpoint, endpoints[endpoint]["parameters"]))
        assert accepted(endpoint, kind, answer), (endpoint, kind, str(answer)[:300])

    cases = [(endpoint, i, name, label) for endpoint, i, name in inputs for label in HOSTILE]

    def send(case):
        endpoint, i, _, label = case
        tokens = defaults(endpoint, endpoints[endpoint]["parameters"])
        tokens[i] = HOSTILE[label]
        return call(http, url, endpoint, tokens)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:  # the app's default concurrency
        answers = list(pool.map(send, cases))
    elapsed = time.perf_counter() - t0

    problems = []
    for (endpoint, _, name, label), (kind, answer) in zip(cases, answers):
        where = f"{endpoint} {name}={label}"
        if accepted(endpoint, kind, answer):
            if label not in MAY_BE_ACCEPTED:
                problems.append(f"{where}: accepted")
        elif kind != "error" or not isinstance(answer, str):
            problems.append(f"{where}: {kind} {str(answer)[:200]}")
        elif any(leak in answer for leak in LEAKS) or not EXPECTED.search(answer) or len(answer) > 300:
            problems.append(f"{where}: unclear message {answer[:300]!r}")
    assert not problems, f"{len(problems)} of {len(cases)} answers:\n" + "\n".join(problems)
    print(f"{len(cases)} raw calls ({len(inputs)} number inputs × {len(HOSTILE)} values) in {elapsed:.1f} s")

    # The server still serves everyone: a normal call to every endpoint works.
    for endpoint in {e for e, _, _ in inputs}:
        kind, answer = call(http, url, endpoint, defaults(endpoint, endpoints[endpoint]["parameters"]))
        assert accepted(endpoint, kind, answer), (endpoint, kind, str(answer)[:300])


def test_a_seed_beyond_64_bits_on_train_start_is_refused_clearly(server):
    url, http, endpoints = server
    params = endpoints["/train_start"]["parameters"]
    names = [p["parameter_name"] for p in params]
    for seed in (str(2**70), str(2**64), "-1", "1e30"):
        tokens = defaults("/train_start", params)
        tokens[names.index("more")] = json.dumps(f"seed={seed}")
        kind, answer = call(http, url, "/train_start", tokens)
        assert kind == "error" and "seed must be a whole number from 0 to 2^63 - 1" in answer, (seed, answer)
    tokens = defaults("/train_start", params)
    tokens[names.index("more")] = json.dumps(f"seed={2**63 - 1}")  # the largest seed is fine
    assert accepted("/train_start", *call(http, url, "/train_start", tokens))


def test_text_settings_that_are_not_finite_numbers_are_refused(server):
    url, http, endpoints = server
    params = endpoints["/train_start"]["parameters"]
    tokens = defaults("/train_start", params)
    for text in ("beta=nan", "beta=inf", "sigma=inf", "beta=1e400"):
        tokens[[p["parameter_name"] for p in params].index("more")] = json.dumps(text)
        kind, answer = call(http, url, "/train_start", tokens)
        assert kind == "error" and "must be a finite number" in answer, (text, answer)


def test_a_call_with_values_missing_names_the_inputs(server):
    url, http, endpoints = server
    for endpoint in sorted({e for e, _, _ in numeric_inputs(endpoints)}):
        params = endpoints[endpoint]["parameters"]
        first_number = next(i for i, p in enumerate(params) if p["type"].get("type") in ("number", "integer"))
        kind, answer = call(http, url, endpoint, defaults(endpoint, params)[:first_number])
        assert kind == "error" and f"this call needs {len(params)} values" in answer, (endpoint, answer)
        assert not any(leak in answer for leak in LEAKS), answer


def test_a_training_too_big_for_the_memory_is_refused_from_the_page_at_once(server):
    url, http, endpoints = server
    params = endpoints["/train_start"]["parameters"]
    tokens = defaults("/train_start", params)
    tokens[[p["parameter_name"] for p in params].index("latent_dim")] = "10000000"
    t0 = time.perf_counter()
    kind, answer = call(http, url, "/train_start", tokens)
    assert time.perf_counter() - t0 < 5.0
    assert kind == "error" and answer.startswith("this run needs at least 123.2 GB (parameters 30.8 GB"), answer
    assert answer.endswith("or a larger limit with the server's --train-memory-limit (its operator sets it)"), answer
