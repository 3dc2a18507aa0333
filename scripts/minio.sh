#!/usr/bin/env bash
# minio.sh starts and stops a throwaway MinIO server for ferry's tests: on a
# free loopback port, with its data in a new temporary directory.
#
#   eval "$(bash scripts/minio.sh start)"   start; prints export lines for
#                                           FERRY_TEST_S3_ENDPOINT (host:port,
#                                           plain HTTP), FERRY_TEST_S3_ACCESS_KEY,
#                                           FERRY_TEST_S3_SECRET_KEY,
#                                           FERRY_TEST_MINIO_BIN (the server
#                                           binary, for tests that run their own)
#                                           and FERRY_MINIO_DIR
#   bash scripts/minio.sh stop [DIR]        stop the server started in DIR
#                                           (default $FERRY_MINIO_DIR) and
#                                           remove DIR
#
# The binary is $TOOLS/bin/minio (see scripts/tools.sh) unless
# FERRY_TEST_MINIO_BIN names another. Progress goes to stderr, so stdout
# holds only the export lines.
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

minio_bin=${FERRY_TEST_MINIO_BIN:-$TOOLS/bin/minio}

# port_in_use reports whether something accepts connections on a loopback
# port.
port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
	[[ -x $minio_bin ]] || die "MinIO server not found at $minio_bin: run bash scripts/tools.sh"
	local dir access secret port pid
	dir=$(mktemp -d "${TMPDIR:-/tmp}/ferry-minio.XXXXXX")
	access=ferrytest
	secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	# Pick a random high port; MinIO exits when the port is taken, so a
	# port lost to a race is simply retried with another.
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		port=$((20000 + RANDOM % 40000))
		port_in_use "$port" && continue
		MINIO_ROOT_USER=$access MINIO_ROOT_PASSWORD=$secret MINIO_BROWSER=off \
			MINIO_UPDATE=off setsid "$minio_bin" server "$dir/data" \
			--address "127.0.0.1:$port" --quiet \
			</dev/null >"$dir/minio.log" 2>&1 &
		pid=$!
		echo "$pid" >"$dir/pid"
		# Ready when /minio/health/live answers 200 (about 1 s); give up
		# after 60 s.
		local i
		for ((i = 0; i < 600; i++)); do
			if ! kill -0 "$pid" 2>/dev/null; then
				echo "minio: server on port $port exited; trying another port" >&2
				cat "$dir/minio.log" >&2
				break
			fi
			if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/minio/health/live" 2>/dev/null; then
				echo "minio: listening on 127.0.0.1:$port (pid $pid, data $dir/data)" >&2
				printf 'export FERRY_TEST_S3_ENDPOINT=%q\n' "127.0.0.1:$port"
				printf 'export FERRY_TEST_S3_ACCESS_KEY=%q\n' "$access"
				printf 'export FERRY_TEST_S3_SECRET_KEY=%q\n' "$secret"
				printf 'export FERRY_TEST_MINIO_BIN=%q\n' "$minio_bin"
				printf 'export FERRY_MINIO_DIR=%q\n' "$dir"
				return 0
			fi
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			cat "$dir/minio.log" >&2
			rm -rf "$dir"
			die "MinIO did not become healthy within 60 s"
		fi
		rm -rf "$dir/data"
	done
	rm -rf "$dir"
	die "could not start MinIO on a free port"
}

stop() {
	local dir=${1:-${FERRY_MINIO_DIR:-}}
	[[ -n $dir ]] || die "usage: $0 stop DIR (or set FERRY_MINIO_DIR)"
	[[ -d $dir ]] || {
		echo "minio: $dir is gone; nothing to stop" >&2
		return 0
	}
	if [[ -f $dir/pid ]]; then
		local pid i
		pid=$(cat "$dir/pid")
		if kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			# MinIO stops within a second on SIGTERM; insist after 10 s.
			for ((i = 0; i < 100; i++)); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
			if kill -0 "$pid" 2>/dev/null; then
				kill -KILL "$pid" 2>/dev/null || true
			fi
		fi
		echo "minio: stopped (pid $pid)" >&2
	fi
	rm -rf "$dir"
}

case "${1:-}" in
start) start ;;
stop) stop "${2:-}" ;;
*) die "usage: $0 start|stop [DIR]" ;;
esac
