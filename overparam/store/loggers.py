"""External loggers: TensorBoard and MLflow mirror what metrics.jsonl records."""

from __future__ import annotations

from pathlib import Path


class TensorBoardLogger:
    """Event files under <run dir>/tensorboard."""

    def __init__(self, run_dir: str, log_dir: str | None = None, **_):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir or Path(run_dir) / "tensorboard"))

    def log_params(self, params: dict) -> None:
        text = "\n".join(f"    {k}: {v}" for k, v in sorted(params.items()))
        self.writer.add_text("config", text)

    def log_metrics(self, metrics: dict, step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class MLflowLogger:
    """An MLflow run; a local SQLite store (<output dir>/mlflow.db) unless `tracking_uri` is set.

    Recent MLflow releases refuse the old ./mlruns folder store, so the local default is a
    single SQLite file beside the runs: `mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db`.
    """

    def __init__(self, run_dir: str, tracking_uri: str | None = None, experiment: str = "overparam",
                 output_dir: str | None = None, **_):
        import mlflow

        self.mlflow = mlflow
        if tracking_uri is None:
            base = Path(output_dir) if output_dir else Path(run_dir).parent
            base.mkdir(parents=True, exist_ok=True)
            tracking_uri = f"sqlite:///{(base / 'mlflow.db').resolve()}"
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(experiment)
        self.run = mlflow.start_run(run_name=Path(run_dir).name)
        mlflow.set_tag("run_dir", str(Path(run_dir).resolve()))

    def log_params(self, params: dict) -> None:
        # MLflow caps a value at 6,000 characters and a batch at 100 params.
        items = [(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(items), 100):
            self.mlflow.log_params(dict(items[start:start + 100]))

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.mlflow.log_metrics({k.replace("/", "."): v for k, v in metrics.items()}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def flatten_config(config: dict, prefix: str = "") -> dict:
    """{"optim.lr": 0.1, ...} from a nested config."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_config(value, f"{name}."))
        else:
            out[name] = value
    return out


def build_loggers(logger_cfg, run_dir: str, output_dir: str | None = None, config: dict | None = None) -> list:
    """The loggers a `logger` config asks for (none when it is null)."""
    if not logger_cfg:
        return []
    from overparam.components import resolve

    cls = resolve("logger", logger_cfg)
    options = {k: v for k, v in logger_cfg.items() if k not in ("_target_", "name")}
    logger = cls(run_dir=run_dir, output_dir=output_dir, **options)
    if config is not None:
        logger.log_params(flatten_config({k: v for k, v in config.items() if k != "hydra"}))
    return [logger]
