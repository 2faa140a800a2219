"""Hostile and broken files (built to run code, truncated, of another env or architecture,
config files with YAML tags) through ``rl.TRPO.load``, ``trpo eval`` and ``--resume``; and
a full or read-only disk: a clear error, and never a corrupted checkpoint."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import pytest
import torch

import rl
import rl.checkpoint
import rl.loop
import rl.run_files
from rl.checkpoint import read_checkpoint
from rl.cli import main
from rl.config import ConfigError
from rl.errors import CheckpointWriteError, RunDirError
from rl.run_files import CHECKPOINT_FORMAT, CheckpointError, UnsafeCheckpointError, writer_tag
from tests.conftest import rows


def small_config(run_dir, **overrides):
    settings = dict(
        env_id="CartPole-v1",
        total_steps=512,
        steps_per_iteration=128,
        seed=1,
        checkpoint_every=1,
        policy={"hidden_sizes": (8,)},
        value={"hidden_sizes": (8,), "epochs": 1},
        run_dir=str(run_dir),
    )
    return rl.TRPOConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-iteration run: model.pt, checkpoint.pt (4), checkpoint.prev.pt (3)."""
    run_dir = tmp_path_factory.mktemp("finished")
    rl.TRPO(small_config(run_dir)).learn(progress="none").close()
    return run_dir


@pytest.fixture
def run_copy(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def eval_error(run_dir, capsys) -> str:
    """``trpo eval RUN_DIR``: exit 2 and a one-line error on stderr, returned."""
    assert main(["eval", str(run_dir), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    error_lines = [line for line in err.splitlines() if line.startswith("trpo eval: error: ")]
    assert len(error_lines) == 1, err
    return error_lines[0]


# ------------------------------------------------------------------- hostile and broken
class CreatesAFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("name", ["model.pt", "checkpoint.pt"])
def test_file_built_to_run_code_is_refused_by_load_and_eval(run_copy, tmp_path, capsys, name):
    """A model.pt, or a checkpoint.pt that eval falls back to without a model.pt."""
    created = tmp_path / "created-by-the-file"
    if name == "checkpoint.pt":
        (run_copy / "model.pt").unlink()
    torch.save({"format": CHECKPOINT_FORMAT, "payload": CreatesAFile(created)}, run_copy / name)
    with pytest.raises(UnsafeCheckpointError, match=r"GLOBAL io\.open") as error:
        rl.TRPO.load(run_copy / name)
    assert "never runs code" in str(error.value)
    assert "never runs code" in eval_error(run_copy, capsys)
    assert not created.exists()


def eval_falls_back_to_the_checkpoint(run_dir, capsys) -> str:
    """``trpo eval RUN_DIR``: exit 0 on the newest intact state, saying why on stderr."""
    assert main(["eval", str(run_dir), "--episodes", "1"]) == 0
    err = capsys.readouterr().err
    assert "trpo eval: using checkpoint.pt at step" in err, err
    return err


def remove_checkpoints(run_dir) -> None:
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (run_dir / name).unlink(missing_ok=True)


def test_truncated_model_file_is_refused_by_load_and_eval(run_copy, capsys):
    """eval uses the newest intact state (the checkpoint) and says why; without one it
    refuses in one line."""
    model = run_copy / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="is truncated or corrupt"):
        rl.TRPO.load(model)
    assert "is truncated or corrupt" in eval_falls_back_to_the_checkpoint(run_copy, capsys)
    remove_checkpoints(run_copy)
    assert "is truncated or corrupt" in eval_error(run_copy, capsys)


def test_random_bytes_in_model_file_are_reported_as_corrupt(run_copy, capsys):
    (run_copy / "model.pt").write_bytes(bytes(range(256)) * 40)
    remove_checkpoints(run_copy)
    line = eval_error(run_copy, capsys)
    assert "is truncated or corrupt" in line and "never runs code" not in line


def test_file_that_is_not_an_rl_model_is_refused(run_copy, capsys):
    torch.save({"weights": torch.zeros(3)}, run_copy / "model.pt")
    with pytest.raises(CheckpointError, match=r"is not an rl TRPO model file"):
        rl.TRPO.load(run_copy / "model.pt")
    assert "is not an rl TRPO model file" in eval_falls_back_to_the_checkpoint(run_copy, capsys)
    remove_checkpoints(run_copy)
    assert "is not an rl TRPO model file" in eval_error(run_copy, capsys)


def test_model_with_networks_of_another_architecture_is_refused(run_copy, capsys):
    """Weights of a 16-unit policy under a config that says 8 units."""
    state = torch.load(run_copy / "model.pt", weights_only=True)
    other = rl.TRPO(small_config(None, policy={"hidden_sizes": (16,)}))
    state["policy"] = other.policy.state_dict()
    torch.save(state, run_copy / "model.pt")
    with pytest.raises(CheckpointError, match="do not fit env 'CartPole-v1'"):
        rl.TRPO.load(run_copy / "model.pt")
    assert "do not fit env 'CartPole-v1'" in eval_error(run_copy, capsys)


def test_model_loaded_into_another_env_is_refused(run_copy):
    """A CartPole model loaded with a Pendulum env factory."""
    import gymnasium as gym

    with pytest.raises(CheckpointError, match="do not fit"):
        rl.TRPO.load(run_copy / "model.pt", env_fn=lambda: gym.make("Pendulum-v1"))


def test_observation_statistics_of_another_env_are_refused(tmp_path):
    run_dir = tmp_path / "normalized"
    rl.TRPO(small_config(run_dir, normalize_observations=True, total_steps=128)).learn(
        progress="none"
    )
    state = torch.load(run_dir / "model.pt", weights_only=True)
    state["obs_normalizer"]["mean"] = torch.zeros(3, dtype=torch.float64)
    state["obs_normalizer"]["var"] = torch.ones(3, dtype=torch.float64)
    torch.save(state, run_dir / "model.pt")
    with pytest.raises(CheckpointError, match=r"statistics .* have shape \(3,\), env 'CartPole"):
        rl.TRPO.load(run_dir / "model.pt")


def test_checkpoint_of_another_env_is_refused_by_trpo_train_resume(run_copy, tmp_path, capsys):
    pendulum = tmp_path / "pendulum"
    rl.TRPO(small_config(pendulum, env_id="Pendulum-v1", total_steps=128)).learn(progress="none")
    shutil.copy(pendulum / "checkpoint.pt", run_copy / "checkpoint.pt")
    assert main(["train", "--resume", str(run_copy), "--total-steps", "1024"]) == 2
    err = capsys.readouterr().err
    assert "env_id = 'Pendulum-v1', the config has env_id = 'CartPole-v1'" in err
    assert err.count("\n") == 1


def test_run_config_with_python_tags_is_refused_by_resume_and_runs_nothing(
    run_copy, tmp_path, capsys
):
    marker = tmp_path / "pwned"
    config = run_copy / "config.yaml"
    config.write_text(
        config.read_text().replace(
            "max_kl: 0.01", f'max_kl: !!python/object/apply:os.system ["touch {marker}"]'
        )
    )
    assert "!!python" in config.read_text()
    with pytest.raises(ConfigError, match=r"config\.yaml"):
        rl.TRPO.resume(run_copy)
    assert main(["train", "--resume", str(run_copy), "--total-steps", "1024"]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and err.count("\n") == 1
    assert not marker.exists()


# ------------------------------------------------------------------- full or read-only disk
def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_unwritable_run_dir_is_reported_before_training_starts(tmp_path, monkeypatch, capsys):
    """The first write of ``learn`` (config.yaml, fsynced) fails: no env is stepped."""
    monkeypatch.setattr(os, "fsync", enospc)
    stepped = []
    monkeypatch.setattr(rl.loop, "collect", lambda *args: stepped.append(1))
    with pytest.raises(RunDirError, match=r"cannot write config\.yaml in the run") as err:
        rl.TRPO(small_config(tmp_path / "run")).learn(progress="none")
    assert "No space left on device" in str(err.value) and not stepped
    assert not list((tmp_path / "run").iterdir())  # no config.yaml, no torn temporary
    code = main(["train", "CartPole-v1", "--run-dir", str(tmp_path / "cli"), "--quiet"])
    assert code == 1 and not stepped
    err = capsys.readouterr().err
    assert err.startswith("trpo train: error: cannot write config.yaml in the run directory")
    assert err.count("\n") == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_run_dir_is_reported_before_training_starts(tmp_path):
    run_dir = tmp_path / "read-only"
    run_dir.mkdir()
    run_dir.chmod(0o555)
    try:
        with pytest.raises(RunDirError, match="Permission denied"):
            rl.TRPO(small_config(run_dir)).learn(progress="none")
    finally:
        run_dir.chmod(0o755)


def fail_during_checkpoint(monkeypatch, iteration, function, failing):
    """Replace ``os.<function>`` by ``failing`` while the checkpoint of ``iteration`` is
    written (only the ``nth`` call of it if ``failing`` is a (callable, nth) pair)."""
    failing, nth = failing if isinstance(failing, tuple) else (failing, None)
    write_checkpoint = rl.checkpoint.write_checkpoint

    def write(state, directory):
        if state["progress"]["iteration"] != iteration:
            return write_checkpoint(state, directory)
        real, calls = getattr(os, function), []

        def maybe_fail(*args, **kwargs):
            calls.append(args)
            if nth is None or len(calls) == nth:
                return failing(*args, **kwargs)
            return real(*args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(os, function, maybe_fail)
            return write_checkpoint(state, directory)

    monkeypatch.setattr(rl.checkpoint, "write_checkpoint", write)


def half_written_then_enospc(state, file):
    file.write(b"PK\x03\x04 half a checkpoint")
    enospc()


@pytest.mark.parametrize(
    ("where", "function", "failing"),
    [
        ("writing the temporary file", "save", half_written_then_enospc),
        ("fsync of the temporary file", "fsync", (enospc, 1)),
        ("keeping the previous checkpoint", "replace", (enospc, 1)),
        ("renaming the new checkpoint in", "replace", (enospc, 2)),
    ],
)
def test_disk_full_during_a_checkpoint_keeps_the_checkpoints_and_resume_works(
    tmp_path, finished, monkeypatch, where, function, failing
):
    """A run of 3 iterations resumed for a 4th, whose checkpoint fails: a clear error,
    checkpoint.pt still iteration 3 and checkpoint.prev.pt 2 or 3, no temporary files;
    a later resume ends with the rows of the uninterrupted 4-iteration run."""
    run_dir = tmp_path / "run"
    rl.TRPO(small_config(run_dir, total_steps=384)).learn(progress="none")
    agent = rl.TRPO.resume(run_dir, total_steps=512)
    if function == "save":
        monkeypatch.setattr(rl.run_files.torch, "save", half_written_then_enospc)
    else:
        fail_during_checkpoint(monkeypatch, 4, function, failing)
    with pytest.raises(CheckpointWriteError) as error:
        agent.learn(progress="none")
    assert "cannot write the checkpoint of iteration 4" in str(error.value)
    assert "No space left on device; the checkpoints already there are intact" in str(error.value)
    assert read_checkpoint(run_dir / "checkpoint.pt")["progress"]["iteration"] == 3
    assert read_checkpoint(run_dir / "checkpoint.prev.pt")["progress"]["iteration"] in (2, 3)
    assert not [path.name for path in run_dir.iterdir() if path.name.endswith(".tmp")]
    monkeypatch.undo()
    rl.TRPO.resume(run_dir).learn(progress="none")
    assert rows(run_dir) == rows(finished)


def test_file_systems_without_hard_links_still_keep_the_previous_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "link", lambda *args: (_ for _ in ()).throw(PermissionError()))
    rl.TRPO(small_config(tmp_path, total_steps=384)).learn(progress="none")
    assert read_checkpoint(tmp_path / "checkpoint.pt")["progress"]["iteration"] == 3
    assert read_checkpoint(tmp_path / "checkpoint.prev.pt")["progress"]["iteration"] == 2


def test_disk_full_while_appending_metrics_is_a_clear_error(run_copy, finished, monkeypatch):
    agent = rl.TRPO.resume(run_copy, total_steps=640)

    def full(path, mode="r", *args, **kwargs):
        if "a" in mode:
            enospc()
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(rl.run_files, "open", full, raising=False)
    with pytest.raises(RunDirError, match=r"cannot append to metrics.jsonl in the run direc"):
        agent.learn(progress="none")
    assert read_checkpoint(run_copy / "checkpoint.pt")["progress"]["iteration"] == 4
    monkeypatch.undo()
    agent = rl.TRPO.resume(run_copy, total_steps=640)
    assert agent.iteration == 4
    agent.learn(progress="none")
    assert [row["iteration"] for row in rows(run_copy)] == [1, 2, 3, 4, 5]


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    """What a killed write leaves is removed when the next run starts; temporaries of live
    processes (other ranks writing into the same run directory) are left alone."""
    finished_process = subprocess.Popen([sys.executable, "-c", "pass"])
    finished_process.wait()
    dead, alive = finished_process.pid, os.getppid()  # pytest's parent lives on
    host = writer_tag().rpartition("-")[0]
    names = [
        f".checkpoint.pt.{host}-{dead}.k3j1.tmp",
        f".checkpoint.prev.pt.{host}-{dead}.link.tmp",
        f".config.yaml.{dead}.tmp",  # written before host names were recorded
        f".metrics.jsonl.{host}-{dead}.tmp",
        f".checkpoint.pt.{host}-{alive}.x8w2.tmp",
        f".config.yaml.{alive}.tmp",
        f".checkpoint.pt.other-node-{dead}.q1z2.tmp",  # another node's writer: not judged
    ]
    for name in names:
        (tmp_path / name).write_text("partial")
    rl.TRPO(small_config(tmp_path, total_steps=128)).learn(progress="none")
    left = sorted(path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp"))
    assert left == sorted(names[4:])
