"""Command-line options shared by the `comit` sub-commands (tokens, eval, viz, train...), defined once.

A module of its own, imported by each command group, so that none of them imports another's.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..model.policy_names import POLICY_NAMES

DEFAULT_MODEL = "bundled"
DEFAULT_NUM_CROPS = 3  # what --num-crops means when left out with a named order (a list: all of it)
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Checkpoint directory, hub id, or 'bundled'.")]
RevisionOption = Annotated[Optional[str], typer.Option("--revision", help="Hub revision (branch, tag or commit) of a hub id.")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto (a GPU when there is one, else the CPU), cpu, cuda, cuda:1, ...")]
OrderOption = Annotated[str, typer.Option("--order", help=" | ".join(POLICY_NAMES) + " | comma list, e.g. 4,1,7.")]
GlobalCropOption = Annotated[bool, typer.Option("--global-crop/--no-global-crop", help="Observe the whole image first.")]
StepsOption = Annotated[int, typer.Option("--steps", help="Decoding steps.")]
CfgOption = Annotated[float, typer.Option("--cfg", help="Guidance weight (0 or 1: no guidance pass).")]
SolverOption = Annotated[str, typer.Option("--solver", help="euler | heun | midpoint.")]
BatchOption = Annotated[int, typer.Option("--batch-size", help="Images per batch.")]
PrecisionOption = Annotated[str, typer.Option("--precision", help="fp32 | bf16 (autocast: faster where the GPU/CPU has bf16 units; not bit-exact).")]
CompileOption = Annotated[bool, typer.Option("--compile", help="torch.compile the transformer (worth it for long runs).")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed for noise, random orders and VAE sampling.")]
NumCropsOption = Annotated[Optional[int], typer.Option("--num-crops", help=f"Crops to observe (default: {DEFAULT_NUM_CROPS}; all for a list).")]
