"""Run `mesh-broker` as a real subprocess (serve and admin commands), shared by tests/compat and tests/integration."""

from __future__ import annotations

import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trustme

SHARED_KEY = "TestKey"
HOST = "127.0.0.1"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 30.0


def broker_command() -> list[str]:
    """The console script beside this interpreter, else `python -m broker`."""
    script = Path(sys.executable).parent / "mesh-broker"
    return [str(script)] if script.exists() else [sys.executable, "-m", "broker"]


def clean_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without any MESH_* variable, plus exactly the ones given."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MESH_")}
    env.update(extra)
    return env


#: Ports free_port has handed out in this process.
_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before by this process: the kernel may offer a port it just offered
    again once its socket is closed, and a broker given the same port for MESH_PORT and MESH_METRICS_PORT refuses
    to start (seen once in a full run)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@dataclass(frozen=True)
class Certificates:
    """PEM files of a test CA and a server certificate for localhost and 127.0.0.1 signed by it."""

    ca: Path
    server_cert: Path
    server_key: Path


def server_certificates(ca: trustme.CA, directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    server = ca.issue_cert("localhost", "127.0.0.1")
    paths = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca.cert_pem.write_to_path(str(paths.ca))
    server.private_key_pem.write_to_path(str(paths.server_key))
    for i, pem in enumerate(server.cert_chain_pems):
        pem.write_to_path(str(paths.server_cert), append=i > 0)
    return paths


def client_certificate(ca: trustme.CA, common_name: str, directory: Path) -> tuple[str, str]:
    """A client certificate for mutual TLS: (cert PEM path, key PEM path), as requests' cert= wants it."""
    directory.mkdir(parents=True, exist_ok=True)
    issued = ca.issue_cert(common_name, common_name=common_name)
    cert, key = directory / f"{common_name}.pem", directory / f"{common_name}.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


@dataclass
class BrokerProcess:
    """One `mesh-broker serve` process on 127.0.0.1; restartable on the same port and data dir."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    certificates: Certificates | None = None
    #: a client certificate the readiness probe presents when the broker requires one
    probe_cert: tuple[str, str] | None = None
    port: int = field(default_factory=free_port)
    #: RLIMIT_FSIZE for the broker: a write past this many bytes in any file fails with EFBIG, a full disk of
    #: sorts that needs no root (Python ignores SIGXFSZ, so the write fails instead of killing the process)
    file_size_limit: int | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def scheme(self) -> str:
        return "https" if self.certificates else "http"

    @property
    def url(self) -> str:
        host = "localhost" if self.certificates else HOST
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def ca(self) -> str | None:
        return None if self.certificates is None else str(self.certificates.ca)

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-broker-{self.starts}.log"

    def settings_env(self) -> dict[str, str]:
        values = {"MESH_HOST": HOST, "MESH_PORT": str(self.port), "MESH_DATA_DIR": str(self.data_dir)}
        if self.certificates is not None:
            values["MESH_TLS_CERT"] = str(self.certificates.server_cert)
            values["MESH_TLS_KEY"] = str(self.certificates.server_key)
        values.update(self.env)
        return values

    def start(self, timeout: float = START_TIMEOUT) -> BrokerProcess:
        self.launch()
        return self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it to answer (start_together overlaps several start-ups)."""
        assert self.process is None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*broker_command(), "serve"],
                env=clean_environment(self.settings_env()),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=None if self.file_size_limit is None else self._limit_file_size,
            )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> BrokerProcess:
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _limit_file_size(self) -> None:
        assert self.file_size_limit is not None
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_size_limit, self.file_size_limit))

    def _probe_context(self) -> ssl.SSLContext | None:
        if self.certificates is None:
            return None
        context = ssl.create_default_context(cafile=str(self.certificates.ca))
        if self.probe_cert is not None:
            context.load_cert_chain(*self.probe_cert)
        return context

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        context = self._probe_context()
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"broker exited with {self.process.returncode}:\n{self.output()}")
            try:
                with opener.open(f"{self.url}/_ping", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last_error = exc
            time.sleep(0.05)
        raise TimeoutError(f"broker not ready after {timeout}s ({last_error}):\n{self.output()}")

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL if it has not gone within timeout. Safe to call when not running."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the crash a durable broker must survive."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL)
        process.wait(STOP_TIMEOUT)

    def restart(self) -> BrokerProcess:
        self.stop()
        return self.start()

    def __enter__(self) -> BrokerProcess:
        return self.start() if self.process is None else self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_together(nodes: Sequence[BrokerProcess], timeout: float = START_TIMEOUT) -> list[BrokerProcess]:
    """Start several brokers at once and wait until every one answers: their start-ups (mostly imports) overlap
    instead of adding up. If one fails, all are stopped."""
    try:
        for node in nodes:
            node.launch()
        return [node.wait_ready(timeout) for node in nodes]
    except BaseException:
        for node in nodes:
            node.stop()
        raise


def run_cli(
    data_dir: Path,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    data_dir_flag: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `mesh-broker [--data-dir D] ARGS...` to completion; never raises on a non-zero exit."""
    command = [*broker_command()]
    settings = dict(env or {})
    if data_dir_flag:
        command += ["--data-dir", str(data_dir)]
    else:
        settings.setdefault("MESH_DATA_DIR", str(data_dir))
    return subprocess.run(
        [*command, *args],
        env=clean_environment(settings),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
