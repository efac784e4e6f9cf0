"""`colecache` command line: serve, migrate, render, embed, precompute, proxies, study."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from .render.options import Context, Dataset, Primitives

app = typer.Typer(help="colecache: COLE code embeddings and surrogates for NAS.", no_args_is_help=True)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default COLECACHE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default COLECACHE_PORT).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes; each loads its own model.")] = 1,
) -> None:
    """Run the HTTP server (uvicorn) with settings from COLECACHE_* variables."""
    import uvicorn

    from .logging import configure_logging
    from .settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level)
    # Say which store this server uses: a surprising one (another data dir) is then visible at once.
    logging.getLogger("colecache.cli").info("durable tier: %s", _store_name(settings.resolved_database_url))
    uvicorn.run(
        "colecache.api.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level=settings.log_level,
        log_config=None,  # keep our JSON logging
        access_log=False,  # our access log carries request ids (colecache.access)
        timeout_graceful_shutdown=settings.timeout_graceful_shutdown_s,
    )


def _store_name(url: str) -> str:
    """A database URL without its credentials (`user:password@` is dropped)."""
    scheme, sep, rest = url.partition("://")
    return scheme + sep + rest.split("@")[-1] if sep else url


@app.command()
def healthcheck(
    url: Annotated[str | None, typer.Option(help="Default: this host's COLECACHE_PORT.")] = None,
    ready: Annotated[bool, typer.Option(help="Check /ready (model loaded, stores up) instead of /health.")] = False,
) -> None:
    """Exit 0 if the local server answers (for container HEALTHCHECKs; needs no curl in the image)."""
    import httpx

    from .settings import get_settings

    base = url or f"http://127.0.0.1:{get_settings().port}"
    try:
        response = httpx.get(base.rstrip("/") + ("/ready" if ready else "/health"), timeout=4)
    except httpx.HTTPError as exc:
        typer.echo(f"unhealthy: {exc}", err=True)
        raise typer.Exit(1) from None
    if response.status_code != 200:
        typer.echo(f"unhealthy: {response.status_code} {response.text}", err=True)
        raise typer.Exit(1)


@app.command()
def migrate() -> None:
    """Apply database migrations (alembic upgrade head) to COLECACHE_DATABASE_URL."""
    from .db.engine import migrate as run
    from .settings import get_settings

    url = get_settings().resolved_database_url
    run(url)
    typer.echo(f"migrated {_store_name(url)}")


def _options(primitives: str, context: str, dataset: str, canonical: bool):
    from .render import RenderOptions

    return RenderOptions(primitives=primitives, context=context, dataset=dataset, canonical=canonical)


def _spec_argument(text: str):
    """A spec from the command line: the JSON value when the text is a JSON list, object or string
    (`[3,3,4,1,3,1]`, a graph), else the text itself (cell strings, genotypes)."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (list, dict, str)) else text


def _one_line(exc: Exception) -> str:
    """An error as one line: pydantic's multi-line report becomes `field: message; ...`."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
    return " ".join(str(exc).split())


def _refuse(what: str, exc: Exception):
    """Bad input (a spec or an option) ends with one line on stderr and exit code 2, never a traceback."""
    typer.echo(f"{what}: {_one_line(exc)}", err=True)
    raise typer.Exit(2) from None


@app.command()
def render(
    spec: Annotated[
        str,
        typer.Argument(
            help="An architecture in its space's spelling, e.g. '|nor_conv_3x3~0|+|...|' or '[3,3,4,1,3,1]' "
            "(JSON lists and objects are read as JSON)."
        ),
    ],
    space: Annotated[
        str, typer.Option(help="Search space (nb201, nb101, darts, einspace, graph, or a plugin).")
    ] = "nb201",
    primitives: Annotated[Primitives, typer.Option(help="inline | helper | exclude_helper")] = "exclude_helper",
    context: Annotated[Context, typer.Option(help="none | backbone | comment")] = "none",
    dataset: Annotated[Dataset, typer.Option(help="cifar10 | cifar100 | imagenet16-120")] = "cifar10",
    canonical: Annotated[bool, typer.Option(help="Render the isomorphism-class representative.")] = False,
) -> None:
    """Print the PyTorch code a spec renders to."""
    from colecache_client.spaces import SpecError
    from pydantic import ValidationError

    from .render import check_options
    from .render import render as render_spec
    from .specs import parse_spec

    try:
        options = _options(primitives, context, dataset, canonical)
        parsed = parse_spec(_spec_argument(spec), space, max_code_chars=10**9)
        check_options(space, options)
        code = render_spec(parsed, options).code
    except SpecError as exc:
        _refuse("invalid spec", exc)
    except ValidationError as exc:
        _refuse("invalid option", exc)
    sys.stdout.write(code)


@app.command()
def embed(
    specs: Annotated[
        list[str],
        typer.Argument(help="Architectures in their space's spelling (JSON lists and objects are read as JSON)."),
    ],
    space: Annotated[str, typer.Option(help="Search space of the specs.")] = "nb201",
    primitives: Annotated[Primitives, typer.Option()] = "exclude_helper",
    context: Annotated[Context, typer.Option()] = "none",
    dataset: Annotated[Dataset, typer.Option()] = "cifar10",
    pooling: Annotated[str | None, typer.Option(help="mean | last_token | cls | mean_all_layers")] = None,
    url: Annotated[str | None, typer.Option(help="Use a running server instead of loading the model here.")] = None,
) -> None:
    """Embed specs and print one JSON object per spec (vector, source, tokens)."""
    import httpx

    body = {
        "specs": [_spec_argument(s) for s in specs],
        "space": space,
        "render": {"primitives": primitives, "context": context, "dataset": dataset},
        "embedder": {"pooling": pooling} if pooling else {},
    }
    if url:
        response = httpx.post(url.rstrip("/") + "/embed", json=body, timeout=600)
        if response.status_code != 200:
            try:
                detail = response.json()["detail"]
            except (ValueError, KeyError, TypeError):
                detail = response.text
            typer.echo(f"error {response.status_code}: {' '.join(str(detail).split())}", err=True)
            raise typer.Exit(2 if response.status_code in (400, 404, 413, 422) else 1)
        result = response.json()
    else:
        result = _run_with_model(_embed_here(body))
    for item in result["items"]:
        typer.echo(json.dumps({k: item[k] for k in ("index", "arch", "source", "n_tokens", "truncated", "embedding")}))


# What `precompute` fills unless told otherwise: the options a default study reads (STUDY_RENDER and
# STUDY_EMBEDDER in studies/defaults.py; a test keeps these in step). Spelled out here because
# importing that module loads torch, and `--help` should not take seconds.
PRECOMPUTE_DEFAULTS = {
    "primitives": "exclude_helper",
    "context": "none",
    "dataset": "cifar10",
    "canonical": True,
    "pooling": "mean",
    "layer": 5,
}


@app.command()
def precompute(
    space: Annotated[str, typer.Option(help="Search space to enumerate.")] = "nb201",
    archs_file: Annotated[
        Path | None,
        typer.Option(
            "--archs",
            help="File of architectures, one per line (JSON lines for JSON spellings), for "
            "spaces too large to enumerate: e.g. a search's candidate pool.",
        ),
    ] = None,
    primitives: Annotated[
        Primitives | None, typer.Option(help="Default: exclude_helper (the default study's).", show_default=False)
    ] = None,
    context: Annotated[
        Context | None, typer.Option(help="Default: none (the default study's).", show_default=False)
    ] = None,
    dataset: Annotated[
        Dataset | None, typer.Option(help="Default: cifar10 (the default study's).", show_default=False)
    ] = None,
    pooling: Annotated[
        list[str] | None,
        typer.Option(
            help="Read-out(s) to cache; repeat to fill several from one forward. Default: mean (the default study's).",
            show_default=False,
        ),
    ] = None,
    layer: Annotated[
        list[int] | None,
        typer.Option(
            help="Hidden-state index; repeat to cache several layers at once. Default: 5 (the default study's; "
            "-1 is the last layer).",
            show_default=False,
        ),
    ] = None,
    max_length: Annotated[int | None, typer.Option(help="Token limit (default COLECACHE_MAX_LENGTH).")] = None,
    normalize: Annotated[bool | None, typer.Option(help="L2-normalise (default COLECACHE_NORMALIZE).")] = None,
    canonical: Annotated[
        bool | None,
        typer.Option(
            "--canonical/--no-canonical",
            help="Render isomorphism-class representatives. Default: --canonical (the default study's).",
            show_default=False,
        ),
    ] = None,
    url: Annotated[str | None, typer.Option(help="Fill a running server's cache over HTTP instead.")] = None,
    chunk: Annotated[int, typer.Option(help="Specs per request with --url.")] = 256,
) -> None:
    """Embed every cell of a search space into the cache (resumable: cached cells are skipped).

    Every option defaults to what a default study (`POST /studies` without render/embedder) reads:
    canonical exclude_helper/none code, mean pooling of hidden state 5. So `colecache precompute
    --space nb201` gives default studies their whole-space reference; a study with other options
    needs the same options here.
    """
    from colecache_client.spaces import SpecError, get_space
    from tqdm import tqdm

    given = {"primitives": primitives, "context": context, "dataset": dataset, "canonical": canonical}
    render_options = {k: PRECOMPUTE_DEFAULTS[k] if v is None else v for k, v in given.items()}
    poolings = pooling or [PRECOMPUTE_DEFAULTS["pooling"]]
    layers = layer or [PRECOMPUTE_DEFAULTS["layer"]]
    try:
        archs = _read_archs(space, archs_file) if archs_file else list(get_space(space).all_cells())
    except (SpecError, NotImplementedError, OSError) as exc:
        typer.echo(
            f"cannot precompute {space}: {exc} (give --archs FILE for spaces that cannot be enumerated)", err=True
        )
        raise typer.Exit(2) from None
    typer.echo(
        f"precompute {space}: render {render_options}, pooling {', '.join(poolings)}, "
        f"layer {', '.join(map(str, layers))}",
        err=True,
    )
    if url:
        for one_layer in layers:
            _precompute_over_http(url, space, archs, render_options, poolings, one_layer, max_length, normalize, chunk)
        return
    from .embedding.options import EmbedOptions
    from .local import local_services
    from .precompute import precompute_space
    from .render import RenderOptions
    from .settings import get_settings

    typer.echo(f"cache: {_store_name(get_settings().resolved_database_url)}", err=True)
    readouts = [
        EmbedOptions(pooling=p, layer=one_layer, max_length=max_length, normalize=normalize)
        for p in poolings
        for one_layer in layers
    ]
    bar = tqdm(unit="cell", desc=f"precompute {space}", dynamic_ncols=True)

    def total(n: int) -> None:
        bar.reset(total=n)

    async def run():
        async with local_services() as services:
            return await precompute_space(
                services,
                space,
                RenderOptions(**render_options),
                readouts,
                on_progress=bar.update,
                on_total=total,
                archs=archs,
            )

    report = _run_with_model(run())
    bar.close()
    typer.echo(
        f"{report.cells} cells: {report.already_cached} already cached, {report.computed} computed "
        f"in {report.seconds:.1f}s ({report.cells_per_second:.1f} cells/s); "
        f"fingerprints {', '.join(report.fingerprints)}"
    )


@app.command()
def proxies(
    space: Annotated[str, typer.Option(help="Search space to enumerate.")] = "nb201",
    archs_file: Annotated[
        Path | None,
        typer.Option("--archs", help="File of architectures, one per line, for spaces that cannot be enumerated."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes, one torch thread each (default COLECACHE_PROXY_WORKERS).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N architectures (smoke runs).")] = None,
    chunk: Annotated[int, typer.Option(help="Architectures per step (committed as they finish).")] = 256,
) -> None:
    """Score every architecture of a space with zero-cost proxies into the cache (resumable).

    Builds each network from its rendered code (the space's `proxy_network`, canonical classes
    once) and stores params, flops, synflow, naswot, jacov, snip and grad_norm; studies read
    them with `features.proxies`. Cached networks are skipped, so a stopped run continues.
    """
    from colecache_client.spaces import SpecError, get_space
    from tqdm import tqdm

    from .local import local_stores
    from .proxies.measure import plan_for
    from .settings import get_settings
    from .specs import ArchSpec

    settings = get_settings()
    if workers is not None:
        settings = settings.model_copy(update={"proxy_workers": workers})
    try:
        plan = plan_for(space, settings.proxy_batch_size, inputs=settings.proxy_inputs)
        archs = _read_archs(space, archs_file) if archs_file else list(get_space(space).all_cells())
    except NotImplementedError as exc:
        typer.echo(f"cannot score {space}: {exc} (give --archs FILE for spaces that cannot be enumerated)", err=True)
        raise typer.Exit(2) from None
    except (SpecError, OSError) as exc:
        typer.echo(f"cannot score {space}: {exc}", err=True)
        raise typer.Exit(2) from None
    canonical = get_space(space).canonical_arch
    chosen = archs[:limit]
    specs = list({canonical(a): ArchSpec(space, a) for a in chosen}.values())
    typer.echo(
        f"proxies {space}: {len(chosen)} architectures, {len(specs)} networks (one per isomorphism class; "
        f"{plan.network.constructor}, {plan.inputs} inputs, batch {plan.batch_size}, "
        f"{settings.proxy_workers} worker(s)); cache: {_store_name(settings.resolved_database_url)}",
        err=True,
    )

    async def run() -> dict[str, int]:
        counts: dict[str, int] = {}
        async with local_stores(settings) as services:
            with tqdm(total=len(specs), unit="net", desc=f"proxies {space}", dynamic_ncols=True) as bar:
                for start in range(0, len(specs), chunk):
                    outcome = await services.proxies.measure(specs[start : start + chunk], on_progress=bar.update)
                    for source in outcome.sources:
                        counts[source] = counts.get(source, 0) + 1
        return counts

    started = time.perf_counter()
    counts = asyncio.run(run())
    typer.echo(
        f"{len(specs)} networks in {time.perf_counter() - started:.1f}s: {counts}; fingerprint {plan.fingerprint['id']}"
    )


def _run_with_model(coroutine):
    """asyncio.run for commands that load the model: one that cannot load is one line and exit 1, not a traceback."""
    from .local import ModelUnavailable

    try:
        return asyncio.run(coroutine)
    except ModelUnavailable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _read_archs(space_name: str, path: Path) -> list:
    """Architectures from a file: one per line, a JSON value where the line parses as JSON, else the text."""
    from colecache_client.spaces import SpecError, get_space

    space, out = get_space(space_name), []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            value = line.strip()
        try:
            out.append(space.parse(value))
        except SpecError as exc:
            raise SpecError(f"{path}:{number}: {exc}") from None
    return out


def _precompute_over_http(url, space, archs, render_options, poolings, layer, max_length, normalize, chunk) -> None:
    import httpx
    from colecache_client.spaces import get_space
    from tqdm import tqdm

    to_string = get_space(space).to_string
    cells = [to_string(a) for a in archs]
    counts: dict[str, int] = {}
    with httpx.Client(base_url=url.rstrip("/"), timeout=3600) as client:
        for pooling in poolings:
            embedder = {
                k: v
                for k, v in {
                    "pooling": pooling,
                    "layer": layer,
                    "max_length": max_length,
                    "normalize": normalize,
                }.items()
                if v is not None
            }
            with tqdm(total=len(cells), unit="cell", desc=f"precompute {space} {pooling or ''}".strip()) as bar:
                for start in range(0, len(cells), chunk):
                    body = {
                        "specs": cells[start : start + chunk],
                        "space": space,
                        "render": render_options,
                        "embedder": embedder,
                        "encoding": "base64",
                    }
                    response = client.post("/embed", json=body)
                    if response.status_code != 200:
                        typer.echo(f"error {response.status_code}: {response.text}", err=True)
                        raise typer.Exit(1)
                    for source, n in response.json()["counts"].items():
                        counts[source] = counts.get(source, 0) + n
                    bar.update(len(body["specs"]))
    typer.echo(f"{len(cells)} cells x {len(poolings)} read-out(s): {counts}")


async def _embed_here(body: dict) -> dict:
    """Embed in this process; bad specs and options are refused (exit 2) before the model loads."""
    from colecache_client.spaces import SpecError
    from pydantic import ValidationError

    from .api.routes.embed import outcome_body
    from .api.schemas import EmbedRequest
    from .embedding.fingerprint import FingerprintError
    from .local import local_services
    from .pipeline import TruncatedItems
    from .settings import get_settings
    from .specs import InvalidSpecs, parse_specs

    try:
        request = EmbedRequest.model_validate(body)
        specs = parse_specs(request.specs, request.space, get_settings().max_code_chars)
    except ValidationError as exc:
        _refuse("invalid option", exc)
    except (SpecError, InvalidSpecs) as exc:  # InvalidSpecs names every bad item
        _refuse("invalid spec", exc)
    async with local_services() as services:
        try:
            outcome = await services.pipeline.embed(specs, request.render, request.embedder)
        except (SpecError, InvalidSpecs, FingerprintError, TruncatedItems) as exc:
            _refuse("cannot embed", exc)
    result = outcome_body(outcome, "float")
    for item in result["items"]:
        item["embedding"] = item["embedding"].tolist()
    return result


# --- studies on a running server -------------------------------------------------------------------
study_app = typer.Typer(
    help="A study on a running server: its report, and its observations to and from CSV.", no_args_is_help=True
)
app.add_typer(
    study_app,
    name="study",
    help="A study on a running server: report (surrogate quality, best so far), CSV import and export.",
)

ServerUrl = Annotated[
    str | None,
    typer.Option(
        envvar="COLECACHE_URL",
        help="Server URL (default: COLECACHE_URL, else http://127.0.0.1:COLECACHE_PORT).",
        show_default=False,
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(envvar="COLECACHE_API_KEY", help="API key (default: COLECACHE_API_KEY).", show_default=False),
]
PLOT_SUFFIXES = (".svg", ".png", ".pdf")


def _study_client(url: str | None, api_key: str | None):
    """A client for the server at `url` (else this host's COLECACHE_PORT); few retries, so that a server
    that is down is reported within seconds (a loading one, 503, still gets a few tries)."""
    from colecache_client import Client

    from .settings import get_settings

    base = url or f"http://127.0.0.1:{get_settings().port}"
    return Client(base, api_key=api_key or None, max_retries=2, backoff=0.5, timeout=120)


def _server_failed(exc: Exception, client, lines: list[int] | None = None, suffix: str = ""):
    """A server error (4xx/5xx, unreachable) as one `error:` line and exit 1, never a traceback.

    `lines`: the CSV line of each posted row, so item errors name lines instead of positions."""
    from colecache_client import APIError, TransportError

    message = _one_line(exc)
    if isinstance(exc, TransportError):  # say which server: the default one may not be the one meant
        message += f" (server {client.base_url}; set --url or COLECACHE_URL)"
    if isinstance(exc, APIError):
        located = [e for e in exc.errors if isinstance(e, dict) and isinstance(e.get("index"), int)]
        if lines is not None and located:
            shown = "; ".join(
                f"line {lines[e['index']] if 0 <= e['index'] < len(lines) else '?'}: {e.get('reason', e)}"
                for e in located[:3]
            )
            more = f" (and {len(located) - 3} more)" if len(located) > 3 else ""
            message = f"{exc.status_code}: {' '.join((shown + more).split())}"
            # Conflicts name rows by position in the import and the SDK's option: say lines and the CLI's.
            message = re.sub(
                r"\bitem (\d+) of this import\b",
                lambda m: f"line {lines[int(m.group(1))]}" if int(m.group(1)) < len(lines) else m.group(0),
                message,
            )
            message = message.replace("on_conflict='replace' or 'keep'", "--on-conflict replace or keep")
            if "nothing was posted" in exc.detail:
                message += "; nothing was posted"
    typer.echo(f"error: {message}{suffix}", err=True)
    raise typer.Exit(1) from None


def _figure(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


@study_app.command("report")
def study_report(
    study_id: Annotated[str, typer.Argument(help="The study's id.")],
    url: ServerUrl = None,
    api_key: ApiKey = None,
    window: Annotated[int, typer.Option(min=3, max=100_000, help="Latest pairs in the 'recent' figures.")] = 50,
    plots: Annotated[
        Path | None,
        typer.Option(help="Also write the plots (best so far, tau over time, ...) here: .svg, .png or .pdf."),
    ] = None,
) -> None:
    """Print how the study is going: best value so far and its surrogate's out-of-sample quality.

    A pair is a prediction made for an architecture before it was observed, and the value observed
    later; Kendall tau / Spearman rho rank them, MAE is in the objective's units, and a calibrated
    surrogate has about 68% / 95% of observed values within 1 / 2 predicted stds."""
    from colecache_client import ColecacheError
    from rich.console import Console
    from rich.table import Table

    if plots is not None and plots.suffix.lower() not in PLOT_SUFFIXES:
        typer.echo(f"error: --plots {plots}: use a {', '.join(PLOT_SUFFIXES)} file name", err=True)
        raise typer.Exit(2)
    client = _study_client(url, api_key)
    try:
        with client:
            report = client.report(study_id, window)
    except ColecacheError as exc:
        _server_failed(exc, client)
    online, recent = report.online, report.recent
    typer.echo(
        f"study {report.name} ({report.study_id}): {report.space}, {report.direction} {report.objective}, "
        f"version {report.version}"
    )
    table = Table()
    table.add_column("")
    table.add_column("online (all pairs)", justify="right")
    table.add_column(f"recent (last {recent.window or window})", justify="right")
    table.add_row("pairs", str(online.n_pairs), str(recent.n_pairs))
    table.add_row("Kendall tau", _figure(online.kendall_tau), _figure(recent.kendall_tau))
    table.add_row("Spearman rho", _figure(online.spearman_rho), _figure(recent.spearman_rho))
    table.add_row(f"MAE ({report.objective})", _figure(online.mae, ".4g"), _figure(recent.mae, ".4g"))
    table.add_row("bias (predicted - observed)", _figure(online.bias, "+.4g"), _figure(recent.bias, "+.4g"))
    for k, expected in ((1, online.calibration.expected_1std), (2, online.calibration.expected_2std)):
        table.add_row(
            f"within ±{k} std (vs {100 * expected:.0f}%)",
            _share(getattr(online.calibration, f"within_{k}std")),
            _share(getattr(recent.calibration, f"within_{k}std")),
        )
    Console().print(table)
    typer.echo(f"observations: {report.n_observations}")
    if report.best is None:
        typer.echo("best: none yet")
    else:  # plain echo, not rich: a long arch string stays on one line
        arch = f": {report.best.arch}" if report.best.arch else ""
        typer.echo(f"best: {report.best.value:.6g} at evaluation {report.best.index}{arch}")
    if plots is not None:
        try:
            from .report.plots import save_report_plots

            written = save_report_plots(report.raw, plots)
        except ImportError as exc:
            typer.echo(f"error: --plots needs matplotlib (pip install 'colecache[bench]'): {exc}", err=True)
            raise typer.Exit(1) from None
        except (OSError, ValueError) as exc:
            typer.echo(f"error: --plots {plots}: {_one_line(exc)}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"plots: {written}", err=True)


@study_app.command("import")
def study_import(
    study_id: Annotated[str, typer.Argument(help="The study's id.")],
    file: Annotated[
        Path, typer.Argument(help="CSV with a header row: spec, value and optionally metadata (JSON object).")
    ],
    url: ServerUrl = None,
    api_key: ApiKey = None,
    chunk_size: Annotated[int, typer.Option(min=1, help="Rows per request (each committed on its own).")] = 500,
    on_conflict: Annotated[
        Literal["reject", "replace", "keep"],
        typer.Option(
            help="A row whose spec and metadata are already observed with a different value: reject (409, "
            "stops the import), replace the stored value, or keep it."
        ),
    ] = "reject",
    spec_column: Annotated[str, typer.Option(help="Column of the specs.")] = "spec",
    value_column: Annotated[str, typer.Option(help="Column of the values.")] = "value",
    metadata_column: Annotated[str, typer.Option(help="Column of the metadata (optional).")] = "metadata",
) -> None:
    """Add observations from a CSV file (an export imports back unchanged; importing twice changes nothing).

    A spec cell starting with '[', '{' or '"' is read as JSON, any other text is the spec itself. The file
    and the specs of a space this client knows are checked before anything is sent: a bad row is one
    `error:` line naming it. What only the server can refuse (a conflict, a plugin space's spec) stops
    the import at that chunk; the chunks before it stay committed, and re-running is safe."""
    from colecache_client import ColecacheError
    from colecache_client.csvio import iter_observations_csv
    from tqdm import tqdm

    try:
        read = list(
            iter_observations_csv(
                file, spec_column=spec_column, value_column=value_column, metadata_column=metadata_column
            )
        )
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        typer.echo(f"error: {_one_line(exc)}", err=True)
        raise typer.Exit(2) from None
    lines = [line for line, _ in read]
    rows = [observation for _, observation in read]
    committed = 0
    client = _study_client(url, api_key)

    def progress(done: int, total: int) -> None:
        nonlocal committed
        bar.update(done - committed)
        committed = done

    try:
        with (
            client,
            # drawn on a terminal only (disable=None), so piped stderr holds just the outcome
            tqdm(total=len(rows), unit="row", desc=f"import {file.name}", dynamic_ncols=True, disable=None) as bar,
        ):
            written = client.import_observations(
                study_id, rows, chunk_size=chunk_size, on_conflict=on_conflict, progress=progress
            )
    except ColecacheError as exc:
        done = f" ({committed} of {len(rows)} rows were committed before it; re-running is safe)" if committed else ""
        _server_failed(exc, client, lines, done)
    typer.echo(
        f"{len(rows)} rows: {written.inserted} inserted, {written.unchanged} unchanged, {written.replaced} replaced, "
        f"{written.kept} kept; study {study_id} has {written.n_observations} observations (version {written.version})"
    )


@study_app.command("export")
def study_export(
    study_id: Annotated[str, typer.Argument(help="The study's id.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of standard output.")
    ] = None,
    url: ServerUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Write every observation as CSV (spec,value,metadata,arch,id,created_at,updated_at); `study import` reads it."""
    import csv
    import io

    from colecache_client import ColecacheError

    client = _study_client(url, api_key)
    try:
        with client:
            text = client.export_csv(study_id)
    except ColecacheError as exc:
        _server_failed(exc, client)
    if output is None:
        sys.stdout.flush()
        stream = getattr(sys.stdout, "buffer", None)
        if stream is not None:
            stream.write(text.encode("utf-8"))  # exactly as received (no newline translation)
            stream.flush()
        else:
            sys.stdout.write(text)
        return
    try:
        with open(output, "w", encoding="utf-8", newline="") as out:
            out.write(text)
    except OSError as exc:
        typer.echo(f"error: {_one_line(exc)}", err=True)
        raise typer.Exit(1) from None
    rows = max(sum(1 for _ in csv.reader(io.StringIO(text))) - 1, 0)
    typer.echo(f"{rows} observations -> {output}", err=True)


if __name__ == "__main__":
    app()
