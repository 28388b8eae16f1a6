"""The Colab notebook (notebooks/leak_colab.ipynb) run headless against this checkout.

Its `parameters` cell is replaced by the smoke pipeline with the fast `pointmlp` model (as
tests/test_pipeline_runs.py's `_pointmlp_smoke`), the notebook is executed by nbclient in an
ipykernel started in notebooks/ (as Jupyter starts it), and what it displayed is checked against
the files the run wrote, read here independently. The committed notebook must carry no outputs.
"""

import ast
import base64
import json
import os
import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "leak_colab.ipynb"
PNG = b"\x89PNG\r\n\x1a\n"


def _cell(notebook, cell_id: str):
    (cell,) = [c for c in notebook.cells if c.get("id") == cell_id]
    return cell


def _parameters(notebook):
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged `parameters`"
    return cells[0]


def _assigned(source: str) -> set[str]:
    return {
        target.id
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        for target in node.targets
    }


def _calls(nodes) -> set[str]:
    """The functions called anywhere in `nodes` (AST statements), as source text."""
    return {ast.unparse(c.func) for n in nodes for c in ast.walk(n) if isinstance(c, ast.Call)}


def _outputs(cell, mime: str) -> list[str]:
    return [o["data"][mime] for o in cell.outputs if mime in o.get("data", {})]


def _stream(cell) -> str:
    return "".join(o["text"] for o in cell.outputs if o["output_type"] == "stream")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook executed with test parameters; (executed notebook, work directory)."""
    tmp = tmp_path_factory.mktemp("notebook")
    workdir = tmp / "run"
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = _parameters(notebook)
    test_parameters = "\n".join(
        [
            'CONFIG = "smoke"',
            'MODEL = "pointmlp"',
            'MODEL_KWARGS = {"hidden_sizes": (16, 16)}',
            # one validation and one checkpoint per run: half test_pipeline's 6 steps
            'OVERRIDES = {"train.num_steps": 3, "train.eval_every": 3}',
            f"WORKDIR = {str(workdir)!r}",
            "DATA_DIR = None",
            f"CACHE_DIR = {str(tmp / 'synthetic_cache')!r}",
            # "": keep JAX's settings from the environment (tests/conftest.py: the repo's cache)
            'COMPILATION_CACHE_DIR = ""',
        ]
    )
    # a renamed or new parameter must be set here too, not silently left at its default
    assert _assigned(test_parameters) == _assigned(parameters.source)
    parameters.source = test_parameters
    env = dict(os.environ)  # conftest's XLA_FLAGS, JAX_PLATFORMS and compilation cache settings
    env["IPYTHONDIR"] = str(tmp / "ipython")
    env["JUPYTER_RUNTIME_DIR"] = str(tmp / "jupyter_runtime")
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    client = NotebookClient(
        notebook,
        timeout=600,
        startup_timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},  # the kernel starts there
    )
    try:
        client.execute(env=env)  # raises CellExecutionError on any failing cell
    finally:
        nbformat.write(notebook, tmp / "executed.ipynb")  # to look at when a test fails
    return notebook, workdir


def test_committed_notebook_is_stripped_and_guards_colab():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], cell.id
            assert cell.execution_count is None, cell.id
    assert "name" not in notebook.metadata.get("colab", {})  # no per-user Colab state either
    _parameters(notebook)
    # every install / clone command sits under `if IN_COLAB:` (definitions aside)
    tree = ast.parse(_cell(notebook, "install").source)
    guards = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "IN_COLAB"]
    assert len(guards) == 1
    elsewhere = guards[0].orelse + [
        n for n in tree.body if n is not guards[0] and not isinstance(n, ast.FunctionDef)
    ]
    assert {"subprocess.run", "pip_install"} <= _calls(guards[0].body)
    assert not {"subprocess.run", "pip_install"} & _calls(elsewhere)


def test_notebook_runs_the_pipeline(executed):
    notebook, workdir = executed
    install = _stream(_cell(notebook, "install"))
    assert f"leakjax checkout: {REPO} (local)" in install  # found from notebooks/, nothing cloned
    run = _stream(_cell(notebook, "run"))
    assert "pointmlp, 3 steps per phase" in run
    assert "phases 1,2,3,4 done" in run  # the pipeline's progress lines reach the notebook
    report = json.loads((workdir / "report.json").read_text())
    assert report["model"] == "pointmlp" and report["train_steps"] == 3
    assert list(report["runs"]) == ["baseline", "leak"]
    assert (workdir / "leak" / "metrics.jsonl").stat().st_size > 0


def test_displayed_hierarchy_is_the_stored_one(executed):
    notebook, workdir = executed
    stored = json.loads((workdir / "hierarchy.json").read_text())
    report = json.loads((workdir / "report.json").read_text())
    assert report["hierarchy"]["micro_to_macro"] == stored["micro_to_macro"]
    shown = _outputs(_cell(notebook, "hierarchy"), "text/markdown")[0]
    rows = re.findall(r"^\| M(\d+) \| (.+) \|$", shown, flags=re.MULTILINE)
    displayed = {}
    for macro, members in rows:
        for name in members.split(", "):
            assert name not in displayed, name
            displayed[name] = int(macro)
    assert [int(m) for m, _ in rows] == list(range(len(stored["macro_names"])))
    assert displayed == dict(zip(stored["class_names"], stored["micro_to_macro"]))
    assert shown.startswith(f"{len(stored['macro_names'])} macro classes")


def _figures(cell) -> dict[str, bytes]:
    """{file name: PNG bytes} of the `name`: caption + image pairs a cell displayed."""
    shown, name = {}, None
    for output in cell.outputs:
        data = output.get("data", {})
        if "text/markdown" in data:
            caption = re.match(r"`([\w.-]+\.png)`", data["text/markdown"])
            name = caption.group(1) if caption else None
        elif "image/png" in data:
            assert name is not None and name not in shown
            shown[name] = base64.b64decode(data["image/png"])
            name = None
    return shown


def test_displayed_report_and_figures_are_the_written_files(executed):
    notebook, workdir = executed
    (shown,) = _outputs(_cell(notebook, "report"), "text/markdown")
    written = (workdir / "report.md").read_text()
    assert "| miou |" in written and "| hiou |" in written
    shown_lines, written_lines = shown.splitlines(), written.splitlines()
    assert len(shown_lines) == len(written_lines)
    for shown_line, written_line in zip(shown_lines, written_lines):
        if "![" in written_line:  # a figure link, named instead (the figure is displayed below)
            assert "![" not in shown_line and "(shown below)" in shown_line
        else:
            assert shown_line == written_line
    summary = _stream(_cell(notebook, "report"))
    miou = 100 * json.loads((workdir / "report.json").read_text())["runs"]["leak"]["miou"]
    assert f"leak: mIoU {miou:.2f}" in summary

    figures = {**_figures(_cell(notebook, "hierarchy")), **_figures(_cell(notebook, "figures"))}
    expected = {"dendrogram.png", "confusion.png", "curves.png", "render_0.png", "render_1.png"}
    assert expected <= set(figures), sorted(figures)
    for name, data in figures.items():
        assert data.startswith(PNG) and len(data) > 1000, name
        assert data == (workdir / name).read_bytes(), name  # the file the run wrote, unchanged
