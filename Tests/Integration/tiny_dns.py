"""A DNS server of a few lines for tests in a network namespace: answers A queries for the names
given on the command line (NAME=IPV4 ...), NXDOMAIN for anything else, and logs each name asked.

    python3 tiny_dns.py 127.0.0.1 53 db.corp.test=127.0.0.1
"""
import socket
import struct
import sys

host, port = sys.argv[1], int(sys.argv[2])
answers = dict(item.split("=", 1) for item in sys.argv[3:])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((host, port))
print("ready", file=sys.stderr, flush=True)
while True:
    query, client = sock.recvfrom(512)
    ident, flags, qdcount = struct.unpack(">HHH", query[:6])
    labels, offset = [], 12
    while query[offset]:
        length = query[offset]
        labels.append(query[offset + 1:offset + 1 + length].decode())
        offset += 1 + length
    qtype = struct.unpack(">H", query[offset + 1:offset + 3])[0]
    question = query[12:offset + 5]
    name = ".".join(labels).lower()
    print("asked", name, qtype, file=sys.stderr, flush=True)
    address = answers.get(name)
    if address is None:
        sock.sendto(struct.pack(">HHHHHH", ident, 0x8183, 1, 0, 0, 0) + question, client)
    elif qtype != 1:
        sock.sendto(struct.pack(">HHHHHH", ident, 0x8180, 1, 0, 0, 0) + question, client)
    else:
        record = struct.pack(">HHHLH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(address)
        sock.sendto(struct.pack(">HHHHHH", ident, 0x8180, 1, 1, 0, 0) + question + record, client)
