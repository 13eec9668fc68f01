"""The one registry of metrics: every ``MetricSpec`` the metric modules declare.

Each family's metrics are declared beside their computation (``reconstruction.RECON_METRICS``,
``alignment.ALIGN_METRICS``, ``probe_tasks.PROBE_METRICS``); reports, the suite, the crop curves
and the experiment tables look a key's label, direction and floor up here instead of
repeating them.
"""

from __future__ import annotations

from collections.abc import Iterable

from .alignment import ALIGN_METRICS
from .probe_tasks import PROBE_METRICS
from .reconstruction import RECON_METRICS
from .spec import MetricSpec

FAMILIES: dict[str, tuple[MetricSpec, ...]] = {"recon": RECON_METRICS, "align": ALIGN_METRICS,
                                               "probe": PROBE_METRICS}


def _collect(families: dict[str, tuple[MetricSpec, ...]]) -> dict[str, MetricSpec]:
    """Key -> spec; a key two families declare (the image count) must mean the same in both."""
    registry: dict[str, MetricSpec] = {}
    for specs in families.values():
        for spec in specs:
            if registry.setdefault(spec.key, spec) != spec:
                raise ValueError(f"metric {spec.key!r} is declared twice, differently")
    return registry


METRICS: dict[str, MetricSpec] = _collect(FAMILIES)


def spec(key: str) -> MetricSpec:
    """The declaration of metric ``key``; an undeclared key is a bug in the evaluation code."""
    try:
        return METRICS[key]
    except KeyError:
        raise KeyError(f"metric {key!r} is not declared (comit.metrics.registry)") from None


def headline(keys: Iterable[str]) -> list[str]:
    """The headline metrics among ``keys``, in their order (the suite report's rows)."""
    return [key for key in keys if spec(key).headline]


def curve_metrics(family: str) -> list[str]:
    """The headline scores of ``family``: what each point of the crop curves reports (chance
    levels are left out: random maps do not look at the crops)."""
    return [s.key for s in FAMILIES[family] if s.headline and s.higher_is_better is not None]


def compared(family: str) -> list[MetricSpec]:
    """The metrics of ``family`` that the experiments compare between arms, in declared order."""
    return [s for s in FAMILIES[family] if s.compared]
