"""Every configuration field is both a command-line flag and a YAML key: the flag's name
and the conversion of a YAML or command-line value to the field's declared type."""

from __future__ import annotations

from sigma_pyro.errors import ConfigError


# Flags, coercion and validation are hand-written rather than left to a library (pydantic,
# OmegaConf, an argparse-from-dataclass helper): every dataclass field becomes both a CLI flag
# and a YAML key, and every bad value must be a one-line error naming that flag (and the file
# it came from). No dependency gives that with these messages.
def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def coerce(value, hint, where: str):
    """Convert YAML or command-line values to the field's declared type."""
    args = getattr(hint, "__args__", ())
    optional = type(None) in args
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"{where}: may not be empty")
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    origin = getattr(base, "__origin__", None)
    try:
        if origin is list:
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split()]
            return [int(v) for v in value]
        if base is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1", "on"):
                    return True
                if value.lower() in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if base in (int, float) and isinstance(value, bool):
            raise ValueError(value)
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if base is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: cannot read {value!r} as {getattr(base, '__name__', base)}"
        ) from None
