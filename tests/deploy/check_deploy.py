#!/usr/bin/python3
"""tests/deploy/check_deploy.py — checks deploy/kubernetes/ and deploy/crwatch.service.

    /usr/bin/python3 tests/deploy/check_deploy.py CRWATCH_BINARY [SOURCE_DIR]

Nothing here talks to a cluster or to systemd: the manifests are read with
a YAML parser (PyYAML, Debian's python3-yaml) and checked against each other
and against the crwatch binary:

- every file parses; the kustomization lists exactly the manifests there;
- a Deployment, a ConfigMap, a Secret and a Service are present;
- the Deployment: 2 replicas, a rollout that can replace the active pod while
  the standby is never ready (maxUnavailable 100%, or Recreate), `stream -c FILE` where
  FILE is the ConfigMap's key mounted from the ConfigMap that exists, the
  port named `metrics` on http.listen's port, /healthz as the liveness and
  /readyz as the readiness probe on that port, PGPASSWORD from a Secret key
  that exists, a grace period for the drain, a non-root securityContext,
  resource requests and limits;
- the ConfigMap's properties: every key is one `crwatch --help` lists (its
  `resource.<id>.*` and `kafka.<prop>` entries are patterns), and crwatch
  itself accepts every value (`crwatch check` with an unreachable database
  exits 2 on a bad key or value before it connects);
- the Service selects the Deployment's pods and its prometheus.io/*
  annotations scrape http.listen's port at /metrics;
- the systemd unit (INI-like) has the keys a safe service needs.

Every problem is printed, naming the file and what is wrong; the exit code
is 1 when there is one, 2 on a usage error, 0 when everything holds.
"""
import os
import re
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    sys.stderr.write("check_deploy: PyYAML is missing (Debian: apt-get install python3-yaml; "
                     "scripts/deps installs it)\n")
    sys.exit(1)

PROPS_MOUNT_DEFAULT = "/etc/crwatch"
MIN_GRACE_SECONDS = 30  # crwatch drains for up to 10 s, then confirms for up to 5 s
PROBES = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
HEADER_WORDS = ("not applied", "check_deploy.py")


class Checker:
    def __init__(self):
        self.problems = []
        self.checks = 0

    def expect(self, ok, where, message):
        self.checks += 1
        if not ok:
            self.problems.append("%s: %s" % (where, message))
        return ok


# ---- crwatch's configuration keys ------------------------------------------

def known_keys(binary):
    """The key names of `crwatch --help`, as compiled patterns."""
    try:
        out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    except OSError as e:
        sys.stderr.write("check_deploy: cannot run %s --help: %s\n" % (binary, e))
        sys.exit(2)
    if out.returncode != 0:
        sys.stderr.write("check_deploy: %s --help exited %d\n" % (binary, out.returncode))
        sys.exit(2)
    names, inside = [], False
    for line in out.stdout.splitlines():
        if line.startswith("Configuration keys"):
            inside = True
            continue
        if inside:
            if not line.strip():
                break
            if line.startswith("  "):
                names.append(line.split()[0])
    if not names:
        sys.stderr.write("check_deploy: no 'Configuration keys' section in %s --help\n" % binary)
        sys.exit(2)
    patterns = []
    for name in names:
        # resource.<id>.table: <id> is a word; kafka.<prop>: anything after the dot.
        parts = re.split(r"(<[^>]+>)", name)
        rx = ""
        for i, part in enumerate(parts):
            if part.startswith("<") and part.endswith(">"):
                rx += ".+" if i == len(parts) - 1 or parts[i + 1:] == [""] else "[A-Za-z0-9_-]+"
            else:
                rx += re.escape(part)
        patterns.append((name, re.compile(rx + r"\Z")))
    return patterns


def parse_properties(text):
    """(lineno, key, value) as crwatch reads them (crw_props_parse), plus the lines it would refuse."""
    pairs, bad = [], []
    for lineno, line in enumerate(text.split("\n"), 1):
        s = line.strip()
        if not s or s[0] in "#!":
            continue
        eq = s.find("=")
        if eq <= 0:
            bad.append((lineno, s))
            continue
        pairs.append((lineno, s[:eq].strip(), s[eq + 1:].strip()))
    return pairs, bad


def parse_listen(value):
    """host:port (or [v6]:port) -> port, or None."""
    m = re.match(r"^(\[[^\]]*\]|[^:\[\]]*):(\d{1,5})$", value or "")
    if not m or int(m.group(2)) > 65535:
        return None
    return int(m.group(2))


def crwatch_accepts(binary, text):
    """None when crwatch accepts the properties, else its message.  No database is reached:
    the configuration is checked before any connection, and the one given does not exist."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    with tempfile.TemporaryDirectory(prefix="check_deploy.") as d:
        path = os.path.join(d, "crwatch.properties")
        with open(path, "w") as f:
            f.write(text)
        try:
            out = subprocess.run(
                [binary, "check", "-c", path, "-d", "host=%s/no-such-socket-dir connect_timeout=1" % d],
                capture_output=True, text=True, timeout=60, env=env, cwd=d)
        except subprocess.TimeoutExpired:
            return "crwatch check did not return within 60 s"
        if out.returncode == 2:
            msg = " ".join(l.strip() for l in out.stderr.splitlines() if l.strip() and not l.startswith("Try "))
            return msg.replace(path, "crwatch.properties") or "crwatch check exited 2"
    return None


# ---- the Kubernetes manifests -----------------------------------------------

def load_manifests(c, kdir):
    docs = []  # (file, doc)
    files = sorted(f for f in os.listdir(kdir) if f.endswith((".yaml", ".yml")))
    c.expect(files, kdir, "no YAML files")
    for f in files:
        path = os.path.join(kdir, f)
        with open(path) as fh:
            text = fh.read()
        head = "\n".join(l for l in text.splitlines()[:12] if l.startswith("#")).lower()
        c.expect(all(w in head for w in HEADER_WORDS), f,
                 "the comment at the top must say it was not applied to a cluster and name check_deploy.py")
        try:
            loaded = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as e:
            c.expect(False, f, "does not parse: %s" % re.sub(r"\s+", " ", str(e).replace('"<unicode string>", ', "")))
            continue
        for d in loaded:
            if c.expect(isinstance(d, dict) and d.get("kind"), f, "a document without a kind"):
                docs.append((f, d))
    return files, docs


def get(d, *path, default=None):
    for p in path:
        if isinstance(d, dict) and p in d:
            d = d[p]
        elif isinstance(d, list) and isinstance(p, int) and -len(d) <= p < len(d):
            d = d[p]
        else:
            return default
    return d


def one_of_kind(c, docs, kind):
    found = [(f, d) for f, d in docs if d.get("kind") == kind and d.get("apiVersion") != "kustomize.config.k8s.io/v1beta1"]
    c.expect(len(found) == 1, "deploy/kubernetes", "expected one %s, found %d" % (kind, len(found)))
    return found[0] if found else (None, None)


def check_kustomization(c, files, docs):
    kust = [(f, d) for f, d in docs if d.get("kind") == "Kustomization"]
    if not c.expect(len(kust) == 1, "deploy/kubernetes", "expected one kustomization.yaml, found %d" % len(kust)):
        return
    f, k = kust[0]
    listed = k.get("resources") or []
    manifests = [x for x in files if x != f]
    for r in listed:
        c.expect(r in files, f, "resources lists %s, which does not exist" % r)
    for m in manifests:
        c.expect(m in listed, f, "resources does not list %s" % m)


def check_strategy(c, f, dep, replicas):
    strategy = get(dep, "spec", "strategy", default={}) or {}
    kind = strategy.get("type", "RollingUpdate")
    if kind == "Recreate":
        return
    mu = get(strategy, "rollingUpdate", "maxUnavailable", default="25%")
    if isinstance(mu, str) and mu.endswith("%"):
        ok = mu[:-1].isdigit() and int(mu[:-1]) >= 100
    else:
        ok = isinstance(mu, int) and isinstance(replicas, int) and mu >= replicas
    c.expect(ok, f, "spec.strategy.rollingUpdate.maxUnavailable is %r, expected 100%% (or type Recreate): the "
             "standby is never ready, and with less a rollout waits for ever for a new pod to be ready before "
             "it removes the old active one, which a new pod waits for" % (mu,))


def check_deployment(c, f, dep, cm, secret, listen_port):
    spec = dep.get("spec") or {}
    replicas = spec.get("replicas")
    c.expect(replicas == 2, f, "spec.replicas is %r, expected 2 (active + standby)" % (replicas,))
    check_strategy(c, f, dep, replicas)
    pod = get(spec, "template", "spec", default={}) or {}
    labels = get(spec, "template", "metadata", "labels", default={}) or {}
    sel = get(spec, "selector", "matchLabels", default={}) or {}
    c.expect(sel and all(labels.get(k) == v for k, v in sel.items()), f,
             "spec.selector.matchLabels %r does not match the pod labels %r" % (sel, labels))

    grace = pod.get("terminationGracePeriodSeconds", 30)
    c.expect(isinstance(grace, int) and grace >= MIN_GRACE_SECONDS, f,
             "terminationGracePeriodSeconds is %r: the drain on SIGTERM needs at least %d"
             % (grace, MIN_GRACE_SECONDS))

    containers = pod.get("containers") or []
    if not c.expect(containers, f, "no containers"):
        return labels
    ctr = next((x for x in containers if x.get("name") == "crwatch"), containers[0])
    where = "%s: container %s" % (f, ctr.get("name"))
    c.expect(ctr.get("image"), where, "no image")

    # stream -c FILE, FILE from the ConfigMap
    args = [str(a) for a in (ctr.get("command") or []) + (ctr.get("args") or [])]
    c.expect("stream" in args, where, "args do not run `stream`: %r" % args)
    conf_path = None
    for flag in ("-c", "--config"):
        if flag in args and args.index(flag) + 1 < len(args):
            conf_path = args[args.index(flag) + 1]
    if c.expect(conf_path, where, "args give no -c FILE"):
        mounts = {m.get("name"): m for m in ctr.get("volumeMounts") or []}
        vols = {v.get("name"): v for v in pod.get("volumes") or []}
        mount = next((m for m in mounts.values() if os.path.dirname(conf_path) == m.get("mountPath", "").rstrip("/")), None)
        if c.expect(mount, where, "no volume is mounted at %s (the directory of -c %s)"
                    % (os.path.dirname(conf_path), conf_path)):
            vol = vols.get(mount.get("name")) or {}
            src = vol.get("configMap")
            if c.expect(src, f, "volume %s mounted at %s is not a ConfigMap" % (mount.get("name"), mount.get("mountPath"))):
                cm_name = get(cm, "metadata", "name")
                c.expect(src.get("name") == cm_name, f, "volume %s refers to ConfigMap %r, but the ConfigMap is %r"
                         % (mount.get("name"), src.get("name"), cm_name))
                base = os.path.basename(conf_path)
                items = src.get("items")
                key = base
                if items:
                    item = next((i for i in items if i.get("path") == base), None)
                    c.expect(item, f, "volume %s has no item with path %s" % (mount.get("name"), base))
                    key = item.get("key") if item else None
                c.expect(key in (get(cm, "data", default={}) or {}), f,
                         "-c %s reads ConfigMap key %r, which %s does not have" % (conf_path, key, cm_name))
    c.expect(os.path.dirname(conf_path or "") == PROPS_MOUNT_DEFAULT, where,
             "the properties are expected under %s, got %r" % (PROPS_MOUNT_DEFAULT, conf_path))

    # the metrics port and the probes
    ports = {p.get("name"): p for p in ctr.get("ports") or []}
    mport = ports.get("metrics")
    if c.expect(mport, where, "no container port named metrics"):
        c.expect(mport.get("containerPort") == listen_port, where,
                 "port metrics is %r, but http.listen's port is %r" % (mport.get("containerPort"), listen_port))
    for probe, path in PROBES.items():
        hg = get(ctr, probe, "httpGet")
        if not c.expect(hg, where, "no %s with httpGet" % probe):
            continue
        c.expect(hg.get("path") == path, where, "%s.httpGet.path is %r, expected %s" % (probe, hg.get("path"), path))
        port = hg.get("port")
        c.expect(port == "metrics" or port == listen_port, where,
                 "%s.httpGet.port is %r, expected metrics (%r, http.listen's port)" % (probe, port, listen_port))

    # PGPASSWORD, and every Secret or ConfigMap key the env refers to
    env = {e.get("name"): e for e in ctr.get("env") or []}
    pw = get(env.get("PGPASSWORD"), "valueFrom", "secretKeyRef")
    c.expect(pw, where, "env PGPASSWORD does not come from a secretKeyRef")
    c.expect("password=" not in " ".join(args).lower(), where, "a password in the args")
    sdata = dict(get(secret, "data", default={}) or {})
    sdata.update(get(secret, "stringData", default={}) or {})
    for e in env.values():
        ref = get(e, "valueFrom", "secretKeyRef")
        if ref:
            c.expect(ref.get("name") == get(secret, "metadata", "name"), where,
                     "env %s refers to Secret %r, which is not here" % (e.get("name"), ref.get("name")))
            c.expect(ref.get("key") in sdata, where,
                     "env %s refers to key %r, which Secret %s does not have" % (e.get("name"), ref.get("key"),
                                                                               get(secret, "metadata", "name")))
        ref = get(e, "valueFrom", "configMapKeyRef")
        if ref:
            c.expect(ref.get("name") == get(cm, "metadata", "name") and ref.get("key") in (cm.get("data") or {}),
                     where, "env %s refers to ConfigMap key %s/%s, which does not exist"
                     % (e.get("name"), ref.get("name"), ref.get("key")))

    # non-root, no escalation, resources
    psc, csc = pod.get("securityContext") or {}, ctr.get("securityContext") or {}
    nonroot = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    c.expect(nonroot is True, where, "runAsNonRoot is not true")
    c.expect(uid is None or (isinstance(uid, int) and uid > 0), where, "runAsUser is %r" % (uid,))
    c.expect(csc.get("allowPrivilegeEscalation") is False, where, "allowPrivilegeEscalation is not false")
    res = ctr.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            c.expect(get(res, kind, r) is not None, where, "resources.%s.%s is not set" % (kind, r))
    return labels


def check_service(c, f, svc, pod_labels, listen_port):
    sel = get(svc, "spec", "selector", default={}) or {}
    c.expect(sel and all(pod_labels.get(k) == v for k, v in sel.items()), f,
             "spec.selector %r does not select the Deployment's pods %r" % (sel, pod_labels))
    ann = get(svc, "metadata", "annotations", default={}) or {}
    c.expect(ann.get("prometheus.io/scrape") == "true", f, 'annotation prometheus.io/scrape is not "true"')
    c.expect(str(ann.get("prometheus.io/port")) == str(listen_port), f,
             "annotation prometheus.io/port is %r, but http.listen's port is %r" % (ann.get("prometheus.io/port"), listen_port))
    c.expect(ann.get("prometheus.io/path") == "/metrics", f,
             "annotation prometheus.io/path is %r, expected /metrics" % (ann.get("prometheus.io/path"),))
    ports = get(svc, "spec", "ports", default=[]) or []
    c.expect(any(p.get("targetPort") in ("metrics", listen_port) for p in ports), f,
             "no port targets the container port metrics (%r)" % (listen_port,))


def check_configmap(c, f, cm, binary, patterns):
    data = cm.get("data") or {}
    props = [(k, v) for k, v in data.items() if k.endswith(".properties")]
    if not c.expect(len(props) == 1, f, "expected one *.properties key in data, found %d" % len(props)):
        return None
    key, text = props[0]
    where = "%s: %s" % (f, key)
    pairs, bad = parse_properties(text or "")
    for lineno, line in bad:
        c.expect(False, where, "line %d: expected 'key = value', got %r" % (lineno, line))
    values = {}
    for lineno, k, v in pairs:
        values[k] = v
        c.expect(any(rx.match(k) for _, rx in patterns), where,
                 "line %d: %r is not a key crwatch knows (crwatch --help)" % (lineno, k))
        c.expect(not re.search(r"\s[#!]", v), where,
                 "line %d: %s's value %r looks like it ends in a comment: comments must be whole lines"
                 % (lineno, k, v))
    port = parse_listen(values.get("http.listen"))
    c.expect(port, where, "http.listen is %r: the probes and /metrics need host:port"
             % (values.get("http.listen"),))
    if "kafka" in (values.get("sink") or "").split(","):
        c.expect(values.get("kafka.bootstrap.servers"), where, "sink=kafka without kafka.bootstrap.servers")
    if not bad:
        msg = crwatch_accepts(binary, text)
        c.expect(msg is None, where, "crwatch refuses it: %s" % msg)
    return port


# ---- the systemd unit --------------------------------------------------------

def parse_unit(text):
    """{section: {key: [values]}} of a systemd unit: comments, continuations, repeated keys."""
    sections, cur, pending = {}, None, ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            cur = sections.setdefault(line[1:-1], {})
            continue
        if cur is None or "=" not in line:
            raise ValueError("not a unit file line: %r" % line)
        k, v = line.split("=", 1)
        cur.setdefault(k.strip(), []).append(v.strip())
    return sections


def seconds(v):
    m = re.match(r"^(\d+)\s*(s|sec|min|m)?$", v or "")
    if not m:
        return None
    return int(m.group(1)) * (60 if m.group(2) in ("min", "m") else 1)


def check_unit(c, path):
    f = "deploy/crwatch.service"
    try:
        with open(path) as fh:
            text = fh.read()
        unit = parse_unit(text)
    except (OSError, ValueError) as e:
        c.expect(False, f, str(e))
        return
    svc = unit.get("Service", {})
    c.expect("Service" in unit, f, "no [Service] section")
    c.expect(get(unit, "Install", "WantedBy"), f, "[Install] has no WantedBy=")

    def last(k):
        v = svc.get(k)
        return v[-1] if v else None

    def want(k, expected):
        c.expect(last(k) == expected, f, "%s= is %r, expected %s" % (k, last(k), expected))

    want("Type", "simple")
    want("User", "crwatch")
    want("Restart", "on-failure")
    want("KillSignal", "SIGTERM")
    want("WorkingDirectory", "/var/lib/crwatch")
    want("StateDirectory", "crwatch")
    want("ProtectSystem", "strict")
    c.expect(last("NoNewPrivileges") in ("yes", "true", "on", "1"), f, "NoNewPrivileges= is not yes")
    c.expect(svc.get("EnvironmentFile"), f, "no EnvironmentFile= (the secrets)")
    rws = " ".join(svc.get("ReadWritePaths") or []).split()
    c.expect("/var/lib/crwatch" in rws, f, "ReadWritePaths= does not hold /var/lib/crwatch")
    prevent = " ".join(svc.get("RestartPreventExitStatus") or []).split()
    c.expect("2" in prevent and "3" in prevent, f,
             "RestartPreventExitStatus= is %r: exits 2 (configuration) and 3 (prerequisite) must not be restarted"
             % " ".join(prevent))
    stop = seconds(last("TimeoutStopSec"))
    c.expect(stop is not None and stop >= MIN_GRACE_SECONDS, f,
             "TimeoutStopSec= is %r: the drain on SIGTERM needs at least %d s" % (last("TimeoutStopSec"), MIN_GRACE_SECONDS))
    exe = (last("ExecStart") or "").split()
    c.expect(exe and exe[0].endswith("/crwatch") and "stream" in exe and "-c" in exe, f,
             "ExecStart= is %r, expected /…/crwatch stream -c FILE" % last("ExecStart"))
    c.expect("password=" not in (last("ExecStart") or "").lower(), f, "a password in ExecStart=")


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        sys.stderr.write(__doc__)
        return 2
    binary = os.path.abspath(argv[1])
    root = argv[2] if len(argv) > 2 else os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.access(binary, os.X_OK):
        sys.stderr.write("check_deploy: %s is not an executable crwatch\n" % binary)
        return 2
    kdir = os.path.join(root, "deploy", "kubernetes")
    if not os.path.isdir(kdir):
        sys.stderr.write("check_deploy: no %s\n" % kdir)
        return 2

    c = Checker()
    patterns = known_keys(binary)
    files, docs = load_manifests(c, kdir)
    check_kustomization(c, files, docs)
    fd, dep = one_of_kind(c, docs, "Deployment")
    fc, cm = one_of_kind(c, docs, "ConfigMap")
    fs, secret = one_of_kind(c, docs, "Secret")
    fv, svc = one_of_kind(c, docs, "Service")
    port = check_configmap(c, fc, cm, binary, patterns) if cm else None
    labels = check_deployment(c, fd, dep, cm or {}, secret or {}, port) if dep else {}
    if svc:
        check_service(c, fv, svc, labels or {}, port)
    check_unit(c, os.path.join(root, "deploy", "crwatch.service"))

    for p in c.problems:
        sys.stderr.write("check_deploy: %s\n" % p)
    if c.problems:
        sys.stderr.write("check_deploy: %d problem(s) in %d checks\n" % (len(c.problems), c.checks))
        return 1
    print("check_deploy: ok: %d checks on deploy/kubernetes (%s) and deploy/crwatch.service"
          % (c.checks, ", ".join(files)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
