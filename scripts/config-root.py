#!/usr/bin/env python3
"""Recompute an Enclave OS config root from enclave.toml and the files it names.

An independent check of docs/config-tree.md: it uses only Python's standard library (3.11 or
later, for tomllib), none of Enclave OS's code.

    scripts/config-root.py enclave.toml [--version 0.1.0] [--jwks FILE] [--values]
        [--engine FILE] [--image NAME=DIR ...]

prints the manifest as JSON ({"format", "root", "leaves": [{"name", "value_hash", "leaf_hash"}]}),
the same document as `enclave-os measure --json`. --jwks gives the JWKS bytes fetched from a
jwks_url; --values adds each leaf's value bytes, hex, as "value". With [containers], --engine
gives the engine's versions (JSON: containerd, runc) and --image, for each container workload, a
directory with the resolved manifest.json, config.json and runtime-spec.json, exact bytes.
"""
import hashlib
import json
import os
import sys
import tomllib

MAX_EXACT_INTEGER = 2**53 - 1
DEFAULT_MANAGEMENT_HOSTNAME = "manage.enclave-os.internal"
DEFAULT_LIMITS = {
    "max_connections": 1024,
    "max_request_bytes": 1 << 20,
    "max_wasm_instances": 64,
    "header_timeout_secs": 10,
    "request_timeout_secs": 60,
    "write_stall_secs": 10,
    "max_challenge_handshakes": 2,
    "max_witness_connections": 64,
}
DEFAULT_CLOCK_SKEW_SECS = 60
SIM_ROOT_FILE = "root.crt.pem"


def jcs(v):
    """RFC 8785 for the values config leaves hold: null, booleans, integers, strings, arrays and
    objects. Members sort by UTF-16 code units; strings take json's minimal escapes, which are
    RFC 8785's (\\" \\\\ \\b \\f \\n \\r \\t, other controls as lowercase \\u00xx)."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        if abs(v) > MAX_EXACT_INTEGER:
            raise ValueError(f"{v} is beyond 2^53 - 1")
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(jcs(x) for x in v) + "]"
    if isinstance(v, dict):
        items = sorted(v.items(), key=lambda kv: kv[0].encode("utf-16-be"))
        return "{" + ",".join(jcs(k) + ":" + jcs(x) for k, x in items) + "}"
    raise ValueError(f"{v!r} has no place in a config leaf")


def sha256(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def leaf_hash(name, value):
    n = name.encode()
    return sha256(b"\x00", len(n).to_bytes(2, "big"), n, sha256(value))


def mth(hashes):
    """RFC 9162 Merkle Tree Hash."""
    if not hashes:
        return sha256(b"")
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return sha256(b"\x01", mth(hashes[:k]), mth(hashes[k:]))


def leaves(path, version, jwks_override=None, engine=None, images=None):
    images = images or {}
    base = os.path.dirname(os.path.abspath(path))
    c = tomllib.load(open(path, "rb"))

    def read(p):
        return open(os.path.join(base, p), "rb").read()

    def sim_root(p):
        full = os.path.join(base, p)
        return read(os.path.join(p, SIM_ROOT_FILE) if os.path.isdir(full) else p)

    out = {
        "runtime/version": version.encode(),
        "attestation/servers": jcs(c.get("attestation_servers", [])).encode(),
        "limits": jcs({**DEFAULT_LIMITS, **c.get("limits", {})}).encode(),
    }
    o = c.get("oidc")
    if o is None:
        out["oidc"] = b"null"
    else:
        oidc = {
            "issuer": o["issuer"],
            "audience": o["audience"],
            "jwks_url": o.get("jwks_url"),
            "clock_skew_secs": o.get("clock_skew_secs", DEFAULT_CLOCK_SKEW_SECS),
        }
        # Members only when set, so that configurations without them keep their roots.
        for optional in ("max_token_lifetime_secs", "jwks_refresh_secs"):
            if optional in o:
                oidc[optional] = o[optional]
        out["oidc"] = jcs(oidc).encode()
        if jwks_override is not None:
            out["oidc/jwks"] = jwks_override
        elif "jwks_file" in o:
            out["oidc/jwks"] = read(o["jwks_file"])
        else:
            sys.exit("oidc.jwks_url: give the fetched JWKS with --jwks FILE")
    ca = c.get("ca", {})
    if "certificate" in ca:
        out["ca/certificate"] = read(ca["certificate"])
    bundle = c.get("egress", {}).get("ca_bundle")
    out["egress/ca-bundle"] = read(bundle) if bundle else b""
    if "policy" in c:
        out["policy"] = read(c["policy"])
    hostname = c.get("management", {}).get("hostname", DEFAULT_MANAGEMENT_HOSTNAME)
    if hostname != DEFAULT_MANAGEMENT_HOSTNAME:
        out["management"] = jcs({"hostname": hostname}).encode()
    store = c.get("store", {})
    counter, w = store.get("counter", "file"), store.get("witness")
    if counter != "file" or w is not None:
        witness = None if w is None else {"url": w["url"], "config_root": w.get("config_root")}
        out["store"] = jcs({"counter": counter, "witness": witness}).encode()
        if w is not None:
            out["store/witness-root"] = read(w["root"])
            if "trust_sim" in w:
                out["store/witness-trust-sim"] = sim_root(w["trust_sim"])
            if "policy" in w:
                out["store/witness-policy"] = read(w["policy"])
    w = c.get("witness")
    if w is not None:
        out["witness"] = jcs({"listen": w["listen"]}).encode()
        out["witness/clients-root"] = read(w["clients_root"])
        if "trust_sim" in w:
            out["witness/trust-sim"] = sim_root(w["trust_sim"])
    policy = c.get("seal_policy", "measurement")
    if policy != "measurement":
        out["sealing/policy"] = policy.encode()
    if "seal_key_env" in c:
        out["sealing/key-source"] = b"operator"
    kbs = c.get("seal_key_kbs")
    if kbs is not None:
        out["sealing/key-source"] = b"kbs"
        leaf = {"url": kbs["url"], "resource": kbs["resource"], "attested": "policy" in kbs}
        if "config_root" in kbs:
            leaf["config_root"] = kbs["config_root"]
        out["sealing/kbs"] = jcs(leaf).encode()
        out["sealing/kbs-root"] = read(kbs["root"])
        if "trust_sim" in kbs:
            out["sealing/kbs-trust-sim"] = sim_root(kbs["trust_sim"])
        if "policy" in kbs:
            out["sealing/kbs-policy"] = read(kbs["policy"])
    binding = c.get("listener", {}).get("evidence_binding", "seed")
    if binding != "seed":
        out["listener/evidence-binding"] = binding.encode()
    for r in c.get("registry", []):
        out[f"registry/{r['host']}/ca-bundle"] = read(r["ca_bundle"])
    if "containers" in c:
        if engine is None:
            sys.exit("[containers]: give the engine's versions with --engine FILE")
        out["containers/engine"] = jcs(json.loads(engine)).encode()
    for wl in c.get("workload", []):
        name = wl["name"]
        limits = wl.get("limits", {})
        settings = {
            "kind": wl["kind"],
            "hostnames": wl.get("hostnames", []),
            "env": wl.get("env", {}),
            "args": wl.get("args", []),
            "limits": {
                "memory_bytes": limits.get("memory_bytes"),
                "request_timeout_ms": limits.get("request_timeout_ms"),
            },
        }
        # Members only when set, so that workloads without them keep their roots.
        for optional in ("cpu_millis", "pids"):
            if optional in limits:
                settings["limits"][optional] = limits[optional]
        if wl["kind"] == "container":
            if name not in images:
                sys.exit(f"workload {name}: give its resolved image with --image {name}=DIR")
            d = images[name]
            out[f"workload/{name}/code"] = open(os.path.join(d, "manifest.json"), "rb").read()
            out[f"workload/{name}/image-config"] = open(os.path.join(d, "config.json"), "rb").read()
            out[f"workload/{name}/runtime-spec"] = open(os.path.join(d, "runtime-spec.json"), "rb").read()
            ct = wl["container"]
            settings["image"] = wl["image"]
            settings["container"] = service(ct) | {
                "writable_rootfs": ct.get("writable_rootfs", False),
                "capabilities": ct.get("capabilities", []),
                "allow_host": ct.get("allow_host", False),
            }
        else:
            out[f"workload/{name}/code"] = read(wl["source"])
        if wl["kind"] == "process":
            pr = wl["process"]
            settings["process"] = service(pr)
            # user and group: members only when set.
            for optional in ("user", "group"):
                if optional in pr:
                    settings["process"][optional] = pr[optional]
        if "proxy" in wl:
            # The protocol always; every other field only when set.
            pr = dict(wl["proxy"])
            pr.setdefault("protocol", "http1")
            settings["proxy"] = pr
        ingress = wl.get("ingress")
        if ingress is not None:
            # The settings without the paths; the files' bytes are leaves of their own.
            committed = {"client_auth": ingress.get("client_auth", "none")}
            if ingress.get("client_names"):
                committed["client_names"] = ingress["client_names"]
            if "oidc" in ingress:
                o = ingress["oidc"]
                committed["oidc"] = {
                    "audience": o["audience"],
                    "required_claims": o.get("required_claims", {}),
                }
            settings["ingress"] = committed
            if "client_policy" in ingress:
                out[f"workload/{name}/client-policy"] = read(ingress["client_policy"])
            if "client_root" in ingress:
                out[f"workload/{name}/client-root"] = read(ingress["client_root"])
            if "client_trust_sim" in ingress:
                out[f"workload/{name}/client-trust-sim"] = sim_root(ingress["client_trust_sim"])
        if "decryption_key" in wl:
            settings["decryption_key"] = wl["decryption_key"]
        out[f"workload/{name}/settings"] = jcs(settings).encode()
    vault = c.get("vault")
    if vault is not None:
        committed = {
            "session_ttl_secs": vault.get("session_ttl_secs", 300),
            "max_sessions": vault.get("max_sessions", 1024),
        }
        if "hostname" in vault:
            committed["hostname"] = vault["hostname"]
        out["vault"] = jcs(committed).encode()
        if "client_root" in vault:
            out["vault/client-root"] = read(vault["client_root"])
        if "trust_sim" in vault:
            out["vault/trust-sim"] = sim_root(vault["trust_sim"])
        for pname, policy in vault.get("policy", {}).items():
            out[f"vault/policy/{pname}"] = jcs(vault_policy(policy, read)).encode()
    return out


def vault_policy(p, read):
    """A vault policy as its leaf commits it: empty lists and absent members left out, each
    block's appraisal policy file inline as text."""
    doc = {k: p[k] for k in ("resources", "keys") if p.get(k)}
    doc["allow"] = []
    for b in p["allow"]:
        block = {
            k: b[k]
            for k in ("workloads", "code_sha256", "tee", "measurements", "config_root")
            if b.get(k)
        }
        if "appraisal_policy" in b:
            block["appraisal_policy"] = read(b["appraisal_policy"]).decode()
        if "oidc" in b:
            block["oidc"] = {
                "audience": b["oidc"]["audience"],
                "required_claims": b["oidc"].get("required_claims", {}),
            }
        doc["allow"].append(block)
    return doc


def service(t):
    """The members a container's and a process's settings share."""
    health = {"start_timeout_secs": t.get("health", {}).get("start_timeout_secs", 30)}
    if "http_path" in t.get("health", {}):
        health["http_path"] = t["health"]["http_path"]
    return {
        "port": t["port"],
        "health": health,
        "restart": t.get("restart", "on-failure"),
        "max_restarts": t.get("max_restarts", 5),
    }


def main(argv):
    args, version, jwks, values, engine, images = [], "0.1.0", None, False, None, {}
    it = iter(argv)
    for a in it:
        if a == "--version":
            version = next(it)
        elif a == "--jwks":
            jwks = open(next(it), "rb").read()
        elif a == "--values":
            values = True
        elif a == "--engine":
            engine = open(next(it), "rb").read()
        elif a == "--image":
            name, _, d = next(it).partition("=")
            images[name] = d
        else:
            args.append(a)
    if len(args) != 1:
        sys.exit(__doc__)
    values_by_name = leaves(args[0], version, jwks, engine, images)
    names = sorted(values_by_name, key=lambda n: n.encode())
    out = []
    for n in names:
        v = values_by_name[n]
        leaf = {"name": n, "value_hash": sha256(v).hex(), "leaf_hash": leaf_hash(n, v).hex()}
        if values:
            leaf["value"] = v.hex()
        out.append(leaf)
    root = mth([leaf_hash(n, values_by_name[n]) for n in names])
    print(json.dumps({"format": "enclave-os-config-tree/v1", "root": root.hex(), "leaves": out}))


if __name__ == "__main__":
    main(sys.argv[1:])
