"""The built wheel installs with `[airflow]` into a fresh environment and loads the DAGs.

What an operator with an existing Airflow does: build (here: `uv build --wheel` from this
source tree, offline), `pip install "runtime-facts[airflow]"` into an environment that has
never seen the repo (`uv venv` + `uv pip install` from the package index, served from uv's
cache where it can, pinned to the lock's versions), and point a DAG folder at the package.
The folder's single file is `from runtime_facts.airflow.dags import *` where the package
builds the DAGs, else a copy of the repo's `dags/` files. `DagBag` runs in that
environment, outside the repo.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_IDS = {
    "runtime_facts_ingest",
    "runtime_facts_airgap_backfill",
    "reachability_recompute",
    "runtime_facts_retention",
}
PACKAGE_DAGS = REPO / "runtime_facts" / "airflow" / "dags.py"

LOAD_DAGS = textwrap.dedent(
    """
    import json, sys
    import runtime_facts
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=sys.argv[1])
    print(json.dumps({
        "import_errors": {str(k): str(v)[-500:] for k, v in bag.import_errors.items()},
        "dag_ids": sorted(bag.dag_ids),
        "package": runtime_facts.__file__,
        "version": runtime_facts.__version__,
    }))
    """
)


def _uv() -> str:
    found = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    assert Path(found).exists(), "uv not found: `make setup` installs it"
    return found


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, f"{' '.join(args[:3])} failed:\n{out.stderr[-3000:]}"
    return out.stdout


def _dag_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    if PACKAGE_DAGS.exists():
        (folder / "runtime_facts_dags.py").write_text("from runtime_facts.airflow.dags import *\n")
    else:
        for dag_file in sorted((REPO / "dags").glob("*.py")):
            shutil.copy(dag_file, folder / dag_file.name)
    return folder


@pytest.mark.slow
def test_wheel_installs_with_the_airflow_extra_and_loads_the_four_dags(tmp_path: Path) -> None:
    uv = _uv()
    dist = tmp_path / "dist"
    _run([uv, "build", "--wheel", "--offline", "--out-dir", str(dist), str(REPO)], REPO)
    (wheel,) = dist.glob("runtime_facts-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert {"runtime_facts/py.typed", "transforms/py.typed", "runtime_facts/cli/main.py"} <= names
    if PACKAGE_DAGS.exists():
        assert "runtime_facts/airflow/dags.py" in names
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert not any("==" in r for r in core), core  # ranges, not pins
    assert not any(r.split()[1].startswith(("apache-airflow", "boto3", "fastapi")) for r in core)
    for extra in ("airflow", "s3", "serve", "celery"):
        assert f"Provides-Extra: {extra}" in metadata

    constraints = tmp_path / "constraints.txt"
    export = [uv, "export", "--frozen", "--no-hashes", "--no-dev", "--no-emit-project"]
    _run([*export, "--extra", "airflow", "-o", str(constraints)], REPO)
    venv = tmp_path / "venv"
    _run([uv, "venv", "--offline", "--python", sys.executable, str(venv)], tmp_path)
    python = venv / "bin" / "python"
    install = [uv, "pip", "install", "--python", str(python), "-c", str(constraints)]
    _run([*install, f"{wheel}[airflow]"], tmp_path)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow-home"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path / 'airflow.db'}",
        AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="120",
    )
    folder = _dag_folder(tmp_path)
    out = _run([str(python), "-c", LOAD_DAGS, str(folder)], tmp_path, env)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["import_errors"] == {}
    assert set(result["dag_ids"]) == DAG_IDS
    assert Path(result["package"]).is_relative_to(venv), "loaded the repo, not the wheel"
    assert (
        result["version"]
        == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    )
    # The console script of the core install runs too.
    _run([str(venv / "bin" / "runtime-facts"), "--help"], tmp_path, env)
