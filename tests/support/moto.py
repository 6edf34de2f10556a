#!/usr/bin/env python3
"""Start moto_server for a test and print how to reach it, as one JSON line.

    moto.py --port PORT --log FILE [--sigcheck] [--host ADDR]

With --sigcheck moto verifies SigV4 (INITIAL_NO_AUTH_ACTION_COUNT=3): the three free
calls create an IAM user with an allow-all inline policy and an access key, which are
printed; after that a wrong secret is refused as AWS would (S3 403, EC2 401).
Without it any key works (moto cannot check presigned URLs while checking is on).

The server keeps running after this script exits; the caller kills "pid" when done.
Output: {"pid": N, "endpoint": "http://127.0.0.1:PORT", "access_key": .., "secret_key": ..}
"""
import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request


def wait_up(endpoint, proc, deadline):
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("moto_server exited with %s" % proc.returncode)
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).read()
            return
        except Exception:
            time.sleep(0.05)
    sys.exit("moto_server did not answer within 60 s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (a test network's host side)")
    ap.add_argument("--log", required=True)
    ap.add_argument("--sigcheck", action="store_true")
    a = ap.parse_args()

    env = dict(os.environ)
    if a.sigcheck:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    env.pop("AWS_ACCESS_KEY_ID", None)
    env.pop("AWS_SECRET_ACCESS_KEY", None)
    log = open(a.log, "ab")
    proc = subprocess.Popen(["moto_server", "-H", a.host, "-p", str(a.port)],
                            stdout=log, stderr=log, env=env, start_new_session=True)
    endpoint = "http://%s:%d" % (a.host, a.port)
    wait_up(endpoint, proc, time.monotonic() + 60)

    key, secret = "AKIAXMIGRATETEST0001", "moto-does-not-check-this-secret-0001"
    if a.sigcheck:
        import boto3  # shipped with moto on the machine image
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="xmigrate")
        iam.put_user_policy(UserName="xmigrate", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        k = iam.create_access_key(UserName="xmigrate")["AccessKey"]
        key, secret = k["AccessKeyId"], k["SecretAccessKey"]
    print(json.dumps({"pid": proc.pid, "endpoint": endpoint, "access_key": key,
                      "secret_key": secret}), flush=True)


if __name__ == "__main__":
    main()
