"""CloudFormation templates for a tidelog deployment, built as plain dicts (pure).

Three stacks make one deployment (`deploy` orders them):

* ``<name>-artifacts`` (primary region): a private bucket holding the Lambda
  code zip, which must exist before the main stack can reference it.
* ``<name>-replica`` (replica region, optional): the replica bucket.  It must
  exist, versioned, before the primary bucket's replication rule names it.
* ``<name>`` (primary region): the data bucket (versioned, encrypted,
  TLS-only, lifecycle tiering of ``tier/``), its replication rule and role,
  the metadata table (a global table when a replica region is given, unless
  turned off), the
  four maintenance Lambdas with their own least-privilege roles and
  EventBridge schedules, optionally ECS Fargate brokers, and a Glue table
  over the tier segments for Athena.

Structural choices (replica or not, KMS or not, how many brokers) are made
here in Python, which keeps the templates free of conditions; numbers an
operator tunes (lifecycle days, schedules, log retention, broker size) are
template parameters with defaults.

Data resources (buckets, table) are ``Retain``: deleting a stack never
deletes data by accident.  ``tidelog destroy`` deletes them explicitly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from . import glue, policies
from .packaging import DEFAULT_RUNTIME

Json = dict[str, Any]

TEMPLATE_VERSION = "2010-09-09"
FUNCTION_NAME_MAX = 64
STACK_NAME_MAX = 40  # leaves room for "-artifacts", "-compaction" and generated bucket suffixes
_STACK_NAME = re.compile(r"^[a-zA-Z][-a-zA-Z0-9]*$")
BROKER_PORT = 9092
METRICS_PORT = 9308
RETAIN = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}


class TemplateError(ValueError):
    """The requested deployment cannot be expressed; the message says which option to change."""


@dataclass(frozen=True, slots=True)
class LambdaSpec:
    handler: str
    memory_mb: int
    timeout_s: int
    schedule: str


#: The maintenance jobs: handler in `tidelog.lambdas.handlers`, size, and default schedule.
LAMBDAS: dict[str, LambdaSpec] = {
    "tier": LambdaSpec("tier_handler", 2048, 900, "rate(5 minutes)"),
    "retention": LambdaSpec("retention_handler", 512, 300, "rate(15 minutes)"),
    "compaction": LambdaSpec("compaction_handler", 2048, 900, "rate(1 hour)"),
    "gc": LambdaSpec("gc_handler", 1024, 900, "rate(1 hour)"),
}
HANDLER_MODULE = "tidelog.lambdas.handlers"


@dataclass(frozen=True, slots=True)
class StackOptions:
    stack_name: str
    region: str
    code_bucket: str = "code-bucket"
    code_key: str = "lambda/tidelog.zip"
    runtime: str = DEFAULT_RUNTIME
    architecture: str = "x86_64"
    replica_region: str | None = None
    replica_bucket: str | None = None
    kms_key_arn: str | None = None
    replica_kms_key_arn: str | None = None
    global_table: bool = True  # with a replica region: replicate the table too
    brokers: int = 0
    lambda_endpoint_url: str | None = None

    @property
    def table_kind(self) -> str:
        return "global" if self.replica_region and self.global_table else "regional"

    def validate(self) -> "StackOptions":
        validate_stack_name(self.stack_name)
        if self.replica_region is not None and self.replica_region == self.region:
            raise TemplateError("the replica region must differ from the primary region")
        if self.kms_key_arn and self.replica_region and not self.replica_kms_key_arn:
            raise TemplateError("a KMS-encrypted bucket replicates only to a KMS key in the replica region: "
                                "give the replica key's ARN too")
        if self.brokers < 0:
            raise TemplateError("the broker count cannot be negative")
        if self.architecture not in ("x86_64", "arm64"):
            raise TemplateError(f"unsupported lambda architecture {self.architecture!r}: use x86_64 or arm64")
        return self


def validate_stack_name(name: str) -> None:
    if not _STACK_NAME.match(name) or len(name) > STACK_NAME_MAX:
        raise TemplateError(f"invalid stack name {name!r}: use a letter then letters, digits or '-', "
                            f"at most {STACK_NAME_MAX} characters")


def function_name(stack_name: str, job: str) -> str:
    return f"{stack_name}-{job}"[:FUNCTION_NAME_MAX]


def artifacts_stack_name(stack_name: str) -> str:
    return f"{stack_name}-artifacts"


def replica_stack_name(stack_name: str) -> str:
    return f"{stack_name}-replica"


# --------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------


def ref(name: str) -> Json:
    return {"Ref": name}


def arn(resource: str) -> Json:
    return {"Fn::GetAtt": [resource, "Arn"]}


def _title(job: str) -> str:
    return job.capitalize()


def _lifecycle_parameters() -> Json:
    return {
        "TierInfrequentAccessDays": {
            "Type": "Number", "Default": 30, "MinValue": 30,
            "Description": "Days after which tier segments move to S3 Standard-IA (30 is S3's minimum)"},
        "TierGlacierDays": {
            "Type": "Number", "Default": 90, "MinValue": 60,
            "Description": "Days after which tier segments move to S3 Glacier Instant Retrieval "
                           "(at least 30 days after the Standard-IA transition)"},
        "NoncurrentVersionDays": {
            "Type": "Number", "Default": 7, "MinValue": 1,
            "Description": "Days a deleted or overwritten object version is kept (undo window)"},
    }


def _data_bucket(kms_key_arn: str | None, replication: Json | None = None) -> Json:
    encryption: Json = {"SSEAlgorithm": "AES256"}
    if kms_key_arn:
        encryption = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key_arn}
    props: Json = {
        "VersioningConfiguration": {"Status": "Enabled"},
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": encryption, "BucketKeyEnabled": bool(kms_key_arn)}]},
        "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                           "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
        "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        "LifecycleConfiguration": {"Rules": [
            {"Id": "tier-segments-to-colder-storage", "Status": "Enabled", "Prefix": policies.TIER,
             "Transitions": [
                 {"StorageClass": "STANDARD_IA", "TransitionInDays": ref("TierInfrequentAccessDays")},
                 {"StorageClass": "GLACIER_IR", "TransitionInDays": ref("TierGlacierDays")}]},
            {"Id": "abort-incomplete-multipart-uploads", "Status": "Enabled",
             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
            {"Id": "expire-old-versions", "Status": "Enabled",
             "NoncurrentVersionExpiration": {"NoncurrentDays": ref("NoncurrentVersionDays")},
             "ExpiredObjectDeleteMarker": True},
        ]},
    }
    if replication is not None:
        props["ReplicationConfiguration"] = replication
    return {"Type": "AWS::S3::Bucket", **RETAIN, "Properties": props}


def _tls_policy(bucket: str) -> Json:
    return {"Type": "AWS::S3::BucketPolicy",
            "Properties": {"Bucket": ref(bucket), "PolicyDocument": policies.tls_only_policy(arn(bucket))}}


def _template(description: str, parameters: Json, resources: Json, outputs: Json) -> Json:
    out: Json = {"AWSTemplateFormatVersion": TEMPLATE_VERSION, "Description": description}
    if parameters:
        out["Parameters"] = parameters
    out["Resources"] = resources
    out["Outputs"] = outputs
    return out


def _output(value: Any, description: str) -> Json:
    return {"Value": value, "Description": description}


# --------------------------------------------------------------------------
# The three stacks
# --------------------------------------------------------------------------


def artifacts_template() -> Json:
    resources = {
        "ArtifactsBucket": {"Type": "AWS::S3::Bucket", "Properties": {
            "BucketEncryption": {"ServerSideEncryptionConfiguration": [
                {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
            "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                               "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        }},
        "ArtifactsBucketPolicy": _tls_policy("ArtifactsBucket"),
    }
    outputs = {"ArtifactsBucketName": _output(ref("ArtifactsBucket"), "Bucket holding Lambda code zips")}
    return _template("tidelog deployment artifacts (Lambda code)", {}, resources, outputs)


def replica_template(options: StackOptions) -> Json:
    resources = {
        "ReplicaBucket": _data_bucket(options.replica_kms_key_arn),
        "ReplicaBucketPolicy": _tls_policy("ReplicaBucket"),
    }
    outputs = {
        "ReplicaBucketName": _output(ref("ReplicaBucket"), "Cross-region copy of the data bucket"),
        "ReplicaBucketArn": _output(arn("ReplicaBucket"), "ARN of the replica bucket"),
    }
    return _template("tidelog replica bucket (cross-region recovery)", _lifecycle_parameters(), resources, outputs)


def primary_template(options: StackOptions) -> Json:
    options.validate()
    if options.replica_region and not options.replica_bucket:
        raise TemplateError("a replica region needs the replica bucket's name (deploy the replica stack first)")
    parameters = {
        **_lifecycle_parameters(),
        "LogRetentionDays": {"Type": "Number", "Default": 30,
                             "AllowedValues": [1, 3, 5, 7, 14, 30, 60, 90, 180, 365],
                             "Description": "Days Lambda and broker logs are kept"},
        "CodeBucket": {"Type": "String", "Default": options.code_bucket,
                       "Description": "Bucket holding the Lambda code zip"},
        "CodeKey": {"Type": "String", "Default": options.code_key,
                    "Description": "Key of the Lambda code zip (content-addressed)"},
    }
    for job, spec in LAMBDAS.items():
        parameters[f"{_title(job)}Schedule"] = {
            "Type": "String", "Default": spec.schedule,
            "Description": f"How often the {job} job runs (EventBridge rate or cron expression)"}
    resources: Json = {}
    outputs: Json = {
        "DataBucketName": _output(ref("DataBucket"), "Bucket for segment objects (--s3-bucket)"),
        "MetadataTableName": _output(ref("MetadataTable"), "Metadata table (--dynamodb-table)"),
        "Region": _output(ref("AWS::Region"), "Primary region (--region)"),
        "MetadataTableKind": _output(options.table_kind, "global (replicated) or regional; never changed "
                                                         "in place (that would replace the table)"),
        "GlueDatabaseName": _output(glue.database_name(options.stack_name), "Glue database for Athena"),
        "GlueTableName": _output(glue.TABLE_NAME, "Glue table over the tier segments"),
    }

    replication = None
    if options.replica_region:
        replica_arn = {"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::{options.replica_bucket}"}
        replication = _replication_rule(replica_arn, options.replica_kms_key_arn)
        # The bucket names the role and the role's policy names the bucket: a separate
        # policy resource breaks the cycle (S3 checks only that the role exists).
        resources["ReplicationRole"] = {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": policies.assume_role("s3.amazonaws.com")}}
        resources["ReplicationPolicy"] = {"Type": "AWS::IAM::Policy", "Properties": {
            "Roles": [ref("ReplicationRole")],
            **policies.policy("replicate-to-replica-bucket", policies.replication_statements(
                arn("DataBucket"), replica_arn, options.kms_key_arn, options.replica_kms_key_arn))}}
        outputs["ReplicaBucketName"] = _output(options.replica_bucket, "Replica bucket (recovery source)")
        outputs["ReplicaRegion"] = _output(options.replica_region, "Replica region")

    resources["DataBucket"] = _data_bucket(options.kms_key_arn, replication)
    resources["DataBucketPolicy"] = _tls_policy("DataBucket")
    resources["MetadataTable"] = _table(options)
    resources.update(_lambdas(options, outputs))
    resources.update(glue.glue_resources(options.stack_name, ref("DataBucket")))
    if options.brokers:
        parameters.update(_broker_parameters())
        resources.update(_brokers(options))
        outputs["BrokerClusterName"] = _output(ref("BrokerCluster"), "ECS cluster running the brokers")
        outputs["BrokerCount"] = _output(str(options.brokers), "Broker services (node ids 0..n-1)")
    return _template(f"tidelog cluster {options.stack_name}: data bucket, metadata table, maintenance jobs",
                     parameters, resources, outputs)


def _replication_rule(replica_arn: Json, replica_key: str | None) -> Json:
    destination: Json = {"Bucket": replica_arn, "StorageClass": "STANDARD"}
    rule: Json = {
        "Id": "replicate-everything", "Status": "Enabled", "Priority": 1, "Filter": {"Prefix": ""},
        # GC's deletes are mirrored, so the replica does not resurrect garbage; versioning
        # on both sides keeps every deleted version for NoncurrentVersionDays.
        "DeleteMarkerReplication": {"Status": "Enabled"},
        "Destination": destination,
    }
    if replica_key:
        destination["EncryptionConfiguration"] = {"ReplicaKmsKeyID": replica_key}
        rule["SourceSelectionCriteria"] = {"SseKmsEncryptedObjects": {"Status": "Enabled"}}
    return {"Role": arn("ReplicationRole"), "Rules": [rule]}


def _table(options: StackOptions) -> Json:
    keys_ = {
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                 {"AttributeName": "sk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    pitr = {"PointInTimeRecoveryEnabled": True}
    if options.table_kind == "global":
        return {"Type": "AWS::DynamoDB::GlobalTable", **RETAIN, "Properties": {
            **keys_,
            "StreamSpecification": {"StreamViewType": "NEW_AND_OLD_IMAGES"},
            "Replicas": [{"Region": region, "PointInTimeRecoverySpecification": pitr}
                         for region in (options.region, options.replica_region)],
        }}
    return {"Type": "AWS::DynamoDB::Table", **RETAIN,
            "Properties": {**keys_, "PointInTimeRecoverySpecification": pitr}}


def _lambdas(options: StackOptions, outputs: Json) -> Json:
    resources: Json = {}
    environment = {"TIDELOG_S3_BUCKET": ref("DataBucket"), "TIDELOG_DYNAMODB_TABLE": ref("MetadataTable")}
    if options.lambda_endpoint_url:
        environment["TIDELOG_ENDPOINT_URL"] = options.lambda_endpoint_url
    for job, spec in LAMBDAS.items():
        title = _title(job)
        name = function_name(options.stack_name, job)
        resources[f"{title}LogGroup"] = {"Type": "AWS::Logs::LogGroup", "Properties": {
            "LogGroupName": f"/aws/lambda/{name}", "RetentionInDays": ref("LogRetentionDays")}}
        statements = (policies.object_statements(arn("DataBucket"), policies.LAMBDA_ACCESS[job])
                      + policies.table_statements(arn("MetadataTable"))
                      + policies.kms_statements(options.kms_key_arn)
                      + policies.log_statements(arn(f"{title}LogGroup")))
        resources[f"{title}Role"] = {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": policies.assume_role("lambda.amazonaws.com"),
            "Policies": [policies.policy(f"tidelog-{job}", statements)],
        }}
        resources[f"{title}Function"] = {"Type": "AWS::Lambda::Function", "DependsOn": [f"{title}LogGroup"],
                                         "Properties": {
            "FunctionName": name,
            "Description": f"tidelog {job} job",
            "Runtime": options.runtime,
            "Architectures": [options.architecture],
            "Handler": f"{HANDLER_MODULE}.{spec.handler}",
            "Code": {"S3Bucket": ref("CodeBucket"), "S3Key": ref("CodeKey")},
            "MemorySize": spec.memory_mb,
            "Timeout": spec.timeout_s,
            "Role": arn(f"{title}Role"),
            "Environment": {"Variables": dict(environment)},
        }}
        resources[f"{title}Rule"] = {"Type": "AWS::Events::Rule", "Properties": {
            "Description": f"Runs the tidelog {job} job",
            "ScheduleExpression": ref(f"{title}Schedule"),
            "State": "ENABLED",
            "Targets": [{"Id": f"{job}-job", "Arn": arn(f"{title}Function")}],
        }}
        resources[f"{title}Permission"] = {"Type": "AWS::Lambda::Permission", "Properties": {
            "Action": "lambda:InvokeFunction", "FunctionName": ref(f"{title}Function"),
            "Principal": "events.amazonaws.com", "SourceArn": arn(f"{title}Rule")}}
        outputs[f"{title}FunctionName"] = _output(ref(f"{title}Function"), f"The {job} Lambda")
    return resources


def _broker_parameters() -> Json:
    return {
        "BrokerImage": {"Type": "String", "Description": "Container image with tidelog installed "
                                                          "(entry point overridden; needs /bin/sh)"},
        "BrokerSubnets": {"Type": "List<AWS::EC2::Subnet::Id>", "Description": "Subnets for broker tasks"},
        "BrokerSecurityGroups": {"Type": "List<AWS::EC2::SecurityGroup::Id>",
                                 "Description": f"Security groups allowing clients on port {BROKER_PORT}"},
        "BrokerCpu": {"Type": "String", "Default": "1024", "AllowedValues": ["512", "1024", "2048", "4096"],
                      "Description": "Fargate CPU units per broker"},
        "BrokerMemory": {"Type": "String", "Default": "2048", "Description": "Fargate memory (MiB) per broker"},
    }


def serve_command(options: StackOptions, node_id: int) -> str:
    """The broker's shell command: ``$(hostname -i)`` is the task's own address, which
    clients must be told (``--advertised-host``); ``exec`` lets SIGTERM reach tidelog."""
    parts = ["exec tidelog serve --s3-bucket ${DataBucket} --dynamodb-table ${MetadataTable}",
             "--region ${AWS::Region}", f"--node-id {node_id}", "--host 0.0.0.0", f"--port {BROKER_PORT}",
             "--advertised-host \"$(hostname -i | cut -d' ' -f1)\"", f"--metrics-port {METRICS_PORT}"]
    if options.replica_region:
        parts.append(f"--replica-bucket {options.replica_bucket} --replica-region {options.replica_region}")
    return " ".join(parts)


def _brokers(options: StackOptions) -> Json:
    access = (policies.object_statements(arn("DataBucket"), policies.BROKER_ACCESS)
              + policies.table_statements(arn("MetadataTable")) + policies.kms_statements(options.kms_key_arn))
    if options.replica_region:  # the replication-lag gauge lists the replica's ingest/ prefix
        access.append({"Sid": "ReplicaLag", "Effect": "Allow", "Action": ["s3:ListBucket"],
                       "Resource": {"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::{options.replica_bucket}"}})
    resources: Json = {
        "BrokerCluster": {"Type": "AWS::ECS::Cluster", "Properties": {"ClusterName": options.stack_name}},
        "BrokerLogGroup": {"Type": "AWS::Logs::LogGroup", "Properties": {
            "LogGroupName": f"/tidelog/{options.stack_name}/brokers", "RetentionInDays": ref("LogRetentionDays")}},
        "BrokerExecutionRole": {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": policies.assume_role("ecs-tasks.amazonaws.com"),
            "ManagedPolicyArns": [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/"
                                              "AmazonECSTaskExecutionRolePolicy"}]}},
        "BrokerTaskRole": {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": policies.assume_role("ecs-tasks.amazonaws.com"),
            "Policies": [policies.policy("tidelog-broker", access)]}},
    }
    for node in range(options.brokers):
        resources[f"BrokerTask{node}"] = {"Type": "AWS::ECS::TaskDefinition", "Properties": {
            "Family": f"{options.stack_name}-broker-{node}",
            "RequiresCompatibilities": ["FARGATE"], "NetworkMode": "awsvpc",
            "Cpu": ref("BrokerCpu"), "Memory": ref("BrokerMemory"),
            "ExecutionRoleArn": arn("BrokerExecutionRole"), "TaskRoleArn": arn("BrokerTaskRole"),
            "ContainerDefinitions": [{
                "Name": "broker", "Image": ref("BrokerImage"), "Essential": True,
                "EntryPoint": ["sh", "-c"], "Command": [{"Fn::Sub": serve_command(options, node)}],
                "PortMappings": [{"ContainerPort": BROKER_PORT, "Protocol": "tcp"},
                                 {"ContainerPort": METRICS_PORT, "Protocol": "tcp"}],
                "StopTimeout": 60,
                "LogConfiguration": {"LogDriver": "awslogs", "Options": {
                    "awslogs-group": ref("BrokerLogGroup"), "awslogs-region": ref("AWS::Region"),
                    "awslogs-stream-prefix": f"broker-{node}"}},
            }],
        }}
        # One service per node id, never two tasks at once: a node id is one broker identity.
        resources[f"BrokerService{node}"] = {"Type": "AWS::ECS::Service", "Properties": {
            "Cluster": ref("BrokerCluster"), "LaunchType": "FARGATE", "DesiredCount": 1,
            "TaskDefinition": ref(f"BrokerTask{node}"),
            "DeploymentConfiguration": {"MinimumHealthyPercent": 0, "MaximumPercent": 100},
            "NetworkConfiguration": {"AwsvpcConfiguration": {
                "Subnets": ref("BrokerSubnets"), "SecurityGroups": ref("BrokerSecurityGroups"),
                "AssignPublicIp": "DISABLED"}},
        }}
    return resources


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def render_json(template: Json) -> str:
    return json.dumps(template, indent=2, sort_keys=False) + "\n"


def render_yaml(template: Json) -> str:
    """YAML with long-form intrinsics (``Fn::GetAtt: [...]``), which CloudFormation accepts as is."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:  # a shared fragment must not become an anchor
            return True
    return yaml.dump(template, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)
