"""The one progress bar of adamlab: :func:`progress` wraps tqdm when it is installed and wanted, and is a silent
stand-in otherwise (tqdm is an optional dependency, the ``lab`` extra).

Used by the data downloads (bytes), the lab's runner (runs) and the theory's online runs (rounds).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["NullBar", "progress"]


class NullBar:
    """What :func:`progress` returns when disabled: the methods of a tqdm bar used in adamlab, doing nothing."""

    def __init__(self, iterable: Iterable[Any] | None = None) -> None:
        self._iterable = iterable

    def __iter__(self):
        return iter(self._iterable if self._iterable is not None else ())

    def __enter__(self) -> NullBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        pass

    def set_description(self, desc: str | None = None) -> None:
        pass

    def set_postfix_str(self, s: str = "") -> None:
        pass

    def close(self) -> None:
        pass


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: float | None = None,
    desc: str = "",
    enabled: bool = True,
    **options: Any,
) -> Any:
    """A tqdm bar over ``iterable`` (or counting to ``total``) if ``enabled`` and tqdm is installed, else a
    :class:`NullBar`. ``options`` go to tqdm (``unit``, ``leave``, ``unit_scale``, …)."""
    if not enabled:
        return NullBar(iterable)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return NullBar(iterable)
    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, **options)
