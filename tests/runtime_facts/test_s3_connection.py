"""S3 endpoint and credentials from an Airflow Connection (`s3.aws_conn_id`), the CLI's
`AWS_*` fallback, and the reason codes when the Connection cannot be had.

The Airflow cases run in a child process with its own `AIRFLOW_HOME`, as a worker's task
process would: the Connection is defined the way the distributed demo defines it, as an
`AIRFLOW_CONN_<ID>` variable in JSON form, and no `AWS_*` variable is set at all, so the only
way to reach the moto server is through the Connection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import boto3
import pytest

from runtime_facts.errors import Reason, UsageError
from runtime_facts.home import Home
from runtime_facts.stores import s3 as s3_store
from runtime_facts.stores.s3 import resolve_credentials, storage_options

AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")

CHILD = textwrap.dedent(
    """
    import gzip, json, sys
    from runtime_facts.config import Settings
    from runtime_facts.home import Home
    from runtime_facts.pipeline.ingest import ingest
    from runtime_facts.stores.s3 import resolve_credentials
    from runtime_facts.subject import SubjectContext

    home = Home(Settings.load(sys.argv[1]))
    lines = b'{"symbolId":"sym:a","hitCount":3}\\n{"symbolId":"sym:b","hitCount":4}\\n'
    ctx = SubjectContext("acme", "cg", scan_id="s")
    home.cas.put("runtime", gzip.compress(lines, mtime=0), ctx)
    summary = ingest(home)
    facts = home.lake.read("runtime_facts")
    print(json.dumps({
        "source": resolve_credentials().source,
        "accepted": summary.accepted,
        "hits": int(facts.get_column("hit_count").sum()),
    }))
    """
)


def _child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow-home"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path / 'airflow.db'}",
        RUNTIME_FACTS_LOCAL_DIR=str(tmp_path / "local"),
        **extra,
    )
    return env


def _connection_json(endpoint: str) -> str:
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "conn-key",
            "password": "conn-secret",
            "extra": {"endpoint_url": endpoint, "region_name": "eu-west-1"},
        }
    )


def _bucket(endpoint: str) -> str:
    name = f"rf-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
    ).create_bucket(Bucket=name)
    return name


def test_an_airflow_connection_supplies_endpoint_and_credentials(
    s3_endpoint: str, tmp_path: Path
) -> None:
    bucket = _bucket(s3_endpoint)
    env = _child_env(
        tmp_path,
        AIRFLOW_CONN_RF_OBJECTS=_connection_json(s3_endpoint),
        RUNTIME_FACTS__S3__AWS_CONN_ID="rf_objects",
    )
    out = subprocess.run(
        [sys.executable, "-c", CHILD, f"s3://{bucket}/prod"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"source": "connection:rf_objects", "accepted": 1, "hits": 7}
    # The batch and the lake really are in that bucket of the moto server.
    listed = boto3.client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id="x", aws_secret_access_key="x"
    ).list_objects_v2(Bucket=bucket, Prefix="prod/lake/runtime_facts/_delta_log/")
    assert listed.get("KeyCount", 0) > 0


def test_an_undefined_connection_is_named_with_its_reason_code(tmp_path: Path) -> None:
    env = _child_env(tmp_path, RUNTIME_FACTS__S3__AWS_CONN_ID="rf_undefined")
    code = "from runtime_facts.stores.s3 import resolve_credentials; resolve_credentials()"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode != 0
    assert f"[{Reason.AWS_CONNECTION_NOT_FOUND.value}]" in out.stderr
    assert "'rf_undefined'" in out.stderr


def test_connection_fields_map_to_the_object_store_options(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    creds = s3_store.S3Credentials(
        endpoint_url=s3_endpoint,
        access_key_id="k",
        secret_access_key="s3cr3t-value",
        session_token=None,
        region="eu-west-1",
        source="connection:x",
    )
    assert storage_options(creds) == {
        "conditional_put": "etag",
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
        "AWS_REGION": "eu-west-1",
        "AWS_ALLOW_HTTP": "true",
    }
    assert "s3cr3t-value" not in repr(creds)


def test_the_cli_keeps_the_aws_variables(s3_home: Home) -> None:
    creds = resolve_credentials()
    assert creds.source == "environment"
    assert creds.access_key_id == "test"
    assert storage_options()["AWS_ENDPOINT_URL"] == os.environ["AWS_ENDPOINT_URL"]


def test_a_connection_id_without_airflow_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "airflow.sdk", None)  # as if Airflow were not installed
    with pytest.raises(UsageError) as info:
        resolve_credentials("rf_objects")
    assert info.value.reason == Reason.AWS_CONNECTION_UNAVAILABLE
    assert "RUNTIME_FACTS__S3__AWS_CONN_ID" in info.value.hint
