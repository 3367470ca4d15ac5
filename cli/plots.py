"""calibration.png: reviewed pairs (quality vs confidence), theta, the target and the lower-bound curve;
loop.png: each model version's evaluation quality and each wave's auto-accept share (the retrain loop).

matplotlib lives in the CLI only (the Lambdas never import it); it is imported when a plot is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cli.errors import CliError
from labelloop_core.contract import OUTPUT_MANIFEST


def plot_calibration(
    pairs: Sequence[tuple[float, float, bool]],
    certificate: Mapping[str, Any],
    curve: Sequence[Mapping[str, Any]],
    out: Path,
    title: str = "",
) -> Path:
    """Write the plot to ``out``. ``pairs`` are ``(confidence, quality, audited)``; ``curve`` rows are
    ``{"threshold", "n", "lower_bound"}`` per grid threshold (the certificate's evidence)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CliError("plots need matplotlib: pip install -r requirements.txt") from None

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    try:
        reviewed = [(c, q) for c, q, is_audit in pairs if not is_audit]
        audited = [(c, q) for c, q, is_audit in pairs if is_audit]
        if reviewed:
            xs, ys = [c for c, _ in reviewed], [q for _, q in reviewed]
            ax.scatter(xs, ys, s=10, alpha=0.5, color="tab:blue", label="reviewed pair")
        if audited:
            xs, ys = [c for c, _ in audited], [q for _, q in audited]
            ax.scatter(xs, ys, s=18, alpha=0.8, color="tab:orange", marker="D", label="audit")
        points = [(row["threshold"], row["lower_bound"]) for row in curve if row.get("lower_bound") is not None]
        if points:
            xs, ys = [t for t, _ in sorted(points)], [b for _, b in sorted(points)]
            bound = certificate.get("bound", "")
            ax.step(
                xs, ys, where="post", color="tab:green", lw=2, label=f"lower bound on mean quality above t ({bound})"
            )
        target = certificate.get("target")
        if isinstance(target, int | float):
            ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target}")
        theta = certificate.get("theta")
        if isinstance(theta, int | float):
            ax.axvline(theta, color="tab:red", lw=2, label=f"theta {theta:.2f} (auto-accept at or above)")
            ax.axvspan(theta, 1.0, color="tab:red", alpha=0.06)
        level = certificate.get("confidence_level")
        state = "off" if theta is None else f"{theta:.2f}"
        ax.set_title(
            (f"{title}: " if title else "")
            + f"theta {state}, {certificate.get('pairs_used', 0)} pairs"
            + (f", level {level:.0%}" if isinstance(level, int | float) else "")
        )
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("image confidence (weakest box)")
        ax.set_ylabel("quality (mIoU vs. final labels)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.2)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        try:
            fig.savefig(out)
        except OSError as exc:
            raise CliError(f"{out}: cannot write the plot ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
    return out


def run_pairs(out: Path, labels: Sequence[str], model: str | None) -> list[tuple[float, float, bool]]:
    """``(confidence, quality, audited)`` of every reviewed image of a local run (its batches' output manifests)."""
    from labelloop_core.classes import ClassRegistry
    from labelloop_core.manifest import ManifestError, iter_manifest
    from labelloop_core.prelabels import calibration_pair

    registry = ClassRegistry(list(labels))
    rows: list[tuple[float, float, bool]] = []
    for manifest in sorted((out / "batches").glob(f"*/{OUTPUT_MANIFEST}")):
        try:
            with manifest.open(encoding="utf-8") as handle:
                for line_no, line in iter_manifest(handle):
                    pair = calibration_pair(line, registry, line_no).pair
                    if pair is not None and (model is None or pair["model"] == model):
                        rows.append((pair["confidence"], pair["quality"], bool(pair["audit"])))
        except (OSError, ManifestError):
            continue  # the run report already lists unreadable batch files as problems
    return rows


def certificate_lines(final: Mapping[str, Any]) -> list[str]:
    """The certificate behind the final theta, in words."""
    theta = final.get("theta")
    level = final.get("confidence_level")
    level_text = f"{level:.0%}" if isinstance(level, int | float) else "?"
    audits = final.get("audits") or {}
    lines = []
    if theta is None:
        lines.append(f"certificate: auto-accept off ({final.get('reason')}; {final.get('pairs_used')} pairs)")
    else:
        lines.append(
            f"certificate: with {level_text} confidence, images with confidence >= {theta:.2f} have mean"
            f" quality >= {final.get('target')} ({final.get('bound')} test, lower bound {final.get('lower_bound')},"
            f" {final.get('n_above')} pairs at or above theta, {final.get('pairs_used')} pairs in all)"
        )
    mean = audits.get("mean_quality")
    lines.append(
        f"audits so far: {audits.get('images', 0)} image(s)"
        + (f", mean quality {mean:.3f}, {audits.get('below_target', 0)} below the target" if mean is not None else "")
        + f"; model {final.get('model')}"
    )
    return lines


def write_run_plot(report: Mapping[str, Any], out: Path) -> Path | None:
    """``OUT/calibration.png`` for a local run (None when the run has no calibration document)."""
    final = (report.get("threshold") or {}).get("final")
    if not isinstance(final, Mapping):
        return None
    curve = [
        {"threshold": row[0], "n": row[1], "lower_bound": row[2]}
        for row in final.get("curve") or []
        if isinstance(row, list) and len(row) == 3
    ]
    pairs = run_pairs(out, report.get("labels") or [], final.get("model"))
    return plot_calibration(pairs, final, curve, out / "calibration.png", title=str(report.get("dataset", "")))


def write_loop_plot(report: Mapping[str, Any], out: Path) -> Path | None:
    """``OUT/loop.png``: quality per evaluated version and the auto-accept share per wave (None without waves)."""
    waves = [w for w in report.get("waves") or [] if w.get("images")]
    models = [m for m in report.get("models") or [] if m.get("evaluation")]
    if len(waves) < 2 and not models:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CliError("plots need matplotlib: pip install -r requirements.txt") from None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    try:
        names = [m["version"] for m in models]
        left.bar(names, [m["evaluation"]["candidate_quality"] for m in models], color="tab:blue", label="candidate")
        left.plot(names, [m["evaluation"]["incumbent_quality"] for m in models], "o--", color="grey", label="incumbent")
        for index, model in enumerate(models):
            left.annotate(model["status"], (index, model["evaluation"]["candidate_quality"]), ha="center", va="bottom")
        left.set_ylim(0, 1.05)
        left.set_title("evaluation quality per version (same human-labeled images)")
        left.legend(loc="lower right", fontsize=8)
        numbers = [w["wave"] for w in waves]
        shares = [w["auto_accepted"] / w["images"] for w in waves]
        right.plot(numbers, shares, "o-", color="tab:red", label="auto-accepted share")
        for number, share, wave in zip(numbers, shares, waves, strict=True):
            right.annotate(str(wave.get("model_version") or ""), (number, share), ha="center", va="bottom")
        right.set_ylim(0, 1.05)
        right.set_xticks(numbers)
        right.set_xlabel("wave")
        right.set_title("auto-accept share per wave (label: pre-labeling version)")
        fig.tight_layout()
        try:
            fig.savefig(out / "loop.png")
        except OSError as exc:
            raise CliError(f"{out / 'loop.png'}: cannot write the plot ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
    return out / "loop.png"
