"""publish uploads every listed file, then the manifest, and refuses a damaged artifact."""


import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from routeiq_training import artifact, publish, train


class RecordingS3:
    """Stands in for boto3's S3 client: records put_object calls."""

    def __init__(self):
        self.puts = []

    def put_object(self, Bucket, Key, Body, **kwargs):
        self.puts.append((Bucket, Key, bytes(Body)))


@pytest.fixture
def knn_artifact(fixture_paths, tmp_path):
    train.run(*fixture_paths, tmp_path, ["knn"], "hashed-ngram", 64, seed=0,
              calibration_folds=0)
    return tmp_path / "knn"


def test_manifest_goes_last_under_the_prefix(knn_artifact):
    s3 = RecordingS3()
    keys = publish.run(knn_artifact, "models", "/routers/prod/", client=s3)
    assert keys == ["routers/prod/knn.f32", "routers/prod/params.json",
                    "routers/prod/manifest.json"]
    assert [k for _, k, _ in s3.puts] == keys and {b for b, _, _ in s3.puts} == {"models"}
    assert s3.puts[-1][2] == (knn_artifact / "manifest.json").read_bytes()
    assert s3.puts[0][2] == (knn_artifact / "knn.f32").read_bytes()


def test_a_damaged_artifact_is_not_uploaded(knn_artifact):
    (knn_artifact / "knn.f32").write_bytes(b"\0" * 16)
    s3 = RecordingS3()
    with pytest.raises(artifact.InvalidArtifact):
        publish.run(knn_artifact, "models", "p", client=s3)
    assert s3.puts == []


def _s3s_fs() -> Path | None:
    path = os.environ.get("ROUTEIQ_S3S_FS") or str(
        Path(os.environ.get("ROUTEIQ_CACHE", Path.home() / ".cache" / "routeiq")) / "bin" / "s3s-fs")
    return Path(path) if Path(path).is_file() else None


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    binary = _s3s_fs()
    if binary is None:
        pytest.skip("s3s-fs is not installed (scripts/test.sh installs it)")
    root = tmp_path / "s3"
    (root / "models").mkdir(parents=True)  # the bucket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(binary), "--host", "127.0.0.1", "--port", str(port),
                             "--access-key", "test", "--secret-key", "testsecret", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "testsecret",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def test_upload_to_a_real_s3_server(knn_artifact, s3_server):
    import boto3

    keys = publish.run(knn_artifact, "models", "routers/knn", endpoint_url=s3_server)
    s3 = boto3.client("s3", endpoint_url=s3_server)
    for key in keys:
        name = key.rsplit("/", 1)[1]
        body = s3.get_object(Bucket="models", Key=key)["Body"].read()
        assert body == (knn_artifact / name).read_bytes()
    listed = s3.list_objects_v2(Bucket="models", Prefix="routers/knn/")["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(keys)
