"""Tests of "the mean quality above one threshold exceeds a level": STaR betting and Hoeffding.

Betting (the default): a gambler starts with wealth 1 and, before each new quality ``x`` in [0, 1],
stakes a fraction ``lam >= 0`` on "x is above the level m"; wealth is multiplied by
``1 + lam * (x - m)``. If the true mean is at most m, wealth is a nonnegative supermartingale, so by
Ville's inequality it ever reaches ``1 / alpha`` with probability at most ``alpha`` - at any stopping
time, over any number of batches. Crossing ``1 / alpha`` therefore certifies ``mean > m`` at level
``1 - alpha``. Validity needs only that ``lam`` is computed from EARLIER observations (and the
planned count) and keeps ``1 + lam * (x - m) > 0``; how ``lam`` is chosen only decides the power.

The bets are STaR bets (Voracek & Orabona, "STaR-Bets", NeurIPS 2025): each bet is the size that
would take the remaining wealth gap to ``1 / alpha`` by the planned horizon under a running
variance estimate, capped so that a quality of 0 can never ruin the gambler. Unlike Hoeffding's
bound, whose width depends only on the count, the test adapts to the spread of the qualities: when
the model is usually right (qualities near 1) it certifies with a few dozen pairs.

Hoeffding (``calibration.bound: hoeffding``): ``mean - sqrt(ln(1/alpha) / (2 n))``, valid for one
look at a fixed set of pairs; kept for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["BETTING", "BOUNDS", "HOEFFDING", "Wealth", "hoeffding_lower_bound", "star_feed"]

BETTING = "betting"
HOEFFDING = "hoeffding"
BOUNDS = (BETTING, HOEFFDING)

#: Regularisers of the STaR bet (they affect power only, never validity).
_K_EPS = 1e-4
_CAP_EPS = 1e-3


@dataclass(slots=True)
class Wealth:
    """One betting test of ``H0: mean <= level`` over a stream of qualities (state carried across batches)."""

    level: float
    log_wealth: float = 0.0
    squares: float = 0.0  # sum of (x - level)^2 over the observations seen so far
    crossed: bool = False

    def as_list(self) -> list[object]:
        """Compact JSON form ``[log_wealth, squares, crossed]`` (the level is stored once per state)."""
        return [self.log_wealth, self.squares, self.crossed]


def star_feed(test: Wealth, qualities: Iterable[float], seen: int, horizon: int, log_inv_alpha: float) -> None:
    """Feed ``qualities`` (in their fixed order) to ``test``, which has already seen ``seen`` values.

    ``horizon`` is the planned total count (``seen`` + this stream's length, known from counts
    before any quality is read). Stops at the first crossing; a crossed test stays crossed.
    """
    if test.crossed:
        return
    m = test.level
    cap = 1.0 / (m + _CAP_EPS)
    var_cap = m * (1.0 - m) + _CAP_EPS
    log_w, squares = test.log_wealth, test.squares
    t = seen
    for x in qualities:
        k = t + _K_EPS
        variance = min(squares / k + m * horizon / (k * k), var_cap)
        room = max(horizon - k, _K_EPS)
        gap = max(log_inv_alpha - log_w, 0.0)
        lam = min(math.sqrt(2.0 * gap / (room * variance)), cap)
        log_w += math.log1p(lam * (x - m))
        t += 1
        if log_w >= log_inv_alpha:
            test.crossed = True
            break
        squares += (x - m) ** 2
    test.log_wealth, test.squares = log_w, squares


def hoeffding_lower_bound(total: float, n: int, confidence_level: float) -> float:
    """One-sided Hoeffding lower bound on the mean of ``n`` values in [0, 1] summing to ``total``."""
    if n <= 0:
        raise ValueError("the bound needs at least one value")
    return total / n - math.sqrt(math.log(1.0 / (1.0 - confidence_level)) / (2.0 * n))
