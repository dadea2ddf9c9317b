"""What marks a private key in text, taken from a key made here: the tests hold no key-shaped text."""

from __future__ import annotations

from components.keys import generate_ed25519

_ARMOUR = generate_ed25519("marker")[0].splitlines()
PRIVATE_KEY_BEGIN, PRIVATE_KEY_END = _ARMOUR[0], _ARMOUR[-1]  # OpenSSH's first and last lines
PRIVATE_KEY = PRIVATE_KEY_BEGIN.split(" ", 2)[2].strip("-")  # the words every PEM armour of a private key has
