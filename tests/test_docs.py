"""The README and docs/ still work: every Python block runs on its own, every
link leads somewhere, every shell command names real files, modules, options
and extras."""
import contextlib
import importlib.util
import io
import pathlib
import re
import shlex

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_ONNX = importlib.util.find_spec("onnx") is not None
HAS_KERAS = importlib.util.find_spec("keras") is not None


def blocks(path, language):
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def _cases(language):
    return [pytest.param(path, i, block, id=f"{path.relative_to(ROOT)}-{i}")
            for path in DOCS for i, block in enumerate(blocks(path, language))]


def test_there_are_docs_and_blocks_to_check():
    assert len(DOCS) >= 8
    assert len(_cases("python")) >= 12 and len(_cases("bash")) >= 6


def run_block(block, name):
    """Run a block in a namespace of its own; returns (namespace, what it printed)."""
    namespace = {"__name__": "__docs__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, name, "exec"), namespace)
    return namespace, out.getvalue()


@pytest.mark.parametrize("path, i, block", _cases("python"))
def test_every_python_block_runs_on_its_own(path, i, block):
    if "import torch" in block and not HAS_TORCH:
        pytest.skip("needs torch")
    if "from onnx import" in block and not HAS_ONNX:
        pytest.skip("needs onnx")
    if "import keras" in block and not (HAS_KERAS and HAS_TORCH):
        pytest.skip("needs keras (on its PyTorch backend)")
    try:
        run_block(block, f"{path.name} block {i}")
    finally:
        import fastrnn

        fastrnn.set_default_backend(None)  # a block may choose one for the process


def _readme_block(marker):
    return next(b for b in blocks(ROOT / "README.md", "python") if marker in b)


def test_the_readme_shows_what_its_blocks_print():
    _, out = run_block(_readme_block("rnn_backward(d_out"), "README")
    assert out.split() == ["(64,", "64)", "(100,", "8,", "32)"]
    _, out = run_block(_readme_block("lstm_backward("), "README")
    assert out.strip() == "(96, 16)"
    block = _readme_block("lstm.backward(")
    _, out = run_block(block, "README")
    said = re.findall(r"print\(.*?\)\s+# (.*)", block)
    assert out.strip().splitlines() == said
    _, out = run_block(_readme_block("opt.step(grads)"), "README")
    losses = [float(line.split()[-1]) for line in out.splitlines()]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_the_readme_pytorch_block_converts_the_model():
    pytest.importorskip("torch")
    namespace, out = run_block(_readme_block("convert(model)"), "README")
    assert out.split()[0] == "fastrnn.torch"
    assert namespace["out"].shape == (16, 20, 64)


# --- links --------------------------------------------------------------------------


def _slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path):
    return {_slug(h) for h in re.findall(r"^#+ (.*)$", path.read_text(), flags=re.M)}


def _links():
    for path in DOCS:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if not re.match(r"[a-z]+:", target):
                yield pytest.param(path, target, id=f"{path.relative_to(ROOT)}->{target}")


@pytest.mark.parametrize("path, target", list(_links()))
def test_every_link_leads_somewhere(path, target):
    file, _, anchor = target.partition("#")
    dest = (path.parent / file).resolve() if file else path
    assert dest.exists(), f"{path.name} links to {target}, which does not exist"
    assert ROOT in dest.parents or dest == ROOT, f"{target} leaves the repository"
    if anchor:
        assert anchor in _anchors(dest), f"{path.name}: no heading #{anchor} in {dest.name}"


# --- shell commands -----------------------------------------------------------------


def _commands():
    for path in DOCS:
        for block in blocks(path, "bash"):
            for line in block.splitlines():
                line = line.split(" # ")[0].strip()
                if line and not line.startswith("#"):
                    yield pytest.param(path, line, id=f"{path.relative_to(ROOT)}: {line[:50]}")


def _extras():
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]")[1].split("\n[")[0]
    return set(re.findall(r"^(\w+) = \[", section, flags=re.M))


def _argparse_options(module_path):
    return set(re.findall(r'add_argument\(\s*"(--[\w-]+)"', (ROOT / module_path).read_text()))


OPTIONS = {"fastrnn": "fastrnn/__main__.py", "benches.report": "benches/report.py",
           "benches.overhead": "benches/overhead.py"}


@pytest.mark.parametrize("path, line", list(_commands()))
def test_every_shell_command_is_real(path, line):
    words = shlex.split(line.replace("\\", ""))
    while words and (re.match(r"^[A-Z_]+=", words[0]) or words[0] in ("env", "export", "-u")
                     or words[0].startswith("OPENBLAS_")):
        word = words.pop(0)
        if re.match(r"^FASTRNN_[A-Z_]+=", word):
            name = word.split("=")[0]
            readers = (ROOT / "setup.py").read_text() + (ROOT / "fastrnn/_backends.py").read_text()
            assert name in readers, f"{line}: nothing reads {name}"
    if not words:
        return
    for word in words:
        if re.match(r"^(benches|examples|tests|kernels|fastrnn|docs)/[\w./-]*$", word):
            made_by_a_run = word.startswith("benches/results/run")
            assert (ROOT / word.rstrip("/")).exists() or made_by_a_run, f"{line}: no {word}"
        for extra in re.findall(r"\.\[([\w,]+)\]", word):
            assert set(extra.split(",")) <= _extras(), f"{line}: no such extra {extra}"
        if word.startswith("--bench-"):
            assert f'"{word.split("=")[0]}"' in (ROOT / "benches/conftest.py").read_text(), word
    if words[:2] == ["python", "-m"] and words[2] not in ("pip", "pytest"):
        module = words[2]
        assert importlib.util.find_spec(module) is not None, f"{line}: no module {module}"
        if module in OPTIONS:
            known = _argparse_options(OPTIONS[module])
            for word in words[3:]:
                if word.startswith("--"):
                    assert word.split("=")[0] in known, f"{line}: {module} has no {word}"
    elif words[0] == "python" and words[1].endswith(".py"):
        assert (ROOT / words[1]).exists(), line
