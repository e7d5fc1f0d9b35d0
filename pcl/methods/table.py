"""The methods and backbones side by side: what each trains, what it deploys, and the parameter counts the code
computes; every word comes from the declarations (pcl.declarations), every count from a build.

`python -m pcl.docs` writes docs/methods.md from `markdown()` (with every other generated doc); a test checks the
file against this output, so the document cannot drift from the code. Every method is built with its default
options, for resnet32 on CIFAR-100, the paper's main setting.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from pcl import registry
from pcl.methods import METHODS, Method, build_method

BACKBONE = "resnet32"
NUM_CLASSES = 100


def options_markdown() -> list[str]:
    """The options section: every method's options with default, allowed values and meaning (declared)."""
    lines = ["## Options", "",
             "Set with `options.NAME=VALUE` (e.g. `options.temperature=4`; `peers` is the top-level key `peers=N`). "
             "`plan` and `print_config` show the resolved options of every method of a grid. Options marked "
             "*time constant* keep their share of the paper's 300-epoch schedule in a shorter run unless set.", ""]
    for name, spec in registry.methods().items():
        lines.append(f"### {name}")
        lines.append("")
        if not spec.options:
            lines += ["(no options)", ""]
            continue
        lines += ["| option | default | allowed | meaning |", "|---|---|---|---|"]
        for option in spec.options:
            meaning = option.doc + (" (*time constant*)" if option.time_constant else "")
            if option.acts_only_with:  # what makes it inert: its unset value is then used (one run_key)
                meaning += " (acts only with " + " or ".join(
                    " and ".join(f"`{k}` {'=' if len(v) == 1 else 'in'} {v[0] if len(v) == 1 else list(v)!r}"
                                 for k, v in condition.items()) for condition in option.acts_only_with) + ")"
            allowed = option.allowed + (f" (the name of a `{option.names}`)" if option.names else "")
            cells = [f"`{option.name}`", f"`{option.default!r}`", allowed, meaning]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return lines


HEADER = ("| method | what it trains | what it deploys | parameters at training | parameters at deployment |\n"
          "|---|---|---|---:|---:|")


def _build(name: str, workdir: Path) -> Method:
    """The method with its defaults and the files its options need (Method.example_inputs: kd's teacher)."""
    return build_method(name, BACKBONE, NUM_CLASSES, **METHODS[name].example_inputs(workdir, BACKBONE, NUM_CLASSES))


def method_rows() -> list[dict[str, object]]:
    """One dict per registered method: name, descriptions, trained / deployed / held-but-frozen parameter counts."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in METHODS:
            method = _build(name, Path(tmp))
            counts = method.parameter_counts()
            spec = registry.method(name)
            trains, deploys = spec.trains, spec.deploys
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


def _head_doc(spec, head: str) -> str:
    declared = spec.head(head)
    return declared.doc if declared is not None else ""


def backbones_markdown() -> list[str]:
    """The backbones section: every declared backbone with its counts, split and initialisation."""
    lines = ["## Backbones", "",
             "Declared in their files (`DECLARATIONS` in pcl/models/); the parameter counts are declared and a test "
             "builds every backbone to compare. `split`: where the shared low-level layers end and a peer's branch "
             "begins.", "",
             "| backbone | name | datasets | parameters (classes: count) | split | initialisation | dropout | "
             "in the paper's tables |", "|---|---|---|---|---|---|---|---|"]
    for name, spec in registry.backbones().items():
        params = "; ".join(f"{c}: {n:,}" for c, n in spec.params.items())
        tables = ", ".join(spec.tables) or ("-" if spec.in_paper else "not in the paper")
        lines.append(f"| `{name}` | {spec.display} | {', '.join(spec.datasets)} | {params} | {spec.split} | "
                     f"{spec.init} | {spec.dropout if spec.dropout is not None else '-'} | {tables} |")
    return [*lines, ""]


def markdown() -> str:
    """The whole docs/methods.md text."""
    rows = method_rows()
    lines = [
        "# The methods compared",
        "",
        f"Generated by `python -m pcl.docs` for {BACKBONE} on CIFAR-100 ({NUM_CLASSES} classes), every "
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
    frozen = [f"{r['method']} {r['params_frozen']:,} ({registry.method(str(r['method'])).frozen_note or 'frozen'})"
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
        spec = registry.method(str(r["method"]))
        others = "; ".join(f"`{h}` {n:,}" + (f" ({doc})" if (doc := _head_doc(spec, h)) else "")
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
    for spec in registry.methods().values():
        for option in spec.options:
            if option.disagreement is not None:
                other, meaning = option.disagreement
                lines.append(f"| {spec.name} | `{option.name}` | `{option.default!r}` | `{other!r}` | {meaning} |")
    zoo = ", ".join(f"{b} {p}" for b, p in registry.default_dropout().items())
    lines += [
        "",
        f"Dropout is the run's `dropout` key, the same for every method: None = the zoo's default ({zoo}; the other "
        "backbones have no dropout layer and refuse a value).",
    ]
    lines += ["", *options_markdown(), *backbones_markdown()]
    return "\n".join(lines).rstrip("\n") + "\n"
