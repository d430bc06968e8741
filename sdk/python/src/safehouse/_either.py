"""Methods callable on the class with a sandbox id and on an instance, as E2B's SDK has them:
`Sandbox.kill("sb_...")` and `sbx.kill()`."""
from __future__ import annotations

import functools
from typing import Any, Callable, Generic, Optional, TypeVar, overload

R_cls = TypeVar("R_cls")
R_inst = TypeVar("R_inst")


class either(Generic[R_cls, R_inst]):
    """A descriptor: looked up on the class it is ON_CLASS (a plain function whose first
    argument is the sandbox id), on an instance it is ON_INSTANCE bound to it."""

    def __init__(self, on_class: Callable[..., R_cls], on_instance: Callable[..., R_inst]) -> None:
        self._on_class = on_class
        self._on_instance = on_instance
        self.__doc__ = on_instance.__doc__

    @overload
    def __get__(self, obj: None, owner: Optional[type] = None) -> Callable[..., R_cls]: ...

    @overload
    def __get__(self, obj: object, owner: Optional[type] = None) -> Callable[..., R_inst]: ...

    def __get__(self, obj: Any, owner: Optional[type] = None) -> Callable[..., Any]:
        if obj is None:
            return self._on_class
        return functools.partial(self._on_instance, obj)
