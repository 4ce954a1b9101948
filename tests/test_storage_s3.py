"""The run directory on an object store: a real S3 API (moto's server) on 127.0.0.1, started here.

The clean stage writes its data outputs, stats and done markers to ``s3://...``; object stores have
no folder rename, so the folder swap is checked object by object with boto3, independently of the
pyarrow code that wrote them.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import cli, storage
from pipelines.config import ConfigError
from pipelines.run_dir import RunDir, clear_done, is_done, mark_done

BUCKET = "raychat"


@dataclass
class S3:
    endpoint: str
    client: Any

    def uri(self, key: str, bucket: str = BUCKET) -> str:
        """``s3://`` with credentials and endpoint in the URI, so Ray's workers need no environment."""
        return f"s3://testing:testing@{bucket}/{key}?endpoint_override={self.endpoint}&scheme=http&region=us-east-1"

    def keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def files(self, prefix: str) -> list[str]:
        return [k for k in self.keys(prefix) if not k.endswith("/")]  # not the folder markers

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def s3():
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")
    boto3 = pytest.importorskip("boto3")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    try:
        yield S3(endpoint, client)
    finally:
        server.stop()


def test_storage_helpers_keep_the_endpoint_and_swap_folders_object_by_object(s3):
    base = s3.uri("helpers")
    path = storage.join(base, "a b", "x.json")
    assert path.endswith("?endpoint_override=" + s3.endpoint + "&scheme=http&region=us-east-1")
    storage.write_json(path, {"n": 1})
    assert storage.read_json(path) == {"n": 1} and s3.files("helpers/") == ["helpers/a b/x.json"]
    assert storage.read_json(storage.join(base, "nope.json"), "default") == "default"
    assert [storage.read_json(p) for p in storage.list_files(base, ".json")] == [{"n": 1}]

    old, new = storage.join(base, "out"), storage.join(base, "staging")
    for name in ("part-old.parquet", "language=de/old.parquet"):
        storage.write_parquet(pa.table({"v": [0]}), storage.join(old, name))
    for name in ("part-new.parquet", "language=en/new.parquet", "language=fr/new.parquet"):
        storage.write_parquet(pa.table({"v": [1, 2]}), storage.join(new, name))
    storage.replace_dir(new, old)
    assert s3.files("helpers/out/") == [
        "helpers/out/language=en/new.parquet",
        "helpers/out/language=fr/new.parquet",
        "helpers/out/part-new.parquet",
    ]
    assert s3.keys("helpers/staging") == []
    assert pq.read_table(io.BytesIO(s3.get("helpers/out/part-new.parquet"))).column("v").to_pylist() == [1, 2]

    storage.makedirs(storage.join(base, "empty-staging"))  # an output without files
    storage.replace_dir(storage.join(base, "empty-staging"), storage.join(base, "empty"))
    assert storage.exists(storage.join(base, "empty"))


def test_run_dir_markers_on_s3_and_a_clear_error_for_stages_that_need_a_mounted_path(s3):
    run = RunDir(s3.uri("markers"))
    assert not is_done(run, "clean")
    mark_done(run, "clean", {"seconds": 1.0})
    assert is_done(run, "clean") and json.loads(s3.get("markers/metrics/clean.done.json"))["seconds"] == 1.0
    clear_done(run, "clean")
    assert not is_done(run, "clean")
    with pytest.raises(ConfigError, match="needs a mounted"):
        run.tokens  # noqa: B018 - the property raises


def test_unwritable_store_is_refused_before_ray(s3, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "init_ray", lambda _cfg: pytest.fail("Ray was started"))
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    code = cli.main(
        ["clean", "--input", str(tmp_path / "in.jsonl"), "--output", s3.uri("run", "no-such-bucket")]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("raychat:")]
    assert code == 2 and len(err) == 1 and "cannot write the run directory" in err[0]


TEXT = (
    "The city council met on Tuesday evening to discuss the plans for the new public library. Everyone "
    "who spoke agreed that the building should open before the end of the year."
)


def write_inputs(folder: Path, n: int) -> None:
    folder.mkdir(exist_ok=True)
    for name in ("a", "b"):
        rows = [
            {"id": f"{name}{i}", "text": f"{TEXT} {name} {i}", "url": f"https://x.example/{name}{i}"}
            for i in range(n)
        ]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow
def test_clean_writes_its_outputs_stats_and_markers_to_s3(s3, tmp_path, ray_session, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a run dir misread as a local path would show up here as "s3:"
    write_inputs(tmp_path / "in", 3)
    run = s3.uri("run")
    args = ["clean", "--input", str(tmp_path / "in"), "--output", run, "--steps", "language,pii"]
    assert cli.main(args) == 0
    files = s3.files("run/")
    clean_files = [k for k in files if k.startswith("run/data/clean/")]
    assert clean_files and all(k.startswith("run/data/clean/language=en/") for k in clean_files)
    rows = [r for k in clean_files for r in pq.read_table(io.BytesIO(s3.get(k))).to_pylist()]
    assert sorted(r["id"] for r in rows) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    assert {r["language"] for r in rows} == {"en"}  # the column is inside the files
    stats = json.loads(s3.get("run/data/stats.json"))
    assert stats["counts_add_up"] and stats["clean"] == 6 and stats["languages"] == {"en": 6}
    assert "run/metrics/clean.done.json" in files and "clean" in json.loads(
        s3.get("run/metrics/summary.json")
    )
    assert len([k for k in files if k.startswith("run/data/_work/") and k.endswith("/done.json")]) == 2
    assert not any("_staging" in k or "write-probe" in k or k.endswith(".tmp") for k in files)
    assert not (tmp_path / "s3:").exists()

    # again, with one input grown: the swap replaces every old object, and pass 1 resumes the other
    (tmp_path / "in" / "b.jsonl").write_text(
        "".join(json.dumps({"id": f"b{i}", "text": f"{TEXT} again {i}"}) + "\n" for i in range(5))
    )
    work_a = [k for k in files if k.startswith("run/data/_work/") and k.endswith("kept.parquet")]
    before = {k: s3.client.head_object(Bucket=BUCKET, Key=k)["LastModified"] for k in work_a}
    assert cli.main(args) == 0
    after = s3.files("run/data/clean/")
    assert not set(after) & set(clean_files)  # none of the old files is left beside the new ones
    rows = [r for k in after for r in pq.read_table(io.BytesIO(s3.get(k))).to_pylist()]
    assert sorted(r["id"] for r in rows) == ["a0", "a1", "a2", "b0", "b1", "b2", "b3", "b4"]
    unchanged = [
        k for k, t in before.items() if s3.client.head_object(Bucket=BUCKET, Key=k)["LastModified"] == t
    ]
    assert len(unchanged) == 1  # a.jsonl's pass-1 result was reused
    assert json.loads(s3.get("run/data/stats.json"))["clean"] == 8
