#!/usr/bin/env bash
# Make sure a PostgreSQL server answers at 127.0.0.1:5432 for the tests' catalogs: use the one
# running, else start the machine's cluster (Debian's postgresql package, installed when
# missing). Never stops anything. The tests create a private database and drop it afterwards.
set -euo pipefail
PORT="${SONICSORT_POSTGRES_PORT:-5432}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

answers() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h 127.0.0.1 -p "$PORT"
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
  fi
}

if answers; then
  echo "postgres: answering on 127.0.0.1:$PORT"
  exit 0
fi
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "postgres: installing Debian's postgresql"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
echo "postgres: starting the cluster on 127.0.0.1:$PORT"
if command -v pg_lsclusters >/dev/null 2>&1 && [ -n "$(pg_lsclusters -h 2>/dev/null)" ]; then
  pg_lsclusters -h | while read -r version name _; do $SUDO pg_ctlcluster "$version" "$name" start || true; done
else
  $SUDO service postgresql start || true
fi
for _ in $(seq 1 100); do
  answers && { echo "postgres: answering on 127.0.0.1:$PORT"; exit 0; }
  sleep 0.1
done
echo "postgres: could not start a server on 127.0.0.1:$PORT" >&2
exit 1
