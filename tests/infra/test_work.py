"""The per-checkpoint runner: prune, reuse by identity, compute atomically, results in plan order."""

import pytest
import torch

from protoviz_core.infra.work import WorkItem, identity, pending, prune, read_result, run_work


def _items(values, calls, key_suffix=""):
    def make(name, value):
        def compute():
            calls.append(name)
            return {"value": torch.tensor([value])}

        return WorkItem(name, identity(name, value, key_suffix), compute)

    return [make(f"epoch_{i:04d}.pt", v) for i, v in enumerate(values)]


def test_computes_once_then_reuses_and_returns_plan_order(tmp_path):
    calls, done = [], []
    results = run_work(
        _items([3, 1, 2], calls), tmp_path, on_done=lambda item, reused: done.append((item.name, reused))
    )
    assert [r["value"].item() for r in results] == [3, 1, 2] and len(calls) == 3
    assert all(not reused for _, reused in done)
    again = run_work(_items([3, 1, 2], calls), tmp_path)
    assert [r["value"].item() for r in again] == [3, 1, 2] and len(calls) == 3  # nothing recomputed
    stored = torch.load(tmp_path / "epoch_0001.pt", weights_only=True)
    assert set(stored) == {"key", "value"} and stored["key"] == _items([3, 1, 2], [])[1].key


def test_a_changed_identity_or_a_truncated_file_is_recomputed(tmp_path):
    calls = []
    run_work(_items([1, 2], calls), tmp_path)
    (tmp_path / "epoch_0000.pt").write_bytes((tmp_path / "epoch_0000.pt").read_bytes()[:50])
    assert [item.name for item in pending(tmp_path, _items([1, 2], []))] == ["epoch_0000.pt"]
    assert len(pending(tmp_path, _items([1, 2], [], key_suffix="other settings"))) == 2
    calls.clear()
    run_work(_items([1, 2], calls), tmp_path)
    assert calls == ["epoch_0000.pt"]


def test_files_no_item_will_produce_are_removed_others_left_alone(tmp_path):
    run_work(_items([1, 2, 3], []), tmp_path)
    (tmp_path / "notes.txt").write_text("not ours")
    # A killed write of a file no longer planned
    (tmp_path / ".epoch_0009.pt.k1ll3d_x.tmp").write_bytes(b"half")
    logged = []
    run_work(_items([1], []), tmp_path, log=logged.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0000.pt", "notes.txt"]
    assert len(logged) == 3 and "epoch_0009.pt.k1ll3d_x.tmp: left by a write that was killed" in logged[0]
    assert "epoch_0002.pt" in logged[-1]


def test_a_failing_item_keeps_finished_results_and_writes_nothing_partial(tmp_path):
    def boom():
        raise RuntimeError("out of memory")

    items = _items([1], []) + [WorkItem("epoch_0001.pt", "k", boom)]
    with pytest.raises(RuntimeError, match="out of memory"):
        run_work(items, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0000.pt"]  # no temporary file left


def test_prune_removes_folders_too_and_contents_must_not_claim_the_key(tmp_path):
    (tmp_path / "resnet50").mkdir()
    (tmp_path / "pixel").mkdir()
    prune(tmp_path, ["pixel"], lambda m: None, pattern="*/")
    assert [p.name for p in tmp_path.iterdir()] == ["pixel"]
    with pytest.raises(ValueError, match="key"):
        run_work([WorkItem("a.pt", "k", lambda: {"key": 1})], tmp_path / "x")


def test_identity_is_stable_and_sensitive():
    assert identity("a", 1, {"b": [1, 2]}) == identity("a", 1, {"b": [1, 2]})
    assert identity("a", 1) != identity("a", 2) and len(identity("a")) == 24
    assert read_result("/no/such/file.pt") is None


def test_no_library_module_draws_a_progress_bar():
    """Progress goes through callbacks (run_work's on_done, train_learner's on_step); stages own the bars."""
    from pathlib import Path

    library = Path(__file__).resolve().parents[2] / "protoviz_core"
    modules = list(library.rglob("*.py"))
    assert len(modules) > 40 and [p.name for p in modules if "tqdm" in p.read_text()] == []
