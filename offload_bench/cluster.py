"""A throwaway Redis Cluster: six ``redis-server --cluster-enabled yes`` processes on loopback ports.

Three masters and a replica each, without persistence, in a directory of the
caller's. The chaos harness (:mod:`offload_bench.servers`) and the test suite
(``tests/servers.py``) both start theirs from here. :meth:`RedisCluster.kill_master`
SIGKILLs the master that serves a key and returns once its replica has been
promoted and the cluster is ok again, as a real failover does.
"""

from __future__ import annotations

import os
import socket
import subprocess

from offload_bench.procs import HarnessError, free_port, wait_for


def cluster_ports(count: int) -> list[int]:
    """``count`` free loopback ports below 55536 whose cluster bus port (10000 higher) is free too."""
    found: list[int] = []
    while len(found) < count:
        port = free_port()
        if port <= 55535 and port not in found and _bindable(port + 10000):
            found.append(port)
    return found


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ask(port: int, command: str) -> str:
    """One inline command to the node on ``port``: its raw reply, or "" if the node does not answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), 1) as conn:
            conn.sendall(command.encode() + b"\r\n")
            conn.settimeout(1)
            return conn.recv(65536).decode(errors="replace")
    except OSError:
        return ""


class RedisCluster:
    """Six nodes (three masters, three replicas) started by :meth:`start`, all killed by :meth:`stop`."""

    #: How long a node may be unreachable before the cluster fails it over (ms).
    NODE_TIMEOUT = 1000

    def __init__(self, server: str, cli: str, directory: str) -> None:
        self.server, self.cli, self.directory = server, cli, directory
        self.ports = cluster_ports(6)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        seeds = ",".join(f"127.0.0.1:{port}" for port in self.ports[1:3])
        #: offload's URL of the cluster: the first node, and two more to find it from.
        self.url = f"redis+cluster://127.0.0.1:{self.ports[0]}/?seeds={seeds}"

    def start(self) -> None:
        try:
            for port in self.ports:
                self._start_node(port)
            addresses = [f"127.0.0.1:{port}" for port in self.ports]
            create = [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"]
            done = subprocess.run(create, capture_output=True, timeout=60, check=False)
            if done.returncode != 0:
                raise HarnessError(f"redis-cli --cluster create failed: {done.stdout!r} {done.stderr!r}")
            wait_for(self.ok, 30, "the Redis cluster to be ok on every node")
            wait_for(self._replicated, 30, "every replica to be in sync with its master")
        except BaseException:
            self.stop()
            raise

    def _start_node(self, port: int) -> None:
        node = os.path.join(self.directory, str(port))
        os.makedirs(node, exist_ok=True)
        log = os.path.join(node, "redis.log")
        command = [self.server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--dir", node]
        command += ["--cluster-node-timeout", str(self.NODE_TIMEOUT), "--repl-diskless-sync-delay", "0"]
        command += ["--logfile", log]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes[port] = process

        def answers() -> bool:
            if process.poll() is not None:
                with open(log, errors="replace") as lines:
                    raise HarnessError(f"redis-server on port {port} exited: {lines.read()[-500:]}")
            return ask(port, "PING").startswith("+PONG")

        wait_for(answers, 15, f"redis-server on port {port}")

    def live(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def ok(self) -> bool:
        """Whether every live node says the cluster is ok."""
        return all("cluster_state:ok" in ask(port, "CLUSTER INFO") for port in self.live())

    def _replicated(self) -> bool:
        roles = [ask(port, "INFO replication") for port in self.live()]
        replicas = [role for role in roles if "role:slave" in role]
        return len(replicas) == len(roles) // 2 and all("master_link_status:up" in role for role in replicas)

    def masters(self) -> list[int]:
        """The ports of the live masters."""
        return sorted(port for port in self.live() if "role:master" in ask(port, "INFO replication"))

    def flush(self) -> None:
        """Empty every master (their replicas follow)."""
        for port in self.masters():
            ask(port, "FLUSHALL")

    def master_of(self, key: str) -> int:
        """The port of the master that serves ``key``'s slot, as a live master sees it."""
        import redis

        with redis.Redis(port=self.masters()[0], socket_timeout=2) as client:
            slot = client.cluster("KEYSLOT", key)
            for start, end, master, *_ in client.cluster("SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise HarnessError(f"no master serves slot {slot}")

    def kill_master(self, key: str) -> int:
        """SIGKILL the master of ``key``'s slot; return its port once a replica serves the slot."""
        port = self.master_of(key)
        process = self.processes.pop(port)
        process.kill()
        process.wait(10)
        wait_for(lambda: self._promoted(key, port), 30, f"a replica to take over from the master on {port}")
        wait_for(self.ok, 30, "the Redis cluster to be ok again")
        return port

    def _promoted(self, key: str, dead: int) -> bool:
        try:
            return self.master_of(key) != dead
        except Exception:
            return False

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(10)
        self.processes.clear()
