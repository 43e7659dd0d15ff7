#!/usr/bin/env bash
# Installs the Debian packages the tests drive for real, when any is missing: Chromium (the page
# and EventSource), nginx (streams behind a reverse proxy), redis-server (the Redis hub) and
# valgrind (instruction counts). Needs root (or sudo) and Debian's package lists.
set -euo pipefail

needed=()
[ -x /usr/bin/chromium ] || needed+=(chromium)
[ -x /usr/sbin/nginx ] || needed+=(nginx)
[ -x /usr/bin/redis-server ] || needed+=(redis-server)
[ -x /usr/bin/valgrind ] || needed+=(valgrind)
if [ ${#needed[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi

sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
echo "system packages: installing ${needed[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${needed[@]}"
# The packages' own services are not wanted: the tests start their own on free loopback ports.
for service in nginx redis-server; do
  if command -v systemctl >/dev/null 2>&1; then "${sudo[@]}" systemctl stop "$service" 2>/dev/null || true; fi
done
