"""procflow: write, check, see and run orchestrated business processes."""
