"""Checking data against the JSON Schemas a process declares (inputs, reply and event payloads).

jsonschema decides, with a validator built once per schema: validators are cached by the
schema's canonical JSON text, so the same schema written in two places (or compiled twice)
shares one, and no cache depends on where a schema dict happens to live in memory.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema

VALIDATORS_KEPT = 256
"""How many schemas' validators are kept (the least recently used go first)."""


def schema_problem(value: Any, schema: dict[str, Any]) -> str | None:
    """None when `value` satisfies `schema`; else the most relevant problem, in words."""
    validator = validator_for(json.dumps(schema, sort_keys=True, separators=(",", ":")))
    if validator.is_valid(value):
        return None
    import jsonschema  # here, not at the top: a command that checks no data starts 0.1 s sooner

    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{error.message}" + (f" (at `{where}`)" if where else "")


@functools.lru_cache(maxsize=VALIDATORS_KEPT)
def validator_for(schema_text: str) -> jsonschema.protocols.Validator:
    """The validator of the schema whose canonical JSON text (sorted keys, no spaces) is `schema_text`."""
    import jsonschema

    validator: jsonschema.protocols.Validator = jsonschema.Draft202012Validator(json.loads(schema_text))
    return validator
