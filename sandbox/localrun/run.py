"""Run and watch: deploy the planned run into the emulation, upload in waves, wait, fetch, account, write."""

from __future__ import annotations

import hashlib
import json
import mimetypes
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelloop_core import contract
from labelloop_core.contract import (
    BATCH_REPORT_FILE,
    EXPORT_FAILED_FILE,
    EXPORT_PLAN_DIR,
    EXPORT_STATE_MACHINE_SUFFIX,
    OUTPUT_MANIFEST,
    RETRAIN_STATE_MACHINE_SUFFIX,
    RUN_REPORT_FILE,
    Cost,
    Env,
)
from sandbox.alarms import alarms_and_faults
from sandbox.cloud_api import CloudApi
from sandbox.faults import FaultInjector
from sandbox.localrun.accounting import aggregate
from sandbox.localrun.cost import run_cost
from sandbox.localrun.hosting import HostingPlayer
from sandbox.localrun.intake import dead_letters, delivery_problems, sqs_mappings
from sandbox.localrun.loop import RetrainWatcher, waves_section
from sandbox.localrun.records import IntakeRecords, collect_records
from sandbox.localrun.spec import ACCOUNT, LEARN_PROJECT, LEARN_V1_ARN, LOCAL_ENDPOINT, REGION, LocalRunError, RunPlan
from sandbox.localrun.stack import synthesize_stack
from sandbox.localrun.watch import Progress, Stopwatch, Watcher, read_json
from sandbox.localrun.wiring import ImageNames, build_predictor, build_workforce

#: Longest the run sweeps after a wave for the idle stop (``--model learn`` idles 15 s).
HOSTING_SETTLE_SECONDS = 60.0


@dataclass
class RunResult:
    """What a run produced: the report (also written to OUT/report.json) and any problems."""

    report: dict[str, Any]
    problems: list[str]
    dataset_dir: Path | None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def failed_batches(self) -> list[dict[str, Any]]:
        """Batches the workflow ended as failed (their images are listed as rejected with the cause)."""
        return [b for b in self.report.get("batches", []) if b.get("status") == "failed"]


def _waves(files: list[tuple[Path, str]], first_wave: float, count: int = 1) -> list[list[tuple[Path, str]]]:
    """Split the upload into waves; wave membership is a hash of the path, so it is spread evenly.

    ``count`` > 1: that many waves of (nearly) equal size; else ``first_wave`` of the files, then the rest.
    """
    ordered = sorted(files, key=lambda f: hashlib.sha256(f[1].encode()).hexdigest())
    if count > 1:
        parts = [ordered[i::count] for i in range(min(count, len(files)))]
        members = [{rel for _, rel in part} for part in parts]
        return [[f for f in files if f[1] in part] for part in members]
    if first_wave >= 1.0 or len(files) < 2:
        return [files]
    cut = min(len(files) - 1, max(1, round(first_wave * len(files))))
    first = {rel for _, rel in ordered[:cut]}
    return [[f for f in files if f[1] in first], [f for f in files if f[1] not in first]]


def run_local(
    plan: RunPlan,
    progress: Progress | None = None,
    assembly: Path | None = None,
    inspect: Callable[[Any], None] | None = None,
) -> RunResult:
    """Run the pipeline on the planned images (see the package doc). Raises `LocalRunError` for bad input.

    ``plan`` comes from `plan_run` (the CLI boundary). ``assembly`` is a stack already synthesized
    with `synthesize_stack` for the same spec (the demo synthesizes while it generates images);
    without it the stack is synthesized here. ``inspect`` is called with the `LocalCloud` after the
    run, before the emulation stops (benchmarks read its counters).
    """
    from sandbox.harness import LocalCloud

    spec = plan.spec
    clock = Stopwatch(progress or (lambda _text: None))
    names = ImageNames(plan.files)
    predictor = build_predictor(plan.model, names, plan.labels)
    workforce = build_workforce(plan.reviewer, names, spec)
    # Without injected faults, a rule-less injector only counts the functions' AWS calls (for the cost).
    counter = plan.fault_injector or FaultInjector(backoff_scale=1.0)

    with tempfile.TemporaryDirectory(prefix="labelloop-local-") as tmp:
        if assembly is None:
            clock.say(
                f"synthesizing the stack (labels {', '.join(plan.labels)}; model {spec.model};"
                f" reviewer {plan.reviewer.kind})"
            )
            assembly = synthesize_stack(spec, plan.labels, Path(tmp) / "cdk.out")
        with LocalCloud.start(
            assembly,
            workforce=workforce,
            predictor=predictor,
            labels=plan.labels,
            model_faults=plan.faults,
            duplicate_gt_events=spec.duplicate_job_events,
            esm_mode="manual",  # each upload wave is delivered by a flush (see _upload_waves)
            esm_retry="immediate",  # failed records are retried within the run, then dead-lettered
            workteams=[plan.workteam],  # the private workteam the stack's config names
            region=REGION,
            fault_injector=counter,
        ) as cloud:
            if cloud.deployment.account != ACCOUNT:
                raise LocalRunError(f"the emulation runs in account {cloud.deployment.account}, expected {ACCOUNT}")
            clock.say(f"deployed into the in-process emulation ({cloud.deployment.duration_s:.1f}s)")
            if plan.model.kind == "learn":
                _host_untrained_model(clock)
            if plan.model.kind == "learn-sagemaker":
                _host_untrained_endpoint(cloud, clock)
            if plan.fault_injector is not None:
                clock.say(f"injecting into the deployed functions' AWS calls: {plan.fault_injector.summary()['rules']}")
            if spec.review_backend != "labelstudio":
                result = _DeployedRun(plan, cloud, names, clock, calls=counter.calls).run()
            else:
                result = _run_with_label_studio(plan, cloud, names, clock, workforce, counter)
            alarms_and_faults(result, cloud, plan.fault_injector, clock.say)
            if inspect is not None:
                inspect(cloud)
    text = json.dumps(result.report, indent=1, ensure_ascii=False) + "\n"
    (spec.out / RUN_REPORT_FILE).write_text(text, encoding="utf-8")
    return result


def _host_untrained_model(clock: Stopwatch) -> None:
    """``--model learn``: version 1 is the learned detector before any training (it predicts nothing)."""
    from sandbox import rekognition_hosting
    from sandbox.learned_detector import LearnedDetector

    # RUNNING, as a deploy-time model is today: the idle sweep stops it after the first wave and the next
    # wave's batches start it again on demand (each wave ends with the idle stop: `_upload_waves`).
    rekognition_hosting.seed_version(
        ACCOUNT, REGION, LEARN_PROJECT, f"{LEARN_PROJECT}.v1", LearnedDetector(), arn=LEARN_V1_ARN
    )
    clock.say(
        "model v1: an untrained local detector (predicts nothing), stopped when idle and started on demand;"
        " people's labels train the next versions"
    )


def _host_untrained_endpoint(cloud: CloudApi, clock: Stopwatch) -> None:
    """``--model learn-sagemaker``: the endpoint's one variant serves the untrained learned detector (v1)."""
    from sandbox import sagemaker_training
    from sandbox.learned_detector import LearnedDetector

    key = f"{contract.MODEL_OUTPUT_PREFIX}v1/{contract.SAGEMAKER_ARTIFACT}"
    sagemaker_training.host_model(ACCOUNT, REGION, LOCAL_ENDPOINT, LearnedDetector(), cloud.bucket, key)
    clock.say(
        f"model v1: endpoint {LOCAL_ENDPOINT} serves an untrained local detector (predicts nothing); "
        "SageMaker training jobs on people's labels train the next versions"
    )


def _run_with_label_studio(
    plan: RunPlan, cloud: CloudApi, names: ImageNames, clock: Stopwatch, workforce: Any, counter: FaultInjector
) -> RunResult:
    """The run with a real Label Studio beside the emulation (`sandbox.labelstudio_local`)."""
    from sandbox.labelstudio_local import LabelStudioLocalError, run_with_label_studio

    spec = plan.spec
    assert spec.labelstudio_url and plan.labelstudio_token
    try:
        return run_with_label_studio(
            cloud,
            spec.labelstudio_url,
            plan.labelstudio_token,
            dataset=spec.dataset,
            work_prefix=function_env(cloud).get(contract.Env.WORK_PREFIX, contract.DEFAULT_WORK_PREFIX),
            workforce=None if plan.reviewer.kind == "human" else workforce,
            labels=plan.labels,
            say=clock.say,
            region=REGION,
            run=lambda tick: _DeployedRun(plan, cloud, names, clock, tick, counter.calls).run(),
        )
    except LabelStudioLocalError as exc:
        raise LocalRunError(str(exc)) from exc


class _DeployedRun:
    """One run against a deployed stack: upload, watch, fetch the export, account and write the report."""

    def __init__(
        self,
        plan: RunPlan,
        cloud: CloudApi,
        names: ImageNames,
        clock: Stopwatch,
        on_poll: Callable[[], None] | None = None,
        calls: Mapping[str, int] | None = None,
    ) -> None:
        self.plan, self.spec, self.cloud, self.clock = plan, plan.spec, cloud, clock
        self.calls = calls if calls is not None else {}
        env = self.env = function_env(cloud)
        self.work_prefix = env.get(contract.Env.WORK_PREFIX, contract.DEFAULT_WORK_PREFIX)
        self.exports_prefix = cloud.outputs.get("ExportsPrefix", contract.DEFAULT_EXPORTS_PREFIX)
        names.attach(cloud.client("s3"), cloud.bucket, cloud.incoming_prefix, self.work_prefix, self.spec.dataset)
        self.hosting = HostingPlayer(cloud, clock)
        on_poll = _with_hosting(on_poll, self.hosting)

        self.mappings = sqs_mappings(cloud)
        self.machine = _workflow_arn(cloud, env)
        self.export_machine = _export_arn(cloud, env)
        self.watcher = Watcher(
            cloud, self.spec.dataset, self.work_prefix, self.machine, clock, on_poll, self.export_machine
        )
        retrain = _retrain_arn(cloud)
        self.loop = (
            RetrainWatcher(cloud, retrain, self.exports_prefix, self.spec.dataset, clock, on_poll) if retrain else None
        )
        self.wave_batches: list[tuple[int, int, list[str]]] = []
        self.problems: list[str] = []

    def run(self) -> RunResult:
        spec, cloud = self.spec, self.cloud
        if not self.mappings:
            self.problems.append(
                "the deployed stack has no SQS event source mapping: nothing starts batches (intake missing)"
            )
        if self.machine is None:
            self.problems.append(
                "the deployed stack has no workflow state machine: images can be uploaded but not labeled"
            )
        if self.plan.not_uploaded:
            self.clock.say(f"not uploaded (the run's own input files): {', '.join(self.plan.not_uploaded)}")
        uploaded = self._upload_waves()
        if self.hosting.deployed and not self.hosting.settle(HOSTING_SETTLE_SECONDS):
            self.problems.append(
                f"a model version was still hosted {HOSTING_SETTLE_SECONDS:.0f}s after the last batch: "
                f"{self.hosting.hosted()}"
            )
        self.problems += [f"intake: {p}" for p in delivery_problems(cloud.esm_batches, cloud.poller.warnings)]
        self._check_exports()
        latest, document, dataset_dir = self._fetch_export()
        intake = IntakeRecords(dead_letters(cloud, self.mappings), len(cloud.esm_batches))
        records = collect_records(
            cloud, spec.dataset, self.work_prefix, uploaded, intake, (latest, document), self.watcher
        )
        report, accounting_problems = aggregate(records, spec, self.plan.labels, self.plan.reviewer)
        report["export_versions"] = self._export_versions()
        if self.loop is not None:
            report["models"] = self.loop.models()
        if self.hosting.deployed:
            report["model_hosting"] = self.hosting.report()
        report["waves"] = waves_section(
            self.wave_batches, report["batches"], self.cloud, self.work_prefix, spec.dataset
        )
        labeled = int(report["auto_accepted"]) + int(report["human_reviewed"])
        reports = [batch.report for batch in records.batches]
        report[Cost.FIELD] = run_cost(cloud, self.env, reports, labeled, self.calls, ACCOUNT, REGION)
        self.problems += accounting_problems
        if latest is None and (report["auto_accepted"] or report["human_reviewed"]):
            self.problems.append(
                f"labeled images but no export was written; what the emulation saw:\n{cloud.diagnostics()}"
            )
        self._copy_batch_records(report)
        report["problems"] = self.problems
        spec.out.mkdir(parents=True, exist_ok=True)
        (spec.out / RUN_REPORT_FILE).write_text(
            json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        return RunResult(report, self.problems, dataset_dir)

    def _upload_waves(self) -> list[str]:
        """Upload wave by wave; after each, deliver the upload events and wait for the batches to end."""
        spec, cloud = self.spec, self.cloud
        uploaded: list[str] = []
        waves = _waves(self.plan.files, spec.first_wave, spec.waves)
        deadline = time.monotonic() + spec.timeout_s
        for number, wave in enumerate(waves, start=1):
            before = set(self.watcher.batches())
            keys = _upload(cloud, spec.dataset, wave, spec.upload_twice)
            uploaded += keys
            label = f"wave {number}/{len(waves)}: " if len(waves) > 1 else ""
            twice = " (each twice)" if spec.upload_twice else ""
            self.clock.say(
                f"{label}uploaded {len(keys)} image(s){twice} to "
                f"s3://{cloud.bucket}/{cloud.incoming_prefix}{spec.dataset}/"
            )
            calls = cloud.flush_event_sources()
            self.clock.say(f"{label}intake delivered the upload events in {calls} batch-starter call(s)")
            if self.machine is not None and not self.watcher.wait(deadline):
                self.problems.append(
                    f"the pipeline did not finish within {spec.timeout_s:.0f}s: {self.watcher.running()}"
                )
                break
            if self.loop is not None and not self.loop.wait(deadline):
                self.problems.append(
                    f"the retraining did not finish within {spec.timeout_s:.0f}s: {self.loop.running()}"
                )
                break
            self.wave_batches.append((number, len(wave), sorted(set(self.watcher.batches()) - before)))
            if number < len(waves) and self.hosting.deployed and not self.hosting.settle(HOSTING_SETTLE_SECONDS):
                self.problems.append(
                    f"wave {number}: a model version was still hosted after {HOSTING_SETTLE_SECONDS:.0f}s: "
                    f"{self.hosting.hosted()}"
                )
        return uploaded

    def _check_exports(self) -> None:
        """Name every distributed export that failed or is still running, with the state machine's error."""
        for entry in self.watcher.failed_exports():
            if entry["status"] == "RUNNING":
                self.problems.append(f"the distributed export {entry['execution']} is still running")
                continue
            why = "; ".join(self._failed_export_causes()) or entry.get("cause") or ""
            self.problems.append(
                f"the distributed export {entry['execution']} {entry['status'].lower()}: "
                f"{entry.get('error') or 'no error given'}: {why}".rstrip(": ")
            )
            self.clock.say(f"export execution {entry['execution']} {entry['status']}: {entry.get('error')}")

    def _failed_export_causes(self) -> list[str]:
        """What each failed export version's failed.json says (its failing shards' own errors)."""
        prefix = f"{self.exports_prefix}{self.spec.dataset}/"
        causes = []
        for key in self.cloud.list_keys(prefix):
            if key.endswith(f"/{EXPORT_FAILED_FILE}"):
                document = read_json(self.cloud, key) or {}
                causes.append(f"{key[len(prefix) :]}: {str(document.get('cause') or document)[:400]}")
        return causes

    def _fetch_export(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None, Path | None]:
        """The dataset's latest export: its pointer, its export.json and where it was downloaded."""
        spec = self.spec
        latest = read_json(self.cloud, f"{self.exports_prefix}{spec.dataset}/{contract.LATEST_FILE}")
        if (spec.out / "dataset").exists():
            shutil.rmtree(spec.out / "dataset")  # never leave an earlier run's dataset looking like this one's
        if not latest:
            return latest, None, None
        self.clock.say(f"export version {latest['version']} is the latest ({latest.get('images')} images)")
        version_prefix = f"{self.exports_prefix}{spec.dataset}/{latest['version']}/"
        document = read_json(self.cloud, f"{version_prefix}{contract.EXPORT_FILE}")
        dataset_dir = spec.out / "dataset"
        count = _download(self.cloud, version_prefix, dataset_dir)
        self.clock.say(f"downloaded the export ({count} files) to {dataset_dir}")
        return latest, document, dataset_dir

    def _export_versions(self) -> list[str]:
        prefix = f"{self.exports_prefix}{self.spec.dataset}/"
        versions = {
            key[len(prefix) :].split("/", 1)[0]
            for key in self.cloud.list_keys(prefix)
            if key.endswith(f"/{contract.EXPORT_FILE}")
        }
        return sorted(versions)

    def _copy_batch_records(self, report: dict[str, Any]) -> None:
        """The pipeline's own per-batch records, next to the run report, for anyone who wants the detail."""
        spec, cloud = self.spec, self.cloud
        batches_dir = spec.out / "batches"
        if batches_dir.exists():
            shutil.rmtree(batches_dir)
        for entry in report["batches"]:
            for name, field_name in ((BATCH_REPORT_FILE, "report"), (OUTPUT_MANIFEST, "output_manifest")):
                source = f"{contract.batch_prefix(self.work_prefix, spec.dataset, entry['batch_id'])}{name}"
                try:
                    body = cloud.client("s3").get_object(Bucket=cloud.bucket, Key=source)["Body"].read()
                except Exception:
                    continue
                target = batches_dir / entry["batch_id"] / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(body)
                entry[field_name] = str(target)


def _with_hosting(on_poll: Callable[[], None] | None, hosting: HostingPlayer) -> Callable[[], None] | None:
    """``on_poll`` plus the hosting sweep (when the stack has one): what each wait plays."""
    if not hosting.deployed:
        return on_poll

    def poll() -> None:
        if on_poll is not None:
            on_poll()
        hosting.tick()

    return poll


def function_env(cloud: CloudApi) -> dict[str, str]:
    """Environment shared by the deployed functions (prefixes), read from the batch starter or any."""
    lam = cloud.client("lambda")
    merged: dict[str, str] = {}
    for name in cloud.function_names().values():
        env = lam.get_function_configuration(FunctionName=name).get("Environment", {}).get("Variables", {})
        for key, value in env.items():
            merged.setdefault(key, value)
    return merged


def _workflow_arn(cloud: CloudApi, env: dict[str, str]) -> str | None:
    """The state machine the batch starter starts (its STATE_MACHINE_ARN), else the only one."""
    if env.get(Env.STATE_MACHINE_ARN):
        return env[Env.STATE_MACHINE_ARN]
    machines = list(cloud.state_machine_arns().values())
    return machines[0] if len(machines) == 1 else None


def _retrain_arn(cloud: CloudApi) -> str | None:
    """The retrain state machine, when the stack was deployed with ``retrain.enabled``."""
    found = [arn for arn in cloud.state_machine_arns().values() if arn.endswith(RETRAIN_STATE_MACHINE_SUFFIX)]
    return found[0] if len(found) == 1 else None


def _export_arn(cloud: CloudApi, env: dict[str, str]) -> str | None:
    """The distributed export's state machine (the export function's EXPORT_STATE_MACHINE_ARN), if deployed."""
    if env.get(Env.EXPORT_STATE_MACHINE_ARN):
        return env[Env.EXPORT_STATE_MACHINE_ARN]
    found = [arn for arn in cloud.state_machine_arns().values() if arn.endswith(EXPORT_STATE_MACHINE_SUFFIX)]
    return found[0] if len(found) == 1 else None


def _upload(cloud: CloudApi, dataset: str, files: list[tuple[Path, str]], twice: bool) -> list[str]:
    s3 = cloud.client("s3")
    keys = []
    for _ in range(2 if twice else 1):
        for path, relative in files:
            key = f"{cloud.incoming_prefix}{dataset}/{relative}"
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            s3.put_object(Bucket=cloud.bucket, Key=key, Body=path.read_bytes(), ContentType=content_type)
            keys.append(key)
    return sorted(set(keys))


def _download(cloud: CloudApi, prefix: str, dest: Path) -> int:
    s3 = cloud.client("s3")
    count = 0
    # S3 has no empty folders: a split with no image still needs its folders for a YOLO loader.
    for kind in (contract.IMAGES_DIR, contract.LABELS_DIR):
        for split in ("train", "val"):
            (dest / kind / split).mkdir(parents=True, exist_ok=True)
    for key in cloud.list_keys(prefix):
        if key[len(prefix) :].startswith(EXPORT_PLAN_DIR):
            continue  # the distributed export's working files: export.json lists its shards
        target = dest / key[len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(s3.get_object(Bucket=cloud.bucket, Key=key)["Body"].read())
        count += 1
    return count
