"""Spaces as plugins: a third-party package adds a space through the `colecache.spaces` entry point,
and a running server embeds, observes and predicts for it; plus the contract over every registered space."""

from __future__ import annotations

import pytest
from colecache_client.spaces import LOAD_ERRORS, get_space, spaces
from space_contract import check_space_contract, pip_install_package

BUILTIN = ("nb201", "nb101", "darts", "einspace", "graph")

TOY_PACKAGE = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "toy-colecache-space"
        version = "0.0.1"

        [project.entry-points."colecache.spaces"]
        toy = "toy_space:ToySpace"

        [tool.setuptools]
        py-modules = ["toy_space"]
    """,
    "toy_space.py": '''
        """A toy space: a stack of 1..6 widths, each a Linear layer with a ReLU."""
        from colecache_client.spaces import SearchSpace, SpecError

        WIDTHS = (8, 16, 32, 64)


        class ToySpace(SearchSpace):
            name = "toy"
            renderer_version = "toy-pytorch/1"
            encodings = ("widths",)
            default_encodings = ("widths",)
            render_choices = {"primitives": ("exclude_helper",), "context": ("none",)}

            def parse(self, value):
                if isinstance(value, str):
                    value = value.split("-")
                if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= 6:
                    raise SpecError("a toy net is 1 to 6 widths, e.g. '8-16'")
                try:
                    widths = tuple(int(v) for v in value)
                except (TypeError, ValueError):
                    raise SpecError(f"widths must be integers, got {value!r}") from None
                for i, w in enumerate(widths):
                    if w not in WIDTHS:
                        raise SpecError(f"layer {i}: width {w} is not one of {WIDTHS}")
                return widths

            def to_string(self, arch):
                return "-".join(map(str, arch))

            def canonical(self, arch):
                return self.to_string(arch)

            def sample(self, rng):
                return tuple(rng.choice(WIDTHS) for _ in range(rng.randint(1, 6)))

            def mutate(self, arch, rng, edits=1):
                out = list(arch)
                for _ in range(edits):
                    i = rng.randrange(len(out))
                    out[i] = rng.choice([w for w in WIDTHS if w != out[i]])
                return tuple(out)

            def neighbours(self, arch):
                return [arch[:i] + (w,) + arch[i + 1:] for i in range(len(arch)) for w in WIDTHS if w != arch[i]]

            def encode(self, arch, kind):
                if kind != "widths":
                    return super().encode(arch, kind)
                return [float(arch.count(w)) for w in WIDTHS] + [float(len(arch))]

            def render(self, arch, *, primitives="exclude_helper", context="none", dataset="cifar10"):
                self.check_render_options(primitives=primitives, context=context)
                lines = ["class Net(nn.Module):", "    def __init__(self):", "        super().__init__()"]
                previous = 4
                for i, width in enumerate(arch):
                    lines.append(f"        self.layer_{i} = nn.Linear({previous}, {width})")
                    previous = width
                lines += ["", "    def forward(self, x):"]
                lines += [f"        x = torch.relu(self.layer_{i}(x))" for i in range(len(arch))]
                lines.append("        return x")
                return "\\n".join(lines) + "\\n"

            def example_call(self, arch, context="none"):
                return "Net()", (2, 4)
    ''',
}


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_spaces_are_registered_through_entry_points(name):
    assert name in spaces(), LOAD_ERRORS.get(name)
    from importlib.metadata import entry_points

    assert name in {ep.name for ep in entry_points(group="colecache.spaces")}


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_space_keeps_the_contract(name):
    check_space_contract(get_space(name), n=12, seed=1, forward=3)


@pytest.mark.integration
def test_pip_installed_plugin_space_is_embedded_and_predicted_by_a_running_server(tmp_path, server_factory):
    pythonpath = pip_install_package(TOY_PACKAGE, tmp_path)
    assert list((tmp_path / "site").glob("toy_colecache_space-*.dist-info"))
    server = server_factory(PYTHONPATH=pythonpath)
    with server.client() as client:
        info = client.get("/info").json()
        assert "toy" in info["spaces"] and info["spaces"]["toy"]["encodings"] == ["widths"]
        assert info["spaces"]["toy"]["op_graph"] is False and info["spaces"]["nb201"]["op_graph"] is True
        assert set(BUILTIN) <= set(info["spaces"])
        # What a study created now without `surrogate` gets, per space: NB201's graph head, the toy's MLP.
        assert info["spaces"]["nb201"]["default_surrogate"]["head"]["kind"] == "gin_ensemble"
        for space in ("nb201", "nb101", "darts"):
            head = info["spaces"][space]["default_surrogate"]["head"]
            assert head["graph_messages"] == "directed" and head["bootstrap"] == "bayesian", space
        toy = info["spaces"]["toy"]["default_surrogate"]
        assert toy["head"]["kind"] == "mlp_ensemble" and toy["features"]["structural"] == ["widths"]

        body = {
            "specs": [{"space": "toy", "arch": "8-16"}, {"space": "toy", "arch": [32, 64, 8]}, "8-16"],
            "space": "toy",
        }
        embedded = client.post("/embed", json=body)
        assert embedded.status_code == 200, embedded.text
        items = embedded.json()["items"]
        assert [i["renderer_version"] for i in items] == ["toy-pytorch/1"] * 3
        assert items[0]["key"] == items[2]["key"] and items[0]["key"] != items[1]["key"]
        assert items[1]["arch"] == "32-64-8" and len(items[0]["embedding"]) == embedded.json()["dim"]

        bad = client.post("/embed", json={"specs": ["8-16", "8-7"], "space": "toy"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["index"] == 1
        assert "width 7" in bad.json()["errors"][0]["reason"]
        refused = client.post("/embed", json={"specs": ["8"], "space": "toy", "render": {"context": "backbone"}})
        assert refused.status_code == 422 and "context='backbone'" in refused.text

        study = client.post("/studies", json={"name": "toy", "space": "toy", "surrogate": {"head": {"epochs": 30}}})
        assert study.status_code == 201, study.text
        sid = study.json()["id"]
        assert study.json()["surrogate"]["features"]["structural"] == ["widths"]
        rows = [{"spec": w, "value": float(len(w))} for w in ("8", "8-16", "16-32-64", "64-64-64-64", "32-8")]
        assert client.post(f"/studies/{sid}/observations", json={"observations": rows}).status_code == 200
        predicted = client.post(f"/studies/{sid}/predict", json={"specs": ["8-8", "64-32-16-8-8-8"]})
        assert predicted.status_code == 200, predicted.text
        means = [p["mean"] for p in predicted.json()["predictions"]]
        assert all(m == m for m in means)  # finite numbers came back for the plugin's architectures

        gin = {"name": "g", "space": "toy", "surrogate": {"head": {"kind": "gin_ensemble"}}}
        graph_head = client.post("/studies", json=gin)
        assert graph_head.status_code == 422, graph_head.text
        assert "surrogate.head.kind" in graph_head.text and "'toy' has no op graph" in graph_head.text

        unknown = client.post("/studies", json={"name": "x", "space": "nope"})
        assert unknown.status_code == 422 and "toy" in unknown.text and "nb101" in unknown.text
