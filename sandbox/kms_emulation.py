"""What moto's CloudFormation leaves out of KMS encryption, applied after the stack is created.

moto stores a key's policy as the template's object (its KMS API then cannot read it), keeps SSE-S3
on a bucket declared SSE-KMS and drops a log group's ``KmsKeyId``. Nothing is encrypted in the
emulation and key policies are not evaluated; this only makes the configuration read back as deployed.
"""

from __future__ import annotations

import json
from typing import Any

from moto.kms.models import kms_backends
from moto.logs.models import logs_backends


def bucket_encryption(s3: Any, logical_id: str, props: dict[str, Any], bucket: str) -> list[str]:
    """Apply an SSE-KMS ``BucketEncryption`` with PutBucketEncryption (CloudFormation shape translated)."""
    rules = (props.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration", [])
    if not any("KMSMasterKeyID" in rule.get("ServerSideEncryptionByDefault", {}) for rule in rules):
        return []
    api = [
        {
            "ApplyServerSideEncryptionByDefault": r["ServerSideEncryptionByDefault"],
            "BucketKeyEnabled": bool(r.get("BucketKeyEnabled")),
        }
        for r in rules
    ]
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": api})
    return [f"bucket {logical_id} SSE-KMS"]


def key_policy_as_json(logical_id: str, key_id: str, account: str, region: str) -> list[str]:
    """Store a CloudFormation-created key's policy as JSON, as moto's KMS API expects."""
    key = kms_backends[account][region].keys[key_id]
    if isinstance(key.policy, dict):
        key.policy = json.dumps(key.policy)
    return [f"KMS key {logical_id} policy as JSON"]


def log_group_key(logical_id: str, props: dict[str, Any], group: str, account: str, region: str) -> list[str]:
    """Record a log group's KMS key on moto's group (moto has no AssociateKmsKey)."""
    if not props.get("KmsKeyId"):
        return []
    logs_backends[account][region].groups[group].kms_key_id = props["KmsKeyId"]
    return [f"log group {logical_id} KMS key"]
