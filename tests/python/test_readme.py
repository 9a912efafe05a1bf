"""The README's commands work exactly as written, from the repository root, with the installed
package: the numpy example (and its printed numbers), the C++ example (`pyopt --cmakedir`), and
install lines that install this checkout rather than PyPI's unrelated `pyopt`."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import markdown
from cpp_tools import ROOT, env, tool

README = ROOT / "README.md"
pytestmark = pytest.mark.skipif(not README.exists(), reason="needs the source tree")


def readme() -> str:
    return README.read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    return markdown.code_blocks(readme(), language)


def block_containing(language: str, needle: str) -> str:
    return markdown.block_containing(readme(), language, needle, "the README")


def shell_env() -> dict[str, str]:
    """The environment of a user whose active Python is this one (its `pyopt` command first on PATH)."""
    scripts = str(Path(sys.executable).parent)
    return {**env(), "PATH": scripts + os.pathsep + os.environ.get("PATH", "")}


def test_numpy_example_is_the_file_and_its_loss_falls():
    example = ROOT / "examples" / "numpy_logistic.py"
    source = example.read_text(encoding="utf-8")
    body = source.split('"""', 2)[2].lstrip("\n")  # without the module docstring
    assert block_containing("python", "pyopt.AdamW({\"w\": w") == body, "README block and examples/numpy_logistic.py differ"
    # `python examples/numpy_logistic.py` from the repository root (sys.path[0] is examples/, so the
    # installed pyopt is imported, not the source folder).
    result = subprocess.run([sys.executable, "examples/numpy_logistic.py"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=shell_env())
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("epoch")]
    losses = [float(row[3]) for row in rows]
    assert len(losses) == 6 and all(b < a for a, b in zip(losses, losses[1:])), result.stdout
    claim = re.search(r"prints the loss falling from ([0-9.]+) to ([0-9.]+)", readme())
    assert claim, "the README no longer states the example's losses"
    assert (f"{losses[0]:.3f}", f"{losses[-1]:.3f}") == claim.groups(), result.stdout


def test_cmakedir_from_the_repository_root():
    """`pyopt --cmakedir` works where `python -m pyopt --cmakedir` cannot (the source folder shadows
    the installed package there)."""
    result = subprocess.run(["pyopt", "--cmakedir"], cwd=ROOT, capture_output=True, text=True, env=shell_env())
    assert result.returncode == 0, result.stderr
    assert (Path(result.stdout.strip().splitlines()[-1]) / "pyoptConfig.cmake").is_file(), result.stdout
    include = subprocess.run(["pyopt", "--includedir"], cwd=ROOT, capture_output=True, text=True, env=shell_env())
    assert (Path(include.stdout.strip().splitlines()[-1]) / "pyopt" / "pyopt.hpp").is_file(), include.stdout


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="needs a C++ compiler")
def test_cpp_example_commands_as_written():
    """The README's three lines for examples/cpp, run by bash from the repository root."""
    script = block_containing("bash", "build-example")
    created = [p for p in (ROOT / "build-example", ROOT / "ckpt.npz") if not p.exists()]
    cmake_dir = str(Path(tool("cmake")).parent)
    shell = shell_env()
    shell["PATH"] = cmake_dir + os.pathsep + shell["PATH"]
    try:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True,
                                text=True, timeout=600, env=shell)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        losses = [float(line.split()[3]) for line in result.stdout.splitlines() if line.startswith("epoch")]
        assert losses and losses[-1] < 0.25 * losses[0], result.stdout
        assert (ROOT / "ckpt.npz").is_file()
    finally:
        for path in created:  # leave the checkout as we found it
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def test_install_lines_install_this_checkout():
    """PyPI's `pyopt` is an unrelated 2011 package: every pip line of the README installs the
    checkout (`.`), and the distribution name is one that PyPI's `pyopt` cannot shadow."""
    lines = [line for line in readme().splitlines() if "pip install" in line]
    assert lines
    for line in lines:
        for command in re.findall(r"pip install ([^`&|;]*)", line):
            requirements = [w.strip("\"'") for w in command.split() if not w.startswith("-")]
            for requirement in requirements:
                assert not re.match(r"pyopt(\[|$|[<>=])", requirement), line
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^name = "pyopt-simd"', pyproject, flags=re.M)


def test_two_setup_commands():
    section = readme().split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
    assert [c.strip() for c in commands] == ['pip install ".[tune]" && pyopt tune softmax-digits',
                                            'pip install ".[test]" && pytest']


def test_torch_block_runs_and_prints_torchs_state_keys(tmp_path):
    pytest.importorskip("torch")
    block = block_containing("python", "pyopt.torch.AdamW(model.parameters()")
    printed = re.search(r"^print\(.*\)  # (\[.*?\])", block, flags=re.M)
    assert printed, "the README's torch block no longer shows what it prints"
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=shell_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == printed.group(1)
    import torch  # the same keys as torch.optim.AdamW's own state_dict

    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    opt = torch.optim.AdamW([p])
    opt.step()
    assert str(sorted(opt.state_dict()["state"][0])) == printed.group(1)
