"""`snapshot-agent url NAME`: a short-lived download URL for an archive in object storage.

NAME is the archive's name as `run` printed it (`snapshot-YYYYMMDD-HHMMSS`, with or
without `.zip` / `.zip.enc`); it is looked up under this node's prefix,
`{prefix}/{deployment_id}/{node_id}/`, and the URL printed expires after
`storage.s3.presign_ttl_s` (or the given ttl).
"""

from __future__ import annotations

import re
from typing import Any, TextIO

from snapshot_agent.config import Config
from snapshot_agent.errors import UsageError
from snapshot_agent.storage.presign import presigned_get_url
from snapshot_agent.storage.s3 import explain, node_prefix, s3_client

#: The suffixes an archive is stored under, tried in this order when NAME has none.
SUFFIXES = (".zip", ".zip.enc")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


def print_archive_url(
    config: Config, name: str, out: TextIO, *, ttl_s: int | None = None, client: Any = None
) -> int:
    """Print the presigned URL of archive `name` on `out`; exit code 0 (UsageError if none)."""
    print(archive_url(config, name, ttl_s=ttl_s, client=client), file=out, flush=True)
    return 0


def archive_url(config: Config, name: str, *, ttl_s: int | None = None, client: Any = None) -> str:
    """The presigned GET URL of archive `name` under this node's prefix."""
    settings = config.storage.s3
    if settings is None:
        raise UsageError(
            "url: no storage.s3 in the config; presigned URLs are for archives in object "
            "storage (set storage.s3.bucket), a local archive is a file under --output"
        )
    if not NAME.fullmatch(name) or ".." in name:
        raise UsageError(
            f"url: {name!r} is not an archive name; give the name `run` printed, "
            "e.g. snapshot-20260101-120000"
        )
    client = client or s3_client(settings)
    prefix = node_prefix(settings, config.node.deployment_id, config.node.node_id)
    candidates = [name] if name.endswith(SUFFIXES) else [name + s for s in SUFFIXES]
    for filename in candidates:
        if _exists(client, config, prefix + filename):
            return presigned_get_url(settings, prefix + filename, ttl_s=ttl_s, client=client)
    raise UsageError(
        f"url: no archive {name} in s3://{settings.bucket}/{prefix} (or no permission to "
        "read it); check the name `run` printed, and node.deployment_id and node.node_id"
    )


def _exists(client: Any, config: Config, key: str) -> bool:
    """Whether `key` is there: a 404 (or a 403, which S3 gives without s3:ListBucket) is not."""
    from botocore.exceptions import ClientError

    assert config.storage.s3 is not None
    try:
        client.head_object(Bucket=config.storage.s3.bucket, Key=key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "403", "NotFound"):
            return False
        raise UsageError(explain(exc, config.storage.s3, f"looking for {key}")) from None
    except Exception as exc:
        raise UsageError(explain(exc, config.storage.s3, f"looking for {key}")) from None
    return True
