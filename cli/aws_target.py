"""The deployed stack `labelloop status` and `labelloop pull` talk to: AWS or a `local up` endpoint.

Credentials and region come from the standard AWS configuration chain (``--profile``/``AWS_PROFILE``,
``AWS_REGION``, ``AWS_ENDPOINT_URL``); a loopback ``--endpoint-url`` (``labelloop local up``) needs
none, as the emulation accepts any. The stack's data bucket and prefixes are read from its
CloudFormation outputs. The usual failures become one-line `CliError`s (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from cli.errors import CliError
from labelloop_core import contract

DEFAULT_STACK = "LabelLoop"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: Region of a loopback endpoint when none is configured (`labelloop local up` serves us-east-1).
LOCAL_REGION = "us-east-1"
NO_CREDENTIALS = "no AWS credentials found: configure them (aws configure, AWS_PROFILE, or environment)"


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """``--stack``, ``--endpoint-url``, ``--region``, ``--profile``."""
    parser.add_argument("--stack", default=DEFAULT_STACK, help=f"CloudFormation stack name (default {DEFAULT_STACK})")
    parser.add_argument(
        "--endpoint-url", help="AWS endpoint to talk to, e.g. http://127.0.0.1:4566 from `labelloop local up`"
    )
    parser.add_argument("--region", help="AWS region (default: the configuration chain's)")
    parser.add_argument("--profile", help="AWS profile (default: the configuration chain's)")


@dataclass
class Target:
    """A reachable stack: its clients and what its outputs say."""

    session: Any
    endpoint_url: str | None
    stack: str
    outputs: dict[str, str]
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(service, endpoint_url=self.endpoint_url)
        return self._clients[service]

    @property
    def bucket(self) -> str:
        return self.outputs["DataBucketName"]

    @property
    def incoming_prefix(self) -> str:
        return self.outputs.get("IncomingPrefix", contract.DEFAULT_INCOMING_PREFIX)

    @property
    def exports_prefix(self) -> str:
        return self.outputs.get("ExportsPrefix", contract.DEFAULT_EXPORTS_PREFIX)

    @property
    def work_prefix(self) -> str:
        return self.outputs.get("WorkPrefix", contract.DEFAULT_WORK_PREFIX)

    def where(self) -> str:
        return self.endpoint_url or f"region {self.session.region_name}"


def _is_loopback(url: str | None) -> bool:
    return bool(url) and (urlparse(str(url)).hostname or "") in LOOPBACK


def connect(args: argparse.Namespace) -> Target:
    """Open the stack named by ``--stack`` at ``--endpoint-url`` (or AWS); raises `CliError`."""
    import boto3
    from botocore.config import Config

    endpoint = args.endpoint_url
    if endpoint and not urlparse(endpoint).scheme.startswith("http"):
        raise CliError(f"--endpoint-url must be an http(s) URL, got {endpoint!r}")
    try:
        session = boto3.Session(profile_name=args.profile, region_name=args.region)
    except Exception as exc:  # ProfileNotFound and friends
        raise CliError(f"AWS configuration: {exc}") from None
    local = _is_loopback(endpoint)
    if session.region_name is None:
        if not local:
            raise CliError("no AWS region configured: set AWS_REGION (or --region, or a profile's region)")
        session = boto3.Session(profile_name=args.profile, region_name=LOCAL_REGION)
    if session.get_credentials() is None:
        if not local:
            raise CliError(NO_CREDENTIALS)
        session = boto3.Session(
            aws_access_key_id="labelloop-local",
            aws_secret_access_key="labelloop-local",
            region_name=session.region_name,
        )
    target = Target(session, endpoint, args.stack, {})
    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=60)
    target._clients["cloudformation"] = session.client("cloudformation", endpoint_url=endpoint, config=config)
    with aws_errors(target):
        stacks = target.client("cloudformation").describe_stacks(StackName=args.stack)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    if "DataBucketName" not in outputs:
        raise CliError(f"stack {args.stack} has no DataBucketName output: is it a LabelLoop stack?")
    target.outputs = outputs
    return target


@contextlib.contextmanager
def aws_errors(target: Target) -> Iterator[None]:
    """Translate the common AWS failures into one-line `CliError`s."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    try:
        yield
    except EndpointConnectionError:
        hint = " (is `labelloop local up` running?)" if _is_loopback(target.endpoint_url) else ""
        raise CliError(f"cannot reach {target.endpoint_url or 'AWS'}{hint}") from None
    except (NoCredentialsError, PartialCredentialsError):
        raise CliError(NO_CREDENTIALS) from None
    except NoRegionError:
        raise CliError("no AWS region configured: set AWS_REGION (or --region)") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        if code == "ValidationError" and "does not exist" in message:
            raise CliError(f"stack {target.stack} not found at {target.where()} (use --stack NAME)") from None
        if code in {"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException"}:
            raise CliError(f"AWS credentials rejected ({code}): refresh them") from None
        if code in {"AccessDenied", "AccessDeniedException"}:
            raise CliError(f"access denied: {message or code}") from None
        raise CliError(f"{exc.operation_name} failed: {code}: {message}") from None


def list_prefixes(target: Target, prefix: str) -> list[str]:
    """The "folder" names directly under ``prefix`` in the data bucket."""
    found: list[str] = []
    paginator = target.client("s3").get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=target.bucket, Prefix=prefix, Delimiter="/"):
        found += [p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])]
    return found


def list_objects(target: Target, prefix: str) -> list[dict[str, Any]]:
    """Every object under ``prefix`` (Key, Size, ETag, ...)."""
    found: list[dict[str, Any]] = []
    for page in target.client("s3").get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=prefix):
        found += page.get("Contents", [])
    return found


def read_json(target: Target, key: str) -> Any:
    """A JSON object of the data bucket; None when it does not exist."""
    import json

    from botocore.exceptions import ClientError

    try:
        body = target.client("s3").get_object(Bucket=target.bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
            return None
        raise
    return json.loads(body)


def read_jsonl(target: Target, key: str) -> list[Any]:
    """A JSON Lines object as a list; empty when it does not exist."""
    import json

    from botocore.exceptions import ClientError

    try:
        body = target.client("s3").get_object(Bucket=target.bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
            return []
        raise
    return [json.loads(line) for line in body.decode("utf-8").splitlines() if line.strip()]
