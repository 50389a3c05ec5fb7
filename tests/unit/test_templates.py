"""The CloudFormation templates: cfn-lint clean in every variant, and shaped as specified."""

from __future__ import annotations

import json

import pytest
import yaml
from cfnlint.api import lint

from tidelog.infra import glue
from tidelog.infra.template import (
    LAMBDAS,
    StackOptions,
    TemplateError,
    artifacts_template,
    primary_template,
    render_json,
    render_yaml,
    replica_template,
)
from tidelog.storage.segments import TIER_SCHEMA

KEY = "arn:aws:kms:{}:123456789012:key/11111111-2222-3333-4444-555555555555"
MINIMAL = StackOptions("demo", "us-east-1")
FULL = StackOptions("demo", "us-east-1", replica_region="us-west-2", replica_bucket="demo-replica-bucket",
                    kms_key_arn=KEY.format("us-east-1"), replica_kms_key_arn=KEY.format("us-west-2"), brokers=3)
BUCKET_ONLY = StackOptions("demo", "us-east-1", replica_region="us-west-2", replica_bucket="demo-replica-bucket",
                           global_table=False)

VARIANTS = {
    "minimal": (primary_template(MINIMAL), ["us-east-1"]),
    "replicated-kms-brokers": (primary_template(FULL), ["us-east-1"]),
    "bucket-replication-only": (primary_template(BUCKET_ONLY), ["us-east-1"]),
    "replica": (replica_template(FULL), ["us-west-2"]),
    "artifacts": (artifacts_template(), ["us-east-1"]),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("render", [render_json, render_yaml], ids=["json", "yaml"])
def test_cfn_lint_passes(name: str, render) -> None:
    template, regions = VARIANTS[name]
    matches = lint(render(template), regions=regions)
    assert not matches, "\n".join(str(m) for m in matches)


def test_yaml_and_json_renderings_are_the_same_template() -> None:
    template = VARIANTS["replicated-kms-brokers"][0]
    assert yaml.safe_load(render_yaml(template)) == json.loads(render_json(template))


def statements(template: dict, role: str) -> list[dict]:
    props = template["Resources"][role]["Properties"]
    return [s for p in props.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]


def resources_of(statement: dict) -> list[str]:
    found = statement["Resource"]
    return [json.dumps(r) for r in (found if isinstance(found, list) else [found])]


def test_data_bucket_is_versioned_encrypted_tls_only_and_tiers_cold_data() -> None:
    t = primary_template(FULL)
    bucket = t["Resources"]["DataBucket"]
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")
    props = bucket["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    default = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert default == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY.format("us-east-1")}
    assert all(props["PublicAccessBlockConfiguration"].values())
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    tier = rules["tier-segments-to-colder-storage"]
    assert tier["Prefix"] == "tier/"
    assert tier["Transitions"] == [{"StorageClass": "STANDARD_IA", "TransitionInDays": {"Ref": "TierInfrequentAccessDays"}},
                                   {"StorageClass": "GLACIER_IR", "TransitionInDays": {"Ref": "TierGlacierDays"}}]
    assert rules["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
    deny = t["Resources"]["DataBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny == [{"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                     "Resource": [{"Fn::GetAtt": ["DataBucket", "Arn"]},
                                  {"Fn::Join": ["", [{"Fn::GetAtt": ["DataBucket", "Arn"]}, "/*"]]}],
                     "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]
    sse_s3 = primary_template(MINIMAL)["Resources"]["DataBucket"]["Properties"]["BucketEncryption"]
    assert sse_s3["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}


def test_replication_covers_every_object_with_a_least_privilege_role() -> None:
    t = primary_template(FULL)
    config = t["Resources"]["DataBucket"]["Properties"]["ReplicationConfiguration"]
    assert config["Role"] == {"Fn::GetAtt": ["ReplicationRole", "Arn"]}
    [rule] = config["Rules"]
    assert rule["Filter"] == {"Prefix": ""} and rule["Status"] == "Enabled"
    assert rule["Destination"]["EncryptionConfiguration"] == {"ReplicaKmsKeyID": KEY.format("us-west-2")}
    policy = t["Resources"]["ReplicationPolicy"]["Properties"]
    assert policy["Roles"] == [{"Ref": "ReplicationRole"}]
    actions = {a for s in policy["PolicyDocument"]["Statement"] for a in s["Action"]}
    assert actions == {"s3:GetReplicationConfiguration", "s3:ListBucket", "s3:GetObjectVersionForReplication",
                       "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging", "s3:ReplicateObject",
                       "s3:ReplicateDelete", "s3:ReplicateTags", "kms:Decrypt", "kms:Encrypt"}
    replica = replica_template(FULL)["Resources"]["ReplicaBucket"]["Properties"]
    assert replica["VersioningConfiguration"] == {"Status": "Enabled"}
    assert "ReplicationConfiguration" not in primary_template(MINIMAL)["Resources"]["DataBucket"]["Properties"]


def test_table_is_on_demand_with_pitr_and_global_only_when_replicated() -> None:
    regional = primary_template(MINIMAL)["Resources"]["MetadataTable"]
    assert regional["Type"] == "AWS::DynamoDB::Table"
    assert regional["Properties"]["BillingMode"] == "PAY_PER_REQUEST"
    assert regional["Properties"]["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert [k["AttributeName"] for k in regional["Properties"]["KeySchema"]] == ["pk", "sk"]
    global_ = primary_template(FULL)["Resources"]["MetadataTable"]
    assert global_["Type"] == "AWS::DynamoDB::GlobalTable"
    assert [r["Region"] for r in global_["Properties"]["Replicas"]] == ["us-east-1", "us-west-2"]
    assert all(r["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"]
               for r in global_["Properties"]["Replicas"])
    assert primary_template(BUCKET_ONLY)["Resources"]["MetadataTable"]["Type"] == "AWS::DynamoDB::Table"
    assert primary_template(FULL)["Outputs"]["MetadataTableKind"]["Value"] == "global"


def test_each_lambda_has_its_own_least_privilege_role_and_a_schedule() -> None:
    t = primary_template(MINIMAL)
    for job, spec in LAMBDAS.items():
        title = job.capitalize()
        fn = t["Resources"][f"{title}Function"]["Properties"]
        assert fn["Handler"] == f"tidelog.lambdas.handlers.{spec.handler}"
        assert fn["Role"] == {"Fn::GetAtt": [f"{title}Role", "Arn"]}
        assert set(fn["Environment"]["Variables"]) == {"TIDELOG_S3_BUCKET", "TIDELOG_DYNAMODB_TABLE"}
        rule = t["Resources"][f"{title}Rule"]["Properties"]
        assert rule["ScheduleExpression"] == {"Ref": f"{title}Schedule"}
        assert t["Parameters"][f"{title}Schedule"]["Default"] == spec.schedule
        for s in statements(t, f"{title}Role"):
            assert "*" not in s["Action"] and s["Resource"] != "*"
            assert not any(a.endswith(":*") for a in s["Action"])
    def object_grants(job: str, action: str) -> set[str]:
        return {r for s in statements(t, f"{job.capitalize()}Role") if action in s["Action"] for r in resources_of(s)}
    assert object_grants("tier", "s3:PutObject") == {_prefix("tier/")}
    assert object_grants("tier", "s3:DeleteObject") == set()
    assert object_grants("retention", "s3:PutObject") == set() == object_grants("retention", "s3:DeleteObject")
    assert object_grants("compaction", "s3:DeleteObject") == set()
    assert object_grants("gc", "s3:DeleteObject") == {_prefix(p) for p in ("ingest/", "index/", "tier/", "gc/state/")}


def _prefix(prefix: str) -> str:
    return json.dumps({"Fn::Join": ["", [{"Fn::GetAtt": ["DataBucket", "Arn"]}, "/", prefix, "*"]]})


def test_brokers_run_one_fargate_service_per_node_id() -> None:
    t = primary_template(FULL)
    services = [r for r in t["Resources"].values() if r["Type"] == "AWS::ECS::Service"]
    assert len(services) == 3
    assert all(s["Properties"]["DesiredCount"] == 1 and
               s["Properties"]["DeploymentConfiguration"]["MaximumPercent"] == 100 for s in services)
    command = t["Resources"]["BrokerTask2"]["Properties"]["ContainerDefinitions"][0]["Command"][0]["Fn::Sub"]
    assert command.startswith("exec tidelog serve --s3-bucket ${DataBucket} --dynamodb-table ${MetadataTable}")
    assert "--node-id 2" in command and "--replica-bucket demo-replica-bucket --replica-region us-west-2" in command
    assert "BrokerCluster" not in primary_template(MINIMAL)["Resources"]


def test_glue_table_reads_the_tier_prefix_as_avro_partitioned_by_topic_and_partition() -> None:
    t = primary_template(MINIMAL)
    table = t["Resources"]["GlueTierTable"]["Properties"]["TableInput"]
    assert [k["Name"] for k in table["PartitionKeys"]] == ["topic", "partition"]
    sd = table["StorageDescriptor"]
    assert sd["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.serde2.avro.AvroSerDe"
    assert json.loads(sd["SerdeInfo"]["Parameters"]["avro.schema.literal"]) == TIER_SCHEMA
    assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == [
        ("offset", "bigint"), ("timestamp", "bigint"), ("key", "binary"), ("value", "binary"),
        ("headers", "array<struct<key:string,value:binary>>")]
    assert table["Parameters"]["storage.location.template"] == {
        "Fn::Sub": ["s3://${Bucket}/tier/topic=${!topic}/partition=${!partition}/", {"Bucket": {"Ref": "DataBucket"}}]}
    assert glue.database_name("Prod-Log") == "tidelog_prod_log"


@pytest.mark.parametrize("options, message", [
    (StackOptions("9lives", "us-east-1"), "invalid stack name"),
    (StackOptions("a" * 41, "us-east-1"), "invalid stack name"),
    (StackOptions("demo", "us-east-1", replica_region="us-east-1", replica_bucket="b"), "must differ"),
    (StackOptions("demo", "us-east-1", replica_region="us-west-2"), "replica bucket"),
    (StackOptions("demo", "us-east-1", replica_region="us-west-2", replica_bucket="b", kms_key_arn="k"), "KMS"),
])
def test_impossible_deployments_are_refused(options: StackOptions, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        primary_template(options)
