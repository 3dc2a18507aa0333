#!/usr/bin/env bash
# nginx.sh installs Debian's nginx package, the load balancer the cluster
# tests (integration/cluster_test.go) put in front of several ferry servers
# with the configuration in scripts/nginx/ (see docs/deploy.md), when
# /usr/sbin/nginx is missing. The tests run nginx unprivileged with a
# prefix of their own (nginx -p PREFIX -c CONF -g 'daemon off;'); the
# package's own service is not used.
#
#   bash scripts/nginx.sh     install nginx unless it is there
#
# It needs root (CI runs as root) or sudo without a password. The first
# install takes a few seconds; later runs return at once.
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

NGINX=/usr/sbin/nginx

if [[ -x $NGINX ]]; then
	echo "nginx: $("$NGINX" -v 2>&1)"
	exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	command -v sudo >/dev/null || die "nginx is missing and installing it needs root: run apt-get install -y nginx as root"
	sudo=(sudo -n)
fi
command -v apt-get >/dev/null || die "nginx is missing and this is not a Debian-like system: install nginx at $NGINX"

echo "nginx: installing Debian's nginx package"
start=$SECONDS
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q >/dev/null
"${sudo[@]}" apt-get install -y -q --no-install-recommends nginx >/dev/null
[[ -x $NGINX ]] || die "apt-get installed nginx but $NGINX is missing"
# The package starts its own service where it can; the tests need none.
if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
	"${sudo[@]}" systemctl stop nginx || true
fi
echo "nginx: $("$NGINX" -v 2>&1) installed in $((SECONDS - start)) s"
