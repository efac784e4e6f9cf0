# syntax=docker/dockerfile:1
# colecache image. One Dockerfile, two variants:
#   docker build --build-arg VARIANT=cpu  -t colecache:cpu  .
#   docker build --build-arg VARIANT=cuda -t colecache:cuda .
# Bake a model into the image (otherwise mount it and set COLECACHE_MODEL to the mount point):
#   docker build --build-arg VARIANT=cuda --build-arg BAKE_MODEL=Qwen/Qwen2.5-Coder-0.5B -t colecache:qwen .
# Secrets (API keys, database passwords) are never build arguments: pass them at run time
# (environment, or COLECACHE_API_KEYS_FILE pointing at a mounted secret).

ARG VARIANT=cpu
ARG PYTHON_VERSION=3.11

# --- runtime bases: the only difference between the variants ------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS base-cpu
ENV TORCH_INDEX=https://download.pytorch.org/whl/cpu

FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS base-cuda
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV TORCH_INDEX=https://download.pytorch.org/whl/cu126

# --- build: a virtual environment with torch, the server and the client -------------------------
FROM base-${VARIANT} AS build
ARG TORCH_VERSION=2.9.1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --index-url ${TORCH_INDEX} "torch==${TORCH_VERSION}"
WORKDIR /src
COPY client/ client/
COPY pyproject.toml README.md alembic.ini ./
COPY service/ service/
COPY migrations/ migrations/
RUN pip install ./client ".[onnx]" \
 && python -c "import colecache, colecache_client, torch; print('torch', torch.__version__)"

# --- optional: download a hub model into the image --------------------------------------------
FROM build AS model
ARG BAKE_MODEL=""
RUN mkdir -p /models \
 && if [ -n "${BAKE_MODEL}" ]; then \
      python -c "import sys; from huggingface_hub import snapshot_download; snapshot_download(sys.argv[1], local_dir='/models/baked')" "${BAKE_MODEL}"; \
    fi

# --- runtime ----------------------------------------------------------------------------------
FROM base-${VARIANT} AS runtime
LABEL org.opencontainers.image.title="colecache" \
      org.opencontainers.image.description="COLE code embeddings and NAS surrogates as a service"
RUN groupadd --system --gid 10001 colecache \
 && useradd --system --uid 10001 --gid colecache --home-dir /var/lib/colecache --create-home colecache
COPY --from=build /opt/venv /opt/venv
COPY --from=model --chown=colecache:colecache /models /models
COPY --from=build /src/alembic.ini /app/alembic.ini
COPY --from=build /src/migrations /app/migrations
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/var/lib/colecache/hf \
    COLECACHE_HOST=0.0.0.0 \
    COLECACHE_PORT=8000 \
    COLECACHE_DATA_DIR=/var/lib/colecache
USER colecache
EXPOSE 8000
VOLUME ["/var/lib/colecache"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["colecache", "healthcheck"]
CMD ["colecache", "serve"]
