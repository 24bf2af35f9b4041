"""LightningCLI for ``arn-lightning fit | validate | test | predict``.

Links the data module's derived values into the model (triplet categories, transform settings, clip length, task)
so that a config names each value once, and adds the project's callbacks: the best checkpoint on ``val/with/R@20``
(``checkpoint.*``), the latest one as ``last.ckpt`` (``last_checkpoint.*``, also saved wherever a run stops early),
the scene-graph report (``report.*``), a rich progress bar showing the headline recalls, and the end-of-fit summary
(:class:`~arn_lightning.training.callbacks.RunSummary`). Checkpoints are written atomically and verified when
loaded (:mod:`arn_lightning.training.checkpoints`).

With ``--ckpt_path``, the model is the checkpoint's: ``validate`` / ``test`` / ``predict`` build it from the
checkpoint's hyperparameters and triplet categories whatever the data root's train split holds; a resumed ``fit``
must train on the same triplet categories, task and clip length (else one error names both sides).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import CheckpointIO

from arn_lightning.atomic import atomic_write_json, atomic_write_text
from arn_lightning.build import is_hub_source, read_checkpoint, read_model_source
from arn_lightning.checkpoint_file import is_local_path
from arn_lightning.configs import resolve_config_args
from arn_lightning.data.datamodule import AGDataModule, validate_data_options
from arn_lightning.reading import TextDecodeError, read_text
from arn_lightning.training.callbacks import RunSummary, SceneGraphReport
from arn_lightning.training.checkpoints import AtomicCheckpointIO, CheckpointError, LastCheckpoint, exit_code
from arn_lightning.training.lit_module import ARNLitModule
from arn_lightning.training.runs import (
    CHECKPOINT_ALIASES,
    LAST_CHECKPOINT,
    STAGE_FOLDERS,
    WANDB_LINK_FILE,
    checkpoint_run,
    latest_checkpoint,
    next_free_folder,
    resolve_checkpoint_alias,
    run_folder,
    run_of_config,
)

#: Model arguments that belong to the run, not to the trained weights: a ``--ckpt_path`` run keeps its own values.
RUNTIME_MODEL_KEYS = ("predictions_dir", "evaluation")
#: The metric that selects the best checkpoint.
MONITOR = "val/with/R@20"


class ConfigError(ValueError):
    """A setting or input that the run cannot start with; the message names the setting, file or key."""


class RunConfigCallback(SaveConfigCallback):
    """Saves the run's complete config as ``config.yaml`` in its run folder
    (:func:`arn_lightning.training.runs.run_folder`,
    not the shared ``save_dir`` of a W&B logger), atomically; with W&B it also links the two: ``wandb_run.json`` in
    the folder names the W&B run, and the W&B run's config names the folder."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        folder = run_folder(trainer)  # every process: it broadcasts
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / self.config_filename
            if path.exists() and not self.overwrite:
                raise RuntimeError(f"Expected {path} not to exist (a run folder is never reused) but it does")
            atomic_write_text(path, self.parser.dump(self.config, skip_none=False))
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    run = logger.experiment
                    atomic_write_json(
                        folder / WANDB_LINK_FILE,
                        {"id": run.id, "name": run.name, "project": run.project, "dir": str(run.dir)},
                    )
                    run.config.update({"run_folder": str(folder)}, allow_val_change=True)
        self.already_saved = trainer.strategy.broadcast(True)


class ARNLightningCLI(LightningCLI):
    """LightningCLI with the project's argument links and forced checkpoint callback."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # Lightning (>= 2.5) refreshes a save_last checkpoint only when a top-k one was saved at the same step, so
        # "last" is a checkpoint of its own: the latest state every epoch, what --ckpt_path resumes from.
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(SceneGraphReport, "report")
        parser.set_defaults(
            {
                "checkpoint.monitor": MONITOR,
                "checkpoint.mode": "max",
                "checkpoint.filename": "epoch{epoch:03d}-R20_{val/with/R@20:.4f}",
                "checkpoint.auto_insert_metric_name": False,
                "last_checkpoint.monitor": None,
                "last_checkpoint.save_top_k": 1,
                "last_checkpoint.filename": "last",
                "last_checkpoint.enable_version_counter": False,
            }
        )
        parser.link_arguments("data.clip_len", "model.arch.num_frames")
        parser.link_arguments("data.task", "model.arch.task")
        parser.link_arguments("data.triplet_categories", "model.triplet_categories", apply_on="instantiate")
        parser.link_arguments("data.transform_settings", "model.data_settings", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """LightningCLI's parsing, with packaged configs found by name (``--config ag_sgdet``; a local file of that
        name wins: :func:`arn_lightning.configs.resolve_config_args`)."""
        if args is None:  # from the shell: the same arguments, parsed without LightningCLI's warning about args
            self.config = parser.parse_args(resolve_config_args(sys.argv[1:]))
            return
        super().parse_arguments(parser, resolve_config_args(args) if isinstance(args, list) else args)

    def _parse_ckpt_path(self) -> None:
        """Verify the ``--ckpt_path`` file (its name in every failure), then let Lightning replace the model's
        settings by the checkpoint's hyperparameters, keeping this run's values of the run-time settings
        (:data:`RUNTIME_MODEL_KEYS`: where predictions go and how they are scored), which are not part of what the
        checkpoint trained."""
        self.checkpoint_hparams: dict[str, Any] | None = None
        self.folder_state: Mapping[str, Any] | None = None
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if ckpt_path in CHECKPOINT_ALIASES:
            ckpt_path = str(self._resolve_checkpoint_alias(subcommand, ckpt_path))
            self.config[subcommand]["ckpt_path"] = ckpt_path
        if ckpt_path and (Path(ckpt_path).is_dir() or is_hub_source(ckpt_path)):
            self._read_model_folder(subcommand, ckpt_path)
        elif ckpt_path and is_local_path(ckpt_path) and ckpt_path not in ("hpc", "registry"):
            # verified: torch never meets a damaged file unnamed; memory-mapped: only the hyperparameters are read
            checkpoint = read_checkpoint(ckpt_path, ARNLitModule.stored_configs())
            self.checkpoint_hparams = dict(checkpoint.get("hyper_parameters") or {})
            del checkpoint
        kept = {key: copy.deepcopy(self.config.get(f"{subcommand}.model.{key}")) for key in RUNTIME_MODEL_KEYS}
        self._apply_checkpoint_hparams(subcommand, ckpt_path)
        for key, value in kept.items():
            self.config[f"{subcommand}.model.{key}"] = value

    def _read_model_folder(self, subcommand: str, ckpt_path: str) -> None:
        """A model folder of ``arn-lightning export`` (or ``hf://owner/name``) as ``--ckpt_path`` of ``validate`` /
        ``test`` / ``predict``: its hyperparameters and weights make the model (:meth:`instantiate_classes`), and
        Lightning gets no checkpoint to restore (a folder holds no trainer state, so ``fit`` cannot resume from one).

        Raises:
            CheckpointError: ``fit``, or an unreadable or older-format folder (named).
        """
        if subcommand == "fit":
            raise CheckpointError(
                f"{ckpt_path}: Expected a checkpoint file to resume fit from but got a model folder, which holds no "
                "optimiser or trainer state; give it to validate / test / predict, or resume from a .ckpt"
            )
        hparams, self.folder_state = read_model_source(ckpt_path, ARNLitModule.stored_configs())
        self.checkpoint_hparams = dict(hparams)

    def _resolve_checkpoint_alias(self, subcommand: str, alias: str) -> Path:
        """The file ``--ckpt_path last`` / ``best`` names (Lightning's meaning: the run's latest checkpoint, the best
        one on :data:`MONITOR`), looked up in the run's ``checkpoints/`` folder: ``checkpoint.dirpath`` when set,
        else the run of a ``--config <run>/config.yaml``, else the newest run of the configured logger. Lightning
        itself looks in the new run's empty folder, then trains from scratch or scores an untrained model.

        Raises:
            ConfigError: no run is found, or the run lacks the checkpoint (the message names where it looked).
        """
        config = self.config[subcommand]
        folders = [Path(str(config.get(f"{name}.dirpath"))) for name in ("checkpoint", "last_checkpoint")]
        folders = [folder for folder in folders if str(folder) != "None"]
        for config_file in config.get("config") or []:
            run = run_of_config(getattr(config_file, "absolute", None) or str(config_file))
            folders += [run / "checkpoints"] if run is not None else []
        searched = _logger_run_roots(config)
        for root in searched if not folders else []:
            try:
                folders.append(latest_checkpoint(root).parent)
                break
            except FileNotFoundError:
                continue
        if not folders:
            where = ", ".join(map(str, searched)) or "the logger's folder (trainer.logger is off)"
            raise ConfigError(
                f"Expected --ckpt_path {alias} to name a checkpoint of a run but found no run: no checkpoint.dirpath, "
                f"no --config <run>/config.yaml and no {LAST_CHECKPOINT} under {where}; pass "
                f"--config <run>/config.yaml or the checkpoint's path"
            )
        try:
            path = resolve_checkpoint_alias(alias, folders[0], MONITOR)
        except (FileNotFoundError, CheckpointError) as error:
            raise ConfigError(f"--ckpt_path {alias}: {error}") from error
        print(f"arn-lightning: --ckpt_path {alias} is {path}", file=sys.stderr)
        return path

    def _apply_checkpoint_hparams(self, subcommand: str, ckpt_path: str) -> None:
        """Lightning's own ``_parse_ckpt_path`` on the hyperparameters read above (the file is not loaded twice)."""
        hparams = dict(self.checkpoint_hparams or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write(f"Parsing of the hyperparameters of --ckpt_path {ckpt_path} failed\n")
            raise

    def before_instantiate_classes(self) -> None:
        """A command given one of a run's checkpoints (``<run>/checkpoints/*.ckpt``) writes into a new sub-folder of
        that run (``<run>/test/``, ``<run>/resume/``, ``<run>/test-1/``, ...): config, metrics, reports and
        prediction files; a resumed ``fit`` keeps saving its checkpoints in ``<run>/checkpoints/``. Not when the
        user names another place for the outputs (``model.predictions_dir``)."""
        self.planned_run_folder: Path | None = None
        subcommand = self.subcommand
        config = self.config.get(subcommand) if subcommand else None
        ckpt_path = config.get("ckpt_path") if config is not None else None
        run = checkpoint_run(ckpt_path) if ckpt_path and is_local_path(ckpt_path) else None
        if run is None or config.get("model.predictions_dir"):
            return
        folder = next_free_folder(run, STAGE_FOLDERS[subcommand])
        self.planned_run_folder = folder
        logger = config.get("trainer.logger")
        loggers = logger if isinstance(logger, list) else [logger]
        for item in loggers:
            class_path = str(getattr(item, "class_path", "") or "")
            if class_path.endswith(("CSVLogger", "TensorBoardLogger")):
                item.init_args.save_dir, item.init_args.name, item.init_args.version = str(run), folder.name, ""
            elif class_path.endswith("WandbLogger"):
                item.init_args.save_dir = str(folder)
        if not any(getattr(item, "class_path", None) for item in loggers):
            config["trainer.default_root_dir"] = str(folder)
        if subcommand == "fit":
            for name in ("checkpoint", "last_checkpoint"):
                config[f"{name}.dirpath"] = str(run / "checkpoints")

    def instantiate_classes(self) -> None:
        """Instantiate as LightningCLI does; with ``--ckpt_path``, make the model the checkpoint's (module
        docstring): the links from the data module must not change what the weights were trained for."""
        self._check_settings()
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, FileNotFoundError) as error:  # a setting's value, a data root: no traceback
            raise ConfigError(f"{error}") from error
        if self.checkpoint_hparams and "triplet_categories" in self.checkpoint_hparams:
            self.model = self._checkpoint_model(self.checkpoint_hparams)
        if self.folder_state is not None:  # a model folder: its weights now, no checkpoint for Lightning
            self.model.load_state_dict(self.folder_state)
            self.config_init[self.subcommand]["ckpt_path"] = None

    def _check_settings(self) -> None:
        """Check the model's setting groups (``model.arch``, ``model.optim``, ...) and the data options before
        anything is built, so that a meaningless value is reported with the setting's name."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        data = config.get("data")
        if data is not None:
            try:
                validate_data_options(
                    **{
                        key: data.get(key)
                        for key in inspect.signature(validate_data_options).parameters
                        if data.get(key) is not None
                    }
                )
            except (ValueError, TypeError) as error:
                raise ConfigError(f"data: {error}") from error
        trainer = config.get("trainer")
        if trainer is not None:
            try:
                validate_trainer_options(**{key: trainer.get(key) for key in TRAINER_CHECKS})
            except (ValueError, TypeError) as error:
                raise ConfigError(f"trainer: {error}") from error
        model = config.get("model")
        defaults = inspect.signature(ARNLitModule.__init__).parameters
        for name, parameter in defaults.items():
            value = model.get(name) if model is not None else None
            if not dataclasses.is_dataclass(parameter.default) or value is None or dataclasses.is_dataclass(value):
                continue
            values = value.as_dict() if hasattr(value, "as_dict") else dict(value)
            try:
                type(parameter.default)(**values)
            except (ValueError, TypeError) as error:
                raise ConfigError(f"model.{name}: {error}") from error

    def _checkpoint_model(self, stored: Mapping[str, Any]) -> ARNLitModule:
        """The model of the checkpoint's hyperparameters (this run's :data:`RUNTIME_MODEL_KEYS`), checked against
        the data module; the instantiated model is kept when it already matches."""
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        accepted = inspect.signature(ARNLitModule.__init__).parameters
        hparams = {key: value for key, value in stored.items() if key in accepted}
        hparams.update({key: self.model.hparams[key] for key in RUNTIME_MODEL_KEYS})
        data = self.datamodule
        differs = _checkpoint_differences(stored, self.model.hparams)
        if self.subcommand == "fit" and "triplet_categories" in differs:
            raise CheckpointError(
                f"{ckpt_path}: Expected to resume training on the checkpoint's triplet categories "
                f"({_count(stored['triplet_categories'])}) but the train split of data.root={data.hparams.root} has "
                f"others ({_count(self.model.hparams['triplet_categories'])}; {differs['triplet_categories']}); resume "
                f"on the data root the run was trained on, or start a new fit"
            )
        arch = stored.get("arch") or {}
        if arch.get("task") not in (None, data.hparams.task):
            raise CheckpointError(
                f"{ckpt_path}: Expected data.task={arch.get('task')!r}, the task the checkpoint "
                f"was trained for, but got data.task={data.hparams.task!r}"
            )
        if arch.get("num_frames") is not None and data.hparams.clip_len > arch["num_frames"]:
            raise CheckpointError(
                f"{ckpt_path}: Expected data.clip_len <= {arch['num_frames']} (the checkpoint's "
                f"model.arch.num_frames) but got data.clip_len={data.hparams.clip_len}"
            )
        if "data_settings" in differs:
            warnings.warn(
                f"{ckpt_path} was trained with the frame settings {stored.get('data_settings')} but the data "
                f"module feeds {self.model.hparams.get('data_settings')}",
                UserWarning,
                stacklevel=2,
            )
        if not differs:
            return self.model
        return ARNLitModule(**hparams)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        """Honour ``trainer.enable_checkpointing=false`` / ``enable_progress_bar=false`` (drop the project's
        checkpoint callback / do not add the rich progress bar), and add the rich bar unless one is configured."""
        if config.get("enable_checkpointing") is False:
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        config = {**config, "plugins": _with_atomic_checkpoints(config.get("plugins"))}
        configured = [*(config.get("callbacks") or []), *callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in configured):
            callbacks = [*callbacks, RichProgressBar(leave=True)]
        if not any(isinstance(c, RunSummary) for c in configured):
            callbacks = [*callbacks, RunSummary()]
        trainer = super()._instantiate_trainer(config, callbacks)
        trainer.arn_run_folder = getattr(self, "planned_run_folder", None)  # see runs.run_folder
        return trainer


def build_cli(args: list[str] | None = None, run: bool = True) -> ARNLightningCLI:
    """Build (and by default run) the CLI on ``args``; the object gives access to ``.trainer`` and ``.model``."""
    return ARNLightningCLI(
        ARNLitModule,
        AGDataModule,
        args=args,
        run=run,
        seed_everything_default=0,
        save_config_callback=RunConfigCallback,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


#: Trainer settings checked before anything is built (Lightning accepts some meaningless values and fails later).
TRAINER_CHECKS = (
    "accumulate_grad_batches",
    "max_steps",
    "max_epochs",
    "check_val_every_n_epoch",
    "gradient_clip_val",
    "log_every_n_steps",
)


def validate_trainer_options(
    accumulate_grad_batches: Any = 1,
    max_steps: Any = -1,
    max_epochs: Any = None,
    check_val_every_n_epoch: Any = 1,
    gradient_clip_val: Any = None,
    log_every_n_steps: Any = None,
) -> None:
    """Check the trainer settings that Lightning would take and fail on later (a division by zero, say).

    Raises:
        ValueError: a setting outside its meaningful values, naming it.
    """

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    checks = [
        (
            accumulate_grad_batches is None or (is_int(accumulate_grad_batches) and accumulate_grad_batches >= 1),
            "accumulate_grad_batches >= 1",
            accumulate_grad_batches,
        ),
        (max_steps is None or (is_int(max_steps) and max_steps >= -1), "max_steps >= -1 (-1: no limit)", max_steps),
        (max_epochs is None or (is_int(max_epochs) and max_epochs >= -1), "max_epochs >= -1 or null", max_epochs),
        (
            check_val_every_n_epoch is None or (is_int(check_val_every_n_epoch) and check_val_every_n_epoch >= 1),
            "check_val_every_n_epoch >= 1 or null",
            check_val_every_n_epoch,
        ),
        (
            gradient_clip_val is None
            or (isinstance(gradient_clip_val, (int, float)) and 0 <= gradient_clip_val < float("inf")),
            "gradient_clip_val a finite number >= 0 or null",
            gradient_clip_val,
        ),
        (
            log_every_n_steps is None or (is_int(log_every_n_steps) and log_every_n_steps >= 1),
            "log_every_n_steps >= 1",
            log_every_n_steps,
        ),
    ]
    for ok, expected, got in checks:
        if not ok:
            raise ValueError(f"Expected {expected} but got {got!r}")


def _with_atomic_checkpoints(plugins: Any) -> list[Any]:
    """The trainer's plugins with :class:`AtomicCheckpointIO` added, unless a checkpoint I/O plugin is configured."""
    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins


def _logger_run_roots(config: Any) -> list[Path]:
    """The folders holding the runs of a subcommand's config: ``<save_dir>/<name>`` of its CSV / TensorBoard
    loggers, else Lightning's default ``<default_root_dir>/lightning_logs``."""
    logger = config.get("trainer.logger")
    root = Path(str(config.get("trainer.default_root_dir") or Path.cwd()))
    roots = []
    for item in logger if isinstance(logger, list) else [logger]:
        class_path = str(getattr(item, "class_path", "") or "")
        if class_path.endswith(("CSVLogger", "TensorBoardLogger")):
            args = item.init_args
            roots.append(Path(str(args.get("save_dir") or root)) / str(args.get("name") or "lightning_logs"))
    if logger in (None, True):
        roots.append(root / "lightning_logs")
    return roots


def _count(categories: Mapping[str, Any]) -> str:
    return ", ".join(f"{kind} {len(pairs)}" for kind, pairs in categories.items())


def _checkpoint_differences(stored: Mapping[str, Any], built: Mapping[str, Any]) -> dict[str, str]:
    """Model settings that differ between a checkpoint's hyperparameters and the instantiated model's
    (``name -> description``); the run-time settings do not count."""
    differs = {}
    for key in sorted(set(stored) | set(built)):
        if key in RUNTIME_MODEL_KEYS or key.startswith("_"):
            continue
        a, b = stored.get(key), built.get(key)
        if key == "triplet_categories" and a is not None and b is not None:
            pairs = {kind: ({tuple(p) for p in a.get(kind, [])}, {tuple(p) for p in b.get(kind, [])}) for kind in a}
            diff = {kind: (len(x - y), len(y - x)) for kind, (x, y) in pairs.items() if x != y}
            if diff:
                differs[key] = "; ".join(
                    f"{kind}: {m} only in the checkpoint, {n} only in the data" for kind, (m, n) in diff.items()
                )
        elif _plain(a) != _plain(b):
            differs[key] = f"{_plain(a)!r} != {_plain(b)!r}"
    return differs


def _plain(value: Any) -> Any:
    """Dataclasses as dicts (the checkpoint stores plain dicts), everything else as it is."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def check_config_files(args: list[str]) -> None:
    """Read every ``--config`` / ``-c`` file of ``args`` as UTF-8 YAML first: jsonargparse reports a non-UTF-8 file
    with a traceback, and a YAML error at a line of ``"<unicode string>"``, naming no file.

    Raises:
        ConfigError: a file that is not UTF-8 or not YAML (naming the file, the line and the column).
    """
    import yaml

    files = [value for flag, value in zip(args, args[1:]) if flag in ("--config", "-c")]
    files += [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]
    for name in files:
        path = Path(name)
        if not path.is_file():
            continue  # jsonargparse's own message names it
        try:
            yaml.safe_load(read_text(path))
        except TextDecodeError as error:
            raise ConfigError(f"--config {error}") from None
        except yaml.YAMLError as error:
            raise ConfigError(
                f"--config {path}: Expected a YAML config but got a syntax error: {_yaml_problem(error)}"
            ) from None


def _yaml_problem(error: Exception) -> str:
    """PyYAML's problem with 1-based lines and columns, without its ``"<unicode string>"`` placeholders."""
    parts = []
    for text, mark in (
        (getattr(error, "context", None), getattr(error, "context_mark", None)),
        (getattr(error, "problem", None), getattr(error, "problem_mark", None)),
    ):
        if text:
            parts.append(f"{text} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else text)
    return "; ".join(parts) or str(error)


def run_lightning_cli(args: list[str]) -> int:
    """Entry point used by ``arn-lightning fit|validate|test|predict``.

    Returns:
        0, or :data:`arn_lightning.training.checkpoints.EXIT_CODES` of the signal that stopped a run after it saved
        ``last.ckpt`` (130 for SIGINT, 143 for SIGTERM).
    """
    try:
        check_config_files(args)
        # From the shell the arguments are sys.argv itself: let LightningCLI read them (it warns when given both).
        build_cli(None if list(args) == sys.argv[1:] else args)
    except SystemExit as stop:
        code = exit_code(stop)
        if code is None:
            raise
        print(f"arn-lightning: training stopped by a signal; exit status {code}", file=sys.stderr)
        return code
    except (CheckpointError, ConfigError) as error:
        print(f"arn-lightning: error: {error}", file=sys.stderr)
        return 2
    return 0
