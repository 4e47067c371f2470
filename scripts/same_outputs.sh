#!/usr/bin/env bash
# The same command-line calls (train, sample with several solvers, guided sample, threshold, inpaint, upscale,
# denoise, likelihood, tabular fit/sample) against one checkout, then a SHA-256 of every output. Run it on two
# checkouts and diff the hashes to show a refactor changed no result:
#   PY=.venv/bin/python bash scripts/same_outputs.sh /path/to/old /tmp/old_out > old.txt
#   PY=.venv/bin/python bash scripts/same_outputs.sh "$PWD" /tmp/new_out > new.txt; diff old.txt new.txt
# rng.safetensors differs between any two runs: it holds the unseeded numpy and Python RNG states.
set -euo pipefail
ROOT=$(cd "$1" && pwd); OUT=$2; PY=$(command -v "${PY:-python3}"); PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"; rm -rf "$OUT"; mkdir -p "$OUT"; cd "$OUT"
NC() { PYTHONPATH="$ROOT" "$PY" -c "from noisecraft.cli import app; app()" "$@"; }
cat > c.yaml <<'Y'
data: {name: digits}
model: {block_channels: [16, 32], attention: [false, false], layers_per_block: 1, num_classes: 10, label_dropout: 0.2}
train: {max_steps: 40, batch_size: 32, checkpoint_every: 40, seed: 3}
sample: {clip: 1.0}
Y
cat > u.yaml <<'Y'
data: {name: moons}
train: {max_steps: 60, batch_size: 128, checkpoint_every: 60}
Y
NC train --config c.yaml --run cond > train_cond.txt 2>&1
NC train --config u.yaml --run moons > train_moons.txt 2>&1
NC sample moons --n 64 --seed 0 --out moons.npy
NC sample moons --n 64 --seed 1 --solver heun --steps 8 --out moons_heun.npy
NC sample moons --n 64 --seed 1 --solver pc --steps 8 --out moons_pc.npy
NC sample cond --class 7 --guidance 3 --n 8 --steps 10 --out cond_class7.png
NC sample cond --class 2 --guidance 2 --threshold 0.95 --n 8 --steps 10 --out cond_thr.png
"$PY" - <<'P'
import numpy as np
from PIL import Image
g = np.linspace(0, 255, 64).reshape(8, 8).astype(np.uint8); Image.fromarray(g).save("x.png")
m = np.full((8, 8), 255, np.uint8); m[:, 4:] = 0; Image.fromarray(m).save("m.png")
Image.fromarray(np.zeros((4, 4), np.uint8)).save("small.png")
P
NC inpaint cond --image x.png --mask m.png --n 4 --steps 10 --jump-length 2 --jump-count 2 --out inpaint.png
NC inpaint cond --image x.png --mask m.png --method mmps --n 2 --steps 5 --out inpaint_mmps.png
NC upscale cond --image small.png --n 2 --steps 5 --out upscale.png
NC denoise cond --image x.png --sigma 0.2 --n 2 --steps 5 --out denoise.png
NC likelihood moons --data moons --n 16 --exact > lik_moons.txt
NC tabular fit "$ROOT/noisecraft/tabular/data/penguins.csv" --target species --steps 60 --out pen > /dev/null
NC tabular sample pen --n 50 --out pen.csv > /dev/null
sed -i 's/; [0-9.]* s$//' lik_moons.txt
sha256sum cond/checkpoints/*/*.safetensors moons/checkpoints/*/*.safetensors *.npy *.png pen.csv lik_moons.txt | sed "s#  # #"
