"""Regression heads that return a mean and an uncertainty for every candidate.

All heads see standardised targets; the Surrogate maps predictions back to objective units.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from colecache_client.spaces import OpGraph

from .config import GRAPH_HEADS, HeadConfig
from .graphs import GraphBatch, vocabulary_of


class Head(Protocol):
    def fit(self, x: np.ndarray, y: np.ndarray) -> Head: ...

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class MLPEnsemble:
    """M independently initialised MLPs, each on its own bootstrap resample, trained side by side.

    All members are one batched network (weights shaped (M, in, out)), so an ensemble costs about
    as much as a single wide MLP. Bootstrap plus distinct seeds keep the members genuinely
    different (an ensemble of identical members would report zero uncertainty).

    Uncertainty: ``std = sqrt(member variance + noise variance)``.

    - *member variance* (epistemic): the spread of the members' predictions; members agree where
      data constrain them and diverge away from it, so this term grows away from the data.
    - *noise variance*: the out-of-bag residual variance, i.e. the mean squared error of the
      ensemble on each training cell, predicted only by the members whose bootstrap resample did
      not contain it (members fitted without bootstrap: the in-sample residual variance), less
      the members' mean spread on those cells, which the first term already counts. It
      stands for the error the members cannot see in their own disagreement (label noise and the
      bias they share), is one constant for all candidates, and keeps std from collapsing to zero
      where the members happen to agree (member spread alone can fall to ~1e-5). It is floored at
      ``NOISE_FLOOR`` (in standardised target units), so std > 0 always.
    """

    NOISE_FLOOR = 1e-3

    def __init__(self, config: HeadConfig, seed: int = 0):
        self.config = config
        self.seed = seed
        self.weights: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.calibration: tuple[torch.Tensor, torch.Tensor] | None = None
        self.noise_var = self.NOISE_FLOOR**2

    def _init(self, n_in: int, generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
        sizes = [n_in] + [self.config.hidden] * self.config.layers + [1]
        return [self._layer(fan_in, fan_out, generator) for fan_in, fan_out in itertools.pairwise(sizes)]

    def _layer(self, fan_in: int, fan_out: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One linear layer per member: weight (M, fan_in, fan_out), bias (M, 1, fan_out), uniform init."""
        members = self.config.members
        bound = 1.0 / math.sqrt(fan_in)
        w = (torch.rand(members, fan_in, fan_out, generator=generator) * 2 - 1) * bound * math.sqrt(3)
        b = (torch.rand(members, 1, fan_out, generator=generator) * 2 - 1) * bound
        return w.requires_grad_(), b.requires_grad_()

    @staticmethod
    def _forward(params, x: torch.Tensor) -> torch.Tensor:
        """x: (M, n, d) -> (M, n)."""
        h = x
        for i, (w, b) in enumerate(params):
            h = torch.baddbmm(b, h, w)
            if i < len(params) - 1:
                h = torch.relu(h)
        return h.squeeze(-1)

    def _ranking_loss(
        self, pred: torch.Tensor, y: torch.Tensor, generator: torch.Generator, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Pairwise logistic loss on sampled pairs: the better cell of a pair should score higher. With
        `weights` (M, n) each member draws its pairs' cells in proportion to its own observation weights."""
        members, n = pred.shape
        pairs = min(4096, n * (n - 1))
        if weights is None:
            i = torch.randint(0, n, (members, pairs), generator=generator)
            j = torch.randint(0, n, (members, pairs), generator=generator)
        else:
            i = torch.multinomial(weights, pairs, replacement=True, generator=generator)
            j = torch.multinomial(weights, pairs, replacement=True, generator=generator)
        sign = torch.sign(torch.gather(y, 1, i) - torch.gather(y, 1, j))
        margin = torch.gather(pred, 1, i) - torch.gather(pred, 1, j)
        keep = sign != 0
        return torch.nn.functional.softplus(-sign * margin)[keep].mean() if keep.any() else pred.sum() * 0

    def fit(self, x: np.ndarray, y: np.ndarray) -> MLPEnsemble:
        generator = torch.Generator().manual_seed(self.seed)
        n = len(y)
        xt = torch.as_tensor(x, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.float32)
        index, weights = self._resample(n, generator)
        xb, yb = xt[index], yt[index]  # (M, n, d), (M, n)
        params = self._init(x.shape[1], generator)
        self._train([p for pair in params for p in pair], lambda: self._forward(params, xb), yb, generator, weights)
        self.weights = [(w.detach(), b.detach()) for w, b in params]
        self._calibrate(lambda: self._forward(self.weights, xb), yb)
        out_of_bag = index if self.config.bootstrap is True else None
        self.noise_var = self._residual_variance(x, np.asarray(y, dtype=np.float64), out_of_bag)
        return self

    def _resample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What each member trains on: observation indices (M, n) and per-observation weights (M, n) or None.

        `bootstrap=True`: n draws with replacement per member; False: every observation, equal weights;
        "bayesian": every observation, weights n * Dirichlet(1, ..., 1) per member (Rubin, Ann. Stat. 1981,
        drawn as normalised Exp(1) variables), whose mean is 1 like a resample's counts."""
        members = self.config.members
        if self.config.bootstrap is True:
            return torch.randint(0, n, (members, n), generator=generator), None
        index = torch.arange(n).expand(members, n)
        if self.config.bootstrap == "bayesian":
            gamma = -torch.log(torch.rand(members, n, generator=generator).clamp_min(1e-12))
            return index, gamma / gamma.sum(dim=1, keepdim=True) * n
        return index, None

    def _train(
        self,
        tensors: list[torch.Tensor],
        outputs,
        yb: torch.Tensor,
        generator: torch.Generator,
        weights: torch.Tensor | None = None,
    ) -> None:
        """Full-batch AdamW for `epochs` on the configured loss of `outputs()` (M, n) against `yb` (M, n),
        each observation counted by `weights` (M, n, mean 1) when given."""
        cfg = self.config
        optimizer = torch.optim.AdamW(tensors, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        for _ in range(cfg.epochs):
            optimizer.zero_grad(set_to_none=True)
            pred = outputs()
            loss = pred.new_zeros(())
            if cfg.loss in ("mse", "mse+ranking"):
                squared = (pred - yb) ** 2
                loss = loss + torch.mean(squared if weights is None else weights * squared)
            if cfg.loss in ("ranking", "mse+ranking"):
                loss = loss + cfg.ranking_weight * self._ranking_loss(pred, yb, generator, weights)
            loss.backward()
            optimizer.step()

    def _calibrate(self, outputs, yb: torch.Tensor) -> None:
        """A pure ranking loss fixes no scale: map each member's scores `outputs()` (M, n) onto its own
        resample `yb` linearly. Other losses need no calibration."""
        self.calibration = None
        if self.config.loss != "ranking":
            return
        with torch.no_grad():
            scores = outputs()
        a = np.array([np.polyfit(s.numpy(), t.numpy(), 1) for s, t in zip(scores, yb)])
        self.calibration = (
            torch.as_tensor(a[:, 0:1], dtype=torch.float32),
            torch.as_tensor(a[:, 1:2], dtype=torch.float32),
        )

    def _residual_variance(self, x: np.ndarray, y: np.ndarray, index: torch.Tensor | None) -> float:
        """Out-of-bag mean squared residual (in-sample without bootstrap) less the members' mean spread on
        the training cells, floored at NOISE_FLOOR**2."""
        members = self.member_predictions(x).astype(np.float64)  # (M, n)
        # The residual already contains the members' own disagreement; count that part once, in the spread.
        spread = float(members.var(axis=0, ddof=1).mean())
        if index is not None:
            in_bag = np.zeros(members.shape, dtype=bool)
            np.put_along_axis(in_bag, index.numpy(), True, axis=1)
            out = ~in_bag
            count = out.sum(axis=0)
            seen = count > 0
            if seen.sum() >= 2:
                oob_mean = (members * out).sum(axis=0)[seen] / count[seen]
                return max(float(np.mean((y[seen] - oob_mean) ** 2)) - spread, self.NOISE_FLOOR**2)
        residual = y - members.mean(axis=0)
        n = len(y)
        return max(float(np.sum(residual**2) / max(n - 1, 1)) - spread, self.NOISE_FLOOR**2)

    def member_predictions(self, x: np.ndarray) -> np.ndarray:
        """(members, n) predictions, for inspection and Thompson sampling."""
        xt = torch.as_tensor(x, dtype=torch.float32)
        with torch.no_grad():
            out = self._forward(self.weights, xt.expand(self.config.members, *xt.shape))
            if self.calibration is not None:
                out = out * self.calibration[0] + self.calibration[1]
        return out.numpy()

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        members = self.member_predictions(x).astype(np.float64)
        return members.mean(axis=0), np.sqrt(members.var(axis=0, ddof=1) + self.noise_var)


@dataclass(frozen=True)
class GraphInputs:
    """What a graph head reads per architecture: its op graph and the side features (n, s), s may be 0."""

    graphs: Sequence[OpGraph]
    side: np.ndarray

    def __post_init__(self) -> None:
        if len(self.graphs) != len(self.side):
            raise ValueError(f"{len(self.graphs)} graphs but {len(self.side)} rows of side features")

    def __len__(self) -> int:
        return len(self.graphs)


class GINEnsemble(MLPEnsemble):
    """M graph isomorphism networks (Xu et al., ICLR 2019) on the op graph, side features joined at the readout.

    Per member: `graph_layers` GIN layers `h <- relu(MLP(h + sum of neighbour h))` of width `graph_hidden`
    over one-hot op labels (messages both ways along the edges; with `graph_messages="directed"` the MLP
    reads `[h, sum of predecessor h, sum of successor h]`, so direction is not lost), the mean node state per
    graph, the side features (the study's COLE / structural / proxy blocks, as the MLP head gets them)
    appended, then an MLP of `layers` x `hidden` to one output. The GIN-on-op-graph form is the predictor of
    BRP-NAS (Dudziak et al., NeurIPS 2020) and NASLib's `gcn`/`gin` baselines, which the issue-10 anchors
    come from. Members, bootstrap, losses and the uncertainty (member spread + out-of-bag noise) are
    MLPEnsemble's: all members train as one batched network.
    """

    def __init__(self, config: HeadConfig, seed: int = 0):
        super().__init__(config, seed)
        self.vocabulary: dict[str, int] = {}

    def _init_graph(self, width: int, side: int, generator: torch.Generator):
        cfg = self.config
        sizes = [width] + [cfg.graph_hidden] * cfg.graph_layers
        reads = 3 if cfg.graph_messages == "directed" else 1  # [own, predecessors, successors] side by side
        gin = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            gin.append(self._layer(fan_in * reads, fan_out, generator))
            gin.append(self._layer(fan_out, fan_out, generator))
        head_sizes = [cfg.graph_hidden + side] + [cfg.hidden] * cfg.layers + [1]
        head = [self._layer(a, b, generator) for a, b in itertools.pairwise(head_sizes)]
        return gin, head

    @staticmethod
    def _propagate(matrix: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Sparse (R, T) times every member's (T, d) state: (M, T, d) -> (M, R, d)."""
        members, nodes, width = h.shape
        flat = h.permute(1, 0, 2).reshape(nodes, members * width)
        return torch.sparse.mm(matrix, flat).reshape(-1, members, width).permute(1, 0, 2)

    def _embed(self, gin, batch: GraphBatch) -> torch.Tensor:
        """(M, G, graph_hidden) mean node state per graph after the GIN layers `gin`."""
        h = batch.onehot().expand(self.config.members, -1, -1)
        directed = self.config.graph_messages == "directed"
        for first, second in zip(gin[::2], gin[1::2]):
            if directed:
                z = torch.cat([h, self._propagate(batch.predecessors, h), self._propagate(batch.successors, h)], 2)
            else:
                z = h + self._propagate(batch.adjacency, h)
            h = torch.relu(torch.baddbmm(second[1], torch.relu(torch.baddbmm(first[1], z, first[0])), second[0]))
        return self._propagate(batch.readout, h)

    def _forward_graphs(self, params, batch: GraphBatch, side: torch.Tensor) -> torch.Tensor:
        """(M, G) outputs for every graph of `batch`."""
        gin, head = params
        pooled = self._embed(gin, batch)
        if side.shape[1]:
            pooled = torch.cat([pooled, side.expand(self.config.members, -1, -1)], dim=2)
        return self._forward(head, pooled)

    def fit(self, x: GraphInputs, y: np.ndarray) -> GINEnsemble:
        cfg = self.config
        generator = torch.Generator().manual_seed(self.seed)
        n = len(y)
        self.vocabulary = vocabulary_of(x.graphs)
        batch = GraphBatch.pack(x.graphs, self.vocabulary)
        side = torch.as_tensor(np.asarray(x.side, dtype=np.float32)).reshape(n, -1)
        yt = torch.as_tensor(y, dtype=torch.float32)
        index, weights = self._resample(n, generator)
        yb = yt[index]
        params = self._init_graph(batch.width, side.shape[1], generator)
        tensors = [t for part in params for pair in part for t in pair]

        def outputs() -> torch.Tensor:
            """Every graph once per step, then each member's resample gathered from its outputs."""
            return torch.gather(self._forward_graphs(params, batch, side), 1, index)

        self._train(tensors, outputs, yb, generator, weights)
        self.weights = tuple([(w.detach(), b.detach()) for w, b in part] for part in params)
        self._calibrate(lambda: torch.gather(self._forward_graphs(self.weights, batch, side), 1, index), yb)
        out_of_bag = index if cfg.bootstrap is True else None
        self.noise_var = self._residual_variance(x, np.asarray(y, dtype=np.float64), out_of_bag)
        return self

    def member_predictions(self, x: GraphInputs) -> np.ndarray:
        """(members, n) predictions; labels not seen at fit time share the UNSEEN slot."""
        batch = GraphBatch.pack(x.graphs, self.vocabulary)
        side = torch.as_tensor(np.asarray(x.side, dtype=np.float32)).reshape(len(x), -1)
        with torch.no_grad():
            out = self._forward_graphs(self.weights, batch, side)
            if self.calibration is not None:
                out = out * self.calibration[0] + self.calibration[1]
        return out.numpy()


class GaussianProcess:
    """Exact GP (Matern 5/2 + noise), hyperparameters by marginal likelihood: a proper posterior std.

    The length scale starts at the median distance between training cells and may move a factor
    of 20 either way: in a few hundred dimensions every pair is far apart in absolute terms, and a
    fixed start of 1.0 let the optimiser settle on "all noise" (a constant prediction).
    """

    def __init__(self, config: HeadConfig, seed: int = 0):
        self.seed = seed
        self.model = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> GaussianProcess:
        from scipy.spatial.distance import pdist
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        gaps = pdist(np.asarray(x[:500], dtype=np.float64))  # pairwise, without an (n, n, d) intermediate
        scale = float(np.median(gaps)) if gaps.size and np.median(gaps) > 0 else 1.0
        kernel = ConstantKernel(1.0, (1e-2, 1e2)) * Matern(scale, (scale / 20, scale * 20), nu=2.5) + WhiteKernel(
            0.1, (1e-6, 1.0)
        )
        self.model = GaussianProcessRegressor(
            kernel=kernel, normalize_y=False, random_state=self.seed, n_restarts_optimizer=2
        )
        self.model.fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.model.predict(x, return_std=True)
        return mean, std


class BayesianRidgeHead:
    """Bayesian linear regression: fast, with a posterior std that grows away from the data."""

    def __init__(self, config: HeadConfig, seed: int = 0):
        from sklearn.linear_model import BayesianRidge

        self.model = BayesianRidge()

    def fit(self, x: np.ndarray, y: np.ndarray) -> BayesianRidgeHead:
        self.model.fit(x, y)
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.model.predict(x, return_std=True)
        return mean, std


def make_head(config: HeadConfig, seed: int = 0) -> Head:
    heads = {
        "mlp_ensemble": MLPEnsemble,
        "gin_ensemble": GINEnsemble,
        "gp": GaussianProcess,
        "bayesian_ridge": BayesianRidgeHead,
    }
    assert set(GRAPH_HEADS) <= set(heads)
    return heads[config.kind](config, seed)
