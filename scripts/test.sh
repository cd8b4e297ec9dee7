#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite under a virtual X server, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QT_QPA_PLATFORM=xcb
exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest "$@"
