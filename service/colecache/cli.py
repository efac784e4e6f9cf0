"""`colecache` command line: serve, migrate, render, embed."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

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
    uvicorn.run(
        "colecache.api.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )


@app.command()
def migrate() -> None:
    """Apply database migrations (alembic upgrade head) to COLECACHE_DATABASE_URL."""
    from .db.engine import migrate as run
    from .settings import get_settings

    url = get_settings().resolved_database_url
    run(url)
    typer.echo(f"migrated {url.split('@')[-1]}")


def _options(primitives: str, context: str, dataset: str, canonical: bool):
    from .render import RenderOptions

    return RenderOptions(primitives=primitives, context=context, dataset=dataset, canonical=canonical)


@app.command()
def render(
    spec: Annotated[str, typer.Argument(help="NB201 cell string, e.g. '|nor_conv_3x3~0|+|...|'.")],
    primitives: Annotated[Primitives, typer.Option(help="inline | helper | exclude_helper")] = "exclude_helper",
    context: Annotated[Context, typer.Option(help="none | backbone | comment")] = "none",
    dataset: Annotated[Dataset, typer.Option(help="cifar10 | cifar100 | imagenet16-120")] = "cifar10",
    canonical: Annotated[bool, typer.Option(help="Render the isomorphism-class representative.")] = False,
) -> None:
    """Print the PyTorch code a spec renders to."""
    from colecache_client.spaces import SpecError

    from .render import render as render_spec
    from .specs import parse_spec

    try:
        parsed = parse_spec(spec, "nb201", max_code_chars=10**9)
    except SpecError as exc:
        typer.echo(f"invalid spec: {exc}", err=True)
        raise typer.Exit(2) from None
    sys.stdout.write(render_spec(parsed, _options(primitives, context, dataset, canonical)).code)


@app.command()
def embed(
    specs: Annotated[list[str], typer.Argument(help="NB201 cell strings.")],
    primitives: Annotated[Primitives, typer.Option()] = "exclude_helper",
    context: Annotated[Context, typer.Option()] = "none",
    dataset: Annotated[Dataset, typer.Option()] = "cifar10",
    pooling: Annotated[str | None, typer.Option(help="mean | last_token | cls | mean_all_layers")] = None,
    url: Annotated[str | None, typer.Option(help="Use a running server instead of loading the model here.")] = None,
) -> None:
    """Embed specs and print one JSON object per spec (vector, source, tokens)."""
    import httpx

    body = {
        "specs": specs,
        "render": {"primitives": primitives, "context": context, "dataset": dataset},
        "embedder": {"pooling": pooling} if pooling else {},
    }
    if url:
        response = httpx.post(url.rstrip("/") + "/embed", json=body, timeout=600)
        if response.status_code != 200:
            typer.echo(f"error {response.status_code}: {response.text}", err=True)
            raise typer.Exit(1)
        result = response.json()
    else:
        result = asyncio.run(_embed_here(body))
    for item in result["items"]:
        typer.echo(json.dumps({k: item[k] for k in ("index", "arch", "source", "n_tokens", "truncated", "embedding")}))


async def _embed_here(body: dict) -> dict:
    from .api.routes.embed import outcome_body
    from .api.schemas import EmbedRequest
    from .local import local_services
    from .specs import parse_specs

    request = EmbedRequest.model_validate(body)
    async with local_services() as services:
        specs = parse_specs(request.specs, request.space, services.settings.max_code_chars)
        outcome = await services.pipeline.embed(specs, request.render, request.embedder)
    result = outcome_body(outcome, "float")
    for item in result["items"]:
        item["embedding"] = item["embedding"].tolist()
    return result


if __name__ == "__main__":
    app()
