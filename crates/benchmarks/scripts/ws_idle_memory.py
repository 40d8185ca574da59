#!/usr/bin/env python3
"""Memory per idle MQTT-over-WebSocket connection, Roost and Mosquitto side by side.

Starts each broker with a WebSocket listener on a free port (Roost also on its HTTP port's
/mqtt), opens N WebSocket connections that each complete the handshake and an MQTT CONNECT
(keep-alive 60 s), and reports the broker's RSS growth divided by N. Standard library only.

    cargo build --release --workspace
    python3 crates/benchmarks/scripts/ws_idle_memory.py --connections 5000
"""
import argparse, base64, os, resource, socket, struct, subprocess, tempfile, time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS missing")


def wait_listening(port, proc):
    deadline = time.time() + 10
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def open_idle(port, n):
    """n WebSocket connections, each through the handshake and an MQTT CONNECT/CONNACK."""
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(1024)
            if not chunk:
                raise RuntimeError("closed during the WebSocket handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"handshake refused: {head[:80]!r}")
        client_id = f"ws-idle-{i}".encode()
        body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(client_id)) + client_id
        packet = bytes([0x10, len(body)]) + body
        mask = os.urandom(4)
        s.sendall(bytes([0x82, 0x80 | len(packet)]) + mask + bytes(b ^ mask[j % 4] for j, b in enumerate(packet)))
        frame = s.recv(16)
        if frame[-4:] != b"\x20\x02\x00\x00":
            raise RuntimeError(f"no CONNACK: {frame!r}")
        socks.append(s)
    return socks


def measure(name, cmd, port, n):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        time.sleep(0.5)
        before = rss_bytes(proc.pid)
        socks = open_idle(port, n)
        time.sleep(1)
        after = rss_bytes(proc.pid)
        for s in socks:
            s.close()
        print(f"| {name} | {n:,} | {(after - before) / n:,.0f} bytes |", flush=True)
    finally:
        proc.terminate()
        proc.wait()


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--roost", default=os.path.join(here, "../../../target/release/roost"))
    parser.add_argument("--mosquitto", default="/usr/sbin/mosquitto")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print("| broker and listener | connections | memory per idle connection |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for where in ["--mqtt-ws-listen", "--http-listen"]:
            port = free_port()
            addresses = {"--mqtt-listen": "127.0.0.1:0", "--mqtt-ws-listen": "127.0.0.1:0", "--http-listen": "127.0.0.1:0", where: f"127.0.0.1:{port}"}
            cmd = [args.roost, "serve", "--allow-anonymous", "--max-connections-per-ip", "0",
                   "--database", f"sqlite://{tmp}/roost-{port}.db", "--data-dir", f"{tmp}/data-{port}"]
            for flag, value in addresses.items():
                cmd += [flag, value]
            label = "WebSocket port" if where == "--mqtt-ws-listen" else "HTTP port, /mqtt"
            measure(f"Roost, {label}", cmd, port, args.connections)
        port = free_port()
        conf = os.path.join(tmp, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} 127.0.0.1\nprotocol websockets\nallow_anonymous true\n"
                    "max_connections -1\npersistence false\nlog_dest none\n")
        try:
            measure("Mosquitto, WebSocket listener", [args.mosquitto, "-c", conf], port, args.connections)
        except RuntimeError as e:
            # Debian's Mosquitto 2.0.11 cannot open its websockets listener on some machines
            # ("Unable to start any listening sockets"), this project's CI machine among them.
            print(f"| Mosquitto, WebSocket listener | {args.connections:,} | not measured: {e} |")


if __name__ == "__main__":
    main()
