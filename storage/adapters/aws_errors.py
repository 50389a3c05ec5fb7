"""Translation of AWS SDK failures into tidelog's error kinds, shared by the S3 and DynamoDB adapters.

The adapters handle the codes that carry meaning for one operation (a failed
precondition, a missing key) themselves and hand everything else to
`translate`.  The rules, in order:

* A write that botocore retried may already have been applied by an earlier
  attempt whose response was lost, so any failure of a retried write is
  `Ambiguous`: the caller must re-read before retrying.
* Throttling, 503 and request-timeout answers mean the service rejected the
  request: `Unavailable` (retry with backoff).
* Other 5xx answers: `Unavailable` for reads, `Ambiguous` for writes (AWS
  documents that an internal error may or may not have applied the write).
* Connection failures and timeouts: `Unavailable` for reads, `Ambiguous` for
  writes.  botocore may have retried after a request that reached the
  server, and the exception does not say, so a write never claims it was not
  applied.
* Missing credentials, access denied and validation failures are
  `InvalidRequest`: retrying as is cannot help.
* Anything else is `Internal`.

`preload_sdk_data` is the one piece of SDK plumbing both adapters share
besides error translation; it lives here to keep the adapters independent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    ConnectionError as BotoConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)

from ..errors import Ambiguous, Internal, InvalidRequest, NotFound, TidelogError, Unavailable

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "TransactionInProgressException",
    }
)
# The service did not act on the request; trying again later may work.
REJECTED_CODES = frozenset(
    {
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "ConditionalRequestConflict",  # S3: a concurrent conditional write on the key
        "OperationAborted",
    }
)
AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
    }
)
INVALID_CODES = frozenset(
    {
        "ValidationException",
        "SerializationException",
        "ItemCollectionSizeLimitExceededException",
        "InvalidArgument",
        "InvalidRequest",
        "InvalidBucketName",
        "EntityTooLarge",
        "EntityTooSmall",
        "KeyTooLongError",
        "MetadataTooLarge",
    }
)
CONFIG_EXCEPTIONS = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError, NoRegionError)
TRANSPORT_EXCEPTIONS = (
    BotoConnectionError,
    HTTPClientError,  # read timeouts, closed connections, broken response streams
    IncompleteReadError,
    ChecksumError,  # corrupted in transit; a retry reads it again
    aiohttp.ClientError,
    asyncio.TimeoutError,
    OSError,
)


def preload_sdk_data(session: Any, service: str) -> None:
    """Parse botocore's JSON models into ``session``'s loader cache; call it in a worker thread.

    Creating a client parses several large JSON files synchronously (100-400
    ms on this machine), which would stall the event loop; with the cache warm
    the client is built from memory.  Purely an optimisation: any failure is
    left for client creation to report.
    """
    try:
        loader = session._session.get_component("data_loader")
        loader.load_service_model(service, "service-2")
        loader.load_service_model(service, "endpoint-rule-set-1")
        loader.load_data_with_path("endpoints")
        for name in ("partitions", "_retry", "sdk-default-configuration"):
            loader.load_data(name)
    except Exception:  # noqa: BLE001 - see docstring
        return


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def retry_attempts(exc: BaseException | dict[str, Any]) -> int:
    """How many times botocore resent the request (0 = one attempt); works on a ClientError or a response."""
    response = exc.response if isinstance(exc, ClientError) else exc
    if not isinstance(response, dict):
        return 0
    return int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0)


def translate(exc: BaseException, *, action: str, write: bool, **context: Any) -> TidelogError:
    """The tidelog error for a failed ``action`` (an AWS operation name); raise it ``from exc``."""
    if isinstance(exc, TidelogError):
        return exc
    if isinstance(exc, ClientError):
        return _translate_client_error(exc, action=action, write=write, **context)
    if isinstance(exc, CONFIG_EXCEPTIONS):
        return InvalidRequest(
            "no usable aws credentials or region; configure the standard aws credential chain",
            action=action,
            error=type(exc).__name__,
            **context,
        )
    if isinstance(exc, ParamValidationError):
        return InvalidRequest("request rejected by the aws sdk", action=action, detail=_detail(exc), **context)
    if isinstance(exc, TRANSPORT_EXCEPTIONS):
        if write:
            return Ambiguous("write outcome unknown after a transport failure", action=action, error=type(exc).__name__, **context)
        return Unavailable("aws endpoint unreachable or timed out", action=action, error=type(exc).__name__, **context)
    if isinstance(exc, BotoCoreError):
        return Internal("unexpected aws sdk failure", action=action, error=type(exc).__name__, detail=_detail(exc), **context)
    return Internal("unexpected failure calling aws", action=action, error=type(exc).__name__, detail=_detail(exc), **context)


def _translate_client_error(exc: ClientError, *, action: str, write: bool, **context: Any) -> TidelogError:
    code = error_code(exc)
    status = http_status(exc)
    ctx = {"action": action, "code": code or status, **context}
    if write and retry_attempts(exc) > 0:
        return Ambiguous("write outcome unknown: an earlier attempt may have been applied", retries=retry_attempts(exc), **ctx)
    if code in THROTTLING_CODES:
        return Unavailable("aws throttled the request", **ctx)
    if code in REJECTED_CODES or status == 503:
        return Unavailable("aws rejected the request for now", **ctx)
    if status >= 500:
        if write:
            return Ambiguous("write outcome unknown after a server error", **ctx)
        return Unavailable("aws server error", **ctx)
    if code == "NoSuchBucket":
        return NotFound("bucket missing; run `tidelog init` to create it", **ctx)
    if code == "ResourceNotFoundException":
        return NotFound("table missing; run `tidelog init` to create it", **ctx)
    if code in AUTH_CODES or status == 403:
        return InvalidRequest("aws denied access; check the credentials and their permissions", **ctx)
    if code in INVALID_CODES:
        return InvalidRequest("aws rejected the request as invalid", detail=_detail(exc), **ctx)
    return Internal("unexpected aws error", status=status, detail=_detail(exc), **ctx)


def _detail(exc: BaseException) -> str:
    """A short single-token-ish rendering of the SDK's message for the key=value tail."""
    if isinstance(exc, ClientError):
        text = str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
    else:
        text = str(exc)
    return repr(text[:200])
