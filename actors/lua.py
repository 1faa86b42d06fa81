"""Loads the broker's Lua scripts, each with the shared helpers in front."""

from __future__ import annotations

from importlib import resources

import redis

__all__ = ["load_scripts", "script_source"]

_LIB = "_lib.lua"


def load_scripts(client: redis.Redis) -> dict[str, redis.commands.core.Script]:
    """Register every ``actors/broker/*.lua`` script on ``client``.

    Returns:
      A mapping of script name (file name without ``.lua``) to a callable
      :class:`redis.commands.core.Script`, which runs by EVALSHA and
      loads itself again after a Redis restart.
    """
    folder = resources.files("actors").joinpath("broker")
    lib = folder.joinpath(_LIB).read_text(encoding="utf-8")
    scripts = {}
    for entry in folder.iterdir():
        name = entry.name
        if not name.endswith(".lua") or name == _LIB:
            continue
        body = entry.read_text(encoding="utf-8")
        scripts[name[: -len(".lua")]] = client.register_script(lib + "\n" + body)
    return scripts


def script_source(*names: str) -> str:
    """The text of ``actors/broker/<name>.lua`` (of several, in order) with the shared helpers in front."""
    folder = resources.files("actors").joinpath("broker")
    parts = [folder.joinpath(_LIB).read_text(encoding="utf-8")]
    parts += [folder.joinpath(f"{name}.lua").read_text(encoding="utf-8") for name in names]
    return "\n".join(parts)
