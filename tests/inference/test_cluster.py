"""Cases and SEG-Y slabs on Dask workers (LocalCluster on loopback, worker processes) equal the single-process run."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import nibabel as nib
import numpy as np
import pytest
import segyio
import torch

import leanseg
from leanseg.cli.main import main
from leanseg.models import create

distributed = pytest.importorskip("distributed")


def make_model(path, in_channels=1):
    torch.manual_seed(0)
    net = create("lean_unet", spatial_dims=3, in_channels=in_channels, out_channels=3, features=(4, 8))
    leanseg.save_model(net, path, labels={"background": 0, "a": 1, "b": 2}, window=[16, 16, 16],
                       channels=[f"c{i}" for i in range(in_channels)])
    return str(path)


def make_cases(folder, n, shape=(20, 18, 14)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        nib.save(nib.Nifti1Image(rng.normal(size=shape).astype(np.float32), np.eye(4)), folder / f"case_{i:03d}.nii.gz")


def make_cube(path, n_il=30, n_xl=12, n_samples=24, dead=((3, 4), (17, 0))):
    """A crossline-sorted cube with dead traces, big-endian IBM float samples (format 1, as most field data)."""
    spec = segyio.spec()
    spec.samples, spec.format = list(range(n_samples)), 1
    positions = [(il, xl) for xl in range(n_xl) for il in range(n_il) if (il, xl) not in dead]
    spec.tracecount = len(positions)
    rng = np.random.default_rng(1)
    with segyio.create(str(path), spec) as f:
        for t, (il, xl) in enumerate(positions):
            f.header[t] = {segyio.TraceField.INLINE_3D: 100 + 2 * il, segyio.TraceField.CROSSLINE_3D: 7 + xl,
                           segyio.TraceField.offset: 1, segyio.TraceField.CDP_X: 1000 * il + xl}
            f.trace[t] = rng.normal(size=n_samples).astype(np.float32)
    return path


def labels_of(path):
    return np.asanyarray(nib.load(path).dataobj)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, host="127.0.0.1") as local:
        yield local


def test_folder_on_a_scheduler_equals_single_run(tmp_path, cluster):
    model = make_model(tmp_path / "m.safetensors")
    make_cases(tmp_path / "in", 6)
    single = leanseg.predict_folder(tmp_path / "in", model, output=tmp_path / "single", progress=False)
    spread = leanseg.predict_folder(tmp_path / "in", model, output=tmp_path / "dask", progress=False,
                                    scheduler=cluster.scheduler_address)
    assert sorted(spread.predicted) == sorted(single.predicted) and not spread.failed
    assert len(spread.peak_mb) == 2  # both workers predicted, each reports its peak memory
    for name in sorted(os.listdir(tmp_path / "single")):
        np.testing.assert_array_equal(labels_of(tmp_path / "single" / name), labels_of(tmp_path / "dask" / name))
        assert nib.load(tmp_path / "dask" / name).header == nib.load(tmp_path / "single" / name).header
    # one model per worker: the token of the model and options is cached in each worker process
    tokens = cluster_tokens(cluster)
    assert all(len(t) == 1 for t in tokens.values())


def cluster_tokens(cluster):
    def tokens():
        from leanseg import cluster as mod

        return list(mod._CACHE)

    with distributed.Client(cluster) as client:
        return client.run(tokens)


def test_segy_over_workers_equals_stream_trace_for_trace(tmp_path, cluster):
    model = make_model(tmp_path / "m.safetensors")
    cube = make_cube(tmp_path / "cube.sgy")
    leanseg.predict(cube, model, output=tmp_path / "single.sgy", slab=5, halo=2, progress=False)
    leanseg.predict(cube, model, output=tmp_path / "dask.sgy", slab=5, halo=2, progress=False,
                    scheduler=cluster.scheduler_address)
    single, spread = (tmp_path / "single.sgy").read_bytes(), (tmp_path / "dask.sgy").read_bytes()
    assert len(single) == len(spread) and single == spread  # text, binary, every trace header and sample
    with segyio.open(tmp_path / "dask.sgy", ignore_geometry=True) as f:
        assert f.tracecount == 30 * 12 - 2
        assert set(np.unique(f.trace.raw[:])) <= {0.0, 1.0, 2.0}
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no partial file, no journal left


def test_segy_resumes_by_slab(tmp_path, cluster, monkeypatch):
    """A run that lost slabs names them; the next run predicts only those and gives the whole stream's output."""
    from leanseg import prediction as mod

    model = make_model(tmp_path / "m.safetensors")
    cube = make_cube(tmp_path / "cube.sgy")
    leanseg.predict(cube, model, output=tmp_path / "single.sgy", slab=5, halo=2, progress=False)
    real = mod._slab_task

    def fails_on_slab_10(token, model, options, path, partial, step):
        if step[0] == 10:
            raise RuntimeError("node lost")
        return real(token, model, options, path, partial, step)

    monkeypatch.setattr(mod, "_slab_task", fails_on_slab_10)
    with pytest.raises(leanseg.LeanSegError, match=r"1 slab\(s\) not predicted, starting at inline\(s\) 120 "
                                                   r"\(RuntimeError: node lost\); run the same command again"):
        leanseg.predict(cube, model, output=tmp_path / "dask.sgy", slab=5, halo=2, progress=False,
                        scheduler=cluster.scheduler_address)
    assert not (tmp_path / "dask.sgy").exists()
    journal = (tmp_path / ".dask.sgy.slabs-done").read_text().splitlines()
    assert sorted(int(s) for s in journal[1:]) == [0, 5, 15, 20, 25]
    seen = tmp_path / "seen.txt"  # the task runs in a worker process: it records the slabs in a file

    def records(token, model, options, path, partial, step):
        with open(seen, "a") as f:
            f.write(f"{step[0]}\n")
        return real(token, model, options, path, partial, step)

    monkeypatch.setattr(mod, "_slab_task", records)
    leanseg.predict(cube, model, output=tmp_path / "dask.sgy", slab=5, halo=2, progress=False,
                    scheduler=cluster.scheduler_address)
    assert seen.read_text().split() == ["10"]
    assert (tmp_path / "dask.sgy").read_bytes() == (tmp_path / "single.sgy").read_bytes()


def test_cli_local_workers_and_a_killed_worker(tmp_path, capsys):
    """--workers 2 starts a LocalCluster; a worker killed mid-run is restarted by its nanny and the run finishes
    with every case (or, had its case killed every worker, names it)."""
    model = make_model(tmp_path / "m.safetensors")
    make_cases(tmp_path / "in", 8, shape=(40, 40, 32))
    leanseg.predict_folder(tmp_path / "in", model, output=tmp_path / "single", progress=False)
    killed = []
    before = set(worker_pids())  # the module's cluster: not the one the command starts

    def kill_one_worker():  # once the first case is written, one worker process of the command's cluster
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            fresh = [pid for pid in worker_pids() if pid not in before]
            if fresh and (tmp_path / "dask").is_dir() and os.listdir(tmp_path / "dask"):
                os.kill(fresh[0], signal.SIGKILL)
                killed.append(fresh[0])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=kill_one_worker)
    thread.start()
    code = main(["predict", str(tmp_path / "in"), "-m", model, "-o", str(tmp_path / "dask"), "--workers", "2",
                 "--no-progress"])
    thread.join()
    err = capsys.readouterr().err
    assert killed, "no worker was killed"
    assert code == 0, err
    assert "8 predicted" in err and "peak memory:" in err
    for name in sorted(os.listdir(tmp_path / "single")):
        np.testing.assert_array_equal(labels_of(tmp_path / "single" / name), labels_of(tmp_path / "dask" / name))


def worker_pids():
    """PIDs of the worker processes that LocalClusters of this process spawned (not multiprocessing's tracker)."""
    import psutil

    pids = []
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in command and "resource_tracker" not in command:
            pids.append(child.pid)
    return pids


def test_unreachable_scheduler_is_one_line(tmp_path, capsys):
    model = make_model(tmp_path / "m.safetensors")
    make_cases(tmp_path / "in", 2)
    code = main(["predict", str(tmp_path / "in"), "-m", model, "-o", str(tmp_path / "out"), "--scheduler",
                 "tcp://127.0.0.1:9", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("leanseg: error: tcp://127.0.0.1:9: no Dask scheduler answers"), err
    assert not os.listdir(tmp_path / "out")


@pytest.mark.slow
def test_real_dask_scheduler_and_two_dask_workers(tmp_path):
    """`dask scheduler` and two `dask worker` processes, as on a cluster; the CLI as a user runs it."""
    dask = shutil.which("dask")
    if dask is None:
        pytest.skip("the dask command is not installed")
    model = make_model(tmp_path / "m.safetensors")
    make_cases(tmp_path / "in", 6)
    leanseg.predict_folder(tmp_path / "in", model, output=tmp_path / "single", progress=False)
    cube = make_cube(tmp_path / "cube.sgy")
    leanseg.predict(cube, model, output=tmp_path / "single.sgy", slab=5, halo=2, progress=False)
    info = tmp_path / "scheduler.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(info)], env=env, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        import json

        address = json.loads(info.read_text())["address"]
        procs += [subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-dashboard"], env=env,
                                   stderr=subprocess.DEVNULL) for _ in range(2)]
        cli = [sys.executable, "-m", "leanseg", "predict"]
        run = subprocess.run(cli + [str(tmp_path / "in"), "-m", model, "-o", str(tmp_path / "dask"), "--scheduler",
                                    address, "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert "6 predicted" in run.stderr and run.stderr.count(" MB") == 2, run.stderr  # two workers' peaks
        for name in sorted(os.listdir(tmp_path / "single")):
            np.testing.assert_array_equal(labels_of(tmp_path / "single" / name), labels_of(tmp_path / "dask" / name))
        run = subprocess.run(cli + [str(cube), "-m", model, "-o", str(tmp_path / "dask.sgy"), "--slab", "5", "--halo",
                                    "2", "--scheduler", address, "--no-progress"], env=env, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert (tmp_path / "dask.sgy").read_bytes() == (tmp_path / "single.sgy").read_bytes()
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
