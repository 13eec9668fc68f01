"""How a metric is declared: its key, label, direction and the chance level it must beat.

Each metric module declares its numbers next to their computation as ``MetricSpec``s;
``comit.metrics.registry`` collects them into the one registry that reports, the suite and the
experiment tables read (so a key, its label and its direction are written down once).
"""

from __future__ import annotations

from dataclasses import dataclass

# A probe's chance level is not a metric of its own: it is what always answering the most
# frequent test label(s) scores, read from the probe's row.
MAJORITY = "majority"
# Nor is its ceiling: what the same probe scores reading the positive control, the true scene
# written as tokens (``comit.metrics.probe_controls``), read from the control's row.
SCENE = "scene"


@dataclass(frozen=True)
class MetricSpec:
    """One number an evaluation reports.

    ``higher_is_better`` is None for counts and chance levels (nothing to win); ``floor`` names
    the chance level to beat: another key of the same results, or ``MAJORITY`` for probes;
    ``ceiling`` the score of a representation that certainly holds the answer, where the metric
    has one: another key of the same results (alignment: the object masks as maps), or ``SCENE``
    for probes.
    ``headline``: shown in the suite report and measured at every point of the crop curves.
    ``compared``: a row of the experiments' arm table, labelled ``table_label`` there (a
    shorter wording that the committed experiment reports use; ``label`` where it is None).
    """

    key: str
    label: str
    higher_is_better: bool | None = True
    floor: str | None = None
    ceiling: str | None = None
    headline: bool = False
    compared: bool = False
    table_label: str | None = None

    @property
    def arm_label(self) -> str:
        return self.table_label or self.label


# Declared here because recon and alignment both count their images.
NUM_IMAGES = MetricSpec("num_images", "images", higher_is_better=None)
