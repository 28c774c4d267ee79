#!/usr/bin/env python3
"""warren-node memory holding a large mesh config (issue 4's scale target:
100,000 workloads in under 60 MB). Generates a synthetic standalone config
(N workloads on 1,000 nodes, S services, P policies; none local, so no
listener per workload), starts warren-node on it, waits for readiness and
reports RSS, peak RSS and the time to ready.

  bench/controller/node_memory.py [--workloads 100000] [--services 10000]
      [--policies 1000] [--node-bin build/release/nodeproxy/warren-node]

No root needed; loopback ports 35000-35080 must be free.
"""
import argparse, json, os, subprocess, sys, tempfile, time, urllib.request


def config(n, s, p, certs):
    ws = [{"uid": f"uid-{i}", "name": f"pod-{i}", "namespace": f"ns-{i % 500}",
           "serviceAccount": f"sa-{i % 2000}", "node": f"node-{i % 1000}",
           "ips": [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"],
           "labels": {"app": f"app-{i % max(s, 1)}", "version": f"v{i % 3}"}} for i in range(n)]
    ss = [{"name": f"svc-{j}", "namespace": f"ns-{j % 500}",
           "vips": [f"172.{16 + (j >> 16 & 15)}.{j >> 8 & 255}.{j & 255}"],
           "ports": [{"port": 80, "targetPort": 8080}],
           "endpoints": [f"uid-{k}" for k in range(j, n, max(s, 1))]} for j in range(s)]
    ps = [{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
           "metadata": {"name": f"pol-{k}", "namespace": f"ns-{k % 500}"},
           "spec": {"selector": {"matchLabels": {"app": f"app-{k}"}},
                    "rules": [{"from": [{"source": {"principals": [f"cluster.local/ns/ns-{k % 500}/sa/sa-{k}"]}}],
                               "to": [{"operation": {"ports": ["8080"]}}]}]}} for k in range(p)]
    return {"node": {"name": "node-bench", "address": "127.0.0.1"},
            "listeners": {"socks5": "127.0.0.1:35080", "admin": "127.0.0.1:35000",
                          "metrics": "127.0.0.1:35020", "readiness": "127.0.0.1:35021"},
            "certificates": {"rootCert": os.path.join(certs, "root-cert.pem"), "dir": certs},
            "workloads": ws, "services": ss, "policies": ps}


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", type=int, default=100000)
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--policies", type=int, default=1000)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--node-bin", default=os.path.join(root, "build/release/nodeproxy/warren-node"))
    ap.add_argument("--warrenctl", default=None)
    a = ap.parse_args()
    ctl = a.warrenctl or os.path.join(os.path.dirname(os.path.dirname(a.node_bin)), "cli/warrenctl")
    with tempfile.TemporaryDirectory() as d:
        certs = os.path.join(d, "ca")
        subprocess.run([ctl, "dev-ca", "init", "--out", certs], check=True, capture_output=True)
        path = os.path.join(d, "node.json")
        with open(path, "w") as f:
            json.dump(config(a.workloads, a.services, a.policies, certs), f)
        size = os.path.getsize(path)
        t0 = time.monotonic()
        proc = subprocess.Popen([a.node_bin, "-c", path, "--access-log", ""],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ready = None
        try:
            while time.monotonic() - t0 < 120 and proc.poll() is None:
                try:
                    if urllib.request.urlopen("http://127.0.0.1:35021/healthz/ready", timeout=1).status == 200:
                        ready = time.monotonic() - t0
                        break
                except Exception:
                    time.sleep(0.05)
            if ready is None:
                sys.exit("warren-node did not become ready: " + proc.stderr.read().decode()[-2000:])
            time.sleep(1)
            res = {"workloads": a.workloads, "services": a.services, "policies": a.policies,
                   "config_bytes": size, "ready_s": round(ready, 2),
                   "rss_mb": round(status_kb(proc.pid, "VmRSS") / 1024, 1),
                   "peak_rss_mb": round(status_kb(proc.pid, "VmHWM") / 1024, 1)}
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"bench: node_memory workloads={res['workloads']} rss_mb={res['rss_mb']} "
          f"peak_rss_mb={res['peak_rss_mb']} ready_s={res['ready_s']} (target: rss < 60 MB at 100k)")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
