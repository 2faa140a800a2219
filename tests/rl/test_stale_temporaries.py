"""Stale temporary files on a run directory that several nodes share: only this host's
writers that are dead are judged, whatever dashes and dots the host names hold."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from rl.run_files import remove_stale_temporaries, writer_tag


@pytest.fixture
def dead_pid() -> int:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return finished.pid


def test_only_this_hosts_dead_writers_temporaries_are_removed(tmp_path, monkeypatch, dead_pid):
    monkeypatch.setattr(socket, "gethostname", lambda: "gpu-node-7.cluster")
    assert writer_tag() == f"gpu-node-7_cluster-{os.getpid()}"
    alive = os.getppid()
    removed = [
        f".checkpoint.pt.gpu-node-7_cluster-{dead_pid}.k3j1.tmp",
        f".checkpoint.prev.pt.gpu-node-7_cluster-{dead_pid}.link.tmp",
        f".metrics.jsonl.{dead_pid}.tmp",  # a bare PID (before hosts were recorded)
    ]
    kept = [
        f".checkpoint.pt.gpu-node-7_cluster-{alive}.x8w2.tmp",  # this host, alive
        f".checkpoint.pt.gpu-node-8_cluster-{dead_pid}.q1z2.tmp",  # another node
        f".checkpoint.pt.gpu-node-{dead_pid}.a1b2.tmp",  # host "gpu-node": another node
        f".config.yaml.gpu-node-7_cluster2-{dead_pid}.tmp",  # a longer name: another node
        f".config.yaml.7_cluster-{dead_pid}.tmp",  # a shorter one: another node
        f".checkpoint.pt.gpu-node-7_cluster-x{dead_pid}.c3d4.tmp",  # no process id: unsure
        f".notes.gpu-node-7_cluster-{dead_pid}.tmp",  # not a run file's temporary
    ]
    for name in removed + kept:
        (tmp_path / name).write_text("partial")
    assert sorted(path.name for path in remove_stale_temporaries(tmp_path)) == sorted(removed)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(kept)
