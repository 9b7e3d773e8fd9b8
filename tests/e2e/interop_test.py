#!/usr/bin/python3
"""A client on another gRPC stack (Debian's python3-grpcio) against a real
gateway: mutual TLS, the office API with generated stubs, health checking and
server reflection over raw bytes, and a revoked certificate refused.

Run by ctest with Debian's own python3 (not a pyenv one):
  /usr/bin/python3 interop_test.py SOURCE_DIR BUILD_DIR
Prints "N passed, N failed" and exits non-zero on any failure.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import grpc

SOURCE, BUILD = sys.argv[1], sys.argv[2]
work = tempfile.mkdtemp(prefix="casebridge-interop-")
pki = os.path.join(work, "pki")
subprocess.run([os.path.join(SOURCE, "certs/make-dev-pki"), pki], check=True,
               stdout=subprocess.DEVNULL)

# Python stubs from our .proto files.
stubs = os.path.join(work, "stubs")
os.makedirs(stubs)
protos = ["casebridge/v1/common.proto", "casebridge/v1/exchange.proto",
          "casebridge/v1/office.proto"]
subprocess.run(["protoc", "-I", os.path.join(SOURCE, "proto"), "--python_out", stubs,
                "--grpc_python_out", stubs,
                "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin"] + protos,
               check=True)
sys.path.insert(0, stubs)
from casebridge.v1 import common_pb2, office_pb2, office_pb2_grpc  # noqa: E402

config = os.path.join(work, "pk.toml")
with open(config, "w") as f:
    f.write(f"""country = "PK"
identity = "spiffe://pk.casebridge/gateway"
data_dir = "{work}/data"
log_level = "warning"
[listen]
office = "127.0.0.1:0"
peer = "127.0.0.1:0"
[tls]
cert = "{pki}/pk/gateway-chain.crt"
key = "{pki}/pk/gateway.key"
own_ca = "{pki}/pk/ca.crt"
peer_ca = "{pki}/cn/ca.crt"
crl_dir = "{pki}/crl"
[signing]
envelope_key = "{pki}/pk/signing/envelope.key"
checkpoint_key = "{pki}/pk/signing/checkpoint.key"
witness_key = "{pki}/pk/signing/witness.key"
[peer]
identity = "spiffe://cn.casebridge/gateway"
endpoint = "127.0.0.1:1"
envelope_public_key = "{pki}/cn/signing/envelope.pub"
checkpoint_public_key = "{pki}/cn/signing/checkpoint.pub"
witness_public_key = "{pki}/cn/signing/witness.pub"
offices = ["spiffe://cn.casebridge/office/mps-liaison"]
[[offices]]
identity = "spiffe://pk.casebridge/office/fia-liaison-desk"
name = "FIA liaison desk"
role = "liaison_officer"
""")

ready = os.path.join(work, "ready.json")
log = open(os.path.join(work, "gateway.log"), "w")
gateway = subprocess.Popen([os.path.join(BUILD, "server/casebridge-gateway"),
                            "--config", config, "--ready-file", ready], stderr=log)
deadline = time.monotonic() + 30
while not os.path.exists(ready):
    if gateway.poll() is not None or time.monotonic() > deadline:
        sys.exit("gateway did not start; see " + log.name)
    time.sleep(0.05)  # polling the condition, bounded by the deadline
with open(ready) as f:
    port = json.load(f)["office_port"]

passed, failed = 0, 0


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
        print(f"PASS {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def channel(stem):
    def read(path):
        with open(os.path.join(pki, path), "rb") as f:
            return f.read()
    creds = grpc.ssl_channel_credentials(read("pk/ca.crt"), read(stem + ".key"),
                                         read(stem + ".crt"))
    return grpc.secure_channel(f"localhost:{port}", creds)


try:
    fia = channel("pk/offices/fia-liaison-desk")
    office = office_pb2_grpc.OfficeServiceStub(fia)

    who = office.WhoAmI(office_pb2.WhoAmIRequest(), timeout=10)
    check("whoami identity", who.identity == "spiffe://pk.casebridge/office/fia-liaison-desk",
          who.identity)
    check("whoami role", who.role == office_pb2.ROLE_LIAISON_OFFICER)

    draft = common_pb2.CaseReference(
        local_reference="FIR 9/2026", category=common_pb2.CASE_CATEGORY_FORCED_LABOUR,
        summary="护照被没收 — پاسپورٹ ضبط کر لیے گئے", handling_code=common_pb2.HANDLING_CODE_H0,
        evaluation=common_pb2.Evaluation(
            source_reliability=common_pb2.SOURCE_RELIABILITY_A,
            information_accuracy=common_pb2.INFORMATION_ACCURACY_1))
    opened = office.OpenCase(office_pb2.OpenCaseRequest(case_reference=draft), timeout=10)
    expected_id = f"PK-{time.gmtime().tm_year:04d}-000001"
    check("open case minted id", opened.case_reference.exchange_id == expected_id,
          opened.case_reference.exchange_id)
    got = office.GetCase(office_pb2.GetCaseRequest(
        exchange_id=opened.case_reference.exchange_id), timeout=10)
    check("text round-trips", got.case_reference.summary == draft.summary)

    try:
        office.OpenCase(office_pb2.OpenCaseRequest(case_reference=common_pb2.CaseReference()),
                        timeout=10)
        check("empty case refused", False, "call succeeded")
    except grpc.RpcError as e:
        check("empty case refused", e.code() == grpc.StatusCode.INVALID_ARGUMENT
              and e.details().startswith("case_reference."), f"{e.code()} {e.details()}")

    health = fia.unary_unary("/grpc.health.v1.Health/Check")
    answer = health(b"", timeout=10)
    check("health SERVING", answer == b"\x08\x01", repr(answer))

    # ServerReflectionRequest{list_services: ""} is field 7, empty string.
    reflect = fia.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    replies = list(reflect(iter([b"\x3a\x00"]), timeout=10))
    listing = b"".join(replies)
    for service in (b"casebridge.v1.OfficeService", b"casebridge.v1.AuditService",
                    b"grpc.health.v1.Health"):
        check(f"reflection lists {service.decode()}", service in listing)
    check("reflection hides peer API on office port", b"casebridge.v1.PeerService" not in listing)

    revoked = office_pb2_grpc.OfficeServiceStub(channel("bad/revoked"))
    try:
        revoked.WhoAmI(office_pb2.WhoAmIRequest(), timeout=10)
        check("revoked refused", False, "call succeeded")
    except grpc.RpcError as e:
        check("revoked refused", e.code() == grpc.StatusCode.UNAVAILABLE, str(e.code()))
finally:
    gateway.send_signal(signal.SIGTERM)
    try:
        code = gateway.wait(timeout=30)
    except subprocess.TimeoutExpired:
        gateway.kill()
        code = -1
    check("gateway exits 0 on SIGTERM", code == 0, str(code))

log.close()
print(f"{passed} passed, {failed} failed")
if failed:
    # Kept for the failure's diagnosis: the gateway's log and data.
    print(f"kept {work} (gateway.log, data, pki)")
    sys.exit(1)
# The dev PKI's private keys and the gateway's data go with the run.
shutil.rmtree(work)
