"""A throwaway PostgreSQL cluster for tests, the lab and the bench: ``initdb``, ``pg_ctl``.

The cluster trusts every connection from 127.0.0.1 and its own Unix socket (which lives in the
temp dir), listens on a free TCP port, and trades durability for speed (``fsync=off``). Stop it
with :meth:`ThrowawayCluster.stop`, which also removes the temp dir.

``initdb`` refuses to run as root: as root, the tools run as the ``postgres`` user through
``runuser``, in a temp dir under ``/tmp`` that belongs to that user.

Manual use::

    python -m metallica.load.pg_cluster    # prints the URL, runs until Ctrl-C
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

POSTGRES_MAJOR = 15
SERVER_USER = "postgres"
_TOOLS = ("initdb", "pg_ctl", "postgres")


class ClusterError(RuntimeError):
    """The throwaway cluster could not be found, started or stopped."""


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``; ClusterError if none does."""
    candidates: list[Path] = [Path(f"/usr/lib/postgresql/{POSTGRES_MAJOR}/bin")]
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            if bindir:
                candidates.append(Path(bindir))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for candidate in candidates:
        if all(os.access(candidate / tool, os.X_OK) for tool in _TOOLS):
            return candidate
    raise ClusterError(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found in "
        + ", ".join(str(candidate) for candidate in candidates)
        + f": install PostgreSQL {POSTGRES_MAJOR} (Debian/Ubuntu: `apt-get install -y "
        f"postgresql-{POSTGRES_MAJOR}`), or set METALLICA_TEST_POSTGRES_URL to a server where "
        "the tests may CREATE DATABASE, or deselect these tests with `-m 'not postgres'`"
    )


def _runuser() -> str | None:
    """``runuser``, also when the PATH lacks the sbin folders (it lives in /usr/sbin)."""
    return shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ThrowawayCluster:
    """One PostgreSQL cluster in a temp dir, for the length of a test session."""

    def __init__(
        self, *, bindir: Path | None = None, max_connections: int = 300, durable: bool = False
    ) -> None:
        self.bindir = bindir or find_bindir()
        self.max_connections = max_connections
        # fsync and full page writes as a production server has them (the bench); a test
        # cluster goes without (see _write_config).
        self.durable = durable
        self.port = 0
        self._root: Path | None = None
        self._running = False
        self._as_root = os.geteuid() == 0

    # --- where things are --------------------------------------------------------------------

    @property
    def root(self) -> Path:
        if self._root is None:
            raise ClusterError("the cluster is not started")
        return self._root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        """A libpq URL to the ``postgres`` database as the superuser ``postgres``."""
        if not self._running:
            raise ClusterError("the cluster is not running")
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/postgres"

    # --- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """initdb a fresh cluster and start it on a free port."""
        if self._root is not None:
            raise ClusterError("the cluster was already started")
        self._root = self._make_root()
        atexit.register(self.stop)
        try:
            self._initdb()
            # Another process may take the free port between probe and bind: try a few.
            for attempt in range(3):
                self.port = free_port()
                self._write_config()
                try:
                    self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_file))
                except ClusterError:
                    if attempt == 2 or "could not bind" not in self._log_tail():
                        raise
                else:
                    break
            self._running = True
        except BaseException:
            self.stop()
            raise

    def postmaster_pid(self) -> int:
        """The server's main process (its backends are its children)."""
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def restart_immediate(self) -> None:
        """Kill the server without a clean shutdown and start it again (crash recovery)."""
        if not self._running:
            raise ClusterError("the cluster is not running")
        self._pg_ctl("restart", "-m", "immediate", "-w", "-t", "60", "-l", str(self.log_file))

    def stop(self) -> None:
        """Stop the server at once and remove its temp dir; safe to call more than once."""
        root, self._root = self._root, None
        if root is None:
            return
        try:
            if (root / "data" / "postmaster.pid").exists():
                self._run(
                    [
                        str(self.bindir / "pg_ctl"),
                        "stop",
                        "-D",
                        str(root / "data"),
                        "-m",
                        "immediate",
                        "-w",
                    ],
                    cwd=root,
                )
        finally:
            self._running = False
            shutil.rmtree(root, ignore_errors=True)

    # --- helpers -----------------------------------------------------------------------------

    def _make_root(self) -> Path:
        if not self._as_root:
            return Path(tempfile.mkdtemp(prefix="metallica-pg-"))
        try:
            server_user = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise ClusterError(
                f"running as root, but there is no {SERVER_USER!r} user to run initdb as"
            ) from None
        if _runuser() is None:
            raise ClusterError(
                f"running as root, but `runuser` is missing to run initdb as {SERVER_USER!r}"
            )
        # /tmp is world-traversable, so the server user can reach its own dir inside it.
        root = Path(tempfile.mkdtemp(prefix="metallica-pg-", dir="/tmp"))
        root.chmod(0o755)
        os.chown(root, server_user.pw_uid, server_user.pw_gid)
        return root

    def _initdb(self) -> None:
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SERVER_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        self._run(["mkdir", "-m", "0700", str(self.socket_dir)])
        # Only the Unix socket in the temp dir and 127.0.0.1, nothing else.
        self._write_file(
            self.data_dir / "pg_hba.conf",
            "local all all trust\nhost all all 127.0.0.1/32 trust\n",
        )

    def _write_config(self) -> None:
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": str(self.max_connections),
            # Only an OS crash can lose data without fsync; a killed server can't (crash tests).
            # Never synchronous_commit=off: a server crash would then lose committed work.
            # The bench's clusters are durable: a commit waits for its flush, as in production.
            "fsync": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            "logging_collector": "off",
        }
        text = "".join(f"{key} = {value}\n" for key, value in settings.items())
        # postgresql.auto.conf is read last, so these settings win over postgresql.conf.
        self._write_file(self.data_dir / "postgresql.auto.conf", text)

    def _write_file(self, path: Path, text: str) -> None:
        """Write a file the server user owns (root writes it, then hands it over)."""
        path.write_text(text, encoding="utf-8")
        if self._as_root:
            owner = pwd.getpwnam(SERVER_USER)
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def _pg_ctl(self, *args: str) -> None:
        self._run([str(self.bindir / "pg_ctl"), *args[:1], "-D", str(self.data_dir), *args[1:]])

    def _run(self, argv: Sequence[str], *, cwd: Path | None = None) -> None:
        command = list(argv)
        if self._as_root:
            command = [str(_runuser()), "-u", SERVER_USER, "--", *command]
        environment = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        environment["LC_ALL"] = "C"
        started = time.monotonic()
        try:
            # pg_ctl -l sends the server's output to the log file, so the pipes close on exit.
            result = subprocess.run(
                command,
                cwd=cwd or self.root,
                env=environment,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ClusterError(f"{' '.join(command)} failed: {error}") from error
        if result.returncode != 0:
            raise ClusterError(
                f"{' '.join(command)} exited with {result.returncode} after "
                f"{time.monotonic() - started:.1f}s\n--- stdout\n{result.stdout}\n"
                f"--- stderr\n{result.stderr}\n--- server log (tail)\n{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except (OSError, ClusterError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def main() -> None:
    # SIGTERM (kill, a CI runner) cleans up like Ctrl-C: SystemExit runs the finally below.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    cluster = ThrowawayCluster()
    cluster.start()
    try:
        print(cluster.url, flush=True)
        print(f"data in {cluster.data_dir}; Ctrl-C stops the server and removes it", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
