"""Multi-worker bounding-box consolidation (what the post-annotation Lambda does per image).

Algorithm, per class: workers are visited in the order given; each worker's boxes are matched
one-to-one (optimal assignment, `matching.assign_max_weight`) to the running mean box of every
existing cluster, a pair counting when IoU >= ``cluster_iou``; a cluster takes at most one box per
worker; unmatched boxes open new clusters. A cluster is KEPT when at least ``min_support`` workers
contributed to it (default: a strict majority). The consolidated box is the coordinate mean of
its members; its confidence is ``support / n_workers * agreement`` where agreement is the mean IoU
of the members to the consolidated box. A single worker therefore passes through unchanged with
confidence 1.0, and "every worker drew nothing" is a valid background answer (no boxes).
Rejected (minority) clusters are returned too, so callers can report them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .boxes import Box
from .matching import assign_max_weight, iou

__all__ = [
    "Cluster",
    "ConsolidationError",
    "ConsolidationResult",
    "consolidate",
]


class ConsolidationError(ValueError):
    """Worker answers could not be consolidated (no workers, or a malformed answer)."""


@dataclass(frozen=True, slots=True)
class Cluster:
    """One consolidated object: its box (confidence set), the supporting worker count and agreement."""

    box: Box
    support: int
    agreement: float
    members: tuple[Box, ...]


@dataclass(frozen=True, slots=True)
class ConsolidationResult:
    """Kept clusters (the answer) and rejected minority clusters, for ``n_workers`` workers."""

    kept: tuple[Cluster, ...]
    rejected: tuple[Cluster, ...]
    n_workers: int

    @property
    def boxes(self) -> list[Box]:
        """The consolidated boxes, each carrying its confidence."""
        return [cluster.box for cluster in self.kept]

    @property
    def support(self) -> list[int]:
        """Number of supporting workers per kept box (aligned with `boxes`)."""
        return [cluster.support for cluster in self.kept]


def _mean_box(label: str, members: Sequence[Box]) -> Box:
    n = len(members)
    return Box(
        label,
        sum(b.left for b in members) / n,
        sum(b.top for b in members) / n,
        sum(b.width for b in members) / n,
        sum(b.height for b in members) / n,
    )


def consolidate(
    workers: Sequence[Sequence[Box]],
    *,
    min_support: int | None = None,
    cluster_iou: float = 0.5,
) -> ConsolidationResult:
    """Consolidate the boxes of several workers for one image (see module docstring).

    Parameters
    ----------
    workers
        One sequence of pixel boxes per worker who answered (an empty sequence = "nothing here").
    min_support
        Workers needed to keep a cluster; default ``n_workers // 2 + 1`` (strict majority);
        capped at ``n_workers``.
    cluster_iou
        Minimum IoU between a box and a cluster's mean box for them to be the same object.
    """
    n_workers = len(workers)
    min_support = _checked_support(workers, min_support, cluster_iou)
    if n_workers == 1:
        # Pass-through: the one worker's boxes, unchanged, fully supported.
        passed = tuple(Cluster(Box(b.label, b.left, b.top, b.width, b.height, 1.0), 1, 1.0, (b,)) for b in workers[0])
        return ConsolidationResult(passed, (), 1)
    clusters, means = _cluster(workers, cluster_iou)
    kept: list[Cluster] = []
    rejected: list[Cluster] = []
    for label in clusters:  # insertion order: first worker's classes first
        for group, centre in zip(clusters[label], means[label], strict=True):
            support = len(group)
            agreement = sum(iou(m, centre) for m in group) / support
            confidence = round(support / n_workers * agreement, 6)
            cluster = Cluster(
                Box(label, centre.left, centre.top, centre.width, centre.height, confidence),
                support,
                agreement,
                tuple(group),
            )
            (kept if support >= min_support else rejected).append(cluster)
    return ConsolidationResult(tuple(kept), tuple(rejected), n_workers)


def _checked_support(workers: Sequence[Sequence[Box]], min_support: int | None, cluster_iou: float) -> int:
    """Validate the answers and parameters; the support a cluster needs (never more than answered)."""
    n_workers = len(workers)
    if n_workers == 0:
        raise ConsolidationError("no worker answers to consolidate")
    for index, answer in enumerate(workers):
        for box in answer:
            if not all(math.isfinite(v) for v in (box.left, box.top, box.width, box.height)):
                raise ConsolidationError(f"worker {index} has a box with non-finite coordinates: {box!r}")
    if min_support is None:
        min_support = n_workers // 2 + 1
    if min_support < 1:
        raise ConsolidationError(f"min_support must be >= 1, got {min_support}")
    if not 0.0 < cluster_iou <= 1.0:
        raise ConsolidationError(f"cluster_iou must be within (0, 1], got {cluster_iou}")
    # Never demand more workers than answered: a lone answer must not turn into "background".
    return min(min_support, n_workers)


def _cluster(
    workers: Sequence[Sequence[Box]], cluster_iou: float
) -> tuple[dict[str, list[list[Box]]], dict[str, list[Box]]]:
    """Per label, each worker's boxes join the best-matching clusters (one box per cluster per worker).

    Returns the clusters' member boxes and their running mean boxes, by label.
    """
    clusters: dict[str, list[list[Box]]] = {}
    means: dict[str, list[Box]] = {}
    for answer in workers:
        by_label: dict[str, list[Box]] = {}
        for box in answer:
            by_label.setdefault(box.label, []).append(box)
        for label, boxes in by_label.items():
            members = clusters.setdefault(label, [])
            centres = means.setdefault(label, [])
            matched: set[int] = set()
            if centres:
                weights = [[iou(b, c) for c in centres] for b in boxes]
                for r, c in assign_max_weight(weights):
                    if weights[r][c] >= cluster_iou:
                        members[c].append(boxes[r])
                        centres[c] = _mean_box(label, members[c])
                        matched.add(r)
            for r, box in enumerate(boxes):
                if r not in matched:
                    members.append([box])
                    centres.append(_mean_box(label, [box]))
    return clusters, means
