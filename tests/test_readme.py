"""The README's Python quickstart runs as written and prints what its comments promise."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def _run(source: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, str(README), "exec"), {"__name__": "readme"})
    return out.getvalue()


def test_readme_has_the_two_quickstarts() -> None:
    assert len(BLOCKS) == 2


def test_app_attest_quickstart_verifies_an_attestation_and_an_assertion() -> None:
    lines = _run(BLOCKS[0]).splitlines()
    assert lines[0].endswith(" production")
    assert lines[1] == "1"


def test_play_integrity_quickstart_allows_the_genuine_device() -> None:
    assert _run(BLOCKS[1]).strip() == "allow ()"
