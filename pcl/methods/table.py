"""The methods side by side: what each trains, what it deploys, and the parameter counts the code computes.

`python -m pcl.methods.table` prints the markdown kept in docs/methods.md; a test checks that file against this
output, so the document cannot drift from the code (re-run `python -m pcl.methods.table > docs/methods.md` after a
change). Every method is built with its default options, for resnet32 on CIFAR-100, the paper's main setting.
"""
from __future__ import annotations

import inspect
import re
import tempfile
from pathlib import Path

from pcl.methods import METHODS, Method, build_method, method_class, method_defaults
from pcl.models import DEFAULT_DROPOUT

BACKBONE = "resnet32"
NUM_CLASSES = 100

# What each method trains / deploys, in words; {peers} and {backbone} are filled from the built method.
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "baseline": ("one {backbone}, CE only", "the network"),
    "pcl": ("{peers} peers on shared stem + stages 1-2, peer j on its own view; concat-FC ensemble teacher; "
            "peer mean teachers from a temporal mean (EMA, not trained)",
            "shared + peer 1 of the temporal mean"),
    "dml": ("{peers} full networks on the same batch, each distils from the others", "network 1"),
    "cl_ilr": ("{peers} branches on shared stem + stages 1-2 (shared gradient divided by {peers}), each distils "
               "from the mean of the others", "shared + branch 1"),
    "one": ("{peers} branches on shared stem + stages 1-2 + a gate; the gated ensemble teaches every branch",
            "shared + branch 1"),
    "ffl": ("{peers} sub-network branches on shared stem + stages 1-2 + fusion module (depthwise/pointwise conv) "
            "+ fused classifier", "shared + sub-network 1 (FFL-S)"),
    "okddip": ("{peers} auxiliary peers + 1 group leader on shared stem + stages 1-2, query/key projections for "
               "the peers' attention", "shared + group leader"),
    "kdcl": ("{peers} full networks, each on its own view; the ensemble of their logits teaches each",
             "network 1"),
    "kd": ("one {backbone} student; the teacher (here a {backbone} baseline run) is frozen", "the student"),
}

# What a method holds during training without training it (counted apart from the training column).
FROZEN_NOTES: dict[str, str] = {"pcl": "the temporal-mean network", "kd": "the frozen teacher"}

# Heads besides the peers and the deployed one, in words (their parameter counts come from the code).
HEAD_NOTES: dict[tuple[str, str], str] = {
    ("pcl", "ensemble"): ("the peer ensemble teacher, a Linear on the live peers' concatenated features; its "
                          "classifier is the paper's '0.01-0.08M extra parameters', so most probably the paper's "
                          "PCL-E"),
    ("pcl", "pcl_e"): ("the mean of the temporal-mean peers' logits, Algorithm 1's ensemble model "
                       "{theta_l, theta_h,j}: no extra parameters"),
    ("dml", "ensemble"): "mean logits of the networks",
    ("kdcl", "ensemble"): "mean logits of the networks",
    ("cl_ilr", "ensemble"): "mean logits of the branches",
    ("one", "ensemble"): "the gated teacher: branches + gate",
    ("ffl", "fused"): "the fused classifier: branch bodies + fusion module",
    ("okddip", "ensemble"): "mean logits of the auxiliary peers",
    ("kd", "teacher"): "the frozen teacher",
}

# Where the public reference codes disagree: (method, option, the other choice, what it means). The default
# shown is read from the method's signature, so it cannot drift from the code.
DISAGREEMENTS: tuple[tuple[str, str, object, str], ...] = (
    ("dml", "target", "mean_others",
     ("pairwise: 1/(K-1) sum_l KD(z_k <- z_l), the DML paper's loss (OKDDip code's `--type`); mean_others: "
      "KD(z_k <- mean of the others' logits), the OKDDip code's default")),
    ("dml", "temperature", 1.0, "T = 3 as the OKDDip code; the original DML uses T = 1"),
    ("cl_ilr", "detach_target", False,
     ("True: the mean of the other branches is a fixed target (as every KD target here); False: it carries gradient "
      "into them")),
    ("ffl", "peers", 2, "number of sub-networks: m = 3 like every method (ours); the official FFL code uses 2"),
    ("ffl", "fusion_weight_decay", 1e-5,
     ("weight decay of the fusion module: None = the recipe's (like every parameter); the official code uses 1e-5 "
      "(its network 1e-4)")),
    ("okddip", "detach_targets", False,
     ("True: the peers' logits inside the targets are fixed (as every KD target here); False: the OKDDip code, which "
      "detaches nothing")),
    ("okddip", "scaled_attention", True, "False: q.k unscaled as the OKDDip code; True: divided by sqrt(d)"),
)

# Meanings of the options several methods share; a method's own __init__ docstring ("name: meaning.") overrides them.
COMMON_OPTIONS: dict[str, str] = {
    "peers": "number of peers / branches / networks m (top-level config key `peers`)",
    "temperature": "softmax temperature T of the KD terms (each scaled by T^2)",
    "rampup_length": "epochs of the sigmoid ramp-up w(e) = exp(-5(1 - e/L)^2) of the distillation weight (0: none)",
}


def option_meanings(name: str) -> dict[str, str]:
    """Each option of method `name` -> its meaning, from the method's __init__ docstring (`option: meaning.`, also
    `a / b: meaning.`), else COMMON_OPTIONS, else "(undocumented)"."""
    doc = " ".join((inspect.getdoc(method_class(name).__init__) or "").split())
    options = method_defaults(name)
    marker = re.compile(r"(?:^|(?<=\. ))((?:%s)(?: / (?:%s))*): " % ("|".join(map(re.escape, options)),
                                                                    "|".join(map(re.escape, options))))
    found: dict[str, str] = {}
    hits = list(marker.finditer(doc)) if options else []
    for i, hit in enumerate(hits):
        end = hits[i + 1].start() if i + 1 < len(hits) else len(doc)
        for key in hit.group(1).split(" / "):
            found[key] = doc[hit.end():end].strip()
    out = {}
    for key in options:
        parts = [COMMON_OPTIONS.get(key), found.get(key)]
        out[key] = "; ".join(p.rstrip(".") for p in parts if p) or "(undocumented)"
    return out


def options_markdown() -> list[str]:
    """The options section: every method's options with default and meaning."""
    lines = ["## Options", "",
             "Set with `options.NAME=VALUE` (e.g. `options.temperature=4`; `peers` is the top-level key `peers=N`). "
             "`plan` and `print_config` show the resolved options of every method of a grid.", ""]
    for name in METHODS:
        meanings = option_meanings(name)
        lines.append(f"### {name}")
        lines.append("")
        if not meanings:
            lines += ["(no options)", ""]
            continue
        lines += ["| option | default | meaning |", "|---|---|---|"]
        for key, default in method_defaults(name).items():
            meaning = meanings[key].replace("|", "\\|")
            lines.append(f"| `{key}` | `{default!r}` | {meaning} |")
        lines.append("")
    return lines


HEADER = ("| method | what it trains | what it deploys | parameters at training | parameters at deployment |\n"
          "|---|---|---|---:|---:|")


def _build(name: str, workdir: Path) -> Method:
    """The method with its defaults; KD gets a real deployed-model file of an untrained baseline as its teacher."""
    options = {}
    if name == "kd":
        from pcl.runner import save_deployed  # the runner imports the methods package: import it late

        teacher_path = workdir / "teacher_deployed.pt"
        save_deployed(build_method("baseline", BACKBONE, NUM_CLASSES), teacher_path)
        options["teacher_path"] = str(teacher_path)
    return build_method(name, BACKBONE, NUM_CLASSES, **options)


def method_rows() -> list[dict[str, object]]:
    """One dict per registered method: name, descriptions, trained / deployed / held-but-frozen parameter counts."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in METHODS:
            method = _build(name, Path(tmp))
            counts = method.parameter_counts()
            trains, deploys = DESCRIPTIONS.get(name, ("(not described)", "(not described)"))
            fill = {"peers": getattr(method, "peers", 1), "backbone": BACKBONE}
            head_counts = method.head_parameter_counts()
            peers = set(method.peer_heads)
            others = {h: n for h, n in head_counts.items() if h != method.deployed_head and h not in peers
                      and not h.startswith("mean_peer")}
            rows.append({
                "method": name,
                "trains": trains.format(**fill),
                "deploys": deploys.format(**fill),
                "params_train": counts["params_train"],
                "params_deployed": counts["params_deployed"],
                "params_frozen": sum(p.numel() for p in method.parameters()) - counts["params_train"],
                "peer_heads": ", ".join(method.peer_heads) or "-",
                "other_heads": others,
            })
    return rows


def markdown() -> str:
    """The whole docs/methods.md text."""
    rows = method_rows()
    lines = [
        "# The methods compared",
        "",
        f"Generated by `python -m pcl.methods.table` for {BACKBONE} on CIFAR-100 ({NUM_CLASSES} classes), every "
        "method with its default options. Do not edit by hand: a test checks this file against the code.",
        "",
        "Parameters at training are those that receive gradients (`Method.parameter_counts()['params_train']`); "
        "at deployment, those of the exported plain backbone (`export_deployed()`).",
        "",
        HEADER,
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['trains']} | {r['deploys']} | {r['params_train']:,} | "
                     f"{r['params_deployed']:,} |")
    frozen = [f"{r['method']} {r['params_frozen']:,} ({FROZEN_NOTES.get(str(r['method']), 'frozen')})"
              for r in rows if r["params_frozen"]]
    if frozen:
        lines += ["", "Held during training but not trained, so not in the training column: " + "; ".join(frozen)
                  + "."]
    lines += [
        "",
        "## Peers and ensemble heads",
        "",
        "The peers are the heads whose diversity is logged every epoch as `test/diversity` (mean pairwise "
        "disagreement of their top-1 predictions on the test set, %; see `pcl/diversity.py`). Parameters at "
        "deployment of every other head are recorded as `params_deployed/<head>` "
        "(`Method.head_parameter_counts()`).",
        "",
        "| method | peers | other heads: parameters at deployment |",
        "|---|---|---|",
    ]
    for r in rows:
        others = "; ".join(f"`{h}` {n:,}" + (f" ({HEAD_NOTES[(str(r['method']), h)]})"
                                              if (str(r["method"]), h) in HEAD_NOTES else "")
                           for h, n in r["other_heads"].items()) or "-"
        lines.append(f"| {r['method']} | {r['peer_heads']} | {others} |")
    pcl_heads = next(r["other_heads"] for r in rows if r["method"] == "pcl")
    extra = (pcl_heads["ensemble"] - pcl_heads["pcl_e"]) / 1e6
    lines += [
        "",
        "PCL-E: every PCL run logs both candidates with their counts. `ensemble` is what the paper most probably "
        f"calls PCL-E: its extra parameters over `pcl_e` are the ensemble teacher's classifier, {extra:.3f}M here. "
        "`pcl_e` is the average of the temporal-mean peers.",
        "",
        "## Options where the reference codes disagree",
        "",
        ("The default is this project's choice (see each row's meaning); the other choice is one option away "
         "(`options.<name>=...` in a run's config)."),
        "",
        "| method | option | default | other choice | meaning |",
        "|---|---|---|---|---|",
    ]
    for method, option, other, meaning in DISAGREEMENTS:
        default = method_defaults(method)[option]
        lines.append(f"| {method} | `{option}` | `{default!r}` | `{other!r}` | {meaning} |")
    zoo = ", ".join(f"{b} {p}" for b, p in DEFAULT_DROPOUT.items())
    lines += [
        "",
        f"Dropout is the run's `dropout` key, the same for every method: None = the zoo's default ({zoo}; the other "
        "backbones have no dropout layer and refuse a value).",
    ]
    lines += ["", *options_markdown()]
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
