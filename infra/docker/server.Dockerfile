# jobs-server: the API (`serve`), the scheduler (`scheduler`), `migrate` and `queues create`.
#
# Build from the repository root, which holds the workspace's uv.lock:
#   docker build -f infra/docker/server.Dockerfile -t jobs-server .
# Run:
#   docker run --rm -e JOBS_DATABASE_URL=... jobs-server migrate
#   docker run --rm -p 8000:8000 -e JOBS_DATABASE_URL=... -e JOBS_CONFIG_FILE=... jobs-server serve
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
    uv sync --frozen --no-dev --package jobs-server --no-install-workspace
# Then the workspace's own packages, installed into the venv (not linked to /src).
COPY packages/ packages/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package jobs-server --no-editable

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 jobs \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin jobs
# Owned by root: the app user can read and run the venv, not change it.
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    JOBS_HOST=0.0.0.0 \
    JOBS_PORT=8000
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# Health checks belong to the orchestrator (compose, ECS): the same image runs the API, which
# has GET /healthz and /readyz, and the scheduler, which has no HTTP port.
ENTRYPOINT ["jobs-server"]
CMD ["serve"]
