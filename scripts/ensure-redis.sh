#!/usr/bin/env bash
# Make sure a Redis server answers at 127.0.0.1:6379: use the one running, else start
# Debian's redis-server (installing the package if it is missing). Never stops anything.
set -euo pipefail
PORT="${SONICSORT_REDIS_PORT:-6379}"

answers() {
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT" && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null
  fi
}

if answers; then
  echo "redis: answering on 127.0.0.1:$PORT"
  exit 0
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis: installing Debian's redis-server"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
echo "redis: starting redis-server on 127.0.0.1:$PORT"
redis-server --daemonize yes --bind 127.0.0.1 --port "$PORT" --save "" --appendonly no \
  --dir "${TMPDIR:-/tmp}" --logfile "${TMPDIR:-/tmp}/sonicsort-redis-$PORT.log"
for _ in $(seq 1 50); do
  answers && { echo "redis: answering on 127.0.0.1:$PORT"; exit 0; }
  sleep 0.1
done
echo "redis: could not start a server on 127.0.0.1:$PORT" >&2
exit 1
