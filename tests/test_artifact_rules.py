"""The artifact store's small rules in process, with stand-ins for boto3's client: the probe
written and removed, the environment a client is made for, an S3 error in one line, the
reason a store that stays away is given up with. Each was a surviving mutant."""

from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError

from cnnsearch import artifacts
from cnnsearch.artifacts import ArtifactsLost, describe, download, wait_for_store
from cnnsearch.errors import FailingTrials, RecipeError


def test_an_s3_error_is_its_code_and_message():
    def error(**fields):
        return ClientError({"Error": fields}, "PutObject")

    assert describe(error(Code="NoSuchBucket", Message="gone")) == "NoSuchBucket: gone"
    assert describe(error(Message="gone")) == "?: gone"
    assert describe(error(Code="AccessDenied")) == "AccessDenied"
    assert describe(OSError(2, "No such file", "/x")) == "/x: No such file"


def test_a_client_is_made_for_the_s3_endpoint_it_is_given(monkeypatch):
    made = []
    monkeypatch.setattr(artifacts, "_make_client", lambda env: made.append(env) or "client")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    assert artifacts._client() == "client"
    assert "http://127.0.0.1:9000" in made[0]


class FakeS3:
    def __init__(self):
        self.calls = []
        self.meta = SimpleNamespace(endpoint_url="http://127.0.0.1:9000")

    def upload_fileobj(self, fileobj, bucket, key):
        self.calls.append(("put", fileobj.read(), bucket, key))

    def delete_object(self, **kwargs):
        self.calls.append(("delete", kwargs))


def test_the_probe_is_written_under_the_prefix_and_removed(monkeypatch):
    client = FakeS3()
    monkeypatch.setattr(artifacts, "_client", lambda: client)
    artifacts.check_writable("s3://bucket/runs/a", create=False)
    (put, body, bucket, key), (delete, removed) = client.calls
    assert (put, body, bucket, delete) == ("put", b"probe", "bucket", "delete")
    assert key.startswith("runs/a/.cnnsearch-probe-") and removed == {"Bucket": "bucket", "Key": key}


def test_a_store_given_up_on_is_named_with_its_last_reason(monkeypatch):
    location = "s3://bucket/p"

    def refused(where, *, create):
        raise RecipeError(f"artifacts: {where}: bucket 'bucket' does not exist")

    monkeypatch.setattr(artifacts, "ARTIFACTS_RETRY_S", 0.0)
    monkeypatch.setattr(artifacts.time, "sleep", lambda s: None)
    monkeypatch.setattr(artifacts, "check_writable", refused)
    with pytest.raises(FailingTrials) as err:
        wait_for_store(location, ArtifactsLost(location, "first"))
    assert "(bucket 'bucket' does not exist); every finished trial" in str(err.value)


def test_downloading_over_an_existing_file_is_not_called_a_store_failure(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "w.safetensors").write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        download(str(tmp_path / "store"), "some-id", tmp_path / "w.safetensors")
    assert (tmp_path / "w.safetensors").read_bytes() == b"mine"


def test_a_missing_artifacts_folder_is_made_with_its_parents(tmp_path):
    folder = tmp_path / "a" / "b" / "weights"
    artifacts.check_writable(str(folder), create=True)
    assert folder.is_dir() and not list(folder.iterdir())  # the probe is gone
    with pytest.raises(RecipeError, match="does not exist on this machine"):
        artifacts.check_writable(str(tmp_path / "elsewhere"), create=False)


def test_a_recipe_that_moves_a_study_s_object_store_is_refused_in_words():
    from cnnsearch.artifacts import settle
    from cnnsearch.errors import RecipeError

    with pytest.raises(RecipeError) as caught:
        settle("s3://old/w", "s3://new/w")
    assert str(caught.value) == ("artifacts: the recipe says s3://new/w, but the study keeps its weights in s3://old/w "
                                 "(recorded when it was made); use that, or give the study a new name")
    assert settle("s3://old/w", "studies/tiny_artifacts") == "s3://old/w"  # a local folder follows the study


def test_a_location_is_a_folder_made_absolute_or_a_plain_s3_url(tmp_path, monkeypatch):
    from cnnsearch.artifacts import parse_location

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert parse_location("", tmp_path) == ""  # none given: the default, decided later
    assert parse_location("w", tmp_path) == str(tmp_path / "w")
    assert parse_location("~/w", tmp_path / "elsewhere") == str(tmp_path / "home" / "w")
    assert parse_location("s3://my-bucket", tmp_path) == "s3://my-bucket"
    assert parse_location("s3://my-bucket/", tmp_path) == "s3://my-bucket"
    assert parse_location("s3://my.bucket/runs/a/", tmp_path) == "s3://my.bucket/runs/a"
    for bad, why in (("gs://b/x", "gs:// is not supported"), ("S3://b/x", "S3:// is not supported"),
                     ("s3://Not_A_Bucket/x", "'Not_A_Bucket' is not a bucket name"),
                     ("s3://ab/x", "'ab' is not a bucket name"), ("s3://a..b/x", "'a..b' is not a bucket name"),
                     ("s3://b-1/x//y", "the prefix must be plain path segments"),
                     ("s3://b-1/x/../y", "the prefix must be plain path segments"),
                     ("s3://b-1/./y", "the prefix must be plain path segments")):
        with pytest.raises(RecipeError, match="^artifacts: ") as raised:
            parse_location(bad, tmp_path)
        assert f"{bad!r}: " in str(raised.value) and why in str(raised.value), bad
