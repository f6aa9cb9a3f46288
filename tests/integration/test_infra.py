"""infra/ agrees with the code: the Dockerfiles, the compose stack and the ECS task definitions
parse, and every `JOBS_*` variable, command, option, port, queue and grace period they use is
the one the settings classes, the CLIs and the config schema define.

Nothing is run: there is no Docker engine here and no AWS. Files are parsed and checked against
the live objects (`ServerSettings` / `WorkerSettings` built from each service's environment, the
typer apps parsing each command line, botocore's own models of the ECS and Application Auto
Scaling APIs), so renaming a setting or an option fails here until infra/ follows.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import runpy
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any
from urllib.parse import urlsplit

import botocore.session
import pytest
import typer
import typer.main
import yaml
from botocore.validate import ParamValidator
from pydantic import TypeAdapter
from pydantic_settings import BaseSettings

from jobs_schema import JobsConfig, TenantConfig, UseCaseConfig
from jobs_server.cli import app as server_app
from jobs_server.metrics import ServerMetrics
from jobs_server.publisher.base import QueueSpec
from jobs_server.publisher.sqs import _DLQ_RETENTION
from jobs_server.settings import ServerSettings
from jobs_worker.cli import app as worker_app
from jobs_worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
DOCKER = INFRA / "docker"
COMPOSE_FILE = INFRA / "compose" / "docker-compose.yml"
ECS = INFRA / "ecs"

# The console scripts the images run, and the package each is built from.
CLIS: dict[str, typer.Typer] = {"jobs-server": server_app, "jobs-worker": worker_app}
SETTINGS: dict[str, type[BaseSettings]] = {
    "jobs-server": ServerSettings,
    "jobs-worker": WorkerSettings,
}
DOCKERFILES = {"server.Dockerfile": "jobs-server", "worker.Dockerfile": "jobs-worker"}

# Announced settings infra/ already uses but the code does not have yet. Each is accepted while
# it is missing; delete the entry once the field has landed (then it is checked like the rest).
PENDING_SETTINGS: dict[str, str] = {}
# The same for metrics infra/ reads that the server does not export yet.
PENDING_METRICS: dict[str, str] = {
    "jobs_worker_slots_needed": "worker slots needed for every pending job to start by its deadline"
}
SLOTS_NEEDED = "jobs_worker_slots_needed"

HEALTH_PATHS = {"/healthz", "/readyz"}
# Settings that carry credentials: never in plain `environment` of a task definition.
SECRET_SETTINGS = {"JOBS_DATABASE_URL", "JOBS_TENANTS"} | {
    "JOBS_" + name.upper()
    for cls in SETTINGS.values()
    for name, f in cls.model_fields.items()
    if "SecretStr" in str(f.annotation)
}
# Containers without a health check, and why.
NO_HEALTH_CHECK = {
    "scheduler": "the scheduler has no HTTP port; ECS restarts it when the process exits",
}
GRACE_MARGIN_SECONDS = 10  # after the grace period: release unfinished jobs, flush reports
ECS_MAX_STOP_TIMEOUT = 120


# --- helpers -------------------------------------------------------------------------------


def setting_names(cls: type[BaseSettings]) -> set[str]:
    prefix = cls.model_config.get("env_prefix", "")
    return {prefix.upper() + name.upper() for name in cls.model_fields}


def unknown_settings(names: set[str], cls: type[BaseSettings]) -> set[str]:
    """The JOBS_* names that are no field of `cls` (announced ones excepted while missing)."""
    return {n for n in names if n.startswith("JOBS_")} - setting_names(cls) - set(PENDING_SETTINGS)


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """os.environ holding exactly `env` as far as JOBS_* and AWS_* go."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("JOBS_", "AWS_")):
                mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        yield


def settings_from(cls: type[BaseSettings], env: dict[str, str]) -> Any:
    """The settings object the process would build from `env` (validation errors raise)."""
    with environment(env):
        return cls()


def parse_cli(cli: str, args: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Parse a command line as `cli` would (its parser, types, required options and
    arguments), without running anything: the command path and the parsed parameters."""
    cmd = typer.main.get_command(CLIS[cli])
    path: list[str] = []
    rest = list(args)
    while hasattr(cmd, "commands"):  # a group: the first word names the command
        if rest == ["--help"]:
            return path, {"help": True}
        if not rest or rest[0] not in cmd.commands:
            raise AssertionError(
                f"{cli} {' '.join(path)}: no command {rest[:1]}; it has {sorted(cmd.commands)}"
            )
        path.append(rest[0])
        cmd = cmd.commands[rest.pop(0)]
    try:
        ctx = cmd.make_context(f"{cli} {' '.join(path)}", rest)
    except Exception as exc:  # typer's (vendored) click UsageError and subclasses
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        raise AssertionError(f"`{cli} {shlex.join(args)}`: {message}") from exc
    return path, dict(ctx.params)


def health_urls(command: list[str] | str) -> list[tuple[int | None, str]]:
    """(port, path) of every URL in a health check command."""
    text = command if isinstance(command, str) else " ".join(command)
    out = []
    for url in re.findall(r"https?://[^\s'\"]+", text):
        parts = urlsplit(url)
        out.append((parts.port, parts.path))
    return out


def duration_seconds(value: str | int | float) -> float:
    """A compose duration ("45s", "1m30s", "500ms") in seconds."""
    if isinstance(value, int | float):
        return float(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"bad duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR-default} with the defaults (nothing is set here)."""

    def sub(m: re.Match[str]) -> str:
        assert m.group(2) is not None, f"{m.group(0)} has no default"
        return m.group(2)

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}", sub, value)


# --- Dockerfiles ---------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]  # ARGs before the first FROM, with their defaults
    stages: list[Stage]

    def stage(self, name: str | None) -> Stage:
        if name is None:
            return self.stages[-1]
        return next(s for s in self.stages if s.name == name)

    def resolve(self, image: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.args.get(m.group(1), m.group(0)), image)

    def chain(self, stage: Stage) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        out = [stage]
        names = {s.name for s in self.stages}
        while out[-1].base in names:
            out.append(self.stage(out[-1].base))
        return out

    def effective(self, stage: Stage, keyword: str) -> str | None:
        for s in self.chain(stage):
            found = s.all(keyword)
            if found:
                return found[-1]
        return None

    def env(self, stage: Stage) -> dict[str, str]:
        out: dict[str, str] = {}
        for s in reversed(self.chain(stage)):
            for rest in s.all("ENV"):
                tokens = shlex.split(rest)
                if "=" not in tokens[0]:  # legacy `ENV NAME value`
                    out[tokens[0]] = " ".join(tokens[1:])
                    continue
                for token in tokens:
                    name, _, value = token.partition("=")
                    out[name] = value
        return out


def parse_dockerfile(path: Path) -> Dockerfile:
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments and blank lines, also inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path.name}: the last instruction ends with a backslash"

    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert keyword == "ARG", f"{path.name}: {keyword} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(path, args, stages)


def exec_form(rest: str | None) -> list[str] | None:
    if rest is None:
        return None
    assert rest.startswith("["), f"not the exec (JSON) form: {rest}"
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def dockerignore(path: Path) -> list[str]:
    ignore = path.with_name(path.name + ".dockerignore")
    assert ignore.exists(), f"{ignore.name} is missing: the context is the whole repository"
    lines = (ln.strip() for ln in ignore.read_text().splitlines())
    return [ln for ln in lines if ln and not ln.startswith("#")]


def ignored(relpath: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent wins."""
    parts = relpath.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        regex = re.escape(pat).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, c) for c in candidates):
            result = not negate
    return result


DOCKERFILE_PARSED = {name: parse_dockerfile(DOCKER / name) for name in DOCKERFILES}


def image_cli(dockerfile: str, target: str | None = None) -> str:
    df = DOCKERFILE_PARSED[dockerfile]
    entrypoint = exec_form(df.effective(df.stage(target), "ENTRYPOINT"))
    assert entrypoint and len(entrypoint) == 1 and entrypoint[0] in CLIS, entrypoint
    return entrypoint[0]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_base_images_are_pinned(name: str):
    df = DOCKERFILE_PARSED[name]
    stage_names = {s.name for s in df.stages}
    for stage in df.stages:
        if stage.base in stage_names:
            continue
        image = df.resolve(stage.base)
        assert "$" not in image, f"{name}: FROM {stage.base}: no default for its ARG"
        tag = image.rsplit("/", 1)[-1]
        assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+", tag), (
            f"{name}: FROM {image} is not pinned to a full version or a digest"
        )
    # the venv is copied between stages: builder and runtime must share the interpreter
    builder = df.stage("builder")
    runtime = df.chain(df.stage(None))[-1]
    assert df.resolve(builder.base) == df.resolve(runtime.base)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_installs_from_the_lock(name: str):
    df = DOCKERFILE_PARSED[name]
    package = DOCKERFILES[name]
    members = {
        tomllib.loads(p.read_text())["project"]["name"]
        for p in ROOT.glob("packages/*/pyproject.toml")
    }
    assert package in members
    uv_runs = [run for run in df.stage("builder").all("RUN") if re.search(r"uv (sync|export)", run)]
    syncs = [run for run in uv_runs if "uv sync" in run]
    assert syncs, f"{name}: no `uv sync` in the builder stage"
    for run in uv_runs:
        words = shlex.split(run)
        assert "--frozen" in words or "--locked" in words, f"{name}: {run}"
        assert "--no-dev" in words, f"{name}: {run}"
        assert words[words.index("--package") + 1] == package, f"{name}: {run}"
    assert "--no-editable" in shlex.split(syncs[-1]), f"{name}: the venv must not link to /src"

    patterns = dockerignore(df.path)
    for stage in df.stages:
        for rest in stage.all("COPY"):
            words = shlex.split(rest)
            if any(w.startswith("--from") for w in words):
                continue
            for source in words[:-1]:
                assert list(ROOT.glob(source.rstrip("/"))), f"{name}: COPY {source}: not in repo"
                assert not ignored(source, patterns), f"{name}: COPY {source} is .dockerignored"
    for junk in (".venv/bin/python", ".jobs-dev/pg", ".git/HEAD", "tests/conftest.py"):
        assert ignored(junk, patterns), f"{name}: {junk} would be sent to the build"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_runs_the_cli_as_non_root(name: str):
    df = DOCKERFILE_PARSED[name]
    package = DOCKERFILES[name]
    scripts = tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())
    module = package.replace("-", "_")
    assert scripts["project"]["scripts"][package] == f"{module}.cli:main"
    for stage in df.stages:
        if stage.name in {"uv", "builder"}:
            continue
        user = df.effective(stage, "USER")
        assert user is not None, f"{name}: stage {stage.name}: no USER (runs as root)"
        uid = user.split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{name}: USER {user}: use a numeric non-root uid"
        assert image_cli(name, stage.name) == package
        cmd = exec_form(df.effective(stage, "CMD"))
        assert cmd is not None
        parse_cli(package, cmd)
        env = df.env(stage)
        assert not unknown_settings(set(env), SETTINGS[package]), f"{name}: ENV {env}"
        for port in stage.all("EXPOSE"):
            assert port == env.get("JOBS_PORT"), f"{name}: EXPOSE {port} but JOBS_PORT"


# --- docker-compose ------------------------------------------------------------------------

COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def compose_command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def compose_cli(service: dict[str, Any]) -> str | None:
    """The console script a service runs: its Dockerfile's ENTRYPOINT (or the one of the
    service that builds its image)."""
    build = service.get("build")
    if build is None:
        builders = [
            s for s in SERVICES.values() if s.get("build") and s["image"] == service["image"]
        ]
        if not builders:
            return None
        build = builders[0]["build"]
    dockerfile = (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).resolve()
    assert dockerfile.parent == DOCKER and dockerfile.name in DOCKERFILES, dockerfile
    return image_cli(dockerfile.name, build.get("target"))


def mounted_file(service: dict[str, Any], target: str) -> Path:
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            assert source.startswith("."), f"{volume}: expected a file of the repository"
            return (COMPOSE_FILE.parent / source).resolve()
    raise AssertionError(f"nothing is mounted at {target}")


def jobs_services() -> dict[str, tuple[str, dict[str, Any]]]:
    out = {}
    for name, svc in SERVICES.items():
        cli = compose_cli(svc)
        if cli is not None:
            out[name] = (cli, svc)
    return out


def service_settings(cli: str, svc: dict[str, Any]) -> Any:
    """The settings the service's process builds, its config file read from the repository."""
    env = compose_env(svc)
    if "JOBS_CONFIG_FILE" in env:
        env["JOBS_CONFIG_FILE"] = str(mounted_file(svc, env["JOBS_CONFIG_FILE"]))
    return settings_from(SETTINGS[cli], env)


def test_compose_has_the_stack():
    assert {"postgres", "localstack", "queues", "migrate", "server", "scheduler", "worker"} <= set(
        SERVICES
    )
    for name, svc in SERVICES.items():
        image = svc.get("image")
        assert image, f"{name}: no image"
        tag = image.rsplit("/", 1)[-1]
        assert ":" in tag and not tag.endswith(":latest"), f"{name}: {image} has no fixed tag"
    assert "sqs" in SERVICES["localstack"]["environment"]["SERVICES"].split(",")
    assert SERVICES["scheduler"].get("deploy", {}).get("replicas", 1) >= 2, "one leads, one waits"
    names = {cli for cli, _ in jobs_services().values()}
    assert names == set(CLIS)


def test_compose_build_targets_exist():
    for name, svc in SERVICES.items():
        build = svc.get("build")
        if build is None:
            continue
        assert (COMPOSE_FILE.parent / build["context"]).resolve() == ROOT, f"{name}: context"
        df = DOCKERFILE_PARSED[Path(build["dockerfile"]).name]
        if "target" in build:
            df.stage(build["target"])


@pytest.mark.parametrize("service", ["migrate", "server", "scheduler", "worker"])
def test_compose_commands_and_settings_agree_with_the_code(service: str):
    cli, svc = jobs_services()[service]
    env = compose_env(svc)
    assert not unknown_settings(set(env), SETTINGS[cli]), f"{service}: unknown JOBS_* settings"
    path, params = parse_cli(cli, compose_command(svc))
    settings = service_settings(cli, svc)
    config = settings.jobs_config()
    assert config.use_cases, f"{service}: no use cases"
    if cli == "jobs-server":
        settings.require_database_url()
        assert any(t.tokens for t in config.tenants.values()), f"{service}: nobody can enqueue"
    else:
        assert path == ["run"]
        settings.select_use_cases(params["use_case"])
        settings.require_server()


def depends_on(name: str) -> set[str]:
    """The services `name` waits for, directly or through others."""
    out: set[str] = set()
    todo = [name]
    while todo:
        for dep in SERVICES[todo.pop()].get("depends_on", {}):
            if dep not in out:
                out.add(dep)
                todo.append(dep)
    return out


def test_compose_urls_name_its_services():
    uses = {"migrate": {"JOBS_DATABASE_URL"}}  # the rest of its settings are shared, unused
    for name, (_, svc) in jobs_services().items():
        env = compose_env(svc)
        for var in ("JOBS_DATABASE_URL", "JOBS_SQS_ENDPOINT_URL", "JOBS_SERVER_URL"):
            if var in env:
                host = urlsplit(env[var]).hostname
                assert host in SERVICES, f"{name}: {var} points at {host}, not a service"
                if var in uses.get(name, {var}):
                    assert host in depends_on(name), f"{name}: {var}: does not wait for {host}"
    server_url = urlsplit(compose_env(SERVICES["worker"])["JOBS_SERVER_URL"])
    assert server_url.port == server_port(*jobs_services()["server"])


def server_port(cli: str, svc: dict[str, Any]) -> int:
    _, params = parse_cli(cli, compose_command(svc))
    return params.get("port") or service_settings(cli, svc).port


def test_compose_waits_for_migrations_and_queues():
    for name in ("server", "scheduler"):
        deps = SERVICES[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["queues"]["condition"] == "service_completed_successfully", name
    assert parse_cli("jobs-server", compose_command(SERVICES["migrate"]))[0] == ["migrate"]
    assert SERVICES["worker"]["depends_on"]["server"]["condition"] == "service_healthy"


def test_compose_health_checks_hit_the_health_endpoints():
    services = jobs_services()
    checked = {}
    for name, (cli, svc) in services.items():
        if "healthcheck" not in svc:
            continue
        urls = health_urls(svc["healthcheck"]["test"])
        assert urls, f"{name}: health check without a URL"
        if cli == "jobs-server":
            expected = server_port(cli, svc)
        else:
            expected = int(compose_env(svc)["JOBS_HEALTH_PORT"])
        for port, path in urls:
            assert path in HEALTH_PATHS, f"{name}: health check on {path}"
            assert port == expected, f"{name}: health check on port {port}, serves {expected}"
        checked[name] = urls
    assert {"server", "worker"} <= set(checked)


def test_compose_worker_stops_after_its_grace_period():
    cli, svc = jobs_services()["worker"]
    _, params = parse_cli(cli, compose_command(svc))
    grace = params["grace_seconds"] or service_settings(cli, svc).grace_seconds
    stop = duration_seconds(svc.get("stop_grace_period", "10s"))
    assert stop >= grace + GRACE_MARGIN_SECONDS, f"stop_grace_period {stop} s, grace {grace} s"


def load_bootstrap() -> SimpleNamespace:
    """The bootstrap script's names (it imports localstack-client only when run)."""
    return SimpleNamespace(**runpy.run_path(str(INFRA / "compose" / "bootstrap_queues.py")))


def test_compose_queue_bootstrap_creates_the_configured_queues():
    svc = SERVICES["queues"]
    command = " ".join(compose_command(svc))
    assert re.search(r"pip install .*localstack-client==[\d.]+", command), command
    assert re.search(r"boto3==[\d.]+", command), command
    script = re.search(r"python (\S+bootstrap_queues\.py) (\S+)", command)
    assert script, command
    assert mounted_file(svc, script.group(1)) == INFRA / "compose" / "bootstrap_queues.py"
    toml_path = mounted_file(svc, script.group(2))
    assert compose_env(svc)["LOCALSTACK_HOST"].split(":")[0] in svc["depends_on"]

    # every jobs service reads the file the bootstrap creates queues for
    for name, (_, jsvc) in jobs_services().items():
        env = compose_env(jsvc)
        if name != "migrate":
            assert mounted_file(jsvc, env["JOBS_CONFIG_FILE"]) == toml_path, name

    # and the bootstrap sets what `jobs-server queues create` sets (either may run later)
    config = JobsConfig.model_validate(tomllib.loads(toml_path.read_text()))
    bootstrap = load_bootstrap()
    plan = bootstrap.plan(tomllib.loads(toml_path.read_text()))
    assert [(q.use_case, q.queue, q.dlq, q.visibility_timeout_seconds) for q in plan] == [
        (name, uc.queue, uc.queue + "-dlq", uc.queue_visibility_seconds)
        for name, uc in config.use_cases.items()
    ]
    assert str(bootstrap.DLQ_RETENTION_SECONDS) == _DLQ_RETENTION
    assert QueueSpec("q").max_receive_count == bootstrap.MAX_RECEIVE_COUNT
    assert bootstrap.LONG_POLL_SECONDS == 20
    assert WorkerSettings.model_fields["poll_seconds"].default <= bootstrap.LONG_POLL_SECONDS


# --- ECS -----------------------------------------------------------------------------------

TASK_FILES = ("server.json", "scheduler.json", "worker.json")
SAMPLES = {  # values for render.sh's placeholders, to build settings as the task would
    "AWS_REGION": "eu-west-1",
    "AWS_ACCOUNT_ID": "123456789012",
    "SERVER_IMAGE": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/jobs-server:0.1.0",
    "WORKER_IMAGE": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/myapp-worker:1",
    "JOBS_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:jobs-AbCdEf",
    "JOBS_SERVER_URL": "http://jobs-server.internal:8000",
    "ECS_CLUSTER": "jobs",
    "WORKER_SERVICE": "jobs-worker-notifications",
    "CLOUDWATCH_AGENT_IMAGE": "public.ecr.aws/cloudwatch-agent/cloudwatch-agent:1.300050.0",
}
SECRET_SAMPLES = {
    "JOBS_DATABASE_URL": "postgresql://jobs:secret@db.internal:5432/jobs",
    "JOBS_TENANTS": '{"acme": {"tokens": ["t"]}}',
}
IMAGE_CLI = {"${SERVER_IMAGE}": "jobs-server", "${WORKER_IMAGE}": "jobs-worker"}


def render(text: str) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: SAMPLES[m.group(1)], text)


def task(name: str) -> dict[str, Any]:
    return json.loads((ECS / name).read_text())


def containers() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for name in TASK_FILES:
        for c in task(name)["containerDefinitions"]:
            yield name, IMAGE_CLI[c["image"]], c


def container_env(c: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the process sees it, secrets filled with samples."""
    env = {e["name"]: render(e["value"]) for e in c.get("environment", [])}
    for s in c.get("secrets", []):
        env[s["name"]] = SECRET_SAMPLES.get(s["name"], "sample-secret")
    return env


def test_ecs_files_are_valid_api_requests():
    session = botocore.session.get_session()
    register = session.get_service_model("ecs").operation_model("RegisterTaskDefinition")
    for name in TASK_FILES:
        report = ParamValidator().validate(task(name), register.input_shape)
        assert not report.has_errors(), f"{name}: {report.generate_report()}"
    # the scheduler with its CloudWatch agent beside it, as docs/deploy.md registers it
    with_agent = task("scheduler.json")
    with_agent["containerDefinitions"].append(task("cloudwatch/scheduler-sidecar.json"))
    report = ParamValidator().validate(with_agent, register.input_shape)
    assert not report.has_errors(), f"scheduler.json + sidecar: {report.generate_report()}"
    scaling = session.get_service_model("application-autoscaling")
    doc = task("worker-autoscaling.json")
    requests = [("scalableTarget", "RegisterScalableTarget", doc["scalableTarget"])] + [
        (f"scalingPolicies[{i}]", "PutScalingPolicy", p)
        for i, p in enumerate(doc["scalingPolicies"])
    ]
    for key, operation, request in requests:
        shape = scaling.operation_model(operation).input_shape
        report = ParamValidator().validate(request, shape)
        assert not report.has_errors(), f"{key}: {report.generate_report()}"
    for policy in (ECS / "iam").glob("*.json"):
        statements = json.loads(policy.read_text())["Statement"]
        assert statements and all(s["Effect"] == "Allow" for s in statements), policy.name


def test_ecs_placeholders_are_the_ones_render_fills():
    known = re.search(r"KNOWN=\((.*?)\n\)", (ECS / "render.sh").read_text(), re.S)
    assert known
    names = {line.split("#")[0].strip() for line in known.group(1).splitlines()} - {""}
    assert names == set(SAMPLES)
    for path in [
        *ECS.glob("*.json"),
        *(ECS / "iam").glob("*.json"),
        *(ECS / "cloudwatch").glob("*"),
    ]:
        used = set(re.findall(r"\$\{(\w+)\}", path.read_text()))
        assert used <= names, f"{path.name}: {used - names} are not filled by render.sh"


def test_ecs_commands_and_settings_agree_with_the_code():
    for name, cli, c in containers():
        env = container_env(c)
        assert not unknown_settings(set(env), SETTINGS[cli]), f"{name}/{c['name']}"
        path, params = parse_cli(cli, c["command"])
        settings = settings_from(SETTINGS[cli], env)
        if cli == "jobs-server":
            settings.require_database_url()
            if path != ["migrate"]:
                assert settings.jobs_config().use_cases, f"{name}/{c['name']}: no use cases"
        else:
            settings.select_use_cases(params["use_case"])
            settings.require_server()
        assert c.get("user", "0").split(":")[0] not in {"0", "root"}, f"{name}/{c['name']}"
        assert c["logConfiguration"]["logDriver"] == "awslogs", f"{name}/{c['name']}"


def test_ecs_use_cases_are_the_same_everywhere():
    values = {c["name"]: container_env(c).get("JOBS_USE_CASES") for _, _, c in containers()}
    values = {k: v for k, v in values.items() if v is not None}
    assert {"server", "scheduler", "worker"} <= set(values)
    assert len(set(values.values())) == 1, "server, scheduler and workers read other use cases"
    TypeAdapter(dict[str, UseCaseConfig]).validate_json(next(iter(values.values())))


def test_ecs_secrets_come_from_secrets_manager():
    required = {
        "server": {"JOBS_DATABASE_URL", "JOBS_ADMIN_TOKEN", "JOBS_WORKER_TOKEN", "JOBS_TENANTS"},
        "migrate": {"JOBS_DATABASE_URL"},
        "scheduler": {"JOBS_DATABASE_URL"},
        "worker": {"JOBS_WORKER_TOKEN"},
    }
    for name, _, c in containers():
        plain = {e["name"] for e in c.get("environment", [])}
        assert not plain & SECRET_SETTINGS, f"{name}/{c['name']}: {plain & SECRET_SETTINGS}"
        secrets = {s["name"]: render(s["valueFrom"]) for s in c.get("secrets", [])}
        assert required[c["name"]] <= set(secrets), f"{name}/{c['name']}"
        for secret, arn in secrets.items():
            assert arn.startswith("arn:aws:secretsmanager:"), f"{name}/{c['name']}: {secret}"
    for _, _, c in containers():
        TypeAdapter(dict[str, TenantConfig]).validate_json(
            container_env(c).get("JOBS_TENANTS", "{}")
        )


def test_ecs_health_checks_hit_the_health_endpoints():
    for name, cli, c in containers():
        if not c.get("essential", True):
            assert c["command"] == ["migrate"], f"{name}/{c['name']}: a non-essential container"
            continue
        if c["name"] in NO_HEALTH_CHECK:
            assert "healthCheck" not in c
            continue
        urls = health_urls(c["healthCheck"]["command"])
        assert urls, f"{name}/{c['name']}: health check without a URL"
        env = container_env(c)
        if cli == "jobs-server":
            _, params = parse_cli(cli, c["command"])
            expected = params["port"] or settings_from(ServerSettings, env).port
            assert expected in [p["containerPort"] for p in c["portMappings"]]
        else:
            expected = int(env["JOBS_HEALTH_PORT"])
        for port, path in urls:
            assert path in HEALTH_PATHS and port == expected, f"{name}/{c['name']}: {port}{path}"


def test_ecs_migrations_run_before_server_and_scheduler():
    for name in ("server.json", "scheduler.json"):
        defs = {c["name"]: c for c in task(name)["containerDefinitions"]}
        main = defs[name.removesuffix(".json")]
        assert {"containerName": "migrate", "condition": "SUCCESS"} in main["dependsOn"], name
        assert parse_cli("jobs-server", defs["migrate"]["command"])[0] == ["migrate"]


def worker_container() -> tuple[dict[str, Any], dict[str, Any], Any]:
    (c,) = task("worker.json")["containerDefinitions"]
    _, params = parse_cli("jobs-worker", c["command"])
    return c, params, settings_from(WorkerSettings, container_env(c))


def test_ecs_worker_stop_timeout_covers_its_grace_period():
    c, params, settings = worker_container()
    grace = params["grace_seconds"] or settings.grace_seconds
    assert grace + GRACE_MARGIN_SECONDS <= c["stopTimeout"] <= ECS_MAX_STOP_TIMEOUT, (
        f"stopTimeout {c['stopTimeout']} s for a grace period of {grace} s"
    )


def scaling_policy(metric_name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The worker's one target-tracking policy whose metric math reads `metric_name`, and its
    metrics; each policy's math returns one series and names only metrics it defines."""
    doc = task("worker-autoscaling.json")
    target, policies = doc["scalableTarget"], doc["scalingPolicies"]
    assert len({p["PolicyName"] for p in policies}) == len(policies)
    found = []
    for policy in policies:
        assert policy["ResourceId"] == target["ResourceId"], policy["PolicyName"]
        assert policy["ScalableDimension"] == target["ScalableDimension"], policy["PolicyName"]
        assert policy["PolicyType"] == "TargetTrackingScaling", policy["PolicyName"]
        config = policy["TargetTrackingScalingPolicyConfiguration"]
        metrics = config["CustomizedMetricSpecification"]["Metrics"]
        by_id = {m["Id"]: m for m in metrics}
        (returned,) = [m for m in metrics if m.get("ReturnData", True)]
        names = set(re.findall(r"\b([a-z]\w*)\b(?!\s*\()", returned["Expression"]))
        assert names <= set(by_id), f"{policy['PolicyName']}: {names - set(by_id)} undefined"
        stats = [m["MetricStat"]["Metric"]["MetricName"] for m in metrics if "MetricStat" in m]
        if metric_name in stats:
            found.append((policy, metrics))
    (one,) = found
    return one


def test_ecs_worker_scales_on_its_queue_backlog():
    _, params, settings = worker_container()
    (use_case,) = params["use_case"]  # one service per use case, scaled on its queue
    uc = settings.select_use_cases([use_case])[use_case]
    target = task("worker-autoscaling.json")["scalableTarget"]
    assert render(target["ResourceId"]).split("/")[-1] == render("${WORKER_SERVICE}")
    _, metrics = scaling_policy("ApproximateNumberOfMessagesVisible")
    queues = [
        d["Value"]
        for m in metrics
        if "MetricStat" in m
        for d in m["MetricStat"]["Metric"]["Dimensions"]
        if d["Name"] == "QueueName"
    ]
    assert queues == [uc.queue.rstrip("/").rsplit("/", 1)[-1]]
    # enough workers to reach the use case's capacity, not many more (the rest would idle)
    concurrency = params["concurrency"] or settings.concurrency
    assert target["MaxCapacity"] * concurrency >= uc.capacity
    assert (target["MaxCapacity"] - 1) * concurrency < uc.capacity + concurrency


def test_ecs_worker_scales_on_the_slots_its_deadlines_need():
    """jobs_worker_slots_needed{use_case} reaches CloudWatch through the agent beside the
    scheduler (docs/operations.md); target tracking keeps slots needed per running task at the
    worker's --concurrency, so the service runs slots needed / concurrency tasks."""
    _, params, settings = worker_container()
    (use_case,) = params["use_case"]
    policy, metrics = scaling_policy(SLOTS_NEEDED)
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == (params["concurrency"] or settings.concurrency)
    (slots,) = [
        m
        for m in metrics
        if m.get("MetricStat", {}).get("Metric", {}).get("MetricName") == SLOTS_NEEDED
    ]
    metric = slots["MetricStat"]["Metric"]
    assert metric["Dimensions"] == [{"Name": "use_case", "Value": use_case}]
    assert slots["MetricStat"]["Stat"] == "Maximum"  # a minute's need is not averaged away
    workers = [m for m in metrics if "RunningTaskCount" in json.dumps(m)]
    assert len(workers) == 1 and workers[0]["Id"] in policy_expression(metrics)
    # what the agent sends is what the policy reads: namespace, name, dimensions
    agent = task("cloudwatch/agent.json")["logs"]["metrics_collected"]["prometheus"]
    emf = agent["emf_processor"]
    assert emf["metric_namespace"] == metric["Namespace"]
    (declaration,) = [
        d
        for d in emf["metric_declaration"]
        if any(re.fullmatch(sel, SLOTS_NEEDED) for sel in d["metric_selectors"])
    ]
    assert declaration["dimensions"] == [["use_case"]]
    assert agent["prometheus_config_path"] == "env:PROMETHEUS_CONFIG_CONTENT"
    # ... from the scheduler's metrics port, scraped over the task's loopback
    scrape = yaml.safe_load((ECS / "cloudwatch" / "prometheus.yaml").read_text())
    (job,) = scrape["scrape_configs"]
    assert declaration["source_labels"] == ["job"]
    assert re.fullmatch(declaration["label_matcher"], job["job_name"])
    kept = [r for r in job.get("metric_relabel_configs", []) if r.get("action") == "keep"]
    assert all(re.fullmatch(r["regex"], SLOTS_NEEDED) for r in kept)
    scheduler = {c["name"]: c for c in task("scheduler.json")["containerDefinitions"]}["scheduler"]
    port = settings_from(ServerSettings, container_env(scheduler)).metrics_port
    assert port is not None, "scheduler.json: the scheduler serves no metrics (JOBS_METRICS_PORT)"
    assert [t for c in job["static_configs"] for t in c["targets"]] == [f"localhost:{port}"]
    sidecar = task("cloudwatch/scheduler-sidecar.json")
    assert {s["name"] for s in sidecar["secrets"]} == {
        "CW_CONFIG_CONTENT",
        "PROMETHEUS_CONFIG_CONTENT",
    }
    assert sidecar["essential"] is False  # no agent: no scaling on deadlines, the jobs still run
    # the roles let the agent read its parameters (execution role) and write its log group
    # (the scheduler's task role)
    assert task("scheduler.json")["taskRoleArn"].endswith(":role/jobs-server-task")
    for role, wanted, needed in (
        (
            "execution-role-policy.json",
            "ssm:GetParameters",
            [s["valueFrom"] for s in sidecar["secrets"]],
        ),
        (
            "server-task-role-policy.json",
            "logs:PutLogEvents",
            [
                f"arn:aws:logs:${{AWS_REGION}}:${{AWS_ACCOUNT_ID}}:log-group:{agent['log_group_name']}:*"
            ],
        ),
    ):
        statements = json.loads((ECS / "iam" / role).read_text())["Statement"]
        granted = [r for st in statements if wanted in st["Action"] for r in st["Resource"]]
        for arn in needed:
            assert any(fnmatch.fnmatchcase(arn, r) for r in granted), f"{role}: {wanted} {arn}"
    # the gauge is the server's own (or announced while it is being built)
    exported = {family.name for family in ServerMetrics().registry.collect()}
    assert SLOTS_NEEDED in exported or SLOTS_NEEDED in PENDING_METRICS


def policy_expression(metrics: list[dict[str, Any]]) -> str:
    (returned,) = [m for m in metrics if m.get("ReturnData", True)]
    expression: str = returned["Expression"]
    return expression


# --- the checks themselves -----------------------------------------------------------------


def test_the_checks_catch_a_renamed_setting_or_option():
    """A setting or an option renamed in the code, infra/ unchanged: the checks above fail."""

    class Renamed(BaseSettings):
        model_config = WorkerSettings.model_config
        grace_period_seconds: float = 30.0

    assert unknown_settings({"JOBS_GRACE_SECONDS"}, Renamed) == {"JOBS_GRACE_SECONDS"}
    assert not unknown_settings({"JOBS_GRACE_SECONDS"}, WorkerSettings)

    renamed = typer.Typer()

    @renamed.command()
    def run(target: str, use_cases: Annotated[list[str], typer.Option("--use-cases")]) -> None:
        pass

    @renamed.command()
    def check() -> None:
        pass

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(CLIS, "jobs-worker", renamed)
        with pytest.raises(AssertionError, match="--use-case"):
            parse_cli("jobs-worker", compose_command(SERVICES["worker"]))
    parse_cli("jobs-worker", compose_command(SERVICES["worker"]))
