#!/usr/bin/env bash
# gen-proto.sh regenerates the Go code in proto/ from the .proto files with
# buf generate (proto/buf.gen.yaml; local plugins from the tools dir, see
# scripts/tools.sh).
#
#   bash scripts/gen-proto.sh          rewrite the generated code in proto/
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

# Generated files are recognised by name: *.pb.go (protoc-gen-go) and
# *.connect.go (protoc-gen-connect-go).
is_generated=(-name '*.pb.go' -o -name '*.connect.go')

if ! $check; then
	# clean: false in buf.gen.yaml, so remove old output first: a removed
	# .proto file must not leave its Go code behind.
	find "$FERRY_ROOT/proto" -type f \( "${is_generated[@]}" \) -delete
	(cd "$FERRY_ROOT/proto" && "$BUF" generate)
	echo "gen-proto: regenerated Go code in proto/"
	exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -R "$FERRY_ROOT/proto" "$tmp/proto"
find "$tmp/proto" -type f \( "${is_generated[@]}" \) -delete
(cd "$tmp/proto" && "$BUF" generate)
if ! diff -ru "$FERRY_ROOT/proto" "$tmp/proto" >"$tmp/diff"; then
	# Show paths relative to the repository, not the temp dir.
	sed -e "s#$tmp/#(generated) #g" -e "s#$FERRY_ROOT/#(committed) #g" "$tmp/diff" >&2
	die "generated code in proto/ is out of date: run bash scripts/gen-proto.sh and commit the result"
fi
echo "gen-proto: generated code in proto/ is up to date"
