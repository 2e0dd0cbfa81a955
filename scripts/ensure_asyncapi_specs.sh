#!/bin/sh
# The AsyncAPI 3.0 JSON Schema that tests/test_asyncapi.py validates our documents against
# comes from the npm package @asyncapi/specs (pinned here), installed beside the virtualenv:
# nothing of it is copied into the repository. npm is installed from the system's packages
# when it is missing and we may (root with apt-get); otherwise we say how and fail, because
# the test cannot run without it and nothing is ever skipped.
set -e
SPECS_VERSION=6.11.1
PREFIX="${1:-.venv/npm}"
if [ -f "$PREFIX/node_modules/@asyncapi/specs/package.json" ] &&
   grep -q "\"version\": \"$SPECS_VERSION\"" "$PREFIX/node_modules/@asyncapi/specs/package.json"; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    echo "installing npm with apt-get (for the AsyncAPI schema the tests validate against)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
  else
    echo "npm is missing: install Node.js and npm (Debian/Ubuntu: sudo apt-get install npm), then run make setup again" >&2
    exit 1
  fi
fi
mkdir -p "$PREFIX"
echo "installing @asyncapi/specs@$SPECS_VERSION into $PREFIX"
npm install --silent --no-audit --no-fund --prefix "$PREFIX" "@asyncapi/specs@$SPECS_VERSION"
