"""A real Prefect server on loopback, `scarmon serve` registering one deployment per site on its cron schedule,
and a scheduled run happening with nobody triggering it."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from scarmon.demo.synthetic import demo_site, generate_catalog
from scarmon.store.backends import LocalStore

BIN = Path(sys.executable).parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_scheduled_run_happens_on_a_real_server(tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_RUNNER_POLL_FREQUENCY": "5",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
    }
    site = demo_site("creep-failure")
    items = generate_catalog(tmp_path / "catalog", site, scenario="creep-failure", start="2021-06-01", end="2021-06-12")
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "tick.yaml").write_text(
        yaml.safe_dump(
            json.loads(json.dumps({**site, "id": "tick", "schedule": "* * * * *"}, default=str)), sort_keys=False
        )
    )
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    serve = None
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{api}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "prefect server did not start"
            time.sleep(1)
        store = tmp_path / "store"
        log = open(tmp_path / "serve.log", "wb")
        serve = subprocess.Popen(
            [str(BIN / "scarmon"), "serve", "--sites", str(sites), "--store", str(store), "--catalog", str(items)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        done = []
        while not done:
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(3)
            runs = requests.post(
                f"{api}/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}, timeout=10
            ).json()
            done = [r for r in runs if r.get("deployment_id")]
        deps = requests.post(f"{api}/deployments/filter", json={}, timeout=10).json()
        [dep] = [d for d in deps if d["id"] == done[0]["deployment_id"]]
        assert dep["name"] == "tick" and dep["schedules"][0]["schedule"]["cron"] == "* * * * *"
        assert LocalStore(store).exists("tick/series.json") and LocalStore(store).exists("tick/status.json")
    finally:
        if serve is not None:
            stop(serve)
        stop(server)
