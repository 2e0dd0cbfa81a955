"""Regenerate the golden diagrams and the committed images, or check that they are current.

    python scripts/regen_diagrams.py           # rewrite tests/cases/diagrams/* and docs/images/*
    python scripts/regen_diagrams.py --check   # exit 1 when any of them is stale (CI runs this)

Goldens: for every `processes/*.proc` and every fixture `tests/cases/diagrams/*.proc`, the
flow and sequence views as DOT and Mermaid; for the order process also a compensation path,
swimlanes, and an instance overlay drawn from a committed state record (made by `procflow
run ... --stop-at authorize_payment --json`); for the credit limit review the sequence of its
overdue human task.

Saga tables: for every process, `procflow paths` as text (`<name>-paths.txt`).

Images: SVG and PNG of the order process for the docs, of two larger samples (the loan
process's flow view, the refund's swimlanes), and the flows of the ticket booking (recovery
paths, retries on error replies, an undo even on timeout), of the quote acceptance (a
deadline handler, named ends) and of the credit limit review (a human task and its escalation). Graphviz's output differs between its
versions, so `--check` does not compare image bytes: `docs/images/diagrams.json` records the
SHA-256 of the DOT source each image was drawn from, and `--check` compares those.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procflow import visualize
from procflow.dsl import load
from procflow.dsl.model import ProcessDefinition
from procflow.dsl.paths import enumerate_paths, paths_text

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "cases" / "diagrams"
IMAGES = ROOT / "docs" / "images"
MANIFEST = IMAGES / "diagrams.json"
ORDER = ROOT / "processes" / "order_fulfillment.proc"
BOOKING = ROOT / "processes" / "ticket_booking.proc"
QUOTE = ROOT / "processes" / "quote_acceptance.proc"
REVIEW = ROOT / "processes" / "credit_limit_review.proc"
OVERDUE_PATH = "review.timeout"  # the human task nobody does: reminded, reassigned, then the failure
STATE = GOLDEN / "order_fulfillment-waiting.state.json"
COMPENSATION_PATH = "create_shipment.shipment_rejected"
RUN_ARGS = [
    "run", str(ORDER), "--input", '{"orderId":"ord_441","amount":180.0}', "--workflow-id", "wf_401",
    "--now", "2026-03-23T16:00:00Z", "--stop-at", "authorize_payment", "--json",
]


def sources() -> list[Path]:
    """Every process that gets goldens: the sample library, then the fixtures."""
    return sorted((ROOT / "processes").glob("*.proc")) + sorted(GOLDEN.glob("*.proc"))


def waiting_state() -> dict[str, Any]:
    """The order instance waiting at authorize_payment, as `procflow run --json` prints it."""
    done = subprocess.run([sys.executable, "-m", "procflow", *RUN_ARGS], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"procflow run failed ({done.returncode}): {done.stderr.strip()}")
    state: dict[str, Any] = json.loads(done.stdout)["state"]
    return state


def committed_state() -> dict[str, Any]:
    """The state record the instance goldens and image are drawn from."""
    state: dict[str, Any] = json.loads(STATE.read_text(encoding="utf-8"))
    return state


Render = Callable[[], str]


def golden_cases() -> list[tuple[Path, Render]]:
    """(golden file, how to make its text) for every golden; the tests compare them byte for byte."""
    cases: list[tuple[Path, Render]] = []
    definitions: dict[Path, ProcessDefinition] = {}

    def text(path: Path, view: str, fmt: str, **options: Any) -> Render:
        def make() -> str:
            if path not in definitions:
                definitions[path] = load(path)
            return visualize.render_text(definitions[path], view, fmt, **options)

        return make

    for path in sources():
        for view in ("flow", "sequence"):
            for fmt, ext in (("dot", "dot"), ("mermaid", "mmd")):
                cases.append((GOLDEN / f"{path.stem}-{view}.{ext}", text(path, view, fmt)))
    for path in sources():
        cases.append((GOLDEN / f"{path.stem}-paths.txt", saga_table(path)))
    order = ORDER
    for fmt, ext in (("dot", "dot"), ("mermaid", "mmd")):
        cases.append((GOLDEN / f"order_fulfillment-sequence-compensation.{ext}",
                      text(order, "sequence", fmt, path_name=COMPENSATION_PATH)))
        cases.append((GOLDEN / f"order_fulfillment-flow-swimlanes.{ext}", text(order, "flow", fmt, swimlanes=True)))
        cases.append((GOLDEN / f"order_fulfillment-flow-compensation.{ext}",
                      text(order, "flow", fmt, path_name=COMPENSATION_PATH)))

    for fmt, ext in (("dot", "dot"), ("mermaid", "mmd")):
        cases.append((GOLDEN / f"credit_limit_review-sequence-overdue.{ext}", text(REVIEW, "sequence", fmt, path_name=OVERDUE_PATH)))

    def instance(view: str, fmt: str) -> Render:
        return lambda: visualize.render_text(load(order), view, fmt, instance=committed_state())

    for view in ("flow", "sequence"):
        for fmt, ext in (("dot", "dot"), ("mermaid", "mmd")):
            cases.append((GOLDEN / f"order_fulfillment-{view}-instance.{ext}", instance(view, fmt)))
    return cases


def saga_table(path: Path) -> Render:
    """The saga table of a process, as `procflow paths` prints it."""
    return lambda: paths_text(enumerate_paths(load(path)))


def image_sources() -> dict[str, str]:
    """Image name (without extension) -> the DOT text it is drawn from."""
    definition = load(ORDER)
    return {
        "ticket_booking-flow": visualize.render_text(load(BOOKING), "flow", "dot"),
        "quote_acceptance-flow": visualize.render_text(load(QUOTE), "flow", "dot"),
        "credit_limit_review-flow": visualize.render_text(load(REVIEW), "flow", "dot"),
        "order_fulfillment-flow": visualize.render_text(definition, "flow", "dot"),
        "order_fulfillment-sequence-happy": visualize.render_text(definition, "sequence", "dot"),
        "order_fulfillment-sequence-compensation": visualize.render_text(
            definition, "sequence", "dot", path_name=COMPENSATION_PATH
        ),
        "order_fulfillment-instance": visualize.render_text(definition, "flow", "dot", instance=committed_state()),
        "loan_processing-flow": visualize.render_text(load(ROOT / "processes" / "loan_processing.proc"), "flow", "dot"),
        "refund-swimlanes": visualize.render_text(load(ROOT / "processes" / "refund.proc"), "flow", "dot", swimlanes=True),
    }


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _without_version(svg: bytes) -> bytes:
    """SVG without Graphviz's version comment, so it changes only when the picture does."""
    return re.sub(rb"<!-- Generated by graphviz[^>]*-->\n", b"", svg)


def regenerate() -> None:
    """Write the state record, every golden, every image and the image manifest."""
    from procflow.visualize.render import dot_to_image

    STATE.write_text(json.dumps(waiting_state(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {STATE.relative_to(ROOT)}")
    for path, make in golden_cases():
        path.write_text(make(), encoding="utf-8", newline="\n")
        print(f"wrote {path.relative_to(ROOT)}")
    IMAGES.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"images": {}}
    for name, source in image_sources().items():
        (IMAGES / f"{name}.svg").write_bytes(_without_version(dot_to_image(source, "svg")))
        (IMAGES / f"{name}.png").write_bytes(dot_to_image(source, "png"))
        manifest["images"][name] = {"dot_sha256": _digest(source), "files": [f"{name}.svg", f"{name}.png"]}
        print(f"wrote docs/images/{name}.svg, .png")
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {MANIFEST.relative_to(ROOT)}")


def check() -> list[str]:
    """What is stale, in words (empty when everything is current)."""
    stale: list[str] = []
    if not STATE.exists() or committed_state() != waiting_state():
        stale.append(f"{STATE.relative_to(ROOT)} differs from what `procflow run` prints now")
    for path, make in golden_cases():
        try:
            current = path.read_text(encoding="utf-8")
        except OSError:
            stale.append(f"{path.relative_to(ROOT)} is missing")
            continue
        if current != make():
            stale.append(f"{path.relative_to(ROOT)} differs from the current output")
    known = set()
    for path in GOLDEN.glob("*"):
        known.add(path)
    expected = {path for path, _ in golden_cases()} | {STATE} | set(sources())
    for path in sorted(known - expected):
        stale.append(f"{path.relative_to(ROOT)} is no longer generated: delete it")
    try:
        manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))["images"]
    except (OSError, ValueError, KeyError):
        return [*stale, f"{MANIFEST.relative_to(ROOT)} is missing or unreadable"]
    for name, source in image_sources().items():
        entry = manifest.get(name)
        if entry is None or entry.get("dot_sha256") != _digest(source):
            stale.append(f"docs/images/{name}.* was drawn from an older diagram")
        for file in (f"{name}.svg", f"{name}.png"):
            if not (IMAGES / file).exists():
                stale.append(f"docs/images/{file} is missing")
    return stale


def main(argv: list[str] | None = None) -> int:
    """Regenerate, or with --check report what is stale and exit 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when a golden or image is stale")
    args = parser.parse_args(argv)
    if not args.check:
        regenerate()
        return 0
    stale = check()
    for line in stale:
        print(f"stale: {line}", file=sys.stderr)
    if stale:
        print("run `python scripts/regen_diagrams.py`, review the diff, and commit it", file=sys.stderr)
        return 1
    print("diagrams are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
