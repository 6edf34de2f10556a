"""A Google OAuth2 access token from a service-account key, as Google's client libraries
get one (an RS256-signed JWT exchanged at the key's token_uri): for tests and benchmarks
that talk to tests/fakes/gcp.py as a client would. Needs `cryptography` (on the machine
image beside moto)."""
import base64
import json
import time
import urllib.parse
import urllib.request

STORAGE_SCOPE = "https://www.googleapis.com/auth/devstorage.full_control"
CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def _b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def token(key, scope=CLOUD_SCOPE):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    pk = serialization.load_pem_private_key(key["private_key"].encode(), None)
    now = int(time.time())
    head = _b64(json.dumps({"alg": "RS256", "typ": "JWT",
                            "kid": key["private_key_id"]}).encode())
    claims = _b64(json.dumps({"iss": key["client_email"], "aud": key["token_uri"],
                              "iat": now, "exp": now + 3600, "scope": scope}).encode())
    signing = head + b"." + claims
    jwt = signing + b"." + _b64(pk.sign(signing, padding.PKCS1v15(), hashes.SHA256()))
    body = urllib.parse.urlencode({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                   "assertion": jwt}).encode()
    req = urllib.request.Request(key["token_uri"], data=body, headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["access_token"]


def new_key(path, project, email):
    """A throwaway service-account key file (RSA 2048 from openssl), mode 0600."""
    import os
    import secrets
    import subprocess
    pem = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                          "rsa_keygen_bits:2048"], check=True, capture_output=True,
                         text=True).stdout
    key = {"type": "service_account", "project_id": project,
           "private_key_id": secrets.token_hex(20), "private_key": pem,
           "client_email": email, "client_id": "100000000000000000042"}
    with open(path, "w") as f:
        json.dump(key, f)
    os.chmod(path, 0o600)
    return key
