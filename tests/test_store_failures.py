"""A MongoDB store that fails while it is read (the server gone after the store was opened, or refusing the read):
every records command stops with one line naming the store and saying what to do, exit 2, no traceback; and every
client of the suite keeps a server that is busy answering a long read (pcl.results.client_options)."""
from __future__ import annotations

import pytest

from pcl import results, tracking
from slurm import launch_all, status


def _gone_after_open(monkeypatch, server):
    """tracking.open_store as it is, then the server stops: the records are read from a server that is gone."""
    opened = tracking.open_store

    def open_then_stop(*args, **kwargs):
        store = opened(*args, **kwargs)
        server.stop()
        return store

    monkeypatch.setattr(tracking, "open_store", open_then_stop)


def test_reading_a_server_that_is_gone_is_one_store_error_naming_it(mongo_server):
    url = mongo_server.url(db="records")
    db = results.connect(url, timeout_s=0.5)
    mongo_server.stop()
    for read in (lambda: list(results.iter_records(db)), lambda: results.completed_run_keys(db),
                 lambda: results.has_completed(db, "k"), lambda: results.load_runs(db)):
        with pytest.raises(results.StoreError) as err:
            read()
        message = str(err.value)
        assert "\n" not in message and url.split("/records")[0] in message and "run the command again" in message
    db.client.close()


@pytest.mark.parametrize("command", ["status", "dry_run"])
def test_status_and_the_dry_run_say_in_one_line_that_the_store_failed(command, mongo_server, monkeypatch, tmp_path,
                                                                     capsys):
    monkeypatch.setenv("PCL_MONGO_URL", mongo_server.url(db="records"))
    _gone_after_open(monkeypatch, mongo_server)
    argv = ["--results-dir", str(tmp_path / "results"), "--named", "smoke", "--tables", "table2", "--methods", "dml",
            "--executor", "local"]
    code = status.run(argv) if command == "status" else launch_all.run([*argv, "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: cannot read MongoDB") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_every_client_keeps_a_server_busy_with_a_long_read(mongo_server, tmp_path):
    """pymongo cancels every operation on a server whose background check gets no answer within the connect
    timeout; a single-threaded server reading 30,000 records for 26 s answered none, and the read was cancelled.
    Both clients (the readers' and the tracking store's) check a server that answers rarely, and still fail fast
    on one that does not answer."""
    reader = results.connect(mongo_server.url(db="records"))
    store = tracking.open_store(tmp_path / "results", mongo_server.url(db="records"))
    for client in (reader.client, store.database().client):
        assert client.options.pool_options.connect_timeout <= 3.0
        assert client.options.server_selection_timeout <= 3.0
        assert client.options.heartbeat_frequency >= 60.0
    reader.client.close()
    store.close()
