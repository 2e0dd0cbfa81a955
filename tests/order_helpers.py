"""What the store tests share about the sample order process: where it is, the instant its
instances start, a clock that stands still until a test moves it, and participants that
always say yes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from procflow.interpreter.messages import Command

ROOT = Path(__file__).resolve().parent.parent
ORDER = ROOT / "processes" / "order_fulfillment.proc"
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)


class Clock:
    """A clock that reads `moment` (T0 unless set): the tests move it by hand."""

    def __init__(self, moment: datetime = T0) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def yes(command: Command) -> dict[str, Any] | None:
    """A participant of the order process that answers every command with its success reply."""
    answers = {
        "inventory.reserve": "inventory_reserved", "payment.authorize": "payment_authorized",
        "shipping.create": "shipment_created", "inventory.release": "inventory_released", "payment.void": "payment_voided",
    }
    return {"type": answers[command.commandName]}


# A for-each over an order's lines, in parallel, each line reserved and released on its own,
# then a charge: what the wide-state tests run with many lines.
FOR_EACH = """
process lines {
  correlate by input.orderId
  input { orderId: string, lines: { sku: string }[] }
  participant inventory
  participant payment
  for each line in input.lines in parallel {
    step reserve {
      send inventory.reserve { sku: line.sku }
      await reserved within 1d
      compensate inventory.release { sku: line.sku } awaiting released within 1d
    }
  }
  step charge {
    send payment.charge { orderId: input.orderId }
    await charged within 1d
    on declined fail "declined"
  }
}
"""
