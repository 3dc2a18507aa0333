#!/usr/bin/env bash
# test.sh runs every check and test of ferry, on a fresh machine too:
#
#   1. tools       install the pinned tools (scripts/tools.sh; the first run
#                  builds MinIO from source, about 5 minutes), Debian's
#                  chromium for the browser tests (scripts/chromium.sh) and
#                  Debian's nginx for the cluster tests (scripts/nginx.sh)
#   2. gofmt       no Go file needs formatting
#   3. go vet      go vet ./...
#      staticcheck staticcheck ./... (pinned in scripts/tools.sh)
#      go mod tidy go.mod and go.sum are what go mod tidy makes
#   4. buf lint    the protos follow buf's STANDARD rules
#   5. gen-proto   the committed generated code (Go and TypeScript) matches
#                  the protos
#   6. web         the browser page type-checks and the committed built
#                  assets (web/dist) match a fresh build (scripts/web.sh)
#   7. minio       start a throwaway MinIO server (stopped on any exit)
#      versitygw   and a throwaway versitygw, the second S3 implementation
#                  the store suite and the round-trip and resume tests run
#                  against (scripts/versitygw.sh; stopped on any exit)
#   8. go test     go test -race -count=1 ./... with FERRY_REQUIRE_S3=1 and
#                  FERRY_REQUIRE_BROWSER=1, so tests that need S3 or a
#                  browser fail instead of skipping
#   9. fuzz        the upload request decoding/validation fuzz target, for a
#                  bounded time (FERRY_FUZZ_TIME, default 20s)
#
# It stops at the first failing step and names it. Environment:
#   FERRY_TOOLS_DIR      where tools are installed (see scripts/tools.sh)
#   FERRY_TEST_TIMEOUT   go test's -timeout (default 45m)
#   FERRY_TEST_ARGS      extra arguments for go test, e.g. "-run TestX -v"
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$FERRY_ROOT"

current_step=""
summary=()
step_start=0

begin() {
	current_step=$1
	step_start=$SECONDS
	step "$current_step"
}

end() {
	summary+=("$(printf '%-10s ok  %4d s' "$current_step" $((SECONDS - step_start)))")
	current_step=""
}

finish() {
	local rc=$?
	if [[ -n ${FERRY_MINIO_DIR:-} ]]; then
		bash "$FERRY_ROOT/scripts/minio.sh" stop "$FERRY_MINIO_DIR" || true
	fi
	if [[ -n ${FERRY_VERSITYGW_DIR:-} ]]; then
		bash "$FERRY_ROOT/scripts/versitygw.sh" stop "$FERRY_VERSITYGW_DIR" || true
	fi
	echo
	for line in "${summary[@]}"; do
		echo "test.sh: $line"
	done
	if [[ $rc -ne 0 ]]; then
		echo "test.sh: FAILED at step: ${current_step:-unknown} (exit $rc, after $SECONDS s)"
	else
		echo "test.sh: all steps passed in $SECONDS s"
	fi
	exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

begin tools
bash scripts/tools.sh
bash scripts/chromium.sh
bash scripts/nginx.sh
end

begin gofmt
unformatted=$(find . \( -path ./.git -o -path ./web/node_modules \) -prune -o -name '*.go' -print0 |
	xargs -0 -r gofmt -l)
if [[ -n $unformatted ]]; then
	echo "these files need gofmt -w:" >&2
	echo "$unformatted" >&2
	exit 1
fi
end

begin "go vet"
go vet ./...
end

begin staticcheck
"$TOOLS/bin/staticcheck" ./...
end

begin "go mod tidy"
go mod tidy -diff
end

begin "buf lint"
(cd proto && "$BUF" lint)
end

begin gen-proto
bash scripts/gen-proto.sh --check
end

begin web
bash scripts/web.sh --check
end

begin minio
eval "$(bash scripts/minio.sh start)"
end

begin versitygw
eval "$(bash scripts/versitygw.sh start)"
end

begin "go test"
export FERRY_REQUIRE_S3=1
export FERRY_REQUIRE_BROWSER=1
# shellcheck disable=SC2086 # FERRY_TEST_ARGS is a list of arguments.
go test -race -count=1 -timeout "${FERRY_TEST_TIMEOUT:-45m}" ${FERRY_TEST_ARGS:-} ./...
end

begin fuzz
go test -run '^$' -fuzz '^FuzzUploadRequest$' -fuzztime "${FERRY_FUZZ_TIME:-20s}" ./upload/
end

begin "stop minio"
bash scripts/minio.sh stop "$FERRY_MINIO_DIR"
unset FERRY_MINIO_DIR
bash scripts/versitygw.sh stop "$FERRY_VERSITYGW_DIR"
unset FERRY_VERSITYGW_DIR
end
