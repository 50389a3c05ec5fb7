"""`tidelog deploy / status / destroy` as subprocesses against moto's CloudFormation.

moto creates the stacks' S3, DynamoDB, IAM, Lambda and EventBridge
resources, but of the bucket's properties it applies only encryption, and
it skips resource types it does not implement (bucket policies, global
tables, Glue): what moto does not apply is checked in the template moto
received.  Lambda code cannot run inside moto (that needs Docker), so the
handlers are called directly against the deployed bucket and table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Iterator

import boto3
import pytest

from tidelog.infra.packaging import DEFAULT_RUNTIME

from .conftest import REPO_ROOT, _subprocess_env

pytestmark = [pytest.mark.aws, pytest.mark.slow]

REGION = "us-east-1"
REPLICA_REGION = "us-west-2"
JOBS = ("tier", "retention", "compaction", "gc")


#: One wheel cache for the module's deploys, so only the first fetches (see `wheel_cache`).
_CACHE_ENV: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def wheel_cache(tmp_path_factory) -> Iterator[None]:
    _CACHE_ENV["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    _CACHE_ENV.clear()


def cli(moto_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tidelog.cli", *args, "--endpoint-url", moto_url],
                          env={**_subprocess_env(), **_CACHE_ENV}, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)


def client(moto_url: str, service: str, region: str = REGION):
    return boto3.client(service, endpoint_url=moto_url, region_name=region, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def deploy_args(stack: str, *extra: str) -> list[str]:
    # --no-global-table: moto has no AWS::DynamoDB::GlobalTable.  No --skip-wheel-check: this
    # interpreter is not the Lambda runtime's, so deploy fetches wheels for it, as it would for a user.
    return ["deploy", "--stack-name", stack, "--region", REGION, "--replica-region", REPLICA_REGION,
            "--no-global-table", "--output", "json", *extra]


@pytest.fixture(scope="module")
def deployed(moto_url: str) -> Iterator[dict]:
    stack = f"td-{uuid.uuid4().hex[:10]}"
    done = cli(moto_url, *deploy_args(stack, "-P", "TierGlacierDays=120"))
    assert done.returncode == 0, done.stderr
    yield {"stack": stack, "stderr": done.stderr, **json.loads(done.stdout)}
    cli(moto_url, "destroy", "--stack-name", stack, "--region", REGION, "--yes")


def template_of(moto_url: str, stack: str, region: str = REGION) -> dict:
    body = client(moto_url, "cloudformation", region).get_template(StackName=stack)["TemplateBody"]
    return json.loads(body) if isinstance(body, str) else body


def test_every_stack_is_created_with_the_specified_resources(moto_url: str, deployed: dict) -> None:
    stack, outputs = deployed["stack"], deployed["outputs"]
    assert [(s["name"], s["region"], s["action"], s["status"]) for s in deployed["stacks"]] == [
        (f"{stack}-artifacts", REGION, "created", "CREATE_COMPLETE"),
        (f"{stack}-replica", REPLICA_REGION, "created", "CREATE_COMPLETE"),
        (stack, REGION, "created", "CREATE_COMPLETE")]
    assert deployed["code_uploaded"] is True
    assert f"fetching the Lambda's dependencies for {DEFAULT_RUNTIME} x86_64" in deployed["stderr"]
    assert f"tidelog-{DEFAULT_RUNTIME}-x86_64-" in deployed["code_key"]
    bucket, table = outputs["DataBucketName"], outputs["MetadataTableName"]
    assert (outputs["Region"], outputs["ReplicaRegion"]) == (REGION, REPLICA_REGION)

    s3 = client(moto_url, "s3")
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    client(moto_url, "s3", REPLICA_REGION).head_bucket(Bucket=outputs["ReplicaBucketName"])
    s3.head_object(Bucket=f"{deployed['stacks'][0]['name']}".lower() and _artifacts(moto_url, stack),
                   Key=deployed["code_key"])

    resources = template_of(moto_url, stack)["Resources"]
    props = resources["DataBucket"]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    lifecycle = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    assert [t["StorageClass"] for t in lifecycle["tier-segments-to-colder-storage"]["Transitions"]] == [
        "STANDARD_IA", "GLACIER_IR"]
    assert lifecycle["tier-segments-to-colder-storage"]["Prefix"] == "tier/"
    assert lifecycle["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 1}
    replication = props["ReplicationConfiguration"]["Rules"][0]
    assert replication["Destination"]["Bucket"] == {
        "Fn::Sub": f"arn:${{AWS::Partition}}:s3:::{outputs['ReplicaBucketName']}"}
    assert replication["DeleteMarkerReplication"] == {"Status": "Enabled"}
    policy = resources["DataBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert (policy["Effect"], policy["Condition"]) == ("Deny", {"Bool": {"aws:SecureTransport": "false"}})
    replica_bucket = template_of(moto_url, f"{stack}-replica", REPLICA_REGION)["Resources"]["ReplicaBucket"]
    assert replica_bucket["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    stack_params = client(moto_url, "cloudformation").describe_stacks(StackName=stack)["Stacks"][0]["Parameters"]
    assert {"ParameterKey": "TierGlacierDays", "ParameterValue": "120"} in stack_params

    ddb = client(moto_url, "dynamodb").describe_table(TableName=table)["Table"]
    assert ddb["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert {k["AttributeName"]: k["KeyType"] for k in ddb["KeySchema"]} == {"pk": "HASH", "sk": "RANGE"}
    assert resources["MetadataTable"]["Properties"]["PointInTimeRecoverySpecification"] == {
        "PointInTimeRecoveryEnabled": True}

    lam, iam, events = client(moto_url, "lambda"), client(moto_url, "iam"), client(moto_url, "events")
    rules = {r["Name"]: r for r in events.list_rules()["Rules"]}
    for job in JOBS:
        fn = lam.get_function(FunctionName=outputs[f"{job.capitalize()}FunctionName"])["Configuration"]
        assert fn["Handler"] == f"tidelog.lambdas.handlers.{job}_handler"
        assert (fn["Runtime"], fn["Architectures"]) == (DEFAULT_RUNTIME, ["x86_64"])
        assert fn["Environment"]["Variables"]["TIDELOG_S3_BUCKET"] == bucket
        assert fn["Environment"]["Variables"]["TIDELOG_DYNAMODB_TABLE"] == table
        role = iam.get_role(RoleName=fn["Role"].rsplit("/", 1)[1])["Role"]
        assert "lambda.amazonaws.com" in json.dumps(role["AssumeRolePolicyDocument"])
        targets = [t["Arn"] for name in rules for t in events.list_targets_by_rule(Rule=name)["Targets"]]
        assert fn["FunctionArn"] in targets
    schedules = sorted(r["ScheduleExpression"] for r in rules.values() if r["Name"].startswith(stack + "-"))
    assert schedules == sorted(["rate(5 minutes)", "rate(15 minutes)", "rate(1 hour)", "rate(1 hour)"])


def _artifacts(moto_url: str, stack: str) -> str:
    described = client(moto_url, "cloudformation").describe_stacks(StackName=f"{stack}-artifacts")["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in described["Outputs"]}["ArtifactsBucketName"]


def test_lambda_roles_grant_only_their_jobs_prefixes(moto_url: str, deployed: dict) -> None:
    resources = template_of(moto_url, deployed["stack"])["Resources"]
    gc = resources["GcRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    retention = resources["RetentionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert "s3:DeleteObject" in json.dumps(gc)
    assert "s3:DeleteObject" not in json.dumps(retention) and "s3:PutObject" not in json.dumps(retention)
    assert not any(s["Action"] == "*" or s.get("Resource") == "*" for s in gc + retention)


def test_redeploying_changes_nothing(moto_url: str, deployed: dict) -> None:
    done = cli(moto_url, *deploy_args(deployed["stack"]))
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout)
    assert [s["action"] for s in again["stacks"]] == ["unchanged"] * 3
    assert again["code_uploaded"] is False and again["code_key"] == deployed["code_key"]
    assert "fetching" not in done.stderr  # the wheels came from the cache

    # A tuning change updates the main stack only, and what was tuned before stays tuned.
    done = cli(moto_url, *deploy_args(deployed["stack"], "-P", "TierSchedule=rate(10 minutes)"))
    assert done.returncode == 0, done.stderr
    assert [s["action"] for s in json.loads(done.stdout)["stacks"]] == ["unchanged", "unchanged", "updated"]
    params = client(moto_url, "cloudformation").describe_stacks(StackName=deployed["stack"])["Stacks"][0]
    assert {"ParameterKey": "TierGlacierDays", "ParameterValue": "120"} in params["Parameters"]
    assert {"ParameterKey": "TierSchedule", "ParameterValue": "rate(10 minutes)"} in params["Parameters"]
    tier_rule = [r for r in client(moto_url, "events").list_rules()["Rules"]
                 if r["Name"].startswith(f"{deployed['stack']}-TierRule")]
    assert [r["ScheduleExpression"] for r in tier_rule] == ["rate(10 minutes)"]


def test_changing_the_table_kind_is_refused(moto_url: str, deployed: dict) -> None:
    done = cli(moto_url, "deploy", "--stack-name", deployed["stack"], "--region", REGION,
               "--replica-region", REPLICA_REGION, "--skip-wheel-check")
    assert done.returncode == 1
    assert done.stderr.startswith("error: stack") and "replace it with an empty table" in done.stderr
    assert "packaging" not in done.stderr  # refused before any work


def test_status_shows_serve_flags_and_replication_lag(moto_url: str, deployed: dict) -> None:
    outputs = deployed["outputs"]
    args = ["status", "--stack-name", deployed["stack"], "--region", REGION, "--output", "json"]
    status = json.loads(cli(moto_url, *args).stdout)
    assert status["status"] in ("CREATE_COMPLETE", "UPDATE_COMPLETE")
    assert status["serve"] == ["tidelog", "serve", "--s3-bucket", outputs["DataBucketName"], "--dynamodb-table",
                               outputs["MetadataTableName"], "--region", REGION, "--endpoint-url", moto_url,
                               "--replica-bucket", outputs["ReplicaBucketName"], "--replica-region", REPLICA_REGION]
    assert status["replication"]["lag_ms"] == 0

    key = "ingest/0-1/000000000000.avro"
    client(moto_url, "s3").put_object(Bucket=outputs["DataBucketName"], Key=key, Body=b"x")
    lagging = json.loads(cli(moto_url, *args).stdout)["replication"]
    assert lagging["missing_objects"] == 1 and lagging["lag_ms"] > 0
    client(moto_url, "s3", REPLICA_REGION).put_object(Bucket=outputs["ReplicaBucketName"], Key=key, Body=b"x")
    caught_up = json.loads(cli(moto_url, *args).stdout)["replication"]
    assert (caught_up["lag_ms"], caught_up["missing_objects"]) == (0, 0)
    client(moto_url, "s3").delete_object(Bucket=outputs["DataBucketName"], Key=key)

    text = cli(moto_url, *args[:-2]).stdout
    assert "serve with:" in text and "replication lag: 0.0 s (in sync)" in text


def test_handlers_run_against_the_deployed_storage(moto_url: str, deployed: dict,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    handlers = pytest.importorskip("tidelog.lambdas.handlers",
                                   reason="the Lambda handlers (lambda/handlers.py) are not written yet")
    outputs = deployed["outputs"]
    # What the function's environment holds on AWS (see the template), plus moto's endpoint.
    for name, value in {"TIDELOG_S3_BUCKET": outputs["DataBucketName"],
                        "TIDELOG_DYNAMODB_TABLE": outputs["MetadataTableName"],
                        "TIDELOG_ENDPOINT_URL": moto_url, "AWS_REGION": REGION,
                        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    try:
        for job in JOBS:
            result = getattr(handlers, f"{job}_handler")({}, None)
            json.dumps(result)  # what Lambda returns must serialise
            assert isinstance(result, dict)
    finally:
        handlers.close_all()


def test_destroy_deletes_the_stacks_and_the_data(moto_url: str, deployed: dict) -> None:
    outputs = deployed["outputs"]
    refused = cli(moto_url, "destroy", "--stack-name", deployed["stack"], "--region", REGION)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    done = cli(moto_url, "destroy", "--stack-name", deployed["stack"], "--region", REGION, "--yes")
    assert done.returncode == 0, done.stderr
    assert f"deleted table {outputs['MetadataTableName']}" in done.stdout
    names = {b["Name"] for b in client(moto_url, "s3").list_buckets()["Buckets"]}
    assert outputs["DataBucketName"] not in names and outputs["ReplicaBucketName"] not in names
    assert outputs["MetadataTableName"] not in client(moto_url, "dynamodb").list_tables()["TableNames"]
    gone = cli(moto_url, "status", "--stack-name", deployed["stack"], "--region", REGION)
    assert gone.returncode == 1 and "no tidelog stack" in gone.stderr


def test_brokers_run_on_fargate_and_destroy_can_keep_the_data(moto_url: str) -> None:
    ec2 = client(moto_url, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"g-{uuid.uuid4().hex[:6]}", Description="kafka",
                                      VpcId=vpc)["GroupId"]
    stack = f"tb-{uuid.uuid4().hex[:10]}"
    done = cli(moto_url, "deploy", "--stack-name", stack, "--region", REGION, "--brokers", "2",
               "--broker-image", "example/tidelog:1", "--broker-subnets", subnet, "--broker-security-groups", group,
               "--skip-wheel-check", "--output", "json")
    assert done.returncode == 0, done.stderr
    outputs = json.loads(done.stdout)["outputs"]
    ecs = client(moto_url, "ecs")
    assert len(ecs.list_services(cluster=outputs["BrokerClusterName"])["serviceArns"]) == 2
    for node in (0, 1):
        container = ecs.describe_task_definition(
            taskDefinition=f"{stack}-broker-{node}")["taskDefinition"]["containerDefinitions"][0]
        assert container["image"] == "example/tidelog:1"
        assert container["command"][0].startswith(
            f"exec tidelog serve --s3-bucket {outputs['DataBucketName']} "
            f"--dynamodb-table {outputs['MetadataTableName']} --region {REGION} --node-id {node} ")

    kept = cli(moto_url, "destroy", "--stack-name", stack, "--region", REGION, "--keep-data")
    assert kept.returncode == 0, kept.stderr
    assert f"kept bucket {outputs['DataBucketName']} ({REGION})" in kept.stdout
    client(moto_url, "s3").head_bucket(Bucket=outputs["DataBucketName"])
    assert outputs["MetadataTableName"] in client(moto_url, "dynamodb").list_tables()["TableNames"]
