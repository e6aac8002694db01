"""gRPC (grpc-go): a client waiting on a stream (unary calls and streams both receive
through csAttempt.recvMsg, and send through csAttempt.sendMsg, where a client blocks when
flow control stops it), and the server goroutine running that stream's handler. One
link per stream, the two sides paired by stream id (a stream's id is the same at both
ends of its HTTP/2 connection).

Both transports record their connection's addresses (http2Client and http2Server's
localAddr and remoteAddr): those find the connection when it is wrapped (TLS credentials,
cmux, a limit listener), where the fd's type assertion cannot."""
from __future__ import annotations

from pytest_sideeye.engine.links.ends import End, pair_streams
from pytest_sideeye.engine.links.probe_text import conn_fd
from pytest_sideeye.snapshot import Link

_GRPC = "google.golang.org/grpc"
# The stream's own transport (stream.st), not the argument t: Go 1.21's DWARF puts t in a
# stack slot that holds something else at the handler's call (measured: garbage read).
_ST = f"stream.st.(*{_GRPC}/internal/transport.http2Server)"
_TCP_PORT = ".(*net.TCPAddr).Port"
_SERVER = {"fd": conn_fd(_ST + ".conn"),
           "local_port": (_ST + ".localAddr" + _TCP_PORT,),
           "remote_port": (_ST + ".remoteAddr" + _TCP_PORT,),
           "stream": ("stream.id",), "method": ("stream.method",)}
_CLIENT = {"fd": conn_fd("a.s.ct.conn"),
           "local_port": ("a.s.ct.localAddr" + _TCP_PORT,),
           "remote_port": ("a.s.ct.remoteAddr" + _TCP_PORT,),
           "tls": ("a.s.ct.isSecure",),
           "stream": ("a.s.id",), "method": ("a.s.method",)}
PROBES: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    # A client waiting for an answer, or blocked sending (flow control: its handler does
    # not read).
    _GRPC + ".(*csAttempt).recvMsg": ("grpc_client", _CLIENT),
    _GRPC + ".(*csAttempt).sendMsg": ("grpc_client", _CLIENT),
    _GRPC + ".(*Server).processUnaryRPC": ("grpc_server", _SERVER),
    _GRPC + ".(*Server).processStreamingRPC": ("grpc_server", _SERVER),
}
RANK = {"grpc_client": 0, "grpc_server": 0}


def keep(role: str, got: dict) -> bool:
    stream = got.get("stream")
    return isinstance(stream, int) and not isinstance(stream, bool)


def pair(client: End | None, server: End | None, client_addr: str | None,
         server_addr: str | None) -> list[Link]:
    return pair_streams("grpc", "grpc_client", "grpc_server", client, server, client_addr,
                        server_addr)
