#!/usr/bin/env bash
# Puts Debian's prometheus and promtool into target/tools (from the
# prometheus package, unpacked: nothing is installed or started), unless
# they are there already. Used by .ci/run and .ci/prometheus.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=target/tools
if [ -x "$tools/prometheus" ] && [ -x "$tools/promtool" ]; then
  exit 0
fi
echo "== fetching prometheus and promtool (Debian's prometheus package)"
rm -rf "$tools/deb"
mkdir -p "$tools/deb"
(cd "$tools/deb" && { apt-get download -qq prometheus 2>/dev/null || {
  apt-get update -qq && apt-get download -qq prometheus; }; })
dpkg-deb -x "$tools"/deb/prometheus_*.deb "$tools/deb/x"
cp "$tools/deb/x/usr/bin/prometheus" "$tools/deb/x/usr/bin/promtool" "$tools/"
rm -rf "$tools/deb"
