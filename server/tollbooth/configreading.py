"""How settings are read from the environment (the machinery under `tollbooth.config`).

`env(...)` declares a field read from one variable; `_Environment` is the base of every
settings section: pydantic-settings reads the environment (or the mapping given to
`from_env`), then values are cleaned the way the service always has: surrounding blanks are
dropped, an empty value means the default, lists are comma-separated, and integers are
range-checked with an error that names the variable.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from annotated_types import Ge, Le
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from tollbooth.configvalues import ConfigError, _integer, _seconds, split_list

# -- reading -----------------------------------------------------------------------------------

# The mapping `from_env(env)` reads instead of os.environ (None: the process environment).
_given_env: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "tollbooth_config_env", default=None
)


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, over the mapping given to `from_env` if any."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        given = _given_env.get()
        return super()._load_env_vars() if given is None else dict(given)


def env(
    name: str,
    default: Any = None,
    *,
    lo: int | None = None,
    hi: int | None = None,
    raw: bool = False,
    **extra: Any,
) -> Any:
    """A field read from variable `name`. `lo`/`hi` bound an integer; `raw` keeps the value
    exactly as set (no stripping, an empty value is a value)."""
    meta = [*([Ge(lo)] if lo is not None else []), *([Le(hi)] if hi is not None else [])]
    field = Field(default, alias=name, json_schema_extra={"raw": raw} if raw else None, **extra)
    field.metadata.extend(meta)
    return field


def _bounds(field: Any) -> tuple[int | None, int | None]:
    lo = next((int(m.ge) for m in field.metadata if isinstance(m, Ge)), None)  # type: ignore[call-overload]
    hi = next((int(m.le) for m in field.metadata if isinstance(m, Le)), None)  # type: ignore[call-overload]
    return lo, hi


_NUMBERS = (int, int | None)


class _Environment(BaseSettings):
    """What every section shares: how the environment is read and cleaned."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        enable_decoding=False,
        extra="ignore",
        frozen=True,
        populate_by_name=False,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, _EnvSource(settings_cls))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Any:
        """Read the settings from `environ` (default: the process environment).

        Raises ConfigError naming the first variable whose value is unusable.
        """
        with _reading(environ):
            try:
                return cls()
            except ValidationError as exc:
                raise _config_error(exc) from None

    @model_validator(mode="before")
    @classmethod
    def _clean(cls, data: Any) -> Any:
        """Blanks dropped, empty means default, lists split, integers range-checked."""
        if not isinstance(data, Mapping):
            return data
        clean: dict[str, Any] = {}
        for field in cls.model_fields.values():
            name = field.alias
            if name is None or name not in data:
                continue
            value = data[name]
            if not isinstance(value, str):
                clean[name] = value
                continue
            if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("raw"):
                clean[name] = value
                continue
            text = value.strip()
            if field.annotation == tuple[str, ...]:
                clean[name] = split_list(text)  # set but empty: an empty list
            elif not text:
                continue  # the default
            elif field.annotation in _NUMBERS:
                clean[name] = _integer(name, text, *_bounds(field))
            elif field.annotation is float:
                clean[name] = _seconds(name, text, *_bounds(field))
            else:
                clean[name] = text
        return cls._derive(clean)

    @classmethod
    def _derive(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Settings computed from others (a section's hook); `values` is keyed by variable."""
        return values


@contextmanager
def _reading(environ: Mapping[str, str] | None) -> Iterator[None]:
    token = _given_env.set(None if environ is None else dict(environ))
    try:
        yield
    finally:
        _given_env.reset(token)


def _config_error(exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    where = ".".join(str(part) for part in first.get("loc", ()))
    return ConfigError(f"{where}: {first.get('msg', 'unusable value')}")
