"""What the benchmarks share: the command line and the report files (Markdown, JSON, chart)."""

from __future__ import annotations

import json
import multiprocessing
import queue
import resource
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from drn_tf.console import run_command
from export.reporting import jsonable


def command(prog: str, config_type: type, run: Callable, argv: Sequence[str] | None) -> int:
    """``prog [flags]``: parses ``argv`` (default: ``sys.argv[1:]``) into ``config_type`` and
    calls ``run(config, positionals, verbose)``, verbose when ``-v``/``--verbose`` is given;
    returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = "-v" in argv or "--verbose" in argv
    return run_command(prog, config_type, lambda c, p: run(c, p, verbose), argv)


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write(
    output: str | Path, name: str, report: dict, text: str, chart: Callable | None = None
) -> None:
    """Writes ``output/name.md`` (``text``), ``output/name.json`` (``report``) and, given
    ``chart(report)`` returning a matplotlib figure, ``output/name.png``; prints ``text``."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{name}.md").write_text(text)
    (output / f"{name}.json").write_text(json.dumps(report, indent=2, default=jsonable) + "\n")
    if chart is not None:
        figure = chart(report)
        figure.savefig(output / f"{name}.png", dpi=110)
        pyplot().close(figure)
    print(text)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: ``VmHWM`` of ``/proc/self/status``, the
    high-water mark of this process image alone. (``ru_maxrss`` would not do in a spawned
    worker: Linux carries the forking parent's peak over ``exec`` into it.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_fresh_process(target: Callable, *args):
    """``target(*args, results)`` in a spawned process (its own runtime, its own peak memory);
    returns what it put on ``results``. ``args[0]`` names the run in the error of a worker
    that died (an import error, the OOM killer), which must not hang the benchmark."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=target, args=(*args, results))
    process.start()
    while True:
        try:
            result = results.get(timeout=5)
            break
        except queue.Empty:
            if not process.is_alive():
                raise RuntimeError(
                    f"{args[0]}: the worker died (exit {process.exitcode})"
                ) from None
    process.join()
    return result
