#!/bin/sh
# Graphviz's `dot` draws the SVG and PNG diagrams. Install it from the system's packages
# when it is missing and we may (root with apt-get); otherwise say how, and go on:
# DOT and Mermaid output work without it.
if command -v dot >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "installing Graphviz (dot) with apt-get"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null && exit 0
fi
echo "Graphviz's dot is missing: install it (Debian/Ubuntu: sudo apt-get install graphviz; macOS: brew install graphviz) to draw SVG/PNG." >&2
exit 0
