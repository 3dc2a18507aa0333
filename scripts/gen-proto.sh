#!/usr/bin/env bash
# gen-proto.sh regenerates the Go code in proto/ and the TypeScript in
# web/src/gen/ (imported by the browser page) from the .proto files with buf
# generate (proto/buf.gen.yaml; local plugins: the Go ones from the tools dir,
# protoc-gen-es from web/node_modules, see scripts/tools.sh).
#
#   bash scripts/gen-proto.sh          rewrite the generated code
#   bash scripts/gen-proto.sh --check  generate into a temporary copy and fail,
#                                      showing the diff, when the committed
#                                      code differs (stale, missing or extra
#                                      generated files)
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

check=false
case "${1:-}" in
"") ;;
--check) check=true ;;
*) die "usage: $0 [--check]" ;;
esac

[[ -x $BUF ]] || die "buf not found at $BUF: run bash scripts/tools.sh"
for plugin in protoc-gen-go protoc-gen-connect-go; do
	[[ -x $TOOLS/bin/$plugin ]] || die "$plugin not found in $TOOLS/bin: run bash scripts/tools.sh"
done
# protoc-gen-es (pinned in web/package-lock.json) writes ../web/src/gen,
# relative to proto/.
ES_BIN="$FERRY_ROOT/web/node_modules/.bin"
[[ -x $ES_BIN/protoc-gen-es ]] || die "protoc-gen-es not found in $ES_BIN: run bash scripts/tools.sh"
export PATH="$ES_BIN:$PATH"
TS_GEN=web/src/gen

# Generated files are recognised by name: *.pb.go (protoc-gen-go) and
# *.connect.go (protoc-gen-connect-go).
is_generated=(-name '*.pb.go' -o -name '*.connect.go')

if ! $check; then
	# clean: false in buf.gen.yaml, so remove old output first: a removed
	# .proto file must not leave its Go code behind.
	find "$FERRY_ROOT/proto" -type f \( "${is_generated[@]}" \) -delete
	rm -rf "${FERRY_ROOT:?}/$TS_GEN"
	(cd "$FERRY_ROOT/proto" && "$BUF" generate)
	echo "gen-proto: regenerated Go code in proto/ and TypeScript in $TS_GEN/"
	exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -R "$FERRY_ROOT/proto" "$tmp/proto"
find "$tmp/proto" -type f \( "${is_generated[@]}" \) -delete
mkdir -p "$tmp/$TS_GEN"
(cd "$tmp/proto" && "$BUF" generate)
stale=false
if ! diff -ru "$FERRY_ROOT/proto" "$tmp/proto" >"$tmp/diff"; then
	stale=true
fi
if ! diff -ru "$FERRY_ROOT/$TS_GEN" "$tmp/$TS_GEN" >>"$tmp/diff"; then
	stale=true
fi
if $stale; then
	# Show paths relative to the repository, not the temp dir.
	sed -e "s#$tmp/#(generated) #g" -e "s#$FERRY_ROOT/#(committed) #g" "$tmp/diff" >&2
	die "generated code in proto/ or $TS_GEN/ is out of date: run bash scripts/gen-proto.sh and commit the result"
fi
echo "gen-proto: generated code in proto/ and $TS_GEN/ is up to date"
