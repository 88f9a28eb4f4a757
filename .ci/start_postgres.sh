# Start a throwaway PostgreSQL cluster on a free localhost port and export CACICD_TEST_PG_URL.
# Safe to source (no `set -e`/`exit` leaks into the caller) and idempotent: a second source reuses the
# running cluster. Installs Debian's postgresql when no server binaries are found.
# Local connections are trusted, except role cacicd_pw, which must give its password (scram-sha-256):
# CACICD_TEST_PG_PW_URL is a URL of that role, for the PostgreSQL-source tests of bad credentials.
#   source .ci/start_postgres.sh     # then: pytest -m postgres
_cacicd_pg_start() {
    if [ -n "${CACICD_TEST_PG_URL:-}" ] && [ -n "${CACICD_PG_DIR:-}" ] && [ -f "$CACICD_PG_DIR/data/postmaster.pid" ]; then
        echo "PostgreSQL already running: $CACICD_TEST_PG_URL"
        return 0
    fi
    local bin
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
    if [ -z "$bin" ]; then
        echo "installing postgresql (apt-get)" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || {
            echo "could not install postgresql; PostgreSQL tests will be skipped" >&2; return 1; }
        bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
    fi
    local run_as=()
    if [ "$(id -u)" = 0 ]; then run_as=(runuser -u postgres --); fi
    local dir port
    dir="$(mktemp -d /tmp/cacicd-pg.XXXXXX)"
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "${run_as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 || {
        echo "initdb failed, see $dir/initdb.log" >&2; return 1; }
    # first matching line wins: the password role is checked before the trust lines of initdb
    "${run_as[@]}" sed -i '1i host all cacicd_pw 127.0.0.1/32 scram-sha-256' "$dir/data/pg_hba.conf" || return 1
    "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null || {
        echo "pg_ctl start failed, see $dir/server.log" >&2; return 1; }
    "${run_as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres cacicd_test || return 1
    "${run_as[@]}" "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d cacicd_test \
        -c "CREATE ROLE cacicd_pw LOGIN PASSWORD 'cacicd-test-pw'" >/dev/null || return 1
    export CACICD_PG_DIR="$dir" CACICD_PG_BIN="$bin"
    export CACICD_TEST_PG_URL="postgresql://postgres@127.0.0.1:$port/cacicd_test"
    export CACICD_TEST_PG_PW_URL="postgresql://cacicd_pw:cacicd-test-pw@127.0.0.1:$port/cacicd_test"
    echo "PostgreSQL running: $CACICD_TEST_PG_URL (stop: $bin/pg_ctl -D $dir/data stop)"
}
_cacicd_pg_start
unset -f _cacicd_pg_start
