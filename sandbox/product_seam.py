"""The one place the emulation reaches into the product's adapters (lambdas/adapters) directly.

Everything else of the product runs from the deployed zip. The Label Studio bridge
(`sandbox.labelstudio_local`) plays the annotators and checks the token before the run, so it
speaks Label Studio's API from the host, and it uses the product's own client for that: the same
retries, timeouts and error type the deployed functions use, instead of a second client that could
drift from it. Any other need of an adapter outside the zip goes here, with its reason.
"""

from __future__ import annotations

from adapters.labelstudio import LabelStudioApiError, LabelStudioClient

__all__ = ["LabelStudioApiError", "LabelStudioClient"]
