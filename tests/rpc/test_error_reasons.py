"""Every reason the code can send is a stable ErrorReason from the contract."""

from __future__ import annotations

import ast
from pathlib import Path

from billing.v1 import errors_pb2

SERVER = Path(__file__).resolve().parents[2] / "server" / "tollbooth"
PREFIX = "ERROR_REASON_"
KNOWN = {name.removeprefix(PREFIX) for name in errors_pb2.ErrorReason.keys()} - {"UNSPECIFIED"}

# Callable name -> index of the positional argument that carries the reason.
REASON_ARG = {
    "DomainError": 1,
    "unauthenticated": 0,
    "permission_denied": 0,
    "failed_precondition": 0,
    "invalid": 1,
    "_error": 1,  # the webhook sidecar's HTTP error answer
}


def reasons_in_source() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in SERVER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            values = []
            if name in REASON_ARG and len(node.args) > REASON_ARG[name]:
                values.append(node.args[REASON_ARG[name]])
            values += [kw.value for kw in node.keywords if kw.arg == "reason"]
            for value in values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found.setdefault(value.value, []).append(f"{path.name}:{node.lineno}")
    return found


def test_the_scan_sees_the_reasons_it_should() -> None:
    found = reasons_in_source()
    assert {"CREDENTIALS_MISSING", "SCOPE_MISSING", "WEBHOOK_SIGNATURE_INVALID"} <= set(found)


def test_every_reason_in_the_code_is_declared_in_the_contract() -> None:
    undeclared = {r: where for r, where in reasons_in_source().items() if r not in KNOWN}
    assert undeclared == {}
