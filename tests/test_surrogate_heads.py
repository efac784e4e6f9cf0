"""Surrogate heads and feature maps: uncertainty that never collapses and grows away from the data,
genuinely different ensemble members, a working ranking loss, and whitening that whitens."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from colecache.surrogate import FeatureConfig, HeadConfig, Surrogate, SurrogateConfig
from colecache.surrogate.features import FeatureMap
from colecache.surrogate.heads import MLPEnsemble, make_head
from scipy import stats

FAST = HeadConfig(epochs=100, hidden=32)


def _data(n: int = 80, d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = 2.0 * x[:, 0] - x[:, 1] + 0.5 * np.tanh(x[:, 2]) + 0.05 * rng.normal(size=n)
    return x.astype(np.float32), y


@pytest.mark.parametrize("kind", ["mlp_ensemble", "gp", "bayesian_ridge"])
def test_std_is_positive_everywhere_and_larger_far_from_data(kind):
    x, y = _data()
    head = make_head(FAST.model_copy(update={"kind": kind}), seed=0).fit(x, (y - y.mean()) / y.std())
    _, std_train = head.predict(x)
    far = x + 8.0 * np.sign(x)  # far outside the training cloud in every direction
    _, std_far = head.predict(far)
    assert np.all(np.isfinite(std_train)) and np.all(std_train > 0)
    assert std_train.min() > 1e-3
    assert np.median(std_far) > 1.5 * np.median(std_train)


def test_mlp_std_never_collapses_even_when_members_agree():
    """Member spread alone can be ~0 (no bootstrap, same data); the noise term keeps std away from 0."""
    x, y = _data(n=40)
    config = FAST.model_copy(update={"bootstrap": False, "members": 2})
    head = MLPEnsemble(config, seed=0).fit(x, (y - y.mean()) / y.std())
    head.weights = [(w[:1].repeat(2, 1, 1), b[:1].repeat(2, 1, 1)) for w, b in head.weights]  # identical members
    members = head.member_predictions(x)
    assert np.allclose(members[0], members[1])
    _, std = head.predict(x)
    assert std.min() >= MLPEnsemble.NOISE_FLOOR


def test_mlp_noise_term_covers_the_error_the_members_cannot_see():
    x, y = _data(n=60, seed=3)
    z = (y - y.mean()) / y.std()
    head = MLPEnsemble(FAST, seed=1).fit(x, z)
    train_mse = float(np.mean((head.member_predictions(x).mean(axis=0) - z) ** 2))
    _, std = head.predict(x)
    # The reported variance on the training cells covers at least the in-sample error (it is built
    # from the out-of-bag error), and the noise term stays a sane fraction of the target variance.
    assert float(np.mean(std**2)) > train_mse
    assert MLPEnsemble.NOISE_FLOOR**2 <= head.noise_var < 1.0


def test_ensemble_members_genuinely_differ():
    x, y = _data()
    head = MLPEnsemble(FAST, seed=0).fit(x, y)
    members = head.member_predictions(x + 3.0)
    assert members.shape == (FAST.members, len(x))
    spread = members.std(axis=0)
    assert np.median(spread) > 1e-2
    # ... and no two members are the same network.
    for i in range(FAST.members):
        for j in range(i + 1, FAST.members):
            assert not np.allclose(members[i], members[j], atol=1e-3)


def test_seeds_reproduce_and_differ():
    x, y = _data()
    a = MLPEnsemble(FAST, seed=5).fit(x, y).predict(x)[0]
    b = MLPEnsemble(FAST, seed=5).fit(x, y).predict(x)[0]
    c = MLPEnsemble(FAST, seed=6).fit(x, y).predict(x)[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert not np.allclose(a, c, atol=1e-4)


@pytest.mark.parametrize("loss", ["mse", "ranking", "mse+ranking"])
def test_every_loss_recovers_an_obvious_ordering(loss):
    x, y = _data(n=60, seed=1)
    xt, yt = _data(n=200, seed=2)
    config = SurrogateConfig(
        features=FeatureConfig(reduce="standardize", reference="observed", structural=()),
        head=FAST.model_copy(update={"loss": loss}),
    )
    mean, std = Surrogate(config).fit(x, None, y).predict(xt, None)
    assert stats.kendalltau(mean, yt).statistic > 0.6
    assert np.all(std > 0)


def test_ranking_loss_is_scale_free_but_calibrated():
    """A pure ranking loss ranks the same whatever the target's units; calibration maps scores back onto them."""
    x, y = _data(n=60, seed=4)
    config = FAST.model_copy(update={"loss": "ranking"})
    a = MLPEnsemble(config, seed=0).fit(x, y)
    b = MLPEnsemble(config, seed=0).fit(x, 100.0 * y + 7.0)
    assert stats.kendalltau(a.predict(x)[0], b.predict(x)[0]).statistic > 0.99
    mean, _ = b.predict(x)
    assert abs(mean.mean() - (100.0 * y + 7.0).mean()) < 0.2 * 100.0 * y.std()


def test_ranking_loss_decreases_pairwise_errors():
    x, y = _data(n=60, seed=7)
    untrained = MLPEnsemble(FAST.model_copy(update={"loss": "ranking", "epochs": 1}), seed=0).fit(x, y)
    trained = MLPEnsemble(FAST.model_copy(update={"loss": "ranking"}), seed=0).fit(x, y)
    assert stats.kendalltau(trained.predict(x)[0], y).statistic > stats.kendalltau(untrained.predict(x)[0], y).statistic
    assert stats.kendalltau(trained.predict(x)[0], y).statistic > 0.8


def test_surrogate_returns_objective_units():
    x, y = _data()
    y = 70.0 + 5.0 * y
    config = SurrogateConfig(features=FeatureConfig(structural=()), head=FAST)
    mean, std = Surrogate(config).fit(x, None, y).predict(x, None)
    assert abs(mean.mean() - y.mean()) < 1.0 and np.corrcoef(mean, y)[0, 1] > 0.9
    assert 0 < std.mean() < y.std()


@pytest.mark.parametrize("reduce", ["whiten", "pca"])
def test_whitening_gives_identity_covariance_on_the_reference(reduce):
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(20, 20)) * np.linspace(3, 0.1, 20)
    reference = rng.normal(size=(3000, 20)) @ mixing + 5.0
    fm = FeatureMap(FeatureConfig(reduce=reduce, components=8, structural=())).fit(reference, None)
    z = fm.transform(reference, None).astype(np.float64)
    assert z.shape == (3000, 8)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-4)
    cov = np.cov(z, rowvar=False)
    if reduce == "whiten":
        np.testing.assert_allclose(cov, np.eye(8), atol=1e-3)
    else:  # decorrelated, one shared scale: unit variance on average
        np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-3)
        assert abs(np.trace(cov) / 8 - 1) < 1e-3


def test_a_short_reference_keeps_at_most_a_quarter_of_its_rows_as_components():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(40, 50))
    fm = FeatureMap(FeatureConfig(reduce="whiten", components=64, structural=())).fit(reference, None)
    z = fm.transform(reference, None)
    assert z.shape == (40, 10)
    np.testing.assert_allclose(np.cov(z.astype(np.float64), rowvar=False), np.eye(10), atol=1e-3)


def test_reference_fits_the_reduction_not_the_observed_cells():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(500, 12)) * np.arange(1, 13)
    x, y = reference[:30], reference[:30, -1]
    config = SurrogateConfig(features=FeatureConfig(reduce="whiten", components=4, structural=()), head=FAST)
    model = Surrogate(config).fit(x, None, y, reference_cole=reference)
    z = model.features.transform(reference, None).astype(np.float64)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(4), atol=1e-3)


def test_structural_block_is_scaled_and_appended():
    rng = np.random.default_rng(3)
    cole = rng.normal(size=(50, 10))
    struct = rng.integers(0, 3, size=(50, 5)).astype(float)
    config = FeatureConfig(reduce="standardize", structural=("path",), structural_weight=2.0)
    fm = FeatureMap(config).fit(cole, struct)
    z = fm.transform(cole, struct).astype(np.float64)
    assert z.shape == (50, 15)
    assert abs(np.sqrt(z[:, 10:].var(axis=0).mean()) - 2.0) < 1e-3
    only = FeatureMap(FeatureConfig(cole=False, structural=("onehot",))).fit(None, struct)
    assert only.transform(None, struct).shape == (50, 5)


def test_gp_is_invariant_to_the_scale_of_its_inputs():
    """Distances between cells grow with the number of features; the GP's length scale must follow
    them (a fixed start and fixed bounds gave one constant prediction on far-apart inputs)."""
    x, y = _data(n=40, seed=8)
    xt, yt = _data(n=200, seed=9)
    z = (y - y.mean()) / y.std()
    near, _ = make_head(HeadConfig(kind="gp"), seed=0).fit(x, z).predict(xt)
    far, std = make_head(HeadConfig(kind="gp"), seed=0).fit(1e4 * x, z).predict(1e4 * xt)
    assert far.std() > 0.1 and np.all(std > 0)
    assert stats.kendalltau(near, far).statistic > 0.95
    assert stats.kendalltau(far, yt).statistic > 0.6


@pytest.mark.parametrize("kind", ["mlp_ensemble", "gin_ensemble"])
def test_bayesian_bootstrap_weights_every_observation_differently_per_member(kind):
    """`bootstrap: "bayesian"`: every member trains on every observation (no out-of-bag cells), under its own
    Dirichlet weights of mean 1, seeded; members differ from each other and from the equal-weight ensemble."""
    from colecache.surrogate.heads import GINEnsemble, GraphInputs
    from colecache_client.spaces import get_space

    config = FAST.model_copy(update={"kind": kind, "bootstrap": "bayesian"})
    equal = config.model_copy(update={"bootstrap": False})
    if kind == "gin_ensemble":
        space = get_space("nb201")
        rng = random.Random(0)
        cells = space.dedupe([space.sample(rng) for _ in range(120)])[:40]
        x = GraphInputs([space.op_graph(c) for c in cells], np.zeros((40, 0), dtype=np.float32))
        y = np.array([c.ops.count("nor_conv_3x3") - 0.5 * c.ops.count("none") for c in cells], dtype=float)
        make = GINEnsemble
    else:
        x, y = _data(n=40)
        make = MLPEnsemble
    head = make(config, seed=3)
    index, weights = head._resample(40, torch.Generator().manual_seed(0))
    assert index.shape == weights.shape == (config.members, 40)
    assert (index == torch.arange(40)).all() and (weights > 0).all()
    assert torch.allclose(weights.mean(dim=1), torch.ones(config.members))
    assert not torch.allclose(weights[0], weights[1])
    head.fit(x, y)
    again = make(config, seed=3).fit(x, y)
    flat = make(equal, seed=3).fit(x, y)
    np.testing.assert_array_equal(head.member_predictions(x), again.member_predictions(x))
    assert not np.allclose(head.member_predictions(x), flat.member_predictions(x), atol=1e-4)
    mean, std = head.predict(x)
    assert np.isfinite(mean).all() and (std > 0).all()
    assert stats.kendalltau(mean, y).statistic > 0.5


def test_bootstrap_accepts_true_false_and_bayesian_only():
    assert HeadConfig(bootstrap="bayesian").bootstrap == "bayesian"
    assert HeadConfig(bootstrap=False).bootstrap is False and HeadConfig().bootstrap is True
    with pytest.raises(ValueError, match="bootstrap"):
        HeadConfig(bootstrap="sometimes")
