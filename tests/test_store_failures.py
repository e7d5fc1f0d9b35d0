"""A MongoDB store that fails while it is read (the server gone after the store was opened, or refusing the read):
every records command stops with one line naming the store and saying what to do, exit 2, no traceback; and every
client of the suite keeps a server that is busy answering a long read (pcl.results.client_options)."""
from __future__ import annotations

import os

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
    # the URL's own timeout: the commands give up on the gone server in 0.5 s, not the suite's 3 s
    monkeypatch.setenv("PCL_MONGO_URL", mongo_server.url(db="records") + "&serverSelectionTimeoutMS=500")
    _gone_after_open(monkeypatch, mongo_server)
    argv = ["--results-dir", str(tmp_path / "results"), "--named", "smoke", "--tables", "table2", "--methods", "dml",
            "--executor", "local"]
    code = status.run(argv) if command == "status" else launch_all.run([*argv, "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: cannot read MongoDB") and err.count("\n") == 1 and "Traceback" not in err
    assert f"127.0.0.1:{mongo_server.port}" in err  # which store, though the tracking store's client made it
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_a_grid_stops_in_one_line_when_mongodb_fails_after_its_check(mongo_server, monkeypatch, tmp_path):
    """The grid checks the store before each run; a server gone right after that check fails the run's own
    reads (has_completed): the grid stops with the reason, as when the check itself fails, not with a traceback."""
    from pcl.tracking import stores

    checked = stores.Store.check
    calls = []

    def check_then_stop(self):
        checked(self)
        calls.append(1)
        if len(calls) == 2:  # the grid's check before its first run (open_store's is the first)
            mongo_server.stop()

    monkeypatch.setattr(stores.Store, "check", check_then_stop)
    cfg = dict(dataset="synthetic", backbone="tiny_resnet8", method="baseline", epochs=1, batch_size=32,
               synthetic_classes=4, synthetic_train_size=64, synthetic_test_size=32, device="cpu", workers=0,
               checkpoint_root=str(tmp_path / "ck"), experiment="test_store_failures", label="smoke")
    url = mongo_server.url(db="g") + "&serverSelectionTimeoutMS=500"  # the gone server given up on in 0.5 s
    report = tracking.run_grid([cfg], results_dir=str(tmp_path / "results"), mongo_url=url, log=lambda _: None)
    assert report.runs == [] and report.stopped_reason.startswith("cannot read MongoDB")
    assert "\n" not in report.stopped_reason


def test_a_document_python_cannot_decode_is_a_record_skipped_not_a_failed_read():
    """Another client can write a date beyond year 9999 or text that is not UTF-8 into a shared database: with the
    suite's decoding options such a document decodes (the date as bson's DatetimeMS, the text with U+FFFD), so
    check_record names and skips it while the read goes on; Python's defaults raise and end the whole read."""
    import bson
    from bson.datetime_ms import DatetimeMS

    db = results.connect("mongodb://127.0.0.1:9/records?directConnection=true")  # no server: its options only
    codec = db.codec_options  # what the reader decodes every reply with
    db.client.close()
    record = {"_id": 7, "status": "COMPLETED", "config": {"run_key": "k7", "seed": 0}, "info": {}, "result": {},
              "experiment": {"name": "x"}, "meta": {}, "start_time": DatetimeMS(2 ** 62)}
    raw = bson.encode(record)
    with pytest.raises(bson.errors.InvalidBSON):
        bson.decode(raw)  # what a client with the defaults raises in the middle of a read
    decoded = bson.decode(raw, codec_options=codec)
    with pytest.raises(results.RecordError, match="start_time"):
        results.check_record({**decoded, "run_id": decoded.pop("_id")})
    text = bson.encode({"label": "x"}).replace(b"\x02\x00\x00\x00x\x00", b"\x02\x00\x00\x00\xff\x00")
    with pytest.raises(bson.errors.InvalidBSON):
        bson.decode(text)
    assert bson.decode(text, codec_options=codec)["label"] == "\ufffd"


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


def test_an_unreachable_server_is_named_without_the_drivers_topology_dump(tmp_path, capsys):
    """`python -m pcl.tracking upload` (and every run) against a server that refuses: one line with the server, the
    cause (connection refused) and what to do; not pymongo's timeouts and topology description."""
    from pcl.tracking import cli

    url = "mongodb://alice:Pa55-word@127.0.0.1:9/x?directConnection=true&serverSelectionTimeoutMS=300"
    (tmp_path / "results").mkdir()
    with pytest.raises(tracking.StoreUnavailable) as err:
        tracking.open_store(tmp_path / "results", url)
    assert cli.main(["upload", str(tmp_path / "results"), "--mongo-url", url]) == 2
    printed = capsys.readouterr().err
    assert "within 0.3 s" in str(err.value)  # the timeout the client kept: the URL's
    for message in (str(err.value), printed.strip()):
        assert "\n" not in message and "127.0.0.1:9" in message and "refused" in message.lower()
        assert "Topology" not in message and "configured timeouts" not in message and "Pa55-word" not in message
        assert "Check that the server runs" in message


def test_the_store_check_refuses_a_user_who_may_not_read_the_runs(mongo_server_factory, tmp_path):
    """The check before a run reads one document by _id: a user without the right to read the runs is refused
    there, in one line, before any run starts (the check asked for `{}`, which a server may answer by reading every
    record first)."""
    from urllib.parse import quote_plus

    from pymongo import MongoClient

    from pcl.tracking.stores import Store, StoreUnavailable

    server = mongo_server_factory("auth")
    with MongoClient(server.url()) as admin:
        admin.admin.command("createUser", "root", pwd="r00t-pw", roles=["root"])
        # may make the indexes the check makes, not read: the check's read is what refuses this user
        admin["pcl"].command("createRole", "indexer", privileges=[{"resource": {"db": "pcl", "collection": ""},
                                                                    "actions": ["createIndex"]}], roles=[])
        admin.admin.command("createUser", "other", pwd="other-pw", roles=[{"role": "indexer", "db": "pcl"}])
    server.stop()
    server.require_auth = True
    server.start()
    Store(tmp_path / "results", server.url("root", quote_plus("r00t-pw"))).check()  # may read: no error
    with pytest.raises(StoreUnavailable) as refused:
        Store(tmp_path / "results", server.url("other", quote_plus("other-pw"))).check()
    assert "\n" not in str(refused.value).strip() and "other-pw" not in str(refused.value)
    assert "find" in str(refused.value) or "not authorized" in str(refused.value).lower(), refused.value


# ---- a URL's own client options win over the suite's defaults ----------------------------------------------------
_URL_OPTIONS = {"serverSelectionTimeoutMS": 300, "connectTimeoutMS": 200, "socketTimeoutMS": 100,
                "heartbeatFrequencyMS": 900}


def _effective(client) -> dict[str, float | None]:
    """The options a client keeps (seconds), by the name a URL gives them."""
    return {"serverSelectionTimeoutMS": client.options.server_selection_timeout,
            "connectTimeoutMS": client.options.pool_options.connect_timeout,
            "socketTimeoutMS": client.options.pool_options.socket_timeout,
            "heartbeatFrequencyMS": client.options.heartbeat_frequency}


def _check_clients(url: str, tmp_path, given: dict[str, int]) -> None:
    """Each kind of client the suite opens for `url` (the records reader's, the tracking store's) keeps the URL's
    options in `given` and the suite's own for the rest."""
    from pcl.tracking.stores import Store

    store = Store(tmp_path, url)
    reader = results.connect(url).client
    try:
        for client, socket_s in ((reader, None), (store.database().client, 60.0)):
            suite = {"serverSelectionTimeoutMS": 3.0 if client is reader else store.timeout_s,
                     "connectTimeoutMS": 3.0 if client is reader else store.timeout_s,
                     "socketTimeoutMS": socket_s, "heartbeatFrequencyMS": results.HEARTBEAT_S}
            assert _effective(client) == {**suite, **{k: v / 1000 for k, v in given.items()}}, url
    finally:
        reader.close()
        store.close()


@pytest.mark.parametrize("separator", ["&", ";"])
def test_a_timeout_the_url_sets_is_the_one_the_client_keeps(tmp_path, separator):
    """pymongo lets a keyword override the URL: the suite's 3 s server selection made a user's
    `?serverSelectionTimeoutMS=300` wait ten times longer than asked."""
    query = separator.join(f"{k}={v}" for k, v in _URL_OPTIONS.items())
    _check_clients(f"mongodb://127.0.0.1:9/x?directConnection=true{separator}{query}", tmp_path, _URL_OPTIONS)
    _check_clients("mongodb://127.0.0.1:9/x?directConnection=true", tmp_path, {})  # none given: the suite's


@pytest.mark.parametrize("query", ["serverSelectionTimeoutMS=", "serverSelectionTimeoutMS=abc",
                                   "connectTimeoutMS=5s", "heartbeatFrequencyMS=10m", "socketTimeoutMS=-1"])
def test_an_option_value_pymongo_ignores_keeps_the_suites_default(tmp_path, query):
    """pymongo warns about a value it cannot use and drops it: the suite's default then stands, not pymongo's (30 s
    server selection, 10 s heartbeat: a busy server dropped in a long read)."""
    with pytest.warns(UserWarning, match="must be"):  # pymongo's own word to the user stays
        _check_clients(f"mongodb://127.0.0.1:9/x?directConnection=true&{query}", tmp_path, {})


def test_options_after_a_hash_are_the_urls_as_pymongo_reads_them(tmp_path):
    """A "#" is no fragment in a connection string: pymongo reads on after it, and so do we."""
    _check_clients("mongodb://127.0.0.1:9/x?directConnection=true&appname=a#b&serverSelectionTimeoutMS=300",
                   tmp_path, {"serverSelectionTimeoutMS": 300})


_hypothesis = pytest.importorskip("hypothesis")
_st = _hypothesis.strategies


@_hypothesis.settings(max_examples=int(os.environ.get("PCL_HYPOTHESIS_EXAMPLES", "60")) // 3, deadline=None,
                      suppress_health_check=list(_hypothesis.HealthCheck))
@_hypothesis.given(given=_st.lists(_st.sampled_from(sorted(_URL_OPTIONS)), unique=True),
                   cases=_st.lists(_st.booleans(), min_size=30, max_size=30), separator=_st.sampled_from("&;"))
def test_any_url_options_in_any_case_are_the_ones_the_clients_keep(tmp_path_factory, given, cases, separator):
    def mixed(name: str) -> str:  # option names are case-insensitive
        return "".join(c.upper() if up else c.lower() for c, up in zip(name, cases))

    query = separator.join(f"{mixed(k)}={_URL_OPTIONS[k]}" for k in given)
    url = f"mongodb://127.0.0.1:9/x?directConnection=true{separator + query if query else ''}"
    _check_clients(url, tmp_path_factory.mktemp("store"), {k: _URL_OPTIONS[k] for k in given})
