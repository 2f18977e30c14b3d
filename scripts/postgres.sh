#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1, all state in one fresh private temp dir.
#
#   scripts/postgres.sh start    # prints the exports of its URI and dir (IRREPRO_POSTGRES_*)
#   scripts/postgres.sh status
#   scripts/postgres.sh stop     # stops the server and removes the dir
#
# Database `irrepro`, owner `irrepro`, whose password (new at each start) is in the URI; the
# unix socket, the only way in without it, lies in the private dir: for tests and
# benchmarks, not for shared use. As root the server runs as the `postgres` user (PostgreSQL
# refuses root). Installs Debian's postgresql with apt when absent, unless IRREPRO_NO_INSTALL=1.
# The dir is made by mktemp (mode 700), or is IRREPRO_POSTGRES_DIR when that names one that
# does not exist yet; stop and status find it through IRREPRO_POSTGRES_DIR, else through the
# note start leaves in ~/.local/state/irrepro. PG_PORT chooses the port (default: a free one).
set -euo pipefail

NOTE=${XDG_STATE_HOME:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.local/state}/irrepro/postgres.dir
DIR=${IRREPRO_POSTGRES_DIR:-$(cat "$NOTE" 2>/dev/null || true)}
DATA=$DIR/data

die() { echo "postgres.sh: $*" >&2; exit 1; }

# shellcheck source=scripts/state-dir.sh
. "$(dirname "$0")/state-dir.sh"

# Whether $DIR is a state dir of this script's, owned by this user (stop removes only such).
ours() { [ -n "$DIR" ] && [ -d "$DIR" ] && [ ! -L "$DIR" ] && [ -f "$DIR/port" ] && [ -O "$DIR/port" ]; }

# The directory of initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/*/bin.
server_bin() {
  if command -v pg_ctl >/dev/null; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
  else
    { ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true; } | sort -V | tail -n 1
  fi
}

install_if_absent() {
  [ -n "$(server_bin)" ] && return
  [ "${IRREPRO_NO_INSTALL:-0}" != 1 ] || die "PostgreSQL's server programs not found"
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    || die "PostgreSQL's server programs not found; install postgresql"
  echo "installing postgresql with apt-get" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
}

# Runs a server program as the user that owns the data (postgres when we are root).
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

uri() { echo "postgresql://irrepro:$(cat "$DIR/password")@127.0.0.1:$(cat "$DIR/port")/irrepro"; }

running() { [ -f "$DATA/postmaster.pid" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null; }

start() {
  install_if_absent
  BIN=$(server_bin)
  if ours && [ -d "$DATA" ] && running; then
    die "already running in $DIR (scripts/postgres.sh stop first)"
  fi
  local port=${PG_PORT:-$(python3 -c \
    'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
  new_state_dir "${IRREPRO_POSTGRES_DIR:-}" irrepro-postgres "$NOTE"
  DATA=$DIR/data
  (umask 077; python3 -c 'import secrets; print(secrets.token_hex(16))' >"$DIR/password")
  echo "$port" >"$DIR/port"
  [ "$(id -u)" != 0 ] || chown postgres "$DIR" "$DIR/password"
  as_owner "$BIN/initdb" -D "$DATA" -U irrepro --pwfile="$DIR/password" --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 >"$DIR/initdb.log"
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/postgres.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $DIR -c max_connections=200" start >/dev/null \
    || { tail -n 20 "$DIR/postgres.log" >&2; die "the server did not start (log: $DIR/postgres.log)"; }
  as_owner "$BIN/createdb" -h "$DIR" -p "$port" -U irrepro irrepro
  echo "export IRREPRO_POSTGRES_URI=$(uri)"
  echo "export IRREPRO_POSTGRES_DIR=$DIR"
}

stop() {
  ours || { echo "no server in ${DIR:-(no state dir)}" >&2; return; }
  BIN=$(server_bin)
  if [ -n "$BIN" ] && [ -f "$DATA/postmaster.pid" ]; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null || true
  fi
  rm -rf "$DIR"
  [ "$(cat "$NOTE" 2>/dev/null)" != "$DIR" ] || rm -f "$NOTE"
}

status() {
  BIN=$(server_bin)
  ours && [ -n "$BIN" ] && [ -d "$DATA" ] && running || die "not running (state dir ${DIR:-none})"
  echo "export IRREPRO_POSTGRES_URI=$(uri)"
  echo "export IRREPRO_POSTGRES_DIR=$DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
