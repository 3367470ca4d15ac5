"""The ``cost`` section of the configuration: overrides of the price table the cost ledger uses.

Keys are the table's own (``labelloop_core.pricing.PRICES``, e.g. ``ground_truth_per_object``,
``workforce_per_task``, ``label_studio_per_task``), values USD per the table's unit; a negative,
non-numeric or unknown one fails synth naming ``labelloop.cost.<key>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.config_fields import ConfigError
from labelloop_core.pricing import PRICES, PriceError, prices

#: Context key -> price name: the table's keys, one to one (``labelloop.cost.<key>`` overrides one).
COST_KEYS: dict[str, str] = {name: name for name in PRICES}


@dataclass(frozen=True)
class CostConfig:
    """Price overrides (USD, the table's units) applied over `labelloop_core.pricing.PRICES`."""

    overrides: Mapping[str, float] = field(default_factory=dict)

    def env_value(self) -> str:
        """The overrides as the JSON the report-writing Lambdas validate at cold start (``Env.COST_PRICES``)."""
        return json.dumps(dict(sorted(self.overrides.items())), separators=(",", ":"))

    def table(self) -> dict[str, float]:
        """Every price, overrides applied."""
        return prices(self.overrides)


def parse_cost(raw: Any, where: str) -> CostConfig:
    """Validate the ``cost`` object; each error names ``<where>.<key>``."""
    if raw is None:
        return CostConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be an object of prices (known: {', '.join(sorted(PRICES))})")
    try:
        table = prices(raw, where=where)
    except PriceError as exc:
        raise ConfigError(str(exc)) from None
    return CostConfig({name: table[name] for name in raw})
