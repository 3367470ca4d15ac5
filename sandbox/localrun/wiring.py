"""Run-time wiring: who answers for the model and the reviewers, finding images by their path under --images."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from labelloop_core import contract
from labelloop_core.contract import META_KEY
from sandbox.imagerefs import ImageRef
from sandbox.localrun.spec import LocalRunError, ModelChoice, ReviewerChoice, RunSpec, sha256_hex
from sandbox.model_emulation import NoPredictor, Predictor, ReplayPredictions, SyntheticDetector
from sandbox.workforce import AcceptPrelabels, FailingWorkforce, Oracle, ReplayAnswers, Task, WorkerAnswer, Workforce


class ImageNames:
    """Maps what an emulated service sees of an image (bytes, S3 key) back to its path under --images.

    Originals are known by content hash and by their ``incoming/<dataset>/`` key; EXIF-normalised
    copies under ``work/derived/<dataset>/`` by key, or by content once they exist in the bucket
    (InvokeEndpoint only sees bytes).
    """

    def __init__(self, files: Iterable[tuple[Path, str]]) -> None:
        self._by_sha: dict[str, str] = {}
        for path, relative in files:
            self._by_sha.setdefault(sha256_hex(path.read_bytes()), relative)
        self._prefixes: list[str] = []
        self._derived_prefix: str | None = None
        self._seen_derived: set[str] = set()
        self._s3: Any = None
        self._bucket: str | None = None
        self._lock = threading.Lock()

    def attach(self, s3: Any, bucket: str, incoming_prefix: str, work_prefix: str, dataset: str) -> None:
        """Learn the deployed bucket and prefixes (after deploy)."""
        self._s3, self._bucket = s3, bucket
        self._derived_prefix = f"{work_prefix}{contract.DERIVED_DIR}{dataset}/"
        self._prefixes = [f"{incoming_prefix}{dataset}/", self._derived_prefix]

    def resolve(self, ref: ImageRef) -> str | None:
        if ref.key:
            for key in (ref.key, unquote_plus(ref.key)):
                for prefix in self._prefixes:
                    if key.startswith(prefix):
                        return key[len(prefix) :]
        if ref.data is None:
            return None
        digest = sha256_hex(ref.data)
        if digest not in self._by_sha:
            self._learn_derived()
        return self._by_sha.get(digest)

    def _learn_derived(self) -> None:
        if self._s3 is None or self._derived_prefix is None:
            return
        with self._lock:
            pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=self._derived_prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if key in self._seen_derived:
                        continue
                    body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
                    self._seen_derived.add(key)
                    self._by_sha.setdefault(sha256_hex(body), key[len(self._derived_prefix) :])


@dataclass
class NamedPredictor:
    """A replay predictor that finds its record by the image's path under --images."""

    names: ImageNames
    inner: ReplayPredictions

    def predict(self, image: ImageRef, labels: list[str]) -> list[dict[str, Any]]:
        relative = self.names.resolve(image)
        if relative is None:
            return self.inner.predict(image, labels)
        return self.inner.predict(ImageRef(data=image.data, key=relative), labels)


@dataclass
class NamedWorkforce:
    """A file-driven workforce (answers/oracle) that finds its record by the path under --images."""

    names: ImageNames
    inner: Workforce

    def answer(self, task: Task) -> list[WorkerAnswer]:
        relative = self.names.resolve(task.image)
        if relative is None:
            meta = task.data_object.get(META_KEY)
            if isinstance(meta, dict) and isinstance(meta.get("key"), str):
                relative = self.names.resolve(ImageRef(key=meta["key"]))
        if relative is None:
            return self.inner.answer(task)
        return self.inner.answer(dataclasses.replace(task, image=ImageRef(key=relative)))


def build_predictor(model: ModelChoice, names: ImageNames, labels: tuple[str, ...]) -> Predictor:
    if model.kind == "synthetic":
        return SyntheticDetector(list(labels))
    if model.kind == "replay":
        try:
            return NamedPredictor(names, ReplayPredictions(model.records))
        except ValueError as exc:
            raise LocalRunError(f"--model replay:{model.file}: {exc}") from exc
    return NoPredictor()


def build_workforce(reviewer: ReviewerChoice, names: ImageNames, spec: RunSpec) -> Workforce:
    try:
        if reviewer.kind == "answers":
            return NamedWorkforce(names, ReplayAnswers(reviewer.records))
        if reviewer.kind == "oracle":
            return NamedWorkforce(names, Oracle(reviewer.records, noise=spec.oracle_noise, seed=spec.seed))
    except Exception as exc:
        raise LocalRunError(f"--reviewer {reviewer.kind}:{reviewer.file}: {exc}") from exc
    if reviewer.kind == "fail":
        return FailingWorkforce(reviewer.reason or "rehearsed failure")
    if reviewer.kind == "fail-adjust":
        return FailingWorkforce(reviewer.reason or "rehearsed failure", only="adjust", otherwise=AcceptPrelabels())
    return AcceptPrelabels()
