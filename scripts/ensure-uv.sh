#!/usr/bin/env bash
# Install uv from PyPI when it is missing (a fresh machine), then the locked workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi
uv sync --frozen --all-packages --quiet
