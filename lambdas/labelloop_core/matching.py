"""IoU, class-aware one-to-one matching and the per-image quality used for calibration.

Matching choice: an optimal assignment (Hungarian / Kuhn-Munkres, pure Python, O(n^2 m)) that
maximises the total IoU within each class. Greedy-by-IoU can pair a box with its second-best
partner and so understate quality when boxes crowd together; images carry few boxes, so the exact
method costs nothing noticeable and makes the quality number well defined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .boxes import Box

__all__ = ["Match", "assign_max_weight", "image_quality", "iou", "match_boxes"]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes, in [0, 1]; 0 when either box has no area."""
    ix = min(a.left + a.width, b.left + b.width) - max(a.left, b.left)
    if ix <= 0:
        return 0.0
    iy = min(a.top + a.height, b.top + b.height) - max(a.top, b.top)
    if iy <= 0:
        return 0.0
    inter = ix * iy
    union = a.area + b.area - inter
    if union <= 0 or not math.isfinite(union):
        return 0.0
    return min(1.0, max(0.0, inter / union))


_DENSE_LIMIT = 64  # matrices up to this many cells go straight to the dense algorithm


def assign_max_weight(weights: Sequence[Sequence[float]]) -> list[tuple[int, int]]:
    """Maximum-weight one-to-one assignment of rows to columns (Hungarian algorithm).

    ``weights[i][j] >= 0``; returns the ``(row, col)`` pairs of an optimal assignment, sorted.
    Pairs of weight 0 may be omitted (callers drop weak pairs anyway). Larger matrices are split
    into connected components of positive weights first, so a crowded image costs roughly the
    sum of its clusters' cubes rather than the cube of its box count. Deterministic.
    """
    n_rows = len(weights)
    if n_rows == 0:
        return []
    n_cols = len(weights[0])
    if n_cols == 0:
        return []
    for row in weights:
        # A NaN/inf weight would stall the potentials below; ragged rows would index out of range.
        if len(row) != n_cols or not all(math.isfinite(w) for w in row):
            raise ValueError("assignment weights must be a rectangular matrix of finite numbers")
    if n_rows * n_cols <= _DENSE_LIMIT:
        return _hungarian(weights)
    pairs: list[tuple[int, int]] = []
    for rows, cols in _positive_components(weights, n_rows, n_cols):
        if rows and cols:
            sub = [[weights[r][c] for c in cols] for r in rows]
            pairs.extend((rows[a], cols[b]) for a, b in _hungarian(sub))
    return sorted(pairs)


def _positive_components(
    weights: Sequence[Sequence[float]], n_rows: int, n_cols: int
) -> list[tuple[list[int], list[int]]]:
    """The (rows, cols) of each connected component of the bipartite graph of positive weights."""
    # Union-find over rows (0..R-1) and columns (R..R+C-1) joined by positive weights.
    parent = list(range(n_rows + n_cols))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, row in enumerate(weights):
        for j, w in enumerate(row):
            if w > 0.0:
                a, b = find(i), find(n_rows + j)
                if a != b:
                    parent[a] = b
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for i in range(n_rows):
        groups.setdefault(find(i), ([], []))[0].append(i)
    for j in range(n_cols):
        groups.setdefault(find(n_rows + j), ([], []))[1].append(j)
    return list(groups.values())


def _hungarian(weights: Sequence[Sequence[float]]) -> list[tuple[int, int]]:
    """Dense Kuhn-Munkres on a validated non-empty matrix; covers ``min(rows, cols)`` pairs."""
    n_rows = len(weights)
    n_cols = len(weights[0])
    transposed = n_rows > n_cols
    if transposed:  # the algorithm below needs rows <= cols
        weights = [[weights[i][j] for i in range(n_rows)] for j in range(n_cols)]
        n_rows, n_cols = n_cols, n_rows
    # Minimise cost = -weight; potentials u (rows) and v (cols), 1-based with column 0 as a sentinel.
    inf = math.inf
    u = [0.0] * (n_rows + 1)
    v = [0.0] * (n_cols + 1)
    owner = [0] * (n_cols + 1)  # owner[j] = row matched to column j (1-based), 0 = free
    way = [0] * (n_cols + 1)
    for i in range(1, n_rows + 1):
        owner[0] = i
        j0 = 0
        minv = [inf] * (n_cols + 1)
        used = [False] * (n_cols + 1)
        while True:
            used[j0] = True
            i0 = owner[j0]
            delta = inf
            j1 = 0
            row = weights[i0 - 1]
            for j in range(1, n_cols + 1):
                if not used[j]:
                    cur = -row[j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j] = cur
                        way[j] = j0
                    if minv[j] < delta:
                        delta = minv[j]
                        j1 = j
            for j in range(n_cols + 1):
                if used[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while True:  # augment along the alternating path
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
            if j0 == 0:
                break
    pairs = [(owner[j] - 1, j - 1) for j in range(1, n_cols + 1) if owner[j] != 0]
    if transposed:
        pairs = [(c, r) for r, c in pairs]
    return sorted(pairs)


@dataclass(frozen=True, slots=True)
class Match:
    """Result of `match_boxes`: matched index pairs with their IoU, and the unmatched indices."""

    pairs: tuple[tuple[int, int, float], ...]
    unmatched_pred: tuple[int, ...]
    unmatched_truth: tuple[int, ...]


def match_boxes(pred: Sequence[Box], truth: Sequence[Box], iou_threshold: float = 0.0) -> Match:
    """Class-aware optimal one-to-one matching of predicted to true boxes.

    Only boxes of the same ``label`` can match, and a pair counts only when its IoU is strictly
    greater than ``iou_threshold`` (default: any overlap). Within each class the total IoU is
    maximised (see module docstring).
    """
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be within [0, 1), got {iou_threshold}")
    by_class: dict[str, tuple[list[int], list[int]]] = {}
    for i, box in enumerate(pred):
        by_class.setdefault(box.label, ([], []))[0].append(i)
    for j, box in enumerate(truth):
        by_class.setdefault(box.label, ([], []))[1].append(j)
    pairs: list[tuple[int, int, float]] = []
    for label in sorted(by_class):
        p_idx, t_idx = by_class[label]
        if not p_idx or not t_idx:
            continue
        matrix = []
        for i in p_idx:
            row = []
            for j in t_idx:
                value = iou(pred[i], truth[j])
                row.append(value if value > iou_threshold else 0.0)
            matrix.append(row)
        for r, c in assign_max_weight(matrix):
            if matrix[r][c] > 0.0:
                pairs.append((p_idx[r], t_idx[c], matrix[r][c]))
    pairs.sort()
    matched_p = {p for p, _, _ in pairs}
    matched_t = {t for _, t, _ in pairs}
    return Match(
        pairs=tuple(pairs),
        unmatched_pred=tuple(i for i in range(len(pred)) if i not in matched_p),
        unmatched_truth=tuple(j for j in range(len(truth)) if j not in matched_t),
    )


def image_quality(pred: Sequence[Box], truth: Sequence[Box], iou_threshold: float = 0.0) -> float:
    """Per-image mean IoU between model boxes and final (human) boxes, in [0, 1].

    Every matched pair contributes its IoU; every missed true box and every spurious predicted box
    contributes 0; the mean is over ``matched + missed + spurious``. Both sides empty is a
    perfect background answer: 1.0.
    """
    if not pred and not truth:
        return 1.0
    match = match_boxes(pred, truth, iou_threshold)
    total = sum(value for _, _, value in match.pairs)
    count = len(match.pairs) + len(match.unmatched_pred) + len(match.unmatched_truth)
    return min(1.0, max(0.0, total / count))
