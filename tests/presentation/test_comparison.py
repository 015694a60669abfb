import os
import time

import pytest
import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from protoviz_core.infra.atomic import save_atomic
from protoviz_core.measures.similarity import SIMILARITY_ARTIFACTS, gram
from protoviz_core.pipeline.config import DistanceParams
from protoviz_core.pipeline.mlflow_store import EXPERIMENT_NAME
from protoviz_core.presentation.aggregate import final_values, mean_sem
from protoviz_core.presentation.comparison import (
    ComparisonError,
    choose_runs,
    find_runs,
    metric_histories,
    similarity_between,
    similarity_files,
)
from protoviz_core.presentation.comparison_report import write_comparison

# Final (epoch 2) logreg accuracy per (condition, seed); by hand:
#   clrjit: 0.5, 0.6, 0.7 -> mean 0.6, sample std 0.1, SEM 0.1 / sqrt(3) = 0.0577350
#   keepclr: 0.4, 0.2      -> mean 0.3, sample std 0.1414214, SEM 0.1
FINAL = {("clrjit", 1): 0.5, ("clrjit", 2): 0.6, ("clrjit", 3): 0.7, ("keepclr", 1): 0.4, ("keepclr", 2): 0.2}


def _log_run(
    client, experiment_id, aug, seed, final, *, dvc_exp="workspace", lr="0.06", stages=("probe",), method=None
):
    tags = {
        **({"protoviz.method": method} if method else {}),  # runs from before the tag have none
        "protoviz.aug": aug,
        "protoviz.seed": str(seed),
        "protoviz.dvc_exp": dvc_exp,
        **{f"protoviz.stage.{stage}": "done" for stage in stages},
    }
    run = client.create_run(experiment_id, run_name=f"{aug}-seed{seed}-{dvc_exp}", tags=tags)
    now = int(time.time() * 1000)
    metrics = [Metric("probe/logreg", final - 0.1 * (2 - epoch), now, epoch) for epoch in range(3)]
    metrics += [
        Metric("diversity/pixel/mse-masked/layer1", 10.0 * seed + epoch, now, epoch) for epoch in range(3)
    ]
    client.log_batch(
        run.info.run_id,
        metrics=metrics,
        params=[Param("aug", aug), Param("seed", str(seed)), Param("train.lr", lr)]
        + ([Param("train.method", method)] if method else []),
    )
    client.set_terminated(run.info.run_id)
    time.sleep(0.01)  # distinct start times
    return run.info.run_id


@pytest.fixture
def client(tmp_path):
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    # Artifacts beside the test's database, not in ./mlruns of the directory pytest runs in.
    artifacts = (tmp_path / "artifacts").as_uri()
    experiment_id = client.create_experiment(EXPERIMENT_NAME, artifact_location=artifacts)
    _log_run(client, experiment_id, "clrjit", 1, 0.99, dvc_exp="old")  # older duplicate: must be skipped
    for (aug, seed), final in FINAL.items():
        _log_run(client, experiment_id, aug, seed, final, dvc_exp=f"exp-{aug}-{seed}")
    # Newer, nothing finished
    _log_run(client, experiment_id, "keepclr", 2, 0.95, dvc_exp="partial", stages=())
    return client


def test_mean_and_sem_over_seeds_match_hand_computed_values(client):
    selection = choose_runs(client, find_runs(client))
    assert len(selection.used) == 5 and sorted(selection.skipped.dvc_exp) == ["old", "partial"]
    histories = metric_histories(
        client, selection.used, ["probe/logreg", "diversity/pixel/mse-masked/layer1"]
    )
    final = mean_sem(final_values(histories[histories.key == "probe/logreg"]), ["condition"]).set_index(
        "condition"
    )
    assert final.loc["clrjit", "mean"] == pytest.approx(0.6)
    assert final.loc["clrjit", "sem"] == pytest.approx(0.1 / 3**0.5)
    assert final.loc["keepclr", "mean"] == pytest.approx(0.3) and final.loc[
        "keepclr", "sem"
    ] == pytest.approx(0.1)
    assert list(final.n) == [3, 2]

    # Per epoch: diversity = 10 * seed + epoch -> clrjit mean 20 + epoch, SEM 10 / sqrt(3).
    curve = mean_sem(histories[histories.key.str.startswith("diversity/")], ["condition", "epoch"])
    curve = curve.set_index(["condition", "epoch"])
    assert curve.loc[("clrjit", 2), "mean"] == pytest.approx(22.0)
    assert curve.loc[("clrjit", 2), "sem"] == pytest.approx(10 / 3**0.5)
    assert curve.loc[("keepclr", 0), "mean"] == pytest.approx(15.0)


def test_a_single_seed_has_no_sem(client):
    runs = find_runs(client, dvc_exps=["exp-clrjit-1"])
    histories = metric_histories(client, choose_runs(client, runs).used, ["probe/logreg"])
    table = mean_sem(histories, ["condition", "epoch"])
    assert table["sem"].isna().all() and (table["n"] == 1).all()


def test_subsets_and_unknown_runs(client):
    assert set(find_runs(client, dvc_exps=["exp-keepclr-1", "exp-keepclr-2"]).aug) == {"keepclr"}
    one = find_runs(client).run_id.iloc[0]
    assert list(find_runs(client, run_ids=[one]).run_id) == [one]
    with pytest.raises(ComparisonError, match="no-such-exp"):
        find_runs(client, dvc_exps=["no-such-exp"])


def test_runs_that_differ_beyond_condition_and_seed_are_reported(client):
    experiment_id = client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id
    _log_run(client, experiment_id, "keepclr", 3, 0.3, dvc_exp="other-lr", lr="0.1")
    selection = choose_runs(client, find_runs(client))
    assert selection.differing_params == {"train.lr": ["0.06", "0.1"]}


def test_no_experiment_is_a_clear_error(tmp_path):
    empty = MlflowClient(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ComparisonError, match="run the pipeline first"):
        find_runs(empty)


def test_another_learner_is_its_own_condition_never_averaged_with_simclr(client):
    experiment_id = client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id
    _log_run(client, experiment_id, "clrjit", 1, 0.9, dvc_exp="byol-1", method="byol")
    selection = choose_runs(client, find_runs(client))
    assert sorted(set(selection.used.condition)) == ["byol clrjit", "clrjit", "keepclr"]
    assert len(selection.used) == 6 and "train.method" not in selection.differing_params
    histories = metric_histories(client, selection.used, ["probe/logreg"])
    final = mean_sem(final_values(histories), ["condition"]).set_index("condition")
    assert final.loc["byol clrjit", "mean"] == pytest.approx(0.9) and final.loc["byol clrjit", "n"] == 1
    assert final.loc["clrjit", "mean"] == pytest.approx(0.6)  # SimCLR's three seeds alone


def test_a_stage_logged_again_in_the_same_run_is_not_another_seed(client):
    """dvc repro after a code change reruns the probe stage inside the same MLflow run: its
    epochs are logged twice, and only the newest value of each counts."""
    selection = choose_runs(client, find_runs(client))
    run_id = selection.used[(selection.used.aug == "keepclr") & (selection.used.seed == 1)].run_id.item()
    later = int(time.time() * 1000) + 1000
    client.log_batch(run_id, metrics=[Metric("probe/logreg", 0.45, later, epoch) for epoch in range(3)])
    histories = metric_histories(client, selection.used, ["probe/logreg"])
    again = histories[histories.run_id == run_id]
    assert sorted(again.epoch) == [0, 1, 2] and (again.value == 0.45).all()
    final = mean_sem(final_values(histories), ["condition"]).set_index("condition")
    assert final.loc["keepclr", "n"] == 2  # keepclr's two seeds, not three rows


def test_runs_are_compared_layer_by_layer_and_unit_by_unit_on_the_same_images(client, tmp_path):
    """Two seeds of clrjit whose layer1 is one representation with its channels permuted (plus a
    little noise), and a keepclr run whose layer1 is unrelated: the seeds' CKA is near 1 and
    their units match; clrjit against keepclr gives neither. Runs on other images are not compared."""
    used = choose_runs(client, find_runs(client)).used.set_index(["condition", "seed"]).run_id
    generator = torch.Generator().manual_seed(0)
    shared = torch.randn(40, 16, generator=generator).relu()
    copies = {
        ("clrjit", 1): shared,
        ("clrjit", 2): shared[:, torch.randperm(16, generator=generator)]
        + 0.05 * torch.randn(40, 16, generator=generator),
        ("keepclr", 1): torch.randn(40, 16, generator=generator).relu(),
        ("keepclr", 2): shared,  # measured on other images: left out of every pair
    }
    for (condition, seed), units in copies.items():
        folder = tmp_path / f"{condition}{seed}"
        folder.mkdir()
        for epoch in (0, 1):
            contents = {
                "key": "test",
                "layers": {"layer1": {"gram": gram(units).float(), "units": units}},
                "positions": torch.arange(40),
                "sample": "other images" if (condition, seed) == ("keepclr", 2) else "shared images",
            }
            save_atomic(contents, folder / f"e{epoch:04d}.pt")
        client.log_artifacts(used.loc[(condition, seed)], str(folder), SIMILARITY_ARTIFACTS)

    runs = used.reset_index().assign(run_id=used.values)
    with similarity_files(client, runs) as files:
        table = similarity_between(files, runs)
    cka = table[table.quantity == "cka"].groupby("pair").value.mean()
    matched = table[table.quantity == "matched"].groupby("pair").value.mean()
    assert set(cka.index) == {"clrjit (seeds)", "clrjit vs keepclr"}
    assert cka["clrjit (seeds)"] > 0.95 and matched["clrjit (seeds)"] > 0.95
    assert cka["clrjit vs keepclr"] < 0.3 and matched["clrjit vs keepclr"] < 0.5
    # The control: with one run's images shuffled even the seeds' units match only by chance.
    chance = table[table.quantity == "matched_chance"].groupby("pair").value.mean()
    assert chance["clrjit (seeds)"] < 0.5 and chance["clrjit (seeds)"] < matched["clrjit (seeds)"] - 0.4
    assert (
        len(table[(table.pair == "clrjit vs keepclr") & (table.quantity == "cka")]) == 2 * 2
    )  # 2 epochs x 2 pairs

    page = write_comparison(
        tmp_path / "comparison",
        selection=choose_runs(client, find_runs(client)),
        histories=metric_histories(client, choose_runs(client, find_runs(client)).used, ["probe/logreg"]),
        view=DistanceParams(space="pixel", metric="mse", masked=True),
        atlas_runs=[],
        similarity=table,
    )
    for name in ("cka_between.png", "unit_matches.png", "similarity_between.csv"):
        assert (page.parent / name).is_file(), name
