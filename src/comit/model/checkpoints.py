"""Checkpoints: this project's format, the released layout, hub ids; safe, atomic IO.

Both formats are a directory with ``config.json`` and ``model.safetensors`` whose keys are
``predictor.*`` (the transformer) and, for the SD-VAE, ``vae.vae.*`` (diffusers names).

* Ours: ``config.json`` = ``{"format": "comit", "format_version": 1, "model": ModelConfig}``.
* Released (``PyTorchModelHubMixin``): ``config.json`` = ``{"predictor": {...}, "quantizer":
  {"levels": [...]}, "vae": {...}}``, possibly with hydra ``_target_`` keys, which are read by
  meaning and never imported. Released models use ``attention="released"``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..io import atomic_write, atomic_write_json
from ..user_settings import first_error
from .config import AutoencoderConfig, ModelConfig
from .transformer import Transformer

# The model class (``COMiT``) comes in as an argument: this module sits below it and names no type of it.
Model = TypeVar("Model", bound=torch.nn.Module)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "comit"
FORMAT_VERSION = 1
# `from_pretrained("bundled")`: the small model trained on the built-in data, shipped in the package.
BUNDLED_NAME = "bundled"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "assets" / "comit-shapes"
# The released crops: 96-px crops on a 3x3 grid of a 256-px image (not in the released config).
RELEASED_GEOMETRY = dict(crop_size=96, grid_size=3)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a message saying why."""


# ---------------------------------------------------------------------- locating
@dataclass(frozen=True)
class HubDownload:
    """How a hub id is fetched: ``huggingface_hub.snapshot_download``'s own arguments."""

    revision: str | None = None
    cache_dir: str | Path | None = None
    token: str | bool | None = None
    local_files_only: bool = False
    force_download: bool = False


def resolve_checkpoint(name_or_path: str | Path, download: HubDownload = HubDownload()) -> Path:
    """'bundled' is the model shipped in the package; a local directory is taken as is; anything
    else is taken as a hub id and fetched (or read from the local cache when ``HF_HUB_OFFLINE=1``
    or ``local_files_only``)."""
    if str(name_or_path) == BUNDLED_NAME:
        if not (BUNDLED_DIR / CONFIG_NAME).is_file():
            raise CheckpointError(f"the bundled model is missing from {BUNDLED_DIR}; reinstall comit or pass --model")
        return BUNDLED_DIR
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path} is a file; give the checkpoint directory that holds {CONFIG_NAME}")
    name = str(name_or_path)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise CheckpointError(f"no checkpoint directory {name!r}, and it is not a hub id of the form 'owner/name'")
    try:
        return Path(snapshot_download(name, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME], **asdict(download)))
    except LocalEntryNotFoundError as error:
        cached = cached_revisions(name, download.cache_dir)
        if cached and download.revision is not None:
            raise CheckpointError(f"hub model {name!r} is in the local cache, but not its revision "
                                  f"{download.revision!r} (cached: {', '.join(cached)}), and it cannot be downloaded "
                                  "(offline?); fetch that revision once with network access, or pass one of "
                                  "those") from error
        raise CheckpointError(f"hub model {name!r} is not in the local cache and cannot be downloaded "
                              "(offline?); download it once with network access or give a local directory") from error
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise CheckpointError(f"could not fetch hub model {name!r}: {str(error).splitlines()[0]}") from error


def cached_revisions(repo_id: str, cache_dir: str | Path | None = None) -> list[str]:
    """The revisions of a hub model in the local cache (branch and tag names, else commit hashes)."""
    from huggingface_hub import scan_cache_dir

    try:
        repos = scan_cache_dir(cache_dir).repos
    except Exception:  # no cache folder yet, or one the scanner cannot read: nothing cached to name
        return []
    for repo in repos:
        if repo.repo_id == repo_id and repo.repo_type == "model":
            names = sorted(ref for revision in repo.revisions for ref in revision.refs)
            return names or sorted(revision.commit_hash[:12] for revision in repo.revisions)
    return []


# ---------------------------------------------------------------------- configs
def read_config(directory: Path) -> tuple[ModelConfig, bool]:
    """The model config of a checkpoint and whether it is in the released layout."""
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise CheckpointError(f"{directory} holds no {CONFIG_NAME}; is it a COMiT checkpoint directory?")
    try:
        raw = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_path} is not valid JSON ({error})") from error
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_path} must hold a JSON object")
    try:
        if raw.get("format") == FORMAT:
            return ModelConfig(**raw["model"]), False
        if "predictor" in raw:
            return released_to_config(raw), True
    except ValidationError as error:
        where, message = first_error(error)
        raise CheckpointError(f"{config_path}: invalid config value at {where}: {message}") from error
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{config_path}: missing or malformed entry {error}") from error
    raise CheckpointError(f"{config_path} is neither a COMiT config (format={FORMAT!r}) nor the released "
                          "layout (predictor/quantizer/vae entries)")


def released_to_config(raw: dict) -> ModelConfig:
    """Map the released constructor config to ours, by meaning."""
    predictor = {k: v for k, v in raw["predictor"].items() if k != "_target_"}
    levels = raw.get("quantizer", {}).get("levels")
    if levels is None:
        raise KeyError("quantizer.levels")
    dim = predictor.pop("msg_tokens_dim", len(levels))
    if dim != len(levels):
        raise CheckpointError(f"released config: msg_tokens_dim {dim} != number of FSQ levels {len(levels)}")
    autoencoder = released_autoencoder(raw.get("vae", {}), predictor.get("in_channels", 4))
    latent = predictor.pop("max_input_size", 32)
    in_channels = predictor.pop("in_channels", 4)
    predictor.pop("out_channels", None)
    if in_channels != autoencoder.latent_channels:
        raise CheckpointError(f"released config: in_channels {in_channels} does not match the autoencoder's "
                              f"{autoencoder.latent_channels} latent channels")
    known = {"hidden_size", "depth", "num_heads", "num_msg_tokens", "patch_size", "mlp_ratio", "representation_layer"}
    unknown = sorted(set(predictor) - known)
    if unknown:
        raise CheckpointError(f"released config has predictor entries this version does not know: {unknown}")
    return ModelConfig(**predictor, fsq_levels=list(levels), attention="released",
                       image_size=latent * autoencoder.factor, autoencoder=autoencoder, **RELEASED_GEOMETRY)


def released_autoencoder(entry: dict, channels: int) -> AutoencoderConfig:
    target = str(entry.get("_target_", ""))
    if "model_type" in entry or target.endswith("SDAutoencoderKL"):
        return AutoencoderConfig(kind="sd-vae", model_type=entry.get("model_type", "mse"))
    # Anything else (e.g. the reference data's stub) must be supplied by the caller.
    return AutoencoderConfig(kind="custom", channels=channels, downsample=8)


# ---------------------------------------------------------------------- weights
def read_weights(path: Path) -> dict[str, torch.Tensor]:
    return _read_safetensors(path, lambda handle, key: handle.get_tensor(key))


def read_weight_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensors' shapes from the safetensors header alone (nothing is read or allocated)."""
    return _read_safetensors(path, lambda handle, key: tuple(handle.get_slice(key).get_shape()))


def _read_safetensors(path: Path, read) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path.parent} holds no {WEIGHTS_NAME}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: read(handle, key) for key in handle.keys()}
    except (SafetensorError, OSError, RuntimeError) as error:
        raise CheckpointError(f"{path} is truncated or not a safetensors file ({error}); download or save it again") \
            from error


def check_predictor_shapes(config: ModelConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """Compare the config's predictor with the stored weights before anything is allocated: the
    predictor is built on the meta device, so a hostile config.json cannot ask for gigabytes."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Transformer(**config.predictor_kwargs()).state_dict().items()}
    found = {k[len("predictor."):]: v for k, v in shapes.items() if k.startswith("predictor.")}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [f"{k} {list(found[k])} (config wants {list(expected[k])})"
             for k in expected if k in found and found[k] != expected[k]]
    if missing or unexpected or wrong:
        parts = [f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}" if missing else "",
                 f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}" if unexpected else "",
                 f"wrong shapes {wrong[:2]}" if wrong else ""]
        raise CheckpointError("checkpoint weights do not match its config: " + "; ".join(p for p in parts if p))


# ---------------------------------------------------------------------- load / save
PROVENANCE_NAME = "provenance.json"


def read_provenance(directory: Path) -> dict | None:
    """A saved model's ``provenance.json`` (how it was trained), or None without one."""
    path = Path(directory) / PROVENANCE_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error.msg}); fix or delete it") from None


def load_model(cls: type[Model], name_or_path: str | Path, autoencoder=None, attention: str | None = None,
               device=None, download: HubDownload = HubDownload()) -> Model:
    directory = resolve_checkpoint(name_or_path, download)
    config, released = read_config(directory)
    if attention is not None:
        config = config.model_copy(update={"attention": attention})
        config = ModelConfig(**config.model_dump())  # re-validate
    if config.autoencoder.kind == "custom" and autoencoder is None:
        raise CheckpointError(f"{directory} was saved with an autoencoder comit does not know; "
                              "pass autoencoder=... to from_pretrained")
    check_predictor_shapes(config, read_weight_shapes(directory / WEIGHTS_NAME))
    weights = read_weights(directory / WEIGHTS_NAME)
    model = cls(config, autoencoder=autoencoder)
    model.predictor.load_state_dict({k[len("predictor."):]: v for k, v in weights.items() if k.startswith("predictor.")})
    if autoencoder is None and isinstance(model.vae, torch.nn.Module) and list(model.vae.state_dict()):
        vae_weights = {k[len("vae."):]: v for k, v in weights.items() if k.startswith("vae.")}
        if not vae_weights:
            raise CheckpointError(f"{directory / WEIGHTS_NAME} holds no autoencoder weights (vae.*); "
                                  "pass autoencoder=... (e.g. comit.SDVAE.from_hub())")
        result = model.vae.load_state_dict(vae_weights, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise CheckpointError(f"autoencoder weights do not match: missing {result.missing_keys[:3]}, "
                                  f"unexpected {result.unexpected_keys[:3]}")
    model.training_data = (read_provenance(directory) or {}).get("data")
    model.eval()
    return model.to(device) if device is not None else model


def save_model(model: torch.nn.Module, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write the config and weights; each file is written to a temporary name and renamed.

    ``dtype`` (e.g. ``torch.float16``) stores floating-point weights at that precision, to halve a
    file that ships; loading casts them back to the model's dtype.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"predictor.{k}": v for k, v in model.predictor.state_dict().items()}
    if isinstance(model.vae, torch.nn.Module) and model.config.autoencoder.kind != "custom":
        tensors.update({f"vae.{k}": v for k, v in model.vae.state_dict().items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": model.config.model_dump()}
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
    atomic_write_json(directory / CONFIG_NAME, config)
    return directory
