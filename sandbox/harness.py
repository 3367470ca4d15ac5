"""LocalCloud: the synthesized LabelLoop stack running in-process on moto, with a small Python API.

    with LocalCloud.start(synthesize(tmp), workforce=Oracle("truth.jsonl", noise=0.02)) as cloud:
        cloud.drop_images("photos/", dataset="street")
        cloud.wait_for(lambda: cloud.list_keys("exports/street/"), timeout=60)

Everything the API hands out (bucket, function names, queue URLs, state machine ARNs) is read from
the deployed stack's outputs and resources, never re-declared here.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from moto import mock_aws

from labelloop_core import contract
from sandbox import deploy as deploy_mod
from sandbox import (
    event_sources,
    events,
    faults,
    groundtruth,
    host_clients,
    lambda_quota,
    lambda_runtime,
    model_emulation,
    moto_speedups,
    rekognition_training,
    s3_conditional,
    sagemaker_training,
    sfn_retry,
)
from sandbox.deploy import Deployment
from sandbox.event_sources import PollerSettings, SqsPoller
from sandbox.model_emulation import ModelEmulationSettings, NoPredictor, Predictor
from sandbox.workforce import AcceptPrelabels, Workforce

T = TypeVar("T")
_ACTIVE = threading.Lock()  # one LocalCloud per process: moto's mock and the patches are global
MOTO_CONFIG: dict[str, Any] = {
    "stepfunctions": {"execute_state_machine": True},
    # use_docker stays True: the in-process runtime replaces the Docker invocation path, whereas
    # use_docker=False would switch to moto's echo-only "simple" Lambda backend.
    "lambda": {"use_docker": True},
}


@dataclass
class LocalCloud:
    """A running emulation of one deployed stack."""

    deployment: Deployment
    region: str
    gt_settings: groundtruth.GroundTruthEmulationSettings
    model_settings: ModelEmulationSettings
    poller: SqsPoller
    _clients: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        assembly_dir: str | Path,
        *,
        workforce: Workforce | None = None,
        predictor: Predictor | None = None,
        labels: Iterable[str] | None = None,
        model_faults: dict[str, str] | None = None,
        gt_mode: str = "thread",
        duplicate_gt_events: bool = False,
        esm_mode: str = "poll",
        esm_retry: str = "visibility_timeout",
        workteams: Iterable[str] = (),
        batch_window_scale: float = 1.0,
        region: str = "us-east-1",
        stack_name: str = "LabelLoop",
        fault_injector: faults.FaultInjector | None = None,
        lambda_concurrency_quota: int = lambda_quota.DEFAULT_QUOTA,
        sfn_retry_scale: float = sfn_retry.DEFAULT_SCALE,
    ) -> Iterator[LocalCloud]:
        """Enter moto, install the emulation patches, deploy the assembly; undo all on exit.

        ``esm_mode``/``batch_window_scale``: SQS event source mappings are polled in the background
        ("poll", batching windows multiplied by the scale) or only on ``flush_event_sources()``
        ("manual"); ``esm_retry`` "immediate" makes failed records visible again at once instead of
        after the queue's visibility timeout (see `sandbox.event_sources`). ``workteams``: private
        workteams that exist in the account before the stack does (on AWS the user creates them;
        the stack's config only names one). ``fault_injector``: AWS calls made
        by the deployed functions fail at its rules' rates (`sandbox.faults`).
        ``lambda_concurrency_quota``: the account's concurrent-executions quota (AWS's default 1,000; a
        new account's 10): reservations beyond it fail the deploy, invocations beyond it are throttled
        (`sandbox.lambda_quota`). ``sfn_retry_scale``: the factor on the sleeps between a state
        machine's Retry attempts (`sandbox.sfn_retry`; 1.0 waits in real time).
        """
        if esm_mode not in ("poll", "manual"):
            raise ValueError(f"esm_mode must be 'poll' or 'manual', not {esm_mode!r}")
        poller_settings = PollerSettings(mode=esm_mode, window_scale=batch_window_scale, retry=esm_retry)
        if gt_mode not in ("thread", "manual"):
            raise ValueError(f"gt_mode must be 'thread' or 'manual', not {gt_mode!r}")
        gt_settings = groundtruth.GroundTruthEmulationSettings(
            workforce=workforce or AcceptPrelabels(), mode=gt_mode, duplicate_events=duplicate_gt_events
        )
        model_settings = ModelEmulationSettings(
            predictor=predictor or NoPredictor(), labels=list(labels or []), faults=dict(model_faults or {})
        )
        if not _ACTIVE.acquire(blocking=False):
            raise RuntimeError("a LocalCloud is already running in this process (moto's mock is process-wide)")
        try:
            lambda_runtime.INVOCATIONS.clear()
            events.EVENT_LOG.clear()
            if fault_injector is not None:
                faults.install(fault_injector)
            lambda_quota.install(lambda_concurrency_quota)
            sfn_retry.install(sfn_retry_scale)
            yield from cls._run(
                assembly_dir, gt_settings, model_settings, poller_settings, workteams, region, stack_name
            )
        finally:
            sfn_retry.uninstall()
            lambda_quota.uninstall()
            faults.uninstall()
            _ACTIVE.release()

    @classmethod
    def _run(
        cls,
        assembly_dir: str | Path,
        gt_settings: groundtruth.GroundTruthEmulationSettings,
        model_settings: ModelEmulationSettings,
        poller_settings: PollerSettings,
        workteams: Iterable[str],
        region: str,
        stack_name: str,
    ) -> Iterator[LocalCloud]:
        with mock_aws(config=cast(Any, MOTO_CONFIG)):
            moto_speedups.install()
            s3_conditional.install()
            host_clients.install()
            lambda_runtime.install()
            events.install()
            groundtruth.install(gt_settings)
            model_emulation.install(model_settings)
            rekognition_training.install(rekognition_training.RekognitionTrainingSettings())
            sagemaker_training.install(sagemaker_training.SageMakerTrainingSettings())
            event_sources.install()
            cloud: LocalCloud | None = None
            poller: SqsPoller | None = None
            try:
                deployment = deploy_mod.deploy(assembly_dir, stack_name=stack_name, region=region)
                poller = SqsPoller(deployment.account, region, poller_settings)
                cloud = cls(deployment, region, gt_settings, model_settings, poller)
                for team in workteams:
                    cloud.create_workteam(team)
                poller.start()
                yield cloud
            finally:
                if poller is not None:
                    poller.stop()
                if cloud is not None:
                    cloud.stop_executions()
                groundtruth.join_threads()
                event_sources.uninstall()
                sagemaker_training.uninstall()
                rekognition_training.uninstall()
                model_emulation.uninstall()
                groundtruth.uninstall()
                events.uninstall()
                lambda_runtime.uninstall()
                lambda_runtime.cleanup_extracted()
                host_clients.uninstall()
                s3_conditional.uninstall()
                moto_speedups.uninstall()

    def stop_executions(self) -> None:
        """Stop running workflow executions so no interpreter thread outlives the mock.

        moto's StopExecution only marks the execution; the interpreter's environment is told to
        stop directly, as the service would.
        """
        from datetime import UTC, datetime

        from moto.stepfunctions.parser.models import stepfunctions_parser_backends

        backend = stepfunctions_parser_backends[self.deployment.account][self.region]
        for state_machine in list(backend.state_machines):
            for execution in list(getattr(state_machine, "executions", [])):
                if getattr(execution, "exec_status", None) != "RUNNING":
                    continue
                with contextlib.suppress(Exception):
                    execution.stop(datetime.now(UTC), "LocalCloud.Stopped", "the emulation was stopped")

    # ------------------------------------------------------------------ handles from the stack

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` in the emulated region (cached)."""
        if service not in self._clients:
            self._clients[service] = host_clients.host_client(service, self.region)
        return self._clients[service]

    @property
    def outputs(self) -> dict[str, str]:
        return dict(self.deployment.outputs)

    @property
    def bucket(self) -> str:
        """The data bucket (stack output ``DataBucketName``)."""
        return self.deployment.outputs["DataBucketName"]

    @property
    def incoming_prefix(self) -> str:
        return self.deployment.outputs.get("IncomingPrefix", contract.DEFAULT_INCOMING_PREFIX)

    def function_names(self, logical_prefix: str = "") -> dict[str, str]:
        """Function names by logical id, for logical ids starting with ``logical_prefix``."""
        return self.deployment.physical_ids("AWS::Lambda::Function", logical_prefix)

    def function_name(self, logical_prefix: str) -> str:
        return self.deployment.physical_id("AWS::Lambda::Function", logical_prefix)

    def state_machine_arns(self, logical_prefix: str = "") -> dict[str, str]:
        return self.deployment.physical_ids("AWS::StepFunctions::StateMachine", logical_prefix)

    def state_machine_arn(self, logical_prefix: str = "") -> str:
        return self.deployment.physical_id("AWS::StepFunctions::StateMachine", logical_prefix)

    def queue_urls(self, logical_prefix: str = "") -> dict[str, str]:
        return self.deployment.physical_ids("AWS::SQS::Queue", logical_prefix)

    def queue_url(self, logical_prefix: str) -> str:
        return self.deployment.physical_id("AWS::SQS::Queue", logical_prefix)

    def rules(self, logical_prefix: str = "") -> dict[str, str]:
        """EventBridge rule names by logical id (moto's physical id is the rule name or ARN)."""
        return {
            lid: pid.rsplit("/", 1)[-1]
            for lid, pid in self.deployment.physical_ids("AWS::Events::Rule", logical_prefix).items()
        }

    # ------------------------------------------------------------------ actions

    def drop_images(self, images: str | Path | Iterable[str | Path], dataset: str) -> list[str]:
        """Upload images to ``<incoming>/<dataset>/`` exactly as a user would; return the keys.

        A directory is uploaded recursively with its relative paths; files keep their names.
        """
        if not dataset or "/" in dataset:
            raise ValueError(f"dataset must be a non-empty name without '/', got {dataset!r}")
        files: list[tuple[Path, str]] = []
        if isinstance(images, str | Path) and Path(images).is_dir():
            root = Path(images)
            files = [(p, p.relative_to(root).as_posix()) for p in sorted(root.rglob("*")) if p.is_file()]
        else:
            paths = [Path(images)] if isinstance(images, str | Path) else [Path(p) for p in images]
            for path in paths:
                if not path.is_file():
                    raise FileNotFoundError(f"no such image file: {path}")
                files.append((path, path.name))
        keys = []
        s3 = self.client("s3")
        for path, relative in files:
            key = f"{self.incoming_prefix}{dataset}/{relative}"
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            s3.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes(), ContentType=content_type)
            keys.append(key)
        return keys

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Put raw bytes into the data bucket (e.g. a synthetic image that never touched disk)."""
        self.client("s3").put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        return key

    def invoke(self, logical_prefix: str, event: Any) -> tuple[Any, str | None]:
        """Invoke a deployed function synchronously; return (payload, FunctionError or None)."""
        result = self.client("lambda").invoke(
            FunctionName=self.function_name(logical_prefix), Payload=json.dumps(event).encode()
        )
        body = result["Payload"].read().decode("utf-8")
        return (json.loads(body) if body else None), result.get("FunctionError")

    def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 30.0,
        interval: float = 0.05,
        message: str = "condition",
    ) -> T:
        """Poll ``predicate`` until it returns something truthy; on timeout say what went wrong."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{message} not met within {timeout}s.\n{self.diagnostics()}")
            time.sleep(interval)

    def create_workteam(self, name: str) -> str:
        """Create a private workteam (one Cognito group) through the emulated API; return its ARN."""
        member = {
            "CognitoMemberDefinition": {"UserPool": f"{self.region}_local", "UserGroup": name, "ClientId": "local"}
        }
        response = self.client("sagemaker").create_workteam(
            WorkteamName=name, Description=f"local workteam {name}", MemberDefinitions=[member]
        )
        return str(response["WorkteamArn"])

    def flush_event_sources(self) -> int:
        """Deliver every visible SQS message to its mapped function now; return the batch count."""
        return self.poller.flush()

    @property
    def esm_batches(self) -> list[event_sources.PolledBatch]:
        """Every batch the SQS poller delivered (function, queue, message ids, error)."""
        return list(self.poller.batches)

    def advance_labeling(self, name: str | None = None) -> list[str]:
        """Run pending Ground Truth jobs now (``gt_mode="manual"``)."""
        return groundtruth.advance(self.deployment.account, self.region, name)

    # ------------------------------------------------------------------ observation

    def list_keys(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        for page in self.client("s3").get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    def read_json(self, key: str) -> Any:
        return json.loads(self.client("s3").get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def read_jsonl(self, key: str) -> list[Any]:
        text = self.client("s3").get_object(Bucket=self.bucket, Key=key)["Body"].read().decode("utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    @property
    def invocations(self) -> list[lambda_runtime.Invocation]:
        return list(lambda_runtime.INVOCATIONS.invocations)

    @property
    def event_log(self) -> events.EventLog:
        return events.EVENT_LOG

    def logs(self, function_fragment: str) -> str:
        """Captured log text of every invocation of functions whose name contains the fragment."""
        return "".join(i.logs for i in lambda_runtime.INVOCATIONS.for_function(function_fragment))

    def labeling_jobs(self) -> dict[str, groundtruth.LabelingJob]:
        """Emulated labeling jobs by the name they were created with."""
        jobs = groundtruth.state_for(self.deployment.account, self.region).jobs
        return {job.name: job for job in list(jobs.values())}

    def diagnostics(self) -> str:
        """Recent Lambda errors, failed deliveries and labeling job failures, for error messages."""
        lines = []
        for inv in self.invocations:
            if inv.error:
                lines.append(f"lambda {inv.function_name}: {inv.error['errorType']}: {inv.error['errorMessage']}")
        for delivery in events.EVENT_LOG.errors():
            lines.append(f"event to {delivery.target_arn}: {delivery.error}")
        for batch in self.poller.batches:
            if batch.error:
                lines.append(f"sqs batch to {batch.function_arn}: {batch.error}")
        for job in self.labeling_jobs().values():
            if job.failure_reason:
                lines.append(f"labeling job {job.name}: {job.status}: {job.failure_reason}")
        lines += self._execution_problems()
        return "\n".join(lines[-20:]) or "(no errors recorded)"

    def _execution_problems(self) -> list[str]:
        """Every state machine execution (workflow or distributed export) that failed or still runs."""
        sfn = self.client("stepfunctions")
        lines = []
        for arn in self.state_machine_arns().values():
            machine = arn.rsplit(":", 1)[-1]
            for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=arn):
                for execution in page["executions"]:
                    status, name = execution["status"], execution["name"]
                    if status == "RUNNING":
                        lines.append(f"execution {name} of {machine}: still running")
                    elif status != "SUCCEEDED":
                        described = sfn.describe_execution(executionArn=execution["executionArn"])
                        error, cause = described.get("error") or "", str(described.get("cause") or "")[:300]
                        lines.append(f"execution {name} of {machine}: {status}: {error}: {cause}")
        return lines
