#!/usr/bin/env python3
"""Connects through warren-node's SOCKS5 entry from a workload's address,
sends a message and prints the echo, or the reason the mesh refused."""
import socket
import struct
import sys

REPLIES = {
    0: "succeeded",
    1: "general failure",
    2: "connection not allowed by policy",
    4: "host unreachable",
    5: "connection refused",
}


def main():
    src, proxy, target, message = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    phost, pport = proxy.rsplit(":", 1)
    thost, tport = target.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(10)
    s.bind((src, 0))
    s.connect((phost, int(pport)))
    s.sendall(b"\x05\x01\x00")
    if s.recv(2) != b"\x05\x00":
        print("  proxy refused the SOCKS5 greeting")
        return 2
    s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(thost) + struct.pack(">H", int(tport)))
    reply = s.recv(10)
    if len(reply) < 2 or reply[1] != 0:
        code = reply[1] if len(reply) > 1 else -1
        print(f"  REFUSED by the mesh: {REPLIES.get(code, code)}")
        return 1
    s.sendall(message.encode())
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    print(f"  sent {message!r}, the server echoed {data.decode()!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
