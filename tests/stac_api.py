"""A real STAC API on 127.0.0.1 for tests and benchmarks.

stac-fastapi-pgstac (served by uvicorn in a subprocess) on pgstac, in a throwaway PostgreSQL + PostGIS
cluster that lives in a temporary directory. scarmon's discovery code talks to it with pystac-client
exactly as it talks to Microsoft Planetary Computer::

    with start_stac_api(tmp_path) as api:
        api.load_collection(collection_dict)     # the collection must exist before its items
        api.load_items([item_dict, ...])         # upsert
        pystac_client.Client.open(api.url).search(...)

Nothing here needs the network. When running as root, initdb / pg_ctl run as the ``postgres`` OS user
(PostgreSQL refuses to run as root); otherwise they run as the current user.

Processes are cleaned up by ``stop()`` (also called by ``__exit__``, by an ``atexit`` hook, and by a small
watchdog process that notices when this Python process dies without cleaning up, e.g. ``os._exit``).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_QUERYABLES",
    "INSTALL_HINT",
    "PostgresNotInstalled",
    "StacApi",
    "StacApiError",
    "find_postgres_bindir",
    "start_stac_api",
]

INSTALL_HINT = (
    "install PostgreSQL 15 + PostGIS: `sudo .ci/install-system-packages.sh` "
    "(= apt-get install -y postgresql postgresql-15-postgis-3), "
    "or set SCARMON_PG_BINDIR to the directory holding initdb/pg_ctl/postgres"
)

_START_TIMEOUT_S = 60.0

# Queryables registered for every collection at start, as Planetary Computer's pgstac has them. Without a
# typed queryable pgstac sorts a property as TEXT: sortby eo:cloud_cover gives 66.84, 7.5, 12.5 (query/filter
# comparisons with a number literal are numeric either way). They also show up in GET /queryables.
DEFAULT_QUERYABLES: dict = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "eo:cloud_cover": {"title": "Cloud cover", "type": "number", "minimum": 0, "maximum": 100},
        "proj:epsg": {"title": "EPSG code", "type": "integer"},
        "s2:mgrs_tile": {"title": "MGRS tile", "type": "string"},
        "s2:processing_baseline": {"title": "Processing baseline", "type": "string"},
        "platform": {"title": "Platform", "type": "string"},
        "constellation": {"title": "Constellation", "type": "string"},
        "sat:relative_orbit": {"title": "Relative orbit", "type": "integer"},
    },
}


class StacApiError(RuntimeError):
    """The STAC API (PostgreSQL, pgstac or uvicorn) could not be started or used."""


class PostgresNotInstalled(StacApiError):
    """No PostgreSQL server binaries (or no PostGIS for them) on this machine."""


# --------------------------------------------------------------------------------------------------
# Finding PostgreSQL


def _version_key(path: Path) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", path.parent.name)) or (0,)


def _candidate_bindirs() -> list[Path]:
    cands: list[Path] = []
    env = os.environ.get("SCARMON_PG_BINDIR")
    if env:
        cands.append(Path(env))
    for pg_config in (shutil.which("pg_config"), "/usr/bin/pg_config"):
        if pg_config and os.access(pg_config, os.X_OK):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
                ).stdout.strip()
                if out:
                    cands.append(Path(out))
    # Debian/Ubuntu (newest first), RHEL/PGDG, source builds
    cands += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    cands += sorted(Path("/usr").glob("pgsql-*/bin"), key=_version_key, reverse=True)
    cands.append(Path("/usr/local/pgsql/bin"))
    for tool in ("initdb", "pg_ctl"):
        found = shutil.which(tool)
        if found:
            cands.append(Path(found).resolve().parent)
    seen: set[Path] = set()
    out: list[Path] = []
    for c in cands:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


def _has_server(bindir: Path) -> bool:
    return all((bindir / b).is_file() and os.access(bindir / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres"))


def _has_postgis(bindir: Path) -> bool | None:
    """True/False when it can be told from pg_config in that bindir, None when unknown."""
    pg_config = bindir / "pg_config"
    if not pg_config.is_file():
        return None
    try:
        share = subprocess.run(
            [str(pg_config), "--sharedir"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (Path(share) / "extension" / "postgis.control").is_file()


def find_postgres_bindir() -> Path:
    """Directory with initdb, pg_ctl and postgres (of a version that has PostGIS).

    Order: $SCARMON_PG_BINDIR, ``pg_config --bindir``, /usr/lib/postgresql/*/bin (newest first),
    /usr/pgsql-*/bin, /usr/local/pgsql/bin, PATH. Raises PostgresNotInstalled.
    """
    servers = [c for c in _candidate_bindirs() if _has_server(c)]
    if not servers:
        raise PostgresNotInstalled(f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; {INSTALL_HINT}")
    for c in servers:
        if _has_postgis(c) is not False:
            return c
    raise PostgresNotInstalled(
        f"PostgreSQL found in {', '.join(map(str, servers))} but PostGIS is not installed for it; {INSTALL_HINT}"
    )


# --------------------------------------------------------------------------------------------------
# Helpers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 60) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(lines[-n:])


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _as_pg_user(cmd: list[str]) -> list[str]:
    """Prefix ``cmd`` so that it runs as the ``postgres`` OS user when we are root."""
    if not _is_root():
        return cmd
    runuser = shutil.which("runuser") or ("/usr/sbin/runuser" if Path("/usr/sbin/runuser").exists() else None)
    if runuser:
        return [runuser, "-u", "postgres", "--", *cmd]
    su = shutil.which("su") or "/bin/su"
    return [su, "-s", "/bin/sh", "postgres", "-c", "exec " + shlex.join(cmd)]


def _chown_to_postgres(path: Path) -> None:
    import pwd

    try:
        pw = pwd.getpwnam("postgres")
    except KeyError as e:
        raise StacApiError(
            "running as root but there is no `postgres` OS user to run PostgreSQL as "
            f"(PostgreSQL refuses to run as root); {INSTALL_HINT}"
        ) from e
    os.chown(path, pw.pw_uid, pw.pw_gid)


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# Runs in a separate process: waits until its stdin closes. A line "exit" means "stopped cleanly, go away";
# EOF without it means the parent died without cleaning up, so stop uvicorn and PostgreSQL and remove the dir.
_WATCHDOG = r"""
import json, os, shutil, signal, subprocess, sys, time
cfg = json.loads(sys.argv[1])
line = sys.stdin.readline()
if line.strip() == "exit":
    sys.exit(0)
pid = cfg.get("uvicorn_pid")
if pid:
    try:
        os.killpg(pid, signal.SIGTERM)
        time.sleep(1)
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
if cfg.get("pg_stop"):
    subprocess.run(cfg["pg_stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
if cfg.get("rmtree"):
    shutil.rmtree(cfg["rmtree"], ignore_errors=True)
"""


_RUNNING: set[StacApi] = set()
_RUNNING_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for api in running:
        with contextlib.suppress(Exception):
            api.stop()


# --------------------------------------------------------------------------------------------------
# The API


class StacApi:
    """A running STAC API (stac-fastapi-pgstac + pgstac + PostgreSQL/PostGIS) on 127.0.0.1.

    Attributes:
        url: root of the STAC API, e.g. ``http://127.0.0.1:PORT`` (give it to ``pystac_client.Client.open``).
        dsn: libpq DSN of the pgstac database (superuser ``postgres``, trust auth, 127.0.0.1 only).
        workdir: the caller's directory; ``stac-api.log`` (uvicorn) is written there.
        pg_dir: the cluster's own temporary directory (data, socket, ``postgres.log``); removed by ``stop()``.
        startup_seconds: how long ``start_stac_api`` took.
    """

    def __init__(self, workdir: Path, bindir: Path):
        self.workdir = Path(workdir)
        self.bindir = Path(bindir)
        self.url = ""
        self.dsn = ""
        self.pg_port = 0
        self.api_port = 0
        self.startup_seconds = float("nan")
        self.api_log = self.workdir / "stac-api.log"
        # Own temp dir (not under workdir): pytest's basetemp is mode 0700 and owned by root when tests run
        # as root, so the postgres user could not enter it; unix socket paths are also limited to ~100 chars.
        self.pg_dir = Path(tempfile.mkdtemp(prefix="scarmon-pg-"))
        self.pg_data = self.pg_dir / "data"
        self.pg_log = self.pg_dir / "postgres.log"
        self._pg_started = False
        self._uvicorn: subprocess.Popen | None = None
        self._uvicorn_logf = None
        self._watchdog: subprocess.Popen | None = None
        self._stopped = False
        with _RUNNING_LOCK:
            _RUNNING.add(self)

    # -- context manager ---------------------------------------------------------------------------
    def __enter__(self) -> StacApi:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"StacApi(url={self.url!r}, dsn={self.dsn!r})"

    # -- loading -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _pgstac(self):
        from pypgstac.db import PgstacDB

        db = PgstacDB(dsn=self.dsn)
        try:
            yield db
        finally:
            pool = db.pool
            db.disconnect()  # returns the connection to the pool but does not close the pool
            if pool is not None:
                pool.close()

    def load_collection(self, collection: dict) -> None:
        """Upsert one STAC collection (must be loaded before its items)."""
        self.load_collections([collection])

    def load_collections(self, collections: Iterable[dict]) -> None:
        """Upsert STAC collections (``pypgstac load collections --method upsert``)."""
        from pypgstac.load import Loader, Methods

        with self._pgstac() as db:
            Loader(db=db).load_collections(iter(list(collections)), insert_mode=Methods.upsert)

    def load_queryables(self, queryables: dict, collection_ids: list[str] | None = None) -> None:
        """Upsert queryables (``pypgstac load_queryables``): a JSON-schema document with ``properties``.

        The property's ``type`` decides how pgstac compares and sorts it (number -> float, integer -> int,
        otherwise text). ``collection_ids=None`` applies to every collection (they must exist otherwise).
        """
        with self._pgstac() as db:
            db.connect().execute(
                "SELECT upsert_queryables(%s::jsonb, %s::text[], NULL, false)",
                [json.dumps(queryables), collection_ids],
            )

    def load_items(self, items: list[dict]) -> None:
        """Upsert STAC items (``pypgstac load items --method upsert``, as ndjson records).

        Every item needs ``collection`` naming an already loaded collection, and a ``properties.datetime``
        (or ``start_datetime`` + ``end_datetime`` with ``datetime: null``).
        """
        from pypgstac.load import Loader, Methods

        items = list(items)
        for it in items:
            if not it.get("collection"):
                raise ValueError(f"item {it.get('id')!r} has no 'collection' (pgstac needs one)")
        if not items:
            return
        # ndjson round trip, as the CLI would read it (also detaches the caller's dicts)
        records = [json.loads(json.dumps(it)) for it in items]
        with self._pgstac() as db:
            Loader(db=db).load_items(iter(records), insert_mode=Methods.upsert)

    # -- lifecycle ---------------------------------------------------------------------------------
    def _run(self, cmd: list[str], what: str, timeout: float = 120) -> subprocess.CompletedProcess:
        try:
            cp = subprocess.run(
                _as_pg_user(cmd),
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.pg_dir,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as e:
            raise StacApiError(f"{what} timed out after {timeout}s: {shlex.join(cmd)}\n{_tail(self.pg_log)}") from e
        if cp.returncode != 0:
            raise StacApiError(
                f"{what} failed (exit {cp.returncode}): {shlex.join(cmd)}\n{cp.stdout}\n{cp.stderr}\n"
                f"--- {self.pg_log} ---\n{_tail(self.pg_log)}"
            )
        return cp

    def _pg_stop_cmd(self, mode: str = "fast") -> list[str]:
        return _as_pg_user([str(self.bindir / "pg_ctl"), "-D", str(self.pg_data), "-m", mode, "-w", "-t", "30", "stop"])

    def _start_postgres(self) -> None:
        if _is_root():
            _chown_to_postgres(self.pg_dir)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.pg_data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        last_err: Exception | None = None
        for _ in range(3):
            self.pg_port = _free_port()
            opts = (
                f"-c listen_addresses=127.0.0.1 -p {self.pg_port} -k {self.pg_dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._run(
                    [
                        str(self.bindir / "pg_ctl"),
                        "-D",
                        str(self.pg_data),
                        "-l",
                        str(self.pg_log),
                        "-w",
                        "-t",
                        "60",
                        "-o",
                        opts,
                        "start",
                    ],
                    "pg_ctl start",
                )
            except StacApiError as e:  # port taken between _free_port() and bind: try another
                last_err = e
                if "in use" in str(e) or "could not bind" in str(e) or "could not create any TCP" in str(e):
                    continue
                raise
            self._pg_started = True
            self.dsn = f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"
            return
        raise StacApiError(f"PostgreSQL could not bind a free port: {last_err}")

    def _migrate(self) -> None:
        from pypgstac.migrate import Migrate

        try:
            with self._pgstac() as db:
                Migrate(db).run_migration()
                db.connect().execute(
                    "SELECT upsert_queryables(%s::jsonb, NULL, NULL, false)", [json.dumps(DEFAULT_QUERYABLES)]
                )
        except Exception as e:
            raise StacApiError(
                f"pypgstac migrate (or default queryables) failed on {self.dsn}: {e}\n{_tail(self.pg_log)}"
            ) from e

    def _uvicorn_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            # stac_fastapi.pgstac.config.PostgresSettings
            PGUSER="postgres",
            PGPASSWORD="postgres",  # ignored: trust auth; the setting is required
            PGHOST="127.0.0.1",
            PGPORT=str(self.pg_port),
            PGDATABASE="postgres",
            DB_MIN_CONN_SIZE="1",
            DB_MAX_CONN_SIZE="4",
            # stac_fastapi.types.config.ApiSettings (also silences the "default values" warning)
            STAC_FASTAPI_TITLE="scarmon test STAC API",
            STAC_FASTAPI_DESCRIPTION="stac-fastapi-pgstac on a throwaway PostgreSQL cluster",
            STAC_FASTAPI_VERSION="test",
            STAC_FASTAPI_LANDING_ID="scarmon-test",
            PYTHONUNBUFFERED="1",
        )
        env.pop("ENABLED_EXTENSIONS", None)  # all read-only extensions (query, filter, sort, fields, ...)
        return env

    def _start_uvicorn(self) -> None:
        self._uvicorn_logf = open(self.api_log, "ab")
        last = ""
        for _ in range(3):
            self.api_port = _free_port()
            self.url = f"http://127.0.0.1:{self.api_port}"
            cmd = [
                sys.executable,
                "-m",
                "uvicorn",
                "stac_fastapi.pgstac.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.api_port),
                "--log-level",
                "info",
            ]
            start_pos = self._uvicorn_logf.tell()
            self._uvicorn = subprocess.Popen(
                cmd,
                env=self._uvicorn_env(),
                cwd=self.pg_dir,  # cwd: no stray .env is read
                stdin=subprocess.DEVNULL,
                stdout=self._uvicorn_logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_set_pdeathsig if threading.current_thread() is threading.main_thread() else None,
            )
            self._start_watchdog()
            deadline = time.monotonic() + _START_TIMEOUT_S
            while time.monotonic() < deadline:
                if self._uvicorn.poll() is not None:
                    break
                try:
                    with urllib.request.urlopen(self.url + "/", timeout=2) as r:
                        if r.status == 200:
                            json.loads(r.read())
                            return
                except (urllib.error.URLError, OSError, ValueError):
                    pass
                time.sleep(0.1)
            self._uvicorn_logf.flush()
            with open(self.api_log, "rb") as f:
                f.seek(start_pos)
                last = f.read().decode(errors="replace")
            alive = self._uvicorn.poll() is None
            self._kill_uvicorn()
            if not alive and "address already in use" in last.lower():
                continue
            break
        raise StacApiError(
            f"stac-fastapi-pgstac did not answer GET {self.url}/ within {_START_TIMEOUT_S:.0f}s.\n"
            f"--- {self.api_log} (tail) ---\n"
            + "\n".join(last.splitlines()[-60:])
            + f"\n--- {self.pg_log} (tail) ---\n{_tail(self.pg_log, 20)}"
        )

    def _start_watchdog(self) -> None:
        self._stop_watchdog()
        cfg = {
            "uvicorn_pid": self._uvicorn.pid if self._uvicorn else None,
            "pg_stop": self._pg_stop_cmd("immediate") if self._pg_started else None,
            "rmtree": str(self.pg_dir),
        }
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # survives a Ctrl-C / SIGKILL of the parent's process group
        )

    def _stop_watchdog(self) -> None:
        wd, self._watchdog = self._watchdog, None
        if wd is None:
            return
        with contextlib.suppress(Exception):
            wd.stdin.write(b"exit\n")
            wd.stdin.close()
        try:
            wd.wait(timeout=5)
        except subprocess.TimeoutExpired:
            wd.kill()
            wd.wait()

    def _kill_uvicorn(self) -> None:
        proc, self._uvicorn = self._uvicorn, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _stop_postgres(self) -> None:
        if not self._pg_started:
            return
        self._pg_started = False
        try:
            cp = subprocess.run(self._pg_stop_cmd("fast"), capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
            ok = cp.returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        if not ok:  # last resort: the postmaster's pid
            with contextlib.suppress(Exception):
                pid = int((self.pg_data / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGQUIT)
                for _ in range(50):
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop uvicorn and PostgreSQL and remove the cluster's temp dir. Idempotent.

        Leaves ``workdir`` (and the uvicorn log in it) alone.
        """
        if self._stopped:
            return
        self._stopped = True
        try:
            self._kill_uvicorn()
            self._stop_postgres()
            self._stop_watchdog()
        finally:
            if self._uvicorn_logf is not None:
                with contextlib.suppress(Exception):
                    self._uvicorn_logf.close()
            shutil.rmtree(self.pg_dir, ignore_errors=True)
            with _RUNNING_LOCK:
                _RUNNING.discard(self)


def start_stac_api(workdir: Path) -> StacApi:
    """Start PostgreSQL+PostGIS, install pgstac, serve stac-fastapi-pgstac on 127.0.0.1; return the StacApi.

    Raises PostgresNotInstalled when the PostgreSQL binaries are missing, StacApiError (with log tails) when
    anything fails to start. Use as a context manager or call ``stop()``.
    """
    t0 = time.monotonic()
    bindir = find_postgres_bindir()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    api = StacApi(workdir, bindir)
    try:
        api._start_postgres()
        api._start_watchdog()  # covers the cluster while pgstac is installed
        api._migrate()
        api._start_uvicorn()
    except BaseException:
        api.stop()
        raise
    api.startup_seconds = time.monotonic() - t0
    return api


if __name__ == "__main__":  # manual check: python tests/stac_api.py
    with tempfile.TemporaryDirectory() as d, start_stac_api(Path(d)) as api:
        print(f"{api.url} up in {api.startup_seconds:.1f}s (dsn {api.dsn}); Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
