"""Git's config file syntax, written so that git reads back exactly the value given.

Why quote every value: unquoted, git drops leading and trailing spaces, cuts the value at `#`
or `;`, and reads a newline as the start of new settings (a name could then set
`core.sshCommand`). Inside double quotes only `"` and `\\` need escaping (git-config(1),
"Syntax"). Control characters have no place in these values: the spec refuses them, and this
module refuses them again rather than write a file git would read differently.
"""

from __future__ import annotations

from collections.abc import Sequence

Section = tuple[str, Sequence[tuple[str, str]]]
"""A section name and its (key, value) pairs, in order."""


def config_value(text: str) -> str:
    """text as a double-quoted git config value; ValueError for a control character."""
    bad = next((char for char in text if ord(char) < 0x20 or ord(char) == 0x7F), None)
    if bad is not None:
        raise ValueError(f"{text!r} holds the control character {bad!r}; git config values here may not")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_file(sections: Sequence[Section]) -> str:
    """The text of a config file holding these sections, every value quoted."""
    lines = []
    for name, entries in sections:
        lines.append(f"[{name}]")
        lines += [f"\t{key} = {config_value(value)}" for key, value in entries]
    return "\n".join(lines) + "\n"
