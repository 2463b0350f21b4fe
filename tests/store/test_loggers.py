"""TensorBoard and MLflow loggers write real event files / tracking records."""

from __future__ import annotations

from overparam.cli.train import train_in_process

SHORT = ["train.epochs=null", "train.steps=20", "train.eval_every=10", "model.widths=[16]"]


def test_tensorboard_logger_writes_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "tb"
    train_in_process([*SHORT, "logger=tensorboard"], run_dir)
    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert "test/accuracy" in tags and "val/loss" in tags and "train/loss" in tags
    steps = [event.step for event in accumulator.Scalars("test/accuracy")]
    assert steps == [0, 10, 20]


def test_mlflow_logger_writes_a_file_store(tmp_path):
    import mlflow

    run_dir = tmp_path / "outputs" / "ml"
    train_in_process([*SHORT, "logger=mlflow", f"paths.output_dir={tmp_path / 'outputs'}"], run_dir)
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("overparam")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    history = client.get_metric_history(runs[0].info.run_id, "test.accuracy")
    assert [m.step for m in history] == [0, 10, 20]
    assert runs[0].data.params["optim.lr"] == "0.1"
