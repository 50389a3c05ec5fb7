"""Creating, updating, inspecting and deleting a deployment through CloudFormation (boto3).

Idempotence: every stack is created or updated to the template built now;
an update CloudFormation finds empty is reported as ``unchanged``, and
parameters an operator tuned earlier but did not pass again keep their
previous values.  The Lambda zip is content-addressed, so an unchanged
build uploads nothing and changes no function.

Safety:

* Buckets and the table are ``Retain``; ``destroy`` deletes them itself,
  after the stacks, and only when asked to (``keep_data=False``).
* Adding or removing the replica region of an existing deployment would
  turn the table into a global table or back, which CloudFormation does by
  *replacing* it (a new, empty table).  `deploy` refuses instead.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from tidelog.storage.replication import ReplicationLag, measure_replication_lag, open_bucket

from .packaging import LambdaTarget, LambdaZip
from .template import (
    StackOptions,
    TemplateError,
    artifacts_stack_name,
    artifacts_template,
    primary_template,
    replica_stack_name,
    replica_template,
)

MAX_TEMPLATE_BODY = 51_200  # CloudFormation's limit for an inline template
STACK_TIMEOUT_S = 3_600
CAPABILITIES = ["CAPABILITY_IAM"]
Progress = Callable[[str], None]


class DeployError(RuntimeError):
    """A deployment step failed; the message says which and why, in one line."""


class Aws:
    """boto3 clients for one endpoint (real AWS when ``endpoint_url`` is None), one per service and region."""

    def __init__(self, endpoint_url: str | None = None, session: Any = None) -> None:
        self.endpoint_url = endpoint_url
        self._session = session
        self._clients: dict[tuple[str, str], Any] = {}

    def client(self, service: str, region: str) -> Any:
        found = self._clients.get((service, region))
        if found is None:
            if self._session is None:
                self._session = boto3.session.Session()
            config = Config(retries={"mode": "standard", "max_attempts": 5},
                            s3={"addressing_style": "path"} if self.endpoint_url else None)
            found = self._clients[(service, region)] = self._session.client(
                service, region_name=region, endpoint_url=self.endpoint_url, config=config)
        return found

    @property
    def poll_first_s(self) -> float:
        # Emulators finish stacks at once; AWS takes tens of seconds to minutes.
        return 0.05 if self.endpoint_url else 2.0


@dataclass(frozen=True, slots=True)
class DeployRequest:
    stack_name: str
    region: str
    target: LambdaTarget
    replica_region: str | None = None
    kms_key_arn: str | None = None
    replica_kms_key_arn: str | None = None
    global_table: bool = True
    brokers: int = 0
    parameters: dict[str, str] = field(default_factory=dict)
    lambda_endpoint_url: str | None = None


@dataclass(frozen=True, slots=True)
class StackResult:
    name: str
    region: str
    action: str  # created | updated | unchanged
    status: str
    outputs: dict[str, str]


@dataclass(frozen=True, slots=True)
class DeployResult:
    stacks: list[StackResult]
    code_key: str
    code_uploaded: bool

    @property
    def outputs(self) -> dict[str, str]:
        return self.stacks[-1].outputs


@dataclass(frozen=True, slots=True)
class StackInfo:
    name: str
    region: str
    status: str
    outputs: dict[str, str]
    parameters: dict[str, str]


# --------------------------------------------------------------------------
# Stacks
# --------------------------------------------------------------------------


def describe_stack(aws: Aws, name: str, region: str) -> StackInfo | None:
    cfn = aws.client("cloudformation", region)
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise
    if not stacks or stacks[0]["StackStatus"] == "DELETE_COMPLETE":
        return None
    s = stacks[0]
    return StackInfo(name, region, s["StackStatus"],
                     {o["OutputKey"]: o["OutputValue"] for o in s.get("Outputs", [])},
                     {p["ParameterKey"]: p.get("ParameterValue", "") for p in s.get("Parameters", [])})


def ensure_stack(aws: Aws, name: str, region: str, template: dict, parameters: dict[str, str],
                 progress: Progress, *, template_bucket: str | None = None) -> StackResult:
    cfn = aws.client("cloudformation", region)
    existing = describe_stack(aws, name, region)
    if existing is not None and existing.status == "ROLLBACK_COMPLETE":
        progress(f"stack {name} never got created (ROLLBACK_COMPLETE); deleting it to try again")
        cfn.delete_stack(StackName=name)
        _wait(aws, name, region, "DELETE")
        existing = None
    if existing is not None and existing.status.endswith("_IN_PROGRESS"):
        raise DeployError(f"stack {name} is busy ({existing.status}): wait for it to finish and retry")
    declared = template.get("Parameters", {})
    params = [{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items() if k in declared]
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise DeployError(f"unknown template parameter(s) {', '.join(unknown)}: "
                          f"known are {', '.join(sorted(declared))}")
    tags = [{"Key": "tidelog:stack", "Value": name}]
    if existing is not None:
        deployed = _deployed_template(cfn, name)
        params += _tuned_before(deployed, declared, parameters, existing)
        if deployed == json.loads(json.dumps(template)) and all(
                existing.parameters.get(p["ParameterKey"]) == p["ParameterValue"] for p in params):
            # Checked here rather than left to CloudFormation's "no updates" answer,
            # which not every emulator gives.
            progress(f"stack {name} in {region} is up to date")
            return StackResult(name, region, "unchanged", existing.status, existing.outputs)
    body = _template_argument(aws, name, region, template, template_bucket)
    if existing is None:
        progress(f"creating stack {name} in {region}")
        cfn.create_stack(StackName=name, Parameters=params, Capabilities=CAPABILITIES, Tags=tags, **body)
        status = _wait(aws, name, region, "CREATE")
        action = "created"
    else:
        try:
            cfn.update_stack(StackName=name, Parameters=params, Capabilities=CAPABILITIES, Tags=tags, **body)
        except ClientError as exc:
            if "No updates are to be performed" not in str(exc):
                raise
            progress(f"stack {name} in {region} is up to date")
            return StackResult(name, region, "unchanged", existing.status, existing.outputs)
        progress(f"updating stack {name} in {region}")
        status = _wait(aws, name, region, "UPDATE")
        action = "updated"
    info = describe_stack(aws, name, region)
    assert info is not None
    return StackResult(name, region, action, status, info.outputs)


def _deployed_template(cfn: Any, name: str) -> dict:
    body = cfn.get_template(StackName=name, TemplateStage="Original")["TemplateBody"]
    return json.loads(body) if isinstance(body, str) else body


def _tuned_before(deployed: dict, declared: dict, given: dict[str, str], existing: StackInfo) -> list[dict]:
    """Keep the values an operator set on an earlier deploy and did not pass now.

    A value differing from the deployed template's default was set on
    purpose and is passed again; one equal to it follows the new template's
    default, so an upgrade can change defaults.  (Explicit values rather
    than ``UsePreviousValue``, which some emulators mishandle for defaulted
    parameters.)
    """
    defaults = {k: str(v.get("Default")) for k, v in deployed.get("Parameters", {}).items() if "Default" in v}
    return [{"ParameterKey": k, "ParameterValue": existing.parameters[k]} for k in declared
            if k not in given and k in existing.parameters and existing.parameters[k] != defaults.get(k)]


def _template_argument(aws: Aws, name: str, region: str, template: dict, bucket: str | None) -> dict:
    body = json.dumps(template, separators=(",", ":"))
    if len(body) <= MAX_TEMPLATE_BODY:
        return {"TemplateBody": body}
    if bucket is None:
        raise DeployError(f"template of stack {name} is {len(body)} bytes, over CloudFormation's inline limit")
    key = f"templates/{name}.json"
    s3 = aws.client("s3", region)
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
    return {"TemplateURL": _object_url(aws, bucket, key, region)}


def _object_url(aws: Aws, bucket: str, key: str, region: str) -> str:
    if aws.endpoint_url:
        return f"{aws.endpoint_url.rstrip('/')}/{bucket}/{key}"
    return f"https://{bucket}.s3.{region}.amazonaws.com/{key}"


def _wait(aws: Aws, name: str, region: str, operation: str) -> str:
    """Poll until the operation ends; return the final status or raise with the failure reasons."""
    cfn = aws.client("cloudformation", region)
    deadline = time.monotonic() + STACK_TIMEOUT_S
    delay = aws.poll_first_s
    while True:
        try:
            status = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
        except ClientError as exc:
            if operation == "DELETE" and "does not exist" in str(exc):
                return "DELETE_COMPLETE"
            raise
        if not status.endswith("_IN_PROGRESS"):
            break
        if time.monotonic() > deadline:
            raise DeployError(f"stack {name} still {status} after {STACK_TIMEOUT_S} s: check the console")
        time.sleep(delay)
        delay = min(delay * 1.5, 10.0)
    if status != f"{operation}_COMPLETE":
        raise DeployError(f"stack {name} ended {status}: {_failure_reasons(cfn, name)}")
    return status


def _failure_reasons(cfn: Any, name: str) -> str:
    try:
        events = cfn.describe_stack_events(StackName=name)["StackEvents"]
    except ClientError:
        return "no events available"
    reasons = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', e['ResourceStatus'])}"
               for e in events if e["ResourceStatus"].endswith("FAILED")][:3]
    return "; ".join(reasons) or "see the stack's events"


def delete_stack(aws: Aws, name: str, region: str, progress: Progress) -> bool:
    if describe_stack(aws, name, region) is None:
        return False
    progress(f"deleting stack {name} in {region}")
    aws.client("cloudformation", region).delete_stack(StackName=name)
    _wait(aws, name, region, "DELETE")
    return True


# --------------------------------------------------------------------------
# deploy / destroy / status
# --------------------------------------------------------------------------


def deploy(aws: Aws, request: DeployRequest, package: Callable[[], LambdaZip], progress: Progress) -> DeployResult:
    """Check, package (``package`` builds the code zip for ``request.target``), then create or update
    the artifacts, replica and main stacks in that order."""
    options = StackOptions(
        stack_name=request.stack_name, region=request.region, runtime=request.target.runtime,
        architecture=request.target.architecture, replica_region=request.replica_region,
        kms_key_arn=request.kms_key_arn,
        replica_kms_key_arn=request.replica_kms_key_arn, global_table=request.global_table,
        brokers=request.brokers, lambda_endpoint_url=request.lambda_endpoint_url)
    try:
        options.validate()
    except TemplateError as exc:
        raise DeployError(str(exc)) from exc
    _check_lifecycle_days(request.parameters)
    _refuse_table_replacement(aws, request.stack_name, request.region, options.table_kind)
    code = package()
    stacks = []
    artifacts = ensure_stack(aws, artifacts_stack_name(request.stack_name), request.region, artifacts_template(),
                             {}, progress)
    stacks.append(artifacts)
    code_bucket = artifacts.outputs["ArtifactsBucketName"]
    uploaded = upload_code(aws, request.region, code_bucket, code, progress)
    replica_bucket = None
    if request.replica_region:
        replica = ensure_stack(aws, replica_stack_name(request.stack_name), request.replica_region,
                               replica_template(options), _only(request.parameters, replica_template(options)),
                               progress)
        stacks.append(replica)
        replica_bucket = replica.outputs["ReplicaBucketName"]
    final = StackOptions(**{**_fields(options), "replica_bucket": replica_bucket, "code_bucket": code_bucket,
                            "code_key": code.key})
    template = primary_template(final)
    parameters = {"CodeBucket": code_bucket, "CodeKey": code.key, **request.parameters}
    stacks.append(ensure_stack(aws, request.stack_name, request.region, template, parameters, progress,
                               template_bucket=code_bucket))
    return DeployResult(stacks, code.key, uploaded)


def _fields(options: StackOptions) -> dict:
    return {name: getattr(options, name) for name in options.__dataclass_fields__}


def _only(parameters: dict[str, str], template: dict) -> dict[str, str]:
    """The parameters a (smaller) stack declares: lifecycle tuning applies to both buckets."""
    return {k: v for k, v in parameters.items() if k in template.get("Parameters", {})}


def _check_lifecycle_days(parameters: dict[str, str]) -> None:
    ia = int(parameters.get("TierInfrequentAccessDays", 30))
    glacier = int(parameters.get("TierGlacierDays", 90))
    if glacier < ia + 30:
        raise DeployError(f"TierGlacierDays ({glacier}) must be at least 30 days after "
                          f"TierInfrequentAccessDays ({ia}): S3 keeps objects 30 days in Standard-IA")


def _refuse_table_replacement(aws: Aws, stack_name: str, region: str, kind: str) -> None:
    existing = describe_stack(aws, stack_name, region)
    if existing is None or existing.status == "ROLLBACK_COMPLETE":
        return
    before = existing.outputs.get("MetadataTableKind", "regional")
    if before != kind:
        raise DeployError(f"stack {stack_name} has a {before} metadata table and this deploy asks for a {kind} "
                          "one: CloudFormation would replace it with an empty table; keep the same "
                          "--replica-region/--global-table choice (docs/design/0005-deployment-and-recovery.md "
                          "describes the migration)")


def upload_code(aws: Aws, region: str, bucket: str, code: LambdaZip, progress: Progress) -> bool:
    s3 = aws.client("s3", region)
    try:
        s3.head_object(Bucket=bucket, Key=code.key)
        progress(f"lambda code {code.key} already uploaded")
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    progress(f"uploading lambda code ({len(code.data) / 1e6:.1f} MB) to s3://{bucket}/{code.key}")
    s3.put_object(Bucket=bucket, Key=code.key, Body=code.data, ChecksumAlgorithm="SHA256")
    return True


@dataclass(slots=True)
class DestroyResult:
    stacks_deleted: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    retained: list[str] = field(default_factory=list)


def destroy(aws: Aws, stack_name: str, region: str, *, keep_data: bool, progress: Progress) -> DestroyResult:
    main = describe_stack(aws, stack_name, region)
    artifacts = describe_stack(aws, artifacts_stack_name(stack_name), region)
    if main is None and artifacts is None:
        raise DeployError(f"no tidelog stack named {stack_name} in {region}")
    result = DestroyResult()
    outputs = main.outputs if main else {}
    replica_region = outputs.get("ReplicaRegion")
    if main is not None and delete_stack(aws, stack_name, region, progress):
        result.stacks_deleted.append(stack_name)
    if replica_region and delete_stack(aws, replica_stack_name(stack_name), replica_region, progress):
        result.stacks_deleted.append(replica_stack_name(stack_name))
    data = [("bucket", outputs.get("DataBucketName"), region),
            ("bucket", outputs.get("ReplicaBucketName"), replica_region),
            ("table", outputs.get("MetadataTableName"), region)]
    for kind, name, where in data:
        if not name or not where:
            continue
        if keep_data:
            result.retained.append(f"{kind} {name} ({where})")
            continue
        if kind == "bucket":
            deleted = delete_bucket(aws, name, where, progress)
        else:
            deleted = delete_table(aws, name, where, replica_region, progress)
        if deleted:
            result.deleted.append(f"{kind} {name} ({where})")
    if artifacts is not None:
        bucket = artifacts.outputs.get("ArtifactsBucketName")
        if bucket:
            delete_bucket(aws, bucket, region, progress, delete=False)
        if delete_stack(aws, artifacts_stack_name(stack_name), region, progress):
            result.stacks_deleted.append(artifacts_stack_name(stack_name))
    return result


def delete_bucket(aws: Aws, bucket: str, region: str, progress: Progress, *, delete: bool = True) -> bool:
    """Delete every object version and delete marker, then (``delete``) the bucket itself."""
    s3 = aws.client("s3", region)
    progress(f"emptying bucket {bucket}")
    for attempt in range(5):
        try:
            _empty(s3, bucket)
            if delete:
                s3.delete_bucket(Bucket=bucket)
            return True
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "NoSuchBucket":
                return False
            if code != "BucketNotEmpty" or attempt == 4:  # replication may still be landing objects
                raise
            time.sleep(aws.poll_first_s * 10)
    return False


def _empty(s3: Any, bucket: str) -> None:
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        victims = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                   for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        for i in range(0, len(victims), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": victims[i:i + 1000], "Quiet": True})


def delete_table(aws: Aws, table: str, region: str, replica_region: str | None, progress: Progress) -> bool:
    """Delete the metadata table; a global table loses its replica first, as DynamoDB requires."""
    ddb = aws.client("dynamodb", region)
    try:
        description = ddb.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return False
        raise
    replicas = [r["RegionName"] for r in description.get("Replicas", []) if r["RegionName"] != region]
    if replicas:
        progress(f"removing replicas of table {table} in {', '.join(replicas)}")
        ddb.update_table(TableName=table, ReplicaUpdates=[{"Delete": {"RegionName": r}} for r in replicas])
        deadline = time.monotonic() + STACK_TIMEOUT_S
        while ddb.describe_table(TableName=table)["Table"].get("Replicas"):
            if time.monotonic() > deadline:
                raise DeployError(f"replicas of table {table} were not removed in time")
            time.sleep(aws.poll_first_s * 20)
    progress(f"deleting table {table} in {region}")
    ddb.delete_table(TableName=table)
    return True


@dataclass(slots=True)
class Status:
    stack: StackInfo
    others: list[StackInfo]
    endpoint_url: str | None
    lag: ReplicationLag | None = None
    lag_error: str | None = None

    def serve_args(self) -> list[str]:
        o = self.stack.outputs
        args = ["tidelog", "serve", "--s3-bucket", o.get("DataBucketName", "?"),
                "--dynamodb-table", o.get("MetadataTableName", "?"), "--region", self.stack.region]
        if self.endpoint_url:
            args += ["--endpoint-url", self.endpoint_url]
        if o.get("ReplicaBucketName") and o.get("ReplicaRegion"):
            args += ["--replica-bucket", o["ReplicaBucketName"], "--replica-region", o["ReplicaRegion"]]
        return args

    def to_json(self) -> dict:
        return {
            "stack": self.stack.name, "region": self.stack.region, "status": self.stack.status,
            "outputs": self.stack.outputs,
            "stacks": [{"name": s.name, "region": s.region, "status": s.status} for s in [self.stack, *self.others]],
            "serve": self.serve_args(),
            "replication": None if self.lag is None else self.lag.to_json(),
            "replication_error": self.lag_error,
        }


def status(aws: Aws, stack_name: str, region: str) -> Status:
    main = describe_stack(aws, stack_name, region)
    if main is None:
        raise DeployError(f"no tidelog stack named {stack_name} in {region}: deploy it with `tidelog deploy`")
    others = [s for s in (describe_stack(aws, artifacts_stack_name(stack_name), region),
                          describe_stack(aws, replica_stack_name(stack_name), main.outputs["ReplicaRegion"])
                          if main.outputs.get("ReplicaRegion") else None) if s is not None]
    result = Status(main, others, aws.endpoint_url)
    o = main.outputs
    if o.get("ReplicaBucketName") and o.get("ReplicaRegion") and o.get("DataBucketName"):
        try:
            result.lag = asyncio.run(_lag(aws, o["DataBucketName"], region, o["ReplicaBucketName"],
                                          o["ReplicaRegion"]))
        except Exception as exc:  # noqa: BLE001 - status still shows the stacks when a bucket is unreadable
            result.lag_error = f"{type(exc).__name__}: {exc}"
    return result


async def _lag(aws: Aws, primary: str, region: str, replica: str, replica_region: str) -> ReplicationLag:
    source = await open_bucket(primary, region=region, endpoint_url=aws.endpoint_url)
    try:
        target = await open_bucket(replica, region=replica_region, endpoint_url=aws.endpoint_url)
        try:
            return await measure_replication_lag(source, target)
        finally:
            await target.close()
    finally:
        await source.close()
