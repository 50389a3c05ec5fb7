"""`tidelog deploy | destroy | status | recover`: running tidelog on AWS, and recovering it.

Deployment is CloudFormation (`tidelog.infra`); recovery rebuilds the
metadata table from a bucket alone (`tidelog.storage.recovery`).  Every AWS
or storage failure ends as one ``error:`` line, as everywhere in the CLI.
"""

from __future__ import annotations

import asyncio
import functools
import shlex
from pathlib import Path

import click

from tidelog.infra.packaging import DEFAULT_RUNTIME, DEPLOYABLE_RUNTIMES

from .common import emit_json, note, output_option, parse_key_values, stdin_is_tty
from .errors import CliError


def aws_options(fn):
    @click.option("--stack-name", required=True, help="Name of the deployment (its CloudFormation stack). "
                                                       "Example: --stack-name prod-log")
    @click.option("--region", required=True, help="Primary AWS region. Example: --region eu-west-1")
    @click.option("--endpoint-url", help="AWS endpoint override for LocalStack or moto. "
                                         "Example: --endpoint-url http://localhost.localstack.cloud:4566")
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


def _aws_failures(fn):
    """Turn the errors of AWS calls into the CLI's one-line errors."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
        from botocore.parsers import ResponseParserError

        from tidelog.infra.deploy import DeployError
        from tidelog.infra.packaging import PackagingError
        from tidelog.infra.template import TemplateError
        from tidelog.storage.errors import TidelogError
        try:
            return fn(*args, **kwargs)
        except (DeployError, PackagingError, TemplateError) as exc:
            raise CliError(str(exc)) from None
        except NoCredentialsError:
            raise CliError("no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
                           "AWS_SECRET_ACCESS_KEY") from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise CliError(f"AWS refused {exc.operation_name}: {error.get('Code', '?')}: "
                           f"{error.get('Message', exc)}") from None
        except (BotoCoreError, ResponseParserError) as exc:
            raise CliError(f"AWS call failed: {exc}") from None
        except TidelogError as exc:
            raise CliError(f"storage error: {exc}") from None
    return wrapper


# --------------------------------------------------------------------------
# deploy
# --------------------------------------------------------------------------


@click.command("deploy")
@aws_options
@click.option("--replica-region", help="Also replicate the data bucket (and the table, as a global table) to "
                                       "this region for disaster recovery. Example: --replica-region us-west-2")
@click.option("--global-table/--no-global-table", default=True, show_default=True,
              help="With --replica-region, make the metadata table a DynamoDB global table "
                   "(--no-global-table: bucket replication only; recover the table with `tidelog recover`).")
@click.option("--kms-key-arn", help="Encrypt the data bucket with this KMS key instead of SSE-S3.")
@click.option("--replica-kms-key-arn", help="KMS key in the replica region (required with --kms-key-arn "
                                            "and --replica-region).")
@click.option("--brokers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Run this many brokers on ECS Fargate (0: run them yourself). Example: --brokers 3")
@click.option("--broker-image", help="Container image with tidelog installed (with --brokers).")
@click.option("--broker-subnets", help="Comma-separated subnet ids for the brokers (with --brokers).")
@click.option("--broker-security-groups", help="Comma-separated security group ids (with --brokers).")
@click.option("-P", "--parameter", "parameters", multiple=True, metavar="KEY=VALUE",
              help="Template parameter, repeatable; later deploys keep it. Example: -P TierGlacierDays=180")
@click.option("--lambda-runtime", type=click.Choice(DEPLOYABLE_RUNTIMES), default=DEFAULT_RUNTIME,
              show_default=True,
              help="Lambda runtime for the tiering functions. Example: --lambda-runtime python3.12")
@click.option("--lambda-architecture", type=click.Choice(["x86_64", "arm64"]), default="x86_64",
              show_default=True, help="Lambda architecture (arm64 costs about 20% less).")
@click.option("--lambda-deps", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Package the Lambda's dependencies from this `pip install --target` directory. "
                   "Default: this environment if its wheels fit the runtime, else wheels fetched with pip "
                   "into ~/.cache/tidelog.")
@click.option("--skip-wheel-check", is_flag=True,
              help="Package this environment's wheels even if they may not load in the Lambda runtime "
                   "(for emulators that never run the code).")
@output_option()
@_aws_failures
def deploy_command(stack_name: str, region: str, endpoint_url: str | None, replica_region: str | None,
                   global_table: bool, kms_key_arn: str | None, replica_kms_key_arn: str | None, brokers: int,
                   broker_image: str | None, broker_subnets: str | None, broker_security_groups: str | None,
                   parameters: tuple[str, ...], lambda_runtime: str, lambda_architecture: str,
                   lambda_deps: Path | None, skip_wheel_check: bool, output: str) -> None:
    """Create or update a deployment: buckets, table, tiering Lambdas, schedules, Glue table.

    Safe to re-run: an unchanged deployment is reported as such.

    \b
    Example:  tidelog deploy --stack-name prod-log --region eu-west-1 --replica-region eu-central-1
    """
    import tidelog.lambdas
    import tidelog.storage
    from tidelog.infra.deploy import Aws, DeployRequest, deploy
    from tidelog.infra.packaging import LambdaTarget, build_lambda_zip
    from tidelog.infra.wheels import lambda_dependencies

    params = parse_key_values(parameters, what="template parameter")
    if brokers:
        missing = [flag for flag, value in (("--broker-image", broker_image), ("--broker-subnets", broker_subnets),
                                            ("--broker-security-groups", broker_security_groups)) if not value]
        if missing:
            raise click.UsageError(f"--brokers needs {', '.join(missing)}")
        params.update(BrokerImage=broker_image, BrokerSubnets=broker_subnets,
                      BrokerSecurityGroups=broker_security_groups)
    target = LambdaTarget.parse(lambda_runtime, lambda_architecture)

    def package():
        deps_dir = lambda_dependencies(target, lambda_deps, check_wheels=not skip_wheel_check, progress=note)
        note("packaging the lambda code")
        return build_lambda_zip({"tidelog/storage": Path(tidelog.storage.__path__[0]),
                                 "tidelog/lambdas": Path(tidelog.lambdas.__path__[0])},
                                target=target, deps_dir=deps_dir, check_wheels=not skip_wheel_check)
    request = DeployRequest(stack_name, region, target, replica_region=replica_region, kms_key_arn=kms_key_arn,
                            replica_kms_key_arn=replica_kms_key_arn, global_table=global_table,
                            brokers=brokers, parameters=params, lambda_endpoint_url=endpoint_url)
    result = deploy(Aws(endpoint_url), request, package, note)
    if output == "json":
        emit_json({"stacks": [{"name": s.name, "region": s.region, "action": s.action, "status": s.status}
                              for s in result.stacks],
                   "outputs": result.outputs, "code_key": result.code_key, "code_uploaded": result.code_uploaded})
        return
    for s in result.stacks:
        click.echo(f"{s.name} ({s.region}): {s.action}, {s.status}")
    _echo_outputs(result.outputs)
    click.echo(f"next: tidelog status --stack-name {stack_name} --region {region}"
               + (f" --endpoint-url {endpoint_url}" if endpoint_url else ""))


def _echo_outputs(outputs: dict[str, str]) -> None:
    width = max((len(k) for k in outputs), default=0)
    for key in sorted(outputs):
        click.echo(f"  {key.ljust(width)}  {outputs[key]}")


# --------------------------------------------------------------------------
# destroy
# --------------------------------------------------------------------------


@click.command("destroy")
@aws_options
@click.option("--keep-data", is_flag=True, help="Delete the stacks but keep the buckets and the table.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (needed without a terminal).")
@_aws_failures
def destroy_command(stack_name: str, region: str, endpoint_url: str | None, keep_data: bool, yes: bool) -> None:
    """Delete a deployment, and (unless --keep-data) every object version and the table.

    \b
    Example:  tidelog destroy --stack-name test-log --region eu-west-1 --yes
    """
    from tidelog.infra.deploy import Aws, destroy

    if not yes and not keep_data:
        if not stdin_is_tty():
            raise CliError("destroy deletes every record in the deployment: pass --yes to confirm "
                           "(or --keep-data to keep the buckets and the table)")
        click.confirm(f"delete {stack_name} in {region} and ALL of its data?", abort=True)
    result = destroy(Aws(endpoint_url), stack_name, region, keep_data=keep_data, progress=note)
    for name in result.stacks_deleted:
        click.echo(f"deleted stack {name}")
    for what in result.deleted:
        click.echo(f"deleted {what}")
    for what in result.retained:
        click.echo(f"kept {what}: delete it yourself when no longer needed")


# --------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------


@click.command("status")
@aws_options
@output_option()
@_aws_failures
def status_command(stack_name: str, region: str, endpoint_url: str | None, output: str) -> None:
    """Show a deployment's resources, the `tidelog serve` flags that use them, and the replication lag.

    \b
    Example:  tidelog status --stack-name prod-log --region eu-west-1 --output json
    """
    from tidelog.infra.deploy import Aws, status

    found = status(Aws(endpoint_url), stack_name, region)
    if output == "json":
        emit_json(found.to_json())
        return
    click.echo(f"{found.stack.name} ({found.stack.region}): {found.stack.status}")
    for other in found.others:
        click.echo(f"{other.name} ({other.region}): {other.status}")
    _echo_outputs(found.stack.outputs)
    click.echo("serve with:")
    click.echo("  " + shlex.join(found.serve_args()))
    if found.lag is not None:
        lag = found.lag
        state = "in sync" if lag.in_sync else f"{lag.missing} of {lag.primary_objects} ingest objects not copied yet"
        click.echo(f"replication lag: {lag.lag_ms / 1000:.1f} s ({state})")
    elif found.lag_error:
        click.echo(f"replication lag: unknown ({found.lag_error})")


# --------------------------------------------------------------------------
# recover
# --------------------------------------------------------------------------


@click.command("recover")
@click.option("--bucket", required=True, help="Bucket to recover from (the replica). Example: --bucket prod-log-replica")
@click.option("--region", required=True, help="Region of the bucket and the new table. Example: --region us-west-2")
@click.option("--endpoint-url", help="AWS endpoint override for LocalStack or moto.")
@click.option("--dynamodb-table", required=True, help="New, empty table to rebuild the metadata into "
                                                      "(created if missing). Example: --dynamodb-table prod-log-dr")
@click.option("--concurrency", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Objects read at once.")
@output_option()
@_aws_failures
def recover_command(bucket: str, region: str, endpoint_url: str | None, dynamodb_table: str, concurrency: int,
                    output: str) -> None:
    """Rebuild topics, partition state and indexes from the bucket's objects alone.

    Use it when the primary region (and its table) is gone: afterwards,
    `tidelog serve --s3-bucket BUCKET --dynamodb-table TABLE` serves every
    record the bucket holds.  Uncommitted objects that overlap committed
    offsets are ignored, as Kafka truncates logs by leader epoch.

    \b
    Example:  tidelog recover --bucket prod-log-replica --region us-west-2 --dynamodb-table prod-log-dr
    """
    from tidelog.storage.clock import SYSTEM_CLOCK
    from tidelog.storage.factory import StorageConfig, open_storage
    from tidelog.storage.recovery import recover, require_bucket

    async def run():
        storage = await open_storage(StorageConfig(data_dir=None, s3_bucket=bucket, dynamodb_table=dynamodb_table,
                                                   endpoint_url=endpoint_url, region=region))
        try:
            await require_bucket(storage.objects)
            return await recover(storage.objects, storage.meta, SYSTEM_CLOCK, concurrency=concurrency,
                                 progress=note)
        finally:
            await storage.close()
    report = asyncio.run(run())
    if output == "json":
        emit_json(report.to_json())
        return
    records = sum(p.next_offset - p.log_start_offset for p in report.partitions)
    click.echo(f"recovered {len(report.topics)} topic(s), {len(report.partitions)} partition(s), "
               f"offsets spanning {records} record(s) from {report.scan.objects} object(s)")
    for name, count in sorted(report.topics.items()):
        click.echo(f"  {name}: {count} partition(s), retention off until you restore its configs")
    if report.rejected:
        click.echo(f"ignored {len(report.rejected)} uncommitted or superseded range(s)")
    for key, error in report.scan.corrupt:
        click.echo(f"warning: unreadable object {key}: {error}", err=True)
    for topic, partition, first, last in report.holes:
        click.echo(f"warning: {topic}-{partition} offsets {first}..{last} are in no object (not replicated?)",
                   err=True)
    click.echo("serve with:")
    args = ["tidelog", "serve", "--s3-bucket", bucket, "--dynamodb-table", dynamodb_table, "--region", region]
    click.echo("  " + shlex.join(args + (["--endpoint-url", endpoint_url] if endpoint_url else [])))
