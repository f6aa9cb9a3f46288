"""The handler registry. Every check runs when a handler is registered (at import), so a
duplicate name or a signature the runtime cannot call fails at start-up, not at the first job."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from pydantic import BaseModel, ValidationError

from jobs_sdk import Task
from jobs_worker.context import JobContext
from jobs_worker.errors import ConfigError, PermanentFailure, RegistrationError

__all__ = ["Handler", "InvalidPayload", "Registry", "load_registry"]

F = TypeVar("F", bound=Callable[..., Any])
P = TypeVar("P", bound=BaseModel)
R = TypeVar("R")
Rest = ParamSpec("Rest")
# A handler of a Task[P]: mypy checks that it takes a P first.
TaskHandler = Callable[Concatenate[P, Rest], R]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_MAX_NAME = 200


class InvalidPayload(PermanentFailure):
    """The payload does not match the handler's model; retrying cannot help."""


@dataclass(frozen=True, slots=True)
class Handler:
    name: str
    func: Callable[..., Any]
    payload_model: type[BaseModel]
    wants_context: bool
    is_async: bool
    task: Task[Any] | None = None

    def parse(self, payload: dict[str, Any]) -> BaseModel:
        try:
            return self.payload_model.model_validate(payload)
        except ValidationError as exc:
            raise InvalidPayload(_describe(self, exc)) from None

    def arguments(self, payload: BaseModel, ctx: JobContext) -> tuple[Any, ...]:
        return (payload, ctx) if self.wants_context else (payload,)


def _describe(handler: Handler, exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(payload)'}: {e['msg']}" for e in exc.errors()[:5]
    )
    more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return (
        f"invalid payload for {handler.name!r} ({handler.payload_model.__name__}): {problems}{more}"
    )


class Registry:
    """Maps job types to handlers.

    registry = Registry()

    @registry.handler("notifications.send_email")
    async def send_email(payload: SendEmail, ctx: JobContext) -> dict[str, str]: ...

    @registry.task(send_email_task)  # a jobs_sdk.Task: its job type and payload model
    async def send_email(payload: SendEmail, ctx: JobContext) -> dict[str, str]: ...
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def handler(self, name: str) -> Callable[[F], F]:
        """Register the decorated function for job type `name`; the function is returned
        unchanged, so it can still be called directly."""

        def register(func: F) -> F:
            # the decorating scope's names, so that string annotations (from __future__
            # import annotations) of models defined in a function resolve, as pydantic does
            caller = sys._getframe(1).f_locals
            self.register(name, func, localns=dict(caller))
            return func

        return register

    def task(self, task: Task[P]) -> Callable[[TaskHandler[P, Rest, R]], TaskHandler[P, Rest, R]]:
        """Register the decorated function as the handler of `task` (a jobs_sdk.Task): its
        job type, and a payload annotation that must be the task's model."""

        def register(func: TaskHandler[P, Rest, R]) -> TaskHandler[P, Rest, R]:
            caller = sys._getframe(1).f_locals
            self.register(task, func, localns=dict(caller))
            return func

        return register

    def register(
        self,
        job_type: str | Task[Any],
        func: Callable[..., Any],
        *,
        localns: dict[str, Any] | None = None,
    ) -> Handler:
        """Register `func` for a job type, or for a Task (checking its payload model)."""
        task = job_type if isinstance(job_type, Task) else None
        name = job_type.job_type if isinstance(job_type, Task) else job_type
        _check_name(name)
        if name in self._handlers:
            raise RegistrationError(
                f"job type {name!r} already has a handler "
                f"({_qualname(self._handlers[name].func)}); cannot register {_qualname(func)}"
            )
        handler = inspect_handler(name, func, localns=localns)
        if task is not None:
            handler = _bind_task(handler, task)
        self._handlers[name] = handler
        return handler

    def include(self, other: Registry) -> None:
        """Add every handler of `other` (e.g. one registry per module)."""
        for h in other:
            self.register(h.task or h.name, h.func)

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Iterator[Handler]:
        return iter(list(self._handlers.values()))

    def __len__(self) -> int:
        return len(self._handlers)


def _qualname(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", "?")
    return f"{module}.{getattr(func, '__qualname__', repr(func))}"


def _bind_task(handler: Handler, task: Task[Any]) -> Handler:
    if handler.payload_model is not task.payload_model:
        raise RegistrationError(
            f"handler {handler.name!r} ({_qualname(handler.func)}) takes a "
            f"{handler.payload_model.__name__} payload, but its task's payload model is "
            f"{task.payload_model.__name__}: annotate the payload as {task.payload_model.__name__}"
        )
    return dataclasses.replace(handler, task=task)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME or name != name.strip():
        raise RegistrationError(
            f"handler name {name!r} is not a job type: use 1-{_MAX_NAME} characters, "
            "e.g. 'notifications.send_email'"
        )


def inspect_handler(
    name: str, func: Callable[..., Any], *, localns: dict[str, Any] | None = None
) -> Handler:
    """Check that the runtime can call `func(payload)` or `func(payload, ctx)`."""
    where = f"handler {name!r} ({_qualname(func)})"
    if not callable(func):
        raise RegistrationError(f"{where} is not callable")
    if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
        raise RegistrationError(f"{where} is a generator; a handler returns its result")
    params = _required_positional(where, func)
    hints = _type_hints(where, func, localns)
    model = _payload_model(where, params[0], hints)
    if len(params) == 2:
        _check_context(where, params[1], hints)
    return Handler(
        name=name,
        func=func,
        payload_model=model,
        wants_context=len(params) == 2,
        is_async=inspect.iscoroutinefunction(func),
    )


def _required_positional(where: str, func: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise RegistrationError(f"{where}: cannot read its signature ({exc})") from exc
    for p in params:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise RegistrationError(
                f"{where}: *args/**kwargs are not supported; take (payload, ctx)"
            )
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is p.empty:
            raise RegistrationError(
                f"{where}: keyword-only parameter {p.name!r} has no default; "
                "the runtime passes only (payload, ctx)"
            )
    positional = [p for p in params if p.kind in _POSITIONAL]
    required = [p for p in positional if p.default is p.empty]
    if not 1 <= len(required) <= 2:
        raise RegistrationError(
            f"{where} takes {len(required)} required parameters "
            f"({', '.join(p.name for p in required) or 'none'}); "
            "a handler takes (payload: SomeModel, ctx: JobContext)"
        )
    return required


def _type_hints(
    where: str, func: Callable[..., Any], localns: dict[str, Any] | None
) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func, localns=localns)
    except Exception as exc:  # any error evaluating annotations means we cannot check them
        raise RegistrationError(f"{where}: cannot resolve its annotations ({exc})") from exc


def _payload_model(where: str, param: inspect.Parameter, hints: dict[str, Any]) -> type[BaseModel]:
    model = hints.get(param.name)
    if model is None:
        raise RegistrationError(
            f"{where}: annotate parameter {param.name!r} with a pydantic model "
            "(the payload is validated against it)"
        )
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise RegistrationError(
            f"{where}: parameter {param.name!r} is annotated {model!r}, "
            "which is not a pydantic BaseModel subclass"
        )
    return model


def _check_context(where: str, param: inspect.Parameter, hints: dict[str, Any]) -> None:
    hint = hints.get(param.name)
    if hint is None or hint is Any:
        return
    if not (isinstance(hint, type) and issubclass(hint, JobContext)):
        raise RegistrationError(
            f"{where}: second parameter {param.name!r} is annotated {hint!r}; "
            "the runtime passes a JobContext there"
        )


def load_registry(target: str) -> Registry:
    """Import `module:attribute` (from the current directory too, as uvicorn does)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{target!r} is not MODULE:REGISTRY, e.g. myapp.handlers:registry")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from exc
    registry = getattr(module, attr, None)
    if not isinstance(registry, Registry):
        found = "nothing" if registry is None else type(registry).__name__
        raise ConfigError(f"{target!r} is {found}, not a jobs_worker.Registry")
    return registry
