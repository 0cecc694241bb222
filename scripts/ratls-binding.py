#!/usr/bin/env python3
"""Recompute an Enclave OS RA-TLS certificate's key binding from the certificate alone.

An independent check of docs/ratls.md, "Key binding": it uses only the openssl command line and
Python's standard library, none of Enclave OS's code.

    scripts/ratls-binding.py leaf.pem

prints the expected report_data (hex) for deterministic mode, and, when the certificate carries
an SGX or TDX quote, whether the quote's report_data matches. Exit status 0 only on a match.
"""
import datetime
import hashlib
import subprocess
import sys

SGX_QUOTE = "1.2.840.113741.1.13.1.0"
TDX_QUOTE = "1.2.840.113741.1.5.5.1.6"


def openssl(*args, data=None):
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


def main(path):
    pem = open(path, "rb").read()
    spki = openssl("pkey", "-pubin", "-outform", "DER", data=openssl("x509", "-pubkey", "-noout", data=pem))
    start = openssl("x509", "-noout", "-startdate", data=pem).decode().strip().split("=", 1)[1]
    not_before = datetime.datetime.strptime(start, "%b %d %H:%M:%S %Y GMT")
    binding = not_before.strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    expected = hashlib.sha512(hashlib.sha256(spki).digest() + binding).digest()
    print("binding:     ", binding.decode())
    print("report_data: ", expected.hex())

    der = openssl("x509", "-outform", "DER", data=pem)
    for oid, body_offset in ((SGX_QUOTE, 48 + 320), (TDX_QUOTE, 48 + 520)):
        # The extension value is an OCTET STRING holding the quote; find it by its DER OID.
        arcs = [int(a) for a in oid.split(".")]
        enc = bytes([arcs[0] * 40 + arcs[1]])
        for arc in arcs[2:]:
            chunk = [arc & 0x7F]
            arc >>= 7
            while arc:
                chunk.insert(0, 0x80 | (arc & 0x7F))
                arc >>= 7
            enc += bytes(chunk)
        at = der.find(bytes([0x06, len(enc)]) + enc)
        if at < 0:
            continue
        pos = at + 2 + len(enc)
        assert der[pos] == 0x04, "extension value is not an OCTET STRING"
        n = der[pos + 1]
        hdr = 2
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(der[pos + 2:pos + 2 + k], "big")
            hdr = 2 + k
        quote = der[pos + hdr:pos + hdr + n]
        actual = quote[body_offset:body_offset + 64]
        ok = actual == expected
        print("quote:       ", "SGX" if oid == SGX_QUOTE else "TDX", "report_data", "matches" if ok else "DIFFERS")
        return 0 if ok else 1
    print("no SGX or TDX quote extension found")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
