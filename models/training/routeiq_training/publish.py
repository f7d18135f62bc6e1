"""`publish`: uploads an artifact to S3, `manifest.json` last, and optionally registers
(and activates) the version with the control plane through the admin API.

Data planes poll the manifest's ETag, so a new manifest must only appear once every file
it lists is in place. The files are checked against the manifest's hashes first. A
registered version is pinned by the manifest's SHA-256: activating it makes every data
plane load exactly these bytes.
"""

import hashlib
import json
import urllib.request
from pathlib import Path

from . import artifact


def key(prefix: str, name: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def run(artifact_dir: Path, bucket: str, prefix: str, endpoint_url: str | None = None,
        client=None) -> list[str]:
    """Uploads; returns the keys in upload order."""
    manifest_bytes = (Path(artifact_dir) / artifact.MANIFEST).read_bytes()
    router = artifact.load(artifact_dir)  # refuses a missing or altered file
    if client is None:
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint_url)
    uploaded = []
    for name in sorted(router.manifest["files"]):
        data = (Path(artifact_dir) / name).read_bytes()
        client.put_object(Bucket=bucket, Key=key(prefix, name), Body=data)
        uploaded.append(key(prefix, name))
    client.put_object(Bucket=bucket, Key=key(prefix, artifact.MANIFEST), Body=manifest_bytes,
                      ContentType="application/json")
    uploaded.append(key(prefix, artifact.MANIFEST))
    return uploaded


def register(artifact_dir: Path, artifact_uri: str, admin_url: str, admin_key: str,
             activate: bool = False) -> dict:
    """Registers the uploaded version (`POST /routing_model/new`); returns the admin API's
    answer (with `id`, and `active` when activated)."""
    manifest_bytes = (Path(artifact_dir) / artifact.MANIFEST).read_bytes()
    manifest = json.loads(manifest_bytes)
    body = {
        "strategy": manifest["strategy"],
        "artifact_uri": artifact_uri,
        "sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "metrics": manifest.get("metrics") or {},
        "activate": activate,
    }
    req = urllib.request.Request(
        admin_url.rstrip("/") + "/routing_model/new", data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {admin_key}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise SystemExit(f"registering with {admin_url} failed: {e.code} {e.read().decode()}")
