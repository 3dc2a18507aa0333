#!/usr/bin/env bash
# demo.sh shows ferry's main job on this machine, with nothing to set up:
# it builds ferry, starts `ferry serve` on the embedded disk store (a temp
# directory, a free loopback port), uploads a real file (the go binary),
# downloads it back, checks the copy byte for byte, prints sizes, checksums
# and timings, and stops the server.
#
#   bash scripts/demo.sh [FILE]     (default: $(go env GOROOT)/bin/go)
#
# Environment: FERRY_DEMO_PROTOCOL (connect, grpc or grpcweb; default grpc).
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$FERRY_ROOT"

file=${1:-$(go env GOROOT)/bin/go}
protocol=${FERRY_DEMO_PROTOCOL:-grpc}
[[ -f $file ]] || die "no such file: $file"

step "build: go build -o bin/ferry ./cmd/ferry"
go build -o bin/ferry ./cmd/ferry
ferry=$FERRY_ROOT/bin/ferry

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry-demo.XXXXXX")
server_pid=""
cleanup() {
	if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

step "start: ferry serve --addr 127.0.0.1:0 --data $tmp/data"
"$ferry" serve --addr 127.0.0.1:0 --data "$tmp/data" 2>"$tmp/server.log" &
server_pid=$!
# The server logs the address it listens on ("listening" addr=HOST:PORT);
# 127.0.0.1:0 lets the kernel pick a free port.
addr=""
for ((i = 0; i < 300; i++)); do
	addr=$(sed -n -E 's/.*listening.*addr="?([^ "]+:[0-9]+).*/\1/p' "$tmp/server.log" | head -n1)
	[[ -n $addr ]] && break
	kill -0 "$server_pid" 2>/dev/null || {
		cat "$tmp/server.log" >&2
		die "ferry serve exited"
	}
	sleep 0.1
done
[[ -n $addr ]] || {
	cat "$tmp/server.log" >&2
	die "ferry serve did not log a listening address within 30 s"
}
server=http://$addr
# Ready when it answers a listing.
for ((i = 0; i < 100; i++)); do
	"$ferry" ls --server "$server" >/dev/null 2>&1 && break
	sleep 0.1
done
echo "ferry serve is listening on $server (pid $server_pid)"

now() { date +%s.%N; }
# rate prints bytes per second as MiB/s.
rate() { awk -v b="$1" -v s="$2" 'BEGIN { if (s <= 0) s = 0.001; printf "%.1f MiB/s", b / s / 1048576 }'; }

size=$(stat -c %s "$file")
key=demo/$(basename "$file")

step "upload: ferry upload --server $server --protocol $protocol $file $key"
t0=$(now)
"$ferry" upload --server "$server" --protocol "$protocol" "$file" "$key"
t1=$(now)
up=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')

step "stat and ls"
"$ferry" stat --server "$server" "$key"
"$ferry" ls --server "$server" demo/

step "download: ferry download --server $server --protocol $protocol $key $tmp/copy"
t0=$(now)
"$ferry" download --server "$server" --protocol "$protocol" "$key" "$tmp/copy"
t1=$(now)
down=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')

step "compare"
cmp "$file" "$tmp/copy"
copy_size=$(stat -c %s "$tmp/copy")
printf '%-10s %12s bytes  sha256 %s\n' original "$size" "$(sha256sum "$file" | cut -d' ' -f1)"
printf '%-10s %12s bytes  sha256 %s\n' copy "$copy_size" "$(sha256sum "$tmp/copy" | cut -d' ' -f1)"
echo "upload   $up s ($(rate "$size" "$up")), download $down s ($(rate "$size" "$down")), protocol $protocol"

step "stop: ferry serve"
kill "$server_pid"
wait "$server_pid" || die "ferry serve exited with status $? on SIGTERM"
server_pid=""
echo "demo: OK, the copy is identical to $file"
