"""Issue 11, item 1: an observation is one measurement, identified by (study, exact spec text, metadata).

Isomorphic cells (one class under canonical rendering) and repeated runs of one cell (distinct
metadata) are separate observations, each with its own value; the exact same observation posted
again is a no-op; the same spec text and metadata with a different value follows `on_conflict`,
also inside one post, and the messages say what counts as the same observation.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict

import httpx
import pytest
from colecache.db.engine import alembic_config, make_engine, migrate
from colecache.studies.repository import ObservationConflict, measurement_key
from colecache.studies.service import NotEnoughObservations, ObservationIn
from colecache.surrogate import FeatureConfig, HeadConfig, SurrogateConfig
from colecache_client.spaces import get_space
from colecache_client.spaces.nb201 import OPS
from sqlalchemy import text

SPACE = get_space("nb201")
FAST = SurrogateConfig(head=HeadConfig(epochs=60, hidden=32)).model_dump(mode="json")
FAST_CODE = SurrogateConfig(features=FeatureConfig(structural=()), head=HeadConfig(epochs=60, hidden=32)).model_dump(
    mode="json"
)


def _isomorphic_groups(min_size: int = 2) -> list[list]:
    """NB201 cells grouped by isomorphism class, classes with at least `min_size` distinct cells."""
    groups = defaultdict(list)
    for cell in SPACE.all_cells():
        groups[SPACE.canonical(cell)].append(cell)
    return [cells for cells in groups.values() if len(cells) >= min_size]


GROUPS = _isomorphic_groups()
A, A_ISO = GROUPS[3][:2]  # two different cells of one class
assert A.to_string() != A_ISO.to_string() and SPACE.canonical(A) == SPACE.canonical(A_ISO)


def _study(services, canonical: bool = True, surrogate=FAST):
    return services.studies.repo.create(
        name="repeats",
        space="nb201",
        objective="accuracy",
        direction="maximize",
        render={"primitives": "exclude_helper", "context": "none", "dataset": "cifar10", "canonical": canonical},
        embedder={"pooling": "mean"},
        surrogate=surrogate,
        owner=None,
    )


async def _post(services, study, items, on_conflict="reject"):
    return await services.studies.observe(study, [ObservationIn(*item) for item in items], on_conflict)


def _stored(services, study) -> dict[tuple[str, str], float]:
    return {(o.arch, json.dumps(o.meta, sort_keys=True)): o.value for o in services.studies.repo.observations(study.id)}


@pytest.mark.parametrize("canonical", [True, False])
@pytest.mark.parametrize("services", [None, pytest.param("postgres_url", marks=pytest.mark.integration)], indirect=True)
async def test_isomorphic_cells_and_repeated_runs_are_kept_and_exact_reposts_are_no_ops(services, canonical):
    study = _study(services, canonical)
    a, iso = A.to_string(), A_ISO.to_string()
    history = [(a, 70.0), (iso, 71.0), (a, 69.5, {"seed": 1}), (a, 70.5, {"seed": 2, "run": "x"})]
    first = await _post(services, study, history)
    assert (first.inserted, first.n_observations, first.version) == (4, 4, 1)
    # The same observations again, spelled differently (op indices, metadata key order, {} for none): no-op.
    ops = [OPS.index(op) for op in A.ops]
    again = await _post(
        services,
        study,
        [(ops, 70.0, {}), (iso, 71.0), (a, 69.5, {"seed": 1}), (a, 70.5, {"run": "x", "seed": 2})],
    )
    assert (again.inserted, again.unchanged, again.version, again.n_observations) == (0, 4, 1, 4)

    with pytest.raises(ObservationConflict) as info:  # same text, same (no) metadata, different value
        await _post(services, study, [(GROUPS[5][0].to_string(), 50.0), (a, 72.0)])
    assert [(c.index, c.earlier, c.stored, c.posted) for c in info.value.conflicts] == [(1, None, 70.0, 72.0)]
    assert "isomorphic" in str(info.value) and "same spec text and metadata" in info.value.conflicts[0].reason
    assert services.studies.repo.count(study.id) == 4  # the new cell of the rejected post was not stored

    kept = await _post(services, study, [(iso, 80.0)], on_conflict="keep")
    assert (kept.kept, kept.version) == (1, 1)
    replaced = await _post(services, study, [(iso, 80.0)], on_conflict="replace")
    assert (replaced.replaced, replaced.version) == (1, 2)
    stored = _stored(services, study)
    assert stored[(iso, "null")] == 80.0 and stored[(a, "null")] == 70.0 and len(stored) == 4


@pytest.mark.parametrize("policy", ["reject", "replace", "keep"])
async def test_on_conflict_applies_inside_one_post_as_if_posted_in_order(services, policy):
    study = _study(services)
    b, c = GROUPS[7][0].to_string(), GROUPS[8][0].to_string()
    items = [(b, 1.0), (c, 5.0, {"seed": 1}), (b, 2.0), (c, 6.0, {"seed": 2}), (b, 1.0)]
    if policy == "reject":
        with pytest.raises(ObservationConflict) as info:
            await _post(services, study, items, policy)
        assert [(x.index, x.earlier) for x in info.value.conflicts] == [(2, 0)]
        assert "item 0 of this post" in info.value.conflicts[0].reason
        assert services.studies.repo.count(study.id) == 0
        return
    written = await _post(services, study, items, policy)
    # replace: 1 -> 2, then the last item (1.0) replaces 2.0 again; keep: 1.0 stays, the last item is a no-op
    expected = {"replace": (3, 0, 2, 0, 1.0), "keep": (3, 1, 0, 1, 1.0)}[policy]
    assert (written.inserted, written.unchanged, written.replaced, written.kept) == expected[:4]
    stored = _stored(services, study)
    assert stored[(b, "null")] == expected[4] and len(stored) == 3


async def test_code_specs_are_identified_by_their_text_and_metadata(services):
    study = _study(services, surrogate=FAST_CODE)
    code = {"code": "class Net(nn.Module):\n    def forward(self, x):\n        return x\n"}
    other = {"code": "class Net(nn.Module):\n    def forward(self, x):\n        return x * 2\n"}
    first = await _post(services, study, [(code, 1.0), (code, 1.5, {"seed": 2}), (other, 3.0)])
    assert (first.inserted, first.n_observations) == (3, 3)
    assert (await _post(services, study, [(code, 1.0)])).unchanged == 1
    with pytest.raises(ObservationConflict):
        await _post(services, study, [(code, 2.0)])


async def test_predict_counts_distinct_architectures_and_fits_on_repeated_measurements(services):
    study = _study(services)
    await _post(services, study, [(A.to_string(), 70.0), (A_ISO.to_string(), 72.0)])
    with pytest.raises(NotEnoughObservations) as info:  # two cells, but one class: nothing to fit a ranking on
        await services.studies.predict(services.studies.repo.get(study.id, None), [GROUPS[9][0].to_string()])
    assert "1 distinct" in str(info.value) and "isomorphic" in str(info.value)
    plain = _study(services, canonical=False)  # without canonical rendering they are two distinct inputs
    await _post(services, plain, [(A.to_string(), 70.0), (A_ISO.to_string(), 72.0)])
    predicted = await services.studies.predict(services.studies.repo.get(plain.id, None), [GROUPS[9][0].to_string()])
    assert predicted.fitted.n_observations == 2

    rng = random.Random(3)
    repeated = [(c.to_string(), 50.0 + rng.random() * 20) for group in GROUPS[10:40] for c in group[:2]]
    await _post(services, study, repeated)
    result = await services.studies.predict(
        services.studies.repo.get(study.id, None), [g[0].to_string() for g in GROUPS[50:55]]
    )
    assert result.fitted.n_observations == 62 and all(result.std > 0)


# --- the migration keeps existing rows and keys them exactly as the code does ---------------------
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def migrated_url(request):
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


def test_migration_0004_keys_existing_rows_like_the_code_and_then_keeps_isomorphic_cells(migrated_url):
    from alembic import command

    command.downgrade(alembic_config(migrated_url), "0003")
    engine = make_engine(migrated_url)
    code_key = "code:" + "ab" * 32
    rows = [
        (A.to_string(), SPACE.canonical(A), json.dumps({"seed": 3, "a": [1, 2]}), 70.0),
        (GROUPS[1][0].to_string(), SPACE.canonical(GROUPS[1][0]), None, 60.0),
        (None, code_key, json.dumps({}), 1.0),
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO studies (id, name, space, objective, direction, render, embedder, surrogate, version) "
                "VALUES ('s1', 'old', 'nb201', 'acc', 'maximize', '{}', '{}', '{}', 1)"
            )
        )
        for arch, key, meta, value in rows:
            conn.execute(
                text(
                    "INSERT INTO observations (study_id, spec_key, spec, arch, value, meta) "
                    "VALUES ('s1', :key, '\"x\"', :arch, :value, :meta)"
                ),
                {"key": key, "arch": arch, "value": value, "meta": meta},
            )
    engine.dispose()
    migrate(migrated_url)
    engine = make_engine(migrated_url)
    with engine.begin() as conn:
        found = conn.execute(text("SELECT arch, spec_key, meta, measurement_key FROM observations ORDER BY id")).all()
        assert [r.measurement_key for r in found] == [
            measurement_key(arch or key, json.loads(meta) if meta else None) for arch, key, meta, _ in rows
        ]
        # An isomorphic cell of a stored class is now a row of its own.
        conn.execute(
            text(
                "INSERT INTO observations (study_id, spec_key, measurement_key, spec, arch, value) "
                "VALUES ('s1', :key, :mkey, '\"y\"', :arch, 71.0)"
            ),
            {
                "key": SPACE.canonical(A_ISO),
                "mkey": measurement_key(A_ISO.to_string(), None),
                "arch": A_ISO.to_string(),
            },
        )
        assert conn.execute(text("SELECT count(*) FROM observations")).scalar_one() == 4
    engine.dispose()
    command.downgrade(alembic_config(migrated_url), "0003")  # one row per class again: the first one stays
    engine = make_engine(migrated_url)
    with engine.connect() as conn:
        left = conn.execute(text("SELECT arch FROM observations ORDER BY id")).scalars().all()
    engine.dispose()
    assert left == [A.to_string(), GROUPS[1][0].to_string(), None]
    migrate(migrated_url)


# --- over HTTP: a real evaluation history in one post, in every space --------------------------------
def _nb201_history(table, n_pairs: int = 15, n_single: int = 30, seed: int = 11) -> list[tuple[str, float]]:
    """60 rows of nats_bench.csv: isomorphic pairs with different measured accuracies, and single cells."""
    rng = random.Random(seed)
    by_class = defaultdict(list)
    for i, unique in enumerate(table.unique):
        by_class[unique].append(i)
    acc = table.accuracy["cifar100"]
    multi = [rows for rows in by_class.values() if len(rows) >= 2 and len({acc[i] for i in rows}) >= 2]
    chosen = []
    for rows in rng.sample(multi, n_pairs):
        first = rng.choice(rows)
        second = rng.choice([i for i in rows if acc[i] != acc[first]])
        chosen += [first, second]
    singles = [rows for rows in by_class.values() if len(rows) == 1]
    chosen += [rows[0] for rows in rng.sample(singles, n_single)]
    rng.shuffle(chosen)
    return [(table.arch[i], float(acc[i])) for i in chosen]


@pytest.mark.integration
def test_a_real_nb201_history_with_isomorphic_cells_is_accepted_in_one_post(default_server, nb201_table):
    history = _nb201_history(nb201_table)
    assert len(history) == 60 and len({SPACE.canonical(SPACE.parse(a)) for a, _ in history}) == 45
    body = {"observations": [{"spec": a, "value": v} for a, v in history]}
    with default_server.client() as client:
        sid = client.post("/studies", json={"name": "nb201-history", "objective": "cifar100"}).json()["id"]
        written = client.post(f"/studies/{sid}/observations", json=body)
        assert written.status_code == 200, written.text
        assert written.json() == {
            "inserted": 60,
            "unchanged": 0,
            "replaced": 0,
            "kept": 0,
            "version": 1,
            "n_observations": 60,
        }
        listed = client.get(f"/studies/{sid}/observations").json()["observations"]
        assert sorted((o["arch"], o["value"]) for o in listed) == sorted(history)
        rng = random.Random(5)
        held = [SPACE.sample(rng).to_string() for _ in range(5)]
        predicted = client.post(f"/studies/{sid}/predict", json={"specs": held})
        assert predicted.status_code == 200, predicted.text
        assert predicted.json()["n_observations"] == 60

        again = client.post(f"/studies/{sid}/observations", json=body).json()  # the same post again: nothing new
        assert (again["inserted"], again["unchanged"], again["version"]) == (0, 60, 1)

        arch, value = history[0]
        partner = next(
            a for a, _ in history[1:] if SPACE.canonical(SPACE.parse(a)) == SPACE.canonical(SPACE.parse(arch))
        )
        clash = {"observations": [{"spec": arch, "value": value + 1.0}]}
        refused = client.post(f"/studies/{sid}/observations", json=clash)
        assert refused.status_code == 409 and "isomorphic" in refused.json()["detail"]
        assert refused.json()["errors"][0]["index"] == 0 and "same spec text and metadata" in refused.text
        seed = client.post(
            f"/studies/{sid}/observations",
            json={"observations": [{"spec": arch, "value": value + 1.0, "metadata": {"seed": 2}}]},
        ).json()
        assert seed["inserted"] == 1 and seed["n_observations"] == 61  # a second run of the cell is kept
        assert client.post(f"/studies/{sid}/observations", json={**clash, "on_conflict": "keep"}).json()["kept"] == 1
        replaced = client.post(f"/studies/{sid}/observations", json={**clash, "on_conflict": "replace"}).json()
        assert replaced["replaced"] == 1 and replaced["n_observations"] == 61
        values = {
            (o["arch"], json.dumps(o["metadata"])): o["value"]
            for o in client.get(f"/studies/{sid}/observations").json()["observations"]
        }
        assert values[(arch, "null")] == value + 1.0 and values[(partner, "null")] == dict(history)[partner]


NB101 = {
    "matrix": [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]],
    "ops": ["input", "conv3x3-bn-relu", "maxpool3x3", "output"],
}
NB101_SWAPPED = {**NB101, "ops": ["input", "maxpool3x3", "conv3x3-bn-relu", "output"]}
DARTS = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
    "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)
DARTS_SWAPPED = DARTS.replace(
    "normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1),", "normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0),"
)
EINSPACE = "sequential{computation{linear(32)}, branching(2){clone(2), computation{relu}, computation{norm}, add(2)}}"
EINSPACE_SWAPPED = EINSPACE.replace("computation{relu}, computation{norm}", "computation{norm}, computation{relu}")
GRAPH = {
    "nodes": [
        {"id": "in", "op": "input"},
        {"id": "a", "op": "Conv2d", "params": {"kernel_size": 3, "padding": 1}},
        {"id": "b", "op": "ReLU"},
        {"id": "out", "op": "output"},
    ],
    "edges": [["in", "a"], ["a", "b"], ["b", "out"]],
}
GRAPH_RELABELLED = {
    "nodes": [
        {"id": "out", "op": "output"},
        {"id": "y", "op": "ReLU"},
        {"id": "x", "op": "Conv2d", "params": {"padding": 1, "kernel_size": 3}},
        {"id": "in", "op": "input"},
    ],
    "edges": [["y", "out"], ["x", "y"], ["in", "x"]],
}
VARIANTS = {
    "nb201": (A.to_string(), A_ISO.to_string()),
    "nb101": (NB101, NB101_SWAPPED),
    "darts": (DARTS, DARTS_SWAPPED),
    "einspace": (EINSPACE, EINSPACE_SWAPPED),
    "graph": (GRAPH, GRAPH_RELABELLED),
}


@pytest.mark.integration
@pytest.mark.parametrize("space_name", sorted(VARIANTS))
def test_isomorphic_variants_in_every_space_are_two_observations(default_server, space_name):
    space = get_space(space_name)
    first, second = VARIANTS[space_name]
    x, y = space.parse(first), space.parse(second)
    assert space.to_string(x) != space.to_string(y) and space.canonical(x) == space.canonical(y)
    body = {"observations": [{"spec": first, "value": 1.0}, {"spec": second, "value": 2.0}]}
    with httpx.Client(base_url=default_server.url, timeout=120) as client:
        sid = client.post("/studies", json={"name": f"iso-{space_name}", "space": space_name}).json()["id"]
        written = client.post(f"/studies/{sid}/observations", json=body)
        assert written.status_code == 200, written.text
        assert (written.json()["inserted"], written.json()["n_observations"]) == (2, 2)
        assert client.post(f"/studies/{sid}/observations", json=body).json()["unchanged"] == 2
        listed = client.get(f"/studies/{sid}/observations").json()["observations"]
        assert sorted(o["value"] for o in listed) == [1.0, 2.0] and len({o["arch"] for o in listed}) == 2
