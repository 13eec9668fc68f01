"""COMiT: tokenize an image crop by crop into a message; detokenize it back by flow matching.

Tokenize: start from the empty message m0; for each crop c_k, encode it, run the transformer on
(latent(c_k), t = 1, message m_{k-1}, offset a_k) and quantise the queries' output to m_k. The
adaptive order picks each next crop where a one-step reconstruction from the current message is
worst. Detokenize: integrate the transformer's velocity from noise at t = 0 to a latent at
t = 1, reading the message with the decoding offset -loc(c_K), with APG guidance.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from torch import nn

from ..metrics.reconstruction import psnr_per_image
from ..progress import progress
from .autoencoders import Autoencoder, PixelAutoencoder, SDVAE, check_autoencoder, encode
from .checkpoints import HubDownload, load_model, save_model
from .config import AutoencoderConfig, ModelConfig
from .conv_autoencoder import ConvAutoencoder
from .crops import CropGrid, step_offsets, tokens_inside
from .fit import PoorFitWarning, poor_fit_message
from .fsq import FSQ
from .guidance import check_guidance, guided_velocity
from .model_card import DEFAULT_LICENSE, LIBRARY_NAME, MODEL_CARD_NAME, PAPER_URL, TAGS, model_card, save_card
from .policies import ADAPTIVE, CropPlan, CropPolicy, CropStep, parse_policy
from .solvers import evaluation_times, integrate
from .transformer import ConditioningTable, Transformer

# Where the adaptive policy measures reconstruction error (see COMiT.tokenize).
ERROR_SIGNALS = ("pixels", "latent")
# Resampling (bicubic, Lanczos) overshoots [-1, 1] a little; pixels left in 0..255 overshoot by far.
IMAGE_RANGE_SLACK = 0.1


@dataclass
class Tokens:
    """The result of :meth:`COMiT.tokenize`.

    messages: [B, M, D] FSQ codes in [-1, 1].
    offsets: [B, 2] decoding offsets (-location of each image's last crop).
    ids: [B, M] int64 token ids.
    crop_order: [K, B] int64 crop indices used, in order (index 0 is the global crop when
        ``global_crop``); -1 where an image stopped early under an error budget.
    num_crops: [B] int64 crops each image actually used.
    global_crop: whether the index space includes the global crop.
    """

    messages: torch.Tensor
    offsets: torch.Tensor
    ids: torch.Tensor
    crop_order: torch.Tensor
    num_crops: torch.Tensor
    global_crop: bool = False

    def to(self, device) -> "Tokens":
        return replace(self, **{f.name: getattr(self, f.name).to(device)
                                for f in fields(self) if torch.is_tensor(getattr(self, f.name))})

    def __len__(self) -> int:
        return self.messages.shape[0]

    @classmethod
    def cat(cls, parts: Sequence["Tokens"]) -> "Tokens":
        """Batches of one tokenize setting, joined (crop_order along its image axis)."""
        if not parts:
            raise ValueError("Tokens.cat needs at least one part")
        if len({part.global_crop for part in parts}) > 1 or len({part.crop_order.shape[0] for part in parts}) > 1:
            raise ValueError("Tokens.cat joins parts made with the same global_crop and number of crops")
        joined = {f.name: torch.cat([getattr(part, f.name) for part in parts], dim=1 if f.name == "crop_order" else 0)
                  for f in fields(cls) if f.name != "global_crop"}
        return cls(**joined, global_crop=parts[0].global_crop)


@dataclass
class _Reading:
    """What :meth:`COMiT.tokenize_steps` has read so far, per image.

    previous: [B, 2] location of each image's last crop (None before any); history: the crop
    indices of each step, -1 where an image had stopped; used: [B] crops read; seen: [B, N] crops
    read; active: [B] images still reading (an error budget stops them).
    """

    messages: torch.Tensor
    previous: torch.Tensor | None
    history: list[torch.Tensor]
    used: torch.Tensor
    seen: torch.Tensor
    active: torch.Tensor


@dataclass
class MessageWrite:
    """One message update: codes [B, M, D], the new message (FSQ output; tokens a local write
    leaves alone keep their previous value); raw [B, M, D], what the transformer wrote before FSQ."""

    codes: torch.Tensor
    raw: torch.Tensor


@dataclass
class ReconstructionError:
    """windows: [B, g²] mean squared error (summed over RGB) inside each local crop's window;
    mse: [B] mean squared error per pixel and channel."""

    windows: torch.Tensor
    mse: torch.Tensor


class COMiT(nn.Module, PyTorchModelHubMixin, library_name=LIBRARY_NAME, tags=list(TAGS), paper_url=PAPER_URL,
            license=DEFAULT_LICENSE):
    """The tokenizer: a shared transformer, an FSQ quantiser, an autoencoder and the crop grid.

    ``predictor`` and ``vae`` are named as in the released checkpoints, so ``state_dict()`` has
    the released layout (``predictor.*``, ``vae.vae.*`` for the SD-VAE).
    """

    def __init__(self, config: ModelConfig, autoencoder: Autoencoder | None = None):
        super().__init__()
        self.config = config
        self.training_data: str | None = None  # what it learnt from, when its provenance says (from_pretrained)
        self.predictor = Transformer(**config.predictor_kwargs())
        self.quantizer = FSQ(config.fsq_levels)
        self.crops = CropGrid(config.image_size, config.crop_size, config.grid_size)
        autoencoder = autoencoder if autoencoder is not None else build_autoencoder(config.autoencoder)
        check_autoencoder(autoencoder)
        if autoencoder.latent_channels != config.in_channels or autoencoder.downsample != config.autoencoder.factor:
            raise ValueError(f"the autoencoder gives {autoencoder.latent_channels} channels at factor "
                             f"{autoencoder.downsample}, but the model expects {config.in_channels} at factor "
                             f"{config.autoencoder.factor}")
        if isinstance(autoencoder, nn.Module):
            self.vae = autoencoder
        else:  # a plain object following the protocol: keep it out of the module tree
            object.__setattr__(self, "vae", autoencoder)

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, autoencoder: Autoencoder | None = None,
                        attention: str | None = None, device: str | torch.device | None = None, *,
                        revision: str | None = None, cache_dir: str | Path | None = None,
                        token: str | bool | None = None, local_files_only: bool = False,
                        force_download: bool = False) -> "COMiT":
        """Load ``"bundled"``, a checkpoint directory or a hub id, in this project's format or the released one.

        Released checkpoints get ``attention="released"`` unless told otherwise. ``autoencoder``
        replaces the stored VAE (its weights are then ignored). ``revision``, ``cache_dir``,
        ``token``, ``local_files_only`` and ``force_download`` go to ``huggingface_hub`` for hub ids.
        """
        download = HubDownload(revision=revision, cache_dir=cache_dir, token=token,
                               local_files_only=local_files_only, force_download=force_download)
        return load_model(cls, pretrained_model_name_or_path, autoencoder=autoencoder, attention=attention,
                          device=device, download=download)

    def save_pretrained(self, save_directory: str | Path, *, dtype: torch.dtype | None = None,
                        config: None = None, repo_id: str | None = None, push_to_hub: bool = False,
                        model_card_kwargs: dict | None = None, **push_to_hub_kwargs):
        """Write ``config.json``, ``model.safetensors`` (each atomically) and a model card
        (``README.md``, unless one is there) to ``save_directory``; returns the directory, or the
        commit URL with ``push_to_hub=True``.

        ``dtype=torch.float16`` halves the file (weights are cast back on loading).
        ``model_card_kwargs``: ``provenance`` (how it was trained), ``metrics`` (name -> value),
        ``license`` (default Apache-2.0, as models trained by this library), ``repo_id``.
        """
        if config is not None:
            raise TypeError("COMiT saves its own ModelConfig; save_pretrained takes no config=")
        directory = save_model(self, save_directory, dtype=dtype)
        if not (directory / MODEL_CARD_NAME).exists():
            save_card(directory, self.generate_model_card(**{"repo_id": repo_id, **(model_card_kwargs or {})}))
        if push_to_hub:
            return self.push_to_hub(repo_id or directory.name, model_card_kwargs=model_card_kwargs,
                                    **push_to_hub_kwargs)
        return directory

    def generate_model_card(self, provenance: dict | None = None, metrics: dict | None = None,
                            license: str = DEFAULT_LICENSE, repo_id: str | None = None) -> ModelCard:
        return model_card(self.config, provenance=provenance, metrics=metrics, license=license, repo_id=repo_id)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.predictor.pos_embed.device

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    def empty_message(self, batch_size: int) -> torch.Tensor:
        """m0: the message before any crop, also the unconditional input for guidance."""
        return self.quantizer.empty_message(batch_size, self.config.num_msg_tokens, device=self.device)

    def latent_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        size = self.config.latent_size
        return (batch_size, self.config.in_channels, size, size)

    # ------------------------------------------------------------------ tokenize
    @torch.inference_mode()
    def tokenize(self, images: torch.Tensor, global_crop: bool = False, order: str | Sequence | CropPolicy = ADAPTIVE,
                 num_crops: int | None = 3, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, resume: Tokens | None = None,
                 error_budget: float | None = None, error_signal: str = "pixels") -> Tokens:
        """Write a message for each image by observing ``num_crops`` crops in ``order``.

        Args:
            images: [B, 3, S, S] in [-1, 1], S = ``config.image_size``.
            global_crop: include the whole image as crop index 0 (visited first by named orders).
            order: a crop policy: its name, a list of crop indices, one list per image, or a
                :class:`~comit.model.policies.CropPolicy` (see ``comit.model.policies``).
            num_crops: crops to observe (None: all of the order). With ``resume``: crops to ADD.
            noise: [B, C, h, w] starting noise of the adaptive policy's one-step reconstructions
                (the same tensor at every step); drawn from ``generator`` when None.
            generator: randomness for noise, random orders and VAE posterior samples.
            resume: continue these tokens with more crops (same images, same ``global_crop``);
                crops already seen are never revisited and the prefix is never re-encoded.
            error_budget: stop adding crops to an image once the mean squared error (per pixel, in
                [-1, 1] units) of its one-step reconstruction is at most this value; images then
                use different numbers of crops (``Tokens.num_crops``).
            error_signal: where the adaptive policy measures the one-step reconstruction's error.
                "pixels" (the paper's policy): decode it and compare with the image. "latent" (a
                different, cheaper policy): compare it with the image's latent, encoded once; no
                VAE decode. Orders, and so tokens, can differ from "pixels".
        """
        return _returned(self.tokenize_steps(images, global_crop, order, num_crops, noise, generator, resume,
                                             error_budget, error_signal))

    @torch.inference_mode()
    def tokenize_steps(self, images: torch.Tensor, global_crop: bool = False,
                       order: str | Sequence | CropPolicy = ADAPTIVE, num_crops: int | None = 3,
                       noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                       resume: Tokens | None = None, error_budget: float | None = None,
                       error_signal: str = "pixels") -> Generator[Tokens, None, Tokens]:
        """:meth:`tokenize` one crop at a time, with the same arguments: yields the tokens after each
        crop (the k-th equals ``tokenize`` with ``num_crops=k``) and returns the final tokens, also
        when an error budget stops before any crop. Arguments are checked at the first ``next``."""
        self._check_error_signal(error_signal, error_budget)
        images = self._check_images(images)
        batch = images.shape[0]
        if resume is not None:
            global_crop = self._check_resume(resume, batch)
        policy = parse_policy(order)
        reading = self._start_reading(resume, batch, global_crop)
        plan = self._plan(policy, reading.seen, num_crops, global_crop, generator, resumed=resume is not None)
        track_errors = policy.reads_errors or error_budget is not None
        if track_errors and noise is None:  # drawn after the plan: random orders take the generator first
            noise = torch.randn(self.latent_shape(batch), generator=generator).to(self.device)
        if noise is not None:
            noise = self._check_noise(noise, batch)
        targets = encode(self.vae, images, generator) if track_errors and error_signal == "latent" and \
            (plan.steps > 1 or resume is not None) else None
        errors = self._one_step_errors(images, reading.messages, -reading.previous, noise, targets) \
            if track_errors and resume is not None else None
        tokens = None
        for step in range(plan.steps):
            if error_budget is not None and errors is not None:
                reading.active &= errors.mse > error_budget
                if not bool(reading.active.any()):
                    break
            windows = None if errors is None else errors.windows
            indices = policy.choose(CropStep(step, plan, self.crops, global_crop, reading.seen, windows))
            self._read(images, indices, reading, global_crop, generator)
            tokens = self._tokens(reading, global_crop)
            yield tokens
            # The last crop's errors would steer nothing; a caller that stops early never pays for them.
            errors = self._one_step_errors(images, reading.messages, -reading.previous, noise, targets) \
                if track_errors and step + 1 < plan.steps else None
        return tokens if tokens is not None else self._tokens(reading, global_crop)

    def _start_reading(self, resume: Tokens | None, batch: int, global_crop: bool) -> "_Reading":
        seen = self._seen_mask(resume, batch, global_crop)
        active = torch.ones(batch, dtype=torch.bool, device=self.device)
        if resume is None:
            return _Reading(messages=self.empty_message(batch), previous=None, history=[],
                            used=torch.zeros(batch, dtype=torch.long, device=self.device), seen=seen, active=active)
        resume = resume.to(self.device)
        return _Reading(messages=resume.messages.clone(), previous=-resume.offsets, history=list(resume.crop_order),
                        used=resume.num_crops.clone(), seen=seen, active=active)

    def _plan(self, policy: CropPolicy, seen: torch.Tensor, num_crops: int | None, global_crop: bool,
              generator: torch.Generator | None, resumed: bool) -> CropPlan:
        """The policy's schedule on this device; a resumed fixed order may not revisit a crop."""
        available = int((~seen).sum(1).min()) if resumed else None
        plan = policy.plan(self.crops, seen.shape[0], num_crops, global_crop, generator, available)
        if plan.order is None:
            return plan
        plan = replace(plan, order=plan.order.to(self.device))
        if resumed:
            self._check_plan_unseen(plan.order, seen)
        return plan

    def _read(self, images: torch.Tensor, indices: torch.Tensor, reading: "_Reading", global_crop: bool,
              generator: torch.Generator | None) -> None:
        """Observe crop ``indices`` [B] with every active image and record it in ``reading``."""
        active = reading.active
        location = self.crops.locations(indices, global_crop)
        offset = step_offsets(location, reading.previous)
        reading.messages = self._observe(images, indices, reading.messages, offset, location, global_crop,
                                         generator, active)
        reading.previous = location if reading.previous is None else \
            torch.where(active[:, None], location, reading.previous)
        reading.seen[torch.arange(images.shape[0], device=self.device)[active], indices[active]] = True
        reading.history.append(torch.where(active, indices, torch.full_like(indices, -1)))
        reading.used = reading.used + active.long()  # a new tensor: tokens already yielded keep their count

    def _tokens(self, reading: "_Reading", global_crop: bool) -> Tokens:
        batch = reading.messages.shape[0]
        crop_order = torch.stack(reading.history) if reading.history else torch.empty(0, batch, dtype=torch.long)
        return Tokens(messages=reading.messages, offsets=-reading.previous,
                      ids=self.quantizer.codes_to_indices(reading.messages), crop_order=crop_order,
                      num_crops=reading.used, global_crop=global_crop)

    def _observe(self, images: torch.Tensor, indices: torch.Tensor, messages: torch.Tensor, offset: torch.Tensor,
                 location: torch.Tensor, global_crop: bool, generator: torch.Generator | None,
                 active: torch.Tensor) -> torch.Tensor:
        """One message update per active image; global and local crops run as separate batches
        (their latents differ in size)."""
        updated = messages.clone()
        is_global = self.crops.is_global(indices, global_crop)
        for group in (is_global & active, ~is_global & active):
            if not bool(group.any()):
                continue
            pixels = images[group] if bool(is_global[group].all()) else \
                self.crops.cut(images[group], indices[group], global_crop)
            latents = encode(self.vae, pixels, generator)
            box = self.crops.box_table(global_crop).to(self.device)[indices[group]].T
            updated[group] = self.write_message(latents, messages[group], offset[group], location[group], box)
        return updated

    def write_message(self, latents: torch.Tensor, messages: torch.Tensor, offset: torch.Tensor,
                      location: torch.Tensor | None = None, box: torch.Tensor | None = None) -> torch.Tensor:
        """m_k = FSQ(transformer(latent(c_k), t = 1, m_{k-1}, a_k).new_message); ``location`` [B, 2]
        (the crop's centre) is read only by models with ``crop_patch_positions: absolute``, ``box``
        [3, B] (the crop's top, left, size in pixels) only by models whose writes are local."""
        return self.write(latents, messages, offset, location, box).codes

    def write(self, latents: torch.Tensor, messages: torch.Tensor, offset: torch.Tensor,
              location: torch.Tensor | None = None, box: torch.Tensor | None = None) -> "MessageWrite":
        """The one message update, for tokenizing and for training: the new message and the raw
        (pre-FSQ, float32 also under a bf16 autocast) values the transformer wrote."""
        t = torch.ones(latents.shape[0], device=latents.device)
        raw = self.predictor(latents, t, messages, offset, location=location).message.float()
        codes = self.quantizer(raw)
        if self.config.message_write != "replace":
            rewritten = self.rewritten_tokens(messages, box)
            codes = torch.where(rewritten[:, :, None], codes, messages.to(codes.dtype))
        return MessageWrite(codes=codes, raw=raw)

    def rewritten_tokens(self, messages: torch.Tensor, box: torch.Tensor | None) -> torch.Tensor:
        """[B, M] bool: the tokens a local write may change: those under the crop, and with
        ``local_fill`` every token of a message that is still the empty one."""
        if box is None:
            raise ValueError(f"this model writes only the tokens under the crop (message_write: "
                             f"{self.config.message_write}): pass the crop's box")
        top, left, size = box
        inside = tokens_inside(top, left, size, self.config.image_size, self.config.num_msg_tokens)
        if self.config.message_write == "local_fill":
            empty = self.empty_message(messages.shape[0]).to(messages.dtype)
            inside = inside | (messages == empty).all(dim=(1, 2))[:, None]
        return inside

    def _one_step_errors(self, images: torch.Tensor, messages: torch.Tensor, offsets: torch.Tensor,
                         noise: torch.Tensor, latents: torch.Tensor | None = None) -> "ReconstructionError":
        """Error of a one-step reconstruction (guidance 1) from the current messages: decoded and
        compared with the images, or compared with the images' ``latents`` when given."""
        t = torch.zeros(noise.shape[0], device=noise.device)
        recon = noise + self.velocity(noise, t, messages, offsets)
        reference = images if latents is None else latents
        if latents is None:
            recon = self.vae.decode(recon).float()
        error_map = (recon - reference).pow(2).sum(dim=1, keepdim=True)
        if latents is not None:  # spread each latent cell over its pixels, so windows stay in pixels
            error_map = F.interpolate(error_map, scale_factor=self.vae.downsample, mode="nearest")
        return ReconstructionError(windows=self.crops.window_errors(error_map),
                                   mse=error_map.mean(dim=(1, 2, 3)) / reference.shape[1])

    def _seen_mask(self, resume: Tokens | None, batch: int, global_crop: bool) -> torch.Tensor:
        seen = torch.zeros(batch, self.crops.num_indices(global_crop), dtype=torch.bool, device=self.device)
        if resume is not None:
            for column in resume.crop_order.to(self.device):
                valid = column >= 0
                seen[torch.arange(batch, device=self.device)[valid], column[valid]] = True
        return seen

    # ------------------------------------------------------------------ detokenize
    def velocity(self, x: torch.Tensor, t: torch.Tensor, messages: torch.Tensor, offsets: torch.Tensor,
                 table: ConditioningTable | None = None) -> torch.Tensor:
        """One conditional velocity evaluation; queries are dropped where that is exact. Float32
        out, so the solver and guidance keep full precision under a bf16 autocast. ``table``: the
        decoding schedule's adaLN outputs, computed once (see ``ConditioningTable``)."""
        conditioning = table.lookup(t) if table is not None else None
        return self.predictor(x, t, messages, offsets, with_queries=False, conditioning=conditioning).velocity.float()

    @torch.inference_mode()
    def detokenize(self, messages: torch.Tensor, offsets: torch.Tensor, num_steps: int = 10, solver: str = "euler",
                   cfg_weight: float = 7.5, apg_momentum: float = -0.5, noise: torch.Tensor | None = None,
                   generator: torch.Generator | None = None, decode: bool = True,
                   progress: bool = False) -> torch.Tensor:
        """Paint images back from messages.

        Args:
            messages: [B, M, D] FSQ codes, or [B, M] int64 token ids.
            offsets: [B, 2] decoding offsets (``Tokens.offsets``).
            num_steps, solver: the ODE grid and solver ("euler", "heun", "midpoint").
            cfg_weight, apg_momentum: guidance weight w and APG momentum (w = 0 or 1: no guidance pass).
            noise: [B, C, h, w] starting noise at t = 0; drawn from ``generator`` when None.
            decode: return images in [-1, 1]; False returns latents.
        """
        check_guidance(cfg_weight, apg_momentum)
        messages = self._check_messages(messages)
        batch = messages.shape[0]
        offsets = self._check_offsets(offsets, batch)
        noise = self._check_noise(noise, batch) if noise is not None else \
            torch.randn(self.latent_shape(batch), generator=generator).to(self.device)
        table = self.predictor.conditioning_table(evaluation_times(num_steps, solver)) \
            if self.device.type == "cpu" else None
        velocity = guided_velocity(partial(self.velocity, table=table), messages, self.empty_message(batch), offsets,
                                   cfg_weight, apg_momentum)
        bar = _progress_bar(num_steps, "detokenize") if progress else None
        latents = integrate(velocity, noise, num_steps, solver, progress=bar.update if bar else None)
        if bar:
            bar.close()
        return self.vae.decode(latents).float() if decode else latents

    @torch.inference_mode()
    def attention_maps(self, images: torch.Tensor, tokens: Tokens, layer: int = -1,
                       times: Sequence[float] = (0.25, 0.5, 0.75), heads: str | int = "mean",
                       direction: str = "token_to_patch", noise: torch.Tensor | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Where each message token looks in the image: [B, M, h, w] maps over the patch grid.

        The decoder reads the message while denoising ``x_t = t x_1 + (1 - t) noise`` (x_1 the
        image's latent). At block ``layer`` (negative counts from the end) this takes the softmax
        attention between message tokens and image patches — ``token_to_patch``: each token's
        attention over the patches; ``patch_to_token``: how much each patch attends to the token —
        aggregates heads (``"mean"``, ``"max"`` or one head index), renormalises each map to sum
        to 1 and averages over ``times``.
        """
        if direction not in ("token_to_patch", "patch_to_token"):
            raise ValueError(f"direction must be 'token_to_patch' or 'patch_to_token', got {direction!r}")
        images = self._check_images(images)
        batch = images.shape[0]
        depth = self.config.depth
        if not -depth <= layer < depth:
            raise ValueError(f"layer must lie in [{-depth}, {depth}), got {layer}")
        layer = layer % depth
        x1 = encode(self.vae, images, generator)
        noise = self._check_noise(noise, batch) if noise is not None else \
            torch.randn(x1.shape, generator=generator).to(self.device)
        grid = self.config.latent_size // self.config.patch_size
        patches = slice(1, 1 + grid * grid)
        message = slice(1 + grid * grid, 1 + grid * grid + self.config.num_msg_tokens)
        total = torch.zeros(batch, self.config.num_msg_tokens, grid * grid, device=self.device)
        for t in times:
            xt = t * x1 + (1 - t) * noise
            out = self.predictor(xt, torch.full((batch,), float(t), device=self.device), tokens.messages.to(self.device),
                                 tokens.offsets.to(self.device), with_queries=False, attention_layers=(layer,))
            weights = out.attentions[layer]
            weights = weights[:, :, message, patches] if direction == "token_to_patch" else \
                weights[:, :, patches, message].transpose(-1, -2)
            weights = _aggregate_heads(weights, heads)
            total += weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        return (total / len(times)).view(batch, -1, grid, grid)

    def reconstruct(self, images: torch.Tensor, global_crop: bool = False,
                    order: str | Sequence | CropPolicy = ADAPTIVE,
                    num_crops: int | None = 3, num_steps: int = 10, solver: str = "euler", cfg_weight: float = 7.5,
                    apg_momentum: float = -0.5, noise: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, decode: bool = True,
                    tokenize_noise: torch.Tensor | None = None, error_budget: float | None = None) -> torch.Tensor:
        """tokenize then detokenize; ``noise`` starts the decoding, ``tokenize_noise`` the adaptive policy."""
        tokens = self.tokenize(images, global_crop=global_crop, order=order, num_crops=num_crops,
                               noise=tokenize_noise, generator=generator, error_budget=error_budget)
        pictures = self.detokenize(tokens.messages, tokens.offsets, num_steps=num_steps, solver=solver,
                                   cfg_weight=cfg_weight, apg_momentum=apg_momentum, noise=noise,
                                   generator=generator, decode=decode)
        if decode:
            message = poor_fit_message(psnr_per_image(pictures, images).cpu(), training_data=self.training_data)
            if message:
                warnings.warn(message, PoorFitWarning, stacklevel=2)
        return pictures

    # ------------------------------------------------------------------ input checks
    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3 or \
                images.shape[2:] != (size, size):
            shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ValueError(f"images must be a tensor [B, 3, {size}, {size}] in [-1, 1], got {shape}; "
                             "resize first (comit.data.load_image converts files)")
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point in [-1, 1], got {images.dtype}")
        _check_finite("images", images)
        low, high = float(images.min()), float(images.max())
        if low < -1 - IMAGE_RANGE_SLACK or high > 1 + IMAGE_RANGE_SLACK:
            raise ValueError(f"images must lie in [-1, 1], got values in [{low:.3g}, {high:.3g}]; "
                             "map 0..255 pixels with x / 127.5 - 1 (comit.data.load_image does it)")
        return images.to(self.device, torch.float32)

    def _check_noise(self, noise: torch.Tensor, batch: int) -> torch.Tensor:
        expected = self.latent_shape(batch)
        if tuple(noise.shape) != expected:
            raise ValueError(f"noise must have shape {list(expected)}, got {list(noise.shape)}")
        _check_finite("noise", noise)
        return noise.to(self.device, torch.float32)

    def _check_messages(self, messages: torch.Tensor) -> torch.Tensor:
        m, d = self.config.num_msg_tokens, self.config.msg_tokens_dim
        if messages.dim() == 2 and not messages.is_floating_point():
            if messages.shape[1] != m:
                raise ValueError(f"token ids must be [B, {m}], got {list(messages.shape)}")
            return self.quantizer.indices_to_codes(messages.to(self.device))
        if messages.dim() != 3 or messages.shape[1:] != (m, d):
            raise ValueError(f"messages must be FSQ codes [B, {m}, {d}] or token ids [B, {m}], "
                             f"got {list(messages.shape)}")
        _check_finite("messages", messages)
        messages = messages.to(self.device, torch.float32)
        self.quantizer.check_codes(messages)
        return messages

    def _check_offsets(self, offsets: torch.Tensor, batch: int) -> torch.Tensor:
        if tuple(offsets.shape) != (batch, 2):
            raise ValueError(f"offsets must be [{batch}, 2] (Tokens.offsets), got {list(offsets.shape)}")
        _check_finite("offsets", offsets)
        return offsets.to(self.device, torch.float32)

    @staticmethod
    def _check_error_signal(error_signal: str, error_budget: float | None) -> None:
        if error_signal not in ERROR_SIGNALS:
            raise ValueError(f"error_signal must be one of {ERROR_SIGNALS}, got {error_signal!r}")
        if error_budget is not None and not (math.isfinite(error_budget) and error_budget >= 0):
            raise ValueError(f"error_budget must be a finite mean squared error >= 0, got {error_budget}")
        if error_signal == "latent" and error_budget is not None:
            raise ValueError("error_budget is in pixel units; use it with error_signal='pixels'")

    def _check_resume(self, resume: Tokens, batch: int) -> bool:
        if len(resume) != batch:
            raise ValueError(f"resume tokens hold {len(resume)} images but {batch} images were given")
        return resume.global_crop

    def _check_plan_unseen(self, plan: torch.Tensor, seen: torch.Tensor) -> None:
        revisited = seen.gather(1, plan.T)
        if bool(revisited.any()):
            raise ValueError("the crop order revisits crops the resumed tokens have already seen; "
                             "give only new crop indices")


def build_autoencoder(config: AutoencoderConfig) -> Autoencoder:
    """The autoencoder a config names, without weights for the SD-VAE and the conv autoencoder
    (they come with the checkpoint)."""
    if config.kind == "pixel":
        return PixelAutoencoder(config.channels)
    if config.kind == "sd-vae":
        return SDVAE(config.model_type, sample_posterior=config.sample_posterior,
                     scaling_factor=config.scaling_factor)
    if config.kind == "conv":  # the architecture; its weights come with the checkpoint (vae.*)
        return ConvAutoencoder(config.conv)
    raise ValueError("this model was saved with a custom autoencoder: pass autoencoder=... to from_pretrained")


def _returned(steps: Generator[Any, None, Any]) -> Any:
    """Run a generator to its end and give what it returns."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def _check_finite(name: str, values: torch.Tensor) -> None:
    if values.is_floating_point() and not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name} hold NaN or Inf values; check what produced them")


def _progress_bar(total: int, desc: str):
    return progress(total=total, desc=desc, unit="step", leave=False)


def _aggregate_heads(weights: torch.Tensor, heads: str | int) -> torch.Tensor:
    if heads == "mean":
        return weights.mean(dim=1)
    if heads == "max":
        return weights.amax(dim=1)
    if isinstance(heads, int) and 0 <= heads < weights.shape[1]:
        return weights[:, heads]
    raise ValueError(f"heads must be 'mean', 'max' or a head index in [0, {weights.shape[1]}), got {heads!r}")
