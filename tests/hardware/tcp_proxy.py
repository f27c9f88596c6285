"""A TCP proxy for tests: ``python tcp_proxy.py UPSTREAM_PORT`` forwards 127.0.0.1:<printed port> to
127.0.0.1:UPSTREAM_PORT; SIGUSR1 cuts every open connection (a dropped link to a board).

A separate process: TVM's RPC client blocks in C++ holding the GIL, so an in-process proxy thread
could not forward its bytes.
"""
from __future__ import annotations

import signal
import socket
import sys
import threading


def main() -> None:
    upstream = int(sys.argv[1])
    listener = socket.create_server(("127.0.0.1", 0))
    open_sockets: list[socket.socket] = []

    def cut(*_) -> None:
        for sock in list(open_sockets):
            _shutdown(sock)
        open_sockets.clear()

    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        _shutdown(source)
        _shutdown(sink)

    signal.signal(signal.SIGUSR1, cut)
    print(listener.getsockname()[1], flush=True)
    while True:
        client, _ = listener.accept()
        server = socket.create_connection(("127.0.0.1", upstream))
        open_sockets += [client, server]
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=pump, args=(source, sink), daemon=True).start()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


if __name__ == "__main__":
    main()
