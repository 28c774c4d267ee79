#!/usr/bin/env python3
"""bench/l4: warren-node pair against HAProxy, nginx stream and stunnel mTLS pairs.

Everything runs on loopback, one system at a time, with the same load
generator and server (l4bench.c) for every system. See bench/README.md.
Python 3 standard library only.
"""
import datetime
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("WARREN_BUILD", os.path.join(REPO, "build", "release"))
NODE_BIN = os.path.join(BUILD, "nodeproxy", "warren-node")
CTL_BIN = os.path.join(BUILD, "cli", "warrenctl")

DUR = float(os.environ.get("BENCH_SECS", "5"))
# A client-side proxy holds two descriptors per idle connection. Without
# CAP_SYS_RESOURCE the hard RLIMIT_NOFILE cannot be raised, so cap the count
# at what fits (the figure is normalised per connection anyway).
_NOFILE_HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
if _NOFILE_HARD == resource.RLIM_INFINITY:
    _NOFILE_HARD = 1 << 20
IDLE_CONNS = int(os.environ.get("BENCH_IDLE_CONNS", str(min(10000, (min(_NOFILE_HARD, 200000) - 200) // 2))))
CPS_THREADS = int(os.environ.get("BENCH_CPS_THREADS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))
NICE = int(os.environ.get("BENCH_NICE", "-19"))  # same priority for every system
# The latency scenario uses little CPU; run it with SCHED_FIFO (proxies, server,
# client) so that it measures the proxies and not the other tenants' builds.
RT_RR = os.environ.get("BENCH_RT_RR", "1") == "1"
# BENCH_PROFILE=1: during warren's 1-stream throughput run, strace -c then perf-sample both
# nodes and count their syscalls; reports go to bench/results/.
PROFILE = os.environ.get("BENCH_PROFILE", "0") == "1"
SYSTEMS = os.environ.get("BENCH_SYSTEMS", "direct,warren,haproxy,nginx,stunnel").split(",")
PEERS = ["haproxy", "nginx", "stunnel"]
SCENARIOS = set(os.environ.get("BENCH_SCENARIOS", "idle,tput,rr,cps").split(","))
PROXY_MAXCONN = (min(_NOFILE_HARD, 200000) - 100) // 2  # HAProxy needs 2 fds per connection

# Loopback addresses of our own, away from the demo's 127.0.0.2/3 and 127.0.10/20.
NODE_A, NODE_B = "127.0.60.2", "127.0.60.3"
CLIENT_IP, SERVER_IP = "127.0.61.1", "127.0.62.1"
SERVER = (SERVER_IP, 5300)
ENTRY = {  # where the client connects for each system (None: through SOCKS5)
    "direct": (SERVER_IP, 5300),
    "warren": None,
    "haproxy": (CLIENT_IP, 16001),
    "nginx": (CLIENT_IP, 16101),
    "stunnel": (CLIENT_IP, 16201),
}
SERVER_SIDE = {"haproxy": 16002, "nginx": 16102, "stunnel": 16202}
CIPHER = "TLS_AES_128_GCM_SHA256"  # what warren-node negotiates; peers pinned to it too

procs = []  # every process we start, killed on exit
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
    if WORK and not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(WORK, ignore_errors=True)


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


def wait_port(host, port, timeout=10.0, proc=None):
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


# ------------------------------------------------------------------ /proc
def tree_pids(root):
    """root and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                ppid = int(st[st.rindex(")") + 2 :].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pids):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2 :].split()
            t += int(fields[11]) + int(fields[12])  # utime + stime (whole thread group)
        except OSError:
            pass
    return t / os.sysconf("SC_CLK_TCK")


def rss_bytes(pids):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        t += int(line.split()[1]) * 1024
        except OSError:
            pass
    return t


# ------------------------------------------------------------------ setup
def ensure_packages():
    need = []
    if not shutil.which("haproxy"):
        need.append("haproxy")
    if not shutil.which("nginx"):
        need.append("nginx")
    if not os.path.exists("/usr/lib/nginx/modules/ngx_stream_module.so"):
        need.append("libnginx-mod-stream")
    if not shutil.which("stunnel4") and not shutil.which("stunnel"):
        need.append("stunnel4")
    if not shutil.which("openssl"):
        need.append("openssl")
    if not shutil.which("cc"):
        need.append("gcc")
    if need:
        log(f"installing {' '.join(need)} with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need], check=True, env=env)
        # Debian starts the packaged daemons; they are not part of the benchmark.
        for svc in ("haproxy", "nginx"):
            subprocess.run(["service", svc, "stop"], check=False, capture_output=True)


def make_certs():
    d = os.path.join(WORK, "pki")
    os.makedirs(d)

    def ossl(*a):
        run(["openssl", *a], cwd=d)

    ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
    ossl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=bench-ca", "-days", "2", "-out", "ca.pem",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    for name in ("server", "client"):
        ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key")
        ossl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr")
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth,clientAuth\n")
        ossl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt")
        with open(os.path.join(d, f"{name}.pem"), "w") as f:  # HAProxy wants cert+key in one file
            f.write(open(os.path.join(d, f"{name}.crt")).read() + open(os.path.join(d, f"{name}.key")).read())
    return d


def binary_time():
    try:
        return datetime.datetime.utcfromtimestamp(os.stat(NODE_BIN).st_mtime).strftime("%Y-%m-%d %H:%M UTC")
    except OSError:
        return "?"


def build_client():
    exe = os.path.join(WORK, "l4bench")
    run(["cc", "-O2", "-pthread", "-o", exe, os.path.join(HERE, "l4bench.c")])
    return exe


# ------------------------------------------------------------------ systems
def start_direct():
    return []


def warren_config(name, addr):
    return {
        "node": {"name": name, "address": addr},
        "listeners": {"socks5": f"{addr}:15080", "admin": f"{addr}:15000", "metrics": f"{addr}:15020",
                      "readiness": f"{addr}:15021"},
        "certificates": {"rootCert": "certs/root-cert.pem", "dir": "certs"},
        "workloads": [
            {"uid": "client-1", "name": "client", "namespace": "default", "serviceAccount": "sleep",
             "node": "node-a", "ips": [CLIENT_IP], "protocol": "HBONE"},
            {"uid": "server-1", "name": "server", "namespace": "default", "serviceAccount": "server",
             "node": "node-b", "ips": [SERVER_IP], "protocol": "HBONE"},
        ],
        "services": [],
        "policies": [],
    }


def start_warren():
    import json

    d = os.path.join(WORK, "warren")
    os.makedirs(d)
    for name, addr in (("node-a", NODE_A), ("node-b", NODE_B)):
        with open(os.path.join(d, f"{name}.json"), "w") as f:
            json.dump(warren_config(name, addr), f, indent=1)
    certs = os.path.join(d, "certs")
    run([CTL_BIN, "dev-ca", "init", "--out", certs])
    run([CTL_BIN, "dev-ca", "issue-config", "--ca", certs, "--config", os.path.join(d, "node-a.json")])
    ps = []
    for name in ("node-b", "node-a"):
        ps.append(start(f"warren-{name}", [NODE_BIN, "-c", f"{name}.json", "--access-log", "", "--log-level", "warn"],
                        cwd=d))
    wait_port(SERVER_IP, 15008, proc=ps[0])
    wait_port(NODE_A, 15080, proc=ps[1])
    return ps


def start_haproxy(pki):
    d = os.path.join(WORK, "haproxy")
    os.makedirs(d)
    common = f"""global
  nbthread 1
  maxconn {PROXY_MAXCONN}
  log stderr format short local0 err
defaults
  mode tcp
  timeout connect 5s
  timeout client 600s
  timeout server 600s
"""
    tls = f"ssl-min-ver TLSv1.3 ciphersuites {CIPHER} ca-file {pki}/ca.pem verify required"
    client = common + f"""frontend plain_in
  bind {CLIENT_IP}:16001
  maxconn {PROXY_MAXCONN}
  default_backend tls_out
backend tls_out
  server s {SERVER_IP}:{SERVER_SIDE['haproxy']} ssl crt {pki}/client.pem {tls} sni str(server) verifyhost server
"""
    server = common + f"""frontend tls_in
  bind {SERVER_IP}:{SERVER_SIDE['haproxy']} ssl crt {pki}/server.pem {tls}
  maxconn {PROXY_MAXCONN}
  default_backend plain_out
backend plain_out
  server app {SERVER_IP}:{SERVER[1]}
"""
    ps = []
    for side, conf in (("server", server), ("client", client)):
        path = os.path.join(d, f"{side}.cfg")
        with open(path, "w") as f:
            f.write(conf)
        run(["haproxy", "-c", "-q", "-f", path])
        ps.append(start(f"haproxy-{side}", ["haproxy", "-db", "-f", path]))
    wait_port(SERVER_IP, SERVER_SIDE["haproxy"], proc=ps[0])
    wait_port(CLIENT_IP, 16001, proc=ps[1])
    return ps


def start_nginx(pki):
    d = os.path.join(WORK, "nginx")
    os.makedirs(d)
    head = """load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
pid {d}/{side}.pid;
error_log {d}/{side}.err error;
events {{ worker_connections {wc}; }}
"""
    client = head.format(d=d, side="client", nofile=min(_NOFILE_HARD, 200000), wc=min(_NOFILE_HARD, 200000) - 100) + f"""stream {{
  server {{
    listen {CLIENT_IP}:16101;
    proxy_pass {SERVER_IP}:{SERVER_SIDE['nginx']};
    proxy_ssl on;
    proxy_ssl_protocols TLSv1.3;
    proxy_ssl_conf_command Ciphersuites {CIPHER};
    proxy_ssl_certificate {pki}/client.crt;
    proxy_ssl_certificate_key {pki}/client.key;
    proxy_ssl_trusted_certificate {pki}/ca.pem;
    proxy_ssl_verify on;
    proxy_ssl_name server;
    proxy_ssl_server_name on;
    proxy_timeout 600s;
    proxy_half_close on;
  }}
}}
"""
    server = head.format(d=d, side="server", nofile=min(_NOFILE_HARD, 200000), wc=min(_NOFILE_HARD, 200000) - 100) + f"""stream {{
  server {{
    listen {SERVER_IP}:{SERVER_SIDE['nginx']} ssl;
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites {CIPHER};
    ssl_certificate {pki}/server.crt;
    ssl_certificate_key {pki}/server.key;
    ssl_client_certificate {pki}/ca.pem;
    ssl_verify_client on;
    proxy_pass {SERVER_IP}:{SERVER[1]};
    proxy_timeout 600s;
    proxy_half_close on;
  }}
}}
"""
    ps = []
    for side, conf in (("server", server), ("client", client)):
        path = os.path.join(d, f"{side}.conf")
        with open(path, "w") as f:
            f.write(conf)
        ps.append(start(f"nginx-{side}", ["nginx", "-p", d, "-e", f"{d}/{side}.err", "-c", path]))
    wait_port(SERVER_IP, SERVER_SIDE["nginx"], proc=ps[0])
    wait_port(CLIENT_IP, 16101, proc=ps[1])
    return ps


def start_stunnel(pki):
    d = os.path.join(WORK, "stunnel")
    os.makedirs(d)
    exe = shutil.which("stunnel4") or shutil.which("stunnel")
    common = f"""foreground = yes
pid =
debug = 3
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
"""
    tls = f"""sslVersionMin = TLSv1.3
ciphersuites = {CIPHER}
CAfile = {pki}/ca.pem
verifyChain = yes
"""
    client = common + f"""[tunnel]
client = yes
accept = {CLIENT_IP}:16201
connect = {SERVER_IP}:{SERVER_SIDE['stunnel']}
cert = {pki}/client.crt
key = {pki}/client.key
checkHost = server
sni = server
{tls}"""
    server = common + f"""[tunnel]
accept = {SERVER_IP}:{SERVER_SIDE['stunnel']}
connect = {SERVER_IP}:{SERVER[1]}
cert = {pki}/server.crt
key = {pki}/server.key
requireCert = yes
{tls}"""
    ps = []
    for side, conf in (("server", server), ("client", client)):
        path = os.path.join(d, f"{side}.conf")
        with open(path, "w") as f:
            f.write(conf)
        ps.append(start(f"stunnel-{side}", [exe, path]))
    wait_port(SERVER_IP, SERVER_SIDE["stunnel"], proc=ps[0])
    wait_port(CLIENT_IP, 16201, proc=ps[1])
    return ps


# ------------------------------------------------------------------ scenarios
def client_args(system):
    if system == "warren":
        return ["-c", f"{SERVER[0]}:{SERVER[1]}", "-s", f"{NODE_A}:15080", "-b", CLIENT_IP]
    host, port = ENTRY[system]
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


def set_rt(pids, on):
    for p in pids:
        args = ["chrt", "-a", "-f", "-p", "5", str(p)] if on else ["chrt", "-a", "-o", "-p", "0", str(p)]
        subprocess.run(args, capture_output=True)


def client(exe, mode, system, *extra, timeout=None, rt=False):
    cmd = ["nice", "-n", str(NICE), exe, mode, *client_args(system), *extra]
    if rt:
        cmd = ["chrt", "-f", "5", exe, mode, *client_args(system), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout or DUR * 4 + 30)
    line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
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
    """Readiness: one short request/response through the pair."""
    for _ in range(50):
        m, _ = client(exe, "rr", system, "-r", "100", "-t", "0.05")
        if m.get("requests", 0) > 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{system}: no request got through")


def start_profile(ps):
    """strace -c, then perf record, on each node during the run."""
    half = max(0.5, (DUR - 1.5) / 2)
    out = []
    for p in ps:
        data = os.path.join(WORK, f"{p.bench_name}.perf")
        # strace first: it detaches at once; perf can take seconds to finish.
        cmd = f"sleep 0.5; timeout -s INT {half} strace -c -f -p {p.pid} -o {data}.strace >/dev/null 2>&1; " \
              f"perf record -q -F 4999 -g -o {data} -p {p.pid} -- sleep {half} >/dev/null 2>&1"
        out.append((p.bench_name, data, subprocess.Popen(["sh", "-c", cmd])))
    return out


def finish_profile(prof):
    stamp = datetime.datetime.utcnow().strftime("%Y-%m-%d")
    path = os.path.abspath(os.path.join(HERE, "..", "results", f"l4-profile-{stamp}.txt"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for name, data, proc in prof:
            proc.wait()
            rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,symbol", "--stdio",
                                  "-g", "none"], capture_output=True, text=True).stdout
            top = [ln.rstrip()[:120] for ln in rep.splitlines() if "%" in ln and not ln.startswith("#")][:30]
            f.write(f"== {name}: perf, warren 1-stream throughput, top symbols (self)\n" + "\n".join(top) + "\n")
            try:
                f.write(f"== {name}: strace -c (first half of the run, slows the node)\n" + open(data + ".strace").read() + "\n")
            except OSError:
                pass
    log(f"  profile written to {path}")


def measure(system, exe, ps, res, notes):
    pids = all_pids(ps)

    for streams in (1, 8) if "tput" in SCENARIOS else ():
        key = f"tput_{streams}"
        prof = start_profile(ps) if PROFILE and system == "warren" and streams == 1 else None
        c0 = cpu_ticks(pids)
        m, line = client(exe, "tput", system, "-n", str(streams), "-t", str(DUR))
        c1 = cpu_ticks(pids)
        if prof:
            finish_profile(prof)
        log(f"  {system} tput {streams}: {line}  proxy_cpu_s={c1 - c0:.2f}")
        if m.get("ok", 0) < streams:
            notes.append(f"{system}: tput {streams} streams: only {int(m.get('ok', 0))} streams completed ({line})")
        gbps = m.get("gbps", 0.0)
        res.setdefault(f"{key}_gbps", {})[system] = max(gbps, res.get(f"{key}_gbps", {}).get(system, 0))
        if system != "direct" and m.get("bytes", 0) > 0:
            v = (c1 - c0) / (m["bytes"] / 1e9)
            old = res.get(f"{key}_cpu", {}).get(system)
            res.setdefault(f"{key}_cpu", {})[system] = v if old is None else min(old, v)
        check_alive(system, ps)

    if "rr" in SCENARIOS:
        measure_rr(system, exe, ps, pids, res, notes)
    if "cps" in SCENARIOS:
        measure_cps(system, exe, ps, res, notes)


def measure_rr(system, exe, ps, pids, res, notes):
    rt_pids = pids + [q.pid for q in procs if getattr(q, "bench_name", "") == "server"]
    if RT_RR:
        set_rt(rt_pids, True)
    try:
        m, line = client(exe, "rr", system, "-r", "1000", "-t", str(DUR), "-z", "1024", rt=RT_RR)
    finally:
        if RT_RR:
            set_rt(rt_pids, False)
    log(f"  {system} rr: {line}")
    if m.get("errors", 0) or m.get("requests", 0) < 1000 * DUR * 0.99:
        notes.append(f"{system}: rr: {line}")
    for k in ("p50_us", "p99_us"):
        if k in m:
            old = res.get(f"rr_{k}", {}).get(system)
            res.setdefault(f"rr_{k}", {})[system] = m[k] if old is None else min(old, m[k])
    check_alive(system, ps)


def measure_cps(system, exe, ps, res, notes):
    m, line = client(exe, "cps", system, "-k", str(CPS_THREADS), "-t", str(DUR), "-z", "1024")
    log(f"  {system} cps: {line}")
    if m.get("errors", 0):
        notes.append(f"{system}: cps: {line}")
    res.setdefault("cps", {})[system] = max(m.get("cps", 0.0), res.get("cps", {}).get(system, 0))
    check_alive(system, ps)


def measure_idle(system, exe, ps, res, notes):
    pids = all_pids(ps)
    time.sleep(1.0)  # let TIME_WAIT churn and allocator settle a little
    per_proc0 = {p.bench_name: rss_bytes(tree_pids(p.pid)) for p in ps}
    before = sum(per_proc0.values())
    cmd = ["nice", "-n", str(NICE), exe, "idle", *client_args(system), "-n", str(IDLE_CONNS), "-k", "8"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=os.setpgrp)
    procs.append(p)
    p.bench_name = "idle-client"
    t0 = time.time()
    line = p.stdout.readline().strip()
    open_secs = time.time() - t0
    time.sleep(1.0)
    per_proc1 = {q.bench_name: rss_bytes(tree_pids(q.pid)) for q in ps}
    after = sum(per_proc1.values())
    m = kv(line)
    ok = int(m.get("ok", 0))
    alive_dead = [q.bench_name for q in ps if q.poll() is not None]
    p.stdin.close()
    alive_line = p.stdout.readline().strip()
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    procs.remove(p)
    detail = ", ".join(f"{n} {per_proc0[n] / 2**20:.1f}->{per_proc1[n] / 2**20:.1f} MiB" for n in per_proc0)
    log(f"  {system} idle: {line} ({open_secs:.1f}s) {alive_line}; {detail}")
    if ok < IDLE_CONNS or alive_dead:
        notes.append(f"{system}: idle: {line} {alive_line} dead={alive_dead}")
    if ok:
        res.setdefault("idle_bytes_per_conn_node", {})[system] = (after - before) / ok / 2
        res.setdefault("idle_rss_mib_total", {})[system] = after / 2**20
    if alive_line and kv(alive_line).get("alive", ok) < ok:
        notes.append(f"{system}: idle: after measurement {alive_line}")


# ------------------------------------------------------------------ report
LINES = [
    # key, scenario, metric, better ('hi'/'lo'), added-over-direct?
    ("tput_1_gbps", "throughput_1_stream", "gbit_s", "hi", False),
    ("tput_8_gbps", "throughput_8_streams", "gbit_s", "hi", False),
    ("rr_p50_us", "rr_1000rps_1KB", "p50_us", "lo", False),
    ("rr_p99_us", "rr_1000rps_1KB", "p99_us", "lo", False),
    ("rr_p50_us", "rr_1000rps_1KB", "added_p50_us", "lo", True),
    ("rr_p99_us", "rr_1000rps_1KB", "added_p99_us", "lo", True),
    ("cps", "new_connections", "conn_per_s", "hi", False),
    ("idle_bytes_per_conn_node", f"idle_{IDLE_CONNS}_conns", "bytes_per_conn_per_node", "lo", False),
    ("idle_rss_mib_total", f"idle_{IDLE_CONNS}_conns", "rss_mib_both_nodes", "lo", False),
    ("tput_1_cpu", "throughput_1_stream", "proxy_cpu_s_per_GB", "lo", False),
    ("tput_8_cpu", "throughput_8_streams", "proxy_cpu_s_per_GB", "lo", False),
]


def fmt(v):
    if v is None:
        return "n/a"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def report(res, notes, started, meta):
    rows = []
    for key, scen, metric, better, added in LINES:
        if key not in res:
            continue
        vals = dict(res.get(key, {}))
        if added:
            d = vals.get("direct")
            vals = {s: (v - d if d is not None else None) for s, v in vals.items() if s != "direct"}
        peers = [vals[p] for p in PEERS if vals.get(p) is not None]
        w = vals.get("warren")
        ratio = None
        if peers and w is not None:
            best = max(peers) if better == "hi" else min(peers)
            ratio = (w / best) if best else None
        parts = " ".join(f"{s}={fmt(vals.get(s))}" for s in ["direct", "warren"] + PEERS)
        print(f"bench: {scen} {metric} {parts} ratio_vs_best_peer={fmt(ratio)}", flush=True)
        rows.append((scen, metric, vals, ratio, better))

    os.makedirs(os.path.join(HERE, "..", "results"), exist_ok=True)
    # A profiling run slows warren-node down: keep its table apart.
    suffix = "-profiling" if PROFILE else "" if len(SCENARIOS) == 4 else "-" + "-".join(sorted(SCENARIOS))
    path = os.path.abspath(os.path.join(HERE, "..", "results", f"l4-{started:%Y-%m-%d}{suffix}.md"))
    with open(path, "w") as f:
        f.write(f"# bench/l4 results, {started:%Y-%m-%d %H:%M} UTC\n\n")
        for k, v in meta.items():
            f.write(f"- {k}: {v}\n")
        f.write("\n| scenario | metric | direct | warren | haproxy | nginx | stunnel | warren / best peer |\n")
        f.write("|---|---|---|---|---|---|---|---|\n")
        for scen, metric, vals, ratio, better in rows:
            cells = " | ".join(fmt(vals.get(s)) for s in ["direct", "warren"] + PEERS)
            hint = " (higher is better)" if better == "hi" else " (lower is better)"
            f.write(f"| {scen} | {metric} | {cells} | {fmt(ratio)}{hint} |\n")
        f.write("\nTargets (issue 2): throughput >= 1.5x best peer (1 and 8 streams); "
                "added p99 <= 0.5x best peer; <= 4096 bytes per idle tunnelled connection per node.\n")
        if notes:
            f.write("\n## Notes\n\n")
            for n in notes:
                f.write(f"- {n}\n")
    log(f"wrote {path}")


def main():
    global WORK
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200000, 200000))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (_NOFILE_HARD, _NOFILE_HARD))
    started = datetime.datetime.utcnow()
    ensure_packages()
    for b in (NODE_BIN, CTL_BIN):
        if "warren" in SYSTEMS and not os.access(b, os.X_OK):
            sys.exit(f"missing {b}: cmake --preset release && cmake --build build/release --target warren-node warrenctl")
    busy = [(h, p) for h, p in [(SERVER_IP, 5300), (SERVER_IP, 15008), (NODE_A, 15080), (CLIENT_IP, 16001),
                                (SERVER_IP, 16002), (CLIENT_IP, 16101), (SERVER_IP, 16102), (CLIENT_IP, 16201),
                                (SERVER_IP, 16202)] if not port_free(h, p)]
    if busy:
        sys.exit(f"ports in use (another bench running?): {busy}")
    WORK = tempfile.mkdtemp(prefix="warren-bench-")
    try:
        exe = build_client()
        pki = make_certs()
        start("server", ["nice", "-n", str(NICE), exe, "server", f"{SERVER[0]}:{SERVER[1]}"])
        wait_port(*SERVER)
        res, notes = {}, []
        starters = {"direct": lambda: start_direct(), "warren": start_warren,
                    "haproxy": lambda: start_haproxy(pki), "nginx": lambda: start_nginx(pki),
                    "stunnel": lambda: start_stunnel(pki)}
        loads = {}
        for rnd in range(ROUNDS):
            # Other tenants' load drifts: every other round runs the systems
            # in reverse order so that no system always gets the quiet slot.
            for system in (SYSTEMS if rnd % 2 == 0 else SYSTEMS[::-1]):
                with open("/proc/loadavg") as f:
                    loads.setdefault(system, []).append(f.read().split()[0])
                log(f"== {system} (round {rnd + 1}/{ROUNDS}, load {loads[system][-1]})")
                try:
                    shutil.rmtree(os.path.join(WORK, system), ignore_errors=True)
                    ps = starters[system]()
                except Exception as e:  # noqa: BLE001
                    notes.append(f"{system}: failed to start: {e}")
                    log(f"  {system} failed to start: {e}")
                    continue
                try:
                    probe(system, exe)
                    # Idle memory first, on fresh processes, so that memory
                    # freed by earlier scenarios does not hide the growth.
                    # Memory per idle connection barely moves between runs
                    # and its setup is the slowest part: first round only.
                    if system != "direct" and "idle" in SCENARIOS and rnd == 0:
                        measure_idle(system, exe, ps, res, notes)
                    measure(system, exe, ps, res, notes)
                except Exception as e:  # noqa: BLE001
                    notes.append(f"{system}: {e}")
                    log(f"  {system}: {e}")
                finally:
                    for p in ps:
                        if p.poll() is not None and p.returncode not in (0, -15):
                            notes.append(f"{p.bench_name} exited with {p.returncode} (log in {WORK})")
                    stop(ps)
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        meta = {
            "machine": f"{os.cpu_count()} vCPU, {os.uname().release}",
            "load average at end (machine shared with builds)": " ".join(load),
            "1-min load when each system started (per round)": ", ".join(
                f"{k} {'/'.join(v)}" for k, v in loads.items()),
            "idle connections": f"{IDLE_CONNS} (RLIMIT_NOFILE hard limit {_NOFILE_HARD})",
            "duration per scenario": f"{DUR:g} s, rounds {ROUNDS} (best of rounds; idle memory in round 1 only; "
                                     "odd rounds in reverse order)",
            "client": "bench/l4/l4bench.c for every system (warren through SOCKS5 from the client workload IP)",
            "TLS": f"1.3 only, {CIPHER}, ECDSA P-256, client certificates required, one worker per proxy",
            "cps": f"{CPS_THREADS} client threads, each: connect, 1 KB request, 1 KB reply, close "
                   "(warren adds a SOCKS5 handshake per connection)",
            "latency scenario": "SCHED_FIFO for proxies, server and client" if RT_RR else "normal scheduling",
            "warren-node": f"{NODE_BIN}, built {binary_time()} (repository HEAD now "
                           f"{subprocess.run(['git', '-C', REPO, 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()})",
        }
        report(res, notes, started, meta)
        for n in notes:
            log(f"note: {n}")
    finally:
        cleanup()


if __name__ == "__main__":
    main()
