"""Saying so when a model is given images unlike those it learnt from: its reconstruction is far
from the input. The bundled model knows only the built-in shapes; a photograph comes back as a
smear of colours, and without a word a user takes that for what COMiT does."""

from __future__ import annotations

import torch

# Measured with the bundled model at the CLI's defaults (adaptive policy, 3 crops, 10 Euler steps,
# guidance 7.5; 2026-12-07, docs/results/photo-fit-val-2026-12-07): its 6 shapes samples 18.8-23.4 dB, 7 of 8
# scikit-image photographs 8.3-14.8 dB (the deep field, mostly black, 22.6 dB: painted back as black).
# Not a clean cut: 9 of 512 shapes val images fall below it too (lowest 13.66 dB), false alarms.
POOR_PSNR_DB = 16.0


class PoorFitWarning(UserWarning):
    """Reconstructions far from their inputs: images unlike those the model was trained on."""


def poor_fit_message(psnr: torch.Tensor, names: list[str] | None = None, training_data: str | None = None) -> str | None:
    """One line when some reconstructions fall below ``POOR_PSNR_DB``, else None."""
    poor = psnr < POOR_PSNR_DB
    if not bool(poor.any()):
        return None
    worst = int(psnr.argmin())
    which = f", {names[worst]}" if names else ""
    trained = f"this model was trained on {training_data}" if training_data else \
        "is this model trained on images like these?"
    return (f"{int(poor.sum())} of {len(psnr)} reconstructions are poor (PSNR below {POOR_PSNR_DB:g} dB against the "
            f"input; worst {float(psnr[worst]):.1f} dB{which}): {trained}; photographs need a model trained on "
            "photographs, such as a released checkpoint (README, \"Your photos\")")
