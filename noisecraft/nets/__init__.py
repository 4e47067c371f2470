"""Networks behind the denoiser contract `fn(x_in, noise_level[, class])`: an MLP for vectors and 2-D data,
diffusers' UNet2DModel or a DiT for images, a 1-D U-Net for signals (unet1d). `NetConfig` builds each from a plain config."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from noisecraft.nets.dit import DiT
from noisecraft.nets.mlp import MLP
from noisecraft.nets.unet import UNet
from noisecraft.nets.unet1d import UNet1D


class NetConfig(BaseModel):
    """Which network and its size; `kind="auto"` picks the UNet for images and the MLP for vectors."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: Literal["auto", "mlp", "unet", "unet1d", "dit"] = "auto"
    # MLP; the DiT's hidden width and number of blocks too
    width: int = Field(256, ge=1)
    depth: int = Field(3, ge=1)
    # DiT (Peebles & Xie 2023): patch size and attention heads
    patch_size: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    # UNet
    block_channels: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [32, 64, 64], min_length=1)
    attention: list[bool] = Field(default_factory=lambda: [False, False, True])
    layers_per_block: int = Field(2, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    # both
    num_classes: int | None = None
    # classifier-free guidance (Ho & Salimans 2022): training replaces a label by the null label
    # `num_classes` with this probability; > 0 adds that null class's embedding to the network
    label_dropout: float = Field(0.0, ge=0, lt=1)
    time_scale: float | None = None
    # what the network is conditioned on: the class label, or a sentence embedding (Reimers & Gurevych
    # 2019) of width text_dim of a prompt made from the label (noisecraft.guide.text); the text null is zeros
    # "signal" (unet1d only): a signal of the sample's shape, concatenated as input channels (noisecraft.signals)
    cond: Literal["class", "text", "signal"] = "class"
    text_dim: int = Field(384, ge=1)

    @model_validator(mode="after")
    def _check(self) -> NetConfig:
        if len(self.attention) != len(self.block_channels):
            raise ValueError(f"attention needs one flag per level of block_channels {self.block_channels}, "
                             f"got {self.attention}")
        if self.label_dropout > 0 and self.num_classes is None:
            raise ValueError(f"label_dropout {self.label_dropout} needs num_classes (class-conditional training)")
        if self.cond == "text" and self.num_classes is None:
            raise ValueError("cond 'text' needs num_classes: training turns each of the data's labels into a prompt")
        if self.cond == "signal" and (self.kind != "unet1d" or self.num_classes is not None):
            raise ValueError(f"cond 'signal' needs kind 'unet1d' and no num_classes, got kind {self.kind!r}")
        return self

    @property
    def text(self) -> bool:
        """Whether the network takes sentence embeddings (cond 'text') rather than class labels."""
        return self.cond == "text"

    @property
    def null_label(self) -> int | None:
        """The label that means "no class" (classifier-free guidance), or None without label dropout."""
        if self.text:
            return None
        return self.num_classes if self.num_classes is not None and self.label_dropout > 0 else None

    @property
    def guidable(self) -> bool:
        """Whether the network was trained with a null condition (label dropout), so CFG can use it."""
        return self.num_classes is not None and self.label_dropout > 0

    @property
    def class_embeddings(self) -> int | None:
        """Rows of the network's class embedding: the classes, plus the null label when there is one."""
        if self.num_classes is None or self.text:
            return None
        return self.num_classes + (self.null_label is not None)

    def null_cond(self, batch: int, device: Any = None) -> Tensor:
        """The null condition for a batch (classifier-free guidance, Ho & Salimans 2022): the null label
        in class mode, the zero embedding (batch, text_dim) in text mode."""
        if not self.guidable:
            raise ValueError("this run has no null condition: it was trained without label dropout "
                             "(model.label_dropout = 0)")
        if self.text:
            return torch.zeros(batch, self.text_dim, device=device)
        return torch.full((batch,), self.null_label, dtype=torch.long, device=device)

    def build(self, sample_shape: tuple[int, ...], time_input: str = "t") -> nn.Module:
        """The network for samples of `sample_shape` ((dim,) or (channels, height, width))."""
        # t in [0, 1] is spread over 0 ... 1000 as DDPM's timesteps; c_noise = ln(sigma)/4 spans about
        # -1.5 ... 1.1, spread by 250 to the same order; timesteps already have it.
        default_scale = {"t": 1000.0, "c_noise": 250.0, "log_snr": 25.0, "timestep": 1.0}[time_input]
        scale = default_scale if self.time_scale is None else self.time_scale
        kind = self.kind if self.kind != "auto" else ("unet" if len(sample_shape) == 3 else "mlp")
        if kind == "unet1d":
            return self._unet1d(sample_shape, scale)
        if kind == "dit":
            if len(sample_shape) != 3 or sample_shape[1] != sample_shape[2]:
                raise ValueError(f"the DiT takes square images (channels, size, size), got {sample_shape}")
            return DiT(sample_shape[1], sample_shape[0], self.width, self.depth, self.heads, self.patch_size,
                       self.class_embeddings, scale, self._text_dim)
        if kind == "mlp":
            if len(sample_shape) != 1:
                raise ValueError(f"the MLP takes vectors, got samples of shape {sample_shape}; use kind 'unet'")
            return MLP(sample_shape[0], self.width, self.depth, self.class_embeddings, scale, self._text_dim)
        if len(sample_shape) != 3 or sample_shape[1] != sample_shape[2]:
            raise ValueError(f"the UNet takes square images (channels, size, size), got {sample_shape}")
        return UNet.build(sample_shape[1], sample_shape[0], self.block_channels, self.attention,
                          self.layers_per_block, self.class_embeddings, dropout=self.dropout, time_scale=scale,
                          text_dim=self._text_dim)

    def _unet1d(self, sample_shape: tuple[int, ...], scale: float) -> nn.Module:
        """The 1-D U-Net for signals of shape (length,) or (channels, length) (noisecraft.nets.unet1d)."""
        if len(sample_shape) not in (1, 2) or self.num_classes is not None:
            raise ValueError(f"the 1-D U-Net takes unlabelled signals (length,) or (channels, length), got samples "
                             f"of shape {sample_shape}" + (" with classes" if self.num_classes is not None else ""))
        channels = 1 if len(sample_shape) == 1 else sample_shape[0]
        return UNet1D(channels, self.block_channels, self.attention, self.layers_per_block,
                      channels if self.cond == "signal" else 0, scale, dropout=self.dropout,
                      squeeze=len(sample_shape) == 1)

    @property
    def _text_dim(self) -> int | None:
        return self.text_dim if self.text else None


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


__all__ = ["MLP", "DiT", "NetConfig", "UNet", "UNet1D", "count_parameters"]
