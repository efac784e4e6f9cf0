"""Every built-in space through a real server: embed in each spelling, canonical keys, clear 422s with nothing
stored, studies with a candidate pool as the surrogate's reference, and pool-mode BANANAS from the SDK."""

from __future__ import annotations

import random

import pytest
from colecache_client import Bananas, Client
from colecache_client.spaces import get_space

pytestmark = pytest.mark.integration

FAST = {"head": {"epochs": 40}}
GRAPH = {
    "nodes": [
        {"id": "in", "op": "input"},
        {"id": "a", "op": "Conv2d", "params": {"in_channels": 16, "out_channels": 16, "kernel_size": 3, "padding": 1}},
        {"id": "b", "op": "ReLU"},
        {"id": "c", "op": "MyAttention", "params": {"heads": 4}},
        {"id": "out", "op": "output"},
    ],
    "edges": [["in", "a"], ["a", "b"], ["in", "c"], ["b", "out"], ["c", "out"]],
}
GRAPH_RELABELLED = {
    "nodes": [
        {"id": "out", "op": "output"},
        {"id": "z", "op": "MyAttention", "params": {"heads": 4}},
        {"id": "y", "op": "ReLU"},
        {"id": "x", "op": "Conv2d", "params": {"kernel_size": 3, "padding": 1, "in_channels": 16, "out_channels": 16}},
        {"id": "in", "op": "input"},
    ],
    "edges": [["z", "out"], ["y", "out"], ["x", "y"], ["in", "z"], ["in", "x"]],
}
NB101 = {
    "matrix": [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]],
    "ops": ["input", "conv3x3-bn-relu", "maxpool3x3", "output"],
}
NB101_SWAPPED = {
    "matrix": [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]],
    "ops": ["input", "maxpool3x3", "conv3x3-bn-relu", "output"],
}
DARTS = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
    "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)
DARTS_NASLIB = [
    [[0, 3], [1, 3], [0, 3], [1, 3], [1, 3], [0, 2], [0, 2], [2, 5]],
    [[0, 0], [1, 0], [2, 2], [1, 0], [0, 0], [2, 2], [2, 2], [1, 0]],
]
EINSPACE = "sequential{computation{linear(32)}, computation{relu}}"
EINSPACE_JSON = {"op": "sequential", "children": [{"op": "computation", "children": ["linear(32)"]}, "relu"]}


def _embed(client, specs, **extra):
    return client.post("/embed", json={"specs": specs, "render": {"canonical": True}, **extra})


def test_every_space_embeds_in_its_spellings_and_isomorphic_variants_share_a_key(default_server):
    with default_server.client() as client:
        cases = [
            ("nb101", [NB101, NB101_SWAPPED]),
            ("darts", [DARTS, DARTS_NASLIB]),
            ("einspace", [EINSPACE, EINSPACE_JSON]),
            ("graph", [GRAPH, GRAPH_RELABELLED]),
        ]
        for space, (a, b) in cases:
            response = _embed(client, [{"space": space, "arch": a}, {"space": space, "arch": b}])
            assert response.status_code == 200, (space, response.text)
            items = response.json()["items"]
            assert items[0]["key"] == items[1]["key"], space
            assert items[0]["renderer_version"] == get_space(space).renderer_version
            plain = client.post("/embed", json={"specs": [{"space": space, "arch": a}]}).json()["items"][0]
            assert plain["source"] in ("memory", "sql", "computed")
        # the bare spelling of the request's default space works too
        bare = client.post("/embed", json={"specs": [GRAPH], "space": "graph"})
        assert bare.status_code == 200, bare.text


@pytest.mark.parametrize(
    ("space", "arch", "needle"),
    [
        (
            "graph",
            {
                "nodes": [
                    {"id": 0, "op": "input"},
                    {"id": 1, "op": "ReLU"},
                    {"id": 2, "op": "Tanh"},
                    {"id": 3, "op": "output"},
                ],
                "edges": [[0, 1], [1, 2], [2, 1], [2, 3]],
            },
            "cycle",
        ),
        ("graph", {"nodes": [{"id": 0, "op": "input"}, {"id": 1, "op": "output"}], "edges": []}, "reach"),
        ("nb101", {"matrix": [[0, 1], [0, 0]], "ops": ["input", "conv5x5"]}, "conv5x5"),
        (
            "nb101",
            "0111111/0011111/0001111/0000111/0000011/0000001/0000000;input,conv3x3-bn-relu,conv3x3-bn-relu,"
            "conv3x3-bn-relu,conv3x3-bn-relu,conv3x3-bn-relu,output",
            "edges",
        ),
        ("darts", "Genotype(normal=[('sep_conv_3x3', 0)])", "genotype"),
        ("einspace", "sequential{" * 40 + "relu" + "}" * 40, "deep"),
        ("einspace", "sequential{computation{relu}, computation{conv9}}", "conv9"),
    ],
)
def test_invalid_architectures_are_422_naming_the_item_and_nothing_is_stored(default_server, space, arch, needle):
    with default_server.client() as client:
        good = get_space(space).to_string(get_space(space).sample(random.Random(0)))
        response = client.post("/embed", json={"specs": [good, arch], "space": space})
        assert response.status_code == 422, response.text
        errors = response.json()["errors"]
        assert [e["index"] for e in errors] == [1] and needle in errors[0]["reason"].lower(), errors
        sid = client.post("/studies", json={"name": "bad", "space": space}).json()["id"]
        posted = client.post(
            f"/studies/{sid}/observations",
            json={"observations": [{"spec": good, "value": 1.0}, {"spec": arch, "value": 2.0}]},
        )
        assert posted.status_code == 422 and posted.json()["errors"][0]["index"] == 1
        assert client.get(f"/studies/{sid}").json()["n_observations"] == 0


def test_studies_refuse_options_and_encodings_their_space_lacks(default_server):
    with default_server.client() as client:
        no_comment = client.post("/studies", json={"name": "x", "space": "graph", "render": {"context": "comment"}})
        assert no_comment.status_code == 422 and "context='comment'" in no_comment.text
        no_path = client.post(
            "/studies", json={"name": "x", "space": "graph", "surrogate": {"features": {"structural": ["path"]}}}
        )
        assert no_path.status_code == 422 and "'path'" in no_path.text and "ops" in no_path.text
        ok = client.post("/studies", json={"name": "x", "space": "nb101"}).json()
        assert ok["surrogate"]["head"]["kind"] == "gin_ensemble" and ok["surrogate"]["features"]["structural"] == []
        mlp = {"name": "y", "space": "nb101", "surrogate": {"head": {"kind": "mlp_ensemble"}}}
        ok_mlp = client.post("/studies", json=mlp).json()
        assert ok_mlp["surrogate"]["features"]["structural"] == ["path"]  # the space's default encodings
        assert [s["name"] for s in client.get("/studies").json()["studies"]].count("x") == 1


def test_candidate_pool_is_the_reference_and_bad_pools_store_nothing(default_server):
    space = get_space("darts")
    rng = random.Random(3)
    pool = space.dedupe(space.sample(rng) for _ in range(60))
    texts = [space.to_string(a) for a in pool]
    with default_server.client() as client:
        before = len(client.get("/studies").json()["studies"])
        bad = client.post("/studies", json={"name": "p", "space": "darts", "candidates": [*texts[:3], "nonsense"]})
        assert bad.status_code == 422 and bad.json()["errors"][0]["index"] == 3
        assert len(client.get("/studies").json()["studies"]) == before
        study = client.post(
            "/studies", json={"name": "p", "space": "darts", "candidates": texts[:40], "surrogate": FAST}
        ).json()
        sid = study["id"]
        assert study["n_candidates"] == 40
        rows = [{"spec": t, "value": 90 + 0.1 * t.count("sep_conv")} for t in texts[:8]]
        client.post(f"/studies/{sid}/observations", json={"observations": rows})
        predicted = client.post(f"/studies/{sid}/predict", json={"specs": texts[40:45]}).json()
        assert predicted["reference"] == "candidates"
        refused = client.put(f"/studies/{sid}/candidates", json={"specs": ["Genotype(normal=[])"]})
        assert refused.status_code == 422 and client.get(f"/studies/{sid}").json()["n_candidates"] == 40
        version = client.put(f"/studies/{sid}/candidates", json={"specs": None}).json()["version"]
        assert client.get(f"/studies/{sid}").json()["n_candidates"] == 0 and version > study["version"]
        again = client.post(f"/studies/{sid}/predict", json={"specs": texts[40:45]}).json()
        assert again["reference"] == "observed" and again["surrogate_version"] == version


def test_pool_bananas_through_the_server_asks_before_results_and_never_repeats(default_server):
    space = get_space("nb101")
    rng = random.Random(7)
    pool = [space.to_string(a) for a in space.dedupe(space.sample(rng) for _ in range(120))]
    value = {space.canonical(space.parse(a)): 80 + len(a) % 13 for a in pool}
    with Client(default_server.url, timeout=300) as client:
        study = client.create_study("pool", space="nb101", surrogate=FAST)
        search = Bananas(study, seed=0, pool=pool, initial_samples=4)
        assert client.get_study(study.id).n_candidates == len(pool)
        first = search.ask(10)  # dispatch many before any result (asynchronous workers)
        more = search.ask(2)
        asked = first + more
        assert len(asked) == 12 and len({space.canonical(space.parse(a)) for a in asked}) == 12
        assert all(a in pool for a in asked)
        for arch in asked:
            search.tell(arch, value[space.canonical(space.parse(arch))])
        result = search.run(lambda a: value[space.canonical(space.parse(a))], budget=20, batch_size=5)
        seen = [space.canonical(space.parse(a)) for a, _ in result.history] + [
            space.canonical(space.parse(a)) for a in asked
        ]
        assert len(seen) == len(set(seen)) == 32  # nothing proposed twice
        assert client.predict(study.id, pool[:3]).reference == "candidates"


@pytest.mark.parametrize("space_name", ["einspace", "graph", "darts"])
def test_bananas_searches_open_spaces_with_their_own_sampler_and_mutation(default_server, space_name):
    space = get_space(space_name)

    def objective(arch: str) -> float:  # any deterministic function of the architecture will do
        return float(sum(space.encode(space.parse(arch), space.encodings[0])[:8]))

    with Client(default_server.url, timeout=300) as client:
        study = client.create_study(f"open-{space_name}", space=space_name, surrogate=FAST)
        result = Bananas(study, seed=1, initial_samples=4, candidates=12).run(objective, budget=10, batch_size=3)
        keys = [space.canonical(space.parse(a)) for a, _ in result.history]
        assert len(result.history) == 10 and len(set(keys)) == 10
        assert client.get_study(study.id).n_observations == 10
