#!/bin/sh
# Headless Chromium and bpmn-js: for the console's browser tests (tests/test_console_browser.py)
# and for the test that opens an exported BPMN file the way a
# modeler does (tests/test_bpmn_browser.py). Chromium comes from the system's packages
# (Debian's `chromium`), never from `playwright install`; bpmn-js from the npm registry,
# pinned, into build/npm (outside the package, ignored by git).
# Install what is missing when we may (root with apt-get); otherwise say how, and go on.
BPMN_JS_VERSION=18.31.1
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    echo "installing Chromium with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "Chromium is missing: install it (Debian/Ubuntu: sudo apt-get install chromium chromium-driver)." >&2
  fi
fi
if [ ! -f build/npm/node_modules/bpmn-js/package.json ] || \
   ! grep -q "\"version\": \"$BPMN_JS_VERSION\"" build/npm/node_modules/bpmn-js/package.json; then
  if command -v npm >/dev/null 2>&1; then
    echo "installing bpmn-js $BPMN_JS_VERSION into build/npm"
    mkdir -p build/npm
    npm install --silent --no-audit --no-fund --prefix build/npm "bpmn-js@$BPMN_JS_VERSION" >/dev/null
  else
    echo "npm is missing: install Node.js and npm to fetch bpmn-js." >&2
  fi
fi
exit 0
