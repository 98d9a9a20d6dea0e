#!/usr/bin/env bash
# Builds the documentation site (strict) and renders its landing and API pages to PNG with
# Debian's headless Chromium (`apt-get install -y chromium`), so a change to the site can be
# looked at without a browser. Usage, from anywhere:
#   bash scripts/screenshot_docs.sh [OUT_DIR]      # default: site/screenshots
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
out="${1:-$repo/site/screenshots}"
browser="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$browser" ]; then
  echo "[screenshot] Chromium not found: install it with 'apt-get install -y chromium'" >&2
  exit 1
fi
cd "$repo"
NO_MKDOCS_2_WARNING=1 "$venv/bin/mkdocs" build --strict --quiet --site-dir site
mkdir -p "$out"
shoot() {  # shoot PAGE NAME HEIGHT: one page of the built site, 1280 pixels wide.
  "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
    --window-size="1280,$3" --screenshot="$out/$2.png" "file://$repo/site/$1" >/dev/null 2>&1
  echo "[screenshot] $out/$2.png"
}
shoot index.html landing 2000
shoot api/index.html api 3000
shoot api/index.html api_top 900
