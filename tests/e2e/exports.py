"""Helpers shared by the e2e tests that drive the export directly: announce a labeled batch, await latest.json."""

from __future__ import annotations

import json
from typing import Any

from labelloop_core import contract
from sandbox.harness import LocalCloud


def announce_and_await_export(
    cloud: LocalCloud, dataset: str, manifest_key: str, *, timeout: float, message: str, interval: float = 1.0
) -> Any:
    """Publish the "Batch Labeled" event for ``manifest_key``; wait for and return the dataset's latest.json."""
    detail = {"dataset": dataset, "batch_id": "b1", "output_manifest": f"s3://{cloud.bucket}/{manifest_key}"}
    cloud.client("events").put_events(
        Entries=[
            {
                "Source": contract.WORKFLOW_EVENT_SOURCE,
                "DetailType": contract.BATCH_LABELED,
                "Detail": json.dumps(detail),
            }
        ]
    )
    latest_key = f"exports/{dataset}/latest.json"
    cloud.wait_for(
        lambda: latest_key in cloud.list_keys(f"exports/{dataset}/"),
        timeout=timeout,
        interval=interval,
        message=message,
    )
    return cloud.read_json(latest_key)
