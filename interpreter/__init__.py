"""procflow."""
