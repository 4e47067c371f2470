"""Low-rank adapters (LoRA, Hu et al. 2021) on a run's network through peft: fine-tuning with every base
weight frozen, adapters in peft's own file format, and sampling a base run with one or several adapters.

An adapted layer computes W x + s (alpha / r) B A x (Hu et al. 2021, eq. 3; A is r x in, B is out x r and
starts at zero). For a convolution A is a convolution with the base's kernel and B a 1x1 convolution (peft's
layout), so both merge as W' = W + s (alpha / r) B A, the product taken over the rank r. s is the weight an
adapter gets when sampling (1: as trained; 0: the base model).

Targets (`parts`). The UNet (diffusers' UNet2DModel): "attention" (to_q, to_k, to_v, to_out.0), "time" (the
time-embedding MLP and each residual block's time_emb_proj), "conv" (every Conv2d). The MLP: "linear" (every
Linear). `levels` restricts a UNet's adapters to resolution levels (0: full resolution; the time-embedding MLP
belongs to all). The defaults, convolutions and time layers of level 0 (1.6% of the digits UNet at rank 4),
were chosen by measurement (docs/benchmarks/lora_digits.md).

Files, peft's format: a folder with adapter_model.safetensors (keys base_model.model.<module>.lora_A.weight,
...) and adapter_config.json (peft's LoraConfig), so peft's `PeftModel.from_pretrained` loads an adapter onto
the module it was trained on (the UNet2DModel inside a UNet run; noisecraft's MLP). The safetensors header
also records the base run, its step and its architecture: an adapter for another network is refused with
an error naming the file. Both files are written atomically; the header holds a digest of the config, so a
torn pair of files is refused rather than misread.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from noisecraft.data import DataConfig
from noisecraft.io import atomic_path, write_text_atomic
from noisecraft.nets import MLP, UNet
from noisecraft.runs.finetune import FinetuneResult, check_run_dir
from noisecraft.runs.finetune import finetune as finetune_run
from noisecraft.runs.pipeline import Pipeline, load_run

ADAPTER_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
#: what peft's PeftModel puts before a module's name in its state dict, and so in its files
PEFT_PREFIX = "base_model.model."
#: the training adapter's name inside peft's layers
TRAIN_NAME = "default"
PARTS: dict[str, tuple[str, ...]] = {"unet": ("attention", "time", "conv"), "mlp": ("linear",)}
#: chosen by measurement on digits 0-4 -> 5-9 (docs/benchmarks/lora_digits.md)
DEFAULT_PARTS: dict[str, tuple[str, ...]] = {"unet": ("conv", "time"), "mlp": ("linear",)}
#: the UNet resolution levels adapted by default (None: all): the full-resolution level, where a rank-4 adapter
#: costs least (fewest channels); measured in docs/benchmarks/lora_digits.md
DEFAULT_LEVELS: dict[str, tuple[int, ...] | None] = {"unet": (0,), "mlp": None}
#: LoRA's default peak learning rate, as a multiple of the base run's (measured on digits: x5 FD 42, x15 FD 33,
#: x50 diverged; docs/benchmarks/lora_digits.md)
LR_FACTOR = 15.0
_LORA_KEY = re.compile(r"(.+)\.lora_([AB])\.weight")
_ATTENTION = re.compile(r"(^|\.)attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)$")
_TIME = re.compile(r"(^|\.)(time_embedding\.linear_[12]|time_emb_proj)$")


# -- which layers -------------------------------------------------------------------------------------------
def network_kind(net: nn.Module) -> str:
    """'unet' or 'mlp': the networks LoRA is defined for here."""
    if isinstance(net, UNet):
        return "unet"
    if isinstance(net, MLP):
        return "mlp"
    raise ValueError(f"LoRA adapts noisecraft's UNet and MLP; got a {type(net).__name__}")


def adapted_module(net: nn.Module) -> nn.Module:
    """The module peft adapts and the adapter's names are relative to: the UNet2DModel inside a UNet, the MLP."""
    return net.model if network_kind(net) == "unet" else net


def _prefix(net: nn.Module) -> str:
    """The adapted module's name inside the run's network ('model.' for a UNet, '' for an MLP)."""
    return "model." if network_kind(net) == "unet" else ""


def _part(name: str, module: nn.Module) -> str | None:
    if isinstance(module, nn.Conv2d):
        return "conv"
    if not isinstance(module, nn.Linear):
        return None
    if _ATTENTION.search(name):
        return "attention"
    return "time" if _TIME.search(name) else "linear"


def _level(name: str, levels: int) -> int | None:
    """The resolution level of a UNet2DModel layer: down block i and up block levels - 1 - i are level i (0: full
    resolution, with conv_in and conv_out), the mid block the deepest; None for the time-embedding MLP (all)."""
    head, _, rest = name.partition(".")
    if head in ("down_blocks", "up_blocks"):
        index = int(rest.partition(".")[0])
        return index if head == "down_blocks" else levels - 1 - index
    return levels - 1 if head == "mid_block" else None if head == "time_embedding" else 0


def check_levels(net: nn.Module, levels: Sequence[int] | None) -> tuple[int, ...] | None:
    """`levels` (None: DEFAULT_LEVELS of the network's kind, where None means every level), each a UNet level."""
    kind = network_kind(net)
    if levels is None:
        return DEFAULT_LEVELS[kind]
    count = len(net.model.config.block_out_channels) if kind == "unet" else 0
    if kind != "unet" or not levels or any(not 0 <= v < count for v in levels):
        raise ValueError(f"`lora_levels` {list(levels)} for a {kind}: expected UNet resolution levels in 0..{count - 1}"
                         if kind == "unet" else f"`lora_levels` {list(levels)}: an MLP has no resolution levels")
    return tuple(levels)


def check_parts(net: nn.Module, parts: Sequence[str] | None) -> tuple[str, ...]:
    """`parts` (default: DEFAULT_PARTS of the network's kind), each one of PARTS[kind]."""
    kind = network_kind(net)
    chosen = tuple(DEFAULT_PARTS[kind] if parts is None else parts)
    bad = [p for p in chosen if p not in PARTS[kind]]
    if bad or not chosen:
        raise ValueError(f"`lora_targets` {list(chosen)} for a {kind}: expected a non-empty subset of {list(PARTS[kind])}")
    return chosen


def target_modules(net: nn.Module, parts: Sequence[str] | None = None,
                   levels: Sequence[int] | None = None) -> list[str]:
    """Names (in the adapted module) of the layers of `parts` at the UNet resolution `levels` (the time-embedding
    MLP belongs to every level) that get adapters."""
    chosen, where = check_parts(net, parts), check_levels(net, levels)
    count = len(net.model.config.block_out_channels) if network_kind(net) == "unet" else 0
    return [name for name, module in adapted_module(net).named_modules() if _part(name, module) in chosen
            and (where is None or _level(name, count) in (None, *where))]


def lora_config(net: nn.Module, rank: int = 4, alpha: float | None = None,
                parts: Sequence[str] | None = None, levels: Sequence[int] | None = None) -> Any:
    """peft's LoraConfig: rank r, alpha (default r: scale alpha / r = 1), on the layers of `parts` at `levels`."""
    from peft import LoraConfig

    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"`lora_rank` must be an integer >= 1, got {rank!r}")
    if alpha is not None and not alpha > 0:
        raise ValueError(f"`lora_alpha` must be > 0, got {alpha}")
    return LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha, target_modules=target_modules(net, parts, levels),
                      lora_dropout=0.0, bias="none")


def add_lora(net: nn.Module, config: Any, name: str = TRAIN_NAME) -> nn.Module:
    """`net` with adapters `name` of `config` injected in place by peft; every other weight is frozen."""
    from peft import inject_adapter_in_model

    with warnings.catch_warnings():  # a second adapter on one network is what this function is for
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(config, adapted_module(net), adapter_name=name)
    for key, param in net.named_parameters():
        param.requires_grad_(f".lora_A.{name}." in key or f".lora_B.{name}." in key)
    return net


def trainable_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


# -- the network an adapter belongs to ------------------------------------------------------------------------
def describe_network(net: nn.Module) -> str:
    """The network in words: kind and sizes."""
    if network_kind(net) == "mlp":
        return f"MLP (dim {net.dim}, width {net.inp.out_features}, depth {len(net.blocks)})"
    cfg = net.model.config
    cond = (f", {cfg.num_class_embeds} class embeddings" if cfg.num_class_embeds else "") + \
        (f", text embeddings of {net.text_dim}" if net.text_dim else "")
    return (f"UNet (block_channels {list(cfg.block_out_channels)}, {list(cfg.down_block_types)}, "
            f"{cfg.layers_per_block} layers per block, {cfg.in_channels}x{cfg.sample_size}x{cfg.sample_size}{cond})")


def architecture(net: nn.Module) -> str:
    """A digest of the base network's tensor names and shapes: equal exactly when an adapter's layers exist."""
    base = {k.replace(".base_layer.", "."): tuple(v.shape) for k, v in net.state_dict().items() if ".lora_" not in k}
    return hashlib.sha256(json.dumps(sorted(base.items())).encode()).hexdigest()[:16]


# -- adapters as data and files -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter: its name, peft's LoraConfig, its tensors keyed '<module>.lora_A.weight' / 'lora_B'
    (relative to the adapted module), the file it came from and the record of its base (None when the
    adapter was not made by noisecraft)."""

    name: str
    config: Any
    tensors: dict[str, Tensor]
    source: str = "an adapter in memory"
    record: dict | None = None

    def modules(self) -> dict[str, tuple[Tensor, Tensor]]:
        """module name -> (A, B)."""
        out: dict[str, dict[str, Tensor]] = {}
        for key, value in self.tensors.items():
            module, which = _LORA_KEY.fullmatch(key).groups()
            out.setdefault(module, {})[which] = value
        return {m: (ab["A"], ab["B"]) for m, ab in out.items()}

    def scaling(self, rank: int) -> float:
        """alpha / r (alpha / sqrt(r) for rank-stabilised LoRA, Kalajdzievski 2023)."""
        return self.config.lora_alpha / (rank ** 0.5 if self.config.use_rslora else rank)


def adapter_from_state(net: nn.Module, state: dict[str, Tensor], config: Any, record: dict | None = None,
                       name: str = TRAIN_NAME) -> Adapter:
    """The adapter `name` in a state dict of the adapted `net` (its weights, or their EMA)."""
    prefix = _prefix(net)
    tag = re.compile(rf"\.lora_([AB])\.{re.escape(name)}\.weight$")
    tensors = {tag.sub(r".lora_\1.weight", k[len(prefix):]): v.detach().float().cpu().clone()
               for k, v in state.items() if tag.search(k)}
    if not tensors:
        raise ValueError(f"the network holds no LoRA adapter named {name!r}")
    return Adapter(name, config, tensors, record=record)


def _config_text(config: Any, base_run: str | None) -> str:
    """adapter_config.json as peft writes it (sets as lists, keys sorted), in inference mode, naming the base."""
    raw = config.to_dict()
    raw = {k: sorted(v) if isinstance(v, set) else v for k, v in raw.items()}
    raw.update(inference_mode=True, base_model_name_or_path=base_run)
    return json.dumps(raw, indent=2, sort_keys=True)


def save_adapter(adapter: Adapter, folder: str | Path) -> Path:
    """Write `adapter` into `folder` in peft's format (each file atomically); returns the safetensors path."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = dict(adapter.record or {})
    text = _config_text(adapter.config, record.get("base_run"))
    record["config_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    tensors = {PEFT_PREFIX + k: v.contiguous() for k, v in adapter.tensors.items()}
    with atomic_path(folder / ADAPTER_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "noisecraft": json.dumps(record)})
    write_text_atomic(folder / CONFIG_FILE, text)
    return folder / ADAPTER_FILE


def _adapter_folder(path: str | Path) -> Path:
    path = Path(path)
    folder = path.parent if path.name in (ADAPTER_FILE, CONFIG_FILE) else path
    for needed in (ADAPTER_FILE, CONFIG_FILE):
        if not (folder / needed).is_file():
            raise ValueError(f"adapter {str(path)!r} has no {needed}; expected a folder with {ADAPTER_FILE} and "
                             f"{CONFIG_FILE} (peft's LoRA format, written by `noisecraft finetune`)")
    return folder


def _read_config(folder: Path) -> tuple[Any, str]:
    from peft import LoraConfig

    path = folder / CONFIG_FILE
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{path} is not JSON ({err}); expected peft's adapter config") from None
    if not isinstance(raw, dict) or raw.get("peft_type") != "LORA":
        raise ValueError(f"{path} is not a LoRA adapter config; expected peft_type 'LORA'")
    unsupported = [k for k in ("use_dora", "lora_bias", "alpha_pattern", "modules_to_save") if raw.get(k)]
    if unsupported:
        raise ValueError(f"{path} sets {', '.join(unsupported)}; expected a plain LoRA adapter (A and B matrices)")
    known = set(LoraConfig.__dataclass_fields__)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LoraConfig(**{k: v for k, v in raw.items() if k in known}), text


def load_adapter(path: str | Path, name: str | None = None) -> Adapter:
    """The adapter in a folder (or its adapter_model.safetensors) in peft's format; `name` defaults to the
    folder's name. A ValueError naming the file when it is not such an adapter."""
    from safetensors import SafetensorError, safe_open

    folder = _adapter_folder(path)
    config, text = _read_config(folder)
    file = folder / ADAPTER_FILE
    try:
        with safe_open(str(file), "pt") as handle:
            meta = handle.metadata() or {}
            names = handle.keys()  # the handle itself is not iterable
            tensors = {k: handle.get_tensor(k) for k in names}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{file} is not a safetensors file ({err}); expected LoRA weights") from None
    record = json.loads(meta["noisecraft"]) if "noisecraft" in meta else None
    if record is not None and record.get("config_sha256") != hashlib.sha256(text.encode()).hexdigest():
        raise ValueError(f"{folder / CONFIG_FILE} is not the config {file} was saved with (an interrupted or mixed "
                         "write); expected the pair written together")
    bad = [k for k in tensors if not (k.startswith(PEFT_PREFIX) and _LORA_KEY.fullmatch(k[len(PEFT_PREFIX):]))]
    if bad or not tensors:
        raise ValueError(f"{file} holds {bad[0] if bad else 'no tensors'}; expected only LoRA weights "
                         f"'{PEFT_PREFIX}<module>.lora_A.weight' and '.lora_B.weight'")
    tensors = {k[len(PEFT_PREFIX):]: v for k, v in tensors.items()}
    return Adapter(_adapter_name(name or folder.name), config, tensors, str(file), record)


def _adapter_name(text: str) -> str:
    """A name peft accepts as a module key: letters, digits and underscores."""
    return re.sub(r"\W", "_", text) or "adapter"


def check_fits(adapter: Adapter, net: nn.Module) -> None:
    """A one-line ValueError naming the adapter's file when it was made for another network than `net`: another
    architecture in its record, or a layer it adapts that `net` lacks or has in another shape."""
    here = describe_network(net)
    record = adapter.record or {}
    if record.get("architecture") not in (None, architecture(net)):
        raise ValueError(f"adapter {adapter.source} was made for {record.get('network', 'another network')} (base "
                         f"run {record.get('base_run')}); expected an adapter for {here}")
    modules = dict(adapted_module(net).named_modules())
    for name, (a, b) in adapter.modules().items():
        layer = modules.get(name)
        layer = getattr(layer, "base_layer", layer)
        expected = _lora_shapes(layer, a.shape[0])
        if expected is None or (tuple(a.shape), tuple(b.shape)) != expected:
            want = "no such layer" if expected is None else f"A {expected[0]} and B {expected[1]}"
            raise ValueError(f"adapter {adapter.source} does not fit {here}: layer {name!r} has A {tuple(a.shape)} "
                             f"and B {tuple(b.shape)}, expected {want}")


def _lora_shapes(layer: nn.Module | None, rank: int) -> tuple[tuple, tuple] | None:
    """(A, B) shapes of rank-`rank` LoRA on `layer` in peft's layout; None for a layer LoRA does not adapt."""
    if isinstance(layer, nn.Linear):
        return (rank, layer.in_features), (layer.out_features, rank)
    if isinstance(layer, nn.Conv2d):
        return (rank, layer.in_channels, *layer.kernel_size), (layer.out_channels, rank, 1, 1)
    return None


# -- sampling with adapters --------------------------------------------------------------------------------------
AdapterLike = str | Path | Adapter


def _adapters(adapters: AdapterLike | Sequence[AdapterLike], scale: float | Sequence[float],
              net: nn.Module) -> list[tuple[Adapter, float]]:
    """(adapter, weight) pairs: each loaded, checked against `net` and given a unique name."""
    items = [adapters] if isinstance(adapters, (str, Path, Adapter)) else list(adapters)
    scales = [scale] if isinstance(scale, (int, float)) else list(scale)
    scales = scales * len(items) if len(scales) == 1 else scales
    if not items or len(scales) != len(items):
        raise ValueError(f"`lora_scale` gives {len(scales)} weights for {len(items)} adapters; expected one weight, "
                         "or one per adapter")
    bad = [s for s in scales if not (isinstance(s, (int, float)) and abs(s) < float("inf"))]
    if bad:
        raise ValueError(f"`lora_scale` must be finite numbers, got {bad[0]!r}")
    out, names = [], set()
    for item in items:
        adapter = item if isinstance(item, Adapter) else load_adapter(item)
        check_fits(adapter, net)
        name, k = adapter.name, 2
        while name in names:
            name, k = f"{adapter.name}_{k}", k + 1
        names.add(name)
        out.append((replace(adapter, name=name), float(scales[len(out)])))
    return out


def lora_delta(adapter: Adapter, net: nn.Module) -> dict[str, Tensor]:
    """Weight name in `net` -> (alpha / r) B A, the change of that weight at scale 1 (Hu et al. 2021, eq. 3)."""
    prefix = _prefix(net)
    out = {}
    for module, (a, b) in adapter.modules().items():
        rank = a.shape[0]
        out[f"{prefix}{module}.weight"] = adapter.scaling(rank) * torch.einsum("or,r...->o...", b.flatten(1), a)
    return out


def _shifted(pipe: Pipeline, adapters: AdapterLike | Sequence[AdapterLike], scale: float | Sequence[float],
             sign: float) -> Pipeline:
    net = copy.deepcopy(pipe.net)
    params = dict(net.named_parameters())
    with torch.no_grad():
        for adapter, weight in _adapters(adapters, scale, net):
            for key, delta in lora_delta(adapter, net).items():
                params[key].add_(delta.to(params[key]), alpha=sign * weight)
    return replace(pipe, net=net, network=None)


def merge_lora(pipe: Pipeline, adapters: AdapterLike | Sequence[AdapterLike],
               scale: float | Sequence[float] = 1.0) -> Pipeline:
    """A new Pipeline whose network is the base's with W + sum_i s_i (alpha_i / r_i) B_i A_i folded into its
    weights: the same architecture as the base (no extra work per evaluation), `pipe` unchanged."""
    return _shifted(pipe, adapters, scale, 1.0)


def unmerge_lora(pipe: Pipeline, adapters: AdapterLike | Sequence[AdapterLike],
                 scale: float | Sequence[float] = 1.0) -> Pipeline:
    """The inverse of merge_lora with the same adapters and weights: W - sum_i s_i (alpha_i / r_i) B_i A_i."""
    return _shifted(pipe, adapters, scale, -1.0)


def with_lora(pipe: Pipeline, adapters: AdapterLike | Sequence[AdapterLike], scale: float | Sequence[float] = 1.0,
              merge: bool = True) -> Pipeline:
    """A new Pipeline that samples `pipe`'s run with LoRA adapters (folders, or Adapters), adapter i weighted by
    scale[i] (one number: the same for all); the base pipeline is left as it is, so switching adapters is
    calling this again. merge=True folds them into the weights (merge_lora); merge=False keeps them as live peft
    layers, each under its name (the network then evaluates W x + sum_i s_i (alpha_i / r_i) B_i A_i x)."""
    if merge:
        return merge_lora(pipe, adapters, scale)
    from peft.tuners.lora import LoraLayer
    from peft.tuners.tuners_utils import set_adapter

    net = copy.deepcopy(pipe.net)
    chosen = _adapters(adapters, scale, net)
    for adapter, _ in chosen:
        _inject_loaded(net, adapter)
    set_adapter(adapted_module(net), [a.name for a, _ in chosen], inference_mode=True, layer_cls=LoraLayer)
    for layer in net.modules():
        if isinstance(layer, LoraLayer):
            for adapter, weight in chosen:
                layer.set_scale(adapter.name, weight)
    return replace(pipe, net=net.eval().requires_grad_(False), network=None)


def _inject_loaded(net: nn.Module, adapter: Adapter) -> None:
    """Inject `adapter` into `net` under its name and load its weights with peft's own loader."""
    from peft import LoraConfig, set_peft_model_state_dict

    config = LoraConfig(**{**adapter.config.to_dict(), "target_modules": sorted(adapter.modules()),
                           "init_lora_weights": False, "inference_mode": True})
    add_lora(net, config, adapter.name)
    result = set_peft_model_state_dict(adapted_module(net), adapter.tensors, adapter_name=adapter.name)
    left = [k for k in result.missing_keys if f".lora_A.{adapter.name}." in k or f".lora_B.{adapter.name}." in k]
    if result.unexpected_keys or left:
        raise ValueError(f"adapter {adapter.source} did not load whole: {(result.unexpected_keys or left)[0]}")


def base_run_of(path: str | Path) -> str | None:
    """The base run an adapter folder records (made by `finetune`); None for anything else."""
    if not (Path(path) / ADAPTER_FILE).is_file():
        return None
    return (load_adapter(path).record or {}).get("base_run")


def load_adapted(path: str | Path, scale: float = 1.0, merge: bool = True, **load_options: Any) -> Pipeline:
    """The base run an adapter records (its folder made by `finetune`), sampled with that adapter."""
    base = base_run_of(path)
    if base is None:
        raise ValueError(f"{str(path)!r} is not an adapter folder that records its base run; load the base with "
                         "load_run and pass the adapter to with_lora")
    return with_lora(load_run(base, **load_options), path, scale, merge)


# -- fine-tuning ----------------------------------------------------------------------------------------------
def _data_text(data: str | DataConfig) -> str:
    if not isinstance(data, DataConfig):
        return str(data)
    return data.name if data.classes is None else f"{data.name} classes {data.classes}"


@dataclass
class LoraResult:
    run_dir: Path
    adapter: Path | None  # None for full fine-tuning
    trainable: int  # parameters trained
    total: int  # parameters of the base network
    finetune: FinetuneResult


def finetune(run: str | Path, data: str | DataConfig, run_dir: str | Path, lora_rank: int | None = 4, *,
             lora_alpha: float | None = None, lora_targets: Sequence[str] | None = None,
             lora_levels: Sequence[int] | None = None, minutes: float | None = None,
             max_steps: int | None = None, progress: bool = True, **train_options: Any) -> LoraResult:
    """Fine-tune the base run `run` on `data` into `run_dir`: LoRA adapters of rank `lora_rank` (alpha default:
    the rank) on the layers of `lora_targets` at the UNet resolution levels `lora_levels` (defaults DEFAULT_PARTS,
    DEFAULT_LEVELS) with every base weight frozen, written as run_dir/adapter_model.safetensors +
    adapter_config.json (from the EMA weights). lora_rank=None trains every weight instead (full fine-tuning, an
    ordinary run in run_dir). Budget and train options as noisecraft.runs.finetune.finetune; LoRA's `lr` defaults
    to LR_FACTOR times the base's. The LoRA run's checkpoints are removed once the adapter is written (they hold
    the frozen base again)."""
    run_dir = Path(run_dir)
    if lora_rank is None:
        result = finetune_run(run, data, run_dir, minutes, max_steps, method="full", progress=progress, **train_options)
        total = sum(p.numel() for p in result.train.model.parameters())
        return LoraResult(run_dir, None, total, total, result)
    base = load_run(run)
    config = lora_config(base.net, lora_rank, lora_alpha, lora_targets, lora_levels)
    if (run_dir / ADAPTER_FILE).exists():
        raise ValueError(f"`run_dir` {str(run_dir)!r} already holds an adapter ({ADAPTER_FILE}); choose a new directory")
    check_run_dir(run_dir)
    if train_options.get("lr") is None:
        train_options["lr"] = LR_FACTOR * base.config.train.lr
    result = finetune_run(run, data, run_dir, minutes, max_steps, adapt=lambda net: add_lora(net, config),
                          method="lora", progress=progress, **train_options)
    record = {"base_run": str(run), "base_step": base.step, "network": describe_network(base.net),
              "architecture": architecture(base.net), "data": _data_text(data), "steps": result.train.step}
    adapter = adapter_from_state(result.train.model, result.train.ema.state_dict(), config, record)
    path = save_adapter(adapter, run_dir)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    total = sum(p.numel() for p in base.net.parameters())
    return LoraResult(run_dir, path, trainable_parameters(result.train.model), total, result)


__all__ = ["ADAPTER_FILE", "CONFIG_FILE", "DEFAULT_LEVELS", "DEFAULT_PARTS", "LR_FACTOR", "PARTS", "Adapter", "LoraResult", "add_lora",
           "architecture", "base_run_of", "check_fits", "finetune", "load_adapted", "load_adapter", "lora_config", "lora_delta",
           "merge_lora", "save_adapter", "target_modules", "trainable_parameters", "unmerge_lora", "with_lora"]
