"""Options dataclasses from plain mappings (a YAML section, `key=value` overrides, JSON).

One helper for every "dataclass from a dict" in the project, so an unknown or misspelt key
fails the same way everywhere: one line naming the section, the key, the closest valid key
and the valid keys, before any work starts.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


class OptionsError(ValueError):
    """An option is unknown, or its section is not a mapping."""


def check_keys(keys: Any, valid: Any, section: str) -> None:
    """Raise OptionsError naming the first key of `keys` that is not in `valid`."""
    valid = sorted(valid)
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise OptionsError(f"{section}: unknown option {key!r}{hint}; valid: {', '.join(map(str, valid)) or 'none'}")


def option_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def from_mapping(cls: type[T], mapping: Mapping[str, Any] | None, section: str, **fixed: Any) -> T:
    """`cls(**mapping, **fixed)` after checking every key of `mapping` is a field of `cls`.

    `section` names where the mapping came from ("extract", "data_options", ...) in the error.
    Values are passed as they are: type checks that need the field's meaning stay in the
    dataclass's `__post_init__`.
    """
    mapping = {} if mapping is None else mapping
    if not isinstance(mapping, Mapping):
        raise OptionsError(f"{section}: expected a mapping of options, got {type(mapping).__name__} {mapping!r}")
    check_keys(mapping, option_names(cls), section)
    try:
        return cls(**{**mapping, **fixed})
    except TypeError as exc:  # e.g. a required field left out
        raise OptionsError(f"{section}: {exc}") from None
