"""`publish`: uploads an artifact to S3, `manifest.json` last.

Data planes poll the manifest's ETag, so a new manifest must only appear once every file
it lists is in place. The files are checked against the manifest's hashes first.
"""

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
