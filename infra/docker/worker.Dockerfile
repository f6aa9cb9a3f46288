# jobs-worker base image: the worker runtime, without handlers. Extend it with yours:
#
#   FROM <registry>/jobs-worker:<version>
#   COPY myapp/ /app/myapp/                      # a package importable from /app (the workdir)
#   CMD ["run", "myapp.handlers:registry", "--use-case", "notifications"]
#
# Handlers with dependencies of their own: see infra/README.md, "Worker images".
#
# Build from the repository root, which holds the workspace's uv.lock:
#   docker build -f infra/docker/worker.Dockerfile -t jobs-worker .
#   docker build -f infra/docker/worker.Dockerfile --target example -t jobs-worker-example .
#
# Only what uv.lock pins is installed (`uv sync --frozen`), without the dev group or extras;
# the image runs as uid 10001 and holds no compiler, no uv and no source tree.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Third-party dependencies first: this layer is rebuilt only when uv.lock or a pyproject changes.
COPY pyproject.toml uv.lock ./
COPY packages/jobs-schema/pyproject.toml packages/jobs-schema/
COPY packages/jobs-sdk/pyproject.toml packages/jobs-sdk/
COPY packages/jobs-server/pyproject.toml packages/jobs-server/
COPY packages/jobs-worker/pyproject.toml packages/jobs-worker/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package jobs-worker --no-install-workspace
# The versions installed, for images FROM this one: `uv pip install -c /app/constraints.txt ...`
# adds a handler's dependencies without moving any of the worker's.
RUN uv export --frozen --no-dev --package jobs-worker --no-emit-workspace --no-hashes \
    --no-header --no-annotate --output-file /app/constraints.txt
# Then the workspace's own packages, installed into the venv (not linked to /src).
COPY packages/ packages/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package jobs-worker --no-editable

FROM ${PYTHON_IMAGE} AS worker
RUN groupadd --system --gid 10001 jobs \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin jobs
# Owned by root: the app user can read and run the venv, not change it.
COPY --from=builder /app/.venv /app/.venv
COPY --from=builder /app/constraints.txt /app/constraints.txt
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# `jobs-worker run` imports MODULE:REGISTRY from the working directory too.
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["jobs-worker"]
CMD ["--help"]

# The repository's example handlers (examples/handlers.py and the tasks they implement,
# examples/tasks.py), for the compose stack.
FROM worker AS example
COPY examples/tasks.py examples/handlers.py /app/examples/
CMD ["run", "examples.handlers:registry", "--use-case", "notifications", "--use-case", "message_labeling"]

# The default target: the base image, without handlers.
FROM worker
