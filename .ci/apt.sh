#!/usr/bin/env bash
# System packages for the browser tests (tests/test_web*.py): Debian's chromium and its matching
# chromedriver (Selenium drives them; nothing is downloaded at test time). Idempotent: returns at
# once when both are installed; best effort (a warning, not a failure) where apt is unavailable.
set -uo pipefail
pkgs=(chromium chromium-driver)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { echo "apt.sh: ${pkgs[*]} already installed"; exit 0; }
if ! command -v apt-get >/dev/null; then
  echo "apt.sh: no apt-get; the browser tests will skip (missing: ${missing[*]})" >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || echo "apt.sh: apt-get update failed" >&2
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" fonts-dejavu-core \
  || echo "apt.sh: could not install ${missing[*]}; the browser tests will skip" >&2
exit 0
