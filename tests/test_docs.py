"""The README's and the user guide's Python examples run as written."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
#: Pages whose examples read MNIST: run when the IDX files are found (VAEQUERY_MNIST_PATH,
#: or the shared data folder beside the repository), skipped, with the reason, otherwise.
NEEDS_MNIST = {"docs/datasets_and_training.md"}
_MNIST_DIRS = [os.environ.get("VAEQUERY_MNIST_PATH"), str(ROOT.parent / "shared/data/mnist")]
MNIST_DIR = next(
    (d for d in _MNIST_DIRS if d and (Path(d) / "t10k-images-idx3-ubyte.gz").exists()), None
)
#: Pages run by a test of their own, which also checks what they print or write.
RUN_ELSEWHERE = {
    "docs/mcmc_and_diagnostics.md": "tests/test_diagnostics.py::test_mcmc_docs_page_runs",
    "docs/performance.md": "tests/test_startup.py::test_performance_page_example_runs",
}
#: The README and every docs page with a python example, found rather than listed,
#: so a new page (the backends pages among them) cannot be left out.
PAGES = ["README.md"] + [
    f"docs/{p.name}"
    for p in sorted((ROOT / "docs").glob("*.md"))
    if BLOCK.search(p.read_text()) and f"docs/{p.name}" not in RUN_ELSEWHERE
]


@pytest.mark.parametrize("page", PAGES)
def test_examples_run(page, tmp_path, monkeypatch):
    text = (ROOT / page).read_text()
    blocks = BLOCK.findall(text)
    assert blocks, f"{page} has no python examples"
    if page in NEEDS_MNIST:
        if MNIST_DIR is None:
            pytest.skip(f"{page} reads MNIST: set VAEQUERY_MNIST_PATH to the IDX files' folder")
        monkeypatch.setenv("VAEQUERY_MNIST_PATH", MNIST_DIR)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, page, "exec"), namespace)  # one namespace per page, like a session


def test_every_backend_has_a_row_and_a_page():
    """docs/backends.md lists every registered backend; the page it links names it."""
    import vaequery as vq

    text = (ROOT / "docs" / "backends.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| \[[^\]]+\]\((\w+\.md)\) \|", text, re.M)
    listed = {name for name, _ in rows}
    assert listed == set(vq.backends.available()), (
        f"not in docs/backends.md: {sorted(set(vq.backends.available()) - listed)}; "
        f"listed but not registered: {sorted(listed - set(vq.backends.available()))}"
    )
    for name, page in rows:
        path = ROOT / "docs" / page
        assert path.exists(), f"{name}: {page} does not exist"
        assert f"`{name}`" in path.read_text() or f'"{name}"' in path.read_text(), (
            f"{page} does not mention the backend {name}"
        )
