"""How an evaluation's result is shaped: each evaluation returns an ``EvalResult`` subclass, typed
fields in memory, ``to_json()`` giving the very dict written to ``results.json`` and ``from_json``
reading it back. (What each number means is declared in ``comit.metrics``.)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="EvalResult")


@dataclass(kw_only=True)
class EvalResult:
    """Notes on what could not be measured and the settings an evaluation ran with; once a
    command or the experiment runner has run it, also the model, the data and the provenance.

    Subclasses add their numbers as fields; ``BODY`` lists them in the order ``results.json``
    shows them (between ``data`` and ``notes``), so the files keep their layout.
    """

    BODY: ClassVar[tuple[str, ...]] = ()

    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    data: str | None = None
    run: dict[str, Any] | None = None

    def finished(self: R, model: str, data: str, run: dict[str, Any]) -> R:
        """This result with what ran it (the provenance a report ends with)."""
        return replace(self, model=model, data=data, run=run)

    def to_json(self) -> dict[str, Any]:
        """The ``results.json`` mapping; model, data and run only once known."""
        head = {k: getattr(self, k) for k in ("model", "data") if getattr(self, k) is not None}
        body = {k: getattr(self, k) for k in self.BODY}
        run = {"run": self.run} if self.run is not None else {}
        return {**head, **body, "notes": self.notes, "settings": self.settings, **run}

    @classmethod
    def from_json(cls: type[R], data: dict[str, Any]) -> R:
        """A result read back from ``results.json`` (keys it does not know are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
