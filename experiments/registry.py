"""The one list of the suite's table and ablation scripts, and their plans (the runs a script's grid expands to).

The launcher (slurm/) and the analysis (analysis/) iterate over `SCRIPTS` instead of over file names. A script's
plan is what `python SCRIPT.py plan with ...` lists: the same code (Sacred resolves the config, `expand` builds
and validates every run config), so a table is built from exactly the run_keys its script trains.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Script:
    """One table/ablation script: its CLI name (`--tables` value), module and what it reproduces."""

    name: str
    module: str
    paper: str

    @property
    def path(self) -> Path:
        return ROOT / (self.module.replace(".", "/") + ".py")


#: every table and ablation of the paper, in the paper's order (name -> script)
SCRIPTS: dict[str, Script] = {s.name: s for s in (
    Script("table2", "experiments.table2", "CIFAR comparison (main table)"),
    Script("imagenet", "experiments.imagenet", "ImageNet, ResNet-18"),
    Script("two_stage", "experiments.two_stage", "online vs two-stage KD"),
    Script("ablations.components", "ablations.components", "components ablation"),
    Script("ablations.mean_teacher", "ablations.mean_teacher", "peer mean teacher ablation"),
    Script("ablations.ensemble_teacher", "ablations.ensemble_teacher", "peer ensemble teacher ablation"),
    Script("ablations.peers", "ablations.peers", "number of peers"),
    Script("ablations.deployed_head", "ablations.deployed_head", "deployed model / PCL-E"),
)}


def script(name: str) -> Script:
    """The registered script `name`; KeyError naming the known ones."""
    try:
        return SCRIPTS[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(SCRIPTS)}") from None


def experiment(name: str):
    """The Sacred driver experiment of script `name` (its module imported)."""
    return importlib.import_module(script(name).module).ex


def declared_named_configs(ex: Any, names: Sequence[str]) -> list[str]:
    """`names` when each is a named config the script declares (quick, smoke); else Sacred's own
    NamedConfigNotFoundError. Sacred takes a name that is a file's path as a config file and reads it with pickle,
    jsonpickle or YAML, so a name from a command line could run what a file says: every run, plan and analysis
    of the suite resolves its named configs through here first."""
    from sacred.utils import NamedConfigNotFoundError

    for name in names:
        if not isinstance(name, str) or name not in ex.named_configs:
            raise NamedConfigNotFoundError(named_config=name, available_named_configs=tuple(ex.named_configs))
    return list(names)


def resolved_config(name: str, config_updates: Mapping[str, Any] | None = None,
                    named_configs: Sequence[str] = ()) -> dict[str, Any]:
    """The script's config as Sacred resolves it for `with NAMED KEY=VALUE ...` (nothing runs, nothing recorded)."""
    from pcl.tracking import plain

    ex = experiment(name)
    run = ex._create_run("plan", config_updates=dict(config_updates or {}),
                         named_configs=declared_named_configs(ex, named_configs), options={"--unobserved": True})
    return plain(run.config)


def plan(name: str, config_updates: Mapping[str, Any] | None = None,
         named_configs: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The validated run configs (each with its `run_key`) of script `name` for this config, in grid order.

    Raises pcl.tracking.ConfigError naming the key for any invalid value.
    """
    return plan_for_config(name, resolved_config(name, config_updates, named_configs))


def plan_for_config(name: str, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The validated run configs of script `name` for a config Sacred already resolved (a driver's `_config`, or
    `resolved_config`): its grid expanded by the driver (experiments.common.expand), in grid order."""
    return experiment(name).plan_for_config(config)
