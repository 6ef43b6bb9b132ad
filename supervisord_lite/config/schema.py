"""How a setting is declared: once, on its dataclass field, with everything about it.

``timeout: float = setting(30.0, seconds(), "Seconds to wait ...")`` gives the key
(the field's name), the type (the validator's doc name), the default, the
validator and the doc in one place; :func:`settings` lists a section's
declarations for the parser's generic walk and for the generated reference.
A field without a declaration (``AppConfig.name``, ``listen_shared``) is not a
YAML key: the parser fills it in. A section's cross-setting rules (``backoff.max
>= backoff.initial``) are :class:`Rules`, registered per section class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .validators import Context, Validator
from .yaml_reader import Value

SECTION = "section"


@dataclass(frozen=True)
class _Spec:
    """What a field's metadata holds: the declaration minus its key and default."""

    validator: Validator | None
    section: type[Any] | None
    doc: str
    nullable: bool
    required: bool
    phase: int
    shown_default: str | None


@dataclass(frozen=True)
class Setting:
    """One declared setting of one section.

    ``nullable``: null gives None (else null goes to the validator, which rejects
    it or maps it to the default). ``phase``: 0 is read before the section's other
    keys (their checks depend on it), 1 in file order, 2 after them, even when
    absent (a section whose default depends on the others). ``shown_default``
    replaces the default in the docs when it is computed (the state dir).
    """

    key: str
    validator: Validator | None
    section: type[Any] | None
    default: Any
    doc: str
    nullable: bool = False
    required: bool = False
    phase: int = 1
    shown_default: str | None = None

    @property
    def type(self) -> str:
        base = SECTION if self.validator is None else self.validator.type
        return base + (" or null" if self.nullable else "")


def setting(
    default: Any,
    validator: Validator | type[Any],
    doc: str,
    *,
    factory: bool = False,
    nullable: bool = False,
    required: bool = False,
    phase: int = 1,
    shown_default: str | None = None,
) -> Any:
    """Declare the setting of this field; ``validator`` is a section class for a section.

    ``factory``: ``default`` is called for each new object (a mutable or computed
    default), as dataclasses' ``default_factory``.
    """
    section = None if isinstance(validator, Validator) else validator
    spec = _Spec(
        validator if isinstance(validator, Validator) else None,
        section,
        doc,
        nullable,
        required,
        phase,
        shown_default,
    )
    metadata = {"setting": spec}
    if factory:
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def settings(cls: type[Any]) -> tuple[Setting, ...]:
    """The declared settings of a section class, in declaration order (computed once)."""
    cached = _SETTINGS.get(cls)
    if cached is not None:
        return cached
    out: list[Setting] = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("setting")
        if spec is None:
            continue
        default = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        out.append(
            Setting(
                f.name,
                spec.validator,
                spec.section,
                default,
                spec.doc,
                spec.nullable,
                spec.required,
                spec.phase,
                spec.shown_default,
            )
        )
    _SETTINGS[cls] = tuple(out)
    return _SETTINGS[cls]


_SETTINGS: dict[type[Any], tuple[Setting, ...]] = {}


Shortcut = Callable[[Value], Any]
Finish = Callable[[Context, Value | None, dict[str, Any], dict[str, Value]], None]


@dataclass(frozen=True)
class Rules:
    """A section's rules beyond each setting's own validator.

    ``shortcut``: a value for the whole section written as something other than a
    mapping (``reload: swap``, ``http: null``), or None to read it as a mapping.
    ``finish``: checks and fills in across the settings read (``kw``), given the
    section's value and its entries for the lines of error messages.
    """

    shortcut: Shortcut | None = None
    finish: Finish | None = None
