"""Privacy attacks on a synthetic table: membership inference (three attacks) and attribute inference.

Distances (DCR) say how close synthetic rows sit to training rows; an attack says what an adversary can
learn from that. Every attack here is scored on target rows, half of them training rows (members) and half
real rows the generator never saw (non-members), by the ROC-AUC of its membership score, 0.5 meaning no
better than a coin. Each AUC comes with a reference: the same attack against a release of fresh real rows
(held-out rows that are neither targets nor the attacker's auxiliary data), which leaks nothing about the
training rows, so its AUC is what chance looks like at this sample size.

- `distance_attack`: score = -(distance from the target to its closest released row) (the DCR attack; Chen
  et al. 2020, GAN-Leaks, the "full black-box" attack; Yale et al. 2019).
- `domias_attack`: DOMIAS (van Breugel et al. 2023, AISTATS, eq. 4): score = p_S(x) / p_R(x), the density of
  the released rows over that of the attacker's reference rows from the same population, both k-nearest-
  neighbour density estimates here (the paper uses KDE or a flow), so overfitting shows as a local excess.
- `shadow_attack`: shadow modelling (Shokri et al. 2017; for synthetic data Stadler et al. 2022, USENIX
  Security, sec. 4): the attacker fits the same generator on shadow tables drawn from its auxiliary rows,
  each holding a random half of its shadow targets, describes every (target, release) pair by the target's
  k smallest distances to the release, and trains a classifier to tell in from out; the classifier then
  scores the real targets against the real release.
- `attribute_attack`: attribute inference by closest match (Giomi et al. 2023, Anonymeter, sec. 4.3): an
  adversary who knows a target's other columns takes the secret column's value from the closest released row;
  its accuracy on members beside its accuracy on non-members (the holdout reference).

The row encoding is the evaluation's (noisecraft.tabular.evaluate.distance_features): numbers scaled to
[0, 1] by the training range, categories one-hot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from noisecraft.tabular.evaluate import category_labels, distance_features

#: a generator as the shadow attack sees it: (training rows, seed) -> released rows
FitSample = Callable[[pd.DataFrame, int], pd.DataFrame]


@dataclass
class AttackSplit:
    """The rows of an attack: member targets (training rows), non-member targets and the attacker's auxiliary
    reference rows (both real held-out rows), and a release of fresh held-out rows (the chance reference)."""

    members: pd.DataFrame
    non_members: pd.DataFrame
    reference: pd.DataFrame
    fresh: pd.DataFrame

    @property
    def targets(self) -> pd.DataFrame:
        return pd.concat([self.members, self.non_members], ignore_index=True)

    @property
    def labels(self) -> np.ndarray:
        return np.r_[np.ones(len(self.members)), np.zeros(len(self.non_members))]


def split_for_attacks(train: pd.DataFrame, holdout: pd.DataFrame, max_targets: int = 1000,
                      seed: int = 0) -> AttackSplit:
    """Holdout rows in three equal parts (non-member targets, reference, fresh release); as many member
    targets drawn from `train`; at most `max_targets` of each."""
    if len(holdout) < 6 or len(train) < 2:
        raise ValueError(f"membership attacks need >= 6 held-out rows and >= 2 training rows, got {len(holdout)} "
                         f"and {len(train)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(holdout))
    third = len(holdout) // 3
    n = min(third, len(train), max_targets)
    parts = [holdout.iloc[order[i * third:(i + 1) * third]].reset_index(drop=True) for i in range(3)]
    members = train.iloc[rng.choice(len(train), n, replace=False)].reset_index(drop=True)
    return AttackSplit(members, parts[0].iloc[:n].reset_index(drop=True), parts[1], parts[2])


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def _encode(frames: list[pd.DataFrame], scale: pd.DataFrame, numeric: list[str],
            categorical: list[str]) -> list[np.ndarray]:
    return distance_features(frames, scale, numeric, categorical)


def nearest_distances(targets: np.ndarray, release: np.ndarray, k: int = 1) -> np.ndarray:
    """Sorted distances (n_targets, k) from each target to its k closest released rows."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(release))
    return NearestNeighbors(n_neighbors=k).fit(release).kneighbors(targets)[0]


def distance_attack(targets: np.ndarray, release: np.ndarray) -> np.ndarray:
    """Membership score: minus the distance to the closest released row (closer = more likely a member)."""
    return -nearest_distances(targets, release, 1)[:, 0]


def domias_attack(targets: np.ndarray, release: np.ndarray, reference: np.ndarray, k: int = 1) -> np.ndarray:
    """DOMIAS membership score log p_S(x) - log p_R(x) (van Breugel et al. 2023, eq. 4), with k-nearest-
    neighbour density estimates p(x) = k / (n V_d r_k(x)^d) (Loftsgaarden & Quesenberry 1965): the score is
    d (log r_k^R(x) - log r_k^S(x)) plus a constant, so its ranking, all an AUC sees, needs neither d nor a
    bandwidth. A kernel estimate with one bandwidth for both would blur the excess a copied row leaves at
    distance 0, which the nearest-neighbour radius keeps."""
    r_s = nearest_distances(targets, release, k)[:, -1]
    r_r = nearest_distances(targets, reference, k)[:, -1]
    return np.log(r_r + 1e-12) - np.log(r_s + 1e-12)


def _shadow_features(targets: np.ndarray, release: np.ndarray, k: int) -> np.ndarray:
    return np.log(nearest_distances(targets, release, k) + 1e-6)


def shadow_attack(fit_sample: FitSample, split: AttackSplit, release: pd.DataFrame, scale: pd.DataFrame,
                  numeric: list[str], categorical: list[str], n_shadows: int = 4, k: int = 5,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Shadow-model membership scores of split.targets against `release` and against split.fresh.

    The attacker's auxiliary rows (split.reference) are halved into shadow targets and shadow background;
    each shadow table is the background plus a random half of the shadow targets, fitted and sampled by
    `fit_sample` (as many rows as the background table); a gradient-boosted classifier learns in/out from the
    targets' k nearest distances to each shadow release (Stadler et al. 2022, sec. 4)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng([seed, 0x5AD])
    aux = split.reference
    order = rng.permutation(len(aux))
    half = len(aux) // 2
    shadow_targets, background = aux.iloc[order[:half]], aux.iloc[order[half:]]
    if len(shadow_targets) < 2 or len(background) < 1:
        raise ValueError(f"the shadow attack needs >= 6 auxiliary rows, got {len(aux)}")
    feats, labels = [], []
    (enc_targets,) = _encode([shadow_targets], scale, numeric, categorical)
    for s in range(n_shadows):
        inside = rng.random(len(shadow_targets)) < 0.5
        table = pd.concat([background, shadow_targets[inside]], ignore_index=True)
        shadow = fit_sample(table, seed + 1 + s)
        (enc_shadow,) = _encode([shadow], scale, numeric, categorical)
        feats.append(_shadow_features(enc_targets, enc_shadow, k))
        labels.append(inside.astype(int))
    x, y = np.concatenate(feats), np.concatenate(labels)
    clf = HistGradientBoostingClassifier(max_iter=100, random_state=seed)
    if len(set(y)) < 2:
        clf = None
    else:
        clf.fit(x, y)
    enc_real, enc_release, enc_fresh = _encode([split.targets, release, split.fresh], scale, numeric, categorical)
    out = []
    for rel in (enc_release, enc_fresh):
        f = _shadow_features(enc_real, rel, k)
        out.append(np.zeros(len(f)) if clf is None else clf.predict_proba(f)[:, 1])
    return out[0], out[1]


@dataclass
class AttackResult:
    """One attack's AUC against the synthetic release and against fresh real rows (chance at this size)."""

    name: str
    synthetic: float
    reference: float


def membership_attacks(train: pd.DataFrame, holdout: pd.DataFrame, synthetic: pd.DataFrame, numeric: list[str],
                       categorical: list[str], fit_sample: FitSample | None = None, max_targets: int = 1000,
                       n_shadows: int = 4, seed: int = 0) -> list[AttackResult]:
    """Membership-inference AUCs of the distance, DOMIAS and (given `fit_sample`) shadow-model attacks."""
    split = split_for_attacks(train, holdout, max_targets, seed)
    targets, release, fresh, reference = _encode([split.targets, synthetic, split.fresh, split.reference], train,
                                                 numeric, categorical)
    y = split.labels
    out = [AttackResult("membership AUC (distance)", _auc(y, distance_attack(targets, release)),
                        _auc(y, distance_attack(targets, fresh))),
           AttackResult("membership AUC (DOMIAS)", _auc(y, domias_attack(targets, release, reference)),
                        _auc(y, domias_attack(targets, fresh, reference)))]
    if fit_sample is not None:
        on_release, on_fresh = shadow_attack(fit_sample, split, synthetic, train, numeric, categorical, n_shadows,
                                             seed=seed)
        out.append(AttackResult("membership AUC (shadow)", _auc(y, on_release), _auc(y, on_fresh)))
    return out


def attribute_attack(train: pd.DataFrame, holdout: pd.DataFrame, synthetic: pd.DataFrame, secret: str,
                     numeric: list[str], categorical: list[str], max_targets: int = 1000,
                     seed: int = 0) -> AttackResult:
    """Attribute inference of column `secret` by closest match on the other columns (Giomi et al. 2023, sec.
    4.3): the share of member targets whose secret is guessed right, beside the share of non-member targets
    (a number guessed right when within 5% of the training range). Equal shares: the release tells nothing
    about the training rows beyond what it tells about the population."""
    if secret not in numeric and secret not in categorical:
        raise ValueError(f"sensitive column {secret!r} is not in the table; columns are {numeric + categorical}")
    split = split_for_attacks(train, holdout, max_targets, seed)
    known_num = [c for c in numeric if c != secret]
    known_cat = [c for c in categorical if c != secret]
    if not known_num and not known_cat:
        raise ValueError(f"attribute inference on {secret!r} needs at least one other column")
    targets, release = _encode([split.targets, synthetic], train, known_num, known_cat)
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=1).fit(release).kneighbors(targets)[1][:, 0]
    truth, guess = split.targets[secret].reset_index(drop=True), synthetic[secret].iloc[idx].reset_index(drop=True)
    if secret in categorical:
        right = (category_labels(truth) == category_labels(guess)).to_numpy()
    else:
        values = pd.to_numeric(train[secret], errors="coerce")
        tol = 0.05 * float(values.max() - values.min() or 1.0)
        a, b = pd.to_numeric(truth, errors="coerce"), pd.to_numeric(guess, errors="coerce")
        right = ((a - b).abs() <= tol).to_numpy() | (a.isna() & b.isna()).to_numpy()
    y = split.labels.astype(bool)
    return AttackResult(f"attribute inference accuracy ({secret})", float(right[y].mean()), float(right[~y].mean()))
