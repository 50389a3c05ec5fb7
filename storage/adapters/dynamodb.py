"""The metadata-store port on DynamoDB (or LocalStack/moto) through aioboto3.

Invariants and why they hold:

* Every read is ``ConsistentRead``, so ``get``/``query`` see every completed
  write (DynamoDB's strong consistency is per table, which is all we use).
* Conditions mean exactly what `conditions.evaluate` says.  DynamoDB differs
  in three places and the translation closes each gap: ``<>`` is true there
  for a missing attribute (we add ``attribute_exists`` and exclude NULL,
  which `evaluate` treats as missing); every comparison carries an
  ``attribute_type`` guard so a type mismatch is false for ``=`` and
  orderings and true for ``<>`` (without it moto equates BOOL true with N 1
  and answers 500 to an ordering across types); ordering on booleans is
  rewritten as equality, since DynamoDB cannot order BOOL.  Ordering on
  lists and maps has no DynamoDB meaning and is refused.
* A multi-operation write is one ``TransactWriteItems`` with an explicit
  ``ClientRequestToken``, so botocore's retries of it are idempotent on the
  server and a condition failure after a retry is a real conflict.  A single
  ``PutItem``/``DeleteItem`` has no such token: its condition failure after a
  retry may be our own earlier attempt and is reported as `Ambiguous`.
* Item attributes are top-level DynamoDB attributes so conditions can name
  them; numbers come back as Python ints and booleans stay booleans.

Request cost (with `storage.cost`): a single put/delete is
``write_units(size)``; a transaction ``write_units(size, transactional=True)``
per operation (checks included); ``put_many`` ``write_units(size)`` per item
in ceil(n / 25) requests; reads cost the read units of the returned bytes,
per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Sequence

import aioboto3
from aiobotocore.config import AioConfig
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore import xform_name
from botocore.exceptions import ClientError

from ..conditions import Check, Compare, Condition, Delete, Put, WriteOp, op_key, validate_ops
from ..cost import StoreStats, item_size, read_units, write_units
from ..errors import Ambiguous, Conflict, CorruptData, InvalidRequest, NotFound, TidelogError, Unavailable
from ..model import Item
from . import aws_errors

CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 30
MAX_ATTEMPTS = 3  # in total: the first attempt and two retries
BATCH_SIZE = 25  # BatchWriteItem limit
BATCH_MAX_ROUNDS = 8
BATCH_BACKOFF_S = 0.05
BATCH_BACKOFF_MAX_S = 2.0
TABLE_WAIT_S = 300.0
RESERVED_ATTRS = frozenset({"pk", "sk"})
INT_MIN, INT_MAX = -(2**63), 2**63  # what the SQLite backend stores too; DynamoDB allows 38 digits

# Constant expressions for conditions that are always false / always true.
# DynamoDB needs some expression for a ConditionCheck and offers no literals.
NEVER = "(attribute_exists(pk) AND attribute_not_exists(pk))"
ALWAYS = "(attribute_exists(pk) OR attribute_not_exists(pk))"

_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


# --- item codec (pure) -----------------------------------------------------------
def check_value(value: Any, *, attr: str) -> Any:
    """Reject what is not JSON-shaped as `Item` defines it, identically to the SQLite backend."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise InvalidRequest("integer attribute outside the range -2**63..2**63", attr=attr)
        return value
    if isinstance(value, list):
        return [check_value(v, attr=attr) for v in value]
    if isinstance(value, dict):
        for key, v in value.items():
            if not isinstance(key, str) or not key:
                raise InvalidRequest("map attribute keys must be non-empty strings", attr=attr)
            check_value(v, attr=attr)
        return value
    raise InvalidRequest(
        "unsupported attribute type; use str, int, bool, None, list or dict",
        attr=attr,
        type=type(value).__name__,
    )


def encode_key(pk: str, sk: str) -> dict[str, Any]:
    if not isinstance(pk, str) or not isinstance(sk, str) or not pk or not sk:
        raise InvalidRequest("item keys must be non-empty strings", pk=pk, sk=sk)
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def encode_item(item: Item) -> dict[str, Any]:
    raw = encode_key(item.pk, item.sk)
    for name, value in item.attrs.items():
        if not isinstance(name, str) or not name:
            raise InvalidRequest("attribute names must be non-empty strings", pk=item.pk, sk=item.sk)
        if name in RESERVED_ATTRS:
            raise InvalidRequest("attribute name is reserved for the item key", attr=name, pk=item.pk, sk=item.sk)
        raw[name] = _SERIALIZER.serialize(check_value(value, attr=name))
    return raw


def decode_item(raw: dict[str, Any]) -> Item:
    try:
        pk, sk = raw["pk"]["S"], raw["sk"]["S"]
        attrs = {
            name: _from_dynamo(_DESERIALIZER.deserialize(value), attr=name)
            for name, value in raw.items()
            if name not in RESERVED_ATTRS
        }
    except (KeyError, TypeError) as exc:
        raise CorruptData("item without string pk/sk keys", keys=sorted(raw)) from exc
    return Item(pk, sk, attrs)


def _from_dynamo(value: Any, *, attr: str) -> Any:
    if isinstance(value, Decimal):
        if value != value.to_integral_value():
            raise CorruptData("non-integral number stored in an attribute", attr=attr, value=str(value))
        return int(value)
    if isinstance(value, list):
        return [_from_dynamo(v, attr=attr) for v in value]
    if isinstance(value, dict):
        return {k: _from_dynamo(v, attr=attr) for k, v in value.items()}
    if value is None or isinstance(value, (bool, str)):
        return value
    raise CorruptData("attribute of a type tidelog never writes", attr=attr, type=type(value).__name__)


# --- condition translation (pure) ----------------------------------------------
@dataclass
class Expression:
    """A ConditionExpression with only the placeholders it uses (DynamoDB rejects unused ones)."""

    text: str
    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ConditionExpression": self.text}
        if self.names:
            out["ExpressionAttributeNames"] = self.names
        if self.values:
            out["ExpressionAttributeValues"] = self.values
        return out


class _Placeholders:
    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self._by_attr: dict[str, str] = {}

    def name(self, attr: str) -> str:
        if attr not in self._by_attr:
            placeholder = f"#a{len(self._by_attr)}"
            self._by_attr[attr] = placeholder
            self.names[placeholder] = attr
        return self._by_attr[attr]

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = _SERIALIZER.serialize(value)
        return placeholder


def condition_expression(condition: Condition | None, *, required: bool = False) -> Expression | None:
    """The DynamoDB form of ``condition``; None when it always holds, unless ``required``."""
    ph = _Placeholders()
    clauses: list[str] = []
    if condition is not None:
        if condition.exists is False:
            # `evaluate` ignores comparisons when the item must be absent.
            clauses.append("attribute_not_exists(pk)")
        else:
            if condition.exists is True:
                clauses.append("attribute_exists(pk)")
            clauses.extend(_compare_clause(ph, c) for c in condition.compares)
    if not clauses:
        if not required:
            return None
        clauses.append(ALWAYS)
    return Expression(" AND ".join(clauses), ph.names, ph.values)


def _dynamo_type(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "N"
    if isinstance(value, str):
        return "S"
    return "L" if isinstance(value, list) else "M"


def _compare_clause(ph: _Placeholders, compare: Compare) -> str:
    if not isinstance(compare.attr, str) or not compare.attr:
        raise InvalidRequest("condition attribute names must be non-empty strings", attr=compare.attr)
    if compare.attr in RESERVED_ATTRS:
        return NEVER  # item attributes never include the key, so `evaluate` sees a missing attribute
    value = check_value(compare.value, attr=compare.attr)
    if compare.op == "<>":
        # True for any present, non-NULL value of another type or another value.
        name = ph.name(compare.attr)
        present = f"attribute_exists({name}) AND NOT attribute_type({name}, {ph.value('NULL')})"
        if value is None:
            return f"({present})"
        kind = ph.value(_dynamo_type(value))
        return f"({present} AND (NOT attribute_type({name}, {kind}) OR {name} <> {ph.value(value)}))"
    if value is None:
        return NEVER  # `evaluate`: nothing is equal to or ordered against None
    if compare.op != "=" and isinstance(value, bool):
        # DynamoDB cannot order BOOL: list the booleans the ordering admits instead.
        matching = [b for b in (False, True) if _ORDERINGS[compare.op](b, value)]
        if not matching:
            return NEVER
        if len(matching) == 2:
            return f"attribute_type({ph.name(compare.attr)}, {ph.value('BOOL')})"
        name = ph.name(compare.attr)
        return f"(attribute_type({name}, {ph.value('BOOL')}) AND {name} = {ph.value(matching[0])})"
    if compare.op != "=" and not isinstance(value, (int, str)):
        raise InvalidRequest(
            "ordering comparisons need an int, str or bool value", attr=compare.attr, op=compare.op
        )
    # The type guard makes a type mismatch false, as in `evaluate`, on every
    # backend: moto equates BOOL true with N 1 and answers 500 to ordering
    # across types.
    name = ph.name(compare.attr)
    kind = ph.value(_dynamo_type(value))
    return f"(attribute_type({name}, {kind}) AND {name} {compare.op} {ph.value(value)})"


# --- query planning (pure) --------------------------------------------------------
@dataclass(frozen=True)
class KeyPlan:
    """A KeyConditionExpression narrowing the sort key, and how many boundary items it may over-read."""

    text: str
    values: dict[str, Any]
    slack: int


def prefix_end(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (None: no such string)."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1])
        if code < 0x10FFFF:
            code += 1
            if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be stored
                code = 0xE000
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def plan_key_condition(pk: str, prefix: str, after: str | None, before: str | None) -> KeyPlan | None:
    """The most selective single sort-key condition DynamoDB accepts; None when nothing can match.

    Results are still filtered client-side with the exact bounds, so the plan
    only has to contain every match, not exclude every non-match.
    """
    values: dict[str, Any] = {":pk": {"S": pk}}
    if before is not None and before <= prefix:
        # Every match starts with prefix, so sorts at or after it.
        return None
    if after == "":
        after = None  # every sort key is non-empty, hence after ""
    # Lower bound: (value, inclusive); upper bound: exclusive value.
    lower: tuple[str, bool] | None = (prefix, True) if prefix else None
    if after is not None and (lower is None or after >= lower[0]):
        lower = (after, False)
    end = prefix_end(prefix) if prefix else None
    upper = end
    if before is not None and (upper is None or before < upper):
        upper = before
    if lower is not None and upper is not None and lower[0] >= upper:
        return None
    if prefix and lower == (prefix, True) and upper == end:
        values[":p"] = {"S": prefix}
        return KeyPlan("pk = :pk AND begins_with(sk, :p)", values, 0)
    if lower is not None and upper is not None:
        values[":lo"], values[":hi"] = {"S": lower[0]}, {"S": upper}
        return KeyPlan("pk = :pk AND sk BETWEEN :lo AND :hi", values, 1 + (not lower[1]))
    if lower is not None:
        values[":lo"] = {"S": lower[0]}
        return KeyPlan(f"pk = :pk AND sk {'>=' if lower[1] else '>'} :lo", values, 0)
    if upper is not None:
        values[":hi"] = {"S": upper}
        return KeyPlan("pk = :pk AND sk < :hi", values, 0)
    return KeyPlan("pk = :pk", values, 0)


def in_range(sk: str, prefix: str, after: str | None, before: str | None) -> bool:
    return sk.startswith(prefix) and (after is None or sk > after) and (before is None or sk < before)


# --- the adapter ---------------------------------------------------------------------
def client_config() -> AioConfig:
    return AioConfig(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    )


class DynamoMetaStore:
    """Implements `tidelog.storage.ports.MetaStore` on one table keyed by ``pk``/``sk`` strings."""

    def __init__(self, table: str, client: Any, exit_stack: contextlib.AsyncExitStack) -> None:
        self.table = table
        self.stats = StoreStats()
        self._client = client
        self._exit_stack = exit_stack

    @classmethod
    async def open(cls, table: str, *, endpoint_url: str | None = None, region: str = "us-east-1") -> "DynamoMetaStore":
        stack = contextlib.AsyncExitStack()
        session = aioboto3.Session()
        await asyncio.to_thread(aws_errors.preload_sdk_data, session, "dynamodb")
        try:
            client = await stack.enter_async_context(
                session.client("dynamodb", endpoint_url=endpoint_url, region_name=region, config=client_config())
            )
        except Exception as exc:
            await stack.aclose()
            raise aws_errors.translate(exc, action="CreateClient", write=False, endpoint=endpoint_url, region=region) from exc
        return cls(table, client, stack)

    async def close(self) -> None:
        await self._exit_stack.aclose()

    async def __aenter__(self) -> "DynamoMetaStore":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- requests -----------------------------------------------------------
    async def _raw(self, action: str, *, write: bool, **params: Any) -> dict[str, Any]:
        """One counted request.  A service answer propagates as ClientError so the caller can
        interpret its code; transport failures are already translated."""
        self.stats.count(action)
        method = getattr(self._client, xform_name(action))
        try:
            response = await method(**params)
        except ClientError as exc:
            self._count_retries(action, exc.response)
            raise
        except Exception as exc:
            raise aws_errors.translate(exc, action=action, write=write, table=self.table) from exc
        self._count_retries(action, response)
        return response

    async def _call(self, action: str, *, write: bool, **params: Any) -> dict[str, Any]:
        try:
            return await self._raw(action, write=write, **params)
        except ClientError as exc:
            raise aws_errors.translate(exc, action=action, write=write, table=self.table) from exc

    def _count_retries(self, action: str, response: dict[str, Any]) -> None:
        retries = aws_errors.retry_attempts(response)
        if retries:
            self.stats.count(action, retries)

    # --- table lifecycle ------------------------------------------------------
    async def ensure(self, create: bool) -> None:
        description = await self._describe()
        if description is None:
            if not create:
                raise NotFound("table missing; run `tidelog init` to create it", table=self.table)
            try:
                await self._raw(
                    "CreateTable",
                    write=True,
                    TableName=self.table,
                    AttributeDefinitions=[
                        {"AttributeName": "pk", "AttributeType": "S"},
                        {"AttributeName": "sk", "AttributeType": "S"},
                    ],
                    KeySchema=[
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "sk", "KeyType": "RANGE"},
                    ],
                    BillingMode="PAY_PER_REQUEST",
                )
            except ClientError as exc:
                if aws_errors.error_code(exc) != "ResourceInUseException":  # created concurrently: fine
                    raise aws_errors.translate(exc, action="CreateTable", write=True, table=self.table) from exc
            description = await self._describe()
            if description is None:
                raise Unavailable("table not visible after creation", table=self.table)
        self._check_schema(description)
        await self._wait_active(description)

    async def _describe(self) -> dict[str, Any] | None:
        try:
            response = await self._raw("DescribeTable", write=False, TableName=self.table)
        except ClientError as exc:
            if aws_errors.error_code(exc) == "ResourceNotFoundException":
                return None
            raise aws_errors.translate(exc, action="DescribeTable", write=False, table=self.table) from exc
        return response["Table"]

    def _check_schema(self, description: dict[str, Any]) -> None:
        keys = {k["AttributeName"]: k["KeyType"] for k in description.get("KeySchema", [])}
        types = {a["AttributeName"]: a["AttributeType"] for a in description.get("AttributeDefinitions", [])}
        if keys != {"pk": "HASH", "sk": "RANGE"} or types.get("pk") != "S" or types.get("sk") != "S":
            raise InvalidRequest(
                "table exists with a key schema tidelog cannot use; it needs string pk (hash) and sk (range)",
                table=self.table,
            )

    async def _wait_active(self, description: dict[str, Any]) -> None:
        """Table creation is asynchronous on AWS (seconds); moto and LocalStack are ACTIVE at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TABLE_WAIT_S
        delay = 0.2
        while description.get("TableStatus") != "ACTIVE":
            if loop.time() > deadline:
                raise Unavailable(
                    "table did not become active in time", table=self.table, status=description.get("TableStatus")
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            fresh = await self._describe()
            if fresh is None:
                raise NotFound("table disappeared while waiting for it; run `tidelog init`", table=self.table)
            description = fresh

    # --- reads ----------------------------------------------------------------
    async def get(self, pk: str, sk: str) -> Item | None:
        response = await self._call(
            "GetItem", write=False, TableName=self.table, Key=encode_key(pk, sk), ConsistentRead=True
        )
        raw = response.get("Item")
        item = decode_item(raw) if raw else None
        self.stats.read_units += read_units(item_size(item) if item else 0)
        return item

    async def query(
        self,
        pk: str,
        *,
        prefix: str = "",
        after: str | None = None,
        before: str | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> list[Item]:
        if limit is not None and limit <= 0:
            raise InvalidRequest("query limit must be positive", limit=limit)
        if not pk:
            raise InvalidRequest("query needs a non-empty partition key")
        plan = plan_key_condition(pk, prefix, after, before)
        if plan is None:
            return []
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": plan.text,
            "ExpressionAttributeValues": plan.values,
            "ScanIndexForward": not reverse,
            "ConsistentRead": True,
        }
        results: list[Item] = []
        while True:
            if limit is not None:
                params["Limit"] = limit - len(results) + plan.slack
            response = await self._call("Query", write=False, **params)
            page = [decode_item(raw) for raw in response.get("Items", [])]
            self.stats.read_units += read_units(sum(item_size(item) for item in page))
            for item in page:
                if in_range(item.sk, prefix, after, before):
                    results.append(item)
                    if limit is not None and len(results) == limit:
                        return results
            last_key = response.get("LastEvaluatedKey")
            if not last_key:
                return results
            params["ExclusiveStartKey"] = last_key

    # --- writes ---------------------------------------------------------------
    async def write(self, ops: Sequence[WriteOp]) -> None:
        try:
            validate_ops(ops)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        if len(ops) == 1 and not isinstance(ops[0], Check):
            await self._write_single(ops[0])
        else:
            await self._write_transaction(ops)

    async def _write_single(self, op: Put | Delete) -> None:
        expression = condition_expression(op.condition)
        params: dict[str, Any] = {"TableName": self.table}
        if expression is not None:
            params.update(expression.params(), ReturnValuesOnConditionCheckFailure="ALL_OLD")
        if isinstance(op, Put):
            params["Item"] = encode_item(op.item)  # validates before anything is counted or sent
            action, size = "PutItem", item_size(op.item)
        else:
            action, size = "DeleteItem", item_size(Item(op.pk, op.sk))
            params["Key"] = encode_key(op.pk, op.sk)
        self.stats.write_units += write_units(size)
        pk, sk = op_key(op)
        try:
            await self._raw(action, write=True, **params)
        except ClientError as exc:
            if aws_errors.error_code(exc) != "ConditionalCheckFailedException":
                raise aws_errors.translate(exc, action=action, write=True, table=self.table, pk=pk, sk=sk) from exc
            if aws_errors.retry_attempts(exc) > 0:
                raise Ambiguous(
                    "condition failed after a retry; an earlier attempt of ours may have been applied",
                    action=action,
                    pk=pk,
                    sk=sk,
                ) from exc
            current = exc.response.get("Item")
            raise Conflict(
                "conditional write failed",
                current=decode_item(current) if current else None,
                index=0,
                pk=pk,
                sk=sk,
            ) from exc

    async def _write_transaction(self, ops: Sequence[WriteOp]) -> None:
        items = [self._transact_item(op) for op in ops]
        for op in ops:
            size = item_size(op.item) if isinstance(op, Put) else item_size(Item(*op_key(op)))
            self.stats.write_units += write_units(size, transactional=True)
        try:
            await self._raw(
                "TransactWriteItems",
                write=True,
                TransactItems=items,
                ClientRequestToken=str(uuid.uuid4()),
            )
        except ClientError as exc:
            raise self._transaction_error(exc, ops) from exc

    def _transact_item(self, op: WriteOp) -> dict[str, Any]:
        if isinstance(op, Check):
            body: dict[str, Any] = {"TableName": self.table, "Key": encode_key(op.pk, op.sk)}
            expression = condition_expression(op.condition, required=True)
            kind = "ConditionCheck"
        elif isinstance(op, Put):
            body = {"TableName": self.table, "Item": encode_item(op.item)}
            expression = condition_expression(op.condition)
            kind = "Put"
        else:
            body = {"TableName": self.table, "Key": encode_key(op.pk, op.sk)}
            expression = condition_expression(op.condition)
            kind = "Delete"
        if expression is not None:
            body.update(expression.params(), ReturnValuesOnConditionCheckFailure="ALL_OLD")
        return {kind: body}

    def _transaction_error(self, exc: ClientError, ops: Sequence[WriteOp]) -> TidelogError:
        """The error for a failed transaction.  The token makes botocore's retries idempotent,
        so a condition failure is a real conflict even after a retry."""
        if aws_errors.error_code(exc) != "TransactionCanceledException":
            return aws_errors.translate(exc, action="TransactWriteItems", write=True, table=self.table, ops=len(ops))
        reasons = [str(r.get("Code") or "None") for r in exc.response.get("CancellationReasons", [])]
        for index, reason in enumerate(exc.response.get("CancellationReasons", [])):
            if reason.get("Code") == "ConditionalCheckFailed":
                pk, sk = op_key(ops[index])
                current = reason.get("Item")
                return Conflict(
                    "conditional write failed",
                    current=decode_item(current) if current else None,
                    index=index,
                    pk=pk,
                    sk=sk,
                )
        ctx = {"action": "TransactWriteItems", "table": self.table, "reasons": ",".join(reasons)}
        if aws_errors.retry_attempts(exc) > 0:
            return Ambiguous("transaction cancelled after a retry", **ctx)
        if "TransactionConflict" in reasons:
            return Unavailable("transaction collided with a concurrent write; retry", **ctx)
        if {"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"} & set(reasons):
            return Unavailable("aws throttled the transaction", **ctx)
        if {"ValidationError", "ItemCollectionSizeLimitExceeded"} & set(reasons):
            return InvalidRequest("aws rejected the transaction as invalid", **ctx)
        return aws_errors.translate(exc, action="TransactWriteItems", write=True, table=self.table, reasons=ctx["reasons"])

    async def put_many(self, items: Sequence[Item]) -> None:
        # One request may not name a key twice; the last write of a key wins, as it would one by one.
        latest: dict[tuple[str, str], Item] = {}
        for item in items:
            latest.pop((item.pk, item.sk), None)
            latest[(item.pk, item.sk)] = item
        # Encode everything first so an invalid item fails the call before any batch is written.
        encoded = [(item, encode_item(item)) for item in latest.values()]
        for start in range(0, len(encoded), BATCH_SIZE):
            await self._batch_write(encoded[start : start + BATCH_SIZE])

    async def _batch_write(self, batch: list[tuple[Item, dict[str, Any]]]) -> None:
        pending = {(item.pk, item.sk): (item, raw) for item, raw in batch}
        delay = BATCH_BACKOFF_S
        for _ in range(BATCH_MAX_ROUNDS):
            requests = [{"PutRequest": {"Item": raw}} for _, raw in pending.values()]
            response = await self._call("BatchWriteItem", write=True, RequestItems={self.table: requests})
            left = {_request_key(r) for r in response.get("UnprocessedItems", {}).get(self.table, [])}
            for key, (item, _) in pending.items():
                if key not in left:  # DynamoDB charges only for the items it wrote
                    self.stats.write_units += write_units(item_size(item))
            pending = {key: pending[key] for key in left}
            if not pending:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, BATCH_BACKOFF_MAX_S)
        raise Unavailable("batch write left items unprocessed; retry", table=self.table, unprocessed=len(pending))


def _request_key(request: dict[str, Any]) -> tuple[str, str]:
    item = request["PutRequest"]["Item"]
    return item["pk"]["S"], item["sk"]["S"]
