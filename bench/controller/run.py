#!/usr/bin/env python3
"""Controller scale benchmark (issue 4): a synthetic cluster (default 100,000
pods, 10,000 services, 1,000 AuthorizationPolicies, 1,000 nodes) served by
warren-controller in local mode, measured for:

  controller  time to the first full translation and to ready; RSS (VmRSS,
              VmHWM) after sync and after every client phase
  node        one real warren-node (controller mode, plain loopback
              listeners, a node name with no pods so it opens no per-workload
              listener) holding the full config: RSS after the first config,
              and the time to apply one delta (its "config version N applied"
              log line against the controller's publish)
  clients     N push clients (warren-push-bench) per phase: time to deliver
              the first snapshot to all of them, then --changes one-pod
              changes (rewrite of the churn pod's manifest, label rev=<n>):
              per change, file write / controller publish -> first receipt ->
              last node ack; and the controller's own publish->ack histogram
              (warren_push_ack_latency_seconds) over the changes
  file mode   node_memory.py's figure (warren-node loading the same size from
              a file), for comparison

Builds nothing. Build first (release):

  cmake -S . -B build/benchrel -G Ninja -DCMAKE_BUILD_TYPE=Release
  nice cmake --build build/benchrel --target warren-controller warren-node warrenctl warren-push-bench
  bench/controller/run.sh [--build build/benchrel] [--pods 100000] [--services 10000]
      [--policies 1000] [--nodes 1000] [--clients node:100,node:250,lite:1000]
      [--changes 50] [--node-changes 10] [--out bench/results/controller-<date>.md]

--clients: comma-separated phases MODE[-STORE]:N, e.g. "100" (= node:100),
"node-ids:250", "lite:1000" (warren-push-bench --mode/--store; see
push_clients.cpp). Clients connect in waves (--wave, node mode); once the
next wave would take warren-push-bench past --mem-budget-gb, no more start, the
phase goes on with those it has and the report says how many fitted.

Loopback only, no root. Every process it starts is stopped on exit; the temp
dir is removed unless --keep.
"""
import argparse, datetime, json, os, platform, re, shutil, signal, socket, statistics
import subprocess, sys, tempfile, threading, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
import gen_cluster  # noqa: E402

PROCS = []          # (name, Popen) we started; stopped on exit by pid
LOG = []            # lines echoed to stderr, also kept for the report


def say(msg):
    line = time.strftime("%H:%M:%S ") + msg
    print(line, file=sys.stderr, flush=True)
    LOG.append(line)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def mem(pid):
    return {"rss_mb": mb(status_kb(pid, "VmRSS")), "hwm_mb": mb(status_kb(pid, "VmHWM"))}


def mb(kb):
    return None if kb is None else round(kb / 1024, 1)


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def mem_available_mb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


def renice(pids, value):
    for pid in pids:
        try:
            os.setpriority(os.PRIO_PROCESS, pid, value)
        except OSError:
            pass


def trim_probe(pid):
    """RSS after malloc_trim(0) called inside `pid` through gdb: how much of its RSS
    is memory it freed but the allocator kept (None without gdb)."""
    if not shutil.which("gdb"):
        return None
    try:
        subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "call (int)malloc_trim(0)"],
                       capture_output=True, timeout=60)
    except Exception:
        return None
    return mb(status_kb(pid, "VmRSS"))


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def start(name, argv, **kw):
    p = subprocess.Popen(argv, **kw)
    PROCS.append((name, p))
    return p


def stop(p, timeout=20):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def stop_all():
    for _, p in reversed(PROCS):
        try:
            stop(p, 10)
        except Exception:
            pass


# ---- logs -------------------------------------------------------------------------------

TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z\t(\w+)\t(.*)$")


def log_ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc).timestamp()


class LogFile:
    """Reads a warren log file incrementally: (wall time, level, message)."""

    def __init__(self, path):
        self.path, self.off, self.lines = path, 0, []

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.off += end + 1
        new = []
        for raw in data[:end].decode(errors="replace").split("\n"):
            m = TS.match(raw)
            if m:
                new.append((log_ts(m.group(1)), m.group(2), m.group(3)))
        self.lines += new
        return new

    def wait_for(self, pattern, timeout, proc=None, after=0):
        """The first line at index >= after matching `pattern` -> (index, ts, match)."""
        rx = re.compile(pattern)
        deadline = time.time() + timeout
        while True:
            self.poll()
            for i in range(after, len(self.lines)):
                m = rx.search(self.lines[i][2])
                if m:
                    return i, self.lines[i][0], m
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{self.path}: process exited ({proc.returncode}) waiting for /{pattern}/")
            if time.time() > deadline:
                raise TimeoutError(f"{self.path}: no /{pattern}/ within {timeout} s")
            time.sleep(0.02)


def flush_rx(version):
    return (rf"config version (?P<v>{version}): (?P<changed>\d+) resources changed, (?P<removed>\d+) removed "
            r"\((?P<ms>[\d.]+) ms\); (?P<nodes>\d+) nodes connected")


def publish_of(ctl_log, version, timeout=60, proc=None):
    """The controller's flush of `version`: (log time, flush+publish ms, start)."""
    _, ts, m = ctl_log.wait_for(flush_rx(version), timeout, proc)
    ms = float(m.group("ms"))
    return ts, ms, ts - ms / 1000


# ---- metrics ----------------------------------------------------------------------------

def histogram(base, name):
    _, text = http_get(base + "/metrics")
    buckets, count, total = {}, 0, 0.0
    for line in text.splitlines():
        if line.startswith(name + "_bucket"):
            le = re.search(r'le="([^"]+)"', line).group(1)
            buckets[float("inf") if le == "+Inf" else float(le)] = int(float(line.split()[-1]))
        elif line.startswith(name + "_count"):
            count = int(float(line.split()[-1]))
        elif line.startswith(name + "_sum"):
            total = float(line.split()[-1])
    return {"buckets": buckets, "count": count, "sum": total}


def hist_delta(a, b):
    return {"buckets": {k: b["buckets"][k] - a["buckets"].get(k, 0) for k in b["buckets"]},
            "count": b["count"] - a["count"], "sum": b["sum"] - a["sum"]}


def hist_quantile(h, q):
    """Upper bound of the bucket holding quantile q (Prometheus-style, no interpolation)."""
    n = h["count"]
    if not n:
        return None
    for le in sorted(h["buckets"]):
        if h["buckets"][le] >= q * n:
            return le
    return float("inf")


def hist_share(h, le):
    return None if not h["count"] else h["buckets"].get(le, 0) / h["count"]


# ---- stats ------------------------------------------------------------------------------

def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, int(round(q * len(xs) + 0.5)) - 1))
    return xs[i]


def summary(xs):
    return {"n": len(xs), "p50": pct(xs, 0.5), "p99": pct(xs, 0.99), "max": max(xs) if xs else None,
            "min": min(xs) if xs else None}


def fmt_ms(x):
    return "–" if x is None else f"{x:.1f}"


# ---- phases -----------------------------------------------------------------------------

class Bench:
    def __init__(self, a, tmp):
        self.a, self.tmp = a, tmp
        self.bins = {}
        self.res = {"phases": [], "notes": []}
        self.rev = 0

    def copy_bins(self):
        b = os.path.abspath(self.a.build)
        want = {"controller": "controller/warren-controller", "node": "nodeproxy/warren-node",
                "ctl": "cli/warrenctl", "push": "bench/controller/warren-push-bench"}
        os.makedirs(os.path.join(self.tmp, "bin"))
        for k, rel in want.items():
            src = os.path.join(b, rel)
            if not os.path.exists(src):
                sys.exit(f"{src} is missing: build it first (see --help)")
            dst = os.path.join(self.tmp, "bin", os.path.basename(rel))
            shutil.copy2(src, dst)
            self.bins[k] = dst

    def generate(self):
        a = self.a
        self.man = os.path.join(self.tmp, "manifests")
        t = time.time()
        self.sz, counts = gen_cluster.generate(self.man, a.pods, a.services, a.policies, a.nodes,
                                               a.namespaces, a.pods_per_file)
        counts["generate_s"] = round(time.time() - t, 1)
        counts["files"] = sum(len(fs) for _, _, fs in os.walk(self.man))
        self.res["cluster"] = counts
        say(f"cluster: {counts}")

    def start_controller(self):
        a = self.a
        self.tokens = os.path.join(self.tmp, "tokens")
        self.token = os.path.join(self.tmp, "token")
        tok = "warren-bench-" + os.urandom(12).hex()
        with open(self.tokens, "w") as f:
            f.write(tok + "\n")          # no node: any node may use it
        with open(self.token, "w") as f:
            f.write(tok + "\n")
        self.state = os.path.join(self.tmp, "state")
        self.push_port, self.mon_port = free_port(), free_port()
        self.mon = f"http://127.0.0.1:{self.mon_port}"
        self.ctl_log_path = os.path.join(self.tmp, "controller.log")
        argv = [self.bins["controller"], "--manifests", self.man, "--state-dir", self.state,
                "--bootstrap-tokens", self.tokens, "--listen", f"127.0.0.1:{self.push_port}",
                "--monitoring", f"127.0.0.1:{self.mon_port}", "--log-level", "info"]
        if a.perf_controller:
            argv = ["perf", "record", "--call-graph", "dwarf,16384", "-F", "149", "-o",
                    os.path.join(a.perf_dir or self.tmp, "controller.perf"), "--"] + argv
        say("controller: starting (load " + loadavg() + ")")
        t0 = time.time()
        self.ctl = start("controller", argv, stdout=subprocess.DEVNULL,
                         stderr=open(self.ctl_log_path, "w"))
        self.ctl_log = LogFile(self.ctl_log_path)
        pid = self.ctl_pid()
        ready = None
        while time.time() - t0 < a.ready_timeout:
            if self.ctl.poll() is not None:
                sys.exit("controller exited: " + open(self.ctl_log_path).read()[-3000:])
            try:
                if http_get(self.mon + "/healthz/ready", 1)[0] == 200:
                    ready = time.time() - t0
                    break
            except Exception:
                pass
            time.sleep(0.05)
        if ready is None:
            sys.exit(f"controller not ready within {a.ready_timeout} s")
        cpu = cpu_s(pid)
        _, scan_ts, scan = self.ctl_log.wait_for(r"local: (\d+) files, (\d+) objects", 5)
        ts, ms, _ = publish_of(self.ctl_log, 1, 5)
        _, _, m = self.ctl_log.wait_for(flush_rx(1), 5)
        self.version = 1
        m0 = mem(pid)
        time.sleep(2)
        m1 = mem(pid)
        trimmed = trim_probe(pid) if a.trim_probe else None
        rejected = json.loads(http_get(self.mon + "/debug/rejected")[1])
        c = {"ready_s": round(ready, 2), "cpu_s_to_ready": cpu,
             "scan_done_s": round(scan_ts - t0, 2), "objects": int(scan.group(2)),
             "files": int(scan.group(1)), "first_translation_ms": ms,
             "resources": int(m.group("changed")), "rejected": len(rejected),
             "rss_ready_mb": m0["rss_mb"], "rss_settled_mb": m1["rss_mb"], "hwm_ready_mb": m1["hwm_mb"],
             "rss_after_trim_mb": trimmed,
             "load": loadavg()}
        if rejected:
            self.res["notes"].append(f"controller rejected {len(rejected)} objects, first: {rejected[0]}")
        self.res["controller"] = c
        say(f"controller: {c}")

    def ctl_pid(self):
        """The controller's pid (under perf, its child)."""
        if not self.a.perf_controller:
            return self.ctl.pid
        for _ in range(100):
            try:
                kids = open(f"/proc/{self.ctl.pid}/task/{self.ctl.pid}/children").read().split()
                if kids:
                    return int(kids[0])
            except OSError:
                pass
            time.sleep(0.05)
        return self.ctl.pid

    def churn(self):
        """Rewrites the churn pod (one label changes): one workload resource upsert."""
        self.rev += 1
        t = time.time()
        gen_cluster.write_churn(self.man, self.sz, rev=self.rev)
        self.version += 1
        return t, self.version

    # -- one real warren-node ------------------------------------------------------------
    def node_phase(self):
        a = self.a
        d = os.path.join(self.tmp, "node")
        os.makedirs(d)
        ports = [free_port() for _ in range(4)]
        boot = {"node": {"name": "bench-node", "address": "127.0.0.1"},
                "listeners": {"socks5": f"127.0.0.1:{ports[0]}", "admin": f"127.0.0.1:{ports[1]}",
                              "metrics": f"127.0.0.1:{ports[2]}", "readiness": f"127.0.0.1:{ports[3]}"},
                "controller": {"address": f"127.0.0.1:{self.push_port}", "tokenFile": self.token,
                               "caFile": os.path.join(self.state, "root-cert.pem")}}
        path = os.path.join(d, "bootstrap.json")
        with open(path, "w") as f:
            json.dump(boot, f)
        log_path = os.path.join(d, "node.log")
        argv = [self.bins["node"], "-c", path, "--access-log", ""]
        perf = os.path.join(a.perf_dir or self.tmp, "node.perf")
        if a.perf_node:
            argv = ["perf", "record", "--call-graph", "dwarf,16384", "-F", "149", "-o", perf, "--"] + argv
        say("node: starting (load " + loadavg() + ")")
        t0 = time.time()
        p = start("node", argv, stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))
        lf = LogFile(log_path)
        i, ts, _ = lf.wait_for(r"ready: first configuration from the controller", a.ready_timeout, p)
        pid = p.pid
        if a.perf_node:
            pid = int(open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()[0])
        _, ats, am = lf.wait_for(r"config version (\d+) applied: (\d+) workloads, (\d+) services, (\d+) policies", 5, p)
        r = {"ready_s": round(ts - t0, 2), "workloads": int(am.group(2)), "services": int(am.group(3)),
             "policies": int(am.group(4)), "cpu_s_to_ready": cpu_s(pid)}
        time.sleep(2)
        r.update({k + "_first": v for k, v in mem(pid).items()})
        say(f"node: first config {r}")
        applies, e2e = [], []
        after = len(lf.lines)
        renice([pid, self.ctl_pid()], a.churn_nice)
        for k in range(a.node_changes):
            time.sleep(a.spacing)
            t_write, v = self.churn()
            pub_ts, pub_ms, pub_start = publish_of(self.ctl_log, v, 60, self.ctl)
            i, ats, _ = lf.wait_for(r"config version (\d+) applied", 120, p, after)
            after = i + 1
            applies.append((ats - pub_start) * 1000)
            e2e.append((ats - t_write) * 1000)
        renice([pid, self.ctl_pid()], 0)
        r["delta_apply_ms"] = summary(applies)      # controller flush start -> node log "applied"
        r["delta_write_to_applied_ms"] = summary(e2e)
        r.update({k + "_after_deltas": v for k, v in mem(pid).items()})
        stop(p, 5)  # controller mode lingers up to a minute after SIGTERM: not waited for
        say(f"node: {r}")
        self.res["node"] = r

    def file_mode(self):
        a = self.a
        try:
            out = subprocess.run([sys.executable, os.path.join(HERE, "node_memory.py"), "--workloads", str(a.pods),
                                  "--services", str(a.services), "--policies", str(a.policies),
                                  "--node-bin", self.bins["node"], "--warrenctl", self.bins["ctl"]],
                                 capture_output=True, text=True, timeout=600)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            self.res["file_mode"] = res
            say(f"file mode: {res}")
        except Exception as e:
            self.res["notes"].append(f"node_memory.py failed: {e}")

    # -- push clients ----------------------------------------------------------------------
    def client_phase(self, spec):
        a = self.a
        mode, _, n = spec.rpartition(":")
        mode = mode or "node"
        n = int(n)
        store = "json"
        if "-" in mode:
            mode, store = mode.split("-", 1)
        ph = {"spec": spec, "mode": mode, "store": store if mode == "node" else "-", "asked": n}
        budget = int(min(a.mem_budget_gb * 1024, mem_available_mb() * 0.7))
        ph["max_rss_mb"] = budget
        ph["clients"] = n
        wave = a.wave if mode == "node" else 0
        out_path = os.path.join(self.tmp, f"push-{spec.replace(':', '-')}.jsonl")
        argv = [self.bins["push"], "--controller", f"127.0.0.1:{self.push_port}", "--token-file", self.token,
                "--ca", os.path.join(self.state, "root-cert.pem"), "--clients", str(n), "--mode", mode,
                "--store", store, "--wave", str(wave), "--status-ms", "5000", "--max-rss-mb", str(budget)]
        say(f"clients {spec}: starting {n} (wave {wave}, load {loadavg()})")
        hist0 = histogram(self.mon, "warren_push_ack_latency_seconds")
        c_cpu0 = cpu_s(self.ctl_pid())
        t0 = time.time()
        p = start("push-bench", argv, stdout=subprocess.PIPE, stderr=open(out_path + ".err", "w"), text=True)
        events, cond = [], threading.Condition()

        def reader():
            with open(out_path, "w") as f:
                for line in p.stdout:
                    f.write(line)
                    f.flush()
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        continue
                    with cond:
                        events.append(ev)
                        cond.notify_all()
            with cond:
                cond.notify_all()

        th = threading.Thread(target=reader, daemon=True)
        th.start()

        def wait_ev(pred, timeout):
            deadline = time.time() + timeout
            with cond:
                while True:
                    for ev in events:
                        if pred(ev):
                            return ev
                    if p.poll() is not None and not th.is_alive():
                        raise RuntimeError("push-bench exited: " + open(out_path + ".err").read()[-2000:])
                    left = deadline - time.time()
                    if left <= 0:
                        raise TimeoutError("timed out")
                    cond.wait(min(left, 1))

        try:
            sync = wait_ev(lambda e: e.get("ev") == "synced", a.sync_timeout)
        except (TimeoutError, RuntimeError) as e:
            last = [e2 for e2 in events if e2.get("ev") == "status"][-1:]
            ph["error"] = f"not synced: {e}; last status {last}"
            say(f"clients {spec}: {ph['error']}")
            stop(p)
            self.res["phases"].append(ph)
            return None
        if sync.get("capped"):
            cap = [e for e in events if e.get("ev") == "capped"][-1]
            ph["note"] = (f"{n} clients did not fit: {sync['n']} ran (push-bench at {cap['rss_mb']:.0f} MB, "
                          f"{cap['per_client_mb']:.1f} MB per synced client + {cap['transient_mb']:.0f} MB "
                          f"transient per wave, limit {budget} MB)")
            say(f"clients {spec}: {ph['note']}")
            n = ph["clients"] = sync["n"]
        ph["sync_s"] = round((sync["first_ack_last"] - sync["t_start"]) / 1e6, 1)
        ph["first_ack_first_s"] = round((sync["first_ack_first"] - sync["t_start"]) / 1e6, 2)
        ph["bench_rss_synced_mb"] = mb(sync["rss_kb"])
        ph["bench_hwm_mb"] = mb(sync["hwm_kb"])
        ph["bench_per_client_mb"] = round(sync["rss_kb"] / 1024 / n, 2)
        ph["disconnects_sync"] = sync["disconnects"]
        ph["controller_cpu_s_sync"] = round(cpu_s(self.ctl_pid()) - c_cpu0, 1)
        time.sleep(1)
        ph["controller_after_sync"] = mem(self.ctl_pid())
        snap = [e for e in events if e.get("ev") == "version" and e.get("type") == "snapshot"]
        if snap:
            ph["snapshot_bytes"] = snap[-1]["bytes"]
        say(f"clients {spec}: synced {ph}")

        hist1 = histogram(self.mon, "warren_push_ack_latency_seconds")
        renice([p.pid, self.ctl_pid()], a.churn_nice)
        rows, warm = [], []
        for k in range(a.warmup + a.changes):
            time.sleep(a.spacing)
            t_write, v = self.churn()
            try:
                ev = wait_ev(lambda e, v=v: e.get("ev") == "version" and e.get("v") == v, a.change_timeout)
            except (TimeoutError, RuntimeError) as e:
                ph["error"] = f"change {k + 1} (version {v}): {e}"
                say(f"clients {spec}: {ph['error']}")
                break
            pub_ts, pub_ms, pub_start = publish_of(self.ctl_log, v, 10, self.ctl)
            us = 1e6
            (warm if k < a.warmup else rows).append({
                         "v": v, "write_to_flush_ms": (pub_start - t_write) * 1000, "flush_ms": pub_ms,
                         "pub_to_first_recv_ms": (ev["recv_first"] / us - pub_start) * 1000,
                         "pub_to_last_recv_ms": (ev["recv_last"] / us - pub_start) * 1000,
                         "pub_to_last_ack_ms": (ev["ack_last"] / us - pub_start) * 1000,
                         "write_to_last_ack_ms": (ev["ack_last"] / us - t_write) * 1000,
                         "bytes": ev["bytes"]})
        renice([p.pid, self.ctl_pid()], 0)
        hist2 = histogram(self.mon, "warren_push_ack_latency_seconds")
        hd = hist_delta(hist1, hist2)
        ph["warmup_pub_to_last_ack_ms"] = [round(r["pub_to_last_ack_ms"], 1) for r in warm]
        ph["changes"] = len(rows)
        for key in ("write_to_flush_ms", "flush_ms", "pub_to_first_recv_ms", "pub_to_last_recv_ms",
                    "pub_to_last_ack_ms", "write_to_last_ack_ms"):
            ph[key] = summary([r[key] for r in rows])
        ph["delta_bytes"] = rows[0]["bytes"] if rows else None
        ph["ack_hist"] = {"count": hd["count"], "p50_le_s": hist_quantile(hd, 0.5),
                          "p99_le_s": hist_quantile(hd, 0.99), "share_le_100ms": hist_share(hd, 0.1),
                          "mean_ms": hd["sum"] / hd["count"] * 1000 if hd["count"] else None}
        ph["ack_hist_sync"] = {"count": hist_delta(hist0, hist1)["count"]}
        ph["controller_after_changes"] = mem(self.ctl_pid())
        if a.trim_probe:
            ph["controller_rss_after_trim_mb"] = trim_probe(self.ctl_pid())
        ph["load_end"] = loadavg()
        stop(p)
        th.join(10)
        ph["disconnects_total"] = max([e.get("disconnects", 0) for e in events if "disconnects" in e] or [0])
        ph["rows"] = rows
        ph["warmup_rows"] = warm
        say(f"clients {spec}: {json.dumps({k: v for k, v in ph.items() if k != 'rows'})}")
        self.res["phases"].append(ph)


# ---- report -----------------------------------------------------------------------------

def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        total = int(f.readline().split()[1]) // 1024
    return {"host": platform.node(), "kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(),
            "mem_mb": total}


def verdict(ok):
    return "–" if ok is None else ("**met**" if ok else "**missed**")


def report(b, a, started, path):
    r, m = b.res, machine()
    c = r.get("controller", {})
    lines = [f"# Controller scale benchmark, {started}", ""]
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except Exception:
        commit = "?"
    lines += [f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['mem_mb']} MB RAM, kernel {m['kernel']} "
              f"(shared: load at start {r.get('load_start')}, at end {loadavg()}).",
              f"Binaries: `{a.build}` (checkout {commit}; {a.build_note})." if a.build_note else
              f"Binaries: `{a.build}` (checkout {commit}).",
              f"Command: `bench/controller/run.sh {' '.join(sys.argv[1:])}`", ""]
    cl = r.get("cluster", {})
    lines += ["## Sizes", "",
              f"{cl.get('pods')} pods on {cl.get('nodes')} nodes in {cl.get('namespaces')} namespaces, "
              f"{cl.get('services')} services, {cl.get('policies')} AuthorizationPolicies: "
              f"{cl.get('files')} YAML files, {cl.get('bytes', 0) / 1e6:.1f} MB "
              f"({c.get('objects')} objects, {c.get('resources')} resources, {c.get('rejected')} rejected). "
              f"One change = the churn pod's file rewritten (rename over) with a new label value: "
              f"one workload resource in the delta.", ""]

    rows = [("Targets", "figure", "value", "target", "verdict")]
    hwm = max([c.get("hwm_ready_mb") or 0] +
              [(p.get(k) or {}).get("hwm_mb") or 0 for p in r["phases"]
               for k in ("controller_after_sync", "controller_after_changes")])
    lines += ["## Results vs targets", "",
              "| target | figure | value | verdict |", "|---|---|---|---|"]
    lines.append(f"| controller memory < 1 GB | peak RSS (VmHWM) over the whole run | {hwm:.0f} MB | "
                 f"{verdict(hwm < 1024)} |")
    n = r.get("node")
    if n:
        lines.append(f"| warren-node < 60 MB at 100k workloads | RSS after the first config (controller mode) | "
                     f"{n['rss_mb_first']} MB (peak {n['hwm_mb_first']} MB) | {verdict(n['rss_mb_first'] < 60)} |")
    fm = r.get("file_mode")
    if fm:
        lines.append(f"| (same, file mode, node_memory.py) | RSS after load | {fm['rss_mb']} MB "
                     f"(peak {fm['peak_rss_mb']} MB) | {verdict(fm['rss_mb'] < 60)} |")
    for p in r["phases"]:
        if p.get("skipped") or "pub_to_last_ack_ms" not in p or not p["pub_to_last_ack_ms"]["n"]:
            continue
        s, w = p["pub_to_last_ack_ms"], p["write_to_last_ack_ms"]
        kind = p["mode"] + ("-" + p["store"] if p["mode"] == "node" else "")
        lines.append(f"| one pod change at every node < 100 ms p99 | {p['clients']} {kind} clients: "
                     f"controller flush → last ack, p99 of {s['n']} | {fmt_ms(s['p99'])} ms | "
                     f"{verdict(s['p99'] < 100)} |")
        lines.append(f"| (same, including local mode's file debounce) | {p['clients']} {kind} clients: "
                     f"file write → last ack, p99 | {fmt_ms(w['p99'])} ms | {verdict(w['p99'] < 100)} |")
    lines.append("")

    lines += ["## Controller", "",
              "| figure | value |", "|---|---|",
              f"| start → ready (read + parse YAML, validate, translate, serialise) | {c.get('ready_s')} s "
              f"({c.get('cpu_s_to_ready')} CPU s) |",
              f"| start → scan done (files read and parsed) | {c.get('scan_done_s')} s |",
              f"| first full translation (model flush + per-resource text; log line) | "
              f"{c.get('first_translation_ms')} ms |",
              f"| RSS after sync (ready / +2 s) | {c.get('rss_ready_mb')} / {c.get('rss_settled_mb')} MB |",
              f"| RSS after malloc_trim(0) (gdb; what is live) | {c.get('rss_after_trim_mb')} MB |",
              f"| peak RSS at ready | {c.get('hwm_ready_mb')} MB |"]
    for p in r["phases"]:
        if "controller_after_sync" in p:
            kind = p["mode"] + ("-" + p["store"] if p["mode"] == "node" else "")
            lines.append(f"| RSS / peak after {p['clients']} {kind} clients got their snapshot | "
                         f"{p['controller_after_sync']['rss_mb']} / {p['controller_after_sync']['hwm_mb']} MB |")
            if p.get("controller_rss_after_trim_mb"):
                lines.append(f"| … after the changes, then malloc_trim(0) (clients still connected) | "
                             f"{p['controller_after_changes']['rss_mb']} → {p['controller_rss_after_trim_mb']} MB |")
    lines.append("")

    if n:
        lines += ["## warren-node (one real node, controller mode)", "",
                  "| figure | value |", "|---|---|",
                  f"| config held | {n['workloads']} workloads, {n['services']} services, {n['policies']} policies |",
                  f"| start → ready (snapshot received, parsed, applied) | {n['ready_s']} s ({n['cpu_s_to_ready']} CPU s) |",
                  f"| RSS / peak after the first config | {n['rss_mb_first']} / {n['hwm_mb_first']} MB |",
                  f"| one delta: controller flush → node \"applied\" (p50 / max of {n['delta_apply_ms']['n']}) | "
                  f"{fmt_ms(n['delta_apply_ms']['p50'])} / {fmt_ms(n['delta_apply_ms']['max'])} ms |",
                  f"| one delta: file write → node \"applied\" (p50 / max) | "
                  f"{fmt_ms(n['delta_write_to_applied_ms']['p50'])} / {fmt_ms(n['delta_write_to_applied_ms']['max'])} ms |",
                  f"| RSS / peak after the deltas | {n['rss_mb_after_deltas']} / {n['hwm_mb_after_deltas']} MB |"]
        if fm:
            lines.append(f"| file mode (node_memory.py, same sizes): RSS / peak, ready | {fm['rss_mb']} / "
                         f"{fm['peak_rss_mb']} MB, {fm['ready_s']} s |")
        lines.append("")

    lines += ["## Push clients", "",
              "Clients: `warren-push-bench`, all in one process on one libuv loop (sharing the 2 CPUs with "
              "the controller). `node` clients are warren-node's `ControllerClient`: they parse each "
              "message into nlohmann::json and hand it to a callback that only stores it (`json`: the "
              "bodies, `ids`: the ids only), then ack. **They ack after receiving, parsing and storing, "
              "not after building warren-node's config snapshot** (the real node's apply time is in the "
              "warren-node table). `lite` clients read only each message's type and version and ack "
              "(the controller's fan-out alone). Times per change are the slowest client's; "
              f"{a.warmup} warm-up change(s) after each sync are left out of the figures (listed below the "
              "table). \"flush\" is the controller's log line time minus its flush+publish duration (\"flush ms\": that duration: "
              "the model's flush and queueing the delta to every stream). While changes are measured the "
              f"controller and the clients run at nice {a.churn_nice} (the machine is shared); syncs run at 0.", "",
              "| phase | clients | snapshot → all acked | client RSS | write → flush p50 | flush ms p50 / p99 | "
              "flush → first recv p50 | flush → last ack p50 / p99 / max | write → last ack p50 / p99 / max | "
              "controller histogram (per node ack): p50 ≤ / p99 ≤ / share ≤ 100 ms |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for p in r["phases"]:
        if p.get("skipped") or "sync_s" not in p:
            lines.append(f"| {p['spec']} | {p.get('clients', 0)} | {p.get('error', 'skipped')} | | | | | | | |")
            continue
        s, w, h = p.get("pub_to_last_ack_ms", {}), p.get("write_to_last_ack_ms", {}), p.get("ack_hist", {})
        share = h.get("share_le_100ms")
        lines.append(
            f"| {p['mode']}{'-' + p['store'] if p['mode'] == 'node' else ''} | {p['clients']} | {p['sync_s']} s | "
            f"{p['bench_rss_synced_mb']} MB ({p['bench_per_client_mb']} MB/client) | "
            f"{fmt_ms(p.get('write_to_flush_ms', {}).get('p50'))} ms | "
            f"{fmt_ms(p.get('flush_ms', {}).get('p50'))} / {fmt_ms(p.get('flush_ms', {}).get('p99'))} ms | "
            f"{fmt_ms(p.get('pub_to_first_recv_ms', {}).get('p50'))} ms | "
            f"{fmt_ms(s.get('p50'))} / {fmt_ms(s.get('p99'))} / {fmt_ms(s.get('max'))} ms | "
            f"{fmt_ms(w.get('p50'))} / {fmt_ms(w.get('p99'))} / {fmt_ms(w.get('max'))} ms | "
            f"{h.get('p50_le_s')} s / {h.get('p99_le_s')} s / "
            f"{'–' if share is None else f'{share * 100:.0f} %'} |")
    lines.append("")
    for p in r["phases"]:
        if p.get("note") or p.get("error"):
            lines.append(f"- {p['spec']}: {p.get('note', '')} {p.get('error', '')}".rstrip())
        if "disconnects_total" in p and p["disconnects_total"]:
            lines.append(f"- {p['spec']}: {p['disconnects_total']} client disconnects")
        if p.get("warmup_pub_to_last_ack_ms"):
            lines.append(f"- {p['spec']}: warm-up change(s) right after the sync, not in the figures above: "
                         f"flush → last ack {', '.join(str(x) for x in p['warmup_pub_to_last_ack_ms'])} ms")
    for note in r["notes"]:
        lines.append(f"- {note}")
    lines += ["", "Raw figures: the JSON next to this file.", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    with open(path[:-3] + ".json", "w") as f:
        json.dump({"args": vars(a), "machine": m, "results": r, "log": LOG}, f, indent=1, default=str)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build/benchrel"))
    ap.add_argument("--build-note", default="", help="free text for the report (which tree was built)")
    ap.add_argument("--pods", type=int, default=100000)
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--namespaces", type=int, default=100)
    ap.add_argument("--pods-per-file", type=int, default=100)
    ap.add_argument("--clients", default="node-ids:100,node-ids:250,lite:1000",
                    help="phases MODE[-STORE]:N, comma-separated")
    ap.add_argument("--changes", type=int, default=50)
    ap.add_argument("--node-changes", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1,
                    help="changes made after each client sync before measuring (reported apart: all "
                         "clients share one process, whose allocator pays once for the snapshots' "
                         "garbage on the first delta, a cost real nodes pay each on their own)")
    ap.add_argument("--spacing", type=float, default=0.5, help="seconds between changes")
    ap.add_argument("--wave", type=int, default=25, help="node-mode clients connect in waves of this many")
    ap.add_argument("--mem-budget-gb", type=float, default=None,
                    help="RSS warren-push-bench may reach; it starts no further wave of clients past it "
                         "(default: 60%% of MemAvailable at start, and never over 70%% of it at each phase)")
    ap.add_argument("--no-node", action="store_true", help="skip the real warren-node")
    ap.add_argument("--no-file-mode", action="store_true", help="skip node_memory.py")
    ap.add_argument("--perf-controller", action="store_true", help="perf record -g the controller")
    ap.add_argument("--perf-node", action="store_true", help="perf record -g the warren-node")
    ap.add_argument("--perf-dir", default=None, help="where perf data goes (default: the temp dir)")
    ap.add_argument("--churn-nice", type=int, default=-10,
                    help="nice value of the controller, the clients and the node while changes are "
                         "measured (0 to leave them alone; the syncs always run at 0)")
    ap.add_argument("--no-trim-probe", dest="trim_probe", action="store_false",
                    help="do not call malloc_trim(0) in the controller through gdb after each phase")
    ap.add_argument("--ready-timeout", type=float, default=900)
    ap.add_argument("--sync-timeout", type=float, default=3600)
    ap.add_argument("--change-timeout", type=float, default=120)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (manifests, logs)")
    ap.add_argument("--tmp", default=None, help="parent of the temp dir")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.mem_budget_gb is None:
        a.mem_budget_gb = round(mem_available_mb() * 0.6 / 1024, 1)
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    out = a.out or os.path.join(ROOT, "bench/results", f"controller-{datetime.date.today().isoformat()}.md")
    tmp = tempfile.mkdtemp(prefix="warren-ctlbench-", dir=a.tmp)

    def on_signal(signum, _):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    b = Bench(a, tmp)
    b.res["load_start"] = loadavg()
    try:
        b.copy_bins()
        b.generate()
        b.start_controller()
        if not a.no_node:
            b.node_phase()
        for spec in [s for s in a.clients.split(",") if s]:
            b.client_phase(spec)
        b.res["controller_end"] = mem(b.ctl_pid())
        if not a.no_file_mode:
            b.file_mode()
    except KeyboardInterrupt:
        b.res["notes"].append("interrupted")
    except Exception as e:
        b.res["notes"].append(f"failed: {type(e).__name__}: {e}")
        say(f"failed: {e}")
    finally:
        stop_all()
        try:
            report(b, a, started, out)
            say(f"wrote {out}")
        finally:
            if a.keep:
                say(f"kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
