"""publish uploads every listed file, then the manifest, and refuses a damaged artifact."""

import json

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
    train.run(*fixture_paths, tmp_path, ["knn"], "hashed-ngram", 64, seed=0)
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
