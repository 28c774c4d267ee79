#!/usr/bin/env python3
"""bench/l7: warren-waypoint against nginx and HAProxy as mTLS L7 proxies.

HTTP/1.1 keep-alive by default, HTTP/2 with BENCH_PROTO=h2. Everything on loopback (127.0.70.x), one system at a time, the same
load generator and backend (l7bench.c) for every system. See bench/README.md.
Python 3 standard library only.
"""
import datetime
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("WARREN_BUILD", os.path.join(REPO, "build", "benchrel-l7"))

DUR = float(os.environ.get("BENCH_SECS", "4"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNS = int(os.environ.get("BENCH_CONNS", "32"))  # keep-alive connections at saturation
RATE = int(os.environ.get("BENCH_RATE", "2000"))  # fixed-rate latency run, req/s
RATE_CONNS = int(os.environ.get("BENCH_RATE_CONNS", "4"))
NICE = int(os.environ.get("BENCH_NICE", "-19"))
# SCHED_FIFO during the latency run: off by default since stop 15. On this 2-vCPU VM it made tails worse, not
# better: five FIFO processes keep ksoftirqd and kworkers (normal priority) off the CPU, and rounds of every
# system, the direct path included, got 10-30 ms p99s; without it direct's p99 stays at 50-140 µs.
RT_RATE = os.environ.get("BENCH_RT_RATE", "0") == "1"
# BENCH_SATURATION=0: the latency run only (more rounds in the same time when only latency is wanted).
SATURATION = os.environ.get("BENCH_SATURATION", "1") == "1"
RATE_DUR = float(os.environ.get("BENCH_RATE_SECS", os.environ.get("BENCH_SECS", "4")))  # latency run length
# perf record processes of the waypoint path in an extra saturation run: "1" = the waypoint, or a
# comma-separated list of process names (warren-waypoint, warren-node-a, warren-node-b).
_PROF = os.environ.get("BENCH_PROFILE", "0")
PROFILE = [] if _PROF in ("", "0") else (["warren-waypoint"] if _PROF == "1" else _PROF.split(","))
# perf's call-graph mode for BENCH_PROFILE: "fp" (frame pointers, default) or "dwarf" (attributes time in
# libraries built without frame pointers, e.g. libc's malloc, to its callers; larger files).
CALLGRAPH = os.environ.get("BENCH_CALLGRAPH", "fp")
KEEP = os.environ.get("BENCH_KEEP", "0") == "1"
# "http1.1" (default) or "h2": the client's protocol (h2c with prior knowledge, BENCH_STREAMS requests in
# flight per connection at saturation; the backend answers both). HAProxy then speaks HTTP/2 on every hop
# (h2c in, ALPN h2 over mTLS, h2c to the backend); nginx speaks HTTP/2 to the client only (proxy_pass has
# no HTTP/2 upstream); warren carries what the client speaks.
PROTO = os.environ.get("BENCH_PROTO", "http1.1")
H2 = PROTO == "h2"
STREAMS = int(os.environ.get("BENCH_STREAMS", "10"))
SYSTEMS = os.environ.get("BENCH_SYSTEMS", "direct,l4,waypoint,nginx,haproxy,nginx3,haproxy3").split(",")
# The targets compare with the peers in the same topology (three proxies, two mTLS hops) when they ran,
# else with the two-process peers; both are reported.
PEERS3, PEERS2 = ["nginx3", "haproxy3"], ["nginx", "haproxy"]
PEERS = PEERS3
OUT = os.environ.get("BENCH_OUT", "")

P = "127.0.70."
NODE_A, NODE_B = P + "2", P + "3"
CLIENT_IP = P + "10"
BACKEND_WP, BACKEND_L4 = P + "20", P + "22"  # behind the waypoint / plain mesh workload
WAYPOINT_IP = P + "30"
VIP_WP, VIP_L4 = P + "100", P + "101"
APP_PORT = 8080
NGINX_FRONT, NGINX_BACK = (CLIENT_IP, 17001), (BACKEND_L4, 17002)
HAPROXY_FRONT, HAPROXY_BACK = (CLIENT_IP, 17101), (BACKEND_L4, 17102)
# The peers in the waypoint's topology ("nginx3", "haproxy3"): client-side proxy -mTLS-> L7 proxy in
# the waypoint's place -mTLS-> server-side proxy, three processes and two mTLS hops as on the warren path.
NGINX_MID, HAPROXY_MID = (WAYPOINT_IP, 17003), (WAYPOINT_IP, 17103)
CIPHER = "TLS_AES_128_GCM_SHA256"

procs = []
WORK = None


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def start(name, cmd, cwd=None):
    def pre():
        os.setpgrp()
        try:
            os.nice(NICE)
        except OSError:
            pass

    out = open(os.path.join(WORK, f"{name}.log"), "w")
    p = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pre)
    p.bench_name = name
    procs.append(p)
    return p


def stop(plist):
    for p in plist:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for p in plist:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        if p in procs:
            procs.remove(p)


def cleanup(*_):
    stop(list(procs))
    if WORK and not KEEP:
        shutil.rmtree(WORK, ignore_errors=True)
    elif WORK:
        log(f"kept {WORK}")


def on_signal(signum, _frame):
    cleanup()
    sys.exit(128 + signum)


def port_free(host, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_port(host, port, timeout=15.0, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.bench_name} exited with {proc.returncode}, see its log")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port}")


def tree_pids(root):
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                ppid = int(st[st.rindex(")") + 2:].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def syscalls(pids):
    """read/write-family system calls so far (/proc/PID/io syscr + syscw: read, readv, write, writev; not
    send/recv, so HAProxy, which uses those, shows 0: compare warren's processes with nginx's only)."""
    n = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/io") as f:
                io = dict(line.split(":") for line in f.read().splitlines() if ":" in line)
            n += int(io["syscr"]) + int(io["syscw"])
        except (OSError, KeyError, ValueError):
            pass
    return n


def cpu_secs(pids):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            t += int(fields[11]) + int(fields[12])  # utime + stime, whole thread group
        except OSError:
            pass
    return t / os.sysconf("SC_CLK_TCK")


def backend_accepted():
    """Connections the backend accepted so far (it prints them on SIGUSR1)."""
    be = [q for q in procs if getattr(q, "bench_name", "") == "backend"]
    if not be:
        return None
    path = os.path.join(WORK, "backend.log")
    before = os.path.getsize(path)
    os.kill(be[0].pid, signal.SIGUSR1)
    end = time.time() + 2
    while time.time() < end:
        with open(path) as f:
            f.seek(before)
            tail = f.read()
        if tail.endswith("\n") and "accepted=" in tail:
            return int(tail.strip().splitlines()[-1].split("=")[1])
        time.sleep(0.01)
    return None


def set_rt(pids, on):
    for p in pids:
        args = ["chrt", "-a", "-f", "-p", "5", str(p)] if on else ["chrt", "-a", "-o", "-p", "0", str(p)]
        subprocess.run(args, capture_output=True)


# ------------------------------------------------------------------ setup
def copy_binaries():
    d = os.path.join(WORK, "bin")
    os.makedirs(d)
    out = {}
    for key, rel in (("node", "nodeproxy/warren-node"), ("waypoint", "waypoint/warren-waypoint"),
                     ("ctl", "cli/warrenctl")):
        src = os.path.join(BUILD, rel)
        if not os.access(src, os.X_OK):
            sys.exit(f"missing {src}: cmake --preset release -B {BUILD} && "
                     f"cmake --build {BUILD} --target warren-node warren-waypoint warrenctl")
        out[key] = os.path.join(d, os.path.basename(rel))
        shutil.copy2(src, out[key])
        out[key + "_mtime"] = datetime.datetime.utcfromtimestamp(os.stat(src).st_mtime).strftime("%Y-%m-%d %H:%M UTC")
    return out


def build_client():
    exe = os.path.join(WORK, "l7bench")
    run(["cc", "-O2", "-o", exe, os.path.join(HERE, "l7bench.c"), "-lnghttp2"])
    return exe


def workload(uid, name, sa, node, ip, labels, **extra):
    w = {"uid": uid, "name": name, "namespace": "default", "serviceAccount": sa, "node": node, "ips": [ip],
         "protocol": "HBONE", "labels": labels}
    w.update(extra)
    return w


def mesh_config(name, addr):
    """The two nodes' config, as tests/e2e (Mesh::config_for + WaypointMesh)."""
    return {
        "node": {"name": name, "address": addr},
        "listeners": {"socks5": f"{addr}:15080", "admin": f"{addr}:15000", "metrics": f"{addr}:15020",
                      "readiness": f"{addr}:15021"},
        "certificates": {"rootCert": "certs/root-cert.pem", "dir": "certs"},
        "workloads": [
            workload("client-1", "sleep", "sleep", "node-a", CLIENT_IP, {"app": "sleep"}),
            workload("echo-1", "echo-v1", "echo", "node-b", BACKEND_WP, {"app": "echo", "version": "v1"},
                     waypoint="waypoint"),
            workload("plain-1", "plain", "plain", "node-b", BACKEND_L4, {"app": "plain"}),
            workload("waypoint-1", "waypoint", "waypoint", "node-b", WAYPOINT_IP,
                     {"gateway.networking.k8s.io/gateway-name": "waypoint"}, gateway="waypoint"),
        ],
        "services": [
            # The waypoint picks the upstream HTTP version from the port's protocol (as Istio does):
            # an HTTP/2 port in h2 mode keeps h2c to the backend; unnamed it would be HTTP/1.1.
            {"name": "echo", "namespace": "default", "vips": [VIP_WP],
             "ports": [dict({"port": 80, "targetPort": APP_PORT}, **({"appProtocol": "http2"} if H2 else {}))],
             "endpoints": ["echo-1"], "waypoint": "waypoint"},
            {"name": "plain", "namespace": "default", "vips": [VIP_L4],
             "ports": [{"port": 80, "targetPort": APP_PORT}], "endpoints": ["plain-1"]},
        ],
        "policies": [],
        "peerAuthentications": [],
    }


def waypoint_config():
    j = mesh_config("node-b", NODE_B)
    del j["node"]
    j["listeners"] = {"admin": f"{WAYPOINT_IP}:15000", "metrics": f"{WAYPOINT_IP}:15020",
                      "readiness": f"{WAYPOINT_IP}:15021"}
    j["waypoint"] = {"name": "waypoint", "namespace": "default", "serviceAccount": "waypoint",
                     "address": WAYPOINT_IP}
    # A simple route: everything under / to the echo service (one endpoint).
    j["virtualServices"] = [{
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "echo", "namespace": "default"},
        "spec": {"hosts": ["echo"], "http": [
            {"match": [{"uri": {"prefix": "/"}}], "route": [{"destination": {"host": "echo"}}]}]}}]
    j["destinationRules"] = []
    return j


def make_pki(bins):
    """Dev CA (warrenctl dev-ca): node/waypoint identities and the peers' certificates."""
    d = os.path.join(WORK, "mesh")
    os.makedirs(d)
    for name, addr in (("node-a", NODE_A), ("node-b", NODE_B)):
        with open(os.path.join(d, f"{name}.json"), "w") as f:
            json.dump(mesh_config(name, addr), f, indent=1)
    with open(os.path.join(d, "waypoint.json"), "w") as f:
        json.dump(waypoint_config(), f, indent=1)
    certs = os.path.join(d, "certs")
    run([bins["ctl"], "dev-ca", "init", "--out", certs])
    run([bins["ctl"], "dev-ca", "issue-config", "--ca", certs, "--config", os.path.join(d, "node-a.json")])
    peers = os.path.join(WORK, "peer-certs")
    for sa in ("peer-front", "peer-mid", "peer-back"):
        run([bins["ctl"], "dev-ca", "issue", "--ca", certs, "-n", "default", "-s", sa, "--out", peers])
    pki = {"ca": os.path.join(certs, "root-cert.pem")}
    for sa in ("peer-front", "peer-mid", "peer-back"):
        base = os.path.join(peers, "default", sa)
        pki[sa] = (os.path.join(base, "cert-chain.pem"), os.path.join(base, "key.pem"))
        with open(os.path.join(base, "both.pem"), "w") as f:  # HAProxy: cert + key in one file
            f.write(open(pki[sa][0]).read() + open(pki[sa][1]).read())
        pki[sa + "-pem"] = os.path.join(base, "both.pem")
    return d, pki


# ------------------------------------------------------------------ systems
# Each starter returns (all proxy processes, the L7 proxy process or None).
def start_nodes(bins, mesh_dir):
    ps = []
    for name in ("node-b", "node-a"):
        ps.append(start(f"warren-{name}", [bins["node"], "-c", f"{name}.json", "--access-log", "", "--log-level",
                                           "warn"], cwd=mesh_dir))
    wait_port(BACKEND_L4, 15008, proc=ps[0])
    wait_port(NODE_A, 15080, proc=ps[1])
    wait_port(NODE_A, 15021, proc=ps[1])
    return ps


def start_l4(bins, mesh_dir, _pki):
    return start_nodes(bins, mesh_dir), None


def start_waypoint(bins, mesh_dir, _pki):
    ps = start_nodes(bins, mesh_dir)
    wp = start("warren-waypoint", [bins["waypoint"], "-c", "waypoint.json", "--access-log", "", "--log-level", "warn"],
               cwd=mesh_dir)
    ps.append(wp)
    wait_port(WAYPOINT_IP, 15021, proc=wp)
    end = time.time() + 15
    while time.time() < end:  # readiness: /healthz/ready answers 200
        try:
            s = socket.create_connection((WAYPOINT_IP, 15021), timeout=1)
            s.sendall(b"GET /healthz/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                s.close()
                break
            s.close()
        except OSError:
            pass
        time.sleep(0.1)
    else:
        raise RuntimeError("waypoint not ready")
    return ps, wp


def start_nginx3(bins, mesh, pki):
    return start_nginx(bins, mesh, pki, tiers=3)


def start_nginx(_bins, _mesh, pki, tiers=2):
    d = os.path.join(WORK, "nginx")
    os.makedirs(d, exist_ok=True)
    head = """worker_processes 1;
daemon off;
pid {d}/{side}.pid;
error_log {d}/{side}.err error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp-{side};
  proxy_temp_path {d}/tmp-{side};
  fastcgi_temp_path {d}/tmp-{side};
  uwsgi_temp_path {d}/tmp-{side};
  scgi_temp_path {d}/tmp-{side};
  keepalive_requests 1000000;
  keepalive_timeout 600s;
"""
    # Client side: plain HTTP in, route on path, TLS 1.3 + client certificate to the server side,
    # upstream connections kept alive. The dev CA's certificates carry only a SPIFFE URI SAN,
    # which nginx's name check cannot match: the client side does not verify the server
    # (proxy_ssl_verify off); the server side requires and verifies client certificates.
    front_to = NGINX_MID if tiers == 3 else NGINX_BACK
    front = head.format(d=d, side="front") + f"""  upstream back {{
    server {front_to[0]}:{front_to[1]};
    keepalive 1024;
    keepalive_requests 1000000;
  }}
  server {{
    listen {NGINX_FRONT[0]}:{NGINX_FRONT[1]}{' http2' if H2 else ''};
    location / {{
      proxy_pass https://back;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_conf_command Ciphersuites {CIPHER};
      proxy_ssl_certificate {pki['peer-front'][0]};
      proxy_ssl_certificate_key {pki['peer-front'][1]};
      proxy_ssl_session_reuse on;
      proxy_ssl_verify off;
    }}
  }}
}}
"""
    back = head.format(d=d, side="back") + f"""  upstream app {{
    server {BACKEND_L4}:{APP_PORT};
    keepalive 1024;
    keepalive_requests 1000000;
  }}
  server {{
    listen {NGINX_BACK[0]}:{NGINX_BACK[1]} ssl;
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites {CIPHER};
    ssl_certificate {pki['peer-back'][0]};
    ssl_certificate_key {pki['peer-back'][1]};
    ssl_client_certificate {pki['ca']};
    ssl_verify_client on;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
    # The L7 proxy in the waypoint's place: mTLS in (client certificate required), path route, mTLS out.
    mid = head.format(d=d, side="mid") + f"""  upstream back {{
    server {NGINX_BACK[0]}:{NGINX_BACK[1]};
    keepalive 1024;
    keepalive_requests 1000000;
  }}
  server {{
    listen {NGINX_MID[0]}:{NGINX_MID[1]} ssl;
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites {CIPHER};
    ssl_certificate {pki['peer-mid'][0]};
    ssl_certificate_key {pki['peer-mid'][1]};
    ssl_client_certificate {pki['ca']};
    ssl_verify_client on;
    location / {{
      proxy_pass https://back;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_conf_command Ciphersuites {CIPHER};
      proxy_ssl_certificate {pki['peer-mid'][0]};
      proxy_ssl_certificate_key {pki['peer-mid'][1]};
      proxy_ssl_session_reuse on;
      proxy_ssl_verify off;
    }}
  }}
}}
"""
    sides = [("back", back, NGINX_BACK)] + ([("mid", mid, NGINX_MID)] if tiers == 3 else []) + [
        ("front", front, NGINX_FRONT)]
    ps = []
    for side, conf, addr in sides:
        path = os.path.join(d, f"{side}.conf")
        with open(path, "w") as f:
            f.write(conf)
        ps.append(start(f"nginx-{side}", ["nginx", "-p", d, "-e", f"{d}/{side}.err", "-c", path]))
        wait_port(*addr, proc=ps[-1])
    return ps, ps[1]  # the L7 proxy: mid with three tiers, else the client side


def start_haproxy3(bins, mesh, pki):
    return start_haproxy(bins, mesh, pki, tiers=3)


def start_haproxy(_bins, _mesh, pki, tiers=2):
    d = os.path.join(WORK, "haproxy")
    os.makedirs(d, exist_ok=True)
    common = """global
  nbthread 1
  maxconn 4000
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 600s
  timeout server 600s
  timeout http-keep-alive 600s
"""
    tls = f"ssl-min-ver TLSv1.3 ciphersuites {CIPHER} ca-file {pki['ca']} verify required"
    alpn = " alpn h2" if H2 else ""
    # Client side: plain HTTP in, path route, TLS 1.3 + client certificate out; chain verified
    # (no name check: the dev CA's certificates carry only a SPIFFE URI SAN).
    front = common + f"""frontend plain_in
  bind {HAPROXY_FRONT[0]}:{HAPROXY_FRONT[1]}{' proto h2' if H2 else ''}
  use_backend tls_out if {{ path_beg / }}
backend tls_out
  server s {(HAPROXY_MID if tiers == 3 else HAPROXY_BACK)[0]}:{(HAPROXY_MID if tiers == 3 else HAPROXY_BACK)[1]} ssl crt {pki['peer-front-pem']} {tls}{alpn}
"""
    mid = common + f"""frontend tls_in
  bind {HAPROXY_MID[0]}:{HAPROXY_MID[1]} ssl crt {pki['peer-mid-pem']} {tls}{alpn}
  use_backend tls_out if {{ path_beg / }}
backend tls_out
  server s {HAPROXY_BACK[0]}:{HAPROXY_BACK[1]} ssl crt {pki['peer-mid-pem']} {tls}{alpn}
"""
    back = common + f"""frontend tls_in
  bind {HAPROXY_BACK[0]}:{HAPROXY_BACK[1]} ssl crt {pki['peer-back-pem']} {tls}{alpn}
  default_backend app
backend app
  server app {BACKEND_L4}:{APP_PORT}{' proto h2' if H2 else ''}
"""
    sides = [("back", back, HAPROXY_BACK)] + ([("mid", mid, HAPROXY_MID)] if tiers == 3 else []) + [
        ("front", front, HAPROXY_FRONT)]
    ps = []
    for side, conf, addr in sides:
        path = os.path.join(d, f"{side}.cfg")
        with open(path, "w") as f:
            f.write(conf)
        run(["haproxy", "-c", "-q", "-f", path])
        ps.append(start(f"haproxy-{side}", ["haproxy", "-db", "-f", path]))
        wait_port(*addr, proc=ps[-1])
    return ps, ps[1]


def start_direct(*_):
    return [], None


STARTERS = {"direct": start_direct, "l4": start_l4, "waypoint": start_waypoint, "nginx": start_nginx,
            "haproxy": start_haproxy, "nginx3": start_nginx3, "haproxy3": start_haproxy3}


def client_args(system):
    if system == "direct":
        return ["-c", f"{BACKEND_L4}:{APP_PORT}", "-b", CLIENT_IP]
    if system == "l4":
        return ["-c", f"{VIP_L4}:80", "-s", f"{NODE_A}:15080", "-b", CLIENT_IP]
    if system == "waypoint":
        return ["-c", f"{VIP_WP}:80", "-s", f"{NODE_A}:15080", "-b", CLIENT_IP]
    host, port = NGINX_FRONT if system.startswith("nginx") else HAPROXY_FRONT
    return ["-c", f"{host}:{port}", "-b", CLIENT_IP]


def kv(line):
    out = {}
    for tok in line.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def client(exe, mode, system, *extra, rt=False):
    h2 = ["-2", "-m", str(STREAMS if mode == "sat" else 100)] if H2 else []
    base = [exe, mode, *client_args(system), *h2, *extra]
    cmd = ["chrt", "-f", "5", *base] if rt else ["nice", "-n", str(NICE), *base]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=max(DUR, RATE_DUR) * 4 + 40)
    line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else f"error=rc{r.returncode} {r.stderr.strip()}"
    return kv(line), line


def all_pids(ps):
    out = []
    for p in ps:
        out.extend(tree_pids(p.pid))
    return out


def check_alive(system, ps):
    dead = [p.bench_name for p in ps if p.poll() is not None]
    if dead:
        raise RuntimeError(f"{system}: {', '.join(dead)} exited (rc {[p.returncode for p in ps]})")


def probe(system, exe):
    last = ""
    for _ in range(40):
        m, last = client(exe, "rate", system, "-n", "1", "-r", "200", "-t", "0.05")
        if m.get("requests", 0) > 0 and not m.get("bad_status") and not m.get("errors"):
            return
        time.sleep(0.25)
    raise RuntimeError(f"{system}: no request got through ({last})")


def start_perf(pid, name):
    data = os.path.join(WORK, f"{name}.perf")
    secs = max(1.0, DUR - 1.5)
    freq = "2999" if CALLGRAPH == "fp" else "1499"
    cmd = ["perf", "record", "-q", "-F", freq, "--call-graph", CALLGRAPH, "-o", data, "-p", str(pid), "--", "sleep", str(secs)]
    return data, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish_perf(data, proc):
    proc.wait()
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,symbol", "--stdio", "-g",
                          "none", "--percent-limit", "0.7"], capture_output=True, text=True).stdout
    top = [ln.rstrip()[:140] for ln in rep.splitlines() if "%" in ln and not ln.startswith("#")][:40]
    dso = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso", "--stdio", "-g", "none"],
                         capture_output=True, text=True).stdout
    by_dso = [ln.rstrip() for ln in dso.splitlines() if "%" in ln and not ln.startswith("#")][:10]
    return ["by DSO:"] + by_dso + ["", "top symbols:"] + top


def measure(system, exe, ps, l7, rnd, res, notes, extra):
    pids = all_pids(ps)
    l7pids = tree_pids(l7.pid) if l7 else []
    per = {p.bench_name: tree_pids(p.pid) for p in ps}
    if SATURATION:
        c0, l0 = cpu_secs(pids), cpu_secs(l7pids)
        per0 = {k: cpu_secs(v) for k, v in per.items()}
        sc0 = {k: syscalls(v) for k, v in per.items()}
        a0 = backend_accepted()
        m, line = client(exe, "sat", system, "-n", str(CONNS), "-t", str(DUR))
        a1 = backend_accepted()
        c1, l1 = cpu_secs(pids), cpu_secs(l7pids)
        per1 = {k: cpu_secs(v) for k, v in per.items()}
        sc1 = {k: syscalls(v) for k, v in per.items()}
        cpu, l7cpu = c1 - c0, l1 - l0
        log(f"  {system} sat: {line}  proxy_cpu_s={cpu:.2f} l7_cpu_s={l7cpu:.2f} backend_accepted={a1 - a0 if a0 is not None and a1 is not None else '?'} "
            + " ".join(f"{k}={per1[k] - per0[k]:.2f}" for k in per)
            + (" io_syscalls_per_req " + " ".join(f"{k}={(sc1[k] - sc0[k]) / m['requests']:.2f}" for k in per)
               if m.get("requests") else ""))
        if m.get("errors") or m.get("bad_status") or "error" in m:
            notes.append(f"{system} round {rnd + 1}: saturation: {line}")
        r = res.setdefault(system, {})
        reqs = m.get("requests", 0)
        r.setdefault("rps", []).append(m.get("rps", 0.0))
        r.setdefault("sat_p50", []).append(m.get("p50_us", 0.0))
        r.setdefault("sat_p99", []).append(m.get("p99_us", 0.0))
        if a0 is not None and a1 is not None and reqs:
            r.setdefault("backend_conns_per_req", []).append((a1 - a0) / reqs)
        if system != "direct":
            r.setdefault("cpu_s", []).append(cpu)
            r.setdefault("cpu_per_s", []).append(cpu / DUR)
            r.setdefault("req_per_cpu_s", []).append(reqs / cpu if cpu > 0 else 0.0)
            if l7:
                r.setdefault("l7_cpu_s", []).append(l7cpu)
                r.setdefault("req_per_l7_cpu_s", []).append(reqs / l7cpu if l7cpu > 0 else 0.0)
            for k in per:
                r.setdefault("cpu_" + k, []).append(per1[k] - per0[k])
                if reqs:
                    r.setdefault("us_" + k, []).append((per1[k] - per0[k]) / reqs * 1e6)
                    r.setdefault("sc_" + k, []).append((sc1[k] - sc0[k]) / reqs)
            if reqs:
                r.setdefault("us_per_req", []).append(cpu / reqs * 1e6)
        check_alive(system, ps)

    r = res.setdefault(system, {})
    rt_pids = pids + [q.pid for q in procs if getattr(q, "bench_name", "") == "backend"]
    if RT_RATE:
        set_rt(rt_pids, True)
    a0 = backend_accepted()
    try:
        m, line = client(exe, "rate", system, "-n", str(RATE_CONNS), "-r", str(RATE), "-t", str(RATE_DUR), rt=RT_RATE)
    finally:
        if RT_RATE:
            set_rt(rt_pids, False)
    a1 = backend_accepted()
    log(f"  {system} rate: {line}  backend_accepted={a1 - a0 if a0 is not None and a1 is not None else '?'}")
    if m.get("errors") or m.get("bad_status") or m.get("dropped") or "error" in m:
        notes.append(f"{system} round {rnd + 1}: fixed rate: {line}")
    for k in ("p50_us", "p90_us", "p99_us", "p999_us", "rps", "p99w_med_us", "p99w_max_us"):
        r.setdefault("rate_" + k, []).append(m.get(k, 0.0))
        r.setdefault("round_rate_" + k, {})[rnd] = m.get(k, 0.0)
    check_alive(system, ps)


# ------------------------------------------------------------------ report
def med(res, system, key):
    v = res.get(system, {}).get(key)
    return statistics.median(v) if v else None


def fmt(v, nd=None):
    if v is None:
        return "n/a"
    if nd is not None:
        return f"{v:.{nd}f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def report(res, notes, extra, meta, started):
    global PEERS
    systems = [s for s in ["direct", "l4", "waypoint", "nginx3", "haproxy3", "nginx", "haproxy"] if s in res]
    if not any(p in res for p in PEERS3):
        PEERS = PEERS2
    direct_p99 = med(res, "direct", "rate_p99_us")
    direct_p50 = med(res, "direct", "rate_p50_us")
    rows = [
        ("requests/s at saturation", "rps", "hi"),
        ("proxy CPU-s per wall-s (all proxy processes)", "cpu_per_s", None),
        ("requests per proxy CPU-s (all proxy processes)", "req_per_cpu_s", "hi"),
        ("proxy CPU µs per request (all proxy processes)", "us_per_req", "lo"),
        ("requests per CPU-s of the L7 proxy alone", "req_per_l7_cpu_s", "hi"),
        (f"p50 µs at {RATE} req/s", "rate_p50_us", "lo"),
        (f"p90 µs at {RATE} req/s", "rate_p90_us", "lo"),
        (f"p99 µs at {RATE} req/s", "rate_p99_us", "lo"),
        (f"p99.9 µs at {RATE} req/s", "rate_p999_us", "lo"),
        (f"p99 µs at {RATE} req/s, median of the 1-s windows", "rate_p99w_med_us", "lo"),
        ("added p50 µs vs direct", "added_p50", "lo"),
        ("added p90 µs vs direct", "added_p90", "lo"),
        ("added p99 µs vs direct", "added_p99", "lo"),
        ("added p99 µs vs direct, median of the 1-s windows", "added_p99w_med", "lo"),
        (f"p99 µs at saturation ({CONNS} conns)", "sat_p99", "lo"),
        ("backend TCP connections accepted per request (saturation run)", "backend_conns_per_req", None),
    ]
    # Added latency is charged per round (the system's percentile minus direct's in the same round, the two
    # runs minutes apart at most) and the median of those is reported: the machine's slow drift then cancels.
    for s in systems:
        if s == "direct" or direct_p99 is None:
            continue
        for q in ("p50", "p90", "p99", "p99w_med"):
            mine, base = res[s].get(f"round_rate_{q}_us", {}), res["direct"].get(f"round_rate_{q}_us", {})
            per_round = [mine[k] - base[k] for k in sorted(mine) if k in base]
            if per_round:
                res[s][f"added_{q}"] = per_round

    def ratio(key, better, group=None):
        w = med(res, "waypoint", key)
        peers = [med(res, p, key) for p in (group or PEERS) if med(res, p, key) is not None]
        if w is None or not peers:
            return None
        best = max(peers) if better == "hi" else min(peers)
        return w / best if best else None

    lines = []
    peer_kind = "three-tier" if PEERS is PEERS3 else "two-process"
    lines.append("| metric | " + " | ".join(systems) + f" | waypoint / best {peer_kind} peer |")
    lines.append("|---|" + "---|" * (len(systems) + 1))
    for label, key, better in rows:
        cells = [fmt(med(res, s, key)) for s in systems]
        if all(c == "n/a" for c in cells):
            continue
        rt = ratio(key, better) if better else None
        hint = "" if rt is None else (" (higher is better)" if better == "hi" else " (lower is better)")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {fmt(rt)}{hint} |")
        print(f"bench: {key} " + " ".join(f"{s}={fmt(med(res, s, key))}" for s in systems)
              + f" waypoint_vs_best_peer={fmt(rt)}", flush=True)

    # Per-process CPU split (median CPU-seconds over the saturation run).
    split = []
    for s in systems:
        keys = sorted(k for k in res.get(s, {}) if k.startswith("cpu_") and k not in ("cpu_s", "cpu_per_s"))
        if keys:
            split.append(f"- {s}: " + ", ".join(f"{k[4:]} {fmt(med(res, s, k), 2)} s "
                                                f"({fmt(med(res, s, 'us_' + k[4:]))} µs/request, "
                                                f"{fmt(med(res, s, 'sc_' + k[4:]))} read/write-family syscalls/request)"
                                                for k in keys)
                         + f"; total {fmt(med(res, s, 'cpu_s'), 2)} s over {DUR:g} s "
                         f"({fmt(med(res, s, 'us_per_req'))} µs/request)")

    targets = []
    t1 = ratio("req_per_cpu_s", "hi")
    t1b = ratio("req_per_l7_cpu_s", "hi")
    if t1 is not None:
        targets.append(f"- requests per proxy CPU-second >= 1.5x best of nginx/HAProxy (all proxy processes of the "
                       f"path): {fmt(t1)}x -> {'MET' if t1 >= 1.5 else 'NOT MET'}")
    if t1 is not None:
        targets[-1] = targets[-1].replace("best of nginx/HAProxy", f"best of nginx/HAProxy ({peer_kind})")
    t2 = ratio("req_per_cpu_s", "hi", PEERS2) if PEERS is PEERS3 else None
    if t2 is not None:
        targets.append(f"  (against the two-process peers, one mTLS hop: {fmt(t2)}x)")
    if t1b is not None:
        targets.append(f"- same, counting only the L7 proxy process (waypoint vs the peers' "
                       f"{'middle' if PEERS is PEERS3 else 'client-side'} proxy): "
                       f"{fmt(t1b)}x -> {'MET' if t1b >= 1.5 else 'NOT MET'}")
    def added_target(key, text):
        w = med(res, "waypoint", key)
        peers = {p: med(res, p, key) for p in PEERS if med(res, p, key) is not None}
        if w is None or not peers:
            return False
        peer_txt = ", ".join(f"{p} {fmt(v)} µs" for p, v in peers.items())
        targets.append(f"- {text}: waypoint {fmt(w)} µs vs {peer_txt} -> {'MET' if w < min(peers.values()) else 'NOT MET'}")
        return True

    if added_target("added_p99", f"added p99 at {RATE} req/s less than either peer (median of per-round added p99)"):
        added_target("added_p99w_med", "same, p99 of each 1-s window of the latency run and the median of those (a "
                                       "stall of the machine spoils a second, not the run)")
        wr = res["waypoint"].get("round_rate_p99_us", {})
        prs = [res[p].get("round_rate_p99_us", {}) for p in PEERS if p in res]
        both = [k for k in sorted(wr) if all(k in pr for pr in prs)]
        if both:
            wins = sum(1 for k in both if all(wr[k] < pr[k] for pr in prs))
            each = ", ".join(f"{p} {sum(1 for k in both if wr[k] < res[p]['round_rate_p99_us'][k])}"
                             for p in PEERS if p in res and res[p].get("round_rate_p99_us"))
            targets.append(f"  (rounds in which the waypoint path's p99 was below every peer's: {wins} of {len(both)}; "
                           f"below each: {each})")
        rng = lambda s_: "-".join(fmt(x) for x in (min(res[s_]["rate_p99_us"]), max(res[s_]["rate_p99_us"])))
        raw_txt = ", ".join(f"{p} {rng(p)} µs" for p in ["direct", "waypoint"] + PEERS if res.get(p, {}).get("rate_p99_us"))
        targets.append(f"  (direct's own p99 is the noisiest figure on this shared machine, which can make the "
                       f"'added' values negative; raw p99 ranges over the rounds, independent of direct: {raw_txt})")
    for t in targets:
        if t.startswith("-"):
            print("target:" + t[1:], flush=True)

    raw = []
    for s in systems:
        for k in ("rps", "req_per_cpu_s", "req_per_l7_cpu_s", "rate_p50_us", "rate_p90_us", "rate_p99_us",
                  "rate_p999_us", "rate_p99w_med_us", "rate_p99w_max_us", "added_p99", "added_p99w_med"):
            v = res.get(s, {}).get(k)
            if v:
                raw.append(f"- {s} {k}: " + ", ".join(fmt(x) for x in v))

    os.makedirs(os.path.join(HERE, "..", "results"), exist_ok=True)
    path = OUT or os.path.abspath(os.path.join(HERE, "..", "results", f"l7{'-h2' if H2 else ''}-{started:%Y-%m-%d}.md"))
    with open(path, "w") as f:
        f.write(f"# bench/l7 results, {started:%Y-%m-%d %H:%M} UTC\n\n")
        for k, v in meta.items():
            f.write(f"- {k}: {v}\n")
        f.write("\nMedian of rounds.\n\n" + "\n".join(lines) + "\n")
        f.write("\n## Targets (issue 5)\n\n" + ("\n".join(targets) or "- not computed") + "\n")
        f.write("\n## Proxy CPU by process during the saturation run (median CPU-seconds, and per request)\n\n" + "\n".join(split) + "\n")
        f.write("\n## Every round\n\n" + "\n".join(raw) + "\n")
        for name, top in extra.get("perf", {}).items():
            f.write(f"\n## perf: {name} during an extra saturation run (not counted; self time)\n\n"
                    f"Client during that run: `{extra.get('perf_line', '')}`\n\n```\n"
                    + "\n".join(top) + "\n```\n")
        if notes:
            f.write("\n## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    log(f"wrote {path}")


def main():
    global WORK
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
    except (ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = datetime.datetime.utcnow()
    busy = [(h, p) for h, p in [(BACKEND_L4, APP_PORT), (BACKEND_WP, APP_PORT), (BACKEND_L4, 15008),
                                (NODE_A, 15080), (WAYPOINT_IP, 15008), (*NGINX_FRONT,), (*NGINX_BACK,),
                                (*NGINX_MID,), (*HAPROXY_FRONT,), (*HAPROXY_BACK,), (*HAPROXY_MID,)] if not port_free(h, p)]
    if busy:
        sys.exit(f"ports in use (another bench running?): {busy}")
    WORK = tempfile.mkdtemp(prefix="warren-bench-l7-")
    try:
        bins = copy_binaries()
        exe = build_client()
        mesh_dir, pki = make_pki(bins)
        start("backend", [exe, "server", f"{BACKEND_WP}:{APP_PORT}",
                          f"{BACKEND_L4}:{APP_PORT}"])
        wait_port(BACKEND_L4, APP_PORT)
        res, notes, extra, loads = {}, [], {}, {}
        for rnd in range(ROUNDS):
            for system in (SYSTEMS if rnd % 2 == 0 else SYSTEMS[::-1]):
                with open("/proc/loadavg") as f:
                    loads.setdefault(system, []).append(f.read().split()[0])
                log(f"== {system} (round {rnd + 1}/{ROUNDS}, load {loads[system][-1]})")
                try:
                    ps, l7 = STARTERS[system](bins, mesh_dir, pki)
                except Exception as e:  # noqa: BLE001
                    notes.append(f"{system} round {rnd + 1}: failed to start: {e}")
                    log(f"  {system} failed to start: {e}")
                    stop([p for p in procs if p.bench_name != "backend"])
                    continue
                try:
                    probe(system, exe)
                    measure(system, exe, ps, l7, rnd, res, notes, extra)
                except Exception as e:  # noqa: BLE001
                    notes.append(f"{system} round {rnd + 1}: {e}")
                    log(f"  {system}: {e}")
                finally:
                    for p in ps:
                        if p.poll() is not None and p.returncode not in (0, -15):
                            notes.append(f"{p.bench_name} exited with {p.returncode}")
                    stop(ps)
        if PROFILE and "waypoint" in SYSTEMS:
            # An extra saturation run, not counted: perf slows what it samples.
            log(f"== waypoint path profile of {', '.join(PROFILE)} (perf record, not counted)")
            ps, _ = start_waypoint(bins, mesh_dir, pki)
            try:
                probe("waypoint", exe)
                profs = {p.bench_name: start_perf(p.pid, p.bench_name) for p in ps if p.bench_name in PROFILE}
                _, line = client(exe, "sat", "waypoint", "-n", str(CONNS), "-t", str(DUR))
                extra["perf"] = {name: finish_perf(*prof) for name, prof in profs.items()}
                extra["perf_line"] = line
            finally:
                stop(ps)
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        meta = {
            "machine": f"{os.cpu_count()} vCPU, {os.uname().release} (shared with other tenants' builds)",
            "load average at end": " ".join(load),
            "1-min load when each system started (per round)": ", ".join(f"{k} {'/'.join(v)}"
                                                                          for k, v in loads.items()),
            "scheduling": "nice " + str(NICE) + " for every benchmarked process; sched_autogroup_enabled="
                          + open("/proc/sys/kernel/sched_autogroup_enabled").read().strip()
                          + " (with autogroups, nice only ranks processes inside this session: the bench gets "
                            "its share of the 2 vCPUs next to other sessions' builds, so requests/s at "
                            "saturation is bounded by that share; requests per CPU-second is the robust figure)",
            "rounds": f"{ROUNDS} (median; odd rounds in reverse order), {DUR:g} s per saturation run, "
                      f"{RATE_DUR:g} s per latency run",
            "saturation": (f"{CONNS} HTTP/2 (h2c) connections with {STREAMS} requests in flight each" if H2 else
                           f"{CONNS} HTTP/1.1 keep-alive connections") + ", closed loop, GET, 64-byte reply",
            "protocol": ("HTTP/2 from the client; HAProxy HTTP/2 on every hop, nginx HTTP/2 to the client and "
                         "HTTP/1.1 upstream (proxy_pass), warren as the client speaks" if H2 else "HTTP/1.1"),
            "latency": f"{RATE} req/s open loop over {RATE_CONNS} keep-alive connections, charged from the scheduled "
                       f"time; {'SCHED_FIFO for client, backend and proxies' if RT_RATE else 'normal scheduling'}",
            "client/backend": "bench/l7/l7bench.c (one epoll thread each); warren paths through node-a's SOCKS5 "
                              "entry from the client workload address",
            "paths": "direct: client -> backend; l4: client -> node-a -HBONE-> node-b -> backend; waypoint: client "
                     "-> node-a -HBONE-> warren-waypoint -HBONE-> node-b -> backend (VirtualService prefix / "
                     "route); nginx3 / haproxy3 (the same topology): client -> client-side proxy -mTLS-> L7 proxy in the "
                     "waypoint's place -mTLS-> server-side proxy -> backend; nginx / haproxy: client -> L7 proxy "
                     "(plain HTTP in) -mTLS-> L7 proxy -> backend",
            "TLS": f"1.3 only, {CIPHER} for the peers (warren negotiates its own default), ECDSA P-256 from "
                   "warrenctl dev-ca, client certificates required and verified; one worker/thread per process",
            "binaries": f"{BUILD} (warren-node built {bins['node_mtime']}, warren-waypoint {bins['waypoint_mtime']}); "
                        f"repository HEAD {head}",
        }
        report(res, notes, extra, meta, started)
        for n in notes:
            log(f"note: {n}")
    finally:
        cleanup()


if __name__ == "__main__":
    main()
