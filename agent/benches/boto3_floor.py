"""The in-process floor of the agent's start-to-exec bench (agent/benches/start.rs).

One Python process with warm boto3 clients (session, endpoints, connection
pool and credentials made once, before the first timed round) does what the
agent does for one start, minus starting a process: for each service, the
GetParametersByPath pages of 10 (not recursive, with decryption), one KMS
Decrypt per distinct wrapped data key (the configured key, the envelope's
encryption context), and AES-256-GCM opening of every value with the
envelope's associated data (docs/envelope.md). It checks that every value
opened, so a floor that skipped work would fail instead of looking fast.

Usage: boto3_floor.py ENDPOINT PREFIX ENVIRONMENT SERVICES KMS_KEY
(SERVICES comma-separated; region and credentials from the environment).
Prints "ready N" after one untimed fetch of N values, then for each line
"go" on stdin, one line "MILLISECONDS N" (time.perf_counter around the
whole fetch). Never prints a value.
"""

import base64
import struct
import sys
import time

import boto3
from botocore.config import Config
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DOMAIN = b"sidekey sk2\0"


def u16_field(b):
    return struct.pack(">H", len(b)) + b


def open_envelope(text, environment, service, key, unwrap):
    if not text.startswith("sk2."):
        raise SystemExit(f"{key}: not an sk2. envelope")
    body = text[4:]
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    at = 1 + 8 + 8
    (id_len,) = struct.unpack_from(">H", raw, at)
    at += 2 + id_len
    (wrapped_len,) = struct.unpack_from(">H", raw, at)
    at += 2
    wrapped = raw[at : at + wrapped_len]
    at += wrapped_len
    nonce = raw[at : at + 12]
    at += 12
    header = raw[:at]
    aad = (
        DOMAIN
        + header
        + u16_field(environment.encode())
        + u16_field(service.encode())
        + u16_field(key.encode())
    )
    data_key = unwrap(wrapped, service)
    return AESGCM(data_key).decrypt(nonce, raw[at:], aad)


def main():
    endpoint, prefix, environment, services, kms_key = sys.argv[1:6]
    services = services.split(",")
    config = Config(retries={"mode": "standard"})
    session = boto3.session.Session()
    ssm = session.client("ssm", endpoint_url=endpoint, config=config)
    kms = session.client("kms", endpoint_url=endpoint, config=config)

    def fetch():
        keys = {}

        def unwrap(wrapped, service):
            if wrapped not in keys:
                keys[wrapped] = kms.decrypt(
                    CiphertextBlob=wrapped,
                    KeyId=kms_key,
                    EncryptionContext={
                        "sidekey:environment": environment,
                        "sidekey:service": service,
                    },
                )["Plaintext"]
            return keys[wrapped]

        opened = 0
        for service in services:
            path = f"/{prefix}/{environment}/{service}/"
            args = {"Path": path, "Recursive": False, "WithDecryption": True, "MaxResults": 10}
            while True:
                page = ssm.get_parameters_by_path(**args)
                for p in page["Parameters"]:
                    key = p["Name"].rsplit("/", 1)[1]
                    value = open_envelope(p["Value"], environment, service, key, unwrap)
                    opened += 1 if value else 0
                token = page.get("NextToken")
                if not token:
                    break
                args["NextToken"] = token
        return opened

    print(f"ready {fetch()}", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        start = time.perf_counter()
        n = fetch()
        ms = (time.perf_counter() - start) * 1e3
        print(f"{ms:.3f} {n}", flush=True)


if __name__ == "__main__":
    main()
