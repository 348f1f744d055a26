"""Model names: one store, registry, engine and cluster hold several models, each by name.

A name becomes an image repository (`<KILN_REPOSITORY>/<name>`), Kubernetes object names
(`kiln-<name>`), container names and a V2 model name, so it is a DNS label that starts with
a letter: lowercase letters, digits and '-', at most MAX_LENGTH characters (short enough
for `kiln-<name>-candidate` to stay within Kubernetes' 63).

Without a name kiln uses DEFAULT_NAME, the name everything had before names existed: a store,
deployment records and running endpoints written by an earlier kiln belong to it.
"""

from __future__ import annotations

import re

from kiln.config.errors import SettingsError

DEFAULT_NAME = "model"
MAX_LENGTH = 40
NAME_PATTERN = rf"^[a-z](?:[-a-z0-9]{{0,{MAX_LENGTH - 2}}}[a-z0-9])?$"
_NAME = re.compile(NAME_PATTERN)
NAME_RULE = (
    "a name is lowercase letters, digits and '-', starts with a letter, ends with a letter "
    f"or digit, and has at most {MAX_LENGTH} characters (it names image repositories and "
    "Kubernetes objects)"
)


def check_name(name: str) -> str:
    """`name` when it is a usable model name, else a SettingsError naming what is wrong."""
    if _NAME.fullmatch(name):
        return name
    shown = name if len(name) <= 60 else name[:60] + "..."
    raise SettingsError(f"model name {shown!r} is not usable: {NAME_RULE}", setting="KILN_MODEL")


def is_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))
