"""One SOCKS5 CONNECT (method none) by name, or by IPv4 address when NAME is one; prints the
reply code.

    python3 socks_connect.py PROXY_PORT NAME PORT
"""
import socket
import struct
import sys

proxy_port, name, port = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])
with socket.create_connection(("127.0.0.1", proxy_port), timeout=20) as sock:
    try:
        destination = b"\x01" + socket.inet_aton(name.decode())
    except OSError:
        destination = b"\x03" + bytes([len(name)]) + name
    sock.sendall(b"\x05\x01\x00" + b"\x05\x01\x00" + destination + struct.pack(">H", port))
    reply = b""
    while len(reply) < 4:
        chunk = sock.recv(64)
        if not chunk:
            break
        reply += chunk
    print(reply[3] if len(reply) >= 4 else "closed")
