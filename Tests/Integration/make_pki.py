#!/usr/bin/env python3
"""Writes a small PKI for the TLS tests into DIR (python3-cryptography):

ca.pem                the client and server CA
server.pem/.key       server certificate (CN gateway.test; SAN gateway.test, localhost, 127.0.0.1, ::1)
                      with the intermediate after it; signed by intermediate.pem
server2.pem/.key      a renewed server certificate (another serial, the same names)
alice.pem/.key        client: CN alice, e-mail alice@example.test, URI urn:user:alice
bob.pem/.key          client: CN bob, revoked by crl.pem
carol.pem/.key        client: CN carol, expired
mallory.pem/.key      client: CN mallory, from another CA (other-ca.pem)
crlf.pem/.key         client: CN "eve\\r\\nend=forged"
nul.pem/.key          client: CN "eve\\x00root"
jose.pem/.key         client: CN "José"
twocn.pem/.key        client: two CNs
crl.pem               the CA's CRL revoking bob
"""
import datetime
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

out = sys.argv[1]
now = datetime.datetime.utcnow()
day = datetime.timedelta(days=1)


def key():
    return ec.generate_private_key(ec.SECP256R1())


def save(name, cert, private):
    with open(f"{out}/{name}.pem", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    if private is not None:
        with open(f"{out}/{name}.key", "wb") as f:
            f.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def name(*attributes):
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def build(subject, issuer, public, signer, ca=False, start=None, end=None, sans=None, serial=None):
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(start or now - day)
        .not_valid_after(end or now + 365 * day)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_ca(common):
    private = key()
    subject = name((NameOID.COMMON_NAME, common))
    return subject, private, build(subject, subject, private.public_key(), private, ca=True)


ca_name, ca_key, ca = make_ca("Sallyport Test CA")
save("ca", ca, ca_key)
other_name, other_key, other = make_ca("Someone Else's CA")
save("other-ca", other, other_key)

inter_key = key()
inter_name = name((NameOID.COMMON_NAME, "Sallyport Test Intermediate"))
inter = build(inter_name, ca_name, inter_key.public_key(), ca_key, ca=True)
save("intermediate", inter, None)

import ipaddress

server_sans = [
    x509.DNSName("gateway.test"),
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("::1")),
]
for file in ["server", "server2"]:
    private = key()
    cert = build(name((NameOID.COMMON_NAME, "gateway.test")), inter_name, private.public_key(), inter_key, sans=server_sans)
    with open(f"{out}/{file}.pem", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM) + inter.public_bytes(serialization.Encoding.PEM))
    with open(f"{out}/{file}.key", "wb") as f:
        f.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with open(f"{out}/{file}.serial", "w") as f:
        f.write(format(cert.serial_number, "X"))


def client(file, common_names, signer=ca_key, issuer=ca_name, end=None, sans=None):
    private = key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in common_names])
    cert = build(subject, issuer, private.public_key(), signer, end=end, sans=sans, start=(end - 10 * day) if end else None)
    save(file, cert, private)
    return cert


client("alice", ["alice"], sans=[x509.RFC822Name("alice@example.test"), x509.UniformResourceIdentifier("urn:user:alice")])
bob = client("bob", ["bob"])
client("carol", ["carol"], end=now - day)
client("mallory", ["mallory"], signer=other_key, issuer=other_name)
client("crlf", ["eve\r\nend=forged"])
client("nul", ["eve\x00root"])
client("jose", ["Jos\u00e9"])
client("twocn", ["alice", "bob"])

crl = (
    x509.CertificateRevocationListBuilder()
    .issuer_name(ca_name)
    .last_update(now - day)
    .next_update(now + 30 * day)
    .add_revoked_certificate(
        x509.RevokedCertificateBuilder().serial_number(bob.serial_number).revocation_date(now - day).build()
    )
    .sign(ca_key, hashes.SHA256())
)
with open(f"{out}/crl.pem", "wb") as f:
    f.write(crl.public_bytes(serialization.Encoding.PEM))
