"""The one way LabelLoop declares a Lambda function: runtime, arm64, JSON logs, log group, tracing.

The asset is the whole ``lambdas/`` folder plus its ``requirements.txt`` installed for the Lambda
platform with ``pip --platform --only-binary`` — no Docker engine is needed to synthesize.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import Aspects, BundlingOptions, DockerImage, Duration, IAspect, ILocalBundling, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IConstruct

from infra.nag import acknowledge
from labelloop_core import limits

REPO_ROOT = Path(__file__).resolve().parents[2]
LAMBDA_SRC = REPO_ROOT / "lambdas"
DEPS_CACHE = REPO_ROOT / ".build" / "lambda-deps"
RUNTIME = lambda_.Runtime.PYTHON_3_14
PIP_PYTHON_VERSION = "3.14"
PIP_PLATFORM = "manylinux2014_aarch64"
# Lambda's python3.14 runs on Amazon Linux 2023 (glibc 2.34): newer wheels (pillow 12.3) ship only
# manylinux_2_28, so accept that tag too.
PIP_EXTRA_PLATFORMS = ("manylinux_2_28_aarch64",)
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache")


def _deps_dir() -> Path:
    """Install ``lambdas/requirements.txt`` for linux/arm64 once per requirements hash (cached)."""
    requirements = LAMBDA_SRC / "requirements.txt"
    platforms = (PIP_PLATFORM, *PIP_EXTRA_PLATFORMS)
    digest = hashlib.sha256(requirements.read_bytes() + f"{platforms}{PIP_PYTHON_VERSION}".encode()).hexdigest()[:16]
    target = DEPS_CACHE / digest
    if (target / ".complete").exists():
        return target
    DEPS_CACHE.mkdir(parents=True, exist_ok=True)
    # Parallel synths (test workers) install once: the others wait here, then find it complete.
    with open(DEPS_CACHE / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".complete").exists():
            _install_deps(requirements, platforms, digest, target)
    return target


def _install_deps(requirements: Path, platforms: tuple[str, ...], digest: str, target: Path) -> None:
    """pip-install the platform wheels into a staging folder, then move it to ``target``."""
    staging = DEPS_CACHE / f"{digest}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--requirement",
        str(requirements),
        "--target",
        str(staging),
        *(arg for platform in platforms for arg in ("--platform", platform)),
        "--implementation",
        "cp",
        "--python-version",
        PIP_PYTHON_VERSION,
        "--only-binary=:all:",
        "--no-compile",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"installing Lambda dependencies for {PIP_PLATFORM} failed:\n{result.stderr}")
    (staging / ".complete").write_text(digest)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


@jsii.implements(ILocalBundling)
class LocalPipBundling:
    """Bundles the Lambda asset on this machine: our sources plus platform wheels from PyPI."""

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_: Any) -> bool:
        out = Path(output_dir)
        shutil.copytree(_deps_dir(), out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".complete"))
        for child in LAMBDA_SRC.iterdir():
            if child.name in {"requirements.txt"} or child.name.startswith("."):
                continue
            if child.is_dir():
                shutil.copytree(child, out / child.name, dirs_exist_ok=True, ignore=_IGNORED)
            elif child.suffix in {".py", ".html", ".json", ".liquid"}:
                shutil.copy2(child, out / child.name)
        return True


def lambda_code() -> lambda_.Code:
    """The one shared asset (one hash, one upload) for every LabelLoop function."""
    return lambda_.Code.from_asset(
        str(LAMBDA_SRC),
        exclude=["**/__pycache__", "**/*.pyc"],
        bundling=BundlingOptions(
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.14"),
            local=LocalPipBundling(),
        ),
    )


class LambdaFactory(Construct):
    """Creates LabelLoop functions with one set of defaults; callers pass only what differs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        log_retention_days: int,
        common_env: dict[str, str] | None = None,
        async_failures: sqs.IQueue | None = None,
    ) -> None:
        """``async_failures``: the on-failure destination of every function invoked asynchronously
        (an EventBridge target) that does not configure its own."""
        super().__init__(scope, construct_id)
        self._retention = retention(log_retention_days)
        self._common_env = dict(common_env or {})
        self._code = lambda_code()
        self._functions: list[lambda_.Function] = []
        if async_failures is not None:
            Aspects.of(Stack.of(self)).add(_AsyncFailuresToQueue(self._functions, async_failures))
        Aspects.of(Stack.of(self)).add(_RoleDependencyOnlyViaPolicy(self._functions))

    def function(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: str,
        description: str,
        environment: dict[str, str] | None = None,
        timeout: Duration | None = None,
        memory_size: int = 512,
        function_name: str | None = None,
        reserved_concurrency: int | None = None,
    ) -> lambda_.Function:
        """Declare one function; ``handler`` is ``handlers.<module>.handler``."""
        log_group = logs.LogGroup(
            scope,
            f"{construct_id}Logs",
            retention=self._retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        service = handler.split(".")[1] if handler.count(".") >= 2 else handler
        env = {
            "POWERTOOLS_SERVICE_NAME": f"labelloop-{service}",
            "POWERTOOLS_LOG_LEVEL": "INFO",
            **self._common_env,
            **(environment or {}),
        }
        # An explicit role that may write only this function's log group (no AWS managed policy).
        role = iam.Role(
            scope,
            f"{construct_id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"LabelLoop {service} function",
        )
        log_group.grant_write(role)
        function = lambda_.Function(
            scope,
            construct_id,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler=handler,
            code=self._code,
            description=description,
            environment=env,
            timeout=timeout or Duration.seconds(60),
            memory_size=memory_size,
            function_name=function_name,
            reserved_concurrent_executions=reserved_concurrency,
            tracing=lambda_.Tracing.ACTIVE,
            logging_format=lambda_.LoggingFormat.JSON,
            log_group=log_group,
            role=role,
        )
        self._functions.append(function)
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "Active X-Ray tracing: xray:PutTraceSegments/PutTelemetryRecords support no resource-level scoping.",
        )
        return function


@jsii.implements(IAspect)
class _AsyncFailuresToQueue:
    """Give every asynchronously invoked function (an EventBridge target: a Lambda permission for
    events.amazonaws.com names it) an on-failure destination, unless it configured its own. Runs
    once every rule target exists, so no construct has to remember it."""

    def __init__(self, functions: list[lambda_.Function], queue: sqs.IQueue) -> None:
        self._functions = functions
        self._queue = queue

    def visit(self, node: IConstruct) -> None:
        if not isinstance(node, lambda_.CfnPermission) or node.principal != "events.amazonaws.com":
            return
        for function in self._functions:
            if node.function_name == function.function_arn and not function.node.try_find_child("EventInvokeConfig"):
                function.configure_async_invoke(on_failure=destinations.SqsDestination(self._queue))


@jsii.implements(IAspect)
class _RoleDependencyOnlyViaPolicy:
    """Keep each function's DependsOn on its role's policy only: the role is already referenced by
    GetAtt, and cfn-lint flags the redundant dependency (W3005). Runs once all grants exist."""

    def __init__(self, functions: list[lambda_.Function]) -> None:
        self._functions = functions

    def visit(self, node: IConstruct) -> None:
        if not isinstance(node, lambda_.Function) or node not in self._functions:
            return
        cfn_function = node.node.default_child
        assert isinstance(cfn_function, lambda_.CfnFunction)
        policy = node.role.node.try_find_child("DefaultPolicy") if node.role else None
        if isinstance(policy, iam.Policy) and isinstance(policy.node.default_child, iam.CfnPolicy):
            cfn_function.add_override("DependsOn", [Stack.of(node).get_logical_id(policy.node.default_child)])
        else:
            cfn_function.add_deletion_override("DependsOn")


_RETENTION_NAMES = {
    1: "ONE_DAY",
    3: "THREE_DAYS",
    5: "FIVE_DAYS",
    7: "ONE_WEEK",
    14: "TWO_WEEKS",
    30: "ONE_MONTH",
    60: "TWO_MONTHS",
    90: "THREE_MONTHS",
    120: "FOUR_MONTHS",
    150: "FIVE_MONTHS",
    180: "SIX_MONTHS",
    365: "ONE_YEAR",
    400: "THIRTEEN_MONTHS",
    545: "EIGHTEEN_MONTHS",
    731: "TWO_YEARS",
    1096: "THREE_YEARS",
    1827: "FIVE_YEARS",
    2192: "SIX_YEARS",
    2557: "SEVEN_YEARS",
    2922: "EIGHT_YEARS",
    3288: "NINE_YEARS",
    3653: "TEN_YEARS",
}


if set(_RETENTION_NAMES) != limits.LOG_RETENTION_DAYS:
    raise RuntimeError("every retention in labelloop_core.limits.LOG_RETENTION_DAYS needs its CDK name here")


def retention(days: int) -> logs.RetentionDays:
    """Map a validated day count onto the CDK enum (config.py checks the allowed values)."""
    if days not in limits.LOG_RETENTION_DAYS:
        raise ValueError(f"unsupported log retention: {days} days")
    return getattr(logs.RetentionDays, _RETENTION_NAMES[days])
