#!/usr/bin/env python3
"""Drives PyPI's py-eureka-client, unchanged and through its module-level API, against a
Eureka server, and prints one line per step for tests/dev_registry_eureka.rs to assert:
`OK <step> ...` on success, `FAIL <step>: <why>` (exit status 1) on the first failure.

Usage: client_check.py EUREKA_URL [--call APP PATH EXPECTED]

EUREKA_URL is the service URL (`http://127.0.0.1:PORT/eureka`). The client registers itself
(app PY-CHECK), renews every second, changes its status, has the override removed (its next
heartbeat gets 404 and it re-registers, as Eureka clients do), discovers itself and a peer
over Eureka's XML + gzip reads, calls the peer at the address it discovered, and cancels on
stop. With --call, it also calls PATH on an instance of APP it discovered (e.g. one that
syncer mirrored from a ServiceComb data centre) and checks the body contains EXPECTED.

Steps are checked against the server's JSON API with urllib, not through the client.
"""

import gzip
import http.server
import json
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ElementTree

import py_eureka_client.eureka_client as eureka_client
from py_eureka_client import eureka_basic

APP = "py-check"
PORT = 9099
INSTANCE_ID = f"127.0.0.1:{APP}:{PORT}"
PEER_APP = "py-peer"
DEADLINE_SECS = 20


def ok(step, detail=""):
    print(f"OK {step} {detail}".rstrip(), flush=True)


def fail(step, why):
    print(f"FAIL {step}: {why}", flush=True)
    sys.exit(1)


def get_json(url, path):
    req = urllib.request.Request(url + path, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as res:
            return res.status, json.loads(res.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


def instance(url, app, iid):
    status, body = get_json(url, f"/apps/{app.upper()}/{urllib.request.quote(iid)}")
    return body["instance"] if status == 200 else None


def wait_for(step, probe):
    """Polls probe() until it returns something truthy, or fails the step."""
    deadline = time.monotonic() + DEADLINE_SECS
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.05)
    fail(step, f"not within {DEADLINE_SECS} s (last: {last!r})")


class Hello(http.server.BaseHTTPRequestHandler):
    """The peer service: answers every GET with its name."""

    def do_GET(self):
        body = f"hello from {PEER_APP} at {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def register_peer(url, port):
    """Registers the peer with a plain JSON POST, as another client would."""
    body = {"instance": {
        "instanceId": f"127.0.0.1:{PEER_APP}:{port}", "hostName": "127.0.0.1",
        "app": PEER_APP.upper(), "ipAddr": "127.0.0.1", "status": "UP",
        "port": {"$": port, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
                           "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
        "vipAddress": PEER_APP, "secureVipAddress": PEER_APP}}
    req = urllib.request.Request(url + f"/apps/{PEER_APP}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as res:
        if res.status != 204:
            fail("peer", f"register answered {res.status}")


def main():
    if len(sys.argv) not in (2, 6) or (len(sys.argv) == 6 and sys.argv[2] != "--call"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    url = sys.argv[1].rstrip("/")

    # 1. Register (init registers, pulls the full registry and starts the heartbeat thread).
    eureka_client.init(eureka_server=url, app_name=APP, instance_id=INSTANCE_ID,
                       instance_host="127.0.0.1", instance_ip="127.0.0.1", instance_port=PORT,
                       renewal_interval_in_secs=1, duration_in_secs=10,
                       metadata={"zone": "z1", "owner": "check"})
    client = eureka_client.get_client()
    loop = eureka_client.get_event_loop()
    inst = wait_for("register", lambda: instance(url, APP, INSTANCE_ID))
    if inst["status"] != "UP" or inst["port"]["$"] != PORT or inst["metadata"].get("owner") != "check":
        fail("register", f"stored as {inst}")
    ok("registered", f"{inst['app']}/{inst['instanceId']}")

    # 2. Renew: the heartbeat thread moves lastRenewalTimestamp.
    first = inst["leaseInfo"]["lastRenewalTimestamp"]
    wait_for("renew", lambda: (instance(url, APP, INSTANCE_ID) or {}).get("leaseInfo", {})
             .get("lastRenewalTimestamp", 0) > first)
    ok("renewed")

    # 3. Status override through the client, then its removal: UNKNOWN, heartbeat 404, the
    #    client re-registers UP.
    loop.run_until_complete(client.status_update("OUT_OF_SERVICE"))
    inst = instance(url, APP, INSTANCE_ID)
    if not inst or inst["status"] != "OUT_OF_SERVICE" or inst["overriddenStatus"] != "OUT_OF_SERVICE":
        fail("status", f"after status_update: {inst}")
    ok("status OUT_OF_SERVICE")
    loop.run_until_complete(client.delete_status_override())
    wait_for("reregister", lambda: (instance(url, APP, INSTANCE_ID) or {}).get("status") == "UP")
    ok("override removed, re-registered UP")

    # 4. Discovery: itself (XML, gzip) and a peer, which it then calls at the address it got.
    peer = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=peer.serve_forever, daemon=True).start()
    register_peer(url, peer.server_address[1])

    def sees(app, iid=None):
        apps = client.applications
        if apps is None:
            return None
        found = apps.get_application(app.upper()).up_instances
        return [i for i in found if iid is None or i.instanceId == iid]

    me = wait_for("discover", lambda: sees(APP, INSTANCE_ID))[0]
    if me.port.port != PORT or not me.port.enabled or me.metadata.get("zone") != "z1":
        fail("discover", f"parsed as port {me.port.port} {me.port.enabled}, metadata {me.metadata}")
    ok("discovered itself")
    wait_for("discover peer", lambda: sees(PEER_APP))
    answer = eureka_client.do_service(PEER_APP.upper(), "/hello")
    if f"hello from {PEER_APP}" not in answer:
        fail("call peer", f"answered {answer!r}")
    ok("called peer", answer)

    # The wire format the client relied on: XML when Accept lacks json, gzip on /apps.
    req = urllib.request.Request(url + "/apps/", headers={"Accept-Encoding": "gzip, deflate"})
    with urllib.request.urlopen(req, timeout=5) as res:
        if res.headers.get("Content-Encoding") != "gzip":
            fail("xml+gzip", f"Content-Encoding {res.headers.get('Content-Encoding')!r}")
        apps = eureka_basic._build_applications(ElementTree.fromstring(gzip.decompress(res.read())))
    if apps is None or not apps.get_application(APP.upper()).instances:
        fail("xml+gzip", "no PY-CHECK in the XML registry")
    ok("xml+gzip", f"hash {apps.apps__hashcode}")

    if len(sys.argv) == 6:
        app, path, expected = sys.argv[3], sys.argv[4], sys.argv[5]
        wait_for(f"discover {app}", lambda: sees(app))
        answer = eureka_client.do_service(app.upper(), path)
        if expected not in answer:
            fail(f"call {app}", f"answered {answer!r}")
        ok(f"called {app}", answer)

    # 5. Cancel: stop() re-registers DOWN, then cancels. The client's heartbeat thread keeps
    #    running after stop() and registers again (UP) on its next beat, so a record found
    #    right after stop() must be such a fresh UP registration, not the DOWN one left over
    #    by a failed cancel. (The Rust test also checks the DELETE answered 200.)
    before = instance(url, APP, INSTANCE_ID)
    eureka_client.stop()
    after = instance(url, APP, INSTANCE_ID)
    if after is not None and not (
            after["status"] == "UP"
            and after["leaseInfo"]["registrationTimestamp"] > before["leaseInfo"]["registrationTimestamp"]):
        fail("cancel", f"instance still there: {after}")
    ok("cancelled")
    peer.shutdown()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
