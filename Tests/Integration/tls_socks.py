#!/usr/bin/env python3
"""A SOCKS5 client inside Python's ssl: TLS to the proxy (checking its certificate against CA
for SERVER_NAME), optionally a client certificate, optionally a username login, then CONNECT to
TARGET_HOST:TARGET_PORT and PAYLOAD sent and read back (an echo target).

usage: tls_socks.py HOST PORT CA SERVER_NAME TARGET_HOST TARGET_PORT PAYLOAD [--cert FILE --key FILE] [--user U --password P]
Prints one line: 'tls=VERSION reply=CODE echo=ok|-' or 'refused: WHAT' (the connection ended
before a SOCKS answer, as when the proxy turns a certificate away).
"""
import argparse
import socket
import ssl
import struct

parser = argparse.ArgumentParser()
for name in ["host", "port", "ca", "server_name", "target_host", "target_port", "payload"]:
    parser.add_argument(name)
parser.add_argument("--cert")
parser.add_argument("--key")
parser.add_argument("--user")
parser.add_argument("--password")
parser.add_argument("--proxy-header", help="a PROXY protocol v1 line sent in clear before TLS, as a balancer would")
parser.add_argument("--udp", action="store_true", help="UDP ASSOCIATE instead of CONNECT: PAYLOAD goes to the target as a datagram")
args = parser.parse_args()

context = ssl.create_default_context(cafile=args.ca)
if args.cert:
    context.load_cert_chain(args.cert, args.key)
raw = socket.create_connection((args.host, int(args.port)), timeout=10)


def read(conn, count):
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise EOFError("closed after %d bytes" % len(data))
        data += chunk
    return data


try:
    if args.proxy_header:
        raw.sendall(args.proxy_header.encode() + b"\r\n")
    conn = context.wrap_socket(raw, server_hostname=args.server_name)
    version = conn.version()
    method = 2 if args.user else 0
    conn.sendall(bytes([5, 1, method]))
    answer = read(conn, 2)
    if answer[1] != method:
        print("tls=%s method=%d" % (version, answer[1]))
        raise SystemExit(0)
    if args.user:
        user, password = args.user.encode(), args.password.encode()
        conn.sendall(bytes([1, len(user)]) + user + bytes([len(password)]) + password)
        if read(conn, 2)[1] != 0:
            print("tls=%s login=refused" % version)
            raise SystemExit(0)
    if args.udp:
        conn.sendall(bytes([5, 3, 0, 1, 0, 0, 0, 0, 0, 0]))
        reply = read(conn, 10)
        relay = (socket.inet_ntoa(reply[4:8]), struct.unpack(">H", reply[8:10])[0])
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.settimeout(10)
        header = bytes([0, 0, 0, 1]) + socket.inet_aton(args.target_host) + struct.pack(">H", int(args.target_port))
        udp.sendto(header + args.payload.encode(), relay)
        data, _ = udp.recvfrom(65535)
        print("tls=%s reply=%d udp=%s" % (version, reply[1], "ok" if data[10:] == args.payload.encode() else "wrong"))
        raise SystemExit(0)
    host = args.target_host.encode()
    conn.sendall(bytes([5, 1, 0, 3, len(host)]) + host + struct.pack(">H", int(args.target_port)))
    reply = read(conn, 4)
    kind = reply[3]
    read(conn, {1: 4, 4: 16}.get(kind, 0) or read(conn, 1)[0])
    read(conn, 2)
    echo = "-"
    if reply[1] == 0:
        payload = args.payload.encode()
        conn.sendall(payload)
        echo = "ok" if read(conn, len(payload)) == payload else "wrong"
    print("tls=%s reply=%d echo=%s" % (version, reply[1], echo))
except (ssl.SSLError, EOFError, ConnectionError, socket.timeout) as error:
    print("refused: %s" % error)
