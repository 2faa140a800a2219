"""Progress output: plain lines off a TTY, rich live display on one, quiet summary only."""

from __future__ import annotations

import io
import re
import subprocess
import sys

from rl.progress import PlainProgress, QuietProgress, RichProgress, make_progress

ROW = {
    "step": 2048, "iteration": 1, "episode_return_mean": -1200.5, "episode_length_mean": 200.0,
    "kl": 0.0091, "entropy": 1.42, "value_loss": 12.5, "explained_variance": float("nan"),
    "backtracks": 2, "accepted": True, "fps": 5100.0,
}  # fmt: skip


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_mode_is_plain_when_the_stream_is_not_a_tty():
    stream = io.StringIO()
    progress = make_progress("auto", 4096, stream)
    assert isinstance(progress, PlainProgress)
    progress.iteration(ROW)
    progress.iteration(ROW | {"step": 4096, "iteration": 2, "accepted": False})
    progress.evaluation({"step": 4096, "mean_return": -300.25, "std_return": 20.0})
    progress.finish({"steps": 4096, "iterations": 2})
    lines = stream.getvalue().splitlines()
    assert lines == [
        "iter 1 step 2048/4096 return -1200.5 length 200 kl 0.0091 entropy 1.420 value_loss 12.5 "
        "expl._var - backtracks 2 accepted yes steps/s 5100",
        "iter 2 step 4096/4096 return -1200.5 length 200 kl 0.0091 entropy 1.420 value_loss 12.5 "
        "expl._var - backtracks 2 accepted no steps/s 5100",
        "eval step 4096 return -300.2 ± 20.0",
        "done: steps 4096, iterations 2",
    ]


def test_auto_mode_is_rich_on_a_tty():
    stream = FakeTerminal()
    progress = make_progress("auto", 4096, stream)
    assert isinstance(progress, RichProgress)
    progress.iteration(ROW)
    progress.finish({"steps": 2048, "iterations": 1})
    raw = stream.getvalue()
    assert "\x1b[" in raw  # cursor control / colour: a live display
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", raw)
    assert "-1200.5" in text and "0.0091" in text and "done: steps 2048" in text


def test_quiet_prints_only_the_final_summary():
    stream = io.StringIO()
    progress = make_progress("quiet", 4096, stream)
    assert isinstance(progress, QuietProgress)
    progress.iteration(ROW)
    progress.evaluation({"step": 4096, "mean_return": 1.0, "std_return": 0.0})
    progress.finish({"steps": 4096, "eval_mean_return": -150.123})
    assert stream.getvalue() == "done: steps 4096, eval_mean_return -150.12\n"


def test_import_without_the_rl_extra_names_the_extra():
    code = "import sys; sys.modules['gymnasium'] = None; import rl"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert 'ImportError: rl needs the "rl" extra: pip install -e ".[rl]"' in result.stderr


def test_trpo_command_without_the_rl_extra_prints_one_line():
    code = "import sys; sys.argv[0] = 'trpo'; sys.modules['rich'] = None; import rl.cli"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert (
        result.stderr
        == 'trpo: rl needs the "rl" extra: pip install -e ".[rl]" (rich is not installed)\n'
    )
