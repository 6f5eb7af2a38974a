#!/usr/bin/env python3
"""Benchmark of the zmq-key-rotate bus (issue #6). Not a timed test: it prints
figures and ratios against a baseline measured in the same run.

1. Throughput: messages per second from one publisher to one subscriber through
   our bus, against a pyzmq CURVE forwarder (zmq.proxy between XSUB and XPUB,
   with pyzmq's ZAP authenticator) on the same key, clients and message size.
   Rounds alternate between the two; the median of each is compared. The
   Python client may be the bottleneck of both, so the forwarders' own CPU time
   per message is reported too (less sensitive to other load on the host).
2. Loss across rotations: 50 subscribers and 1 publisher that follow rotations,
   a fixed rate, 10 rotations; counts lost and duplicated messages.

Usage: bench.py [--bin target/release/zmq-key-rotate] [--rounds 3] [--messages 100000]
                [--client python | target/release/examples/bench_client]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "peer.py")
PY = sys.executable


def tool(args, root, extra_env=None, **kw):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICKBOX_")}
    env.update({
        "DICKBOX_CONFIG": os.path.join(root, "dickbox.yml"),
        "DICKBOX_ZMQ_KEY_GROUP": "",
        "DICKBOX_ZMQ_WATCH_INTERVAL": "50ms",
        "RUST_LOG": "warn",
    })
    env.update(extra_env or {})
    base = [ARGS.bin, "--keys-dir", root + "/keys", "--runtime-dir", root + "/run",
            "--metrics-dir", root + "/metrics", "--grace", "4s", "--retention", "4s"]
    return base + args, env


def run_tool(args, root):
    cmd, env = tool(args, root)
    return subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout


def start_tool(args, root):
    cmd, env = tool(args, root)
    return subprocess.Popen(cmd, env=env, stderr=open(root + "/bus.log", "w"))


def wait_path(path, limit=10):
    end = time.time() + limit
    while not os.path.exists(path):
        if time.time() > end:
            sys.exit("bench: %s did not appear" % path)
        time.sleep(0.02)


def client(ctx, kind, cert, server_public):
    s = ctx.socket(kind)
    pub, sec = zmq.auth.load_certificate(cert)
    s.curve_publickey, s.curve_secretkey, s.curve_serverkey = pub, sec, server_public
    s.sndhwm = s.rcvhwm = 0
    s.linger = 0
    return s


def measure(pub_ep, sub_ep, server_public, root, n, size):
    if ARGS.client != "python":
        out = subprocess.run([ARGS.client, pub_ep, sub_ep, root + "/keys/bus/bus-1.key",
                              root + "/peers/pub.key_secret", root + "/peers/sub.key_secret",
                              str(n), str(size)], check=True, capture_output=True, text=True)
        return float(out.stdout)
    return measure_python(pub_ep, sub_ep, server_public, root, n, size)


def measure_python(pub_ep, sub_ep, server_public, root, n, size):
    """One publisher and one subscriber in this process's two sockets; the
    publisher paces itself by the subscriber's progress so no high-water mark
    drops anything; returns messages per second."""
    ctx = zmq.Context()
    sub = client(ctx, zmq.SUB, root + "/peers/sub.key_secret", server_public)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(sub_ep)
    pub = client(ctx, zmq.XPUB, root + "/peers/pub.key_secret", server_public)
    pub.connect(pub_ep)
    if not pub.poll(5000):
        sys.exit("bench: publisher never subscribed at " + pub_ep)
    pub.recv()
    # Warm up until the subscriber's path is live.
    while not sub.poll(10):
        pub.send(b"w")
    while sub.poll(100):
        sub.recv()
    body = b"x" * size
    window = 500  # messages in flight at most (below every HWM)
    got = 0
    start = time.perf_counter()
    sent = 0
    while got < n:
        while sent < n and sent - got < window:
            pub.send(body)
            sent += 1
        if sub.poll(2000):
            while True:
                try:
                    sub.recv(zmq.NOBLOCK)
                    got += 1
                except zmq.Again:
                    break
        else:
            sys.exit("bench: stalled at %d of %d" % (got, n))
    elapsed = time.perf_counter() - start
    ctx.destroy(linger=0)
    return n / elapsed


def cpu_seconds(pid):
    """User + system CPU time of a process (and its threads) so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(root):
    run_tool(["rotate"], root)
    for name in ("pub", "sub"):
        subprocess.run([PY, PEER, "gencert", root + "/peers", name], check=True, capture_output=True)
        shutil.copy(root + "/peers/%s.key" % name, root + "/keys/bus/clients/")
    server_public, _ = zmq.auth.load_certificate(root + "/keys/bus/current")
    ours, theirs, ours_cpu, theirs_cpu = [], [], [], []
    for r in range(ARGS.rounds):
        bus = start_tool(["bus"], root)
        gen = os.readlink(root + "/keys/bus/current").split("-")[-1].split(".")[0]
        d = root + "/run/bus/" + gen
        wait_path(d + "/sub.sock")
        c0 = cpu_seconds(bus.pid)
        ours.append(measure("ipc://" + d + "/pub.sock", "ipc://" + d + "/sub.sock",
                            server_public, root, ARGS.messages, ARGS.size))
        ours_cpu.append(ARGS.messages / max(cpu_seconds(bus.pid) - c0, 0.01))
        bus.terminate()
        bus.wait()
        ready = root + "/proxy.ready"
        if os.path.exists(ready):
            os.remove(ready)
        proxy = subprocess.Popen([PY, PEER, "proxy", "--server-secret",
                                  root + "/keys/bus/bus-1.key_secret",
                                  "--clients", root + "/keys/bus/clients",
                                  "--pub", "ipc://" + root + "/px-pub.sock",
                                  "--sub", "ipc://" + root + "/px-sub.sock", "--ready", ready])
        wait_path(ready)
        c0 = cpu_seconds(proxy.pid)
        theirs.append(measure("ipc://" + root + "/px-pub.sock", "ipc://" + root + "/px-sub.sock",
                              server_public, root, ARGS.messages, ARGS.size))
        theirs_cpu.append(ARGS.messages / max(cpu_seconds(proxy.pid) - c0, 0.01))
        proxy.kill()
        proxy.wait()
        print("round %d: bus %.0f msg/s (%.0f msg per CPU-s), pyzmq proxy %.0f msg/s "
              "(%.0f msg per CPU-s)" % (r + 1, ours[-1], ours_cpu[-1], theirs[-1], theirs_cpu[-1]),
              flush=True)
    o, t = statistics.median(ours), statistics.median(theirs)
    print("throughput (%d B messages, %s client, median of %d): bus %.0f msg/s, "
          "pyzmq proxy %.0f msg/s, ratio %.2fx"
          % (ARGS.size, "python" if ARGS.client == "python" else "rust", ARGS.rounds, o, t, o / t))
    oc, tc = statistics.median(ours_cpu), statistics.median(theirs_cpu)
    print("forwarder efficiency (messages per CPU-second of the forwarder process, median): "
          "bus %.0f, pyzmq proxy %.0f, ratio %.2fx" % (oc, tc, oc / tc))
    return o, t


def rotations(root):
    run_tool(["rotate"], root)
    for name in ("pub", "sub"):
        subprocess.run([PY, PEER, "gencert", root + "/peers", name], check=True, capture_output=True)
        shutil.copy(root + "/peers/%s.key" % name, root + "/keys/bus/clients/")
    bus = start_tool(["bus"], root)
    wait_path(root + "/run/bus/current/sub.sock")
    common = ["--keys", root + "/keys", "--runtime", root + "/run",
              "--events-socket", root + "/run/zmq-events.sock",
              "--events-pub", root + "/keys/events.pub", "--follow", "--jitter-ms", "200"]
    subs = []
    for i in range(ARGS.subscribers):
        out, ready = root + "/sub%d.json" % i, root + "/sub%d.ready" % i
        subs.append((subprocess.Popen([PY, PEER, "sub", *common, "--cert", root + "/peers/sub.key_secret",
                                       "--out", out, "--ready", ready, "--duration", "120"]), out, ready))
    for _, _, ready in subs:
        wait_path(ready, 60)
    count = int(ARGS.rate * (ARGS.rotations * ARGS.interval + 3))
    pub = subprocess.Popen([PY, PEER, "pub", *common, "--cert", root + "/peers/pub.key_secret",
                            "--rate", str(ARGS.rate), "--count", str(count), "--out", root + "/pub.json"])
    time.sleep(1)
    for _ in range(ARGS.rotations):
        run_tool(["rotate"], root)
        time.sleep(ARGS.interval)
    pub.wait()
    lost = dup = disorder = 0
    followed = []
    for proc, out, _ in subs:
        proc.wait()
        r = [int(x) for x in json.load(open(out))["received"]]
        followed.append(len(json.load(open(out))["switches"]))
        lost += len(set(range(count)) - set(r))
        dup += len(r) - len(set(r))
        disorder += int(r != sorted(r))
    bus.terminate()
    bus.wait()
    switched = json.load(open(root + "/pub.json"))["switches"]
    print("rotations: %d rotations, %d subscribers, %d messages at %g msg/s: lost %d, duplicated %d, "
          "out of order %d subscribers; subscriber handovers min %d max %d; publisher handovers %d"
          % (ARGS.rotations, ARGS.subscribers, count, ARGS.rate, lost, dup, disorder,
             min(followed), max(followed), len(switched)))
    return lost, dup


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=os.path.join(HERE, "../../target/release/zmq-key-rotate"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--messages", type=int, default=100000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--subscribers", type=int, default=50)
    p.add_argument("--rotations", type=int, default=10)
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--client", default="python",
                   help="python, or the path of the Rust bench client "
                        "(target/release/examples/bench_client) to take the client out of the way")
    ARGS = p.parse_args()
    ARGS.bin = os.path.abspath(ARGS.bin)
    if ARGS.client != "python":
        ARGS.client = os.path.abspath(ARGS.client)
    if not ARGS.skip_throughput:
        with tempfile.TemporaryDirectory(prefix="zkrb", dir="/tmp") as root:
            for d in ("keys", "run", "metrics", "peers"):
                os.makedirs(os.path.join(root, d))
            open(root + "/dickbox.yml", "w").close()
            throughput(root)
    with tempfile.TemporaryDirectory(prefix="zkrb", dir="/tmp") as root:
        for d in ("keys", "run", "metrics", "peers"):
            os.makedirs(os.path.join(root, d))
        open(root + "/dickbox.yml", "w").close()
        rotations(root)


if __name__ == "__main__":
    import zmq.auth
    main()
