"""Killed-after-checkpoint-and-resumed equals uninterrupted (next-step loss); two-process DDP with gloo on CPU."""

import os
import socket

import pytest
import torch

from leanseg.errors import LeanSegError
from leanseg.training import TrainConfig, train

OPTS = dict(synthetic_size=32, model_kwargs={"features": (4, 8)}, hd95=False, batch_size=2, samples_per_case=2)


class Killed(Exception):
    pass


def _kill_after_first_epoch(epoch, row):
    if epoch == 0:
        raise Killed


def test_resume_gives_the_uninterrupted_next_step_loss(tmp_path):
    full = train("seg2d", synthetic=6, config=TrainConfig(out=tmp_path / "a", seed=1, progress=False), epochs=2,
                 **OPTS)
    with pytest.raises(Killed):
        train("seg2d", synthetic=6, config=TrainConfig(out=tmp_path / "b", seed=1, progress=False), epochs=2,
              on_epoch_end=_kill_after_first_epoch, **OPTS)
    resumed = train("seg2d", synthetic=6, config=TrainConfig(out=tmp_path / "b", seed=1, progress=False,
                                                             resume=True), epochs=2, **OPTS)
    steps_first_epoch = len(full.step_losses) - len(resumed.step_losses)
    assert steps_first_epoch > 0
    assert resumed.step_losses[0] == full.step_losses[steps_first_epoch]  # exactly, not approximately
    assert resumed.step_losses == full.step_losses[steps_first_epoch:]


def test_a_stopped_run_never_looks_finished(tmp_path):
    """Checkpoints say finished=false until the run's last epoch is done; the resumed run marks them finished;
    a resume state beyond the run's epochs is refused instead of printing success without training."""
    from leanseg.checkpoint import read_meta

    out = tmp_path / "run"
    with pytest.raises(Killed):
        train("seg2d", synthetic=6, config=TrainConfig(out=out, seed=1, progress=False), epochs=3,
              on_epoch_end=_kill_after_first_epoch, **OPTS)
    for name in ("best.safetensors", "last.safetensors"):
        extra = read_meta(out / name).extra
        assert (extra["finished"], extra["epoch"], extra["epochs"]) == (False, 0, 3), extra
    train("seg2d", synthetic=6, config=TrainConfig(out=out, seed=1, progress=False, resume=True), epochs=3, **OPTS)
    assert read_meta(out / "last.safetensors").extra["finished"] is True
    assert read_meta(out / "best.safetensors").extra["finished"] is True
    with pytest.raises(LeanSegError, match="beyond this run's 2 epochs"):
        train("seg2d", synthetic=6, config=TrainConfig(out=out, seed=1, progress=False, resume=True), epochs=2,
              **OPTS)


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    result = train("seg2d", synthetic=6, config=TrainConfig(out=out, progress=False), epochs=1, **OPTS)
    flat = torch.cat([p.detach().flatten() for p in result.model.parameters()])
    torch.save(flat, os.path.join(os.path.dirname(out), f"params_{rank}.pt"))


@pytest.mark.slow
def test_two_process_ddp_gloo(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "run")
    torch.multiprocessing.spawn(_worker, args=(2, port, out), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"params_{r}.pt") for r in range(2))
    assert torch.equal(a, b)  # DDP kept the replicas identical
    assert (tmp_path / "run" / "last.safetensors").exists() and (tmp_path / "run" / "metrics.csv").exists()
