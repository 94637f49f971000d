"""A TCP proxy to PostgreSQL on loopback, for tests that break the path between a client and
the server: each connection accepted is forwarded to a new connection to the target, both
ways, until either side closes.

- `through(url)`: a database URL that connects through the proxy (plain messages from the
  first byte: no SSL or GSS negotiation);
- `black_hole()`: the connections open now go silent both ways (what arrives is dropped, and
  nothing is closed: no FIN, no RST, as a network path that stopped forwarding); connections
  made later are forwarded as usual;
- `play_dead()`: the connections open now are cut, and connections made from now on are
  accepted but never answered (nothing reaches the target): a database whose port still takes
  connections and that answers nothing (a hung server, a proxy in front of a dead one);
- `hold()`: what the server sends on the connections open now is kept back, in order
  (`held()`), and forwarded by `release(upto)`: a slow path back, with the choice of where
  it lets the stream through;
- a subclass may read the server's side itself (`_answers`), e.g. to cut a stream at a
  chosen message.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from sqlalchemy import make_url

from tollbooth.db import normalize_url


class Proxy:
    def __init__(self, host: str, port: int, listen_port: int = 0) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", listen_port))
        self.port = int(self.listener.getsockname()[1])
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._silent: set[socket.socket] = set()  # black-holed: what they receive is dropped
        self._clients: dict[socket.socket, socket.socket] = {}  # a server's side -> its client
        self._held: dict[socket.socket, bytearray] = {}  # a server's side -> what is kept back
        self._dead = False  # `play_dead`: new connections are kept, unanswered
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @classmethod
    def to(cls, url: str, listen_port: int = 0) -> Proxy:
        """A proxy to the PostgreSQL server of database `url` (on `listen_port`: a database
        that was not there and comes up on that port)."""
        parsed = make_url(normalize_url(url))
        return cls(parsed.host or "127.0.0.1", parsed.port or 5432, listen_port)

    def through(self, url: str) -> str:
        """Database `url` (of the proxy's target) connecting through the proxy."""
        parsed = make_url(normalize_url(url))
        return (
            parsed.set(host="127.0.0.1", port=self.port)
            .update_query_dict({"sslmode": "disable", "gssencmode": "disable"})
            .render_as_string(hide_password=False)
        )

    def black_hole(self) -> None:
        """The connections open now forward nothing more, either way, and stay open."""
        with self._lock:
            self._silent.update(self._socks)

    def play_dead(self) -> None:
        """Cut the connections open now; accept later ones and answer nothing on them."""
        with self._lock:
            self._dead = True
            pairs = list(self._clients.items())
        for server, client in pairs:
            self._end(server, client)

    def connections(self) -> int:
        """Connections open (neither side has ended)."""
        with self._lock:
            return len(self._clients)

    def hold(self) -> None:
        """What the server sends on the connections open now is kept back until `release`."""
        with self._lock:
            for server in self._clients:
                self._held.setdefault(server, bytearray())

    def held(self) -> list[bytes]:
        """What is kept back, per connection held."""
        with self._lock:
            return [bytes(kept) for kept in self._held.values()]

    def release(self, upto: int | None = None) -> None:
        """Forward the first `upto` bytes kept back of each connection held, the rest still
        kept back; None: all of it, and hold no more."""
        with self._lock:
            for server, kept in list(self._held.items()):
                n = len(kept) if upto is None else upto
                with contextlib.suppress(OSError):
                    self._clients[server].sendall(kept[:n])
                del kept[:n]
                if upto is None:
                    del self._held[server]

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self._dead:
                    self._socks.append(client)  # kept open, never read: closed by `close`
                    continue
            server = socket.create_connection(self.target)
            with self._lock:
                self._socks += [client, server]
                self._clients[server] = client
            for pump in (
                threading.Thread(target=self._forward, args=(client, server), daemon=True),
                threading.Thread(target=self._answers, args=(server, client), daemon=True),
            ):
                self._threads.append(pump)
                pump.start()

    def _forward(self, src: socket.socket, dst: socket.socket) -> None:
        """Forward what `src` sends to `dst` (dropped once black-holed, kept back while held);
        at its end, close both ways."""
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                with self._lock:
                    if src in self._silent:
                        continue
                    kept = self._held.get(src)
                    if kept is not None:
                        kept += data
                        continue
                dst.sendall(data)
        self._end(src, dst)

    def _answers(self, server: socket.socket, client: socket.socket) -> None:
        """What the server sends, to the client."""
        self._forward(server, client)

    def _end(self, *socks: socket.socket) -> None:
        with self._lock:
            for s in socks:
                self._clients.pop(s, None)
                self._held.pop(s, None)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (Linux)
        self.listener.close()
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        for t in self._threads:
            t.join(timeout=10)
            assert not t.is_alive()
