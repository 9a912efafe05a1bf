"""The ``pyopt`` command. Each subcommand's module is imported only when it runs."""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # e.g. `pyopt list | head`: stop quietly, as Unix tools do
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv in (["--cmakedir"], ["--includedir"]):  # as pybind11's: for cmake -Dpyopt_DIR="$(pyopt --cmakedir)"
        from ._cmake import get_cmake_dir, get_include

        print(get_cmake_dir() if argv[0] == "--cmakedir" else get_include())
        return 0
    if argv[:1] == ["bench"]:  # its own options: see pyopt/bench.py
        from .bench import main as bench

        return bench(argv[1:])
    parser = argparse.ArgumentParser(
        prog="pyopt", description="pyopt: SIMD optimizers for CPU arrays",
        epilog="pyopt --cmakedir prints the folder of the installed CMake package (for -Dpyopt_DIR=...), "
               "pyopt --includedir the C++ include folder.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small classifier on the bundled digits data and print the loss")
    demo.add_argument("--optimizer", default="adamw", help="optimizer name (see `pyopt list`)")
    demo.add_argument("--epochs", type=int, default=30)
    demo.add_argument("--lr", type=float, default=None, help="learning rate (default: the optimizer's demo default)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--precision", default="f32",
                      help="params and optimizer storage, e.g. bf16+master+int8: bf16 params, a float32 master copy, "
                           "8-bit states (default f32)")
    sub.add_parser("info", help="version, compiler, ISA and threads as JSON")
    listing = sub.add_parser("list", help="the optimizers and their default hyperparameters")
    listing.add_argument("--markdown", action="store_true", help="print docs/optimizers.md (a table of all optimizers)")
    tune = sub.add_parser("tune", help="search the optimizer and its hyperparameters for a task (Optuna)")
    tune_error: ImportError | None = None
    if argv[:1] == ["tune"]:  # the tuner (and optuna) are imported for `pyopt tune` only
        try:
            from .tuner.cli import add_arguments  # type: ignore[import-not-found]
        except ImportError as exc:  # optuna is an extra: pip install ".[tune]"
            tune_error = exc
            tune.add_argument("rest", nargs=argparse.REMAINDER)
        else:
            add_arguments(tune)
    sub.add_parser("bench", help="time the optimizers against numpy, torch.optim, DeepSpeed and the bandwidth "
                   "floor (pyopt bench --help)")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run

        return run(optimizer=args.optimizer, epochs=args.epochs, lr=args.lr, seed=args.seed, precision=args.precision)
    if args.command == "tune":
        if tune_error is not None:
            print(f"pyopt tune needs the tuner's dependencies (in a checkout of pyopt: pip install '.[tune]'): {tune_error}",
                  file=sys.stderr)
            return 2
        from .tuner.cli import run as run_tune

        return run_tune(args)
    if args.command == "info":
        import pyopt

        print(json.dumps(pyopt.info(), indent=2))
        return 0
    if args.command == "list":
        from ._spec import available, record

        if args.markdown:
            from .catalog import markdown

            sys.stdout.write(markdown())
            return 0
        import inspect

        import pyopt

        for name in available():
            s = record(name)
            defaults = s.defaults
            if s.rule is None:  # written in Python: its signature's spelling (tuples, None, ints)
                signature = inspect.signature(getattr(pyopt, s.class_name)).parameters.values()
                defaults = {p.name: p.default for p in signature if p.default is not inspect.Parameter.empty}
            print(f"{name:10s} {s.summary}  [matches {s.reference}]")
            print(f"{'':10s} {defaults}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
