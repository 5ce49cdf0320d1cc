"""Sends N rate-limit counts to a Redis the way the server does, for bench/redis-count.sh.

    python3 bench/redis_count.py PORT MODE N

MODE: `pipeline` (what the server sends for a request under the limit: one write of INCR and
PEXPIRE .. NX), `multi` (the same made atomic with PTTL: MULTI .. EXEC), `script` (the Lua
script the first version used, as EVALSHA), or `ping` (a round trip's own cost). Each count is one write and one read, as the server's round trip is.
"""
import socket
import sys

SCRIPT = """
local count = redis.call('INCR', KEYS[1])
local limit = tonumber(ARGV[3])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
elseif count == limit + 1 and tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


def resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(f"${len(data)}\r\n".encode() + data + b"\r\n")
    return b"".join(out)


def main() -> None:
    port, mode, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    sock = socket.create_connection(("127.0.0.1", port))
    key = "buildstate:ratelimit:writes:bench"

    def round_trip(request: bytes, replies: int) -> None:
        sock.sendall(request)
        buffer = b""
        # Enough to hold every reply: each ends in CRLF; count the top-level replies loosely by
        # waiting for the final line of the last one.
        while buffer.count(b"\r\n") < replies:
            buffer += sock.recv(65536)

    if mode == "script":
        sock.sendall(resp("SCRIPT", "LOAD", SCRIPT))
        sha = sock.recv(4096).split(b"\r\n")[1].decode()
        request = resp("EVALSHA", sha, "1", key, "60000", "0", "1000000000")
        lines = 3  # *2, :count, :ttl
    elif mode == "pipeline":
        request = resp("INCR", key) + resp("PEXPIRE", key, "60000", "NX")
        lines = 2
    elif mode == "multi":
        request = b"".join([
            resp("MULTI"),
            resp("INCR", key),
            resp("PEXPIRE", key, "60000", "NX"),
            resp("PTTL", key),
            resp("EXEC"),
        ])
        lines = 8  # +OK, 3x +QUEUED, *3, :count, :0/1, :ttl
    elif mode == "ping":
        request, lines = resp("PING"), 1
    else:
        sys.exit(f"unknown mode `{mode}`: expected pipeline, multi, script or ping")
    for _ in range(n):
        round_trip(request, lines)


if __name__ == "__main__":
    main()
