#!/usr/bin/env python3
"""Independent ZeroMQ peers (pyzmq) for the zmq-key-rotate tests and benchmark.

Subcommands:
  gencert DIR NAME           write a certificate pair with pyzmq's zmq.auth
  loadcert FILE              print {"public": ..., "secret": ...} as loaded by pyzmq
  sub ...                    subscriber; with --follow it hands over to each new
                             key generation announced on the events socket
  pub ...                    numbered publisher at a fixed rate; --follow as above
  proxy ...                  a pyzmq CURVE forwarder (zmq.proxy XSUB->XPUB), the
                             benchmark's baseline

Following a rotation (what a service does, see docs/zmq-key-rotate.md):
  1. receive the event, verify its minisign signature with events.pub (the
     Debian minisign CLI here), ignore it unless it is newer;
  2. wait a random jitter, then open a second socket with the new server key
     to the event's endpoint, keeping the old one;
  3. subscriber: the bus sends the same stream in the same order to both
     generations, so deliver from the old socket up to the first message the
     new one received, then close the old socket and continue on the new one;
     publisher: wait until the new socket is subscribed (XPUB sees the bus's
     subscription), then send on the new socket and close the old one with a
     linger so nothing queued is dropped.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import zmq
import zmq.auth
import zmq.utils.monitor

TOPIC = b"dickbox.key.rotated"


def load(path):
    public, secret = zmq.auth.load_certificate(path)
    return public, secret


def store_current(keys, identity):
    """(generation, server public key) of the store's current link."""
    path = os.path.join(keys, identity, "current")
    public, _ = load(path)
    with open(path) as f:
        gen = next(
            int(line.split("=", 1)[1].strip().strip('"'))
            for line in f
            if line.strip().startswith("generation")
        )
    return gen, public


def verify_event(events_pub, json_bytes, sig_bytes):
    with tempfile.TemporaryDirectory() as d:
        m = os.path.join(d, "event.json")
        with open(m, "wb") as f:
            f.write(json_bytes)
        with open(m + ".minisig", "wb") as f:
            f.write(sig_bytes)
        r = subprocess.run(
            ["minisign", "-V", "-q", "-p", events_pub, "-m", m],
            capture_output=True,
        )
        return r.returncode == 0


def curve_client(ctx, kind, client_cert, server_key):
    s = ctx.socket(kind)
    public, secret = load(client_cert)
    s.curve_publickey = public
    s.curve_secretkey = secret
    s.curve_serverkey = server_key
    s.linger = 1000
    return s


class Events:
    def __init__(self, ctx, args):
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, TOPIC)
        self.sock.connect("ipc://" + args.events_socket)
        self.events_pub = args.events_pub
        self.forged = 0

    def take(self):
        frames = self.sock.recv_multipart()
        if len(frames) != 3 or frames[0] != TOPIC:
            self.forged += 1
            return None
        if not verify_event(self.events_pub, frames[1], frames[2]):
            self.forged += 1
            return None
        return json.loads(frames[1])


def cmd_gencert(args):
    os.makedirs(args.dir, exist_ok=True)
    pub, sec = zmq.auth.create_certificates(args.dir, args.name)
    print(json.dumps({"public": pub, "secret": sec}))


def cmd_loadcert(args):
    public, secret = load(args.file)
    print(json.dumps({"public": public.decode(), "secret": secret.decode() if secret else None}))


def cmd_sub(args):
    ctx = zmq.Context()
    gen, server = store_current(args.keys, args.identity)
    endpoint = "ipc://%s/bus/%d/sub.sock" % (args.runtime, gen)
    if args.server_key_file:
        server, _ = load(args.server_key_file)
    a = curve_client(ctx, zmq.SUB, args.cert, server)
    a.setsockopt(zmq.SUBSCRIBE, b"")
    mon = a.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
                               | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
    a.connect(endpoint)
    events = Events(ctx, args) if args.follow else None
    received = []
    switches = []
    log = {"handshake_ok": None, "auth_failed": None, "disconnected": None, "last_at": None}
    b = None  # (socket, generation, buffered messages) of the new generation
    a_down = False  # the old socket lost its connection (bus restarted, key retired)
    deadline = time.time() + args.duration
    ready_file = args.ready
    poller = zmq.Poller()
    poller.register(a, zmq.POLLIN)
    poller.register(mon, zmq.POLLIN)
    if events:
        poller.register(events.sock, zmq.POLLIN)
    done = False
    while not done and time.time() < deadline:
        ready = dict(poller.poll(50))
        if mon in ready:
            ev = zmq.utils.monitor.recv_monitor_message(mon)
            kind = ev["event"]
            now = time.time()
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED and log["handshake_ok"] is None:
                log["handshake_ok"] = now
                if ready_file:
                    open(ready_file, "w").close()
            elif kind in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL):
                log["auth_failed"] = now
                if ready_file:
                    open(ready_file, "w").close()
            elif kind == zmq.EVENT_DISCONNECTED:
                a_down = True
                if log["disconnected"] is None and b is None:
                    log["disconnected"] = now
                    if not args.follow:
                        done = True
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                a_down = False
        if events and events.sock in ready:
            ev = events.take()
            if ev and ev["identity"] == args.identity and ev["generation"] > gen and b is None:
                time.sleep(random.uniform(0, args.jitter_ms / 1000.0))
                nb = curve_client(ctx, zmq.SUB, args.cert, ev["public_key"].encode())
                nb.setsockopt(zmq.SUBSCRIBE, b"")
                nb.connect(ev["endpoint"])
                poller.register(nb, zmq.POLLIN)
                b = (nb, ev["generation"], [])
        if b is not None and b[0] in ready:
            while True:
                try:
                    b[2].append(b[0].recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
        switch_to = None  # index into b's buffer to continue from
        if b is not None and b[2]:
            first = b[2][0]
            last = received[-1].encode() if received else None
            if last is not None and first.decode() in received[-100000:]:
                # The old socket is already past where the new one starts:
                # continue right after the last message delivered, once the
                # new socket has it too (otherwise wait, not reading `a`).
                if last in b[2]:
                    switch_to = b[2].index(last) + 1
        if switch_to is None and b is not None and b[2] and a_down and not a.poll(0):
            # The old connection is gone (the bus restarted on the new key):
            # nothing more can come from it, continue on the new one.
            switch_to = 0
        if switch_to is None and a in ready and not (
            b is not None and b[2] and received and b[2][0].decode() in received[-100000:]
        ):
            while True:
                try:
                    msg = a.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if b is not None and b[2] and msg == b[2][0]:
                    # The old socket reached the first message of the new one.
                    switch_to = 0
                    break
                received.append(msg.decode())
                log["last_at"] = time.time()
                if msg == b"END":
                    done = True
                    break
        if switch_to is not None:
            poller.unregister(a)
            poller.unregister(mon)
            a.close(linger=0)
            mon.close(linger=0)
            a = b[0]
            mon = a.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
            poller.register(mon, zmq.POLLIN)
            a_down = False
            gen = b[1]
            switches.append({"generation": gen, "at": len(received)})
            for m in b[2][switch_to:]:
                received.append(m.decode())
                if m == b"END":
                    done = True
            b = None
    out = {
        "received": [r for r in received if r != "END"],
        "ended": "END" in received,
        "switches": switches,
        "generation": gen,
        "forged_events": events.forged if events else 0,
        **log,
    }
    with open(args.out, "w") as f:
        json.dump(out, f)
    ctx.destroy(linger=0)


def wait_subscribed(sock, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if sock.poll(50, zmq.POLLIN):
            sock.recv()
            return True
    return False


def cmd_pub(args):
    ctx = zmq.Context()
    gen, server = store_current(args.keys, args.identity)
    a = curve_client(ctx, zmq.XPUB, args.cert, server)
    a.connect("ipc://%s/bus/%d/pub.sock" % (args.runtime, gen))
    if not wait_subscribed(a, 10):
        sys.exit("pub: bus never subscribed")
    events = Events(ctx, args) if args.follow else None
    pending = None  # (socket, generation) being brought up
    interval = 1.0 / args.rate
    start = time.time()
    switches = []
    for i in range(args.count):
        target = start + i * interval
        while True:
            left = target - time.time()
            if events and events.sock.poll(0, zmq.POLLIN):
                ev = events.take()
                if ev and ev["identity"] == args.identity and ev["generation"] > gen and pending is None:
                    nb = curve_client(ctx, zmq.XPUB, args.cert, ev["public_key"].encode())
                    nb.connect(ev["publish_endpoint"])
                    pending = (nb, ev["generation"], time.time() + random.uniform(0, args.jitter_ms / 1000.0))
            if pending and time.time() >= pending[2] and pending[0].poll(0, zmq.POLLIN):
                pending[0].recv()
                a.close(linger=5000)
                a, gen = pending[0], pending[1]
                switches.append({"generation": gen, "at": i})
                pending = None
            if left <= 0:
                break
            time.sleep(min(left, 0.001))
        a.send(b"%d" % i)
    time.sleep(0.2)
    a.send(b"END")
    time.sleep(0.5)
    a.close(linger=5000)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"sent": args.count, "switches": switches, "generation": gen}, f)
    ctx.destroy(linger=2000)


def cmd_proxy(args):
    ctx = zmq.Context()
    _, secret = load(args.server_secret)
    auth = None
    from zmq.auth.thread import ThreadAuthenticator
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=args.clients)
    xsub = ctx.socket(zmq.XSUB)
    xpub = ctx.socket(zmq.XPUB)
    for s in (xsub, xpub):
        s.curve_server = True
        s.curve_secretkey = secret
    xsub.bind(args.pub)
    xpub.bind(args.sub)
    if args.ready:
        open(args.ready, "w").close()
    try:
        zmq.proxy(xsub, xpub)
    except (KeyboardInterrupt, zmq.ContextTerminated):
        pass


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = p.add_subparsers(dest="cmd", required=True)
    g = sp.add_parser("gencert")
    g.add_argument("dir")
    g.add_argument("name")
    g = sp.add_parser("loadcert")
    g.add_argument("file")
    for name in ("sub", "pub"):
        g = sp.add_parser(name)
        g.add_argument("--keys", required=True)
        g.add_argument("--runtime", required=True)
        g.add_argument("--identity", default="bus")
        g.add_argument("--cert", required=True, help="client secret certificate")
        g.add_argument("--events-socket", required=True)
        g.add_argument("--events-pub", required=True)
        g.add_argument("--follow", action="store_true")
        g.add_argument("--jitter-ms", type=float, default=50)
        g.add_argument("--out")
        g.add_argument("--ready")
    sub = sp.choices["sub"]
    sub.add_argument("--duration", type=float, default=30)
    sub.add_argument("--server-key-file")
    pub = sp.choices["pub"]
    pub.add_argument("--rate", type=float, default=500)
    pub.add_argument("--count", type=int, default=1000)
    g = sp.add_parser("proxy")
    g.add_argument("--server-secret", required=True)
    g.add_argument("--clients", required=True)
    g.add_argument("--pub", required=True)
    g.add_argument("--sub", required=True)
    g.add_argument("--ready")
    args = p.parse_args()
    {"gencert": cmd_gencert, "loadcert": cmd_loadcert, "sub": cmd_sub, "pub": cmd_pub,
     "proxy": cmd_proxy}[args.cmd](args)


if __name__ == "__main__":
    main()
