"""The README names only what exists: every constant it quotes in backticks (an enum value, an
error reason, a variable, `"PRICE_TYPE_RECURRING"`) is defined in the contract, the code, the
Makefile or the tests. A renamed or removed enum (the contract's `NextAction` went in the
re-settlement) must not live on as the README's example of the wire format."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONSTANT = re.compile(r'`"?([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)"?`')
# Names of other systems the README quotes: gRPC status codes it spells out.
FOREIGN = {"DEADLINE_EXCEEDED"}


def _sources() -> str:
    parts = [(REPO / "Makefile").read_text(encoding="utf-8")]
    for folder, pattern in (
        ("protos/billing", "*.proto"),
        ("server/tollbooth", "*.py"),
        ("tests", "*.py"),
        ("bench", "*.py"),
    ):
        parts += [p.read_text(encoding="utf-8") for p in sorted((REPO / folder).rglob(pattern))]
    return "\n".join(parts)


def test_every_constant_the_readme_quotes_is_defined_somewhere() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quoted = set(CONSTANT.findall(readme)) - FOREIGN
    assert len(quoted) > 100, len(quoted)  # the pattern still finds the README's constants
    sources = _sources()
    missing = sorted(name for name in quoted if not re.search(rf"\b{name}\b", sources))
    assert missing == [], f"the README quotes names nothing defines: {missing}"
