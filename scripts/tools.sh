#!/usr/bin/env bash
# tools.sh installs the tools ferry's tests and code generation need into
# $FERRY_TOOLS_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/ferry/tools):
#
#   minio                  the S3 server the integration tests run against
#   versitygw              a second S3 server (a gateway to a POSIX
#                          directory), so that ferry is tested on two S3
#                          implementations (scripts/versitygw.sh)
#   protoc-gen-go          Go code for the protos
#   protoc-gen-connect-go  Connect code for the protos
#   grpcurl                a stock gRPC client, used by the integration tests
#   staticcheck            the linter test.sh runs on every package
#   buf                    from npm ci in web/ (web/package-lock.json pins it),
#                          with the browser page's toolchain: protoc-gen-es,
#                          connect-web, esbuild, typescript and playwright-core
#                          (the browser itself: scripts/chromium.sh)
#
# Each tool is installed only when missing or at another version, so a second
# run takes about a second. The first run builds MinIO from source (about
# 5 minutes on 2 cores) and versitygw (about 3 minutes).
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

# Pinned versions: change them here and nowhere else.
GO_TOOLS=(
	# binary  module@version  package path
	"minio github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c github.com/minio/minio"
	"protoc-gen-go google.golang.org/protobuf@v1.36.12 google.golang.org/protobuf/cmd/protoc-gen-go"
	"protoc-gen-connect-go connectrpc.com/connect@v1.21.1 connectrpc.com/connect/cmd/protoc-gen-connect-go"
	"grpcurl github.com/fullstorydev/grpcurl@v1.9.4 github.com/fullstorydev/grpcurl/cmd/grpcurl"
	"staticcheck honnef.co/go/tools@v0.8.2 honnef.co/go/tools/cmd/staticcheck"
	# The second S3 implementation (scripts/versitygw.sh); v1.8.0 is the
	# version the module proxy serves and the one docs/protocol.md and the
	# s3store package docs describe.
	"versitygw github.com/versity/versitygw@v1.8.0 github.com/versity/versitygw/cmd/versitygw"
)

mkdir -p "$TOOLS/bin"

# installed_version prints the main module version a Go binary was built
# from, or nothing when the binary is missing or unreadable.
installed_version() {
	local bin=$1
	[[ -x $bin ]] || return 0
	go version -m "$bin" 2>/dev/null | awk '$1 == "mod" { print $3; exit }'
}

for entry in "${GO_TOOLS[@]}"; do
	read -r name modver pkg <<<"$entry"
	want=${modver##*@}
	have=$(installed_version "$TOOLS/bin/$name")
	if [[ $have == "$want" ]]; then
		echo "tools: $name $have"
		continue
	fi
	echo "tools: installing $name $want (had: ${have:-none})"
	start=$SECONDS
	# Outside the repository, so ferry's go.mod does not take part.
	(cd "$TOOLS" && GOFLAGS=-buildvcs=false go install "$pkg@$want")
	echo "tools: $name $want installed in $((SECONDS - start)) s"
done

# buf: npm ci in web/, again only when web/package-lock.json changed since
# the last install (its hash is kept beside node_modules). buf's postinstall
# script is not needed: the platform package carries the binary.
lock_sum=$(sha256sum "$FERRY_ROOT/web/package-lock.json" | cut -d' ' -f1)
stamp="$FERRY_ROOT/web/node_modules/.ferry-lock-sha256"
if [[ ! -x $BUF || ! -f $stamp || $(cat "$stamp") != "$lock_sum" ]]; then
	echo "tools: npm ci in web/"
	start=$SECONDS
	npm_log=$(mktemp)
	if ! (cd "$FERRY_ROOT/web" && npm ci --ignore-scripts --no-audit --no-fund) >"$npm_log" 2>&1; then
		# npm ci refuses a lockfile that lacks the optional packages of other
		# platforms, and a registry mirror that serves only some platforms
		# yields exactly such a lockfile. npm install --no-save installs the
		# same locked versions without rewriting package-lock.json.
		echo "tools: npm ci failed ($(grep -m1 -E 'npm error (code|Missing)' "$npm_log" || echo 'see below')); trying npm install --no-save"
		if ! (cd "$FERRY_ROOT/web" && npm install --no-save --ignore-scripts --no-audit --no-fund) >>"$npm_log" 2>&1; then
			cat "$npm_log" >&2
			rm -f "$npm_log"
			die "could not install web/ dependencies with npm"
		fi
	fi
	rm -f "$npm_log"
	echo "$lock_sum" >"$stamp"
	echo "tools: web/ dependencies installed in $((SECONDS - start)) s"
fi
[[ -x $BUF ]] || die "buf binary not found at $BUF after npm ci (platform $FERRY_BUF_PLATFORM)"
echo "tools: buf $("$BUF" --version)"
