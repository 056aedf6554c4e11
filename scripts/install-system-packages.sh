#!/usr/bin/env bash
# Debian packages that neurocert's demos and tests read (idempotent: installs only what is missing).
#   scripts/install-system-packages.sh demo   -> Fashion-MNIST (broden-lite probing images)
#   scripts/install-system-packages.sh test   -> also WordNet 3.0 and Chromium (browser test of the report)
set -euo pipefail
case "${1:-demo}" in
  demo) pkgs=(dataset-fashion-mnist) ;;
  test) pkgs=(dataset-fashion-mnist wordnet-base wordnet-sense-index chromium) ;;
  *) echo "usage: $0 demo|test" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "install these Debian/Ubuntu packages (or their equivalents): ${missing[*]}" >&2; exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
