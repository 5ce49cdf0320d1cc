# Sourced by bench/action.sh and bench/resource.sh: picks the client and server binaries, starts
# a release `bldst server` on a fresh SQLite file on a free loopback port, bootstraps a token and
# waits until the server is ready. Sets CLIENT_BIN, SERVER_BIN, work (a temporary directory,
# removed on exit), port and token; stops the server on exit.
#
# CLIENT_BIN: the client binary (default: scripts/build-static.sh's, the image's). SERVER_BIN:
# the server (default: target/release/bldst, built if missing).
CLIENT_BIN=${CLIENT_BIN:-$repo/$(scripts/build-static.sh)}
if [ -z "${SERVER_BIN:-}" ]; then
    cargo build --release --bin bldst >&2
    SERVER_BIN=$repo/target/release/bldst
fi
work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DATABASE_URL="sqlite://$work/buildstate.db" SECRET_KEY=bench-only-key-of-32-bytes-or-more-000 BUILDSTATE_LISTEN="127.0.0.1:$port"
token=$("$SERVER_BIN" server bootstrap --username bench --email bench@example.com 2>/dev/null)
"$SERVER_BIN" server >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
