#!/usr/bin/env python3
"""Image roots and templates (issue 14's targets in parentheses), each figure next to its
baseline measured in the same invocation:

- run:     `safehouse run --image IMG -- /bin/true` on a 5-layer image against `run` on the
           host root (<= 1.2x), bubblewrap as an outside reference; alternating hyperfine
           rounds so both see the same load;
- tti:     the daemon's time to interactive from a template (create with `template` ->
           first exec answered), p50/p90 (p50 <= 10 ms), interleaved with the same for the
           host root;
- density: K idle sandboxes from one image (<= 2 MiB each): host MemAvailable drop, the
           sandboxes' cgroup memory and the daemon's RSS growth, per sandbox; the store's
           disk usage before and after (layers shared, not copied); the host root's same
           figures in the same invocation;
- pull:    pull + unpack from a loopback registry (Debian's docker-registry), cold (empty
           store each round), against `skopeo copy docker://... oci:DIR` + `umoci unpack`
           of the same image into empty dirs (>= their throughput);
- build:   a small Dockerfile (FROM the local image, RUN x3 without network, COPY, ENV,
           WORKDIR): first build against `buildah bud` of the same file (the base in
           buildah's storage beforehand, as it is in ours), and the cached rebuild (<= 1 s).

The image: the cached Debian bookworm root with python3 (tests/images/debian.py, ~210 MB)
split into 5 layers (base, /usr/lib, /usr/share, the rest of /usr, /var), gzip.

    SAFEHOUSE_BIN=target/safehouse .venv/bin/python scripts/bench_images.py [--only SECTION,...]
        [--runs N] [--tti N] [--density K] [--pull-rounds R] [--build-rounds R]
Root only (image roots on the daemon, template builds).
"""
import http.client
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from e2e.support import BIN, Daemon  # noqa: E402  (BIN: SAFEHOUSE_BIN, else the built one)
from images.debian import debian_tar  # noqa: E402
from images.oci import Image, sha  # noqa: E402

ARGS = sys.argv[1:]


def arg(name, default):
    return type(default)(ARGS[ARGS.index(name) + 1]) if name in ARGS else default


RUNS = arg("--runs", 300)
TTI_N = arg("--tti", 200)
DENSITY = arg("--density", 1000)
PULL_ROUNDS = arg("--pull-rounds", 3)
BUILD_ROUNDS = arg("--build-rounds", 3)
ONLY = set(arg("--only", "run,tti,density,pull,build").split(","))
TAG = "bench-debian5"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def sh(*argv, env=None, timeout=1800):
    p = subprocess.run([str(a) for a in argv], capture_output=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {p.returncode}: "
                           f"{p.stderr.decode(errors='replace')[-2000:]}")
    return p.stdout.decode(errors="replace")


def timed_cmd(*argv, env=None):
    t = time.perf_counter()
    sh(*argv, env=env)
    return time.perf_counter() - t


# ---------------------------------------------------------------- the image


def layer_of(name):
    n = name[2:] if name.startswith("./") else name
    for i, prefix in enumerate(("usr/lib/", "usr/share/", "usr/", "var/"), start=1):
        if n.startswith(prefix) and n != prefix:
            return i
    return 0


def five_layer_image():
    """The Debian root split by path into 5 layers; hard links go with their target."""
    src = debian_tar(("python3",))
    outs = [tarfile.open(fileobj=io.BytesIO(), mode="w", format=tarfile.PAX_FORMAT) for _ in range(5)]
    where = {}
    with tarfile.open(src) as t:
        for m in t:
            i = where.get(m.linkname, layer_of(m.name)) if m.islnk() else layer_of(m.name)
            where[m.name] = i
            outs[i].addfile(m, t.extractfile(m) if m.isreg() else None)
    raws = []
    for o in outs:
        o.close()
        raws.append(o.fileobj.getvalue())
    img = Image(raws, cmd=["/bin/bash"])
    add_history(img, ["base", "/usr/lib", "/usr/share", "/usr", "/var"])
    img.raw_size = sum(len(r) for r in raws)
    img.blob_size = sum(d["size"] for d in img.layer_descs)
    return img


def add_history(img, what):
    """A config `history` entry per layer, as registries' images have (buildah's --layers
    needs one per layer), and the manifest that names the new config."""
    del img.blobs[sha(img.config)]
    cfg = json.loads(img.config)
    cfg["history"] = [{"created_by": f"bench: {w}"} for w in what]
    img.config = json.dumps(cfg).encode()
    img.blobs[sha(img.config)] = img.config
    man = json.loads(img.manifest)
    man["config"].update(digest=sha(img.config), size=len(img.config))
    img.manifest = json.dumps(man).encode()
    img.digest = sha(img.manifest)


def store_env(data):
    return {**os.environ, "SAFEHOUSE_DATA_DIR": str(data)}


def import_layout(data, layout, tag=TAG):
    sh(BIN, "image", "import", layout, "--tag", tag, env=store_env(data))


def du(path):
    return int(sh("du", "-sb", path).split()[0])


# ---------------------------------------------------------------- run --image


def bwrap_cmd():
    c = "bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --ro-bind /etc /etc"
    for d in ("bin", "sbin", "lib", "lib64"):
        p = f"/{d}"
        if os.path.islink(p):
            c += f" --symlink {os.readlink(p)} {p}"
        elif os.path.isdir(p):
            c += f" --ro-bind {p} {p}"
    return c + " --proc /proc --dev /dev --tmpfs /tmp /bin/true"


def bench_run(data):
    cmds = {"run --image (5 layers)": f"{BIN} run --data-dir {data} --image {TAG} -- /bin/true",
            "run (host root)": f"{BIN} run -- /bin/true"}
    if shutil.which("bwrap"):
        cmds["bwrap (reference)"] = bwrap_cmd()
    for c in cmds.values():  # each works before it is timed
        sh(*c.split())
    times = {k: [] for k in cmds}
    rounds = max(1, RUNS // 25)
    with tempfile.TemporaryDirectory() as d:
        for _ in range(rounds):
            for name, cmd in cmds.items():
                out = os.path.join(d, "r.json")
                sh("hyperfine", "-N", "--warmup", "3", "--runs", "25", "--export-json", out, cmd)
                times[name] += json.load(open(out))["results"][0]["times"]
    base = statistics.median(times["run (host root)"])
    print(f"start to exit of /bin/true, alternating hyperfine rounds ({rounds} x 25 runs each):")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"  {name:<26} median {m * 1000:7.2f} ms   p90 {pct(ts, .9) * 1000:7.2f} ms   "
              f"{m / base:.2f}x the host root")
    print(f"  target: run --image <= 1.2x run on the host root", flush=True)


# ---------------------------------------------------------------- the daemon


class Client:
    """One kept-alive HTTP connection with the admin key."""

    def __init__(self, d):
        self.d = d
        self.conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=120)

    def call(self, method, path, body=None):
        headers = {"Authorization": f"Bearer {self.d.admin_key}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        payload = r.read()
        if r.status >= 400:
            raise RuntimeError(f"{method} {path}: {r.status} {payload[:300]!r}")
        return json.loads(payload) if payload else None


def bench_tti(d):
    cl = Client(d)
    bodies = {"template": {"template": TAG, "timeout_s": 600}, "host root": {"timeout_s": 600}}
    tti = {k: [] for k in bodies}
    ids = []
    for _ in range(3):  # warm-up: the image's first lease, caches
        for name, body in bodies.items():
            sid = cl.call("POST", "/v1/sandboxes", body)["id"]
            root = cl.call("GET", f"/v1/sandboxes/{sid}/policy")["policy"]["filesystem"].get("rootfs", "host")
            assert root.startswith("image:sha256:") == (name == "template"), (name, root)
            cl.call("DELETE", f"/v1/sandboxes/{sid}")
    for _ in range(TTI_N):
        for name, body in bodies.items():
            t0 = time.perf_counter()
            sb = cl.call("POST", "/v1/sandboxes", body)
            r = cl.call("POST", f"/v1/sandboxes/{sb['id']}/exec", {"cmd": ["echo", "hi"]})
            tti[name].append((time.perf_counter() - t0) * 1000)
            assert r["stdout"] == "hi\n", r
            ids.append(sb["id"])
        if len(ids) >= 40:  # keep a few alive, like a real fleet, but not all
            for sid in ids:
                cl.call("DELETE", f"/v1/sandboxes/{sid}")
            ids = []
    for sid in ids:
        cl.call("DELETE", f"/v1/sandboxes/{sid}")
    base = statistics.median(tti["host root"])
    print(f"daemon time to interactive (create -> first `echo` answered), {TTI_N} each, interleaved:")
    for name, ts in tti.items():
        print(f"  {name:<12} p50 {pct(ts, .5):6.2f} ms   p90 {pct(ts, .9):6.2f} ms   p99 {pct(ts, .99):6.2f} ms   "
              f"{statistics.median(ts) / base:.2f}x the host root")
    print("  target: p50 <= 10 ms from a template", flush=True)


def meminfo(key):
    with open("/proc/meminfo") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":")) * 1024


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) * 1024


def cg_usage(sid):
    try:
        with open(f"/sys/fs/cgroup/memory/safehouse/{sid}/memory.usage_in_bytes") as f:
            return int(f.read())
    except OSError:
        return 0


def density(d, body, n, label, data):
    cl = Client(d)
    sh("sync")
    with open("/proc/sys/vm/drop_caches", "w") as f:  # page cache out of the MemAvailable delta's noise
        f.write("3\n")
    time.sleep(1)
    avail0, shmem0, rss0 = meminfo("MemAvailable"), meminfo("Shmem"), rss(d.proc.pid)
    store0 = du(Path(data) / "images")
    made, lock, err = [], threading.Lock(), []

    def worker(k):
        c = Client(d)
        try:
            for _ in range(k):
                sb = c.call("POST", "/v1/sandboxes", body)
                with lock:
                    made.append(sb["id"])
        except Exception as e:  # noqa: BLE001 - reported below with how far it got
            err.append(str(e))
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n // 4 + (i < n % 4),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    time.sleep(2)
    k = len(made)
    avail1, shmem1, rss1 = meminfo("MemAvailable"), meminfo("Shmem"), rss(d.proc.pid)
    usage = sum(cg_usage(s) for s in made)
    store1 = du(Path(data) / "images")
    last = cl.call("POST", f"/v1/sandboxes/{made[-1]}/exec", {"cmd": ["cat", "/etc/debian_version"]}) if made else {}
    mib = 1 << 20
    print(f"  {label}: {k} of {n} idle sandboxes created in {dt:.1f} s ({k / dt:.0f}/s); the last answers "
          f"{last.get('stdout', '').strip()!r}" + (f"; stopped by: {err[0][:300]}" if err else ""))
    if k:
        print(f"    per sandbox: host MemAvailable drop {(avail0 - avail1) / k / mib:.2f} MiB (everything: kernel "
              f"objects, agents, daemon), of which sandbox cgroups {usage / k / mib:.2f} MiB, daemon RSS growth "
              f"{(rss1 - rss0) / k / 1024:.0f} KiB, Shmem (tmpfs) {(shmem1 - shmem0) / k / 1024:.0f} KiB")
        print(f"    image store on disk: {store0 / mib:.1f} MiB before, {store1 / mib:.1f} MiB with {k} sandboxes",
              flush=True)
    t0 = time.perf_counter()
    Client(d).call("POST", "/v1/kill-all", {})
    print(f"    kill-all of {k}: {time.perf_counter() - t0:.1f} s", flush=True)
    time.sleep(5)
    return (avail0 - avail1) / max(k, 1)


def bench_density(d, data):
    print(f"density: {DENSITY} idle sandboxes at once (4 parallel clients), one daemon:")
    img = density(d, {"template": TAG, "timeout_s": 3600}, DENSITY, "from the image (template)", data)
    host = density(d, {"timeout_s": 3600}, DENSITY, "host root (baseline)", data)
    print(f"  MemAvailable drop per sandbox: image {img / 2**20:.2f} MiB, host root {host / 2**20:.2f} MiB "
          f"({img / host:.2f}x); target <= 2 MiB each", flush=True)


# ---------------------------------------------------------------- pull


def bench_pull(img, work):
    from images.registry import Registry
    reg = Registry()
    try:
        ref = img.push(reg.addr, "bench/debian5", "latest")
        ours, skopeo, umoci = [], [], []
        for r in range(PULL_ROUNDS):
            data = Path(work) / f"pull-store-{r}"
            data.mkdir()
            sh("sync")
            ours.append(timed_cmd(BIN, "image", "pull", "-q", ref, env=store_env(data)))
            layout, bundle = Path(work) / f"skopeo-{r}", Path(work) / f"bundle-{r}"
            sh("sync")
            skopeo.append(timed_cmd("skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}",
                                    f"oci:{layout}:latest"))
            umoci.append(timed_cmd("umoci", "unpack", "--image", f"{layout}:latest", bundle))
            n_ours = int(sh("find", data / "images" / "layers", "-xdev").count("\n"))
            n_theirs = int(sh("find", bundle / "rootfs", "-xdev").count("\n"))
            shutil.rmtree(data)
            shutil.rmtree(layout)
            shutil.rmtree(bundle)
        both = [s + u for s, u in zip(skopeo, umoci)]
        mb = img.raw_size / 1e6
        o, b = statistics.median(ours), statistics.median(both)
        print(f"pull + unpack of a {len(img.layer_descs)}-layer image ({img.blob_size / 1e6:.0f} MB gzip, "
              f"{mb:.0f} MB of tar) from docker-registry on loopback, cold, {PULL_ROUNDS} rounds alternating:")
        print(f"  safehouse image pull          median {o:6.2f} s  = {mb / o:6.1f} MB/s (tar bytes)   "
              f"all {[round(x, 2) for x in ours]}")
        print(f"  skopeo copy + umoci unpack    median {b:6.2f} s  = {mb / b:6.1f} MB/s   "
              f"(skopeo {statistics.median(skopeo):.2f} s, umoci {statistics.median(umoci):.2f} s)   "
              f"all {[round(x, 2) for x in both]}")
        print(f"  throughput ratio ours/theirs: {b / o:.2f}x (target >= 1.0x); entries unpacked: ours {n_ours} "
              f"(store layer dirs), umoci {n_theirs} (rootfs)", flush=True)
    finally:
        reg.close()


# ---------------------------------------------------------------- template build

DOCKERFILE = f"""ARG BASE={TAG}
FROM $BASE
ENV APP_HOME=/opt/app PYTHONDONTWRITEBYTECODE=1
WORKDIR /opt/app
COPY app.py settings.json ./
RUN python3 -m compileall -q /opt/app && mkdir -p /opt/app/data
RUN useradd -m -u 1000 app && chown -R app:app /opt/app
RUN python3 -c "import json; json.dump({{'built': True}}, open('/opt/app/data/build.json', 'w'))"
USER app
CMD ["python3", "/opt/app/app.py"]
"""


def build_context(work):
    ctx = Path(work) / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "app.py").write_text("import json\nprint(json.load(open('/opt/app/data/build.json')))\n" * 20)
    (ctx / "settings.json").write_text(json.dumps({"k": list(range(500))}))
    return ctx


# crun (buildah's default runtime here) refuses hybrid cgroups ("cgroups in hybrid mode not
# supported"): runc, which works on this cgroup v1 host. Default isolation (OCI), default network.
BUILDAH_RUNTIME = ["--runtime", "runc"]


def bench_build(data, img, work):
    ctx = build_context(work)
    env = store_env(data)
    buildah = shutil.which("buildah")
    bbase = None
    if buildah:
        # buildah names the pulled image after the layout's path, which must then be a valid
        # reference (mkdtemp's random part may not be): a path of our own, removed below.
        layout = img.write_layout(Path(f"/tmp/safehouse-bench-buildah-{os.getpid()}"))
        bbase = "localhost/" + TAG + ":latest"
        before = set(sh("buildah", "images", "-a", "-q", "--no-trunc").split())
        iid = sh("buildah", "pull", "-q", f"oci:{layout}:latest").split()[-1]
        sh("buildah", "tag", iid, bbase)
    try:
        ours, theirs, theirs_layers = [], [], []
        for _ in range(BUILD_ROUNDS):
            ours.append(timed_cmd(BIN, "template", "build", "-q", "--no-cache", "--tag", "bench-app", ctx, env=env))
            if buildah:
                theirs.append(timed_cmd("buildah", "bud", "-q", *BUILDAH_RUNTIME, "--no-cache", "--build-arg", f"BASE={bbase}",
                                        "-t", "bench-app", ctx))
                theirs_layers.append(timed_cmd("buildah", "bud", "-q", *BUILDAH_RUNTIME, "--layers", "--no-cache", "--build-arg",
                                               f"BASE={bbase}", "-t", "bench-app-layers", ctx))
        out = sh(BIN, "run", "--data-dir", data, "--image", "bench-app")
        assert "'built': True" in out, out
        cached = [timed_cmd(BIN, "template", "build", "-q", "--tag", "bench-app", ctx, env=env) for _ in range(5)]
        cached_theirs = [timed_cmd("buildah", "bud", "-q", *BUILDAH_RUNTIME, "--layers", "--build-arg", f"BASE={bbase}",
                                   "-t", "bench-app-layers", ctx) for _ in range(5)] if buildah else []
        o = statistics.median(ours)
        print(f"template build of a small Dockerfile (FROM the local 5-layer image, COPY, ENV, WORKDIR, 3 RUN), "
              f"{BUILD_ROUNDS} rounds alternating:")
        print(f"  safehouse template build --no-cache   median {o:6.2f} s   all {[round(x, 2) for x in ours]}")
        if buildah:
            t, tl = statistics.median(theirs), statistics.median(theirs_layers)
            print(f"  buildah bud --no-cache                median {t:6.2f} s   all {[round(x, 2) for x in theirs]}   "
                  f"ours {o / t:.2f}x (target <= 1.0x)")
            print(f"  buildah bud --layers --no-cache       median {tl:6.2f} s   ours {o / tl:.2f}x "
                  f"(a layer per step, as ours)")
        print(f"  cached rebuild: safehouse median {statistics.median(cached) * 1000:.0f} ms (target <= 1 s)"
              + (f"; buildah bud --layers (cache hit) median {statistics.median(cached_theirs) * 1000:.0f} ms"
                 if cached_theirs else ""), flush=True)
    finally:
        if buildah:
            # Only what this run made (the storage may hold other users' images).
            mine = set(sh("buildah", "images", "-a", "-q", "--no-trunc").split()) - before
            subprocess.run(["buildah", "rmi", "-f", *mine], capture_output=True)
            shutil.rmtree(layout, ignore_errors=True)


# ---------------------------------------------------------------- main


def main():
    if os.geteuid() != 0:
        sys.exit("bench_images.py needs root (image roots on the daemon, template builds)")
    print(f"machine: {os.cpu_count()} cores, kernel {os.uname().release}, load {os.getloadavg()[0]:.1f}; "
          f"date {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}; binary {BIN}", flush=True)
    work = tempfile.mkdtemp(prefix="safehouse-bench-images-")
    data = Path(work) / "data"
    data.mkdir()
    try:
        t0 = time.perf_counter()
        img = five_layer_image()
        layout = img.write_layout(Path(work) / "layout")
        import_layout(data, layout)
        print(f"image: Debian bookworm + python3 in {len(img.layer_descs)} layers, {img.raw_size / 1e6:.0f} MB of tar, "
              f"{img.blob_size / 1e6:.0f} MB gzip (made and imported in {time.perf_counter() - t0:.0f} s)", flush=True)
        if "run" in ONLY:
            bench_run(data)
        if ONLY & {"tti", "density"}:
            import resource
            d = Daemon(data_dir=str(data), nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[1])  # as high as allowed
            d.start()
            try:
                if "tti" in ONLY:
                    bench_tti(d)
                if "density" in ONLY:
                    bench_density(d, data)
            finally:
                d.kill_sandboxes()
                d.stop()
        if "pull" in ONLY:
            bench_pull(img, work)
        if "build" in ONLY:
            bench_build(data, img, work)
    finally:
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
