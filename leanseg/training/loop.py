"""The train loop shared by every task: AdamW, cosine or poly schedule, AMP on GPU, gradient clipping, a progress
bar, a metrics CSV (and TensorBoard when installed), atomic best/last checkpoints, exact --resume, and DDP under
torchrun (only rank 0 logs and writes).

Reproducibility: the data pipeline (sampler order, patch positions, flips, intensity jitter) is re-seeded at every
epoch from (seed, epoch, rank), and the global RNGs are saved with the optimiser; a run killed after an epoch's
checkpoint and resumed therefore takes exactly the steps an uninterrupted run takes.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from leanseg import env
from leanseg.checkpoint import model_spec, save_model, update_config
from leanseg.errors import LeanSegError
from leanseg.io import check_output
from leanseg.options import Schedule, look_up_option, parse_window, resolve_device
from leanseg.tasks import Task, get_task
from leanseg.training.splits import FOLDS
from leanseg.training.state import load_state, save_state


@dataclass
class TrainConfig:
    """How to run (not what to learn: window, widths, epochs and lr are the task's defaults, overridable)."""

    out: Path = Path("runs/leanseg")
    seed: int = 0
    device: str | None = None  # None: cuda:LOCAL_RANK when CUDA is there, else cpu; never picked silently otherwise
    amp: bool = False  # bf16 (fp16 + loss scaling where bf16 is missing) autocast; GPU only, ignored on CPU
    clip: float = 12.0  # max gradient norm: nnU-Net's value, keeps the first high-lr steps of Dice+BCE stable
    resume: bool = False
    val_every: int = 1  # epochs between validations (validation on whole cases is slower than a training epoch)
    num_workers: int = 0  # loader processes; 0 keeps 2-core machines responsive and runs are reproducible
    cache: bool | None = None  # keep preprocessed cases in memory; None: when there are at most 64 cases
    progress: bool = True
    postprocess: bool = False  # at the end, choose component rules on the validation cases for best.safetensors
    # cross-validation fold (0..4, or "all": every case trains, none validates): the run goes to OUT/fold_K and the
    # seeded 5-fold split to OUT/splits.json, made once and reused by every fold; None: the task's own split
    fold: int | str | None = None
    # best.safetensors is the last validated epoch (the final one) instead of the best-scoring: what a
    # cross-validation should score, since picking the best epoch on the validation cases flatters them
    keep_last: bool = False


@dataclass
class TrainResult:
    out: Path
    best: dict = field(default_factory=dict)  # validation metrics of the best epoch
    last: dict = field(default_factory=dict)
    step_losses: list = field(default_factory=list)  # every step this call took (for tests and curves)
    seconds_per_epoch: float = float("nan")
    model: nn.Module | None = None
    postprocess: dict = field(default_factory=dict)  # the rules chosen (TrainConfig.postprocess) and their Dice


def split_cases(cases: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """The data's own split when every case names one (CIFAR's test batch); else a seeded shuffle, then at least
    one validation case when there are two or more cases and ``val_fraction`` is above 0."""
    if cases and all("split" in c for c in cases):
        return [c for c in cases if c["split"] == "train"], [c for c in cases if c["split"] != "train"]
    order = np.random.default_rng(seed).permutation(len(cases))
    # val_fraction 0 trains on every case (a final model); otherwise at least one case is held out
    n_val = 0 if len(cases) < 2 or val_fraction <= 0 else max(1, round(val_fraction * len(cases)))
    return [cases[i] for i in order[n_val:]], [cases[i] for i in order[:n_val]]


OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(model, tcfg):
    """AdamW (the default), or SGD with Nesterov momentum 0.99 as nnU-Net trains."""
    from leanseg.options import look_up_option

    kind = look_up_option(getattr(tcfg, "optimizer", "adamw"), OPTIMIZERS, what="optimizer")
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=tcfg.lr, momentum=0.99, nesterov=True,
                               weight_decay=tcfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)


def make_schedule(optimizer, kind: str, total_steps: int):
    """Per-step LR multiplier: cosine to zero, or nnU-Net's poly (1 - t/T)^0.9."""
    kind = look_up_option(kind, Schedule, what="schedule").value
    total = max(1, total_steps)

    def factor(step: int) -> float:
        t = min(step, total) / total
        return 0.5 * (1 + math.cos(math.pi * t)) if kind == "cosine" else (1 - t) ** 0.9

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def score_of(metrics: dict) -> float:
    """The number 'best' is chosen by: mean Dice over classes, or accuracy."""
    dice = [v for k, v in metrics.items() if k.startswith("dice_") and np.isfinite(v)]
    if dice:
        return float(np.mean(dice))
    return float(metrics.get("accuracy", float("nan")))


class _Dist:
    """torchrun's environment: rank, world size, and whether this call started the process group."""

    def __init__(self, device: torch.device):
        self.world = env.world_size()
        self.rank = env.rank()
        self.local_rank = env.local_rank()
        self.owner = False
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend)
            self.owner = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            torch.distributed.barrier()

    def close(self):
        if self.owner:
            torch.distributed.destroy_process_group()


def _pick_device(name: str | None) -> torch.device:
    if name:
        return resolve_device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", env.local_rank())
    return torch.device("cpu")


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (the global RNG is what third-party code draws from)
    torch.manual_seed(seed)


def train(task: str | Task, *, data: str | Path | None = None, synthetic: int | None = None,
          config: TrainConfig | None = None, on_epoch_end: Callable[[int, dict], None] | None = None,
          build_model: Callable | None = None, **task_options) -> TrainResult:
    """Train ``task`` (a registered task name, see ``leanseg.tasks``, or a ``Task``) on the cases under ``data`` or
    on ``synthetic`` generated ones.

    ``task_options`` override fields of the task's Config (epochs, lr, batch_size, window, model, model_kwargs...).
    ``on_epoch_end(epoch, row)`` runs on rank 0 after each epoch's checkpoint (tests use it to simulate a kill).
    ``build_model(task)`` replaces the task's model: any ``nn.Module`` taking ``(N, channels, *window)`` and
    returning ``(N, outputs, *window)`` logits. One from a registered constructor (``leanseg.models.create``) or
    one of leanseg's classes writes checkpoints that rebuild it anywhere; any other module's checkpoints hold the
    weights and the config, and ``leanseg.load_model(path, model=MyNet())`` fills an instance.
    """
    from monai.data import CacheDataset, DataLoader, Dataset

    cfg = config or TrainConfig()
    if isinstance(task, Task):
        if task_options:
            raise LeanSegError("options go into the Task's config when a Task object is given")
    else:
        task = get_task(task, **task_options)
    if (data is None) == (synthetic is None):
        raise LeanSegError("give either a data folder or a number of synthetic cases, not both or neither")
    if synthetic is not None and synthetic < 1:
        raise LeanSegError(f"synthetic needs a positive number of cases, got {synthetic}")
    _check_task_config(task.config, planned=True)  # what is given already; a plan may settle the rest later
    if cfg.num_workers < 0:
        raise LeanSegError(f"workers (num_workers) must be 0 or more, got {cfg.num_workers}")
    fold = check_fold(cfg.fold)

    device = _pick_device(cfg.device)
    dist = _Dist(device)
    if device.type == "cpu" and dist.world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.world))
    _seed_all(cfg.seed)
    root = Path(cfg.out)  # the experiment: plan, fingerprint and splits; each fold's checkpoints below it
    out = root / f"fold_{fold}" if fold is not None else root
    try:
        cases = task.discover(data) if data is not None else task.synthetic(int(synthetic or 0), cfg.seed)
        task.workdir = root  # where a task may cache what it derives (fingerprints)
        task.progress = cfg.progress and dist.main
        task.configure(cases)  # classes or channels that only the data can tell (seg2d, CIFAR-100), plans
        task.resolve_spacing(cases)  # "median" -> the cases' median voxel size, which cases are resampled to
        _check_task_config(task.config)
        task.config = dataclasses.replace(task.config, window=parse_window(task.config.window,
                                                                           task.config.spatial_dims))
        if synthetic is not None:
            task.config = dataclasses.replace(task.config, window=task.synthetic_window())
        tcfg = task.config
        if fold is None:
            train_cases, val_cases = split_cases(cases, tcfg.val_fraction, cfg.seed)
        else:
            train_cases, val_cases = fold_cases(cases, root, fold, dist.main)
        model = build_model(task) if build_model is not None else task.model()
        if not isinstance(model, nn.Module):
            raise LeanSegError(f"build_model must return an nn.Module, got {type(model).__name__}")
        model = model.to(device)
        if dist.main:
            try:
                out.mkdir(parents=True, exist_ok=True)
                check_output(out / "last.safetensors", [])
            except OSError as err:
                raise LeanSegError(f"{out}: cannot create the output folder ({err.strerror or err})") from None
            report = task.plan_report(out)
            if report:
                print(f"plan ({out / 'plan.json'}):\n{report}", flush=True)
            if report or cfg.progress:
                split = f" (fold {fold} of {root / 'splits.json'})" if fold is not None else ""
                print(_run_summary(task, model, device, out, data, synthetic, len(train_cases), len(val_cases), split),
                      flush=True)

        train_tf, val_tf = task.transforms(train=True), task.transforms(train=False)
        cache = cfg.cache if cfg.cache is not None else task.cache_cases(cases)
        train_ds: Dataset
        val_ds: Dataset
        if cache:
            train_ds = CacheDataset(train_cases, train_tf, num_workers=None, progress=False)
            val_ds = CacheDataset(val_cases, val_tf, num_workers=None, progress=False)
        else:
            train_ds, val_ds = Dataset(train_cases, train_tf), Dataset(val_cases, val_tf)

        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                  else None) if dist.world > 1 else model
        optimizer = make_optimizer(model, tcfg)
        per_rank = math.ceil(len(train_ds) / dist.world)
        steps_per_epoch = max(1, math.ceil(per_rank / tcfg.batch_size))
        scheduler = make_schedule(optimizer, tcfg.schedule, tcfg.epochs * steps_per_epoch)
        loss_fn = task.loss()
        use_amp = cfg.amp and device.type == "cuda"
        if cfg.amp and not use_amp and dist.main:
            print("leanseg: --amp is for GPUs; training in float32 on the CPU")
        amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

        state_path, metrics_path = out / "train_state.safetensors", out / "metrics.csv"
        start = 0
        best: dict[str, Any] = {"score": -math.inf, "metrics": {}}
        if cfg.resume:
            finished, extra = load_state(state_path, model, optimizer, scheduler)
            if finished + 1 > tcfg.epochs:  # (equal: the last epoch ran; the run is only finalised below)
                raise LeanSegError(f"{state_path}: the state is at epoch {finished + 1}, beyond this run's "
                                   f"{tcfg.epochs} epochs; give --epochs {finished + 2} or more to train on")
            start, best = finished + 1, extra.get("best", best)
            if dist.main:
                _truncate_csv(metrics_path, finished)
        elif dist.main and metrics_path.exists():
            metrics_path.unlink()
        # "finished": false until the run ends, so a checkpoint of a stopped run never passes for a trained model
        fields = task.checkpoint_fields() | {"seed": cfg.seed, "data": str(data) if data else f"synthetic:{synthetic}",
                                             "epochs": tcfg.epochs, "finished": False}
        if model_spec(model) is None:  # a plain nn.Module: its checkpoint records what prediction checks the input by
            fields["model_kwargs"] = {"spatial_dims": tcfg.spatial_dims, "in_channels": len(tcfg.channels),
                                      "out_channels": task.label_manager.num_outputs}
        writer = _tensorboard(out) if dist.main else None

        result = TrainResult(out=out, model=model)
        seconds = []
        for epoch in range(start, tcfg.epochs):
            t0 = time.perf_counter()
            rows = _train_epoch(net, train_ds, optimizer, scheduler, scaler, loss_fn, task, cfg, dist, device,
                                epoch, use_amp, amp_dtype, result.step_losses, DataLoader)
            row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]} | rows
            seconds.append(time.perf_counter() - t0)
            row["seconds"] = round(seconds[-1], 3)
            validate = len(val_ds) and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == tcfg.epochs)
            if validate and dist.main:
                model.eval()
                val_loader = DataLoader(val_ds, batch_size=tcfg.val_batch_size, shuffle=False)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    row |= {f"val_{k}": v for k, v in task.evaluate(model, val_loader, device).items()}
                model.train()
            dist.barrier()
            if dist.main:
                score = score_of({k[4:]: v for k, v in row.items() if k.startswith("val_")})
                if validate and (score > best["score"] or cfg.keep_last):
                    best = {"score": score, "epoch": epoch,
                            "metrics": {k: v for k, v in row.items() if k.startswith("val_")}}
                    save_model(model, out / "best.safetensors", **fields, epoch=epoch, metrics=best)
                save_model(model, out / "last.safetensors", **fields, epoch=epoch)
                if not len(val_ds) and epoch + 1 == tcfg.epochs:  # nothing validates (fold all): the end is best
                    save_model(model, out / "best.safetensors", **fields, epoch=epoch)
                save_state(state_path, model, optimizer, scheduler, epoch, {"best": best})
                _append_csv(metrics_path, row)
                if writer is not None:
                    for k, v in row.items():
                        if k != "epoch":
                            writer.add_scalar(k, v, epoch)
                result.last = row
                if cfg.progress and not sys.stderr.isatty():
                    print(_epoch_line(row, tcfg.epochs), flush=True)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, row)
            dist.barrier()
        if cfg.postprocess and dist.main and len(val_ds) and (out / "best.safetensors").exists():
            from leanseg.training.postprocess import choose_for_checkpoint

            result.postprocess = choose_for_checkpoint(out / "best.safetensors", val_ds, tcfg.window, device)
        if dist.main:
            for name in ("best.safetensors", "last.safetensors"):
                if (out / name).exists():
                    update_config(out / name, finished=True)
        result.best = best.get("metrics", {})
        result.seconds_per_epoch = float(np.median(seconds)) if seconds else float("nan")
        if writer is not None:
            writer.close()
        return result
    except Exception as err:
        raise _user_error(err) or err from None
    finally:
        dist.close()


def _run_summary(task: Task, model: nn.Module, device: torch.device, out: Path, data, synthetic: int | None,
                 n_train: int, n_val: int, split: str) -> str:
    """The table printed before the first epoch: what trains on what, where, and for how long."""
    tcfg = task.config
    spec = model_spec(model)
    name = spec.name if spec is not None else f"{type(model).__name__} (not registered)"
    rows = [
        ("task", f"{task.name} on {data if data is not None else f'{synthetic} synthetic cases'}"),
        ("cases", f"{n_train} training, {n_val} validation{split}"),
        ("window", "x".join(map(str, tcfg.window))),
        ("model", f"{name}, {sum(p.numel() for p in model.parameters()):,} weights"),
        ("device", str(device)),
        ("schedule", f"{tcfg.epochs} epochs, batch {tcfg.batch_size}, lr {tcfg.lr:g} ({tcfg.schedule})"),
        ("output", str(out)),
    ]
    width = max(len(k) for k, _ in rows)
    return "run:\n" + "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _epoch_line(row: dict, epochs: int) -> str:
    """One line per epoch for logs: training loss, the validation score (Dice per class or region and their mean,
    or accuracy) when the epoch validated, and the epoch's time."""
    parts = [f"epoch {row['epoch'] + 1}/{epochs}", f"loss {row['train_loss']:.4f}"]
    dice = {k[9:]: v for k, v in row.items() if k.startswith("val_dice_")}
    if dice:
        parts.append("val dice " + " ".join(f"{k} {v:.4f}" for k, v in dice.items())
                     + (f" (mean {score_of({f'dice_{k}': v for k, v in dice.items()}):.4f})" if len(dice) > 1 else ""))
    if "val_accuracy" in row:
        parts.append(f"val accuracy {row['val_accuracy']:.4f}")
    return "  ".join(parts + [f"{row['seconds']:.1f} s"])


def _check_task_config(tcfg, planned: bool = False) -> None:
    """The options every task trains with, checked once the task (and its plan) has settled them; ``planned``:
    before that, where None means "the plan's" and is let through."""
    def unset(value) -> bool:
        return planned and value is None

    if not unset(tcfg.epochs) and (not isinstance(tcfg.epochs, int) or tcfg.epochs < 1):
        raise LeanSegError(f"epochs must be at least 1, got {tcfg.epochs}")
    if not unset(tcfg.batch_size) and (not isinstance(tcfg.batch_size, int) or tcfg.batch_size < 1):
        raise LeanSegError(f"batch_size must be at least 1, got {tcfg.batch_size}")
    window = getattr(tcfg, "window", None)
    if window is not None and not isinstance(window, str):  # the sliding window's bounds hold for training too
        from leanseg.inference import check_window
        from leanseg.options import parse_window

        check_window(parse_window(window, len(window) if isinstance(window, tuple | list) else 3, what="window"))
    if unset(tcfg.lr):
        return
    if not isinstance(tcfg.lr, int | float) or not math.isfinite(tcfg.lr) or tcfg.lr <= 0:
        raise LeanSegError(f"lr must be a positive number, got {tcfg.lr}")


def check_fold(fold) -> int | str | None:
    if fold is None:
        return None
    text = str(fold).strip().lower()
    if text == "all":
        return "all"
    if not text.isdigit() or not 0 <= int(text) < FOLDS:
        raise LeanSegError(f"fold {fold!r}: expected 0 to {FOLDS - 1} or 'all'")
    return int(text)


def fold_cases(cases: list, root: Path, fold: int | str, main: bool = True) -> tuple[list, list]:
    """Training and validation cases of ``fold`` from ``root``/splits.json (a seeded 5-fold split of the case
    ids, written by the first fold that runs and reused by the others); "all": every case trains."""
    if fold == "all":
        return list(cases), []
    from leanseg.training.splits import load_splits

    ids = [str(c["id"]) for c in cases]
    if len(set(ids)) != len(ids):
        raise LeanSegError("cross-validation needs distinct case ids; two cases share one")
    splits = load_splits(root / "splits.json", ids, write=main)
    part = splits[int(fold)]
    by_id = {str(c["id"]): c for c in cases}
    missing = sorted(set(part["train"] + part["val"]) - set(by_id))
    if missing:
        raise LeanSegError(f"{root / 'splits.json'}: fold {fold} names cases the data does not have "
                           f"({', '.join(missing[:3])})")
    return [by_id[i] for i in part["train"]], [by_id[i] for i in part["val"]]


def _user_error(err: BaseException | None) -> LeanSegError | None:
    """The LeanSegError behind ``err``: MONAI's Compose re-raises a transform's error as a RuntimeError."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, LeanSegError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _train_epoch(net, dataset, optimizer, scheduler, scaler, loss_fn, task, cfg, dist, device, epoch,
                 use_amp, amp_dtype, step_losses, DataLoader) -> dict:
    from tqdm.auto import tqdm

    tcfg = task.config
    # the data pipeline's randomness is a function of (seed, epoch, rank) only: resuming needs no loader state
    data_seed = (cfg.seed * 1_000_003 + epoch * 1_009 + dist.rank) % 2**31
    if hasattr(dataset, "transform") and hasattr(dataset.transform, "set_random_state"):
        dataset.transform.set_random_state(seed=data_seed)
    gen = torch.Generator().manual_seed(data_seed)
    sampler: torch.utils.data.Sampler
    if dist.world > 1:
        sampler = torch.utils.data.DistributedSampler(dataset, dist.world, dist.rank, shuffle=True, seed=cfg.seed)
        sampler.set_epoch(epoch)
    else:
        sampler = torch.utils.data.RandomSampler(dataset, generator=gen)
    loader = DataLoader(dataset, batch_size=tcfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                        generator=gen, drop_last=False)
    net.train()
    losses: list[float] = []
    scores: dict[str, list[float]] = {}
    # a terminal gets a bar per epoch; a log file (stderr not a terminal) gets the epoch's line from train()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{tcfg.epochs}", leave=False, dynamic_ncols=True,
               disable=not (cfg.progress and dist.main and sys.stderr.isatty()))
    for batch in bar:
        image, target = batch["image"].to(device), batch["label"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            logits = net(image)
            if isinstance(logits, list | tuple):  # deep supervision: every decoder resolution has a loss
                loss = deep_supervision_loss(loss_fn, logits, target)
                logits = logits[0]
            else:
                loss = loss_fn(logits.float(), target)
        if not torch.isfinite(loss):
            raise LeanSegError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}); try a smaller --lr")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        losses.append(loss.item())
        step_losses.append(losses[-1])
        for k, v in task.batch_score(logits.detach().float(), target).items():
            scores.setdefault(k, []).append(v)
        bar.set_postfix(loss=f"{np.mean(losses):.4f}", **{k: f"{np.mean(v):.3f}" for k, v in scores.items()})
    return {"train_loss": float(np.mean(losses))} | {f"train_{k}": float(np.mean(v)) for k, v in scores.items()}


def deep_supervision_loss(loss_fn: Callable, logits: list[torch.Tensor] | tuple[torch.Tensor, ...],
                          target: torch.Tensor) -> torch.Tensor:
    """nnU-Net's deep supervision: the loss of each head (full resolution first, then each coarser decoder level)
    against the target brought to its grid by nearest-neighbour sampling (class indices and 0/1 region maps stay
    exact), weighted 1, 1/2, 1/4, ... and normalised to sum 1."""
    # not MONAI's DeepSupervisionLoss: its weights are not normalised (the loss scale would change with the number
    # of heads, and with it the meaning of lr and --clip) and it needs a float target for its interpolation
    weights = [0.5**i for i in range(len(logits))]
    total = torch.zeros((), device=target.device)
    for w, out in zip(weights, logits, strict=True):
        t = target
        if tuple(out.shape[2:]) != tuple(target.shape[2:]):
            t = torch.nn.functional.interpolate(target.float(), size=out.shape[2:], mode="nearest").to(target.dtype)
        total = total + w * loss_fn(out.float(), t)
    return total / sum(weights)


def _append_csv(path: Path, row: dict) -> None:
    rows = []
    if path.exists():
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    fields = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _truncate_csv(path: Path, last_epoch: int) -> None:
    """Drop rows a killed run wrote after its last saved state, so a resumed run does not repeat them."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= last_epoch]
    path.unlink()
    for r in rows:
        _append_csv(path, r)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional; the CSV always exists
        return None
    return SummaryWriter(str(out / "tensorboard"))
