"""COMiT: tokenize an image crop by crop into a message; detokenize it back by flow matching.

Tokenize: start from the empty message m0; for each crop c_k, encode it, run the transformer on
(latent(c_k), t = 1, message m_{k-1}, offset a_k) and quantise the queries' output to m_k. The
adaptive order picks each next crop where a one-step reconstruction from the current message is
worst. Detokenize: integrate the transformer's velocity from noise at t = 0 to a latent at
t = 1, reading the message with the decoding offset -loc(c_K), with APG guidance.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from torch import nn

from ..metrics.reconstruction import psnr_per_image
from .autoencoders import Autoencoder, PixelAutoencoder, SDVAE, check_autoencoder, encode
from .checkpoints import HubDownload, load_model, save_model
from .config import AutoencoderConfig, ModelConfig
from .conv_autoencoder import ConvAutoencoder
from .crops import CropGrid, tokens_inside
from .decoding import message_attention, paint
from .fit import PoorFitWarning, poor_fit_message
from .fsq import FSQ
from .guidance import check_guidance
from .inputs import (check_error_signal, check_images, check_messages, check_noise, check_offsets,
                     check_resume)
from .model_card import DEFAULT_LICENSE, LIBRARY_NAME, MODEL_CARD_NAME, PAPER_URL, TAGS, model_card, save_card
from .policies import ADAPTIVE, CropPolicy, parse_policy
from .reading import Tokens, read_steps
from .transformer import ConditioningTable, Transformer


@dataclass
class MessageWrite:
    """One message update: codes [B, M, D], the new message (FSQ output; tokens a local write
    leaves alone keep their previous value); raw [B, M, D], what the transformer wrote before FSQ."""

    codes: torch.Tensor
    raw: torch.Tensor


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
        check_error_signal(error_signal, error_budget)
        images = check_images(self, images)
        if resume is not None:
            global_crop = check_resume(self, resume, images.shape[0])
        policy = parse_policy(order)
        if noise is not None:
            noise = check_noise(self, noise, images.shape[0])
        return (yield from read_steps(self, images, global_crop, policy, num_crops, noise, generator, resume,
                                      error_budget, error_signal))

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
        messages = check_messages(self, messages)
        batch = messages.shape[0]
        offsets = check_offsets(self, offsets, batch)
        noise = check_noise(self, noise, batch) if noise is not None else \
            torch.randn(self.latent_shape(batch), generator=generator).to(self.device)
        latents = paint(self, messages, offsets, noise, num_steps, solver, cfg_weight, apg_momentum, progress)
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
        images = check_images(self, images)
        batch = images.shape[0]
        depth = self.config.depth
        if not -depth <= layer < depth:
            raise ValueError(f"layer must lie in [{-depth}, {depth}), got {layer}")
        x1 = encode(self.vae, images, generator)
        noise = check_noise(self, noise, batch) if noise is not None else \
            torch.randn(x1.shape, generator=generator).to(self.device)
        return message_attention(self, x1, noise, tokens, layer % depth, times, heads, direction)

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
