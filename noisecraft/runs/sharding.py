"""Fully sharded data-parallel training (FSDP, Zhao et al. 2023): each process keeps 1/N of the weights, their
gradients, the optimiser's moments and the EMA, and gathers a layer's weights only while it runs.

`train.sharding: fsdp` shards with PyTorch's `fully_shard` (FSDP2: parameters become DTensors sharded on dim 0
over a one-dimensional device mesh) on CPU (gloo) and GPU alike; Accelerate still launches the processes,
splits the batch, runs backward and autocast (its own FSDP integration needs GPUs). Checkpoints hold whole
tensors gathered from the shards, the same files a single process or DDP writes, so a run trained on N
processes resumes on any other number and samples in one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

SHARDINGS = ("ddp", "fsdp")


def _dtensor() -> Any:
    from torch.distributed.tensor import DTensor

    return DTensor


def _units(module: nn.Module) -> list[nn.Module]:
    """The children of `module` with parameters, looking into containers (ModuleList, ModuleDict), which FSDP
    cannot wrap as they have no forward."""
    units = []
    for child in module.children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            units += _units(child)
        elif any(p.requires_grad for p in child.parameters()):
            units.append(child)
    return units


def shard_model(net: nn.Module, device: torch.device) -> nn.Module:
    """`net` sharded in place: every child with parameters is one FSDP unit (gathered only while it runs),
    the root holds the rest."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for unit in _units(net):
        fully_shard(unit, mesh=mesh)
    fully_shard(net, mesh=mesh)
    return net


def full(value: Any) -> Any:
    """A whole tensor from a sharded one (a collective: every process calls it); anything else as it is."""
    return value.full_tensor() if isinstance(value, _dtensor()) else value


def full_state(state: dict[str, Any]) -> dict[str, Any]:
    """Every value of a state dict whole, in the dict's order (the same on every process)."""
    return {key: full(value) for key, value in state.items()}


def like(value: Tensor, template: Any) -> Tensor:
    """A whole tensor sharded as `template` is (a DTensor), or unchanged when the template is a plain tensor."""
    if not isinstance(template, _dtensor()):
        return value
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(value.to(template.device), template.device_mesh, template.placements)


def shard_shadows(shadow: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """EMA shadows (whole tensors) sharded as the model's state: each process then averages its own shard."""
    state = model.state_dict()
    return {key: like(value, state[key]) for key, value in shadow.items()}


def shard_optimizer_state(state: dict, params: list[nn.Parameter]) -> dict:
    """An optimizer state_dict of whole tensors with each parameter's moments sharded as that parameter."""
    per_param = {}
    for index, entry in state["state"].items():
        p = params[int(index)]
        per_param[index] = {k: like(v, p) if isinstance(v, Tensor) and v.shape == p.shape else v
                            for k, v in entry.items()}
    return {"state": per_param, "param_groups": state["param_groups"]}


def full_optimizer_state(state: dict) -> dict:
    """An optimizer state_dict with every sharded moment whole (collective)."""
    return {"state": {i: full_state(entry) for i, entry in state["state"].items()},
            "param_groups": state["param_groups"]}


__all__ = ["SHARDINGS", "full", "full_optimizer_state", "full_state", "like", "shard_model",
           "shard_optimizer_state", "shard_shadows"]
