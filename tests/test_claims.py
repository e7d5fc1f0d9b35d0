"""analysis/claims.py: a verdict per claim of the paper (held / not held / not enough runs) with effect, 95 %
interval and test, and the paper's numbers against our intervals only where the setting is the paper's. Expected
values are computed here by hand (Welch-Satterthwaite, t quantiles from the closed forms for these df)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from analysis import claims
from analysis.setting import Setting
from analysis.tables import SPECS, Table


def _runs(values: dict[str, list[float]], row: str = "resnet32", keys: dict[str, list[str]] | None = None,
          config: dict | None = None) -> pd.DataFrame:
    rows = []
    for column, xs in values.items():
        for i, x in enumerate(xs):
            key = (keys or {}).get(column, [f"{column}-{i}" for i in range(len(xs))])[i]
            rows.append({"column": column, "row": row, "status": "completed", "value": x, "run_key": key,
                         "attempt": {"record": {"config": config or {}}}})
    return pd.DataFrame(rows)


def test_welch_interval_and_verdicts():
    claim = claims.Claim("table2", "PCL has a lower error than DML", "pcl", "dml")
    v = claims.judge(claim, _runs({"pcl": [10.0, 11.0, 12.0], "dml": [20.0, 21.0, 22.0]}), "cifar100", "resnet32")
    # se = sqrt(1/3 + 1/3), df = 4, t_{0.975, 4} = 2.7764451
    half = 2.7764451 * math.sqrt(2 / 3)
    assert v.verdict == claims.HELD and v.effect == pytest.approx(-10.0)
    assert (v.low, v.high) == (pytest.approx(-10 - half, abs=1e-5), pytest.approx(-10 + half, abs=1e-5))
    assert v.test.startswith("Welch") and v.p_value < 0.001
    overlapping = claims.judge(claim, _runs({"pcl": [10.0, 14.0, 12.0], "dml": [13.0, 11.0, 15.0]}), "c", "r")
    assert overlapping.verdict == claims.UNRESOLVED and overlapping.low < 0 < overlapping.high
    opposite = claims.judge(claim, _runs({"pcl": [20.0, 21.0, 22.0], "dml": [10.0, 11.0, 12.0]}), "c", "r")
    assert opposite.verdict == claims.CONTRADICTED and opposite.low > 0
    one_seed = claims.judge(claim, _runs({"pcl": [10.0], "dml": [20.0, 21.0]}), "c", "r")
    assert one_seed.verdict == claims.TOO_FEW and math.isnan(one_seed.effect)


def test_heads_of_the_same_runs_are_compared_pairwise():
    claim = claims.Claim("ablations.deployed_head", "mean beats live", "mean_peer1", "peer1", paired=True)
    keys = {"mean_peer1": ["a", "b", "c"], "peer1": ["a", "b", "c"]}
    runs = _runs({"mean_peer1": [30.0, 40.0, 50.0], "peer1": [31.0, 41.5, 51.0]}, keys=keys)
    v = claims.judge(claim, runs, "cifar100", "resnet32")
    # d = (-1, -1.5, -1): mean -7/6, sd 0.288675, t_{0.975, 2} = 4.3026527
    half = 4.3026527 * 0.28867513 / math.sqrt(3)
    assert v.effect == pytest.approx(-7 / 6) and v.high == pytest.approx(-7 / 6 + half, abs=1e-5)
    assert v.verdict == claims.HELD and v.test.startswith("paired")  # unpaired, the spread of runs would hide it
    assert claims.judge(claims.Claim("t", "x", "mean_peer1", "peer1"), runs, "c", "r").verdict.startswith(claims.NOT_HELD)


_samples = st.lists(st.floats(0.0, 100.0, allow_nan=False), min_size=2, max_size=12)


@settings(max_examples=200, deadline=None)
@given(better=_samples, worse=_samples)
def test_the_tests_and_intervals_are_scipy_stats_own(better, worse):
    """Welch's and the paired t-test, from the Student t functions of scipy.special (scipy.stats costs a report 1 s
    to import): the same p-values and intervals as scipy.stats' ttest_ind, ttest_1samp and t.ppf."""
    from scipy import stats

    b, w = np.array(better), np.array(worse)
    welch_se = math.sqrt(b.var(ddof=1) / len(b) + w.var(ddof=1) / len(w))
    for ours, test, se in ((claims._welch(b, w), lambda: stats.ttest_ind(b, w, equal_var=False), welch_se),
                           (claims._paired(b), lambda: stats.ttest_1samp(b, 0.0), b.std(ddof=1) / math.sqrt(len(b)))):
        diff, low, high, p = ours
        if se < 1e-9 * max(1.0, abs(diff)):  # no spread: exact (scipy warns of catastrophic cancellation)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nearly equal values: scipy's precision warning
            expected = test()
        half = stats.t.ppf(0.5 + claims.LEVEL / 2, expected.df) * se
        assert p == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-12)
        assert (low, high) == (pytest.approx(diff - half, rel=1e-9, abs=1e-9),
                               pytest.approx(diff + half, rel=1e-9, abs=1e-9))


def test_a_welch_df_beyond_floats_is_taken_as_scipy_takes_it():
    """Variances whose squares underflow make Welch's df 0/0: scipy.stats takes it as 1, and so does the p-value."""
    from scipy import stats

    better, worse = np.array([1e-160, 2e-160, 3e-160]), np.array([4e-160, 5e-160, 7e-160])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = claims._welch(better, worse)[3]
        assert p == pytest.approx(stats.ttest_ind(better, worse, equal_var=False).pvalue, rel=1e-9)


def test_claims_follow_the_tables_columns_and_the_scripts_variants():
    from ablations import components, mean_teacher

    def table(name, columns):
        return Table(SPECS[name], "cifar100", None, "last", pd.DataFrame(), _runs({c: [1.0] for c in columns}), "s")

    main = claims.claims_for(table("table2", ["baseline", "dml", "pcl"]))
    assert [(c.better, c.worse) for c in main] == [("pcl", "baseline"), ("pcl", "dml")]
    assert claims.claims_for(table("table2", ["baseline", "dml"])) == []  # no PCL runs: nothing to claim
    steps = list(components.VARIANTS)
    made = claims.claims_for(table("ablations.components", steps))
    assert [(c.better, c.worse) for c in made[:3]] == list(zip(steps[1:4], steps[:3]))
    pcl, *others = list(mean_teacher.VARIANTS)
    assert {c.worse for c in claims.claims_for(table("ablations.mean_teacher", [pcl, *others]))} == set(others)


def _cell_table(dataset: str, config: dict, values: list[float], paper_err: float) -> Table:
    runs = _runs({"pcl": values}, config=config)
    mean, std = pd.Series(values).mean(), pd.Series(values).std()
    cells = pd.DataFrame([{"row": "resnet32", "column": "pcl", "mean": mean, "std": std, "n": len(values),
                           "paper_err": paper_err, "paper_conf": "A"}])
    plan = [{**config, "dataset": dataset, "seed": seed} for seed in range(len(values))]
    return Table(SPECS["table2"], dataset, None, "last", cells, runs, "s", setting=Setting.of(plan))


def test_the_papers_number_inside_our_interval_only_in_the_papers_setting():
    papers = {"dataset": "cifar100", "epochs": 300, "train_subset": None, "data_identity": None}
    inside = claims.reproduced(_cell_table("cifar100", papers, [25.5, 26.0, 26.5], 25.86))
    assert inside["verdict"].tolist() == ["reproduced"] and inside["ci_low"][0] < 25.86 < inside["ci_high"][0]
    outside = claims.reproduced(_cell_table("cifar100", papers, [30.0, 30.1, 30.2], 25.86))
    assert outside["verdict"].tolist() == ["not reproduced"]
    short = claims.reproduced(_cell_table("cifar10", {**papers, "epochs": 2, "train_subset": 1000,
                                                      "data_identity": "md5:0123"}, [70.0, 71.0], 6.0))
    verdict = short["verdict"][0]
    assert verdict.startswith("not comparable") and "2 epochs, not the paper's 300" in verdict
    assert "not the official files" in verdict and "subset" in verdict
    synthetic = claims.reproduced(_cell_table("synthetic", {**papers, "dataset": "synthetic"}, [1.0, 2.0], 6.0))
    assert "synthetic is not a dataset of the paper" in synthetic["verdict"][0]


def test_record_text_in_a_claim_is_escaped():
    claim = claims.Claim("table2", "PCL has a lower error than x", "pcl", "x")
    v = claims.judge(claim, _runs({"pcl": [1.0, 2.0], "x": [3.0, 4.0]}, row="<img onerror=alert(1)>|\n# h"), "c",
                     "<img onerror=alert(1)>|\n# h")
    text = claims.render_markdown([v], [])
    assert "<img" not in text and "\n# h" not in text


def test_the_claims_name_backbones_and_datasets_as_the_tables_do():
    """The report's tables said "tiny ResNet-8" and "CIFAR-100", its claims table "tiny_resnet8" and "cifar100"
    (found by a new user); a name no declaration knows (a foreign record) is shown as it is, escaped."""
    from analysis.setting import DATASET_NAMES
    from analysis.tables import BACKBONE_NAMES

    claim = claims.Claim("table2", "PCL has a lower error than DML", "pcl", "dml")
    v = claims.judge(claim, _runs({"pcl": [10.0, 11.0], "dml": [20.0, 21.0]}), "cifar100", "resnet32")
    row = [line for line in claims.render_markdown([v], []).splitlines() if line.startswith("| table2 |")]
    assert row and row[0].startswith(f"| table2 | {DATASET_NAMES['cifar100']} | {BACKBONE_NAMES['resnet32']} |")
    assert BACKBONE_NAMES["resnet32"] != "resnet32"
    odd = claims.judge(claim, _runs({"pcl": [10.0, 11.0], "dml": [20.0, 21.0]}, row="my_net"), "mine", "my_net")
    assert "| table2 | mine | my_net |" in claims.render_markdown([odd], [])


def test_the_verdicts_legend_names_each_verdict_once_as_it_appears_in_the_table():
    """The legend ran the labels into their meanings ("not held: the other way: above 0; not held: unresolved:
    it holds 0"), which a new user read as a typo."""
    legend = claims.render_markdown([], []).splitlines()[2]
    for label in ("held", claims.CONTRADICTED, claims.UNRESOLVED):
        assert legend.count(f"*{label}* (") == 1, legend


def test_two_tables_of_one_script_and_dataset_read_apart_in_the_report(tmp_path):
    """After `with smoke` and `with smoke epochs=2` the report listed "table2 (synthetic), table2 (synthetic)", two
    identical rows per status and every claim twice: each now names its setting (epochs, subset, seeds)."""
    from analysis.report import runs_per_status
    from analysis.setting import Setting
    from analysis.tables import SPECS, Table
    import pandas as pd

    def table(epochs):
        setting = Setting(dataset="synthetic", identities=("",), epochs=(epochs,), subsets=(128,), seeds=(0,))
        runs = pd.DataFrame({"run_key": [f"k{epochs}"], "status": ["COMPLETED"]})
        return Table(SPECS["table2"], "synthetic", None, "final", pd.DataFrame(), runs, "file store",
                     setting=setting)

    one, two = table(1), table(2)
    assert one.setting_text != two.setting_text and "2 epochs" in two.setting_text
    frame = runs_per_status([one, two])
    assert list(frame["setting"][:2]) == [one.setting_text, two.setting_text]
    # the claims' verdicts and the paper's numbers name the table's setting too
    from analysis.claims import render_markdown, reproduced

    cells = pd.DataFrame({"row": ["resnet32"], "column": ["pcl"], "n": [2], "mean": [20.0], "std": [1.0],
                          "paper_err": [20.0], "paper_conf": ["A"], "diff": [0.0]})
    for t in (one, two):
        t.cells = cells
    text = render_markdown([], [reproduced(one), reproduced(two)])
    assert f"| table2 | {one.setting_text} |" in text and f"| table2 | {two.setting_text} |" in text
