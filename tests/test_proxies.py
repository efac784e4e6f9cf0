"""Zero-cost proxies (issue 10, lever 1): the formulas on networks whose answer is known by hand, the
cache (same tiers and keys as embeddings, canonical classes once), `POST /proxies`, the CLI's
resumable whole-space fill and studies with a proxy feature block."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from colecache.proxies import PROXIES, stored_value
from colecache.proxies.measure import plan_for
from colecache.proxies.zero_cost import ProxyInputs, compute_proxies, power_law_noise
from colecache_client.spaces import get_space
from torch import nn

SPACE = get_space("nb201")
CELL = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
# Two spellings of one network: the output is the input; what nodes 1 and 2 compute is never used.
ISO_A = "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|none~2|"
ISO_B = "|avg_pool_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|"
DEAD = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"  # no path from input to output


def _tiny(cell: str):
    network = SPACE.proxy_network()
    code = SPACE.render(SPACE.parse(cell), **network.render_options)

    def build() -> nn.Module:
        namespace = {"torch": torch, "nn": nn}
        exec(compile(code, "<cell>", "exec"), namespace)
        return namespace["Network"](channels=4, cells_per_stage=1)

    return build


INPUTS = ProxyInputs((3, 16, 16), 10, batch_size=8, seed=0)


def test_synflow_params_and_flops_match_hand_computation():
    torch.manual_seed(0)
    layer = nn.Linear(5, 3, bias=False)

    def build():
        return nn.Sequential(nn.Flatten(), nn.Linear(12, 5, bias=False), nn.Linear(5, 3, bias=False))

    inputs = ProxyInputs((3, 2, 2), 3, batch_size=4)
    out = compute_proxies(build, inputs, ["params", "flops", "synflow"])
    torch.manual_seed(inputs.seed)
    net = build()
    first, second = net[1].weight.detach().abs().double(), net[2].weight.detach().abs().double()
    assert out["params"] == 12 * 5 + 5 * 3
    assert out["flops"] == 2 * (12 * 5 + 5 * 3)  # 2 x multiply-adds for one input
    # R = 1^T |W2| |W1| 1: dR/dW1 = |W2|^T 1 1^T, dR/dW2 = 1 (|W1| 1)^T; synflow sums |w * dR/dw| = 2 R.
    r = float(torch.ones(3, dtype=torch.float64) @ second @ first @ torch.ones(12, dtype=torch.float64))
    assert math.isclose(out["synflow"], 2 * r, rel_tol=1e-9)
    del layer


def test_naswot_counts_activation_agreement():
    # One ReLU over 2 units, batch of 2, inputs chosen so the codes are (1, 0) and (1, 1):
    # K = [[2, 1], [1, 2]] -> log det 3.
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()
            self.head = nn.Linear(2, 2)

        def forward(self, x):
            codes = torch.tensor([[1.0, -1.0], [1.0, 1.0]]) + 0 * x.sum()
            return self.head(self.relu(codes))

    out = compute_proxies(Fixed, ProxyInputs((1,), 2, batch_size=2), ["naswot"])
    assert math.isclose(out["naswot"], math.log(3.0), rel_tol=1e-9)


def test_scores_are_reproducible_finite_and_seeded():
    first = compute_proxies(_tiny(CELL), INPUTS)
    again = compute_proxies(_tiny(CELL), INPUTS)
    other_seed = compute_proxies(_tiny(CELL), ProxyInputs((3, 16, 16), 10, batch_size=8, seed=1))
    assert set(first) == set(PROXIES) and first == again
    assert all(math.isfinite(v) for v in first.values())
    assert other_seed["params"] == first["params"] and other_seed["naswot"] != first["naswot"]


def test_power_law_inputs_are_standardised_spatially_correlated_and_colour_correlated():
    x = ProxyInputs((3, 32, 32), 10, batch_size=64, seed=0).batch(torch.Generator().manual_seed(1))
    white = ProxyInputs((3, 32, 32), 10, batch_size=64, seed=0, kind="gaussian").batch(torch.Generator().manual_seed(1))
    assert x.shape == white.shape == (64, 3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x.mean(dim=(2, 3)), torch.zeros(64, 3), atol=1e-5)
    assert torch.allclose(x.std(dim=(2, 3)), torch.ones(64, 3), atol=1e-4)

    def neighbour_correlation(t):  # horizontally adjacent pixels
        return float(torch.corrcoef(torch.stack([t[..., :-1].flatten(), t[..., 1:].flatten()]))[0, 1])

    assert neighbour_correlation(x) > 0.8 and abs(neighbour_correlation(white)) < 0.05
    red, green = x[:, 0].flatten(), x[:, 1].flatten()
    assert float(torch.corrcoef(torch.stack([red, green]))[0, 1]) > 0.8  # a shared luminance field
    # Seeded, and any number of spatial axes; inputs without one (a flat vector) fall back to white noise.
    again = ProxyInputs((3, 32, 32), 10, batch_size=64, seed=0).batch(torch.Generator().manual_seed(1))
    assert torch.equal(x, again)
    assert power_law_noise((2, 4, 50), torch.Generator().manual_seed(0)).shape == (2, 4, 50)
    assert ProxyInputs((7,), 2, batch_size=3).batch(torch.Generator().manual_seed(0)).shape == (3, 7)
    one_pixel = ProxyInputs((3, 1, 1), 2, batch_size=3).batch(torch.Generator().manual_seed(0))
    assert one_pixel.shape == (3, 3, 1, 1) and torch.isfinite(one_pixel).all()  # white, not 0/0
    with pytest.raises(ValueError, match="spatial extent"):
        power_law_noise((2, 3, 1, 1), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="unknown proxy input kind 'photos'"):
        ProxyInputs((3, 32, 32), 10, kind="photos")


def test_the_input_kind_changes_the_scores_that_see_inputs_only():
    white = compute_proxies(_tiny(CELL), ProxyInputs((3, 16, 16), 10, batch_size=8, seed=0, kind="gaussian"))
    natural = compute_proxies(_tiny(CELL), INPUTS)
    assert INPUTS.kind == "power_law"  # the default
    for name in ("params", "flops", "synflow"):  # no input batch (synflow feeds all-ones)
        assert white[name] == natural[name], name
    for name in ("naswot", "jacov", "snip", "grad_norm"):
        assert white[name] != natural[name], name


def test_a_network_cut_off_from_its_input_has_undefined_input_scores_not_an_error():
    out = compute_proxies(_tiny(DEAD), INPUTS)
    assert math.isnan(out["jacov"])
    assert out["params"] > 0 and math.isfinite(out["snip"])


def test_more_capacity_scores_higher_on_size_proxies():
    small = compute_proxies(
        _tiny("|avg_pool_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"), INPUTS
    )
    large = compute_proxies(
        _tiny("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"), INPUTS
    )
    for name in ("params", "flops", "synflow"):
        assert large[name] > small[name], name


def test_the_isomorphic_pair_is_one_class():
    assert (
        SPACE.canonical(SPACE.parse(ISO_A)) == SPACE.canonical(SPACE.parse(ISO_B)) != SPACE.canonical(SPACE.parse(CELL))
    )


def test_stored_scale_is_signed_log_for_heavy_tailed_proxies():
    assert stored_value("synflow", 1e37) == pytest.approx(37.0)
    assert stored_value("naswot", 250.5) == 250.5
    assert math.isnan(stored_value("jacov", float("nan")))
    assert stored_value("snip", -9.0) == pytest.approx(-1.0)


def test_the_key_covers_everything_that_shapes_the_scores():
    ids = {
        plan_for("nb201", 16, 0).fingerprint["id"],
        plan_for("nb201", 32, 0).fingerprint["id"],
        plan_for("nb201", 16, 1).fingerprint["id"],
        plan_for("darts", 16, 0).fingerprint["id"],
        plan_for("nb201", 16, 0, "gaussian").fingerprint["id"],
    }
    assert len(ids) == 5
    assert plan_for("nb201").fingerprint["inputs"] == "power_law" and plan_for("nb201").batch_size == 16
    # Values scored before the input kind was a setting (suite zc/1, Gaussian) keep their keys.
    assert plan_for("nb201", 16, 0, "gaussian").fingerprint["id"] == "zc/1:nb201:632828c88ca380035ca48f52"
    assert plan_for("nb201", 16, 0, "gaussian").fingerprint["inputs"] == "gaussian"  # named, outside the hash
    assert plan_for("nb201").fingerprint["id"].startswith("zc/2:nb201:")
    assert plan_for("nb201").fingerprint["network"]["constructor"] == "Network(channels=16, cells_per_stage=5)"


# --- through a real server ------------------------------------------------------------------------
@pytest.mark.integration
def test_proxies_route_caches_canonical_classes_and_names_bad_items(default_server):
    with default_server.client() as client:
        first = client.post("/proxies", json={"specs": [CELL, ISO_A, ISO_B]})
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["proxies"] == list(PROXIES) and "synflow" in body["log10_scaled"]
        items = body["items"]
        assert [i["source"] for i in items] == ["computed", "computed", "computed"]
        assert items[1]["values"] == items[2]["values"]  # one network per isomorphism class
        assert items[0]["values"] != items[1]["values"]
        assert all(v is not None and math.isfinite(v) for v in items[0]["values"].values())

        again = client.post("/proxies", json={"specs": [ISO_B, CELL]}).json()
        assert again["counts"] == {"memory": 2}
        assert again["items"][1]["values"] == items[0]["values"]  # the cached bytes, request order kept

        dead = client.post("/proxies", json={"specs": [DEAD]}).json()["items"][0]["values"]
        assert dead["jacov"] is None and dead["params"] is not None

        code = client.post("/proxies", json={"specs": [CELL, {"code": "import os\nos.system('true')\n"}]})
        assert code.status_code == 422 and code.json()["errors"][0]["index"] == 1
        assert "architecture" in code.json()["errors"][0]["reason"]

        einspace = client.post(
            "/proxies", json={"specs": ["sequential{computation{linear(32)}, computation{relu}}"], "space": "einspace"}
        )
        assert einspace.status_code == 422 and "no network to score" in einspace.text

        bad = client.post("/proxies", json={"specs": [CELL, "|nor_conv_3x3~0|+|bogus~0|"]})
        assert bad.status_code == 422 and bad.json()["errors"][0]["index"] == 1


@pytest.mark.integration
def test_a_study_uses_proxies_as_a_feature_block(default_server):
    rng = __import__("random").Random(4)
    cells = [c.to_string() for c in SPACE.dedupe(SPACE.sample(rng) for _ in range(30))][:8]
    with default_server.client() as client:
        refused = client.post(
            "/studies", json={"name": "p", "space": "einspace", "surrogate": {"features": {"proxies": ["synflow"]}}}
        )
        assert refused.status_code == 422 and "zero-cost proxies" in refused.text
        unknown = client.post("/studies", json={"name": "p", "surrogate": {"features": {"proxies": ["zen"]}}})
        assert unknown.status_code == 422

        config = {"features": {"cole": False, "structural": [], "proxies": ["params", "synflow", "naswot"]}}
        study = client.post("/studies", json={"name": "p", "surrogate": {**config, "head": {"epochs": 40}}}).json()
        rows = [{"spec": c, "value": 60.0 + i} for i, c in enumerate(cells)]
        assert client.post(f"/studies/{study['id']}/observations", json={"observations": rows}).status_code == 200
        predicted = client.post(f"/studies/{study['id']}/predict", json={"specs": cells[:3] + [CELL]})
        assert predicted.status_code == 200, predicted.text
        assert len(predicted.json()["predictions"]) == 4
        code = client.post(f"/studies/{study['id']}/predict", json={"specs": [{"code": "x = 1\n"}]})
        assert code.status_code == 422


@pytest.mark.integration
def test_cli_fills_a_space_resumably(tmp_path):
    env = {**os.environ, "COLECACHE_DATA_DIR": str(tmp_path / "data"), "COLECACHE_LOG_LEVEL": "warning"}
    command = [sys.executable, "-m", "colecache.cli", "proxies", "--space", "nb201", "--limit", "40"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "10 networks" in first.stdout and "'computed': 10" in first.stdout
    assert "40 architectures, 10 networks (one per isomorphism class" in first.stderr
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0 and "'sql': 10" in second.stdout and "computed" not in second.stdout
    refused = subprocess.run([*command[:4], "--space", "einspace"], capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "no network to score" in refused.stderr and "--archs" not in refused.stderr


@pytest.mark.integration
def test_sdk_proxies_in_order_with_nulls_for_undefined_scores(default_server):
    from colecache_client import Client

    with Client(default_server.url) as client:
        result = client.proxies([CELL, DEAD, CELL])
    assert result.proxies == list(PROXIES) and len(result.items) == 3
    assert result.items[0].values == result.items[2].values
    assert result.column("jacov")[1] is None and result.column("params")[1] is not None


async def test_cached_reads_what_is_there_and_never_computes(services):
    """Smoothing a study with proxies needs every class's proxies; `cached` answers from the cache or None."""
    import numpy as np
    from colecache.api.state import make_proxy_measurer
    from colecache.specs import parse_specs

    measurer = make_proxy_measurer(services.settings, services.cache)
    try:
        specs = parse_specs([CELL, ISO_A, ISO_B], "nb201", 100)
        assert await measurer.cached(specs) is None
        assert await measurer.cached(specs) is None  # the first call computed nothing to find now
        measured = await measurer.measure(specs)
        assert np.array_equal(await measurer.cached(specs), measured.values)
    finally:
        measurer.close()
