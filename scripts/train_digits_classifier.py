"""Train the small CNN behind the digits metrics and write noisecraft/metrics/digits_classifier.safetensors.

Trained on the digits train split only (the 500 test images stay unseen), with one-pixel random shifts,
Adam, 60 epochs, seed 0. Prints the test accuracy. Run: .venv/bin/python scripts/train_digits_classifier.py
"""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from noisecraft.data.digits import load_digits_split
from noisecraft.metrics.digits import WEIGHTS, DigitsClassifier


def shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random shifts of up to one pixel, padding with the background value -1."""
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=-1.0)
    out = torch.empty_like(x)
    offsets = torch.randint(0, 3, (x.shape[0], 2), generator=g)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy:dy + 8, dx:dx + 8]
    return out


def main() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = (torch.from_numpy(a) for a in load_digits_split("train"))
    xt, yt = (torch.from_numpy(a) for a in load_digits_split("test"))
    net = DigitsClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for epoch in range(60):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            b = perm[i:i + 64]
            loss = torch.nn.functional.cross_entropy(net(shift(x[b], g)), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (net(xt).argmax(1) == yt).float().mean().item()
    print(f"test accuracy {acc:.4f}")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(WEIGHTS))
    print(f"wrote {WEIGHTS}")


if __name__ == "__main__":
    main()
