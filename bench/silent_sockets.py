"""A normal client's latency while silent sockets flood the listener, for bench/silent-sockets.sh.

    python3 bench/silent_sockets.py PORT TOKEN SILENT REQUESTS

Opens SILENT TCP connections to 127.0.0.1:PORT one after another, sending nothing, and keeps
opening new ones as the server closes them (a loop, as a careless or hostile client does);
meanwhile a normal client sends REQUESTS authenticated `GET /builds?limit=1`, one at a time on
a kept-alive connection (reconnecting when the server closed it; the reconnection counts in
that request's time). Prints one line: p50, p99 and max in milliseconds, the requests that
failed, and how many silent sockets were opened in all.
"""
import http.client
import socket
import sys
import threading
import time


def flood(port: int, silent: int, stop: threading.Event, opened: list) -> None:
    sockets = []
    while not stop.is_set():
        # Drop the ones the server closed (readable with nothing to read), then top up.
        alive = []
        for sock in sockets:
            try:
                sock.setblocking(False)
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    sock.close()
                    continue
            except BlockingIOError:
                pass
            except OSError:
                sock.close()
                continue
            alive.append(sock)
        sockets = alive
        while len(sockets) < silent and not stop.is_set():
            try:
                sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                opened[0] += 1
            except OSError:
                time.sleep(0.01)
                break
        time.sleep(0.01)
    for sock in sockets:
        sock.close()


def main() -> None:
    port, token, silent, requests = (
        int(sys.argv[1]),
        sys.argv[2],
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    stop = threading.Event()
    opened = [0]
    flooder = threading.Thread(target=flood, args=(port, silent, stop, opened))
    if silent > 0:
        flooder.start()
        # Let the flood fill the server's connection cap first.
        while opened[0] < min(silent, 1100):
            time.sleep(0.05)
    headers = {"Authorization": f"Bearer {token}"}
    times, failed = [], 0
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(requests):
        started = time.perf_counter()
        for attempt in range(2):
            try:
                connection.request("GET", "/builds?limit=1", headers=headers)
                answer = connection.getresponse()
                answer.read()
                if answer.status != 200:
                    failed += 1
                break
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                if attempt == 1:
                    failed += 1
        times.append((time.perf_counter() - started) * 1000)
    stop.set()
    if silent > 0:
        flooder.join()
    times.sort()
    p50 = times[len(times) // 2]
    p99 = times[min(len(times) - 1, (len(times) * 99) // 100)]
    print(
        f"| {silent} | {requests} | {p50:.2f} | {p99:.2f} | {times[-1]:.2f} | {failed} | {opened[0]} |"
    )


if __name__ == "__main__":
    main()
