"""Will n samples fit? The memory one sampling call needs, estimated and checked against the memory free on
its device before any work, so `sample --n 100000000` is refused at once instead of growing to gigabytes.

Per sample: the solver's state (STATE_COPIES copies of a sample: x, x0_hat, a multistep solver's previous
x0_hat, the noise, the update; 8 bytes a number, float64 at most) and the network's widest activation in
float32 (ACTIVATION_COPIES alive at once: a layer's input and output, skip connections), measured with
forward hooks while the denoiser evaluates one sample. On the moons MLP and the digits UNet this is within
a factor 1.5 of the measured peak; it is an estimate for refusing the impossible, not a promise that a
smaller n fits.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

STATE_COPIES = 6
ACTIVATION_COPIES = 8
#: a draw needing less than this is not checked: reading the free memory costs a fifth of a millisecond, a
#: real share of a 2-evaluation draw, and a process that has loaded a network has this much to spare
ALWAYS_FITS = 64 * 2**20


def available_memory(device: torch.device | str = "cpu") -> int:
    """Bytes free for new arrays on `device`: CUDA's free memory, else psutil's available memory, else (no
    psutil) the machine's physical memory."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil
    except ImportError:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(psutil.virtual_memory().available)


def widest_activation(net: nn.Module, denoise: Callable[[Tensor, Tensor], Tensor], sample_shape: Sequence[int],
                      device: torch.device | str = "cpu") -> int:
    """Elements of the largest tensor a layer of `net` outputs while `denoise` evaluates one sample."""
    widest = 0

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal widest
        if isinstance(output, Tensor):
            widest = max(widest, output.numel())

    handles = [module.register_forward_hook(hook) for module in net.modules()]
    try:
        with torch.no_grad():
            denoise(torch.zeros(1, *sample_shape, device=device), torch.full((1,), 0.5, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return widest


def check_fits(n: int, need: int, available: int, what: str = "n") -> None:
    """A ValueError naming `what` when n samples needing `need` bytes exceed the `available` bytes."""
    if need <= available:
        return
    largest = max(0, n * available // need)
    raise ValueError(f"`{what}` = {n} samples need about {_size(need)} of memory, more than the {_size(available)} "
                     f"free; expected `{what}` <= {largest} (draw more in several calls with different seeds)")


def check_fits_on(n: int, need: int, device: torch.device | str = "cpu", what: str = "n") -> None:
    """`check_fits` against the memory free on `device`, read only when `need` exceeds ALWAYS_FITS."""
    if need > ALWAYS_FITS:
        check_fits(n, need, available_memory(device), what)


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if nbytes < 1024:
            return f"{nbytes:.0f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TB"


__all__ = ["ACTIVATION_COPIES", "ALWAYS_FITS", "STATE_COPIES", "available_memory", "check_fits", "check_fits_on", "widest_activation"]
