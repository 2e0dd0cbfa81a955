"""Checking data against the JSON Schemas a process declares (inputs, reply and event payloads).

jsonschema-rs (Draft 2020-12, formats not asserted, nothing fetched over the network) decides
and words the problem, with a validator built once per schema: validators are cached by the
schema's canonical JSON text, so the same schema written in two places (or compiled twice)
shares one, and no cache depends on where a schema dict happens to live in memory.

Why jsonschema-rs and not jsonschema: checking the order process's input took jsonschema
about 12 µs, a third of a whole instance's happy path in memory (start and three replies),
and kept that path below issue 12's floor of 30 times SpiffWorkflow's throughput;
jsonschema-rs takes under a microsecond (see bench/README.md).
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from procflow.dsl.model import canonical_json

if TYPE_CHECKING:
    import jsonschema_rs

VALIDATORS_KEPT = 256
"""How many schemas' validators are kept (the least recently used go first)."""


def schema_problem(value: Any, schema: dict[str, Any]) -> str | None:
    """None when `value` satisfies `schema`; else its first problem, in words."""
    return schema_text_problem(value, canonical_json(schema))


def schema_text_problem(value: Any, schema_text: str) -> str | None:
    """`schema_problem` for the schema whose canonical JSON text is `schema_text` (a definition
    keeps its input schema's: `ProcessDefinition.input_schema_text`)."""
    validator = validator_for(schema_text)
    if validator.is_valid(value):
        return None
    error = next(validator.iter_errors(value))
    where = "/".join(str(p) for p in error.instance_path)
    return error.message + (f" (at `{where}`)" if where else "")


@functools.lru_cache(maxsize=VALIDATORS_KEPT)
def validator_for(schema_text: str) -> jsonschema_rs.Validator:
    """The validator of the schema whose canonical JSON text (`canonical_json`) is `schema_text`."""
    import jsonschema_rs  # here, not at the top: a command that checks no data does not load it

    return jsonschema_rs.Draft202012Validator(json.loads(schema_text), validate_formats=False, offline=True)
