"""Shared fixtures: tiny synthetic runs that take seconds on a 2-core CPU."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch

# Tiny models on a 2-core machine: one thread is many times faster than two contending ones.
torch.set_num_threads(1)

HOST_SYNC_CALLS = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy")


@pytest.fixture
def forbid_host_sync(monkeypatch):
    """Context manager under which reading a tensor back to the host (item, bool(), .cpu(), ...) fails."""

    @contextlib.contextmanager
    def guard():
        def forbidden(*_a, **_k):
            raise AssertionError("host synchronisation inside the training step")

        with monkeypatch.context() as m:
            for name in HOST_SYNC_CALLS:
                m.setattr(torch.Tensor, name, forbidden)
            yield

    return guard


@pytest.fixture
def tiny_loaders():
    """Factory: (train_loader, test_loader, num_classes) on synthetic data for a number of views."""
    from pcl.data import build_loaders

    def make(num_views: int = 1, *, classes: int = 4, train_size: int = 256, test_size: int = 128,
             batch_size: int = 64, seed: int = 0):
        return build_loaders("synthetic", batch_size=batch_size, num_views=num_views, device="cpu", seed=seed,
                             synthetic_classes=classes, synthetic_train_size=train_size,
                             synthetic_test_size=test_size)

    return make


# ---- tracking: a real MongoDB-wire-protocol server, and Sacred under pytest -------------------------------------
class MongoTestServer:
    """A SecantusDB server (real MongoDB wire protocol over TCP, no mocks) on a free port; stop() and start()
    again keep the data (same storage folder), as a restarted database would (on a new free port: take url()
    again after a restart)."""

    def __init__(self, storage_path, *, require_auth: bool = False):
        self.storage_path = str(storage_path)
        self.require_auth = require_auth
        self.port = 0
        self._server = None

    def start(self) -> "MongoTestServer":
        from secantus import SecantusDBServer

        self._server = SecantusDBServer(host="127.0.0.1", port=0, storage_path=self.storage_path,
                                        require_auth=self.require_auth)
        self._server.start()
        self.port = int(self._server.uri.rstrip("/").rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self._server is not None:
            # SecantusDB's stop() closes its listening socket, which on Linux does not wake its thread blocked in
            # accept(): every stop waited out that thread's 2 s join. shutdown() wakes it (accept fails, it ends).
            with contextlib.suppress(OSError, AttributeError):
                self._server._socket.shutdown(socket.SHUT_RDWR)
            self._server.stop()
            self._server = None

    def url(self, user: str | None = None, password: str | None = None, db: str = "") -> str:
        auth = f"{user}:{password}@" if user else ""
        return f"mongodb://{auth}127.0.0.1:{self.port}/{db}?directConnection=true"


@pytest.fixture
def mongo_server(tmp_path):
    """A running MongoTestServer (no authentication), stopped after the test."""
    pytest.importorskip("secantus")
    server = MongoTestServer(tmp_path / "mongo-data").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo_session_server(tmp_path_factory):
    """One MongoTestServer for the whole session (starting and stopping costs ~2 s); use `mongo_url`."""
    pytest.importorskip("secantus")
    server = MongoTestServer(tmp_path_factory.mktemp("mongo-session")).start()
    yield server
    server.stop()


@pytest.fixture
def mongo_url(mongo_session_server, request):
    """URL of a fresh, empty database on the session's server (the database is named after the test)."""
    import hashlib

    db = "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:20]
    return mongo_session_server.url(db=db)


@pytest.fixture
def mongo_server_factory(tmp_path):
    """Factory for more servers (e.g. require_auth=True); all are stopped after the test."""
    pytest.importorskip("secantus")
    servers: list[MongoTestServer] = []

    def make(name: str = "mongo-extra", **kwargs) -> MongoTestServer:
        server = MongoTestServer(tmp_path / name, **kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True, scope="session")
def _sacred_sys_capture():
    """Sacred's default fd capture spawns `tee` and fights pytest's capture: use sys capture under pytest."""
    try:
        import sacred
    except ImportError:  # pragma: no cover - sacred is a dependency
        yield
        return
    previous = sacred.SETTINGS.CAPTURE_MODE
    sacred.SETTINGS.CAPTURE_MODE = "sys"
    yield
    sacred.SETTINGS.CAPTURE_MODE = previous


# ---- SLURM: the single-node cluster of slurm/local_cluster.sh, for the tests that submit real jobs ---------------
SLURM_SCRIPT = Path(__file__).resolve().parents[1] / "slurm" / "local_cluster.sh"


def slurm_packages() -> list[str]:
    """The Debian packages slurm/local_cluster.sh installs when they are missing (its own list, read from it)."""
    found = re.search(r'local pkgs="([^"]+)"', SLURM_SCRIPT.read_text())
    assert found, f"{SLURM_SCRIPT} no longer names its packages as `local pkgs=\"...\"`"
    return found.group(1).split()


def missing_slurm_packages() -> list[str]:
    """Those of slurm_packages() that dpkg does not list as installed (all of them without dpkg)."""
    if shutil.which("dpkg") is None:
        return slurm_packages()
    return [p for p in slurm_packages()
            if subprocess.run(["dpkg", "-s", p], capture_output=True, timeout=60).returncode != 0]


def slurm_cluster_answers() -> bool:
    """Whether a SLURM controller answers and has a usable node (sinfo)."""
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and any(s.strip() in ("idle", "mixed", "allocated") for s in out.stdout.split())


def say(config: pytest.Config, line: str) -> None:
    """One line on the terminal now, whatever pytest captures (what a fixture does to the machine is never silent)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        if reporter is not None:
            reporter.write_line(line)
        else:  # pragma: no cover - pytest without its terminal (-p no:terminal)
            print(line, flush=True)


@pytest.hookimpl(tryfirst=True)  # before -m "not slow" deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that needs the SLURM cluster is end-to-end (marked slow): where none answers, starting the local
    one and stopping it again cost ~25 s of a fast tier of ~2.5 min."""
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def slurm_cluster(request):
    """A SLURM cluster that answers: the running one (e.g. the one .ci/run starts; left running), else the local one
    started here with `bash slurm/local_cluster.sh start` and stopped again at the end of the session.

    As root on Debian/Ubuntu that script installs its packages (slurm-wlm, munge, slurmdbd, mariadb-server) the
    first time and writes /etc/slurm/slurm.conf and slurmdbd.conf (only where no other SLURM config exists): a line
    on the terminal says so before it starts. Where SLURM cannot be installed (not root, no apt-get) the tests that
    need the cluster skip with the reason, never under CI=true; where SLURM is installed, a cluster that does not
    start fails them."""
    if slurm_cluster_answers():
        yield
        return
    missing = missing_slurm_packages()
    installs = (f"installs the Debian packages {' '.join(missing)} (apt-get, one-off), "
                if missing and os.geteuid() == 0 else "")
    say(request.config, f"\ntests: a test needs SLURM and none answers: `bash slurm/local_cluster.sh start` {installs}"
                        "writes /etc/slurm/slurm.conf and starts munged, MariaDB, slurmdbd, slurmctld and slurmd "
                        "(stopped after the tests; README: Tests)")
    started = subprocess.run(["bash", str(SLURM_SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    if started.returncode != 0 or not slurm_cluster_answers():
        reason = (started.stderr or started.stdout).strip().splitlines()[-1:] or ["no output"]
        message = f"no SLURM cluster: slurm/local_cluster.sh start failed: {reason[0]}"
        installed = all(shutil.which(cmd) for cmd in ("sbatch", "slurmctld", "slurmd", "slurmdbd", "munged"))
        if installed or os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + (" (CI=true: the SLURM tests must run)" if not installed else
                                   " (SLURM is installed: a cluster that does not start is a bug)"))
        pytest.skip(message + " (SLURM cannot be installed on this machine)")
    say(request.config, "tests: " + (started.stdout.strip().splitlines() or ["local SLURM cluster up"])[-1])
    yield
    subprocess.run(["bash", str(SLURM_SCRIPT), "stop"], capture_output=True, text=True, timeout=300)


#: the folders a run writes by default, relative to the working tree (config keys results_dir, checkpoint_root)
DEFAULT_OUTPUTS = ("results", "checkpoints")


@pytest.fixture(scope="session", autouse=True)
def _nothing_written_into_the_working_tree():
    """No test writes into the default results or checkpoint folder of the working tree: a test that left
    checkpoint_root at its default left a final checkpoint there, and a newcomer's first smoke run restored that
    test's record instead of training."""
    root = Path(__file__).resolve().parents[1]

    def entries() -> set[str]:
        return {f"{name}/{p.name}" for name in DEFAULT_OUTPUTS if (root / name).is_dir()
                for p in (root / name).iterdir()}

    before = entries()
    yield
    added = sorted(entries() - before)
    assert not added, f"the tests wrote into the working tree: {', '.join(added)} (give the test tmp folders)"
