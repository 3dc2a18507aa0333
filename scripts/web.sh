#!/usr/bin/env bash
# web.sh type-checks the browser page (web/src, TypeScript) and builds it
# with esbuild into web/dist, the assets embedded into the ferry binary
# (web/embed.go). The built assets are committed, so ferry builds without
# Node.js; this script is how they are made.
#
#   bash scripts/web.sh          type-check and rebuild web/dist
#   bash scripts/web.sh --check  type-check, build into a temporary folder
#                                and fail, showing the difference, when it
#                                differs from the committed web/dist
#
# Needs Node.js and web/node_modules (bash scripts/tools.sh runs npm ci).
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

check=false
case "${1:-}" in
"") ;;
--check) check=true ;;
*) die "usage: $0 [--check]" ;;
esac

command -v node >/dev/null || die "node not found: the page is built with Node.js"
WEB="$FERRY_ROOT/web"
[[ -x $WEB/node_modules/.bin/tsc && -d $WEB/node_modules/esbuild ]] ||
	die "web/node_modules is incomplete: run bash scripts/tools.sh"

(cd "$WEB" && node_modules/.bin/tsc -p tsconfig.json)
echo "web: TypeScript type-checks"

if ! $check; then
	(cd "$WEB" && node build.mjs dist)
	echo "web: built web/dist ($(du -sk "$WEB/dist" | cut -f1) KiB)"
	exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$WEB" && node build.mjs "$tmp/dist")
if ! diff -r "$WEB/dist" "$tmp/dist" >"$tmp/diff" 2>&1; then
	# Minified bundles are one long line: name the files, not the bytes.
	sed -e "s#$tmp/#(built) #g" -e "s#$FERRY_ROOT/#(committed) #g" "$tmp/diff" | cut -c1-300 >&2
	die "web/dist is out of date: run bash scripts/web.sh and commit the result"
fi
echo "web: web/dist is up to date"
