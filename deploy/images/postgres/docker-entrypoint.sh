#!/usr/bin/env bash
# The stand-in postgres image's entrypoint (see its Dockerfile): the official image's contract, as
# far as docker-compose.yml uses it.
#  - As root: make the data and socket directories the postgres user's, then run again as it.
#  - On an empty data directory: initdb with POSTGRES_USER (default postgres) and
#    POSTGRES_PASSWORD (required, stored as scram-sha-256); listen on every address, with a
#    pg_hba.conf that asks a password of every TCP client (the local socket stays trust, as in
#    the official image); create POSTGRES_DB (default: the user) and run
#    /docker-entrypoint-initdb.d/*.sql and *.sh once, against a server that listens on the socket
#    only.
#  - Then exec postgres (in the foreground, under dumb-init, which turns SIGTERM into SIGINT).
set -Eeuo pipefail

log() { echo "docker-entrypoint: $*" >&2; }

if [ "$#" = 0 ] || [ "${1:0:1}" = - ]; then
  set -- postgres "$@"
fi

if [ "$1" != postgres ]; then
  exec "$@"
fi

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 0700 "$PGDATA"
  chmod 3777 /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    log "ERROR: the database is uninitialised and POSTGRES_PASSWORD is not set"
    exit 1
  fi
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  log "initdb in $PGDATA for user $user"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words, as in the official image
  initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 ${POSTGRES_INITDB_ARGS:-} >&2
  rm -f "$pwfile"
  {
    echo
    echo "# Added by docker-entrypoint.sh: every address, a password from every TCP client."
    echo "listen_addresses = '*'"
    echo "password_encryption = 'scram-sha-256'"
  } >>"$PGDATA/postgresql.conf"
  {
    echo
    echo "# Added by docker-entrypoint.sh"
    echo "host all all all scram-sha-256"
  } >>"$PGDATA/pg_hba.conf"

  # The temporary server listens on a socket of its own only, so that a health check
  # (pg_isready on the usual socket) fails until the real server runs.
  log "starting a temporary server (private socket only) for the initialisation"
  PGHOST=$(mktemp -d)
  export PGHOST
  pg_ctl --pgdata="$PGDATA" --wait --timeout=60 --silent \
    --options="-c listen_addresses='' -c unix_socket_directories=$PGHOST -p 5432" start >&2
  psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$user")
  if [ "$db" != postgres ]; then
    # Through stdin: psql interpolates :"db" (quoted as an identifier) there, not in -c.
    echo 'CREATE DATABASE :"db";' | "${psql[@]}" --dbname postgres --set db="$db" >&2
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then
          log "running $f"
          "$f"
        else
          log "sourcing $f"
          # shellcheck disable=SC1090
          . "$f"
        fi
        ;;
      *.sql)
        log "running $f"
        "${psql[@]}" --dbname "$db" -f "$f" >&2
        ;;
      *.sql.gz)
        log "running $f"
        gunzip -c "$f" | "${psql[@]}" --dbname "$db" >&2
        ;;
      *) [ ! -e "$f" ] || log "ignoring $f" ;;
    esac
  done
  pg_ctl --pgdata="$PGDATA" --mode=fast --wait --timeout=60 --silent stop >&2
  rmdir "$PGHOST" || true
  unset PGHOST
  log "initialisation done"
fi

exec "$@"
