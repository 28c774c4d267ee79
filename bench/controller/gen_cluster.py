#!/usr/bin/env python3
"""Synthetic cluster for the controller scale benchmark (issue 4), written as
Kubernetes YAML manifests that `warren-controller --manifests DIR` reads.

  bench/controller/gen_cluster.py OUT_DIR [--pods 100000] [--services 10000]
      [--policies 1000] [--nodes 1000] [--namespaces 100] [--pods-per-file 100]

Layout (one directory per namespace, as a GitOps repository would have it):

  cluster/namespaces.yaml        Namespace objects; all but every 20th carry
                                 warren.io/dataplane-mode=enabled
  cluster/nodes.yaml             Node objects node-0..node-<N-1>
  ns-<k>/services.yaml           the namespace's Services (selector app=svc-<s>,
                                 clusterIP, port 80->8080 "http", every third
                                 also 9090 "grpc")
  ns-<k>/policies.yaml           the namespace's AuthorizationPolicies: ALLOW
                                 (selector + principals + ports, selector +
                                 namespaces, namespace-wide from namespaces)
                                 and DENY (ipBlocks + ports, notNamespaces,
                                 principals + notPorts); about 70 % ALLOW
  ns-<k>/pods-<nnn>.yaml         Pods, --pods-per-file per file
  ns-0/churn-pod.yaml            one of the pods (ns-0/pod-0), alone in its
                                 file: the benchmark rewrites this file to
                                 make "one pod change" (see churn_pod()).

Pods: name pod-<j> in ns-<i // per_ns>, uid "pod-<i>-<hex>", labels app,
version (v1/v2/v3), pod-template-hash, tier; spec.nodeName node-<i % nodes>,
serviceAccountName sa-svc-<s>, one container with named ports; status
Running with a unique IP from 10.64.0.0/10. Pods per service = pods/services
(10 at the default sizes), spread over all nodes.

Prints a JSON summary (counts, bytes) on stdout.
"""
import argparse, json, os, sys


def ip4(n):
    return f"{n >> 24 & 255}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


POD_BASE = (10 << 24) | (64 << 16) | 1      # 10.64.0.1 upwards (4M addresses)
VIP_BASE = (10 << 24) | (96 << 16) | 10     # 10.96.0.10 upwards


class Sizes:
    def __init__(self, pods, services, policies, nodes, namespaces):
        self.pods, self.services, self.policies, self.nodes = pods, services, policies, nodes
        self.ns = max(1, min(namespaces, pods, services))
        self.pods_per_ns = -(-pods // self.ns)
        self.svc_per_ns = max(1, services // self.ns)
        self.pol_per_ns = -(-policies // self.ns) if policies else 0


def pod_fields(sz, i):
    """(namespace, name, app index) of pod i."""
    k, j = divmod(i, sz.pods_per_ns)
    return f"ns-{k}", f"pod-{j}", j % sz.svc_per_ns


def pod_yaml(sz, i, rev=None, ip_offset=0):
    ns, name, app = pod_fields(sz, i)
    j = i % sz.pods_per_ns
    ip = ip4(POD_BASE + i + ip_offset)
    version = f"v{(j // sz.svc_per_ns) % 3 + 1}"
    h = f"{(app * 2654435761) & 0xffffffff:08x}"[:9]
    extra = f"\n    rev: \"{rev}\"" if rev is not None else ""
    return f"""---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  uid: pod-{i}-{(i * 0x9e3779b1) & 0xffffffff:08x}
  labels:
    app: "svc-{app}"
    version: "{version}"
    pod-template-hash: "{h}"
    tier: "{("frontend", "backend", "data")[app % 3]}"{extra}
spec:
  nodeName: node-{i % sz.nodes}
  serviceAccountName: sa-svc-{app}
  containers:
  - name: app
    image: registry.example.com/{ns}/svc-{app}:{version}
    ports:
    - name: http
      containerPort: 8080
    - name: grpc
      containerPort: 9090
status:
  phase: Running
  podIP: {ip}
  podIPs:
  - ip: {ip}
"""


def service_yaml(sz, k, s):
    n = k * sz.svc_per_ns + s
    grpc = """
  - name: grpc
    port: 9090
    targetPort: grpc""" if n % 3 == 0 else ""
    return f"""---
apiVersion: v1
kind: Service
metadata:
  name: svc-{s}
  namespace: ns-{k}
  labels:
    app: svc-{s}
spec:
  selector:
    app: svc-{s}
  clusterIP: {ip4(VIP_BASE + n)}
  ports:
  - name: http
    port: 80
    targetPort: 8080{grpc}
"""


def policy_yaml(sz, k, p):
    ns = f"ns-{k}"
    other = f"ns-{(k + 1) % sz.ns}"
    s = p % sz.svc_per_ns
    kind = p % 10
    sel = f"""
  selector:
    matchLabels:
      app: svc-{s}"""
    if kind <= 3:    # ALLOW callers by identity on the app port
        action, spec = "ALLOW", f"""{sel}
  rules:
  - from:
    - source:
        principals:
        - cluster.local/ns/{ns}/sa/sa-svc-{(s + 1) % sz.svc_per_ns}
        - cluster.local/ns/{other}/sa/sa-svc-{s}
    to:
    - operation:
        ports: ["8080"]"""
    elif kind <= 5:  # ALLOW from namespaces
        action, spec = "ALLOW", f"""{sel}
  rules:
  - from:
    - source:
        namespaces: ["{ns}", "{other}", "istio-system"]"""
    elif kind == 6:  # namespace-wide ALLOW from this namespace
        action, spec = "ALLOW", f"""
  rules:
  - from:
    - source:
        namespaces: ["{ns}"]"""
    elif kind == 7:  # DENY a range of addresses on the grpc port
        action, spec = "DENY", f"""{sel}
  rules:
  - from:
    - source:
        ipBlocks: ["192.168.{k % 256}.0/24", "172.16.0.0/16"]
    to:
    - operation:
        ports: ["9090"]"""
    elif kind == 8:  # DENY everything not from these namespaces
        action, spec = "DENY", f"""{sel}
  rules:
  - from:
    - source:
        notNamespaces: ["{ns}", "{other}"]"""
    else:            # DENY one identity except on the app port
        action, spec = "DENY", f"""{sel}
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/{other}/sa/sa-svc-{(s + 2) % sz.svc_per_ns}"]
    to:
    - operation:
        notPorts: ["8080"]"""
    return f"""---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: pol-{p}
  namespace: {ns}
spec:
  action: {action}{spec}
"""


def churn_pod(sz):
    """The index of the pod the benchmark changes (alone in ns-0/churn-pod.yaml)."""
    return 0


def write_churn(out, sz, rev, ip_offset=0):
    """Rewrites the churn pod's file atomically (rename over: what editors and
    GitOps tools do) with label rev=<rev>. Returns the path."""
    path = os.path.join(out, "ns-0", "churn-pod.yaml")
    tmp = os.path.join(out, "ns-0", ".churn-pod.yaml.tmp")
    with open(tmp, "w") as f:
        f.write(pod_yaml(sz, churn_pod(sz), rev=rev, ip_offset=ip_offset))
    os.rename(tmp, path)
    return path


def generate(out, pods, services, policies, nodes, namespaces=100, pods_per_file=100):
    sz = Sizes(pods, services, policies, nodes, namespaces)
    os.makedirs(os.path.join(out, "cluster"), exist_ok=True)
    total = 0
    counts = {"pods": 0, "services": 0, "policies": 0, "namespaces": sz.ns, "nodes": nodes}

    def put(rel, text):
        nonlocal total
        p = os.path.join(out, rel)
        with open(p, "w") as f:
            f.write(text)
        total += len(text)

    ns_docs = []
    for k in range(sz.ns):
        mode = "" if k % 20 == 19 else "\n    warren.io/dataplane-mode: enabled"
        ns_docs.append(f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{k}\n  labels:\n"
                       f"    team: team-{k % 7}{mode}\n")
    put("cluster/namespaces.yaml", "".join(ns_docs))
    put("cluster/nodes.yaml", "".join(
        f"---\napiVersion: v1\nkind: Node\nmetadata:\n  name: node-{n}\n  labels:\n"
        f"    topology.kubernetes.io/zone: zone-{n % 3}\n" for n in range(nodes)))

    svc_left, pol_left = services, policies
    churn = churn_pod(sz)
    for k in range(sz.ns):
        os.makedirs(os.path.join(out, f"ns-{k}"), exist_ok=True)
        n_svc = min(sz.svc_per_ns, svc_left) if k < sz.ns - 1 else svc_left
        svc_left -= n_svc
        put(f"ns-{k}/services.yaml", "".join(service_yaml(sz, k, s) for s in range(n_svc)))
        counts["services"] += n_svc
        n_pol = min(sz.pol_per_ns, pol_left)
        pol_left -= n_pol
        if n_pol:
            put(f"ns-{k}/policies.yaml", "".join(policy_yaml(sz, k, p) for p in range(n_pol)))
            counts["policies"] += n_pol
        first, last = k * sz.pods_per_ns, min(pods, (k + 1) * sz.pods_per_ns)
        for f0 in range(first, last, pods_per_file):
            idx = [i for i in range(f0, min(last, f0 + pods_per_file)) if i != churn]
            if idx:
                put(f"ns-{k}/pods-{(f0 - first) // pods_per_file:03d}.yaml",
                    "".join(pod_yaml(sz, i) for i in idx))
            counts["pods"] += len(idx)
    write_churn(out, sz, rev=0)
    counts["pods"] += 1
    total += os.path.getsize(os.path.join(out, "ns-0", "churn-pod.yaml"))
    counts["bytes"] = total
    counts["churn_pod"] = "ns-0/" + pod_fields(sz, churn)[1]
    return sz, counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--pods", type=int, default=100000)
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--namespaces", type=int, default=100)
    ap.add_argument("--pods-per-file", type=int, default=100)
    a = ap.parse_args()
    if os.path.exists(a.out) and os.listdir(a.out):
        sys.exit(f"{a.out} is not empty")
    _, counts = generate(a.out, a.pods, a.services, a.policies, a.nodes, a.namespaces, a.pods_per_file)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
