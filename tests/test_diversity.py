"""Peer diversity (pcl.diversity): the measure by hand, 0 for identical peers, and its per-epoch logging by the engine
for every multi-peer method (not for single-network ones), read back once per evaluation."""
from __future__ import annotations

import pytest
import torch

from pcl.diversity import disagreement_count, diversity_percent, num_pairs
from pcl.engine import Recipe, evaluate, summarize, train
from pcl.seeding import seed_everything
from pcl.methods import build_method


def _logits_for(predictions: list[int], classes: int = 3) -> torch.Tensor:
    """Logits whose top-1 classes are `predictions` (one row per sample)."""
    z = torch.zeros(len(predictions), classes)
    z[torch.arange(len(predictions)), torch.tensor(predictions)] = 1.0
    return z


def test_disagreement_by_hand():
    # peer a: 0 1 2, peer b: 0 1 1, peer c: 1 1 2 -> pairs (a,b): 1 sample, (a,c): 1, (b,c): 2 -> 4 of 3 * 3
    peers = [_logits_for([0, 1, 2]), _logits_for([0, 1, 1]), _logits_for([1, 1, 2])]
    count = disagreement_count(peers)
    assert count.dtype == torch.int64 and count.item() == 4
    assert num_pairs(3) == 3 and num_pairs(2) == 1
    assert diversity_percent(4, 3, 3) == pytest.approx(100 * 4 / 9)
    assert disagreement_count(peers[:2]).item() == 1
    assert disagreement_count([peers[0], peers[0] * 5.0]).item() == 0  # same top-1 classes, other confidences
    with pytest.raises(ValueError, match="at least 2 peers"):
        disagreement_count(peers[:1])


def test_identical_peers_have_zero_diversity_and_different_peers_more(tiny_loaders):
    loaders = tiny_loaders(1)
    torch.manual_seed(0)
    method = build_method("cl_ilr", "tiny_resnet8", loaders[2])
    assert method.peer_heads == ("branch1", "branch2", "branch3")
    assert evaluate(method, loaders[1])["test/diversity"] > 0  # independent random inits predict differently
    for branch in method.net.branches[1:]:
        branch.load_state_dict(method.net.branches[0].state_dict())
    assert evaluate(method, loaders[1])["test/diversity"] == 0.0


def test_evaluation_reads_the_device_once_whatever_the_number_of_batches(tiny_loaders, monkeypatch):
    """The disagreement count joins the error counts in the one host read at the end of the evaluation."""
    loaders = tiny_loaders(1, test_size=128, batch_size=32)
    assert len(loaders[1]) == 4
    method = build_method("dml", "tiny_resnet8", loaders[2], peers=3)
    reads = []
    original_cpu = torch.Tensor.cpu

    def counting_cpu(self, *args, **kwargs):
        reads.append(tuple(self.shape))
        return original_cpu(self, *args, **kwargs)

    def forbidden(*_a, **_k):
        raise AssertionError("host read inside the evaluation loop")

    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "cpu", counting_cpu)
        for name in ("item", "__bool__", "__float__", "__int__"):
            m.setattr(torch.Tensor, name, forbidden)
        metrics = evaluate(method, loaders[1])
    assert len(reads) == 1
    assert 0 < metrics["test/diversity"] <= 100


def test_every_epoch_logs_diversity_for_multi_peer_methods_only(tiny_loaders):
    loaders = tiny_loaders(1)
    recipe = Recipe(epochs=2, lr=0.05, milestones=(1,))
    seed_everything(0)
    dml = train(build_method("dml", "tiny_resnet8", loaders[2], peers=2), loaders[0], loaders[1], recipe)
    assert all(0 <= h["test/diversity"] <= 100 for h in dml.history) and len(dml.history) == 2
    assert dml.summary["last/diversity"] == dml.history[-1]["test/diversity"]
    assert "best_on_test/diversity" not in dml.summary  # a "best" diversity would mean nothing
    seed_everything(0)
    baseline = train(build_method("baseline", "tiny_resnet8", loaders[2]), loaders[0], loaders[1], recipe)
    assert all("test/diversity" not in h for h in baseline.history)


def test_summarize_keeps_diversity_as_last_value_only():
    history = [{"epoch": 1, "test/top1_err/a": 50.0, "test/diversity": 10.0},
               {"epoch": 2, "test/top1_err/a": 40.0, "test/diversity": 20.0}]
    s = summarize(history, "a")
    assert s["last/diversity"] == 20.0 and "best_on_test/diversity" not in s
    assert s["best_on_test/top1_err/a"] == 40.0


@pytest.mark.parametrize("name", ["pcl", "dml", "kdcl", "one", "ffl", "okddip", "cl_ilr"])
def test_every_multi_peer_method_has_its_diversity_evaluated(name, tiny_loaders):
    loaders = tiny_loaders(1, test_size=64)
    torch.manual_seed(0)
    method = build_method(name, "tiny_resnet8", loaders[2])
    assert len(method.peer_heads) == 3
    assert 0 <= evaluate(method, loaders[1])["test/diversity"] <= 100
