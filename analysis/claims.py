"""A verdict on each claim of the paper from the runs present: held / not held / not enough runs, with the effect
size, a 95 % interval over seeds and the test used; and for each cell with a paper number, whether that number lies
within our interval ("reproduced") where the setting is the paper's.

    python analysis/claims.py                          # every plan with runs in results/ (+ $PCL_MONGO_URL)
    python analysis/claims.py --tables table2 ablations.peers

The claims (the paper's, as analysis/paper.py summarises them): PCL has a lower error than every compared method
on each backbone and dataset (main table, ImageNet); online PCL beats two-stage KD; each component of the ablation
lowers the error; more peers help up to 4; PCL's peer mean teachers beat the alternatives (live peers, own mean
teacher, plain average); the temporal mean of a peer beats the live peer and the peer ensemble beats the deployed
peer (heads of the same runs). Errors are top-1 errors (%), lower is better.

Tests: two groups of runs (different methods or variants, seeds as replicates): Welch's t-test and its interval
for the difference of means; heads of the same runs: the paired t-test over runs. "held" when the whole 95 %
interval of (claimed better - other) is below 0; "not held: the other way" when it is above 0; "not held:
unresolved" when it holds 0 (more seeds may decide); "not enough runs" with fewer than 2 finished runs on a side.
Torch-free.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import special

from analysis import cli, escape
from analysis.setting import DATASET_NAMES
from analysis.tables import BACKBONE_NAMES, METHOD_NAMES, Table, build_tables
from pcl.fsio import replace_file

HELD, NOT_HELD, TOO_FEW = "held", "not held", "not enough runs"
CONTRADICTED, UNRESOLVED = "not held: the other way", "not held: unresolved"  # the two kinds of NOT_HELD
LEVEL = 0.95
PCL_HEAD_PAIRS = (("mean_peer1", "peer1", "the temporal mean of a peer beats the live peer"),
                  ("ensemble", "mean_peer1", "the peer ensemble teacher (PCL-E) beats the deployed peer"))


@dataclass(frozen=True)
class Claim:
    """One claim: in table `table`, column `better` has a lower error than column `worse` (heads of the same runs
    when `paired`)."""

    table: str
    text: str
    better: str
    worse: str
    paired: bool = False


@dataclass
class Verdict:
    claim: Claim
    dataset: str
    row: str
    verdict: str
    effect: float  # mean error of `better` - mean error of `worse` (points; < 0 supports the claim)
    low: float
    high: float
    p_value: float
    n_better: int
    n_worse: int
    test: str
    setting: str = ""  # the table's dataset and settings (Table.setting_text): two tables of one dataset apart

    def as_row(self) -> dict[str, Any]:
        return {"table": self.claim.table, "dataset": self.dataset, "setting": self.setting, "backbone": self.row,
                "claim": self.claim.text, "verdict": self.verdict, "effect": self.effect, "ci_low": self.low,
                "ci_high": self.high, "p_value": self.p_value, "n": f"{self.n_better} vs {self.n_worse}",
                "test": self.test}


def _variants(module: str) -> list[str]:
    """The variant labels of an ablation script, in its order (the script is the one list)."""
    import importlib

    return list(importlib.import_module(module).VARIANTS)


def claims_for(table: Table) -> list[Claim]:
    """The paper's claims that `table` can test, from the columns it has."""
    columns = list(dict.fromkeys(table.runs["column"])) if not table.runs.empty else []
    name = table.name
    if name in ("table2", "imagenet"):
        return [Claim(name, f"PCL has a lower error than {METHOD_NAMES.get(c, c)}", "pcl", c)
                for c in columns if c != "pcl"] if "pcl" in columns else []
    if name == "two_stage":
        return [Claim(name, "online PCL has a lower error than two-stage KD", "pcl", "kd")]
    if name == "ablations.components":
        steps = _variants("ablations.components")
        pcl, without = steps[3], steps[4]
        return ([Claim(name, f"'{after}' lowers the error of '{before}'", after, before)
                 for before, after in zip(steps[:3], steps[1:4])]
                + [Claim(name, "multi-input lowers PCL's error", pcl, without)])
    if name == "ablations.mean_teacher":
        pcl, *others = _variants("ablations.mean_teacher")
        return [Claim(name, f"PCL's peer mean teachers beat '{other}'", pcl, other) for other in others]
    if name == "ablations.peers":
        return [Claim(name, f"m={m + 1} peers have a lower error than m={m}", f"m={m + 1}", f"m={m}")
                for m in (2, 3)]
    if name == "ablations.deployed_head":
        return [Claim(name, text, better, worse, paired=True) for better, worse, text in PCL_HEAD_PAIRS]
    return []


def _values(runs: pd.DataFrame, column: str) -> pd.Series:
    done = runs[(runs["column"] == column) & (runs["status"] == "completed")]
    values = pd.to_numeric(done["value"], errors="coerce")
    return pd.Series(values.to_numpy(), index=done["run_key"].to_numpy()).dropna()


def _half_width(df: float, se: float) -> float:
    """Half the width of the LEVEL t interval: Student's t quantile (scipy.special, as scipy.stats computes it; the
    special functions import in 0.2 s where scipy.stats takes 1 s, a fifth of a report's fixed cost)."""
    return float(special.stdtrit(df, 0.5 + LEVEL / 2)) * se


def _p_value(t: float, df: float) -> float:
    """The two-sided p-value of Student's t statistic `t` with `df` degrees of freedom (a Welch df of 0/0, from
    variances beyond a float's range, taken as 1, as scipy.stats takes it)."""
    return float(2.0 * special.stdtr(1.0 if math.isnan(df) else df, -abs(t)))


def _welch(better: np.ndarray, worse: np.ndarray) -> tuple[float, float, float, float]:
    diff = float(better.mean() - worse.mean())
    vb, vw = better.var(ddof=1) / len(better), worse.var(ddof=1) / len(worse)
    se = math.sqrt(vb + vw)
    if se == 0.0:  # identical values within each group: the difference is exact
        return diff, diff, diff, (0.0 if diff else 1.0)
    df = (vb + vw) ** 2 / (vb ** 2 / (len(better) - 1) + vw ** 2 / (len(worse) - 1))
    half = _half_width(df, se)
    return diff, diff - half, diff + half, _p_value(diff / se, df)  # Welch's t-test


def _paired(d: np.ndarray) -> tuple[float, float, float, float]:
    diff = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(len(d))
    if se == 0.0:
        return diff, diff, diff, (0.0 if diff else 1.0)
    half = _half_width(len(d) - 1, se)
    return diff, diff - half, diff + half, _p_value(diff / se, len(d) - 1)  # the paired (one-sample) t-test


def judge(claim: Claim, runs: pd.DataFrame, dataset: str, row: str) -> Verdict:
    """The verdict on `claim` from the runs of one table row (one backbone of one dataset)."""
    better, worse = _values(runs, claim.better), _values(runs, claim.worse)
    nan = math.nan
    if claim.paired:
        common = better.index.intersection(worse.index)
        d = (better[common] - worse[common]).to_numpy(dtype=float)
        n_b = n_w = len(d)
        test = "paired t-test over runs (the same runs' two heads)"
        stats_ = _paired(d) if len(d) >= 2 else (nan, nan, nan, nan)
    else:
        n_b, n_w = len(better), len(worse)
        test = "Welch's t-test over seeds"
        stats_ = (_welch(better.to_numpy(dtype=float), worse.to_numpy(dtype=float)) if min(n_b, n_w) >= 2
                  else (nan, nan, nan, nan))
    effect, low, high, p = stats_
    if min(n_b, n_w) < 2:
        verdict = TOO_FEW
    else:
        verdict = HELD if high < 0 else CONTRADICTED if low > 0 else UNRESOLVED
    return Verdict(claim, dataset, row, verdict, effect, low, high, p, n_b, n_w, test)


def verdicts(tables: Iterable[Table]) -> list[Verdict]:
    out = []
    for table in tables:
        if table.runs.empty:
            continue
        for row, runs in table.runs.groupby("row", sort=False):
            for claim in claims_for(table):
                if {claim.better, claim.worse} <= set(runs["column"]):
                    out.append(dataclasses.replace(judge(claim, runs, table.dataset, str(row)),
                                                   setting=table.setting_text))
    return out


# ---- the cells against the paper's numbers ---------------------------------------------------------------------
def reproduced(table: Table) -> pd.DataFrame:
    """Per cell with a paper number: our mean, its 95 % t-interval over seeds and whether the paper's number lies
    inside ("reproduced"), or why it cannot say (fewer than 2 runs, not the paper's setting)."""
    gaps = table.setting.gaps if table.setting is not None else []
    rows = []
    for c in table.cells.to_dict("records"):
        reference = c.get("paper_err")
        if reference is None or (isinstance(reference, float) and math.isnan(reference)):
            continue
        n, mean, std = int(c.get("n") or 0), c.get("mean"), c.get("std")
        low = high = math.nan
        if gaps:
            verdict = "not comparable: " + "; ".join(gaps)
        elif n < 2:
            verdict = TOO_FEW
        else:
            half = _half_width(n - 1, float(std) / math.sqrt(n))
            low, high = float(mean) - half, float(mean) + half
            verdict = "reproduced" if low <= float(reference) <= high else "not reproduced"
        rows.append({"table": table.name, "dataset": table.dataset, "setting": table.setting_text,
                     "backbone": c["row"], "column": c["column"], "ours": mean, "ci_low": low, "ci_high": high,
                     "n": n, "paper": reference, "paper_confidence": c.get("paper_conf"), "verdict": verdict})
    return pd.DataFrame(rows)


# ---- rendering ------------------------------------------------------------------------------------------------
def _num(x: float, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def render_markdown(found: Sequence[Verdict], cells: Sequence[pd.DataFrame]) -> str:
    """The claims section (Markdown; every text from a record escaped)."""
    md = escape.markdown

    def shown(names: dict[str, str], name: Any) -> str:  # as the tables name them (a record's own name escaped)
        return md(names.get(name, name) if isinstance(name, str) else name)

    lines = ["## The paper's claims, judged from these runs", "",
             f"Effect: mean top-1 error of the claimed better column minus the other (points; < 0 supports the "
             f"claim), {LEVEL:.0%} interval. Verdicts: *held* (the whole interval is below 0), *{CONTRADICTED}* (it "
             f"is above 0), *{UNRESOLVED}* (it holds 0: more seeds may decide).", ""]
    if not found:
        lines += ["No claim can be judged: no table has both columns of a claim.", ""]
    else:
        lines += ["| table | setting | backbone | claim | verdict | effect [95% CI] | p | n | test |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for v in found:
            ci = f"{_num(v.effect, True)} [{_num(v.low, True)}, {_num(v.high, True)}]"
            p = "-" if math.isnan(v.p_value) else f"{v.p_value:.3g}"
            setting = md(v.setting) if v.setting else shown(DATASET_NAMES, v.dataset)  # judged outside a table
            where = f"{md(v.claim.table)} | {setting} | {shown(BACKBONE_NAMES, v.row)}"
            lines.append(f"| {where} | {md(v.claim.text)} | **{v.verdict}** | {ci} | {p} | "
                         f"{v.n_better} vs {v.n_worse} | {v.test} |")
        lines.append("")
    frame = pd.concat([c for c in cells if not c.empty], ignore_index=True) if any(
        not c.empty for c in cells) else pd.DataFrame()
    lines += ["### The paper's numbers against our intervals", ""]
    if frame.empty:
        lines += ["No cell of these tables has a paper number.", ""]
    else:
        lines += ["| table | setting | backbone | column | ours [95% CI] | n | paper | verdict |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in frame.to_dict("records"):
            ours = f"{_num(r['ours'])} [{_num(r['ci_low'])}, {_num(r['ci_high'])}]"
            where = f"{md(r['table'])} | {md(r['setting'])} | {shown(BACKBONE_NAMES, r['backbone'])}"
            lines.append(f"| {where} | {md(r['column'])} | {ours} | {r['n']} | {_num(r['paper'])} "
                         f"({md(str(r['paper_confidence']))}) | {md(r['verdict'])} |")
        lines.append("")
    return "\n".join(lines)


def claims_section(tables: Sequence[Table]) -> str:
    return render_markdown(verdicts(tables), [reproduced(t) for t in tables])


def main(argv: Sequence[str] | None = None) -> int:
    p = cli.parser("claims.py", __doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, type=cli.out_path(folder=True),
                   help="also write claims.md and claims.csv into this folder")
    args = p.parse_args(argv)
    tables, skipped = build_tables(args.tables, cli.stores(args), **cli.table_kwargs(args))
    text = claims_section(tables)
    for line in text.split("\n"):
        print(escape.terminal(line))
    if args.out:
        from pathlib import Path

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        replace_file(out / "claims.md", text + "\n")
        replace_file(out / "claims.csv", pd.DataFrame([v.as_row() for v in verdicts(tables)]).to_csv(index=False))
        print(f"written: {out / 'claims.md'}, {out / 'claims.csv'}")
    for line in skipped:
        print(f"skipped: {escape.terminal(line)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
