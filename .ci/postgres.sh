# shellcheck shell=bash
# A throwaway PostgreSQL server for the test suite, as CI runs it on a clean machine.
#
# Source it (`. .ci/postgres.sh`) from a bash script running with `set -euo pipefail`. It
#   1. installs PostgreSQL from the distribution's packages when no initdb is found (as root:
#      apt-get update && apt-get install -y postgresql);
#   2. initialises a cluster in a temporary directory as an unprivileged user (as root it
#      creates the system user `reactorpy-ci` when missing: initdb refuses to run as root),
#      with a random password (scram-sha-256);
#   3. starts it listening on 127.0.0.1 only, on a free port (no Unix socket outside the
#      temporary directory), and creates the database `reactorpy_test`;
#   4. exports REACTORPY_TEST_POSTGRES_DSN and CI=1 (so tests that need the server fail,
#      instead of skipping, if the variable is lost on the way);
#   5. stops the server and removes the directory when the sourcing shell exits (trap EXIT).
#
# Run alone (`bash .ci/postgres.sh COMMAND...`), it runs COMMAND with the server up.

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
fi

_pg_log() { printf '[postgres.sh] %s\n' "$*" >&2; }

_pg_bindir() {
    local dir
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    # Debian and Ubuntu keep the server's binaries off PATH, one folder per major version.
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n 1)
    if [[ -n "$dir" && -x "$dir/initdb" ]]; then
        echo "$dir"
        return 0
    fi
    return 1
}

_pg_start() {
    local bindir port password run_as=()
    if ! bindir=$(_pg_bindir); then
        if [[ $(id -u) -ne 0 ]]; then
            _pg_log "PostgreSQL is not installed and this is not root: install the 'postgresql' package."
            return 1
        fi
        _pg_log "installing PostgreSQL from the distribution's packages"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq postgresql >/dev/null
        bindir=$(_pg_bindir) || { _pg_log "no initdb after installing postgresql"; return 1; }
    fi
    _pg_log "server binaries: $bindir ($("$bindir/postgres" --version))"

    _PG_TMP=$(mktemp -d /tmp/reactorpy-pg.XXXXXX)
    if [[ $(id -u) -eq 0 ]]; then
        if ! id -u reactorpy-ci >/dev/null 2>&1; then
            useradd --system --no-create-home --shell /usr/sbin/nologin reactorpy-ci
        fi
        chown reactorpy-ci "$_PG_TMP"
        run_as=(runuser -u reactorpy-ci --)
    fi
    _PG_RUN_AS=("${run_as[@]}")
    _PG_BINDIR=$bindir

    password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    printf '%s\n' "$password" >"$_PG_TMP/pwfile"
    [[ ${#run_as[@]} -eq 0 ]] || chown reactorpy-ci "$_PG_TMP/pwfile"
    "${run_as[@]}" "$bindir/initdb" -D "$_PG_TMP/data" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth=scram-sha-256 --pwfile="$_PG_TMP/pwfile" >"$_PG_TMP/initdb.log" 2>&1 \
        || { cat "$_PG_TMP/initdb.log" >&2; return 1; }
    rm -f "$_PG_TMP/pwfile"

    # A free port: bind to port 0 and let the kernel choose. Another process could take it
    # before the server does, so a failed start is retried on a new port.
    local attempt
    for attempt in 1 2 3 4 5; do
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        if "${run_as[@]}" "$bindir/pg_ctl" -D "$_PG_TMP/data" -l "$_PG_TMP/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$_PG_TMP" \
            start >/dev/null; then
            break
        fi
        _pg_log "start on port $port failed (attempt $attempt)"
        tail -n 5 "$_PG_TMP/server.log" >&2 || true
        [[ $attempt -lt 5 ]] || return 1
    done
    _PG_PORT=$port

    PGPASSWORD=$password "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres reactorpy_test
    export REACTORPY_TEST_POSTGRES_DSN="postgresql://postgres:$password@127.0.0.1:$port/reactorpy_test"
    export CI=1
    _pg_log "PostgreSQL listening on 127.0.0.1:$port (data in $_PG_TMP)"
}

_pg_stop() {
    if [[ -n "${_PG_TMP:-}" && -d "$_PG_TMP/data" ]]; then
        "${_PG_RUN_AS[@]}" "$_PG_BINDIR/pg_ctl" -D "$_PG_TMP/data" -m fast -w stop >/dev/null 2>&1 \
            || _pg_log "could not stop the server in $_PG_TMP"
        _pg_log "PostgreSQL stopped"
    fi
    [[ -z "${_PG_TMP:-}" ]] || rm -rf "$_PG_TMP"
}

_PG_TMP=""
_PG_RUN_AS=()
trap _pg_stop EXIT
_pg_start

if [[ "${BASH_SOURCE[0]}" == "$0" && $# -gt 0 ]]; then
    "$@"
fi
