"""A trained run as one object: `load_run(path)` returns a `Pipeline` that does, from Python, everything the
command line does with a run directory: sample (unconditional, class, prompt, classifier guidance,
thresholding), inpaint, upscale, denoise, likelihood, and the raw denoiser contract.

Every method checks its inputs first and raises a ValueError naming the argument (in `backticks`, which the
CLI spells as its --option) before any network evaluation. Sampling methods return float32 CPU tensors in the
data's range; sample i of a call depends only on (seed, i) (noisecraft.core.noise).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from noisecraft.core.bounds import check_threshold
from noisecraft.core.denoiser import Denoiser
from noisecraft.core.noise import SampleNoise, base_seed
from noisecraft.core.schedules import Schedule
from noisecraft.nets.batching import FixedBatch
from noisecraft.runs import distributed, memory, steer
from noisecraft.runs.checkpoint import check_weights, newest_intact, weights_digest
from noisecraft.runs.config import RunConfig, load_config
from noisecraft.runs.tasks import DENOISE_METHODS, INPAINT_METHODS, RESTORE_METHODS, UPSCALE_METHODS
from noisecraft.solvers.config import SolverConfig

#: the default method of the tasks whose default depends on the run, on a pixel run; a latent run denoises and
#: restores by DDNM through its decoder instead (it has no `posterior` method, and on digits32 x2 super-resolution
#: its DDNM gave 34.7 dB at 3 CPU s per image against moment matching's 29.3 dB at 43 s: docs/benchmarks/latent.md)
PIXEL_DEFAULTS = {"denoise": "posterior", "restore": "mmps"}


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {list(choices)}")
    return value


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


@dataclass(frozen=True)
class Part:
    """One draw's share of a merged batch (Pipeline.sample_parts): n samples from `seed`, of class `label`."""

    n: int
    seed: int = 0
    label: int | None = None


@dataclass(frozen=True)
class Route:
    """Where a prompt or label sends sampling: 'none', 'class' (label) or 'text' (embedding), and how."""

    kind: str
    label: int | Tensor | None = None  # a class, or one class per row (merged draws)
    embedding: Tensor | None = None
    note: str = ""


@dataclass(frozen=True)
class Pipeline:
    """A trained run: its config, network (EMA weights by default) and data shape, and what can be done
    with them. `network` is the denoiser contract x0_hat(x, t, cond), unbounded; `denoiser(...)` is the
    function the samplers integrate, conditioned, guided and bounded as asked."""

    config: RunConfig
    net: torch.nn.Module | None
    sample_shape: tuple[int, ...]
    is_image: bool
    step: int = 0
    run_dir: Path | None = None
    network: Denoiser | Callable[..., Tensor] = field(default=None)  # type: ignore[assignment]
    #: rows per network call when set: every call then has that one shape, so sample i is the same bits
    #: whatever n, process count or service batch it is drawn in (noisecraft.nets.batching); None calls the
    #: network on whole batches (fastest; the digits UNet's rows then vary with the batch size at ~1e-6)
    eval_batch: int | None = None
    #: named grids beyond noisecraft's own (core.timesteps.GRIDS): name -> fn(SolverConfig) -> (the config on an
    #: explicit time list, a note naming the grid); from_diffusers adds "diffusers" (noisecraft.hf.load)
    grids: Mapping[str, Callable[[SolverConfig], tuple[SolverConfig, str]]] = field(default_factory=dict, hash=False,
                                                                                    compare=False)
    #: a latent diffusion run's autoencoder (noisecraft.runs.latent.LatentCodec): the solver draws its scaled
    #: latents (sample_shape) and the samples returned are decoded to images (output_shape); None for pixels
    codec: Any = field(default=None, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.network is None:
            net = self.net if self.eval_batch is None else FixedBatch(self.net, self.eval_batch)
            object.__setattr__(self, "network", self.config.loss.denoiser(net))

    # -- what the run is --------------------------------------------------------------------------
    @property
    def schedule(self) -> Schedule:
        """The schedule of the network's denoiser (the run's loss.schedule)."""
        return getattr(self.network, "schedule", None) or self.config.loss.schedule

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The shape of one returned sample: the decoded image of a latent run, else sample_shape."""
        return self.sample_shape if self.codec is None else self.codec.image_shape

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device if self.net is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """What samples are drawn in: float64 for a float64 network, else float32."""
        param = next(self.net.parameters(), None) if self.net is not None else None
        return torch.float64 if param is not None and param.dtype == torch.float64 else torch.float32

    @functools.cached_property
    def digest(self) -> str:
        """The first 16 hex digits of the SHA-256 of the network's weights (names, dtypes, shapes, values): which
        model drew a sample, whatever folder it was loaded from (noisecraft.runs.recipe)."""
        return weights_digest(self.net.state_dict() if self.net is not None else {})

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """(clip, threshold) of x0_hat as the run samples (noisecraft.core.bounds)."""
        return self.config.sample.clip, self.config.sample.threshold

    def solver(self, solver: str | None = None, steps: int | None = None, grid: str | list[float] | None = None,
               **options: Any) -> SolverConfig:
        """The run's SolverConfig with the given fields changed (None keeps the run's), validated. With no `grid`
        given and a named grid in the config, an optimised grid the run keeps for this solver and step count
        (`noisecraft grid optimize`, noisecraft.runs.grids) is used; `grid_source` says which grid it is. A grid
        named in `grids` is resolved by its function."""
        if isinstance(grid, str) and grid in self.grids:
            base = self.config.sample.override(solver=solver, steps=steps, options=options or None)
            return self.grids[grid](base)[0]
        cfg = self.config.sample.override(solver=solver, steps=steps, grid=grid, options=options or None)
        stored = self._stored_grid(cfg, grid)
        if stored is not None:
            return cfg.override(grid=stored.times)
        return self._consistency_count(cfg, steps, grid) or cfg

    def _consistency_count(self, cfg: SolverConfig, steps: int | None, grid: Any) -> SolverConfig | None:
        """A consistency student asked for another step count, on no grid of the caller's: its own times for that
        count (noisecraft.runs.distill.consistency_sampler); None otherwise, and for a student made before its run
        recorded the grid they come from (it keeps its stored range)."""
        info = self.config.distill
        if (info is None or info.method != "consistency" or info.grid is None or cfg.solver != "consistency"
                or grid is not None or steps is None or steps + 1 == info.steps):
            return None
        from noisecraft.runs.distill import consistency_sampler

        return consistency_sampler(self.schedule, steps + 1, info, cfg)

    def _stored_grid(self, cfg: SolverConfig, grid: str | list[float] | None) -> Any:
        if grid is not None or not isinstance(self.config.sample.grid, str):
            return None
        from noisecraft.runs.grids import stored_grid

        return stored_grid(self.run_dir, cfg.solver, cfg.steps)

    def grid_source(self, solver: str | None = None, steps: int | None = None, grid: str | list[float] | None = None) -> str:
        """Which grid `solver(solver, steps, grid)` samples on, in words."""
        if isinstance(grid, str) and grid in self.grids:
            return self.grids[grid](self.config.sample.override(solver=solver, steps=steps))[1]
        cfg = self.config.sample.override(solver=solver, steps=steps, grid=grid)
        stored = self._stored_grid(cfg, grid)
        if stored is not None:
            return stored.note
        if self._consistency_count(cfg, steps, grid) is not None:
            return f"the consistency student's times for {steps + 1} evaluation{'s' if steps else ''} ({cfg.grid} grid)"
        return f"{cfg.grid} grid" if isinstance(cfg.grid, str) else f"the given grid of {len(cfg.grid) - 1} steps"

    def with_threshold(self, threshold: float | None) -> Pipeline:
        """This run sampled with dynamic thresholding at quantile `threshold` in place of its static clip (which
        would otherwise cap s, and at clip 1 make thresholding a plain clip); unchanged if None."""
        if check_threshold(threshold) is None:
            return self
        sample_cfg = self.config.sample.model_copy(update={"threshold": threshold, "clip": None})
        return replace(self, config=self.config.model_copy(update={"sample": sample_cfg}))

    def with_eval_batch(self, eval_batch: int | None) -> Pipeline:
        """This run with its network evaluated in chunks of `eval_batch` rows (bitwise batch-invariant), or
        on whole batches (None)."""
        if eval_batch == self.eval_batch:
            return self
        return replace(self, eval_batch=eval_batch, network=None)

    def reference(self) -> np.ndarray | None:
        """The run's training data (for side-by-side pictures), or None if it cannot be read here."""
        try:
            return self.config.data.load().x.numpy()
        except ValueError:
            return None

    # -- conditions -------------------------------------------------------------------------------
    def route(self, label: int | None = None, prompt: str | None = None, classifier: str | None = None) -> Route:
        """What a label or prompt means for this run: a text run embeds the prompt; otherwise a prompt goes to
        its nearest class description (noisecraft.guide.text)."""
        if prompt is not None and label is not None:
            raise ValueError("pass `label` or `prompt`, not both")
        if prompt is None:
            return Route("none") if label is None else Route("class", label)
        if self.config.model.text and classifier is None:
            from noisecraft.guide.text import embed

            return Route("text", embedding=embed([prompt]),
                         note=f"prompt {prompt!r} -> its sentence embedding (text-conditioned run)")
        from noisecraft.guide.text import prompt_to_class

        label, similarity = prompt_to_class(prompt)
        return Route("class", label, note=f"prompt {prompt!r} -> nearest class {label} (similarity {similarity:.2f}; "
                                          "class-conditioned run)")

    def denoiser(self, label: int | None = None, prompt: str | None = None, guidance: float = 1.0,
                 classifier: str | None = None, route: Route | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        """x0_hat(x, t) as sampling uses it: unconditional (the null condition of a guidable run), steered to a
        class (classifier-free, or classifier guidance with a noisy-classifier folder) or a prompt, and bounded
        by the run's clip or threshold."""
        from noisecraft.guide.guidance import check_scale

        check_scale(guidance, "`guidance`")
        route = route or self.route(label, prompt, classifier)
        if route.kind == "text":
            return steer.text_denoiser(self, route.embedding, guidance)
        if route.kind == "class" and classifier is not None:
            return steer.classifier_denoiser(self, route.label, guidance, classifier)
        if route.kind == "class":
            return steer.class_denoiser(self, route.label, guidance)
        if classifier is not None or guidance != 1.0:
            raise ValueError("`guidance` and `classifier` need a `label` or a `prompt`")
        return steer.base_denoiser(self)

    def float64_denoiser(self) -> Callable[[Tensor, Tensor], Tensor]:
        """The unconditional (null-condition), unbounded network as a float64, CPU-in/CPU-out function (the likelihood and ELBO
        work in float64); the network runs in its own dtype on its own device, gradients flowing through."""
        param = next(self.net.parameters())
        network = steer.base_denoiser(self, bounded=False)  # the null condition of a guidable conditional run

        def denoise(x: Tensor, t: Tensor) -> Tensor:
            t = t.clamp(0.0, 1.0)  # callers outside the ReverseProcess (diagnostics, figures) get the same guard
            return network(x.to(device=param.device, dtype=param.dtype), t).to(device="cpu", dtype=torch.float64)

        return denoise

    def _check_drawable(self, route: Route) -> None:
        model = self.config.model
        if model.num_classes is not None and route.kind == "none":
            how = "`prompt` TEXT" if model.cond == "text" else f"`label` K (0..{model.num_classes - 1})"
            raise ValueError(f"this run is {model.cond}-conditional; choose what to draw with {how}")

    # -- sampling ---------------------------------------------------------------------------------
    def _widest_activation(self, denoise: Callable) -> int:
        """Elements of the network's widest layer output while `denoise` evaluates one sample: measured on the
        first call (one evaluation), then kept, so a small draw does not pay an extra evaluation each time."""
        if "_widest" not in self.__dict__:
            self.__dict__["_widest"] = memory.widest_activation(self.net, denoise, self.sample_shape, self.device)
        return self.__dict__["_widest"]

    def check_n(self, n: int, denoise: Callable) -> None:
        """Refuse, before any work, `n` < 1 or n samples whose solver state and network activations cannot
        fit in the memory free on the run's device (noisecraft.runs.memory); `denoise` is what will be sampled."""
        if n < 1:
            raise ValueError(f"`n` must be >= 1, got {n}")
        state = memory.STATE_COPIES * 8 * math.prod(self.sample_shape)  # 8 bytes a number: float64 at most
        # with eval_batch the network sees one fixed chunk whatever n: its activations do not grow with n
        widest = self._widest_activation(denoise) if self.net is not None and self.eval_batch is None else 0
        need = n * (state + memory.ACTIVATION_COPIES * 4 * widest)
        memory.check_fits_on(n, need, self.device)

    def _draw(self, denoise: Callable, n: int, cfg: SolverConfig, seed: int, progress: bool,
              streams: list[tuple[int, int]] | None = None, inference: bool = True) -> Tensor:
        """n draws with `cfg`; `denoise` comes bounded (steer), so the config's clip and threshold are not
        applied a second time. Row i draws from stream (base seed of `seed`, i), or from `streams[i]` when
        given (merged draws). Launched on several processes (torchrun, accelerate launch), each draws its
        shard of the rows and every process returns all n (noisecraft.runs.distributed).

        The solver runs under torch.inference_mode (no autograd bookkeeping on any tensor: about 5% of a small
        network's call), or under no_grad when `inference` is False, for a `denoise` that takes gradients itself
        (classifier guidance, measurement guidance). The rows come back as ordinary tensors."""
        self.check_n(n, denoise)
        cfg = cfg.model_copy(update={"clip": None, "threshold": None})
        rank, size = distributed.world()
        rows = distributed.shard(n, size, rank)
        if streams is None:
            base = base_seed(_generator(seed))  # one base seed, split into the rows' streams
            streams = [(base, i) for i in range(n)]
        x = torch.zeros((0, *self.sample_shape), device=self.device)
        if len(rows):
            noise = SampleNoise.of_streams(streams[rows.start:rows.stop])
            with torch.inference_mode() if inference else torch.no_grad():
                x = cfg.run(denoise, self.schedule, (len(rows), *self.sample_shape), noise, dtype=self.dtype,
                            device=self.device, progress=progress and rank == 0)
            x = x.clone() if x.is_inference() else x  # an ordinary tensor: callers may change it in place
        x = distributed.gather_rows(x.float(), n, size).cpu()
        return x if self.codec is None else self.codec.decode(x)

    def sample(self, n: int = 16, solver: str | None = None, steps: int | None = None, seed: int = 0,
               grid: str | list[float] | None = None, label: int | None = None, prompt: str | None = None,
               guidance: float = 1.0, classifier: str | None = None, threshold: float | None = None,
               progress: bool = False, route: Route | None = None) -> Tensor:
        """n samples with the run's sampler (solver, steps, grid; each None keeps the run's setting).

        label / prompt choose a class or a text condition; guidance is the scale w (1: the plain conditional
        model, 0: unconditional); classifier, a noisy-classifier folder, switches to classifier guidance;
        threshold, a quantile such as 0.95, replaces the run's clip by dynamic thresholding. `route`, from
        `route(label, prompt, classifier)`, saves embedding a prompt a second time."""
        run = self.with_threshold(threshold)
        cfg = run.solver(solver, steps, grid)  # the options first: `steps` 0 is named before anything else
        route = route or run.route(label, prompt, classifier)
        if classifier is None:
            run._check_drawable(route)
        denoise = run.denoiser(guidance=guidance, classifier=classifier, route=route)
        return run._draw(denoise, n, cfg, seed, progress, inference=classifier is None)

    def sample_parts(self, parts: list[Part], solver: str | None = None, steps: int | None = None,
                     grid: str | list[float] | None = None, guidance: float = 1.0,
                     threshold: float | None = None, prompt: str | None = None) -> list[Tensor]:
        """Several draws `sample(part.n, seed=part.seed, label=part.label, ...)` that share the sampler and
        guidance, run as one batch and split back: part k's rows are bit for bit those of its own `sample` call
        when the network is evaluated in fixed chunks (`eval_batch`; noisecraft.nets.batching), since row i of
        a part draws from its stream (seed, i) alone. Labels may differ between parts (per-row conditions); a
        `prompt` is shared by all parts."""
        if not parts:
            raise ValueError("`parts` is empty; expected at least one draw")
        run = self.with_threshold(threshold)
        cfg = run.solver(solver, steps, grid)
        labels = {part.label is None for part in parts}
        if len(labels) > 1:
            raise ValueError("`parts` mixes labelled and unlabelled draws; merge only draws of one kind")
        for part in parts:
            if part.n < 1:
                raise ValueError(f"`n` must be >= 1, got {part.n}")
        if prompt is not None:
            if parts[0].label is not None:
                raise ValueError("pass `label` or `prompt`, not both")
            route = run.route(None, prompt)
        elif parts[0].label is None:
            route = Route("none")
        else:
            route = Route("class", torch.tensor([part.label for part in parts for _ in range(part.n)]))
        run._check_drawable(route)
        denoise = run.denoiser(guidance=guidance, route=route)
        streams = [(base_seed(_generator(part.seed)), i) for part in parts for i in range(part.n)]
        x = run._draw(denoise, len(streams), cfg, 0, False, streams)
        return list(x.split([part.n for part in parts]))

    # -- inverse problems -------------------------------------------------------------------------
    def image_shape(self, what: str = "image") -> tuple[int, int, int]:
        """(C, H, W) of the run's images (a latent run's decoded images); a ValueError for a run of vectors."""
        if not self.is_image:
            raise ValueError(f"this run models vectors of shape {self.sample_shape}; {what}s need an image model")
        return self.output_shape

    def _check_pixels(self, what: str) -> None:
        """A ValueError for a latent run: this method acts on the pixels the solver draws."""
        if self.codec is not None:
            raise ValueError(f"this is a latent diffusion run (autoencoder {self.config.latent.vae}); {what} "
                             "needs a pixel-space run; a latent run takes the measurement through its decoder with "
                             "method 'ddnm'")

    def _guided(self, method: str, measurement: Any, zeta: float = 1.0) -> Callable:
        """x0_hat corrected by a measurement of the images: DDNM projection (Wang et al. 2023), DPS (Chung et al.
        2023) or moment matching (Rozet et al. 2024); a latent run's through its decoder
        (noisecraft.runs.latent.guided)."""
        from noisecraft.guide.inverse import dps, projection

        if self.codec is not None:
            from noisecraft.runs.latent import guided

            return guided(self, method, measurement, zeta)
        denoise = steer.base_denoiser(self)
        return {"ddnm": lambda: projection(denoise, measurement, self.schedule),
                "dps": lambda: dps(denoise, measurement, self.schedule, zeta),
                "mmps": lambda: steer.moment_matched_denoiser(self, measurement)}[method]()

    def image(self, image: Any, shape: tuple[int, ...] | None = None, what: str = "image") -> Tensor:
        """An image as (1, C, H, W) in [-1, 1]: a PNG/JPEG path, or an array of shape (C, H, W) or (1, C, H, W)."""
        from noisecraft.data.files import load_image

        shape = tuple(shape or self.image_shape(what))
        if isinstance(image, (str, Path)):
            return load_image(image, shape, what)
        x = torch.as_tensor(np.asarray(image) if not isinstance(image, Tensor) else image, dtype=torch.float32)
        x = x[None] if x.ndim == len(shape) else x
        if tuple(x.shape) != (1, *shape):
            raise ValueError(f"{what} has shape {tuple(x.shape)}; expected {shape} or {(1, *shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{what} holds NaN or inf values; expected finite numbers in [-1, 1]")
        return x

    def mask(self, mask: Any) -> Any:
        """An inpainting Mask (1 = known): a grayscale PNG path (white = known), an array or a Mask."""
        from noisecraft.guide.measurements import Mask, mask_from_array, mask_from_png

        if isinstance(mask, Mask):
            return mask
        if isinstance(mask, (str, Path)):
            return mask_from_png(mask, self.output_shape)
        return mask_from_array(mask.cpu().numpy() if isinstance(mask, Tensor) else mask, self.output_shape)

    def default_method(self, task: str) -> str:
        """The method `task` ('denoise' or 'restore') uses when none is given: PIXEL_DEFAULTS, 'ddnm' on a latent run.
        (Inpainting and super-resolution have one default for every run, in their signatures.)"""
        return PIXEL_DEFAULTS[task] if self.codec is None else "ddnm"

    def _restore_with(self, denoise: Callable, n: int, steps: int, seed: int, solver: str = "ddpm") -> Tensor:
        """n draws of a measurement-guided denoiser with `solver` (DDPM steps by default) on the run's grid."""
        return self._draw(denoise, n, self.solver(solver, steps), seed, False, inference=False)

    def inpaint(self, image: Any, mask: Any, method: str = "repaint", n: int = 8, solver: str = "ddpm",
                steps: int = 50, seed: int = 0, jump_length: int = 5, jump_count: int = 5, zeta: float = 1.0) -> Tensor:
        """n completions of the unknown pixels (mask 0) of `image`: RePaint (Lugmayr et al. 2022), replacement
        with any `solver` (Song et al. 2021, app. I), DPS (Chung et al. 2023) or moment matching (Rozet et al.
        2024). The known pixels of every completion are the input's exactly (pasted back at the end, as RePaint's
        last step and diffusers' inpainting pipelines do; DPS and moment matching only approach them).

        A latent run solves the same problem on the latent grid: the image is encoded and a latent position is
        known when its whole f x f block of pixels is (LatentCodec.latent_mask); completions are decoded and the
        known pixels pasted back."""
        from noisecraft.guide.inverse import dps, projection, repaint
        from noisecraft.guide.measurements import Mask, measure

        _check_choice(method, INPAINT_METHODS, "inpainting method")
        known, x0 = self.mask(mask), self.image(image)
        codec = self.codec
        if codec is None:
            meas = measure(known, x0)
        else:  # on the latent grid
            meas = measure(Mask(codec.latent_mask(known.mask)), codec.encode(x0))
        denoise = steer.base_denoiser(self)
        if method == "repaint":
            self.check_n(n, denoise)
            with torch.no_grad():
                x = repaint(denoise, self.schedule, meas, (n, *self.sample_shape), steps, jump_length, jump_count,
                            _generator(seed)).float()
            x = x if codec is None else codec.decode(x)
        else:
            wrapped = {"replacement": lambda: projection(denoise, meas),
                       "dps": lambda: dps(denoise, meas, self.schedule, zeta),
                       "mmps": lambda: steer.moment_matched_denoiser(self, meas)}[method]()
            x = self._restore_with(wrapped, n, steps, seed, solver if method == "replacement" else "ddpm")
        return torch.where(known.mask.bool().expand_as(x), x0.float().expand_as(x), x)

    def upscale(self, image: Any, factor: int = 2, method: str = "ddnm", n: int = 8, steps: int = 50, seed: int = 0,
                sigma: float = 0.0, zeta: float = 1.0) -> Tensor:
        """n high-resolution images whose `factor`x average pooling is `image` (noise std sigma): DDNM (Wang et
        al. 2023), DPS or moment matching, on DDPM steps. A latent run measures its decoded images (DDNM or DPS
        through the decoder, noisecraft.runs.latent.guided) and returns them decoded."""
        from noisecraft.guide.measurements import AvgPool, Measurement

        _check_choice(method, UPSCALE_METHODS, "super-resolution method")
        if factor not in (2, 4):
            raise ValueError(f"`factor` must be 2 or 4, got {factor}")
        if not sigma >= 0:
            raise ValueError(f"`sigma` must be >= 0, got {sigma}")
        c, h, w = self.image_shape("low-resolution image")
        if h % factor:
            raise ValueError(f"the model's {h}x{w} images are not divisible by `factor` {factor}")
        small = self.image(image, (c, h // factor, w // factor), "low-resolution image")
        wrapped = self._guided(method, Measurement(AvgPool(factor), small, sigma), zeta)
        return self._restore_with(wrapped, n, steps, seed)

    def denoise(self, image: Any, sigma: float, method: str | None = None, n: int = 8, steps: int = 50,
                seed: int = 0) -> Tensor:
        """n posterior samples of the clean image given `image` = clean + sigma * noise: the reverse SDE started at
        the matching time (posterior, the default), moment matching or DDNM (a latent run: DDNM through its
        decoder, its default)."""
        method = method or self.default_method("denoise")
        from noisecraft.guide.inverse import denoise_observation
        from noisecraft.guide.measurements import Identity, Measurement

        _check_choice(method, DENOISE_METHODS, "denoising method")
        if method == "posterior":
            self._check_pixels("denoising by the reverse SDE from the observation (`method` 'posterior')")
        if not sigma > 0:
            raise ValueError(f"`sigma` must be > 0 (the noise std in [-1, 1] units), got {sigma}")
        y = self.image(image, what="noisy image")
        denoise = steer.base_denoiser(self)
        if method == "posterior":
            self.check_n(n, denoise)
            with torch.no_grad():
                y_n = y.expand(n, *y.shape[1:])
                return denoise_observation(denoise, self.schedule, y_n, sigma, "ddpm", steps, _generator(seed)).float()
        return self._restore_with(self._guided(method, Measurement(Identity(), y, sigma)), n, steps, seed)

    def restore(self, measurement: Any, method: str | None = None, n: int = 8, steps: int = 50, seed: int = 0,
                zeta: float = 1.0) -> Tensor:
        """n samples of p(x | y) for a linear measurement y = A x + sigma n of any operator (a
        noisecraft.guide.measurements.Measurement: k-space Fourier, blur, pooling, ...), whose y holds one
        observation or one per sample: DDNM (Wang et al. 2023), DPS (Chung et al. 2023) or moment matching
        (Rozet et al. 2024), on DDPM steps; a latent run's operator acts on its decoded images (DDNM or DPS
        through the decoder). The default method: moment matching, and DDNM on a latent run."""
        method = method or self.default_method("restore")
        _check_choice(method, RESTORE_METHODS, "restoration method")
        if measurement.y.shape[0] not in (1, n):
            raise ValueError(f"the measurement holds {measurement.y.shape[0]} observations; expected 1 or `n` = {n}")
        denoise = steer.base_denoiser(self)
        self.check_n(n, denoise)  # probes the network with one row: before the wrappers, whose y may hold n rows
        return self._restore_with(self._guided(method, measurement, zeta), n, steps, seed)

    # -- likelihood -------------------------------------------------------------------------------
    def likelihood(self, x: Tensor | np.ndarray, probes: int = 4, exact: bool = False, rtol: float = 1e-5,
                   atol: float = 1e-5, seed: int = 0, bin_width: float | None = None) -> Any:
        """log p(x) of each row of x through the probability-flow ODE (noisecraft.analysis.likelihood): exact
        divergence or Hutchinson with `probes` fresh probes per node. With `bin_width`, x (on a grid of that
        spacing) is dequantized uniformly first. Returns a LikelihoodResult (mean_and_stderr, bits/dim).

        A latent run scores the scaled latents z = s E(x) of images x: the result is the latent NLL, log p(z)
        per latent dimension, not a likelihood of the pixels (the autoencoder's own term is not included)."""
        from noisecraft.analysis.likelihood import dequantize, log_likelihood

        if probes < 1:
            raise ValueError(f"`probes` must be >= 1, got {probes}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"`rtol` and `atol` must be > 0, got {rtol} and {atol}")
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).double()
        if self.codec is not None and tuple(x.shape[1:]) == tuple(self.output_shape):
            if bin_width:  # dequantized in pixel space, before the encoder
                x, bin_width = dequantize(x, bin_width, _generator(seed + 1)), None
            x = self.codec.encode(x.float()).double()
        if tuple(x.shape[1:]) != tuple(self.sample_shape):
            raise ValueError(f"the data has samples of shape {tuple(x.shape[1:])}, but this run models shape "
                             f"{tuple(self.sample_shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("the data holds NaN or inf values; expected finite numbers")
        g = _generator(seed)
        if bin_width:
            x = dequantize(x, bin_width, g)
        return log_likelihood(self.float64_denoiser(), self.schedule, x, divergence="exact" if exact else "hutchinson",
                              probes=probes, rtol=rtol, atol=atol, generator=g)


def load_run(run_dir: str | Path, ema: bool = True, device: str | torch.device = "cpu",
             eval_batch: int | None = None) -> Pipeline:
    """The run in `run_dir` (made by `noisecraft train` or noisecraft.runs.train.train) as a Pipeline, with the
    network of its newest intact checkpoint (EMA weights unless ema=False) on `device`; `eval_batch` fixes the
    rows per network call (bitwise batch-invariant samples, Pipeline.eval_batch)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{str(run_dir)!r} is not a run directory: expected config.yaml (made by `noisecraft train`)")
    config = load_config(run_dir / "config.yaml")
    info = json.loads((run_dir / "data.json").read_text())
    group = "ema" if ema else "model"
    path, tensors, meta = newest_intact(run_dir / "checkpoints", (group,))  # warns when it skips a damaged one
    shape = tuple(info["sample_shape"])
    net = config.model.build(shape, config.loss.time_input)
    state = net.state_dict()
    check_weights(state, tensors[group], path / f"{group}.safetensors", partial=group == "ema")
    state.update(tensors[group])  # EMA holds the floating-point tensors; integer buffers stay as built
    net.load_state_dict(state)
    net = net.to(device).eval()
    codec = None
    if config.latent is not None:
        from noisecraft.runs.latent import load_codec

        codec = load_codec(config.latent)
    return Pipeline(config, net, shape, info["is_image"], meta["step"], run_dir, eval_batch=eval_batch, codec=codec)


__all__ = ["DENOISE_METHODS", "INPAINT_METHODS", "PIXEL_DEFAULTS", "RESTORE_METHODS", "UPSCALE_METHODS", "Part", "Pipeline", "Route", "load_run"]
