#!/usr/bin/env bash
# Checks docker/ (compose files, Kubernetes manifests in k8s/) without a Docker engine or a
# Kubernetes cluster: what the files say, and that it agrees with the code.
#
#   docker/check.sh           static checks and a test of the HEALTHCHECK command (seconds)
#   docker/check.sh --build   also does the image's build stage outside Docker: copies only what
#                             the Dockerfile COPYs into a scratch directory, runs its cargo
#                             command there, and starts the binary with the image's environment
#                             (a release build: minutes the first time; target/docker-check
#                             keeps it for the next run)
#
# Needs python3 with PyYAML (installed with pip when missing) and bash. Uses `docker compose
# config`, promtool and hadolint only when they are installed. Prints each thing it checked.
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$PWD

build=false
for arg in "$@"; do
    case $arg in
    --build) build=true ;;
    -h | --help)
        sed -n '2,12p' "$0"
        exit 0
        ;;
    *)
        echo "unknown argument: $arg (try --help)" >&2
        exit 2
        ;;
    esac
done

ok() { printf '  ok    %s\n' "$*"; }
skip() { printf '  skip  %s\n' "$*"; }
fail() {
    printf '  FAIL  %s\n' "$*" >&2
    exit 1
}
step() { printf '\n== %s\n' "$*"; }

step "tools"
python3 --version
if ! python3 -c 'import yaml' 2>/dev/null; then
    echo "PyYAML is missing; trying: pip install pyyaml"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore pyyaml ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages pyyaml ||
        fail "PyYAML is not installed and pip could not install it"
fi
python3 -c 'import yaml; print("PyYAML", yaml.__version__)'

# The static checks: they parse the Dockerfile, compose.yaml, prometheus.yml and the rules, and
# compare them with each other and with the server's code. The facts later steps need come back
# as KEY=VALUE lines on fd 3.
step "static checks"
facts=$(mktemp)
trap 'rm -f "$facts"' EXIT
python3 -u - "$repo" 3>"$facts" <<'PY'
import json, os, re, sys
import yaml

repo = sys.argv[1]
facts = os.fdopen(3, "w")
d = os.path.join(repo, "docker")


def ok(msg):
    print(f"  ok    {msg}")


def skip(msg):
    print(f"  skip  {msg}")


def fail(msg):
    print(f"  FAIL  {msg}", file=sys.stderr)
    sys.exit(1)


def read(path):
    with open(os.path.join(repo, path), encoding="utf-8") as f:
        return f.read()


# --- YAML parses --------------------------------------------------------------------------------
docs = {}
for name in ("compose.yaml", "prometheus.yml", "golive.rules.yml"):
    try:
        docs[name] = yaml.safe_load(read(f"docker/{name}"))
    except (OSError, yaml.YAMLError) as e:
        fail(f"docker/{name} does not parse: {e}")
    if not isinstance(docs[name], dict):
        fail(f"docker/{name} is not a mapping")
    ok(f"docker/{name} parses as YAML")
compose, prom, rules = docs["compose.yaml"], docs["prometheus.yml"], docs["golive.rules.yml"]

# --- the server's settings and metrics, from its source ------------------------------------------
config_rs = read("crates/golive-server/src/config.rs")
env_twins = set(re.findall(r'env\s*=\s*"(GOLIVE_[A-Z0-9_]+)"', config_rs))
if not env_twins:
    fail("found no GOLIVE_* environment twins in crates/golive-server/src/config.rs")
ok(f"config.rs has {len(env_twins)} GOLIVE_* environment variables")

# --- Dockerfile ----------------------------------------------------------------------------------
lines, cur = [], ""
for raw in read("docker/Dockerfile").splitlines():
    s = raw.strip()
    if not cur and (not s or s.startswith("#")):
        continue
    if cur and s.startswith("#"):
        continue  # comments inside a continued instruction
    if s.endswith("\\"):
        cur += s[:-1] + " "
        continue
    lines.append(cur + s)
    cur = ""
if cur:
    fail("docker/Dockerfile ends inside a continued line")
instrs = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in lines]

args = {}
for op, rest in instrs:
    if op == "ARG" and "=" in rest:
        k, v = rest.split("=", 1)
        args[k.strip()] = v.strip()


def subst(s):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), s)


stages = []  # (image, name)
for op, rest in instrs:
    if op == "FROM":
        m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", rest, re.I)
        if not m:
            fail(f"cannot read FROM {rest}")
        stages.append((subst(m.group(1)), m.group(2)))
if len(stages) < 2:
    fail(f"docker/Dockerfile has {len(stages)} stage(s); a multi-stage build is expected")
(build_img, build_name), (run_img, run_name) = stages[0], stages[-1]
m = re.fullmatch(r"rust:(\d+)\.(\d+)(?:\.\d+)?-bookworm", build_img)
if not m:
    fail(f"the build stage is FROM {build_img}, expected the official rust:<version>-bookworm")
want = re.search(r'rust-version\s*=\s*"(\d+)\.(\d+)', read("Cargo.toml"))
if want and (int(m.group(1)), int(m.group(2))) < (int(want.group(1)), int(want.group(2))):
    fail(f"{build_img} is older than the workspace's rust-version {want.group(1)}.{want.group(2)}")
ok(f"build stage '{build_name}': FROM {build_img} (workspace needs rust {want.group(1)}.{want.group(2)}+)")
if run_img != "debian:bookworm-slim":
    fail(f"the final stage is FROM {run_img}, expected debian:bookworm-slim (same glibc as the build)")
ok(f"final stage '{run_name}': FROM {run_img}")

runs = " ".join(rest for op, rest in instrs if op == "RUN")
if not re.search(r"cargo build --release -p golive-server --locked", runs):
    fail("no `cargo build --release -p golive-server --locked` in a RUN")
ok("RUN cargo build --release -p golive-server --locked")
cargo_cmd = re.search(r"(cargo build [^&;]*?)\s*(?:&&|;|$)", runs).group(1).strip()
facts.write(f"CARGO_CMD={cargo_cmd}\n")

# COPY sources: the build context is the repository root.
copied = []
for op, rest in instrs:
    if op != "COPY":
        continue
    words = rest.split()
    if any(w.startswith("--from") for w in words):
        src_stage = [w for w in words if w.startswith("--from")][0].split("=", 1)[1]
        if src_stage not in {n for _, n in stages}:
            fail(f"COPY --from={src_stage}: no such stage")
        continue
    words = [w for w in words if not w.startswith("--")]
    if words and words[0].startswith("["):
        words = json.loads(rest[rest.index("["):])
    for src in words[:-1]:
        if not os.path.exists(os.path.join(repo, src)):
            fail(f"COPY {src}: not in the repository (the context is the repository root)")
        copied.append(os.path.normpath(src))
ok(f"every COPY source exists: {' '.join(copied)}")
facts.write(f"COPIED={' '.join(copied)}\n")


def is_copied(path):
    path = os.path.normpath(path)
    return any(path == c or path.startswith(c + os.sep) for c in copied)


members = re.search(r"members\s*=\s*\[([^\]]*)\]", read("Cargo.toml")).group(1)
for member in re.findall(r'"([^"]+)"', members):
    if not is_copied(os.path.join(member, "Cargo.toml")):
        fail(f"workspace member {member} is not COPYed: cargo cannot load the workspace")
ok("every workspace member is COPYed (cargo loads them all, even for -p golive-server)")
for f in ("Cargo.toml", "Cargo.lock"):
    if not is_copied(f):
        fail(f"{f} is not COPYed (--locked needs Cargo.lock)")
src_dir = "crates/golive-server/src"
n = 0
for root, _, files in os.walk(os.path.join(repo, src_dir)):
    for fn in files:
        if not fn.endswith(".rs"):
            continue
        text = open(os.path.join(root, fn), encoding="utf-8").read()
        for inc in re.findall(r'include_(?:str|bytes)!\(\s*(?:concat!\(\s*)?"([^"]+)"', text):
            target = os.path.relpath(os.path.normpath(os.path.join(root, inc)), repo)
            if not is_copied(target):
                fail(f"{os.path.relpath(os.path.join(root, fn), repo)} embeds {inc} ({target}), which is not COPYed")
            n += 1
ok(f"the {n} files golive-server embeds (include_str!/include_bytes!) lie in COPYed paths")

ignore_file = "docker/Dockerfile.dockerignore"
if os.path.exists(os.path.join(repo, ignore_file)):
    pats = [l.strip() for l in read(ignore_file).splitlines() if l.strip() and not l.startswith("#")]
    for need in ("**/target", "**/node_modules", ".git"):
        if need not in pats:
            fail(f"{ignore_file} does not exclude {need}")
    for c in copied:
        if c in pats:
            fail(f"{ignore_file} excludes {c}, which the Dockerfile COPYs")
    ok(f"{ignore_file} excludes target/, node_modules/, .git and none of the COPY sources")
else:
    fail(f"{ignore_file} is missing: the context would carry target/ and node_modules/")

# Only what follows the final FROM describes the image.
last_from = max(i for i, (op, _) in enumerate(instrs) if op == "FROM")
final = instrs[last_from + 1:]
users = [rest.strip() for op, rest in final if op == "USER"]
if not users or users[-1].split(":")[0] in ("0", "root"):
    fail(f"the final stage runs as root (USER {users[-1] if users else 'missing'})")
ok(f"USER {users[-1]} (not root)")

env = {}
for op, rest in final:
    if op == "ENV":
        for k, v in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", rest):
            env[k] = v.strip('"')
for k in env:
    if k.startswith("GOLIVE_") and k not in env_twins:
        fail(f"Dockerfile ENV {k} is not a setting of the server (config.rs)")
for k, want_v in (("GOLIVE_LISTEN", None), ("GOLIVE_UDP_BIND", "0.0.0.0"), ("GOLIVE_UDP_PORT", None), ("GOLIVE_WORKERS", None)):
    if k not in env:
        fail(f"Dockerfile ENV lacks {k}")
    if want_v and env[k] != want_v:
        fail(f"Dockerfile ENV {k}={env[k]}, expected {want_v}")
if not env["GOLIVE_LISTEN"].startswith("0.0.0.0:"):
    fail(f"GOLIVE_LISTEN={env['GOLIVE_LISTEN']}: the container must listen on 0.0.0.0")
if "GOLIVE_PUBLIC_IP" in env:
    fail("the image sets GOLIVE_PUBLIC_IP: it is the deployment's, not the image's")
http_port = int(env["GOLIVE_LISTEN"].rsplit(":", 1)[1])
udp_port, workers = int(env["GOLIVE_UDP_PORT"]), int(env["GOLIVE_WORKERS"])
ok(f"ENV {' '.join(f'{k}={v}' for k, v in env.items())} (all are settings in config.rs)")
for k, v in env.items():
    facts.write(f"ENV_{k}={v}\n")

exposed_tcp, exposed_udp = set(), None
for op, rest in final:
    if op != "EXPOSE":
        continue
    for p in rest.split():
        m = re.fullmatch(r"(\d+)(?:-(\d+))?(?:/(tcp|udp))?", p)
        if not m:
            fail(f"cannot read EXPOSE {p}")
        lo, hi, proto = int(m.group(1)), int(m.group(2) or m.group(1)), m.group(3) or "tcp"
        if proto == "tcp":
            exposed_tcp.update(range(lo, hi + 1))
        else:
            exposed_udp = (lo, hi)
if http_port not in exposed_tcp:
    fail(f"EXPOSE lacks {http_port}/tcp (GOLIVE_LISTEN)")
if exposed_udp != (udp_port, udp_port + workers - 1):
    fail(f"EXPOSE udp {exposed_udp} is not GOLIVE_UDP_PORT .. +GOLIVE_WORKERS-1 = {udp_port}-{udp_port + workers - 1}")
ok(f"EXPOSE {http_port}/tcp and {exposed_udp[0]}-{exposed_udp[1]}/udp (= {workers} workers from port {udp_port})")

hc = [rest for op, rest in final if op == "HEALTHCHECK"]
if len(hc) != 1:
    fail("the final stage needs exactly one HEALTHCHECK")
m = re.search(r"\bCMD\s+(\[.*\])\s*$", hc[0])
if not m:
    fail("HEALTHCHECK is not in exec form: CMD [\"...\"]")
try:
    hc_cmd = json.loads(m.group(1))
except json.JSONDecodeError as e:
    fail(f"HEALTHCHECK CMD is not a JSON array: {e}")
if "/healthz" not in " ".join(hc_cmd):
    fail("HEALTHCHECK does not ask /healthz")
ok(f"HEALTHCHECK exec form on /healthz: {hc_cmd[0]} {' '.join(hc_cmd[1:2])} ...")
facts.write(f"HEALTHCHECK_JSON={json.dumps(hc_cmd)}\n")
entry = [rest for op, rest in final if op == "ENTRYPOINT"]
if not entry or "golive" not in entry[-1]:
    fail("the final stage has no ENTRYPOINT running golive")
ok(f"ENTRYPOINT {entry[-1]}")

# --- compose.yaml --------------------------------------------------------------------------------
services = compose.get("services") or {}
for s in ("golive", "prometheus"):
    if s not in services:
        fail(f"compose.yaml has no service {s}")
g = services["golive"]
b = g.get("build") or {}
ctx = os.path.normpath(os.path.join(d, b.get("context", ".")))
if ctx != os.path.normpath(repo):
    fail(f"compose build context is {b.get('context')}, expected the repository root (..)")
if not os.path.exists(os.path.join(ctx, b.get("dockerfile", "Dockerfile"))):
    fail(f"compose build dockerfile {b.get('dockerfile')} does not exist in the context")
ok(f"compose golive builds {b['dockerfile']} with the repository root as context")

genv = g.get("environment") or {}
if isinstance(genv, list):
    genv = dict(e.split("=", 1) if "=" in e else (e, None) for e in genv)
for k in genv:
    if k.startswith("GOLIVE_") and k not in env_twins:
        fail(f"compose sets {k}, which is not a setting of the server (config.rs)")
ok(f"compose golive environment: {', '.join(genv)} (all are settings in config.rs)")
if "GOLIVE_PUBLIC_IP" not in genv or ":?" not in str(genv["GOLIVE_PUBLIC_IP"]):
    fail("compose must require GOLIVE_PUBLIC_IP (${GOLIVE_PUBLIC_IP:?...})")
ok("compose requires GOLIVE_PUBLIC_IP from the environment")


def eff(k):
    """A setting as the container sees it: compose environment over the image's ENV."""
    return str(genv[k]) if k in genv and genv[k] is not None else env.get(k)


c_http = int(eff("GOLIVE_LISTEN").rsplit(":", 1)[1])
c_udp, c_workers = int(eff("GOLIVE_UDP_PORT")), int(eff("GOLIVE_WORKERS"))
net_host = g.get("network_mode") == "host"
if net_host:
    if g.get("ports"):
        fail("compose golive has network_mode: host and ports: (ports are ignored on the host network)")
    ok("compose golive uses the host network: no port publishing to compare")
else:
    tcp, udp = [], []
    for p in g.get("ports") or []:
        p = str(p) if not isinstance(p, dict) else f"{p.get('published')}:{p.get('target')}/{p.get('protocol', 'tcp')}"
        m = re.fullmatch(r"(?:[\d.]+:)?(\d+)(?:-(\d+))?:(\d+)(?:-(\d+))?(?:/(tcp|udp))?", p)
        if not m:
            fail(f"cannot read compose port {p}")
        pub = (int(m.group(1)), int(m.group(2) or m.group(1)))
        tgt = (int(m.group(3)), int(m.group(4) or m.group(3)))
        (udp if m.group(5) == "udp" else tcp).append((pub, tgt))
    if not any(t == (c_http, c_http) for _, t in tcp):
        fail(f"compose does not publish the HTTP port {c_http}/tcp")
    want_udp = (c_udp, c_udp + c_workers - 1)
    if len(udp) != 1 or udp[0][1] != want_udp:
        fail(f"compose publishes udp {udp}, expected the container ports {want_udp[0]}-{want_udp[1]}")
    if udp[0][0] != udp[0][1]:
        fail(f"compose maps udp {udp[0][0]} to {udp[0][1]}: the host ports must equal the container's, "
             "since the server advertises the port it binds")
    if (c_http, c_http) != (http_port, http_port) or want_udp != exposed_udp:
        fail(f"compose ports {c_http}/tcp {want_udp} differ from the Dockerfile's EXPOSE {http_port}/tcp {exposed_udp}")
    ok(f"compose publishes {c_http}/tcp and {want_udp[0]}-{want_udp[1]}/udp unchanged: "
       f"= Dockerfile EXPOSE = {c_workers} workers from {c_udp}")


nofile = (g.get("ulimits") or {}).get("nofile")
soft = nofile.get("soft") if isinstance(nofile, dict) else nofile
max_viewers = eff("GOLIVE_MAX_VIEWERS")
if max_viewers is None:
    m = re.search(r'env = "GOLIVE_MAX_VIEWERS",\s*default_value_t\s*=\s*([\d_]+)', config_rs)
    max_viewers = m.group(1).replace("_", "") if m else "0"
if not soft or int(soft) < int(max_viewers):
    fail(f"compose golive ulimits nofile {soft}: below GOLIVE_MAX_VIEWERS {max_viewers} (one descriptor per WebSocket)")
ok(f"compose golive ulimits nofile {soft} >= max viewers {max_viewers}")


def seconds(v):
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(v))
    if not m or not any(m.groups()):
        fail(f"cannot read duration {v}")
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


grace = seconds(g.get("stop_grace_period", "10s"))
drain = eff("GOLIVE_DRAIN_TIMEOUT_SECS")
if drain is None:
    m = re.search(r'env = "GOLIVE_DRAIN_TIMEOUT_SECS",\s*default_value_t\s*=\s*(\d+)', config_rs)
    drain = m.group(1) if m else None
# After the drain, main.rs gives HTTP connections SHUTDOWN_GRACE more before it exits.
m = re.search(r"SHUTDOWN_GRACE: Duration = Duration::from_secs\((\d+)\)", read("crates/golive-server/src/main.rs"))
extra = int(m.group(1)) if m else 0
if drain is None:
    skip("no GOLIVE_DRAIN_TIMEOUT_SECS in config.rs: stop_grace_period not compared with the drain")
elif grace <= int(drain) + extra:
    fail(f"stop_grace_period {grace}s is not longer than the drain ({drain}s + {extra}s): Docker would SIGKILL mid-drain")
else:
    ok(f"stop_grace_period {grace}s > drain timeout {drain}s + shutdown grace {extra}s")

for svc_name, svc in services.items():
    for v in svc.get("volumes") or []:
        src = v.split(":", 1)[0] if isinstance(v, str) else v.get("source", "")
        if src.startswith((".", "/")):
            if not os.path.exists(os.path.join(d, src)):
                fail(f"compose {svc_name} mounts {src}, which does not exist next to compose.yaml")
            ok(f"compose {svc_name} mounts {src} (exists)")
keys_in = eff("GOLIVE_KEYS_FILE")
if keys_in:
    mounted = [v for v in g.get("volumes") or [] if isinstance(v, str) and keys_in.startswith(v.split(":")[1].rstrip("/") + "/")]
    if not mounted:
        fail(f"GOLIVE_KEYS_FILE={keys_in} is not inside a mounted volume")
    ok(f"GOLIVE_KEYS_FILE={keys_in} lies in the mount {mounted[0]}")

# --- compose.cluster.yaml: Redis and three nodes --------------------------------------------------
try:
    cl = yaml.safe_load(read("docker/compose.cluster.yaml"))
except (OSError, yaml.YAMLError) as e:
    fail(f"docker/compose.cluster.yaml does not parse: {e}")
ok("docker/compose.cluster.yaml parses as YAML (anchors and merge keys resolved)")
cl_services = cl.get("services") or {}
redis_svc = cl_services.get("redis")
if not redis_svc:
    fail("compose.cluster.yaml has no service redis")
rcmd = [str(x) for x in redis_svc.get("command") or []]
rport = rcmd[rcmd.index("--port") + 1] if "--port" in rcmd else "6379"
if "--bind" not in rcmd or rcmd[rcmd.index("--bind") + 1] != "127.0.0.1":
    fail("compose.cluster.yaml: redis must bind 127.0.0.1 only (it is the nodes' coordination)")
nodes = {n: s for n, s in cl_services.items() if n != "redis"}
if len(nodes) < 3:
    fail(f"compose.cluster.yaml has {len(nodes)} golive nodes, expected three")
http_ports, udp_ranges = {}, []
for n, s in sorted(nodes.items()):
    e = s.get("environment") or {}
    for k in e:
        if k.startswith("GOLIVE_") and k not in env_twins:
            fail(f"compose.cluster.yaml {n} sets {k}, which is not a setting of the server (config.rs)")
    for k in ("GOLIVE_CLUSTER_REDIS", "GOLIVE_CLUSTER_SECRET", "GOLIVE_NODE_URL", "GOLIVE_PUBLIC_IP", "GOLIVE_LISTEN", "GOLIVE_UDP_PORT", "GOLIVE_WORKERS"):
        if k not in e:
            fail(f"compose.cluster.yaml {n} lacks {k}")
    if s.get("network_mode") != "host":
        fail(f"compose.cluster.yaml {n}: expected network_mode host (each node's own UDP ports)")
    if not re.fullmatch(rf"redis://127\.0\.0\.1:{rport}/\d+", str(e["GOLIVE_CLUSTER_REDIS"])):
        fail(f"compose.cluster.yaml {n}: GOLIVE_CLUSTER_REDIS {e['GOLIVE_CLUSTER_REDIS']} is not the redis service (port {rport})")
    if ":?" not in str(e["GOLIVE_CLUSTER_SECRET"]):
        fail(f"compose.cluster.yaml {n} must require GOLIVE_CLUSTER_SECRET (${{GOLIVE_CLUSTER_SECRET:?...}})")
    port = int(str(e["GOLIVE_LISTEN"]).rsplit(":", 1)[1])
    if not str(e["GOLIVE_NODE_URL"]).endswith(f":{port}"):
        fail(f"compose.cluster.yaml {n}: GOLIVE_NODE_URL {e['GOLIVE_NODE_URL']} is not its HTTP port {port}")
    if port in http_ports.values() or str(port) == rport:
        fail(f"compose.cluster.yaml {n}: HTTP port {port} is taken by another service")
    http_ports[n] = port
    lo = int(e["GOLIVE_UDP_PORT"])
    hi = lo + int(e["GOLIVE_WORKERS"]) - 1
    for (m, a, b) in udp_ranges:
        if lo <= b and a <= hi:
            fail(f"compose.cluster.yaml {n}: UDP {lo}-{hi} overlaps {m}'s {a}-{b} on the host network")
    udp_ranges.append((n, lo, hi))
ok(f"compose.cluster.yaml: redis on 127.0.0.1:{rport}; nodes {', '.join(f'{n} http {http_ports[n]} udp {a}-{b}' for n, a, b in udp_ranges)}; "
   "every setting is in config.rs, the secret is required, ports do not overlap")

# --- k8s/: Redis, the golive nodes, a Service for HTTP --------------------------------------------
k8s_dir = os.path.join(d, "k8s")
kust = yaml.safe_load(read("docker/k8s/kustomization.yaml"))
objs = {}
for res in kust.get("resources") or []:
    if not os.path.exists(os.path.join(k8s_dir, res)):
        fail(f"k8s/kustomization.yaml lists {res}, which does not exist")
    try:
        for o in yaml.safe_load_all(read(f"docker/k8s/{res}")):
            if o is None:
                continue
            if not isinstance(o, dict) or not o.get("kind") or not (o.get("metadata") or {}).get("name"):
                fail(f"k8s/{res}: an object without kind or metadata.name")
            objs[(o["kind"], o["metadata"]["name"])] = o
    except yaml.YAMLError as e:
        fail(f"k8s/{res} does not parse: {e}")
ok(f"docker/k8s: {len(kust['resources'])} files parse, {len(objs)} objects: "
   + ", ".join(f"{k}/{n}" for k, n in sorted(objs)))


def k8s(kind, name):
    o = objs.get((kind, name))
    if o is None:
        fail(f"docker/k8s has no {kind} {name}")
    return o


def env_of(container):
    """The container's environment, in order, as name -> value or valueFrom."""
    out = {}
    for e in container.get("env") or []:
        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(e.get("value", ""))):
            if ref not in out:
                fail(f"k8s {container['name']}: {e['name']} uses $({ref}) before it is defined "
                     "(Kubernetes expands only earlier variables)")
        out[e["name"]] = e.get("value") if "value" in e else e.get("valueFrom")
    return out


secrets = {n: o for (k, n), o in objs.items() if k == "Secret"}


def secret_ref(v, what):
    ref = (v or {}).get("secretKeyRef") if isinstance(v, dict) else None
    if not ref:
        fail(f"k8s: {what} must come from a Secret (secretKeyRef), not a literal")
    s = secrets.get(ref["name"])
    if not s or ref["key"] not in (s.get("stringData") or s.get("data") or {}):
        fail(f"k8s: {what} names Secret {ref['name']} key {ref['key']}, which the manifests do not define")
    return ref


# Redis: a Deployment with a password, and its Service.
rd = k8s("Deployment", "golive-redis")
rc = rd["spec"]["template"]["spec"]["containers"][0]
renv = env_of(rc)
rargs = [str(a) for a in (rc.get("command") or []) + (rc.get("args") or [])]
if "--requirepass" not in rargs:
    fail("k8s redis runs without --requirepass: every pod in the cluster could reach it")
pw_var = re.fullmatch(r"\$\((\w+)\)", rargs[rargs.index("--requirepass") + 1])
if not pw_var or pw_var.group(1) not in renv:
    fail("k8s redis --requirepass is not taken from its environment")
redis_pw = secret_ref(renv[pw_var.group(1)], "the Redis password")
r_port = int(rargs[rargs.index("--port") + 1]) if "--port" in rargs else 6379
if not any(p.get("containerPort") == r_port for p in rc.get("ports") or []):
    fail(f"k8s redis does not declare its port {r_port}")
rs = k8s("Service", "golive-redis")
r_labels = rd["spec"]["template"]["metadata"]["labels"]
if any(r_labels.get(k) != v for k, v in rs["spec"]["selector"].items()):
    fail("k8s Service golive-redis does not select the Redis pods")
if not any(p.get("port") == r_port for p in rs["spec"]["ports"]):
    fail(f"k8s Service golive-redis does not serve port {r_port}")
ok(f"k8s redis: Deployment + Service on {r_port}, password from Secret {redis_pw['name']}/{redis_pw['key']}, no persistence"
   if "--appendonly" in rargs else f"k8s redis on {r_port}")

# The golive nodes.
sts = k8s("StatefulSet", "golive")
pod = sts["spec"]["template"]["spec"]
labels = sts["spec"]["template"]["metadata"]["labels"]
if any(labels.get(k) != v for k, v in sts["spec"]["selector"]["matchLabels"].items()):
    fail("k8s StatefulSet golive: the selector does not match the pod labels")
gc = [c for c in pod["containers"] if c["name"] == "golive"]
if not gc:
    fail("k8s StatefulSet golive has no container golive")
gc = gc[0]
genv8 = env_of(gc)
for k in genv8:
    if k.startswith("GOLIVE_") and k not in env_twins:
        fail(f"k8s golive sets {k}, which is not a setting of the server (config.rs)")
for k in ("GOLIVE_LISTEN", "GOLIVE_UDP_BIND", "GOLIVE_UDP_PORT", "GOLIVE_WORKERS", "GOLIVE_PUBLIC_IP",
          "GOLIVE_NODE_URL", "GOLIVE_CLUSTER_REDIS", "GOLIVE_CLUSTER_SECRET", "GOLIVE_KEYS_FILE"):
    if k not in genv8:
        fail(f"k8s golive lacks {k}")
ok(f"k8s golive environment: {', '.join(k for k in genv8 if k.startswith('GOLIVE_'))} (all are settings in config.rs)")
secret_ref(genv8["GOLIVE_CLUSTER_SECRET"], "GOLIVE_CLUSTER_SECRET")
listen = str(genv8["GOLIVE_LISTEN"])
k_http = int(listen.rsplit(":", 1)[1])
if not listen.startswith("0.0.0.0:"):
    fail(f"k8s GOLIVE_LISTEN={listen}: must listen on 0.0.0.0")
if genv8["GOLIVE_UDP_BIND"] != "0.0.0.0":
    fail("k8s GOLIVE_UDP_BIND must be 0.0.0.0")

# Each pod's node URL is its own: built from a per-pod field, on the HTTP port.
node_url = str(genv8["GOLIVE_NODE_URL"])
m = re.fullmatch(r"https?://\$\((\w+)\):(\d+)", node_url)
if not m:
    fail(f"k8s GOLIVE_NODE_URL={node_url}: expected http://$(VAR):port with VAR set per pod")
per_pod = genv8.get(m.group(1))
if not (isinstance(per_pod, dict) and (per_pod.get("fieldRef") or {}).get("fieldPath") in ("status.hostIP", "status.podIP")):
    fail(f"k8s GOLIVE_NODE_URL uses $({m.group(1)}), which is not the pod's own address (fieldRef status.hostIP/podIP)")
if int(m.group(2)) != k_http:
    fail(f"k8s GOLIVE_NODE_URL port {m.group(2)} is not the HTTP port {k_http}")
ok(f"k8s GOLIVE_NODE_URL={node_url}: each pod's own ({per_pod['fieldRef']['fieldPath']}), on its HTTP port")
pub = str(genv8["GOLIVE_PUBLIC_IP"])
if pub.startswith("$(") and not isinstance(genv8.get(pub[2:-1]), dict):
    fail(f"k8s GOLIVE_PUBLIC_IP={pub}: not a per-pod value")

# The Redis URL names the Redis Service, its port and the password variable.
m = re.fullmatch(r"redis://:\$\((\w+)\)@([\w.-]+):(\d+)/\d+", str(genv8["GOLIVE_CLUSTER_REDIS"]))
if not m:
    fail(f"k8s GOLIVE_CLUSTER_REDIS={genv8['GOLIVE_CLUSTER_REDIS']}: expected redis://:$(PASSWORD)@golive-redis:port/db")
if m.group(2).split(".")[0] != "golive-redis" or int(m.group(3)) != r_port:
    fail(f"k8s GOLIVE_CLUSTER_REDIS points at {m.group(2)}:{m.group(3)}, not Service golive-redis:{r_port}")
if secret_ref(genv8.get(m.group(1)), "the Redis password in GOLIVE_CLUSTER_REDIS") != redis_pw:
    fail("k8s golive and redis use different Redis passwords")
ok(f"k8s GOLIVE_CLUSTER_REDIS reaches Service golive-redis:{r_port} with the Redis password")

# UDP: host networking (one pod per machine) or one port per pod; either way the container's
# UDP ports are exactly the workers'.
k_udp, k_workers = int(genv8["GOLIVE_UDP_PORT"]), int(genv8["GOLIVE_WORKERS"])
ports = gc.get("ports") or []
udp = sorted(p["containerPort"] for p in ports if p.get("protocol") == "UDP")
if udp != list(range(k_udp, k_udp + k_workers)):
    fail(f"k8s golive UDP ports {udp} are not GOLIVE_UDP_PORT .. +GOLIVE_WORKERS-1 = {k_udp}-{k_udp + k_workers - 1}")
http_port_names = [p.get("name") for p in ports if p.get("containerPort") == k_http and p.get("protocol", "TCP") == "TCP"]
if not http_port_names:
    fail(f"k8s golive does not declare its HTTP port {k_http}/TCP")
if pod.get("hostNetwork"):
    if pod.get("dnsPolicy") != "ClusterFirstWithHostNet":
        fail("k8s golive on hostNetwork needs dnsPolicy ClusterFirstWithHostNet to resolve golive-redis")
    anti = ((pod.get("affinity") or {}).get("podAntiAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or []
    if not any(t.get("topologyKey") == "kubernetes.io/hostname"
               and all(labels.get(k) == v for k, v in (t.get("labelSelector") or {}).get("matchLabels", {}).items())
               for t in anti):
        fail("k8s golive on hostNetwork needs a required pod anti-affinity on kubernetes.io/hostname "
             "(two pods on one machine would want the same ports)")
    if pub != "$(HOST_IP)" and "HOST_IP" not in pub:
        skip(f"k8s GOLIVE_PUBLIC_IP={pub}: check it is each machine's public address")
    ok(f"k8s golive: hostNetwork, one pod per machine, UDP {k_udp}-{k_udp + k_workers - 1} on each machine")
else:
    if any(p.get("hostPort") not in (None, p["containerPort"]) for p in ports if p.get("protocol") == "UDP"):
        fail("k8s golive maps UDP ports to other host ports: the server advertises the ports it binds")
    ok(f"k8s golive: UDP {k_udp}-{k_udp + k_workers - 1} per pod")

# Probes on /healthz, on the HTTP port.
for probe in ("readinessProbe", "livenessProbe"):
    p = (gc.get(probe) or {}).get("httpGet") or {}
    if p.get("path") != "/healthz":
        fail(f"k8s golive {probe} does not GET /healthz")
    if p.get("port") not in (k_http, *http_port_names):
        fail(f"k8s golive {probe} asks port {p.get('port')}, not the HTTP port {k_http}")
ok(f"k8s golive readiness and liveness probes GET /healthz on port {http_port_names[0]} ({k_http})")

# The keys file is mounted where GOLIVE_KEYS_FILE says.
keys_at = str(genv8["GOLIVE_KEYS_FILE"])
mounts = [vm for vm in gc.get("volumeMounts") or [] if keys_at.startswith(vm["mountPath"].rstrip("/") + "/")]
if not mounts:
    fail(f"k8s GOLIVE_KEYS_FILE={keys_at} is not inside a volume mount")
vol = [v for v in pod.get("volumes") or [] if v["name"] == mounts[0]["name"]]
if not vol or "secret" not in vol[0]:
    fail(f"k8s keys volume {mounts[0]['name']} is not a Secret")
items = {i["path"]: i["key"] for i in vol[0]["secret"].get("items") or []}
rel = keys_at[len(mounts[0]["mountPath"].rstrip("/")) + 1:]
key = items.get(rel, rel if not items else None)
sec = secrets.get(vol[0]["secret"]["secretName"])
if not key or not sec or key not in (sec.get("stringData") or sec.get("data") or {}):
    fail(f"k8s GOLIVE_KEYS_FILE={keys_at} is not a key of Secret {vol[0]['secret']['secretName']}")
ok(f"k8s GOLIVE_KEYS_FILE={keys_at} is Secret {vol[0]['secret']['secretName']}/{key}, the same on every node")

# The drain fits in the termination grace period.
k_drain = genv8.get("GOLIVE_DRAIN_TIMEOUT_SECS") or drain
tgp = int(pod.get("terminationGracePeriodSeconds", 30))
if k_drain is not None and tgp <= int(k_drain) + extra:
    fail(f"k8s terminationGracePeriodSeconds {tgp} is not longer than the drain ({k_drain}s + {extra}s)")
ok(f"k8s terminationGracePeriodSeconds {tgp} > drain {k_drain}s + shutdown grace {extra}s")
sc = pod.get("securityContext") or {}
if not sc.get("runAsNonRoot") or sc.get("runAsUser") in (None, 0):
    fail("k8s golive pods must run as non-root")

# The Service for HTTP: every node behind one name, TCP only (media never goes through it).
svc = k8s("Service", "golive")
if any(labels.get(k) != v for k, v in svc["spec"]["selector"].items()):
    fail("k8s Service golive does not select the golive pods")
sports = svc["spec"]["ports"]
if any(p.get("protocol", "TCP") != "TCP" for p in sports):
    fail("k8s Service golive carries UDP: media goes to each node's own address, not a Service")
if not any(p.get("targetPort") in (k_http, *http_port_names) for p in sports):
    fail(f"k8s Service golive does not forward to the HTTP port {k_http}")
ok(f"k8s Service golive ({svc['spec'].get('type', 'ClusterIP')}): TCP {', '.join(str(p['port']) for p in sports)} "
   f"-> {http_port_names[0]}, no UDP")

# --- prometheus.yml ------------------------------------------------------------------------------
jobs = {j["job_name"]: j for j in prom.get("scrape_configs") or []}
if "golive" not in jobs:
    fail("prometheus.yml has no job golive")
j = jobs["golive"]
if j.get("metrics_path", "/metrics") != "/metrics":
    fail(f"prometheus job golive scrapes {j['metrics_path']}, the server serves /metrics")
targets = [t for sc in j.get("static_configs") or [] for t in sc.get("targets") or []]
if not net_host and f"golive:{c_http}" not in targets:
    fail(f"prometheus job golive targets {targets}, expected golive:{c_http} (the compose service)")
ok(f"prometheus scrapes {targets} at /metrics")
p_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"].get("volumes") or [] if isinstance(v, str)}
for rf in prom.get("rule_files") or []:
    if rf not in p_mounts:
        fail(f"prometheus.yml loads {rf}, which compose does not mount")
    ok(f"rule file {rf} is mounted from {p_mounts[rf]}")

# --- recording rules -----------------------------------------------------------------------------
metrics_rs = os.path.join(repo, "crates/golive-server/src/metrics.rs")
known = None
if os.path.exists(metrics_rs):
    known = set(re.findall(r'"((?:golive|process)_[a-z0-9_]+)"', read("crates/golive-server/src/metrics.rs")))
n_rec = n_alert = 0
recorded = set()
for grp in rules.get("groups") or []:
    if not grp.get("name") or not grp.get("rules"):
        fail("a rule group lacks a name or rules")
    for r in grp["rules"]:
        if not r.get("expr") or bool(r.get("record")) == bool(r.get("alert")):
            fail(f"rule {r} needs an expr and exactly one of record/alert")
        if r.get("record"):
            n_rec += 1
            recorded.add(r["record"])
        else:
            n_alert += 1
        for name in re.findall(r"(?<![\w:])((?:golive|process)_[a-z0-9_]+)", str(r["expr"])):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if known is not None and name not in known and base not in known:
                fail(f"rule {r.get('record') or r.get('alert')} uses {name}, which metrics.rs does not define")
        for name in re.findall(r"\b(\w+:\w+:\w+)\b", str(r["expr"])):
            if name not in recorded:
                fail(f"rule {r.get('record') or r.get('alert')} uses {name} before it is recorded")
ok(f"golive.rules.yml: {n_rec} recording rules, {n_alert} alerts, well formed")
if known is None:
    skip("crates/golive-server/src/metrics.rs is absent: metric names in the rules not checked")
else:
    ok(f"every metric the rules use is defined in metrics.rs ({len(known)} names there)")
PY

# Facts from the static checks, as shell variables.
declare -A fact
while IFS= read -r line; do
    fact[${line%%=*}]=${line#*=}
done <"$facts"

step "the HEALTHCHECK command, run here against a stand-in /healthz"
# Python's http.server answers GET /healthz with 200 when a file of that name exists.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
readarray -t hc < <(python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' "${fact[HEALTHCHECK_JSON]}")
run_healthcheck() { # $1: the port GOLIVE_LISTEN names
    env -i PATH="$PATH" GOLIVE_LISTEN="0.0.0.0:$1" timeout 5 "${hc[@]}" >/dev/null 2>&1
}
www=$(mktemp -d)
touch "$www/healthz"
port=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$www" "$port" >/dev/null 2>&1 &
http_pid=$!
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
if run_healthcheck "$port"; then
    ok "healthy when /healthz answers 200 (port taken from GOLIVE_LISTEN=0.0.0.0:$port)"
else
    kill "$http_pid"
    fail "the HEALTHCHECK command fails against a /healthz that answers 200"
fi
rm "$www/healthz"
if run_healthcheck "$port"; then
    kill "$http_pid"
    fail "the HEALTHCHECK command passes on a 404"
fi
ok "unhealthy when /healthz answers 404"
kill "$http_pid"
wait "$http_pid" 2>/dev/null || true
rm -rf "$www"
if run_healthcheck "$port"; then
    fail "the HEALTHCHECK command passes with nothing listening"
fi
ok "unhealthy when nothing listens"

step "optional tools"
if docker compose version >/dev/null 2>&1; then
    # `config` resolves and validates the file without an engine.
    GOLIVE_PUBLIC_IP=192.0.2.1 docker compose -f docker/compose.yaml config --quiet
    GOLIVE_PUBLIC_IP=192.0.2.1 GOLIVE_CLUSTER_SECRET=check docker compose -f docker/compose.cluster.yaml config --quiet
    ok "docker compose config (compose.yaml, compose.cluster.yaml)"
else
    skip "docker compose config: no compose plugin here ($(docker --version 2>/dev/null || echo 'no docker client'))"
fi
if command -v promtool >/dev/null 2>&1; then
    promtool check rules docker/golive.rules.yml
    ok "promtool check rules"
else
    skip "promtool check rules/config: promtool not installed"
fi
if command -v hadolint >/dev/null 2>&1; then
    hadolint docker/Dockerfile
    ok "hadolint"
else
    skip "hadolint: not installed"
fi

if ! $build; then
    printf '\nall checks passed (docker/check.sh --build also runs the build stage outside Docker)\n'
    exit 0
fi

step "the build stage, outside Docker"
ctx=$(mktemp -d)
trap 'rm -f "$facts"; rm -rf "$ctx"' EXIT
# What the image's build sees: the COPY sources, less what Dockerfile.dockerignore drops.
read -ra copied <<<"${fact[COPIED]}"
tar -C "$repo" --exclude=target --exclude=node_modules --exclude=__pycache__ -cf - "${copied[@]}" | tar -C "$ctx" -xf -
ok "copied ${copied[*]} into $ctx"
export CARGO_TARGET_DIR="${GOLIVE_CHECK_TARGET_DIR:-$repo/target/docker-check}"
echo "  run   ${fact[CARGO_CMD]}   (in $ctx, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$ctx" && eval "${fact[CARGO_CMD]}")
bin=$CARGO_TARGET_DIR/release/golive
ok "built $bin from the COPYed files alone, with --locked"

step "the binary with the image's environment"
image_env=(PATH="$PATH")
for k in "${!fact[@]}"; do
    [[ $k == ENV_* ]] && image_env+=("${k#ENV_}=${fact[$k]}")
done
# Without GOLIVE_PUBLIC_IP the image must refuse to start, saying why.
if out=$(env -i "${image_env[@]}" GOLIVE_UDP_PORT=0 timeout 10 "$bin" 2>&1); then
    fail "golive started without GOLIVE_PUBLIC_IP while binding 0.0.0.0"
fi
grep -q -- "--public-ip" <<<"$out" || fail "golive failed without GOLIVE_PUBLIC_IP but did not say to set it: $out"
ok "refuses to start without GOLIVE_PUBLIC_IP: $(grep -m1 -- '--public-ip' <<<"$out")"
# Then with it, on free ports (the image's 8080 and 40000 may be taken here), and the
# HEALTHCHECK command against the real /healthz.
port=$(free_port)
log=$(mktemp)
env -i "${image_env[@]}" GOLIVE_PUBLIC_IP=127.0.0.1 GOLIVE_LISTEN="0.0.0.0:$port" GOLIVE_UDP_PORT=0 "$bin" >"$log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    grep -q '^listening on' "$log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
if ! grep -q '^listening on' "$log"; then
    cat "$log" >&2
    kill "$pid" 2>/dev/null || true
    fail "golive did not start with the image's environment"
fi
ok "golive starts with the image's environment: $(grep -m1 '^listening on' "$log")"
if ! run_healthcheck "$port"; then
    kill "$pid"
    fail "the HEALTHCHECK command fails against the real server"
fi
ok "the HEALTHCHECK command passes against the real /healthz"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
[[ $rc -eq 0 ]] || fail "golive exited $rc on SIGTERM (expected 0)"
ok "SIGTERM: golive exits 0"
rm -f "$log"
printf '\nall checks passed, including the build stage\n'
