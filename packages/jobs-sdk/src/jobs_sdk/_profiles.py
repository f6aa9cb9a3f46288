"""Where the `jobs` command finds its server and token.

First match wins, per setting: --url / --token; the profile named by --profile or JOBS_PROFILE;
JOBS_URL / JOBS_TOKEN; the `default` profile. Profiles live in a TOML file,
$JOBS_PROFILES_FILE, else $XDG_CONFIG_HOME/jobs/profiles.toml (~/.config/jobs/...):

    [default]
    url = "http://127.0.0.1:8000"
    token = "tok-acme"

    [prod]
    url = "https://jobs.internal"
    token_env = "PROD_JOBS_TOKEN"   # read the token from this variable, not the file
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Connection", "ProfileError", "profiles_path", "resolve"]

_KEYS = {"url", "token", "token_env"}


class ProfileError(ValueError):
    """The settings are missing or the profiles file is wrong; the message says how to fix it."""


@dataclass(frozen=True)
class Connection:
    url: str
    token: str


def profiles_path(environ: Mapping[str, str]) -> Path:
    if environ.get("JOBS_PROFILES_FILE"):
        return Path(environ["JOBS_PROFILES_FILE"])
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "jobs" / "profiles.toml"


def resolve(
    *,
    url: str | None,
    token: str | None,
    profile: str | None,
    environ: Mapping[str, str] = os.environ,
) -> Connection:
    path = profiles_path(environ)
    named = profile or environ.get("JOBS_PROFILE")
    chosen = _profile(path, named, environ, required=True) if named else {}
    fallback = {} if named else _profile(path, "default", environ, required=False)
    env = {"url": environ.get("JOBS_URL"), "token": environ.get("JOBS_TOKEN")}
    found = {
        key: given or chosen.get(key) or env[key] or fallback.get(key)
        for key, given in (("url", url), ("token", token))
    }
    missing = [key for key, value in found.items() if not value]
    if missing:
        raise ProfileError(
            f"no {' and no '.join(missing)}: pass --{missing[0]}, set JOBS_{missing[0].upper()}, "
            f"or write a [default] profile with url and token in {path}"
        )
    return Connection(url=str(found["url"]), token=str(found["token"]))


def _profile(
    path: Path, name: str, environ: Mapping[str, str], *, required: bool
) -> dict[str, str]:
    profiles = _read(path, required=required)
    if name not in profiles:
        if required:
            known = ", ".join(sorted(profiles)) or "none"
            raise ProfileError(f"no profile {name!r} in {path} (profiles: {known})")
        return {}
    return _checked(path, name, profiles[name], environ)


def _read(path: Path, *, required: bool) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        if required:
            raise ProfileError(
                f"no profiles file at {path}: create it, or set JOBS_PROFILES_FILE"
            ) from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"cannot read the profiles file {path}: {exc}") from exc


def _checked(path: Path, name: str, entry: object, environ: Mapping[str, str]) -> dict[str, str]:
    where = f"profile {name!r} in {path}"
    if not isinstance(entry, dict):
        raise ProfileError(f"{where} must be a table: [{name}] with url and token")
    unknown = sorted(set(entry) - _KEYS)
    if unknown or not all(isinstance(v, str) for v in entry.values()):
        raise ProfileError(f"{where}: only url, token and token_env, as strings (got {unknown})")
    values = dict(entry)
    token_env = values.pop("token_env", None)
    if token_env is not None:
        if not environ.get(token_env):
            raise ProfileError(f"{where} reads its token from {token_env}, which is not set")
        values["token"] = environ[token_env]
    return values
