"""bench/regenerate_docs.py finds every figure it rewrites: the markers exist where it writes, and a
rewrite replaces exactly what lies between them."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("regenerate_docs", ROOT / "bench" / "regenerate_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("page,name", [("README.md", "demo"), ("docs/getting-started.md", "demo"),
                                       ("docs/performance.md", "demo"), ("docs/methods.md", "compare-planted"),
                                       ("docs/methods.md", "compare-images")])
def test_the_markers_it_rewrites_exist_once(page, name):
    text = (ROOT / page).read_text()
    assert text.count(f"<!-- measured:{name} -->") == 1 and text.count(f"<!-- /measured:{name} -->") == 1


def test_replace_rewrites_only_between_the_markers(script, tmp_path):
    page = tmp_path / "p.md"
    page.write_text("a <!-- measured:x -->old<!-- /measured:x --> b\n<!-- measured:y -->keep<!-- /measured:y -->\n")
    script.replace(page, "x", "new")
    assert page.read_text() == "a <!-- measured:x -->new<!-- /measured:x --> b\n<!-- measured:y -->keep<!-- /measured:y -->\n"
    with pytest.raises(SystemExit, match="no <!-- measured:z -->"):
        script.replace(page, "z", "?")


def test_provenance_names_the_commit_and_the_command(script):
    line = script.provenance("zipfast demo", 1)
    assert re.search(r"`zipfast demo` at commit [0-9a-f]{7}", line) and "--threads 1" in line
