"""Control characters in stored text: the one rule that the RPC edge (`tollbooth.rpc.edge`),
usage ingest's fast pass and catalog-as-code apply alike.

A control character (U+0000..U+001F, U+007F..U+009F) is refused in every stored string: a
name, an e-mail, a URL, a reference or an id has no use for one, and one smuggled in (an
escape sequence, a separator byte) misleads whoever reads the text later: a log line, a
terminal, a CSV export, a joined fingerprint. So is a bidirectional embedding, override or
isolate (U+202A..U+202E, U+2066..U+2069): it makes text display as other text ("Trojan
Source": a product name shown in the console reversed). The marks U+200E and U+200F, and
the joiners emoji need, stay allowed. Text that may span lines (descriptions, reasons, metadata
values) accepts tab, line feed and carriage return. Free-form JSON (usage `properties`)
holds what its sender sends, NUL aside (PostgreSQL text cannot hold it).
"""

from __future__ import annotations

import re

# Any control character (C0, DEL, C1) and bidirectional embedding, override or isolate, and
# those a multi-line text may not hold.
_BIDI = "\u202a-\u202e\u2066-\u2069"
SINGLE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")
MULTILINE = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_BIDI}]")
# What text stored before C1 and bidirectional controls were refused may hold, and an update
# may send back unchanged where its mask does not name it (ignored there, never stored): C0
# controls and DEL were refused from the start.
STORED_SINGLE_LINE = re.compile("[\x00-\x1f\x7f]")
STORED_MULTILINE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def control_problem(value: str, *, multiline: bool = False) -> str | None:
    """What is wrong with `value` ("contains a NUL character", "contains a control character
    (U+001B)"), or None when it holds no control character it may not."""
    found = (MULTILINE if multiline else SINGLE_LINE).search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "contains a NUL character"
    if char >= "\u2000":
        return f"contains a bidirectional control character (U+{ord(char):04X})"
    return f"contains a control character (U+{ord(char):04X})"
