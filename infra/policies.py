"""IAM policy documents, least privilege per workload (pure: CloudFormation fragments).

Object access is scoped by key prefix (see `tidelog.storage.keys`): each
workload may touch only the prefixes its job needs.  ``s3:ListBucket`` is
granted on the bucket itself because ``HeadBucket`` (every store's start-up
check) requires it.  DynamoDB access is table-wide: the metadata layout puts
unrelated items of one partition under one key, so ``dynamodb:LeadingKeys``
cannot separate jobs without breaking them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tidelog.storage import keys

Json = dict[str, Any]

TABLE_READ = ["dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:ConditionCheckItem"]
# TransactWriteItems has no IAM action of its own: each item is authorised as the
# PutItem / UpdateItem / DeleteItem / ConditionCheckItem it performs.
TABLE_WRITE = ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"]

INGEST = keys.INGEST_ROOT
INDEX = keys.INDEX_ROOT
TIER = keys.TIER_ROOT
GC_STATE = keys.GC_STATE_ROOT


@dataclass(frozen=True, slots=True)
class ObjectAccess:
    """Which key prefixes a workload reads, writes and deletes."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()


#: The Lambda jobs (`tidelog.lambdas.handlers` -> `storage.maintenance`) and what each does to
#: the bucket; keep in step with the services' object calls.
LAMBDA_ACCESS: dict[str, ObjectAccess] = {
    # `tiering.Tierer`: reads checkpointed ingest ranges through index objects, writes tier segments.
    "tier": ObjectAccess(read=(INGEST, INDEX), write=(TIER,)),
    # `retention.RetentionService`: sizes spans from index objects; it only moves the log start.
    "retention": ObjectAccess(read=(INDEX,)),
    # `compaction.Compactor`: rewrites tier segments of compacted topics.
    "compaction": ObjectAccess(read=(TIER,), write=(TIER,)),
    # `sweeper.Sweeper`: lists everything, reads references and its own state, deletes garbage.
    "gc": ObjectAccess(read=(INDEX, GC_STATE), write=(GC_STATE,), delete=(INGEST, INDEX, TIER, GC_STATE)),
}

#: A broker writes ingest and index objects and reads everything it serves.
BROKER_ACCESS = ObjectAccess(read=(INGEST, INDEX, TIER), write=(INGEST, INDEX))


def object_statements(bucket_arn: Any, access: ObjectAccess) -> list[Json]:
    """Statements for ``access`` on the bucket whose ARN is ``bucket_arn`` (a string or intrinsic)."""
    def arns(prefixes: tuple[str, ...]) -> list[Json]:
        return [{"Fn::Join": ["", [bucket_arn, "/", prefix, "*"]]} for prefix in prefixes]

    statements: list[Json] = [{"Sid": "HeadAndList", "Effect": "Allow", "Action": ["s3:ListBucket"],
                               "Resource": bucket_arn}]
    if access.read:
        statements.append({"Sid": "Read", "Effect": "Allow", "Action": ["s3:GetObject"],
                           "Resource": arns(access.read)})
    if access.write:
        statements.append({"Sid": "Write", "Effect": "Allow",
                           "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
                           "Resource": arns(access.write)})
    if access.delete:
        statements.append({"Sid": "Delete", "Effect": "Allow", "Action": ["s3:DeleteObject"],
                           "Resource": arns(access.delete)})
    return statements


def table_statements(table_arn: Any) -> list[Json]:
    return [{"Sid": "Metadata", "Effect": "Allow", "Action": TABLE_READ + TABLE_WRITE, "Resource": table_arn}]


def kms_statements(key_arn: str | None) -> list[Json]:
    if not key_arn:
        return []
    return [{"Sid": "Encryption", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
             "Resource": key_arn}]


def log_statements(log_group_arn: Any) -> list[Json]:
    return [{"Sid": "Logs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": log_group_arn}]


def replication_statements(source_arn: Any, destination_arn: Any, source_key: str | None,
                           destination_key: str | None) -> list[Json]:
    """What S3 replication needs and nothing more (AWS's documented minimum)."""
    statements: list[Json] = [
        {"Sid": "SourceConfig", "Effect": "Allow",
         "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"], "Resource": source_arn},
        {"Sid": "SourceObjects", "Effect": "Allow",
         "Action": ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging"],
         "Resource": {"Fn::Join": ["", [source_arn, "/*"]]}},
        {"Sid": "DestinationObjects", "Effect": "Allow",
         "Action": ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"],
         "Resource": {"Fn::Join": ["", [destination_arn, "/*"]]}},
    ]
    if source_key:
        statements.append({"Sid": "DecryptSource", "Effect": "Allow", "Action": ["kms:Decrypt"],
                           "Resource": source_key})
    if destination_key:
        statements.append({"Sid": "EncryptDestination", "Effect": "Allow", "Action": ["kms:Encrypt"],
                           "Resource": destination_key})
    return statements


def policy(name: str, statements: list[Json]) -> Json:
    return {"PolicyName": name, "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}


def assume_role(service: str) -> Json:
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}


def tls_only_policy(bucket_arn: Any) -> Json:
    """Deny every request to the bucket or its objects that is not made over TLS."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [bucket_arn, {"Fn::Join": ["", [bucket_arn, "/*"]]}],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }]}
