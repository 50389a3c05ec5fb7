"""The object-store port on S3 (or any S3-compatible endpoint: LocalStack, moto) through aioboto3.

Invariants and why they hold:

* Create-only writes are atomic.  Small objects use one ``PutObject`` with
  ``If-None-Match: *``; large ones a multipart upload whose
  ``CompleteMultipartUpload`` carries the same condition.  Parts are
  invisible until completion, and every failed upload is aborted, so a reader
  never sees a partial object and an aborted upload never appears.  (A crash
  between create and abort leaves parts behind; the bucket's
  AbortIncompleteMultipartUpload lifecycle rule is the backstop.)
* A failed precondition is `AlreadyExists` only when S3 answered the first
  attempt; after a botocore retry our own earlier attempt may have created
  the object, so the answer is `Ambiguous`.
* Each part and single put carries a CRC32 checksum that S3 verifies, so
  bytes corrupted in transit are rejected rather than stored.
* One client (one connection pool) lives as long as the store.

Request cost: a put below ``multipart_threshold`` is one PUT; above it,
2 + ceil(size / part_size) requests.  ``stats`` counts every request by S3
operation name.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any, AsyncIterator

import aioboto3
from aiobotocore.config import AioConfig
from botocore import xform_name
from botocore.exceptions import ClientError

from ..cost import StoreStats
from ..errors import AlreadyExists, Ambiguous, InvalidRequest, NotFound, TidelogError, Unavailable
from ..model import ObjectInfo
from . import aws_errors

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
MAX_PARTS = 10_000
PART_CONCURRENCY = 4
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 30
MAX_ATTEMPTS = 3  # in total: the first attempt and two retries
CHECKSUM = "CRC32"


def client_config(endpoint_url: str | None) -> AioConfig:
    """Shared botocore settings: short connect timeout, few retries, path-style off AWS.

    Custom endpoints (moto, LocalStack) get path-style addressing because
    virtual-hosted buckets need wildcard DNS they usually lack.
    """
    return AioConfig(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        s3={"addressing_style": "path"} if endpoint_url else None,
    )


class S3ObjectStore:
    """Implements `tidelog.storage.ports.ObjectStore` on one bucket."""

    def __init__(
        self,
        bucket: str,
        client: Any,
        exit_stack: contextlib.AsyncExitStack,
        *,
        region: str,
        multipart_threshold: int,
        part_size: int,
    ) -> None:
        self.bucket = bucket
        self.region = region
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.stats = StoreStats()
        self._client = client
        self._exit_stack = exit_stack

    @classmethod
    async def open(
        cls,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        multipart_threshold: int = 16 * 1024 * 1024,
        part_size: int = 8 * 1024 * 1024,
    ) -> "S3ObjectStore":
        if part_size < MIN_PART_SIZE:
            raise InvalidRequest("part size below the s3 minimum", part_size=part_size, minimum=MIN_PART_SIZE)
        if multipart_threshold < part_size:
            raise InvalidRequest(
                "multipart threshold below the part size", multipart_threshold=multipart_threshold, part_size=part_size
            )
        stack = contextlib.AsyncExitStack()
        session = aioboto3.Session()
        await asyncio.to_thread(aws_errors.preload_sdk_data, session, "s3")
        try:
            client = await stack.enter_async_context(
                session.client("s3", endpoint_url=endpoint_url, region_name=region, config=client_config(endpoint_url))
            )
        except Exception as exc:
            await stack.aclose()
            raise aws_errors.translate(exc, action="CreateClient", write=False, endpoint=endpoint_url, region=region) from exc
        return cls(
            bucket, client, stack, region=region, multipart_threshold=multipart_threshold, part_size=part_size
        )

    async def close(self) -> None:
        await self._exit_stack.aclose()

    async def __aenter__(self) -> "S3ObjectStore":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- requests -----------------------------------------------------------
    async def _call(self, action: str, *, write: bool, **params: Any) -> dict[str, Any]:
        """One S3 request with generic error translation, for operations with no codes of their own."""
        try:
            return await self._raw(action, **params)
        except ClientError as exc:
            raise aws_errors.translate(exc, action=action, write=write, bucket=self.bucket, key=params.get("Key")) from exc

    async def _raw(self, action: str, **params: Any) -> dict[str, Any]:
        """One counted S3 request.  A service answer propagates as ClientError so the caller can
        interpret its code; transport failures are already translated."""
        self.stats.count(action)
        method = getattr(self._client, xform_name(action))
        try:
            response = await method(Bucket=self.bucket, **params)
        except ClientError as exc:
            self._count_retries(action, exc.response)
            raise
        except Exception as exc:
            write = action not in _READS
            raise aws_errors.translate(exc, action=action, write=write, bucket=self.bucket, key=params.get("Key")) from exc
        self._count_retries(action, response)
        return response

    def _count_retries(self, action: str, response: dict[str, Any]) -> None:
        retries = aws_errors.retry_attempts(response)
        if retries:
            self.stats.count(action, retries)

    # --- ObjectStore ----------------------------------------------------------
    async def ensure(self, create: bool) -> None:
        try:
            await self._raw("HeadBucket")
            return
        except ClientError as exc:
            status = aws_errors.http_status(exc)
            if status == 301:
                raise InvalidRequest("bucket lives in another region", bucket=self.bucket, region=self.region) from exc
            if status != 404:
                raise aws_errors.translate(exc, action="HeadBucket", write=False, bucket=self.bucket) from exc
        if not create:
            raise NotFound("bucket missing; run `tidelog init` to create it", bucket=self.bucket)
        params: dict[str, Any] = {}
        if self.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            await self._raw("CreateBucket", **params)
        except ClientError as exc:
            if aws_errors.error_code(exc) == "BucketAlreadyOwnedByYou":
                return
            if aws_errors.error_code(exc) == "BucketAlreadyExists":
                raise InvalidRequest("bucket name is taken by another account", bucket=self.bucket) from exc
            raise aws_errors.translate(exc, action="CreateBucket", write=True, bucket=self.bucket) from exc

    async def put_if_absent(self, key: str, data: bytes) -> str:
        if len(data) >= self.multipart_threshold:
            return await self._put_multipart(key, data)
        try:
            response = await self._raw("PutObject", Key=key, Body=data, IfNoneMatch="*", ChecksumAlgorithm=CHECKSUM)
        except ClientError as exc:
            raise self._put_error(exc, "PutObject", key) from exc
        return _etag(response)

    def _put_error(self, exc: ClientError, action: str, key: str) -> TidelogError:
        if aws_errors.error_code(exc) == "PreconditionFailed" or aws_errors.http_status(exc) == 412:
            if aws_errors.retry_attempts(exc) > 0:
                return Ambiguous(
                    "object exists but an earlier attempt of ours may have created it",
                    action=action,
                    bucket=self.bucket,
                    key=key,
                )
            return AlreadyExists("object already exists", bucket=self.bucket, key=key)
        return aws_errors.translate(exc, action=action, write=True, bucket=self.bucket, key=key)

    async def _put_multipart(self, key: str, data: bytes) -> str:
        part_size = max(self.part_size, math.ceil(len(data) / MAX_PARTS))
        # Until CompleteMultipartUpload nothing is visible, so an unknown outcome of
        # an earlier step is no ambiguity about the object: report it as retryable.
        try:
            created = await self._call("CreateMultipartUpload", write=True, Key=key, ChecksumAlgorithm=CHECKSUM)
        except Ambiguous as exc:
            raise Unavailable("multipart upload not started; nothing was written", bucket=self.bucket, key=key) from exc
        upload_id = created["UploadId"]
        try:
            try:
                parts = await self._upload_parts(key, upload_id, data, part_size)
            except Ambiguous as exc:
                raise Unavailable("part upload failed; the upload was aborted", bucket=self.bucket, key=key) from exc
            try:
                response = await self._raw(
                    "CompleteMultipartUpload",
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    IfNoneMatch="*",
                )
            except ClientError as exc:
                raise self._put_error(exc, "CompleteMultipartUpload", key) from exc
        except BaseException:
            # Shielded so a second cancellation cannot skip the clean-up.
            await asyncio.shield(self._abort(key, upload_id))
            raise
        return _etag(response)

    async def _upload_parts(self, key: str, upload_id: str, data: bytes, part_size: int) -> list[dict[str, Any]]:
        view = memoryview(data)
        limit = asyncio.Semaphore(PART_CONCURRENCY)

        async def upload(number: int, offset: int) -> dict[str, Any]:
            async with limit:
                response = await self._call(
                    "UploadPart",
                    write=True,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=bytes(view[offset : offset + part_size]),
                    ChecksumAlgorithm=CHECKSUM,
                )
            return {"PartNumber": number, "ETag": response["ETag"], "ChecksumCRC32": response["ChecksumCRC32"]}

        offsets = range(0, len(data), part_size)
        tasks = [asyncio.ensure_future(upload(i + 1, off)) for i, off in enumerate(offsets)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _abort(self, key: str, upload_id: str) -> None:
        """Best effort: the original failure matters more than a failed abort."""
        try:
            await self._raw("AbortMultipartUpload", Key=key, UploadId=upload_id)
        except (ClientError, TidelogError):
            pass

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        if start < 0 or (end is not None and end < start):
            raise InvalidRequest("malformed byte range", key=key, start=start, end=end)
        if end == start:
            await self.head(key)  # an empty range still reports a missing key
            return b""
        params: dict[str, Any] = {"Key": key}
        if start or end is not None:
            params["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        try:
            response = await self._raw("GetObject", **params)
        except ClientError as exc:
            code = aws_errors.error_code(exc)
            if code == "InvalidRange" or aws_errors.http_status(exc) == 416:
                return b""  # start at or past the end (or an empty object)
            if code in ("NoSuchKey", "404"):
                raise NotFound("object not found", bucket=self.bucket, key=key) from exc
            raise aws_errors.translate(exc, action="GetObject", write=False, bucket=self.bucket, key=key) from exc
        try:
            async with response["Body"] as body:
                return await body.read()
        except Exception as exc:
            raise aws_errors.translate(exc, action="GetObject", write=False, bucket=self.bucket, key=key) from exc

    async def head(self, key: str) -> ObjectInfo:
        try:
            response = await self._raw("HeadObject", Key=key)
        except ClientError as exc:
            if aws_errors.http_status(exc) == 404:
                raise NotFound("object not found", bucket=self.bucket, key=key) from exc
            raise aws_errors.translate(exc, action="HeadObject", write=False, bucket=self.bucket, key=key) from exc
        return ObjectInfo(key, int(response["ContentLength"]), _millis(response["LastModified"]))

    async def delete(self, key: str) -> None:
        # S3 answers 204 for a missing key too, so this is idempotent as is.
        await self._call("DeleteObject", write=True, Key=key)

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        params: dict[str, Any] = {"Prefix": prefix}
        while True:
            response = await self._call("ListObjectsV2", write=False, **params)
            for entry in response.get("Contents", ()):
                yield ObjectInfo(entry["Key"], int(entry["Size"]), _millis(entry["LastModified"]))
            token = response.get("NextContinuationToken")
            if not response.get("IsTruncated") or not token:
                return
            params["ContinuationToken"] = token


_READS = frozenset({"HeadBucket", "GetObject", "HeadObject", "ListObjectsV2", "ListMultipartUploads"})


def _etag(response: dict[str, Any]) -> str:
    return str(response["ETag"]).strip('"')


def _millis(moment: Any) -> int:
    return int(moment.timestamp() * 1000)
