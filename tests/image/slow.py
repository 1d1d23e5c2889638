#!/usr/bin/env python3
"""A TCP relay that passes at most RATE bytes a second from a server to its clients, so
a test can kill a pull midway: slow.py LISTEN_PORT TARGET_PORT RATE (loopback only).
Prints "ready" once listening; ends when its stdin closes."""
import socket
import sys
import threading
import time


def pipe(src, dst, rate):
    try:
        while True:
            start = time.monotonic()
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
            if rate:
                time.sleep(max(0.0, len(data) / rate - (time.monotonic() - start)))
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    listen, target, rate = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen))
    srv.listen(64)
    srv.settimeout(0.2)
    print("ready", flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), srv.close()), daemon=True).start()
    while True:
        try:
            client, _ = srv.accept()
        except socket.timeout:
            continue
        except OSError:
            return
        upstream = socket.create_connection(("127.0.0.1", target))
        threading.Thread(target=pipe, args=(client, upstream, 0), daemon=True).start()
        threading.Thread(target=pipe, args=(upstream, client, rate), daemon=True).start()


if __name__ == "__main__":
    main()
