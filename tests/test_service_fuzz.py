"""Generated requests against every operation of the OpenAPI spec: never a server error.

hypothesis drives three families (more than 500 requests together): random bodies for POST /jobs,
valid specs with one field replaced by random JSON, and every documented route with random path
and query values.
"""

from __future__ import annotations

import copy
import string
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from service_helpers import tiny_spec

from autocompress.service.app import create_app
from autocompress.service.policy import ServerSettings
from autocompress.service.queue import JobQueue

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "name",
    "model",
    "space",
    "targets",
    "objectives",
    "budgets",
    "search",
    "calibration",
    "workload",
    "storage",
    "tracking",
    "workdir",
    "export",
    "backend",
    "workers",
    "trust_remote_code",
    "search.trials",
    "search.sampler",
    "search.seed",
    "search.timeout",
    "search.population_size",
    "search.heartbeat_seconds",
    "objectives.0",
    "objectives.0.metric",
    "objectives.0.direction",
    "budgets.kl",
    "budgets.kl.max",
    "calibration.seq_len",
    "calibration.source",
    "workload.prompt_tokens",
    "targets.0",
]


class Counter:
    def __init__(self, client: TestClient):
        self.client, self.sent, self.statuses = client, 0, []

    def request(self, method: str, url: str, **kwargs) -> int:
        status = self.client.request(method, url, **kwargs).status_code
        self.sent += 1
        self.statuses.append(status)
        assert status < 500, (method, url, kwargs)
        return status


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_checkpoints):
    workdir = tmp_path_factory.mktemp("fuzz")
    settings_ = ServerSettings(workdir=workdir, database=f"sqlite:///{workdir / 'queue.db'}")
    with TestClient(
        create_app(JobQueue(settings_.database), settings_, embedded_worker=False), raise_server_exceptions=False
    ) as client:
        counter = Counter(client)
        counter.spec = tiny_spec(tiny_checkpoints["llama"], name="fuzz-base")
        assert counter.request("POST", "/jobs", json=counter.spec) == 201
        yield counter
    assert counter.sent >= 500
    assert all(s < 500 for s in counter.statuses)


def _set(spec: dict, path: str, value: object) -> dict:
    spec = copy.deepcopy(spec)
    *parents, last = path.split(".")
    node = spec
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            return spec
    if isinstance(node, list):
        node[int(last)] = value
    elif value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return spec


@FUZZ
@given(body=st.one_of(JSON, st.binary(max_size=200)), yaml=st.booleans())
def test_random_bodies(api, body, yaml):
    import json

    if isinstance(body, bytes):
        status = api.request(
            "POST", "/jobs", content=body, headers={"content-type": "application/yaml" if yaml else "application/json"}
        )
    else:
        status = api.request("POST", "/jobs", content=json.dumps(body), headers={"content-type": "application/json"})
    assert status in (201, 200, 409, 413, 422)


@FUZZ
@given(
    field=st.sampled_from(FIELDS),
    value=JSON,
    name=st.text(string.ascii_letters + string.digits, min_size=1, max_size=8),
)
def test_specs_with_one_random_field(api, field, value, name):
    spec = _set({**api.spec, "name": f"f-{name}"}, field, value)
    status = api.request("POST", "/jobs", json=spec)
    assert status in (200, 201, 409, 422)


@FUZZ
@given(data=st.data())
def test_every_documented_operation(api, data):
    paths = api.client.get("/openapi.json").json()["paths"]
    path = data.draw(st.sampled_from(sorted(paths)))
    method = data.draw(st.sampled_from(sorted(paths[path])))
    known = [j["id"] for j in api.client.get("/jobs").json()]
    job_id = data.draw(st.sampled_from(known) | st.text(string.printable, min_size=1, max_size=40))
    url = path.replace("{job_id}", quote(job_id, safe=""))
    params = {
        p["name"]: data.draw(JSON.filter(lambda v: not isinstance(v, (dict, list))) | st.text(max_size=10))
        for p in paths[path][method].get("parameters", [])
        if p["in"] == "query"
    }
    params = {k: v for k, v in params.items() if v is not None}
    api.request(method.upper(), url, params=params, json=data.draw(JSON) if method == "post" else None)
