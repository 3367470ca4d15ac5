"""Deploy a synthesized cloud assembly into the in-process moto account, like ``cdk deploy`` would.

The template is created through moto's CloudFormation; everything moto's CloudFormation cannot do
is applied afterwards from the *same* template (resolved with moto's own intrinsic-function
resolver), never re-declared by hand. Every such gap is listed once, in ``sandbox.gaps.GAPS``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import boto3
from moto.awslambda.models import LambdaFunction
from moto.cloudformation import cloudformation_backends
from moto.cloudformation.custom_model import CustomModel
from moto.cloudformation.models import Stack as CfnStack
from moto.cloudformation.parsing import clean_json

from sandbox import kms_emulation, lambda_quota

BOOTSTRAP_VERSION = "30"  # what a current `cdk bootstrap` writes to /cdk-bootstrap/<qualifier>/version


class DeployError(RuntimeError):
    """The assembly cannot be deployed into the emulation; the message says why."""


@dataclass
class Deployment:
    """What a deploy produced: outputs and physical ids, all read back from the stack."""

    stack_name: str
    stack_id: str
    region: str
    account: str
    template: dict[str, Any]
    outputs: dict[str, str]
    resources: dict[str, str]  # logical id → physical id
    resource_types: dict[str, str]  # logical id → type
    applied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def physical_ids(self, resource_type: str, logical_prefix: str = "") -> dict[str, str]:
        """Physical ids of resources of one type whose logical id starts with ``logical_prefix``."""
        return {
            lid: pid
            for lid, pid in self.resources.items()
            if self.resource_types.get(lid) == resource_type and lid.startswith(logical_prefix)
        }

    def physical_id(self, resource_type: str, logical_prefix: str = "") -> str:
        """The one physical id matching; a clear error if none or several match."""
        found = self.physical_ids(resource_type, logical_prefix)
        exact = {lid: pid for lid, pid in found.items() if re.fullmatch(re.escape(logical_prefix) + "[0-9A-F]{8}", lid)}
        if len(found) > 1 and len(exact) == 1:
            found = exact  # CDK logical ids are <path><8 hex digits>: an exact path wins over longer ones
        if len(found) != 1:
            raise DeployError(
                f"{len(found)} {resource_type} resources have logical ids starting with "
                f"{logical_prefix!r}: {sorted(found)}"
            )
        return next(iter(found.values()))


def _substitute(text: str, account: str, region: str) -> str:
    return (
        text.replace("${AWS::AccountId}", account)
        .replace("${AWS::Region}", region)
        .replace("${AWS::Partition}", "aws")
        .replace("${AWS::URLSuffix}", "amazonaws.com")
    )


_ZIP_CACHE: dict[tuple[str, int, float], bytes] = {}


def zip_directory(path: Path) -> bytes:
    """Zip a directory deterministically (sorted entries, fixed timestamps), cached per content stamp.

    Entries are stored uncompressed: the zip only travels through memory, and deflating a 30 MB
    asset would cost seconds per deploy.
    """
    files = sorted(p for p in path.rglob("*") if p.is_file())
    stamp = (str(path.resolve()), len(files), max((f.stat().st_mtime for f in files), default=0.0))
    cached = _ZIP_CACHE.get(stamp)
    if cached is not None:
        return cached
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for file in files:
            info = zipfile.ZipInfo(str(file.relative_to(path)).replace(os.sep, "/"), (1980, 1, 1, 0, 0, 0))
            info.external_attr = (file.stat().st_mode & 0o777) << 16
            zf.writestr(info, file.read_bytes())
    _ZIP_CACHE[stamp] = buffer.getvalue()
    return _ZIP_CACHE[stamp]


def _parse_json_first(template: str) -> dict[str, Any]:
    """moto parses templates with PyYAML first (a second per large template); CDK writes JSON."""
    try:
        parsed = json.loads(template)
    except json.JSONDecodeError:
        return dict(_ORIGINAL_PARSE(template))
    return dict(parsed)


_ORIGINAL_PARSE = CfnStack.parse_template


def publish_assets(assembly: Path, stack_name: str, account: str, region: str) -> list[str]:
    """Upload the stack's file assets to the bootstrap bucket/key the template references."""
    manifest_path = assembly / f"{stack_name}.assets.json"
    if not manifest_path.exists():
        return []
    manifest = json.loads(manifest_path.read_text())
    s3 = boto3.client("s3", region_name=region)
    published = []
    for asset_id, asset in manifest.get("files", {}).items():
        source = assembly / asset["source"]["path"]
        if not source.exists():
            raise DeployError(f"asset {asset_id}: {source} does not exist in the assembly")
        packaging = asset["source"].get("packaging", "file")
        body = zip_directory(source) if packaging == "zip" or source.is_dir() else source.read_bytes()
        for destination in asset["destinations"].values():
            bucket = _substitute(destination["bucketName"], account, region)
            key = _substitute(destination["objectKey"], account, region)
            _ensure_bucket(s3, bucket, region)
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            published.append(f"s3://{bucket}/{key}")
    return published


def _ensure_bucket(s3: Any, bucket: str, region: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception:
        config = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=bucket, **config)


def _bootstrap_parameters(template: dict[str, Any], region: str) -> list[str]:
    ssm = boto3.client("ssm", region_name=region)
    created = []
    for spec in template.get("Parameters", {}).values():
        default = spec.get("Default", "")
        if spec.get("Type", "").startswith("AWS::SSM::Parameter::Value") and default.startswith("/cdk-bootstrap/"):
            ssm.put_parameter(Name=default, Value=BOOTSTRAP_VERSION, Type="String", Overwrite=True)
            created.append(default)
    return created


# ------------------------------------------------------------------ custom resources

CustomHandler = Callable[[dict[str, Any], str], dict[str, Any]]


def _bucket_notifications(properties: dict[str, Any], region: str) -> dict[str, Any]:
    config = dict(properties.get("NotificationConfiguration") or {})
    boto3.client("s3", region_name=region).put_bucket_notification_configuration(
        Bucket=properties["BucketName"], NotificationConfiguration=config
    )
    return {}


def _auto_delete_objects(properties: dict[str, Any], region: str) -> dict[str, Any]:
    return {}


CUSTOM_RESOURCES: dict[str, CustomHandler] = {
    "Custom::S3BucketNotifications": _bucket_notifications,
    "Custom::S3AutoDeleteObjects": _auto_delete_objects,
}


class _CustomResourceApplier:
    """Stands in for moto's CustomModel factory while the stack is created."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.errors: list[str] = []

    def __call__(
        self,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> CustomModel:
        resource_type = kwargs["ResourceType"]
        logical_id = kwargs["LogicalId"]
        handler = CUSTOM_RESOURCES.get(resource_type)
        model = cast(Any, CustomModel)(region_name, "local", logical_id, resource_name)
        if handler is None:
            self.errors.append(
                f"{logical_id} ({resource_type}): no emulation for this custom resource type; "
                f"add it to sandbox.deploy.CUSTOM_RESOURCES and sandbox.gaps.GAPS"
            )
            model.set_data({})
            return model
        properties = {k: v for k, v in cloudformation_json["Properties"].items() if k != "ServiceToken"}
        try:
            model.set_data(handler(properties, region_name))
            self.applied.append(f"{logical_id} ({resource_type})")
        except Exception as exc:
            self.errors.append(f"{logical_id} ({resource_type}): {type(exc).__name__}: {exc}")
            model.set_data({})
        return model


# ------------------------------------------------------------------ post-create gaps


def _resolved(stack: Any, logical_id: str, template: dict[str, Any]) -> dict[str, Any]:
    """A template resource's properties with intrinsics resolved by moto's own resolver."""
    resource = json.loads(json.dumps(template["Resources"][logical_id]))
    return dict(clean_json(resource, stack.resource_map).get("Properties", {}))


def _recreate_state_machine(
    stack: Any, logical_id: str, template: dict[str, Any], physical_id: str, region: str
) -> str:
    props = _resolved(stack, logical_id, template)
    if "DefinitionString" in props:
        definition = props["DefinitionString"]
    elif "Definition" in props:
        definition = json.dumps(props["Definition"])
    else:
        raise DeployError(f"{logical_id}: state machine has neither DefinitionString nor Definition")
    for key, value in (props.get("DefinitionSubstitutions") or {}).items():
        definition = definition.replace("${" + key + "}", str(value))
    name = physical_id.rsplit(":", 1)[-1]
    kwargs: dict[str, Any] = {
        "name": name,
        "definition": definition,
        "roleArn": props["RoleArn"],
        "type": props.get("StateMachineType", "STANDARD"),
    }
    if props.get("LoggingConfiguration"):
        kwargs["loggingConfiguration"] = _lower_first(props["LoggingConfiguration"])
    if props.get("TracingConfiguration"):
        kwargs["tracingConfiguration"] = _lower_first(props["TracingConfiguration"])
    sfn = boto3.client("stepfunctions", region_name=region)
    try:
        arn = sfn.create_state_machine(**kwargs)["stateMachineArn"]
    except Exception as exc:
        raise DeployError(f"{logical_id}: the ASL interpreter rejected the state machine: {exc}") from exc
    if arn != physical_id:
        raise DeployError(f"{logical_id}: re-created state machine has ARN {arn}, the stack has {physical_id}")
    return arn


def _lower_first(value: Any) -> Any:
    """CloudFormation spells nested keys PascalCase; the Step Functions API camelCase."""
    if isinstance(value, dict):
        return {k[0].lower() + k[1:]: _lower_first(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower_first(v) for v in value]
    return value


def _filter(cfn_filter: dict[str, Any] | None) -> dict[str, Any]:
    rules = (cfn_filter or {}).get("S3Key", {}).get("Rules", [])
    return {"Filter": {"Key": {"FilterRules": rules}}} if rules else {}


def bucket_notification_configuration(cfn: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation's NotificationConfiguration translated to the S3 API's shape."""
    api: dict[str, Any] = {}
    if (cfn.get("EventBridgeConfiguration") or {}).get("EventBridgeEnabled") in (True, "true"):
        api["EventBridgeConfiguration"] = {}
    for cfn_key, api_key, arn_cfn, arn_api in (
        ("LambdaConfigurations", "LambdaFunctionConfigurations", "Function", "LambdaFunctionArn"),
        ("QueueConfigurations", "QueueConfigurations", "Queue", "QueueArn"),
        ("TopicConfigurations", "TopicConfigurations", "Topic", "TopicArn"),
    ):
        entries = [
            {arn_api: entry[arn_cfn], "Events": [entry["Event"]], **_filter(entry.get("Filter"))}
            for entry in cfn.get(cfn_key, [])
        ]
        if entries:
            api[api_key] = entries
    return api


def _apply_bucket_properties(
    stack: Any, logical_id: str, template: dict[str, Any], bucket: str, region: str
) -> list[str]:
    props = _resolved(stack, logical_id, template)
    s3 = boto3.client("s3", region_name=region)
    done = []
    if props.get("NotificationConfiguration"):
        config = bucket_notification_configuration(props["NotificationConfiguration"])
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
        done.append(f"bucket {logical_id} notifications {sorted(config)}")
    status = (props.get("VersioningConfiguration") or {}).get("Status")
    if status:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})
        done.append(f"bucket {logical_id} versioning {status}")
    done += kms_emulation.bucket_encryption(s3, logical_id, props, bucket)
    rules = (props.get("CorsConfiguration") or {}).get("CorsRules", [])
    if rules:
        renames = {"ExposedHeaders": "ExposeHeaders", "Id": "ID", "MaxAge": "MaxAgeSeconds"}
        api_rules = [{renames.get(k, k): v for k, v in rule.items()} for rule in rules]
        s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": api_rules})
        done.append(f"bucket {logical_id} CORS ({len(api_rules)} rules)")
    return done


def _create_workteam(stack: Any, logical_id: str, template: dict[str, Any], region: str) -> str:
    props = _resolved(stack, logical_id, template)
    props.pop("Tags", None)
    sm = boto3.client("sagemaker", region_name=region)
    return str(sm.create_workteam(**props)["WorkteamArn"])


# ------------------------------------------------------------------ deploy


def deploy(
    assembly_dir: str | Path,
    stack_name: str = "LabelLoop",
    region: str = "us-east-1",
    account: str = "123456789012",
) -> Deployment:
    """Deploy ``<stack_name>`` from the assembly into the active moto mock and return its handles."""
    moto_logger = logging.getLogger("moto")
    previous_level = moto_logger.level
    moto_logger.setLevel(logging.ERROR)  # unsupported types are reported in Deployment.skipped
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _deploy(Path(assembly_dir), stack_name, region, account)
    finally:
        moto_logger.setLevel(previous_level)


def _deploy(assembly: Path, stack_name: str, region: str, account: str) -> Deployment:
    started = time.perf_counter()
    template_path = assembly / f"{stack_name}.template.json"
    if not template_path.exists():
        raise DeployError(f"{template_path} not found: synthesize the app first (infra.synth.synthesize)")
    template = json.loads(template_path.read_text())
    applied = [f"asset {uri}" for uri in publish_assets(assembly, stack_name, account, region)]
    applied += [f"SSM parameter {name}" for name in _bootstrap_parameters(template, region)]
    cfn = boto3.client("cloudformation", region_name=region)
    stack_id, custom = _create_stack(cfn, stack_name, template)
    applied += [f"custom resource {name}" for name in custom]

    stack = cloudformation_backends[account][region].get_stack(stack_id)
    status = cfn.describe_stacks(StackName=stack_id)["Stacks"][0]
    if status["StackStatus"] != "CREATE_COMPLETE":
        raise DeployError(f"stack {stack_name} ended in {status['StackStatus']}: {status.get('StackStatusReason', '')}")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in status.get("Outputs", [])}
    resources, types = _stack_resources(cfn, stack_id)
    skipped = []
    for logical_id, spec in template.get("Resources", {}).items():
        types.setdefault(logical_id, spec["Type"])
        done = _apply_resource(stack, logical_id, spec["Type"], template, resources, region, account)
        if done is not None:
            applied += done
        elif logical_id not in resources and not spec["Type"].startswith("Custom::"):
            skipped.append(f"{logical_id} ({spec['Type']})")

    return Deployment(
        stack_name=stack_name,
        stack_id=stack_id,
        region=region,
        account=account,
        template=template,
        outputs=outputs,
        resources=resources,
        resource_types=types,
        applied=applied,
        skipped=skipped,
        duration_s=time.perf_counter() - started,
    )


def _create_stack(cfn: Any, stack_name: str, template: dict[str, Any]) -> tuple[str, list[str]]:
    """CreateStack with our custom-resource applier and JSON-first template parsing patched in.

    Returns the stack id and the custom resources applied; a failed custom resource, or a function
    whose reserved concurrency the account cannot spare, is a `DeployError`.
    """
    applier = _CustomResourceApplier()
    original = CustomModel.__dict__["create_from_cloudformation_json"]
    original_function = LambdaFunction.__dict__["create_from_cloudformation_json"]
    CustomModel.create_from_cloudformation_json = applier  # type: ignore[method-assign]
    LambdaFunction.create_from_cloudformation_json = lambda_quota.checked_function_factory(original_function)  # type: ignore[method-assign]
    CfnStack.parse_template = staticmethod(_parse_json_first)  # type: ignore[method-assign]
    try:
        stack_id = cfn.create_stack(
            StackName=stack_name,
            TemplateBody=json.dumps(template),
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        )["StackId"]
    except lambda_quota.ResourceFailed as failed:
        raise DeployError(
            f"stack {stack_name} failed to create and rolls back: The following resource(s) failed to create: "
            f"[{failed.logical_id}]. {failed.logical_id}: {failed.message}"
        ) from None
    finally:
        CustomModel.create_from_cloudformation_json = original  # type: ignore[method-assign]
        LambdaFunction.create_from_cloudformation_json = original_function  # type: ignore[method-assign]
        CfnStack.parse_template = staticmethod(_ORIGINAL_PARSE)  # type: ignore[method-assign]
    if applier.errors:
        raise DeployError("custom resources failed:\n  " + "\n  ".join(applier.errors))
    return str(stack_id), list(applier.applied)


def _stack_resources(cfn: Any, stack_id: str) -> tuple[dict[str, str], dict[str, str]]:
    """Physical ids and types by logical id, as CloudFormation lists them."""
    resources: dict[str, str] = {}
    types: dict[str, str] = {}
    paginator = cfn.get_paginator("list_stack_resources")
    for page in paginator.paginate(StackName=stack_id):
        for summary in page["StackResourceSummaries"]:
            if not summary.get("LogicalResourceId"):
                continue  # moto lists resources it skipped with an empty logical id
            resources[summary["LogicalResourceId"]] = summary.get("PhysicalResourceId", "")
            types[summary["LogicalResourceId"]] = summary["ResourceType"]
    return resources, types


def _apply_resource(
    stack: Any,
    logical_id: str,
    resource_type: str,
    template: dict[str, Any],
    resources: dict[str, str],
    region: str,
    account: str,
) -> list[str] | None:
    """Apply what moto leaves out of one resource; the lines applied, or None when nothing applies."""
    if resource_type == "AWS::S3::Bucket" and logical_id in resources:
        return _apply_bucket_properties(stack, logical_id, template, resources[logical_id], region)
    if resource_type == "AWS::StepFunctions::StateMachine":
        arn = _recreate_state_machine(stack, logical_id, template, resources[logical_id], region)
        return [f"state machine {logical_id} re-created for the interpreter ({arn})"]
    if resource_type == "AWS::Lambda::Function" and logical_id in resources:
        return _apply_log_group(stack, logical_id, template, resources[logical_id], region, account)
    if resource_type == "AWS::KMS::Key" and logical_id in resources:
        return kms_emulation.key_policy_as_json(logical_id, resources[logical_id], account, region)
    if resource_type == "AWS::Logs::LogGroup" and logical_id in resources:
        props = _resolved(stack, logical_id, template)
        return kms_emulation.log_group_key(logical_id, props, resources[logical_id], account, region)
    if resource_type == "AWS::Lambda::EventInvokeConfig":
        props = _resolved(stack, logical_id, template)
        lam = boto3.client("lambda", region_name=region)
        config: dict[str, Any] = {
            k: props[k] for k in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds") if k in props
        }
        if props.get("DestinationConfig"):
            config["DestinationConfig"] = props["DestinationConfig"]
        lam.put_function_event_invoke_config(FunctionName=props["FunctionName"], **config)
        return [f"event invoke config {logical_id} for {props['FunctionName']}"]
    if resource_type == "AWS::SageMaker::Workteam":
        resources[logical_id] = _create_workteam(stack, logical_id, template, region)
        return [f"workteam {logical_id} ({resources[logical_id]})"]
    return None


def _apply_log_group(
    stack: Any, logical_id: str, template: dict[str, Any], function_name: str, region: str, account: str
) -> list[str]:
    """A function's LoggingConfig.LogGroup (moto ignores it): its logs go to that group."""
    group = (_resolved(stack, logical_id, template).get("LoggingConfig") or {}).get("LogGroup")
    if not group:
        return []
    from moto.awslambda.utils import get_backend

    fn = get_backend(account, region).get_function(function_name)
    fn.logs_group_name = group
    return [f"function {logical_id} logs to {group}"]
