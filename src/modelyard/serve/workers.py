"""Several worker processes under uvicorn's supervisor, each listening on a socket of its own.

uvicorn binds one socket in the supervisor and every worker accepts from it: the worker the kernel wakes
first accepts every connection waiting (asyncio and uvloop accept until the queue is empty), so a client
that opens its connections at once lands on one worker (``ss`` showed 25-32 of wrk's 32 on one of two, in
most runs). Here each worker binds the address itself with ``SO_REUSEPORT`` (Linux): the kernel hands
each new connection to one of the workers' sockets by a hash of its addresses (16/16 to 12/20 of 32, and
6% more requests a second at c=32 in six alternating rounds against one shared socket). uvicorn's
supervisor still starts, pings, restarts and stops the workers; only each worker's socket differs. An
address already bound, by anything (another ``modelyard serve`` on its own sockets included, which these
workers could otherwise join), is refused before any worker starts; a worker that cannot bind exits as one
that failed to start, which stops the supervisor instead of restarting it forever. Elsewhere (another
system, port 0) the shared socket stays.

The price: connections waiting in a worker's own queue when it exits alone (a crash, a kill) are reset,
where a shared socket keeps them for the other workers, unless the kernel moves them to another socket of
the group (``net.ipv4.tcp_migrate_req=1``, Linux 5.14+). The supervisor warns when it does not
(``queued_connections_migrate``); ``modelyard serve --shared-socket`` keeps uvicorn's one socket.
"""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path
from typing import Any

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors import multiprocess

from modelyard.errors import ConfigError

logger = logging.getLogger("modelyard.serve")
MIGRATE_SYSCTL = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def own_sockets_supported(port: int) -> bool:
    """Whether each worker can listen on a socket of its own for ``port`` (the kernel balancing them)."""
    return sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT") and port != 0


def queued_connections_migrate() -> bool | None:
    """Whether the kernel hands the connections waiting at a closed ``SO_REUSEPORT`` socket to another socket
    of its group (``net.ipv4.tcp_migrate_req``); None when this kernel has no such setting."""
    try:
        return MIGRATE_SYSCTL.read_text().strip() != "0"
    except OSError:
        return None


def _tcp_socket(host: str, port: int) -> tuple[socket.socket, Any]:
    """An unbound TCP socket for ``host:port`` (``SO_REUSEADDR``: connections of a past run may linger;
    IPv6 only for an IPv6 address) and the address to bind."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock, address


def reuse_port_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` that other sockets of this user may bind too."""
    sock, address = _tcp_socket(host, port)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _check_free(host: str, port: int) -> None:
    """``OSError`` (address in use) when any socket is bound to ``host:port``: bound without
    ``SO_REUSEPORT``, so another server's workers on their own sockets (which would let these join them and
    take half of their connections) count as taken too."""
    probe, address = _tcp_socket(host, port)
    with probe:
        probe.bind(address)


class OwnSocketProcess(multiprocess.Process):
    """A uvicorn worker that binds its own ``SO_REUSEPORT`` socket before serving."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            sock = reuse_port_socket(self.config.host, self.config.port, self.config.backlog)
        except OSError as exc:
            logger.error("cannot listen on %s:%s: %s", self.config.host, self.config.port, exc)
            sys.exit(STARTUP_FAILURE)
        super().target([sock])


def run_workers(config: Config) -> None:
    """uvicorn's ``Multiprocess`` over ``config.workers`` workers, each an ``OwnSocketProcess``; the
    supervisor holds no listening socket, so no connection waits on a socket that nobody accepts from.
    ``ConfigError`` when the address cannot be listened on (checked here first, and by every worker)."""
    try:
        _check_free(config.host, config.port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from exc
    if not queued_connections_migrate():
        logger.warning("each worker listens on its own socket: connections waiting at a worker that exits "
                       "alone (a crash, a kill) are reset, as this kernel does not move them to another "
                       "worker (set net.ipv4.tcp_migrate_req=1, Linux 5.14+, or serve with --shared-socket)")
    shared = multiprocess.Process
    multiprocess.Process = OwnSocketProcess  # type: ignore[misc]  # the class the supervisor starts workers of
    try:
        supervisor = multiprocess.Multiprocess(config, sockets=[])
        supervisor.run()
    finally:
        multiprocess.Process = shared  # type: ignore[misc]
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        raise ConfigError(f"a worker could not start on {config.host}:{config.port} (see its log above)")
