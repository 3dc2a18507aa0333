#!/usr/bin/env bash
# chromium.sh installs Debian's chromium package, the browser the browser
# tests (integration/browser_test.go) drive through npm's playwright-core,
# when /usr/bin/chromium is missing. It never downloads a browser build of
# its own (playwright's downloads cannot be reached from CI).
#
#   bash scripts/chromium.sh     install chromium unless it is there
#
# It needs root (CI runs as root) or sudo without a password. The first
# install takes a minute or two; later runs return at once.
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

CHROMIUM=/usr/bin/chromium

if [[ -x $CHROMIUM ]]; then
	echo "chromium: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
	exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	command -v sudo >/dev/null || die "chromium is missing and installing it needs root: run apt-get install -y chromium as root"
	sudo=(sudo -n)
fi
command -v apt-get >/dev/null || die "chromium is missing and this is not a Debian-like system: install chromium at $CHROMIUM"

echo "chromium: installing Debian's chromium package"
start=$SECONDS
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q >/dev/null
"${sudo[@]}" apt-get install -y -q --no-install-recommends chromium >/dev/null
[[ -x $CHROMIUM ]] || die "apt-get installed chromium but $CHROMIUM is missing"
echo "chromium: $("$CHROMIUM" --version 2>/dev/null) installed in $((SECONDS - start)) s"
