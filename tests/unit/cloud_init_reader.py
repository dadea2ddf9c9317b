"""Read cloud-configs as cloud-init does, and check them with cloud-init's schema checker.

Run by the python3 the cloud-init Debian package is installed for (/usr/bin/python3), not by
the project's virtualenv, which has no `cloudinit`. stdin: a JSON list of user-data documents.
stdout: a JSON list with, for each document, `config` (what cloud-init's loader made of it; a
value JSON has no type for, such as a date, is written as {"python": repr}) and `problems`
(what keeps cloud-init from taking it as schema-valid cloud-config; [] when nothing does).
"""

from __future__ import annotations

import json
import sys

from cloudinit import util
from cloudinit.config.schema import SchemaValidationError, get_schema, validate_cloudconfig_schema
from cloudinit.handlers import type_from_starts_with


def read(document: str, schema: dict) -> dict:
    problems = []
    if type_from_starts_with(document) != "text/cloud-config":
        problems.append("cloud-init does not take it for cloud-config (no #cloud-config header)")
    config = util.load_yaml(document)  # what the cloud-config part handler does; None if unreadable
    if config is None:
        problems.append("cloud-init's loader could not read it as a YAML mapping")
    else:
        try:
            validate_cloudconfig_schema(config, schema, strict=True, log_details=False)
        except SchemaValidationError as error:
            problems.append(str(error))
    return {"config": config, "problems": problems}


def main() -> None:
    schema = get_schema()
    results = [read(document, schema) for document in json.load(sys.stdin)]
    json.dump(results, sys.stdout, default=lambda value: {"python": repr(value)})


if __name__ == "__main__":
    main()
