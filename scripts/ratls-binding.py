#!/usr/bin/env python3
"""Recompute an Enclave OS RA-TLS certificate's key binding from the certificate alone.

An independent check of docs/ratls.md, "Key binding": it uses only the openssl command line and
Python's standard library, none of Enclave OS's code.

    scripts/ratls-binding.py leaf.pem

prints the expected report_data (hex) for deterministic mode, and, when the certificate carries
an SGX or TDX quote, whether the quote's report_data matches. Exit status 0 only on a match.

A certificate in the DICE binding (TCG DICE tagged evidence, OID 2.23.133.5.4.9, as Gramine and
rats-tls write it) is checked by the interoperable RA-TLS rules instead: CBOR tag 60000 around
[bstr quote, bstr claims]; the claims a map of text names to bstr values; pubkey-hash a bstr
holding [hash-alg-id, hash] of the SubjectPublicKeyInfo; report_data[0..32] = SHA-256(claims) and
report_data[32..64] zero; and, when there is a nonce claim on an Enclave OS leaf, the nonce is the
notBefore binding. The enclave-os-* claims are printed.
"""
import datetime
import hashlib
import subprocess
import sys

SGX_QUOTE = "1.2.840.113741.1.13.1.0"
TDX_QUOTE = "1.2.840.113741.1.5.5.1.6"
DICE = "2.23.133.5.4.9"
HASHES = {1: hashlib.sha256, 7: hashlib.sha384, 8: hashlib.sha512}


def cbor(b, i=0):
    """One definite-length CBOR item at b[i:]: (value, next index). Tags are ("tag", n, item)."""
    major, info = b[i] >> 5, b[i] & 31
    i += 1
    if info < 24:
        n = info
    elif info in (24, 25, 26, 27):
        size = 1 << (info - 24)
        n = int.from_bytes(b[i:i + size], "big")
        i += size
    else:
        raise ValueError("indefinite lengths are not in the format")
    if major == 0:
        return n, i
    if major == 2:
        return bytes(b[i:i + n]), i + n
    if major == 3:
        return b[i:i + n].decode(), i + n
    if major == 4:
        out = []
        for _ in range(n):
            v, i = cbor(b, i)
            out.append(v)
        return out, i
    if major == 5:
        out = []
        for _ in range(n):
            k, i = cbor(b, i)
            v, i = cbor(b, i)
            out.append((k, v))
        return out, i
    if major == 6:
        v, i = cbor(b, i)
        return ("tag", n, v), i
    raise ValueError("CBOR major type %d is not in the format" % major)


def oid_der(oid):
    arcs = [int(a) for a in oid.split(".")]
    enc = bytes([arcs[0] * 40 + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.insert(0, 0x80 | (arc & 0x7F))
            arc >>= 7
        enc += bytes(chunk)
    return bytes([0x06, len(enc)]) + enc


def extension(der, oid):
    """The bytes inside an extension's OCTET STRING, found by its DER OID, or None."""
    at = der.find(oid_der(oid))
    if at < 0:
        return None
    pos = at + len(oid_der(oid))
    if der[pos] == 0x01:  # critical BOOLEAN
        pos += 3
    assert der[pos] == 0x04, "extension value is not an OCTET STRING"
    n = der[pos + 1]
    hdr = 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(der[pos + 2:pos + 2 + k], "big")
        hdr = 2 + k
    return der[pos + hdr:pos + hdr + n]


def report_data(quote):
    version = int.from_bytes(quote[0:2], "little")
    tee = int.from_bytes(quote[4:8], "little")
    at = 48 + 520 if (version, tee) == (4, 0x81) else 48 + 320
    return quote[at:at + 64], "TDX" if tee == 0x81 else "SGX"


def dice(value, spki, binding):
    tagged, _ = cbor(value)
    if tagged[0] != "tag" or tagged[1] != 60000:
        return fail("not CBOR tag 60000")
    items = tagged[2]
    if not (isinstance(items, list) and len(items) == 2 and all(isinstance(x, bytes) for x in items)):
        return fail("not [bstr quote, bstr claims]")
    quote, claims_raw = items
    claims, _ = cbor(claims_raw)
    if not isinstance(claims, list):
        return fail("claims are not a map")
    named = {}
    for k, v in claims:
        if not isinstance(k, str) or not isinstance(v, bytes):
            return fail("claim %r is not a text name with a bstr value" % (k,))
        if k in named:
            return fail("claim %r appears twice" % k)
        named[k] = v
    if "pubkey-hash" not in named:
        return fail("no pubkey-hash claim")
    entry, _ = cbor(named["pubkey-hash"])
    alg, digest = entry
    if HASHES[alg](spki).digest() != digest:
        return fail("pubkey-hash is not the hash of the SubjectPublicKeyInfo")
    rd, kind = report_data(quote)
    print("quote:       ", kind, "(DICE tagged evidence)")
    print("claims hash: ", hashlib.sha256(claims_raw).hexdigest())
    if rd[:32] != hashlib.sha256(claims_raw).digest():
        return fail("report_data[0..32] is not SHA-256 of the claims")
    if any(rd[32:]):
        return fail("report_data[32..64] is not zero")
    if "nonce" in named and any(k.startswith("enclave-os-") for k in named):
        if named["nonce"] != binding:
            return fail("the nonce claim is not the notBefore binding")
        print("nonce:       ", named["nonce"].decode())
    for k in sorted(named):
        if k.startswith("enclave-os-"):
            print("%-13s" % (k[len("enclave-os-"):] + ":"), named[k].hex())
    print("dice rules:   hold; report_data matches")
    return 0


def fail(reason):
    print("dice rules:   FAIL:", reason)
    return 1


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
    der = openssl("x509", "-outform", "DER", data=pem)
    value = extension(der, DICE)
    if value is not None:
        return dice(value, spki, binding)
    print("report_data: ", expected.hex())
    for oid, body_offset in ((SGX_QUOTE, 48 + 320), (TDX_QUOTE, 48 + 520)):
        quote = extension(der, oid)
        if quote is None:
            continue
        actual = quote[body_offset:body_offset + 64]
        ok = actual == expected
        print("quote:       ", "SGX" if oid == SGX_QUOTE else "TDX", "report_data", "matches" if ok else "DIFFERS")
        return 0 if ok else 1
    print("no SGX or TDX quote extension found")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
