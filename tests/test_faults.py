"""The cuttable proxy of tests/faults.py, against an echo server on loopback."""

import socket
import socketserver
import threading
import time

import pytest

from tests.faults import FaultProxy


class Echo(socketserver.BaseRequestHandler):
    """Send back every byte received."""

    def handle(self):
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo_server):
    with FaultProxy(*echo_server) as proxy:
        yield proxy


def connect(proxy, timeout=2):
    return socket.create_connection(proxy.address, timeout=timeout)


def roundtrip(sock, payload=b"ping"):
    sock.sendall(payload)
    return sock.recv(4096)


def test_it_forwards_both_ways(proxy):
    with connect(proxy) as sock:
        assert roundtrip(sock) == b"ping"
        assert roundtrip(sock, b"x" * 100_000 + b"!")  # larger than one chunk goes through
    assert not proxy.is_cut


def test_a_cut_resets_open_connections_and_refuses_new_ones_until_restored(proxy):
    sock = connect(proxy)
    assert roundtrip(sock) == b"ping"
    proxy.cut()
    assert proxy.is_cut
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        # The reset may arrive on the send or on the read after it.
        sock.sendall(b"more")
        if not sock.recv(10):
            raise ConnectionResetError("closed")
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    proxy.restore()
    with connect(proxy) as again:
        assert roundtrip(again) == b"ping"


def test_a_blackhole_accepts_but_never_answers_then_restore_resets_the_hung_ones(proxy):
    old = connect(proxy, timeout=0.3)
    assert roundtrip(old) == b"ping"
    proxy.cut(blackhole=True)
    new = connect(proxy, timeout=0.3)
    started = time.monotonic()
    for sock in (old, new):
        with pytest.raises(TimeoutError):
            roundtrip(sock)
    assert time.monotonic() - started < 2
    proxy.restore()
    with pytest.raises(OSError):
        # Bytes were dropped on the hung connections: they are reset, never resumed half-way.
        old.settimeout(2)
        old.sendall(b"after")
        if not old.recv(10):
            raise ConnectionResetError("closed")
    old.close()
    new.close()
    with connect(proxy) as again:
        assert roundtrip(again) == b"ping"


def test_close_ends_everything(echo_server):
    proxy = FaultProxy(*echo_server)
    sock = connect(proxy)
    assert roundtrip(sock) == b"ping"
    proxy.close()
    assert proxy.links == set()
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    sock.close()


def test_route_replaces_host_and_port_only():
    proxy = FaultProxy("127.0.0.1", 9)
    try:
        assert (
            proxy.route("postgresql+psycopg://postgres@127.0.0.1:5432/soak")
            == f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/soak"
        )
        assert proxy.route("redis://127.0.0.1:6379/3") == f"redis://127.0.0.1:{proxy.port}/3"
    finally:
        proxy.close()
