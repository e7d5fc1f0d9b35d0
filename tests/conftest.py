"""Shared fixtures: tiny synthetic runs that take seconds on a 2-core CPU."""
from __future__ import annotations

import contextlib

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
