"""Start `airflow standalone` on this repo's DAGs: `python -m runtime_facts.airflow_standalone`.

Airflow's home is `<repo>/airflow-home` (override with `AIRFLOW_HOME`), its DAGs folder the
repo's `dags/`, the metadata DB SQLite, examples off; the runtime-facts home defaults to
`<repo>/var`. The UI listens on http://localhost:8080; the admin password is printed on start
and kept in `<airflow-home>/simple_auth_manager_passwords.json.generated`.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from runtime_facts.demo_airflow import REPO, airflow_env


def standalone_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment `airflow standalone` is started with."""
    env = dict(os.environ if environ is None else environ)
    airflow_home = env.get("AIRFLOW_HOME") or str(REPO / "airflow-home")
    env.update(airflow_env(airflow_home))
    env.setdefault("RUNTIME_FACTS_HOME", str(REPO / "var"))
    return env


def main() -> None:
    """Replace this process with `airflow standalone` in the repo's environment."""
    env = standalone_env()
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow = shutil.which("airflow", path=str(Path(sys.executable).parent)) or shutil.which(
        "airflow"
    )
    if airflow is None:
        sys.exit("airflow is not installed in this environment: run `make setup` first")
    os.execve(airflow, [airflow, "standalone"], env)


if __name__ == "__main__":
    main()
