"""Name -> object registries shared by the CLI, config files and sweeps.

:meth:`Registry.create` builds an entry from user-given parameters (``update:k=5``):
unknown parameters and values of the wrong type raise :class:`ParameterError`, one line
that lists the entry's valid parameters with their types and defaults, for every
registry (scores, policies, featurizers, phi families, ...).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from leanaug.errors import LeanaugError, ParameterError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of classes or factories.

    >>> SCORES = Registry("score")
    >>> @SCORES.register("loss")
    ... class LossScore: ...
    >>> SCORES.get("loss") is LossScore
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def unregister(self, name: str) -> T:
        """Remove and return an entry (for plug-ins and tests that register temporarily)."""
        self.get(name)  # same error for an unknown name
        return self._items.pop(name)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(self.names()) or "(none registered)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    # -- parameters ---------------------------------------------------------------------
    def parameters(self, name: str, skip: int = 0) -> list[inspect.Parameter]:
        """The keyword parameters of entry ``name`` (after ``skip`` positional ones)."""
        params = _signature(self.get(name)).parameters.values()
        named = [
            p
            for p in params
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"
        ]
        return named[skip:]

    def describe(self, name: str, skip: int = 0) -> str:
        """``"k: int | None = None, mode: str = 'proportional'"`` (for error messages)."""
        items = [_describe(p) for p in self.parameters(name, skip)]
        return ", ".join(items) or "(none)"

    def check_params(
        self, name: str, params: Mapping[str, Any] | None = None, skip: int = 0
    ) -> dict[str, Any]:
        """``params`` checked against entry ``name``'s signature, values converted to the
        annotated types (``"1e-3"`` for a float, ``40.0`` for an int); raises
        :class:`ParameterError` naming the parameter and listing the valid ones."""
        obj = self.get(name)
        params = dict(params or {})
        accepted = {p.name: p for p in self.parameters(name, skip)}
        takes_any = any(p.kind == p.VAR_KEYWORD for p in _signature(obj).parameters.values())
        hints = _hints(obj)
        out: dict[str, Any] = {}
        for key, value in params.items():
            if key not in accepted:
                if takes_any:
                    out[key] = value
                    continue
                raise ParameterError(
                    f"{self.kind} {name!r}: unknown parameter {key!r}; "
                    f"valid parameters: {self.describe(name, skip)}"
                )
            try:
                out[key] = _coerce(value, hints.get(key, inspect.Parameter.empty))
            except _BadValue as exc:
                raise ParameterError(
                    f"{self.kind} {name!r}: {key}={value!r} is not {exc}; "
                    f"valid parameters: {self.describe(name, skip)}"
                ) from None
        return out

    def create(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        *args: Any,
        context: Mapping[str, Any] | None = None,
    ) -> Any:
        """``get(name)(*args, **params)`` with the parameters checked (:meth:`check_params`).

        ``args`` are positional values the caller supplies (not user parameters);
        ``context`` holds defaults passed only where the entry accepts them and
        ``params`` does not set them (a run's ``seed``, ``device``).
        """
        obj = self.get(name)
        kwargs = self.check_params(name, params, skip=len(args))
        accepted = {p.name for p in self.parameters(name, len(args))}
        for key, value in (context or {}).items():
            if key in accepted and key not in kwargs:
                kwargs[key] = value
        try:
            return obj(*args, **kwargs)  # type: ignore[operator]
        except LeanaugError:
            raise
        except (TypeError, ValueError) as exc:
            raise ParameterError(
                f"{self.kind} {name!r}: bad parameters {dict(params or {})}: {exc}; "
                f"valid parameters: {self.describe(name, len(args))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


# -- parameter helpers ------------------------------------------------------------------
def _signature(obj: Any) -> inspect.Signature:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):  # builtins without a signature: accept anything
        return inspect.Signature([inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)])


def _hints(obj: Any) -> dict[str, Any]:
    """Resolved annotations of ``obj``'s parameters ({} when they cannot be resolved)."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        return typing.get_type_hints(target)
    except Exception:  # an annotation naming something not importable here: no checks
        return {}


def _describe(p: inspect.Parameter) -> str:
    text = p.name
    if p.annotation is not inspect.Parameter.empty:
        ann = p.annotation if isinstance(p.annotation, str) else _type_name(p.annotation)
        text += f": {ann}"
    if p.default is not inspect.Parameter.empty:
        text += f" = {p.default!r}"
    return text


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "None"
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


class _BadValue(Exception):
    """Carries the expected type's description, e.g. "an int"."""


_ARTICLE = {int: "an int", float: "a float", bool: "a bool (true/false)", str: "a string"}


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (int, float, bool, str, None, unions and Literals of
    them); other hints are not checked. Raises :class:`_BadValue` when it does not fit."""
    if hint is inspect.Parameter.empty or hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:  # an exact match first, so 1 stays an int for int | float
            if option in _ARTICLE and type(value) is option:
                return value
        wanted = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option)
            except _BadValue as exc:
                wanted.append(str(exc))
        if type(None) in options:
            wanted.append("none")
        raise _BadValue(" or ".join(wanted))
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value in choices:
            return value
        raise _BadValue("one of " + ", ".join(repr(c) for c in choices))
    if hint not in _ARTICLE:
        return value  # containers, classes: left to the entry itself
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif isinstance(value, bool) or value is None:
        pass
    elif hint is str:
        if isinstance(value, str | int | float):
            return str(value)
    elif hint is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
    elif hint is float:
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
    raise _BadValue(_ARTICLE[hint])
