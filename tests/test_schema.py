"""The one definition of a run (pcl.schema): run_keys stay put, every consumer derives from the schema."""
from __future__ import annotations

import pytest

from pcl import schema

#: run_keys computed by the code before the schema existed (commit 81a0d2a): a store's COMPLETED runs stay found.
PINNED = {
    "c862fc01c350289a": {},
    "2b1dca3d000a0670": {"dataset": "cifar10", "backbone": "wrn20_8", "method": "baseline", "seed": 2},
    "84687fa3c8975a79": {"method": "dml", "backbone": "resnet110", "options": {"temperature": 4.0}},
    "26775ae116c92d3b": {"method": "okddip", "backbone": "resnet110", "seed": 1},
    "ca91f14157926041": {"method": "cl_ilr", "backbone": "wrn20_8"},
    "16d0f4e647ec1c0a": {"method": "ffl", "backbone": "resnet32", "seed": 2},
    "1ebf9919516e1386": {"method": "kd", "options": {"teacher_backbone": "resnet110"},
                         "teacher_run_key": "0123456789abcdef"},
    "19fd73a93bbff149": {"dataset": "imagenet", "backbone": "resnet18", "method": "baseline", "epochs": 90,
                         "batch_size": 256, "weight_decay": 0.0001},
    "fee354f648027098": {"dataset": "synthetic", "backbone": "tiny_resnet8", "method": "baseline", "epochs": 1,
                         "batch_size": 32, "synthetic_classes": 4, "synthetic_train_size": 128,
                         "synthetic_test_size": 64},
    "9bd644c635d8d4d7": {"peers": 4, "device": "cpu", "checkpoint_root": "/elsewhere", "label": "x",
                         "progress": True},
}


@pytest.mark.parametrize("key,raw", list(PINNED.items()), ids=list(PINNED))
def test_run_keys_of_existing_configs_are_unchanged(key, raw):
    assert schema.normalize_run_config(raw)["run_key"] == key


def test_normalizing_is_idempotent_and_complete():
    cfg = schema.normalize_run_config({"method": "dml", "seed": 3})
    assert schema.normalize_run_config(cfg) == cfg
    assert set(cfg) == set(schema.RUN_KEYS)


def test_every_key_has_type_unit_doc_and_identity_flag():
    for key in schema.KEYS.values():
        assert key.doc and key.type and key.group in schema.GROUPS, key.name
        assert isinstance(key.identity, bool)
    identity = {k.name for k in schema.KEYS.values() if k.identity}
    assert {"dataset", "backbone", "method", "options", "seed", "epochs", "lr"} <= identity
    assert not identity & {"progress", "checkpoint_root", "device", "label", "results_dir", "mongo_url"}


def test_per_dataset_recipe_defaults_live_in_one_place():
    cifar = schema.normalize_run_config({"dataset": "cifar10", "method": "baseline"})
    imagenet = schema.normalize_run_config({"dataset": "imagenet", "backbone": "resnet18", "method": "baseline"})
    assert (cifar["epochs"], cifar["batch_size"], cifar["weight_decay"], cifar["milestones"]) == (
        300, 128, 5e-4, [150, 225])
    assert (imagenet["epochs"], imagenet["batch_size"], imagenet["weight_decay"], imagenet["milestones"]) == (
        90, 256, 1e-4, [30, 60])
    assert schema.dataset_defaults("imagenet")["epochs"] == 90


def test_an_infrastructure_key_never_moves_the_run_key():
    base = schema.normalize_run_config({"method": "baseline"})
    for key in (k for k in schema.RUN_KEYS if not schema.KEYS[k].identity and k != "run_key"):
        value = schema.KEYS[key].example_other
        changed = schema.normalize_run_config({"method": "baseline", key: value})
        assert changed["run_key"] == base["run_key"], key


def test_an_identity_key_moves_the_run_key():
    base = schema.normalize_run_config({"method": "baseline"})["run_key"]
    for raw in ({"seed": 1}, {"epochs": 200}, {"lr": 0.05}, {"precision": "bf16"}, {"backbone": "vgg16"}):
        assert schema.normalize_run_config({"method": "baseline", **raw})["run_key"] != base, raw


def test_docs_config_md_lists_every_key():
    from pcl.docs import config_markdown

    text = config_markdown()
    for name in schema.KEYS:
        assert f"| {name} |" in text


def test_a_changed_backbone_definition_moves_its_run_keys_only():
    """VGG-16 and DenseNet-40-12 now initialise as the OKDDip/ONE zoo does (revision 2): their runs are new runs;
    the keys computed before for them (commit 81a0d2a) must not match."""
    assert schema.normalize_run_config({"method": "pcl", "backbone": "vgg16"})["run_key"] != "472e8aab81e02ec6"
    assert schema.normalize_run_config({"method": "baseline", "backbone": "densenet40_12"})["run_key"] != \
        "7504fb1494a02d14"
    vgg = schema.normalize_run_config({"method": "pcl", "backbone": "vgg16"})
    assert vgg["dropout"] == 0.5 and vgg["backbone_revision"] == 2
    assert schema.normalize_run_config({**vgg, "dropout": 0.0})["run_key"] != vgg["run_key"]


def test_dropout_is_refused_where_the_backbone_has_none():
    with pytest.raises(schema.ConfigError, match="dropout"):
        schema.normalize_run_config({"method": "pcl", "backbone": "resnet32", "dropout": 0.5})
