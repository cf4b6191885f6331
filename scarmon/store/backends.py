"""Object storage seam: one small interface over a local folder and an S3 bucket.

Everything scarmon persists goes through a `Store`, so the sequence logic (scarmon.store.sequence) is written once and
tested against both a folder and a real S3 API (moto). The one primitive that logic needs beyond get/put is a
*conditional put* (`put_if`): replace an object only if nobody changed it since we read it. S3 gives that with
If-Match / If-None-Match; the local store gives it with an exclusive `flock` per key stripe.

Keys are '/'-separated relative paths, validated identically for both backends so a key that works locally also
works on S3 and the other way round. Names beginning with `.scarmon-` are reserved for the local store's own
temporary and lock files and are rejected as keys.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, unquote, urlparse

from scarmon.errors import ScarmonError, transient

RESERVED_PREFIX = ".scarmon-"
_LOCK_DIR = RESERVED_PREFIX + "locks"
_TMP_PREFIX = RESERVED_PREFIX + "tmp-"
_LOCK_STRIPES = 256  # bounded number of lock files; two keys sharing a stripe only serialize, never conflict


class StoreError(ScarmonError):
    """A store operation failed; the message names the store URI and the key."""


class KeyMissing(StoreError, KeyError):
    """The key does not exist in the store."""

    def __str__(self) -> str:  # KeyError would repr() the message, adding quotes
        return str(self.args[0]) if self.args else ""


class Conflict(StoreError):
    """A conditional put lost: someone else created or replaced the object since it was read."""

    transient = True


@runtime_checkable
class Store(Protocol):
    """What scarmon needs from object storage. Implementations: LocalStore, S3Store (see `open_store`)."""

    uri: str

    def get(self, key: str) -> bytes:
        """Content of `key`; raises KeyMissing."""
        ...

    def get_with_tag(self, key: str) -> tuple[bytes, str]:
        """Content and an opaque version tag of that same content, for a later `put_if`; raises KeyMissing."""
        ...

    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> str:
        """Write `key` atomically (readers see the old or the new content, never a part); returns the new tag."""
        ...

    def put_if(self, key: str, data: bytes, *, expected_tag: str | None, content_type: str | None = None) -> str:
        """Like put, but only if the current tag is `expected_tag` (None: only if absent); raises Conflict."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with `prefix` (a plain string prefix, as on S3), relative to the store root, sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key`; deleting a missing key is not an error (as on S3)."""
        ...

    def url(self, key: str) -> str:
        """Where a person can open the object: a file path, an endpoint URL or an s3:// URI."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The file behind `key` for local stores (so GDAL can read a COG in place); None for remote stores."""
        ...


def validate_key(key: str, *, store_uri: str = "") -> str:
    """Return `key` if it is a clean relative '/'-separated key, else raise StoreError saying what is wrong.

    Rejected: empty, absolute, backslashes, empty parts ('a//b', trailing '/'), '.' or '..' parts, NUL, and parts
    starting with '.scarmon-' (reserved for the local store's temp and lock files).
    """
    where = f" in store {store_uri}" if store_uri else ""
    if not isinstance(key, str) or not key:
        raise StoreError(f"invalid key {key!r}{where}: a key must be a non-empty string like 'site/frames/x.tif'")
    problem = None
    if key.startswith("/"):
        problem = "it is absolute; keys are relative to the store root"
    elif "\\" in key:
        problem = "it contains a backslash; use '/' to separate parts"
    elif "\x00" in key:
        problem = "it contains a NUL character"
    else:
        for part in key.split("/"):
            if part == "":
                problem = "it has an empty part ('//' or a leading/trailing '/')"
            elif part in (".", ".."):
                problem = f"it contains a {part!r} part"
            elif part.startswith(RESERVED_PREFIX):
                problem = f"the part {part!r} starts with {RESERVED_PREFIX!r}, reserved for the store's own files"
            if problem:
                break
    if problem:
        raise StoreError(f"invalid key {key!r}{where}: {problem}")
    return key


def _validate_prefix(prefix: str, store_uri: str) -> str:
    """A list prefix may be '' or end with '/', but must otherwise obey the key rules."""
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix, store_uri=store_uri)
    return prefix


def content_tag(data: bytes) -> str:
    """The local store's version tag: hex sha256 of the content."""
    return hashlib.sha256(data).hexdigest()


class LocalStore:
    """A folder as a store. Writes are temp file + fsync + os.replace; `put_if` holds an exclusive flock.

    The flock makes `put_if` safe between processes on one machine (and threads: each call opens its own lock
    file description). It is not a substitute for S3 across machines; flock on network file systems varies.
    """

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the local store folder {self.root}: {e}") from e
        elif not self.root.is_dir():
            raise StoreError(f"local store folder {self.root} does not exist; create it or pass create=True")
        self.uri = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key, store_uri=self.uri).split("/"))

    def _err(self, action: str, key: str, e: OSError) -> StoreError:
        return StoreError(f"cannot {action} {key!r} in store {self.uri}: {e}")

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """Exclusive lock on the key's stripe, held across the check and the write of a conditional put."""
        stripe = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % _LOCK_STRIPES
        lock_dir = self.root / _LOCK_DIR
        try:
            lock_dir.mkdir(exist_ok=True)
            fd = os.open(lock_dir / f"{stripe:03d}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a read-only folder or file system, a full disk: name the store, no traceback
            raise StoreError(
                f"cannot write {key!r} in store {self.uri}: {e.strerror or e} ({lock_dir}); the store "
                "must be writable by this user"
            ) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
            raise KeyMissing(f"no object {key!r} in store {self.uri} (looked for {path})") from e
        except OSError as e:
            raise self._err("read", key, e) from e

    def get(self, key: str) -> bytes:
        return self._read(key)

    def get_with_tag(self, key: str) -> tuple[bytes, str]:
        data = self._read(key)
        return data, content_tag(data)

    def _write_atomic(self, key: str, data: bytes) -> str:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
        except OSError as e:
            raise self._err("write", key, e) from e
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fchmod(f.fileno(), 0o644)  # mkstemp makes 0600; others (a web server) may need to read
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(e, OSError):
                raise self._err("write", key, e) from e
            raise
        _fsync_dir(path.parent)
        return content_tag(data)

    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> str:
        """Atomic write. Also takes the key's lock so a concurrent `put_if` cannot check, then lose our write."""
        self._path(key)  # validate before creating lock files
        with self._locked(key):
            return self._write_atomic(key, bytes(data))

    def put_if(self, key: str, data: bytes, *, expected_tag: str | None, content_type: str | None = None) -> str:
        self._path(key)
        with self._locked(key):
            try:
                current: str | None = content_tag(self._read(key))
            except KeyMissing:
                current = None
            if current != expected_tag:
                if expected_tag is None:
                    raise Conflict(
                        f"{key!r} already exists in store {self.uri} (create-only put); re-read it and retry"
                    )
                if current is None:
                    raise Conflict(
                        f"{key!r} in store {self.uri} was deleted since it was read "
                        f"(expected tag {expected_tag}); re-read it and retry"
                    )
                raise Conflict(
                    f"{key!r} in store {self.uri} changed since it was read "
                    f"(expected tag {expected_tag}, found {current}); re-read it and retry"
                )
            return self._write_atomic(key, bytes(data))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        _validate_prefix(prefix, self.uri)
        # Walk only the deepest folder the prefix fixes: "a/b/c" -> root/a/b.
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*head.split("/")) if head else self.root
        if not start.is_dir():
            return []
        keys: list[str] = []

        def onerror(e: OSError) -> None:
            raise StoreError(f"cannot list {prefix!r} in store {self.uri}: {e}") from e

        for dirpath, dirnames, filenames in os.walk(start, onerror=onerror):
            dirnames[:] = [d for d in dirnames if not d.startswith(RESERVED_PREFIX)]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(RESERVED_PREFIX):
                    continue  # temp files of in-flight or crashed writes, lock files
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._locked(key):
            try:
                path.unlink()
            except FileNotFoundError:
                return
            except OSError as e:
                raise self._err("delete", key, e) from e

    def url(self, key: str) -> str:
        return str(self._path(key))

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


def _fsync_dir(path: Path) -> None:
    """Make the rename durable: a crash right after os.replace could otherwise lose it on some file systems."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF):  # not supported on this file system: nothing to do
            raise
    finally:
        os.close(fd)


ENDPOINT_ENV = "SCARMON_S3_ENDPOINT_URL"


def resolve_endpoint(endpoint_url: str | None = None) -> str | None:
    """Endpoint precedence: argument, then $SCARMON_S3_ENDPOINT_URL, then $AWS_ENDPOINT_URL, then AWS's default."""
    return endpoint_url or os.environ.get(ENDPOINT_ENV) or os.environ.get("AWS_ENDPOINT_URL") or None


class S3Store:
    """An S3 bucket (optionally under a prefix) as a store. Credentials come from boto3's usual chain.

    Tags are S3 ETags exactly as S3 returns them (quoted); pass them back unchanged to `put_if`.
    """

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, *, client: Any = None) -> None:
        import boto3
        from botocore.config import Config

        if not bucket or "/" in bucket:
            raise StoreError(f"invalid S3 bucket name {bucket!r}: give it as s3://BUCKET/optional/prefix")
        self.bucket = bucket
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix, store_uri=f"s3://{bucket}")
        self.prefix = f"{prefix}/" if prefix else ""
        self.endpoint_url = resolve_endpoint(endpoint_url)
        self.uri = f"s3://{bucket}/{self.prefix}"
        self._client = client or boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            # "standard" retries throttling, 5xx and connection errors with backoff; conditional-put 412/409 are
            # not retried (they are answers, handled by the caller).
            config=Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=60),
        )

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r}, endpoint_url={self.endpoint_url!r})"

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key, store_uri=self.uri)

    def _error(self, action: str, key: str, e: Exception) -> StoreError:
        from botocore.exceptions import ClientError, NoCredentialsError

        where = f"s3://{self.bucket}/{self.prefix}{key}"
        if isinstance(e, ClientError):
            err = e.response.get("Error", {})
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = err.get("Code", "?")
            hint = {
                "NoSuchBucket": "create the bucket or fix the store URI",
                "AccessDenied": "check the credentials' permissions on this bucket",
                "InvalidAccessKeyId": "check AWS_ACCESS_KEY_ID / the AWS profile",
                "SignatureDoesNotMatch": "check AWS_SECRET_ACCESS_KEY / the AWS profile",
            }.get(code, "")
            return StoreError(
                f"cannot {action} {where}: AWS error {code} (HTTP {status}): {err.get('Message', '')}"
                + (f"; {hint}" if hint else "")
            )
        if isinstance(e, NoCredentialsError):
            return StoreError(
                f"cannot {action} {where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            )
        return StoreError(f"cannot {action} {where} (endpoint {self.endpoint_url or 'AWS default'}): {e}")

    @staticmethod
    def _code(e: Exception) -> tuple[str, int | None]:
        resp = getattr(e, "response", None) or {}
        return resp.get("Error", {}).get("Code", ""), resp.get("ResponseMetadata", {}).get("HTTPStatusCode")

    def _call(self, action: str, key: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as e:
            code, status = self._code(e)
            if code in ("NoSuchKey", "404", "NotFound") or (status == 404 and code != "NoSuchBucket"):
                raise KeyMissing(f"no object {key!r} in store {self.uri}") from e
            raise transient(
                self._error(action, key, e),
                status in (429, 500, 502, 503, 504) or code in ("SlowDown", "Throttling", "RequestTimeout"),
            ) from e
        except BotoCoreError as e:  # endpoint unreachable, read timeout, ...: network
            raise transient(self._error(action, key, e)) from e

    def get(self, key: str) -> bytes:
        return self.get_with_tag(key)[0]

    def get_with_tag(self, key: str) -> tuple[bytes, str]:
        from botocore.exceptions import BotoCoreError

        resp = self._call("read", key, self._client.get_object, Bucket=self.bucket, Key=self._key(key))
        try:
            return resp["Body"].read(), resp["ETag"]
        except BotoCoreError as e:  # the body stream broke after the headers came
            raise self._error("read", key, e) from e

    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> str:
        extra = {"ContentType": content_type} if content_type else {}
        resp = self._call(
            "write", key, self._client.put_object, Bucket=self.bucket, Key=self._key(key), Body=bytes(data), **extra
        )
        return str(resp["ETag"])

    def put_if(self, key: str, data: bytes, *, expected_tag: str | None, content_type: str | None = None) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        extra: dict[str, str] = {"ContentType": content_type} if content_type else {}
        if expected_tag is None:
            extra["IfNoneMatch"] = "*"
        else:
            extra["IfMatch"] = expected_tag
        try:
            resp = self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=bytes(data), **extra)
        except ClientError as e:
            code, status = self._code(e)
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                what = (
                    "already exists (create-only put)"
                    if expected_tag is None
                    else f"changed since it was read (expected ETag {expected_tag})"
                )
                raise Conflict(f"{key!r} in store {self.uri} {what}: AWS {code or status}; re-read it and retry") from e
            if expected_tag is not None and (code == "NoSuchKey" or status == 404) and code != "NoSuchBucket":
                raise Conflict(
                    f"{key!r} in store {self.uri} was deleted since it was read "
                    f"(expected ETag {expected_tag}); re-read it and retry"
                ) from e
            raise self._error("write", key, e) from e
        except BotoCoreError as e:
            raise self._error("write", key, e) from e
        return str(resp["ETag"])

    def exists(self, key: str) -> bool:
        try:
            self._call("check", key, self._client.head_object, Bucket=self.bucket, Key=self._key(key))
        except KeyMissing:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        _validate_prefix(prefix, self.uri)
        keys: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                keys.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", ()))
        except (ClientError, BotoCoreError) as e:
            raise self._error("list", prefix + "*", e) from e
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._call("delete", key, self._client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def url(self, key: str) -> str:
        full = self._key(key)
        if self.endpoint_url:
            return f"{self.endpoint_url.rstrip('/')}/{self.bucket}/{quote(full)}"
        return f"s3://{self.bucket}/{full}"

    def local_path(self, key: str) -> Path | None:
        return None


def open_store(uri: str, *, endpoint_url: str | None = None) -> Store:
    """A store from a URI: 's3://bucket/prefix', 'file:///abs/path', or a plain path (created if missing)."""
    if not uri:
        raise StoreError("empty store URI: give a folder path, file:///abs/path or s3://bucket/prefix")
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"store URI {uri!r} has no bucket: write it as s3://BUCKET/optional/prefix")
        return S3Store(parsed.netloc, parsed.path.lstrip("/"), endpoint_url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StoreError(f"store URI {uri!r} names a host; a file URI must be file:///absolute/path")
        return LocalStore(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # len 1: a Windows drive letter, treat as a path
        raise StoreError(
            f"unsupported store URI scheme {parsed.scheme!r} in {uri!r}: "
            "use a folder path, file:///abs/path or s3://bucket/prefix"
        )
    return LocalStore(uri)
