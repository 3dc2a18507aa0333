# shellcheck shell=bash
# Sourced by the other scripts in scripts/: where ferry's development tools
# live and how to reach them. Not meant to be run on its own.
#
# TOOLS is outside the repository on purpose: CI runs in a fresh clone, so a
# folder inside the repo would start empty on every run, while the user cache
# directory survives between runs on one machine.

FERRY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${FERRY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry/tools}
export GOBIN="$TOOLS/bin"
export PATH="$TOOLS/bin:$PATH"

# buf comes from npm (web/package.json pins @bufbuild/buf); npm installs the
# binary of the machine's platform as an optional dependency.
case "$(uname -s)-$(uname -m)" in
Linux-x86_64) FERRY_BUF_PLATFORM=linux-x64 ;;
Linux-aarch64 | Linux-arm64) FERRY_BUF_PLATFORM=linux-aarch64 ;;
Darwin-arm64) FERRY_BUF_PLATFORM=darwin-arm64 ;;
Darwin-x86_64) FERRY_BUF_PLATFORM=darwin-x64 ;;
*) FERRY_BUF_PLATFORM=unknown ;;
esac
export BUF="$FERRY_ROOT/web/node_modules/@bufbuild/buf-$FERRY_BUF_PLATFORM/bin/buf"

# step prints a banner for one step of a script, so a log shows which step
# was running when something failed.
step() {
	printf '\n==> %s\n' "$*"
}

# die prints a message to stderr and exits non-zero.
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}
