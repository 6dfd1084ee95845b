"""A tool call's input against its tool's `input_schema`: the check itself, run in a worker
thread or, as a script, in a child process (see `api.tool.validation` for which and why).

It imports nothing from `api`, so the child starts in about the time Python and jsonschema
take to import. As a script it says `ready` once imported, reads `[schema, input]` as JSON on
stdin and writes the answer (null or a message) as JSON on stdout.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # the package ships no type information
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]  # as above
from referencing import Registry
from referencing.exceptions import Unresolvable


def first_error(schema: dict[str, Any], instance: object) -> str | None:
    """Why `instance` does not match `schema`, or None when it does."""
    try:
        # An empty registry: a reference to anything outside the schema is unresolvable.
        # jsonschema's default would download it, with no address check and no timeout.
        validator = jsonschema.validators.validator_for(schema)(schema, registry=Registry())
        error = best_match(validator.iter_errors(instance))
    except Unresolvable as exc:
        return f"its reference {exc.ref!r} is not within the schema"
    except (jsonschema.SchemaError, RecursionError):
        return "the schema cannot be applied to it"
    return None if error is None else str(error.message)


def main() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    schema, instance = json.loads(sys.stdin.buffer.read())
    sys.stdout.write(json.dumps(first_error(schema, instance)) + "\n")


if __name__ == "__main__":
    main()
