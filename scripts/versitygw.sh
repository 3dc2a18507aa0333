#!/usr/bin/env bash
# versitygw.sh starts and stops a throwaway versitygw, ferry's second real S3
# server (an S3 gateway to a POSIX directory; MinIO is the first), on a free
# loopback port with its data in a new temporary directory:
#
#   eval "$(bash scripts/versitygw.sh start)"   start; prints export lines for
#                                               FERRY_TEST_VERSITYGW_ENDPOINT
#                                               (host:port, plain HTTP),
#                                               FERRY_TEST_VERSITYGW_ACCESS_KEY,
#                                               FERRY_TEST_VERSITYGW_SECRET_KEY
#                                               and FERRY_VERSITYGW_DIR
#   bash scripts/versitygw.sh stop [DIR]        stop the server started in DIR
#                                               (default $FERRY_VERSITYGW_DIR)
#                                               and remove DIR
#
# The tests that read FERRY_TEST_VERSITYGW_* run the store conformance suite
# and the round-trip and resume tests against it as well (see README.md).
# The binary is $TOOLS/bin/versitygw (see scripts/tools.sh) unless
# FERRY_TEST_VERSITYGW_BIN names another. Progress goes to stderr, so stdout
# holds only the export lines.
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

vgw_bin=${FERRY_TEST_VERSITYGW_BIN:-$TOOLS/bin/versitygw}

# port_in_use reports whether something accepts connections on a loopback
# port.
port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
	[[ -x $vgw_bin ]] || die "versitygw not found at $vgw_bin: run bash scripts/tools.sh"
	local dir access secret port pid
	dir=$(mktemp -d "${TMPDIR:-/tmp}/ferry-versitygw.XXXXXX")
	mkdir "$dir/data"
	access=ferrytest
	secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	# A port lost to a race between the probe and versitygw's bind makes
	# it exit: try another.
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		port=$((20000 + RANDOM % 40000))
		port_in_use "$port" && continue
		# The credentials go through the environment (ROOT_ACCESS_KEY,
		# ROOT_SECRET_KEY), not argv, where ps would show them.
		ROOT_ACCESS_KEY=$access ROOT_SECRET_KEY=$secret setsid "$vgw_bin" \
			--port "127.0.0.1:$port" --health /health --quiet \
			posix "$dir/data" </dev/null >"$dir/versitygw.log" 2>&1 &
		pid=$!
		echo "$pid" >"$dir/pid"
		# Ready when GET /health answers 200 (well under a second); give
		# up after 60 s.
		local i
		for ((i = 0; i < 600; i++)); do
			if ! kill -0 "$pid" 2>/dev/null; then
				echo "versitygw: server on port $port exited; trying another port" >&2
				cat "$dir/versitygw.log" >&2
				break
			fi
			if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/health" 2>/dev/null; then
				echo "versitygw: listening on 127.0.0.1:$port (pid $pid, data $dir/data)" >&2
				printf 'export FERRY_TEST_VERSITYGW_ENDPOINT=%q\n' "127.0.0.1:$port"
				printf 'export FERRY_TEST_VERSITYGW_ACCESS_KEY=%q\n' "$access"
				printf 'export FERRY_TEST_VERSITYGW_SECRET_KEY=%q\n' "$secret"
				printf 'export FERRY_VERSITYGW_DIR=%q\n' "$dir"
				return 0
			fi
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			cat "$dir/versitygw.log" >&2
			rm -rf "$dir"
			die "versitygw did not become healthy within 60 s"
		fi
	done
	rm -rf "$dir"
	die "could not start versitygw on a free port"
}

stop() {
	local dir=${1:-${FERRY_VERSITYGW_DIR:-}}
	[[ -n $dir ]] || die "usage: $0 stop DIR (or set FERRY_VERSITYGW_DIR)"
	[[ -d $dir ]] || {
		echo "versitygw: $dir is gone; nothing to stop" >&2
		return 0
	}
	if [[ -f $dir/pid ]]; then
		local pid i
		pid=$(cat "$dir/pid")
		if kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			for ((i = 0; i < 100; i++)); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
			if kill -0 "$pid" 2>/dev/null; then
				kill -KILL "$pid" 2>/dev/null || true
			fi
		fi
		echo "versitygw: stopped (pid $pid)" >&2
	fi
	rm -rf "$dir"
}

case "${1:-}" in
start) start ;;
stop) stop "${2:-}" ;;
*) die "usage: $0 start|stop [DIR]" ;;
esac
