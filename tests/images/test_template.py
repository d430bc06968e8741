"""`safehouse template build`: a Dockerfile becomes a template. RUN steps run in
sandboxes on the image built so far, with egress only to the package registries of the
host's own apt and pip configuration; each step's changes are a layer; steps are cached
by (parent, instruction, inputs); a failed step names its line and keeps its log."""
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from e2e.support import IS_ROOT, skip_or_fail

from .conftest import Cli, require_bin, rm_rf
from .debian import debian_tar, host_apt_sources
from .oci import Image, busybox_layer


@pytest.fixture(scope="module")
def built():
    """A data dir of its own with a busybox base ("bb") and a Debian base ("debian",
    from the host's apt sources, tests/images/debian.py)."""
    if not IS_ROOT:
        skip_or_fail("root mode: the test runner is not root")
    require_bin()
    d = Path(tempfile.mkdtemp(prefix="safehouse-template-"))
    os.chmod(d, 0o755)
    cli = Cli(d / "data")
    bb = Image([busybox_layer(d).bytes()], cmd=["/bin/sh"])
    cli("image", "import", str(bb.write_layout(d / "bb")), "--tag", "bb", "-q", check=0)
    cli("image", "import", str(debian_tar(("python3",))), "--tag", "debian", "-q", check=0)
    yield cli, d
    rm_rf(d)


def context(base, files):
    ctx = Path(tempfile.mkdtemp(prefix="ctx-", dir=base))
    for name, text in files.items():
        p = ctx / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return ctx


def build(cli, ctx, tag, *extra, check=None, timeout=900):
    return cli("template", "build", "--tag", tag, *extra, str(ctx), check=check, timeout=timeout)


def host_apt_hosts():
    """The hosts of the host's apt sources, read here independently of safehouse."""
    hosts = []
    for f in host_apt_sources():
        for line in open(f):
            line = line.strip()
            if line.startswith("#"):
                continue
            for m in re.finditer(r"https?://([^/\s]+)", line):
                if m.group(1) not in hosts:
                    hosts.append(m.group(1))
    return hosts


def test_apt_install_builds_and_the_template_runs_it(built):
    cli, d = built
    assert not shutil.which("hello"), "the host has no GNU hello (the contrast)"
    apt_hosts = host_apt_hosts()
    if not apt_hosts:
        skip_or_fail("the host has no apt sources")
    ctx = context(d, {"Dockerfile": (
        "FROM debian\n"
        "RUN apt-get update \\\n"
        " && apt-get install -y --no-install-recommends hello \\\n"
        " && rm -rf /var/lib/apt/lists/*\n"
        "CMD [\"hello\"]\n")})
    p = build(cli, ctx, "hello-tpl", check=0)
    allowed = re.search(r"RUN steps may reach (.*)", p.err).group(1).split(", ")
    assert all(h in allowed for h in apt_hosts), (apt_hosts, allowed)
    assert "Setting up hello" in p.err, p.err[-3000:]
    # The template runs it (its CMD), and the host still has no hello.
    r = cli("run", "--image", "hello-tpl", "-q", check=0, timeout=60)
    assert r.out.strip() == "Hello, world!", r.out + r.err
    assert not shutil.which("hello")
    ls = cli("image", "ls", check=0).out
    assert re.search(r"^hello-tpl\s+template\s", ls, re.M), ls

    # Rebuilt unchanged: every step cached, no sandbox started, the same template.
    digest = json.loads(cli("image", "inspect", "hello-tpl", check=0).out)["digest"]
    p = build(cli, ctx, "hello-tpl", check=0)
    m = re.search(r"built template hello-tpl \((\w+)\) in ([\d.]+)s: (\d+) steps, (\d+) cached", p.err)
    assert m and m.group(4) == "1", p.err
    assert "Setting up hello" not in p.err
    assert json.loads(cli("image", "inspect", "hello-tpl", check=0).out)["digest"] == digest


def test_run_network_reaches_only_the_registries(built):
    cli, d = built
    # A host no apt or pip configuration names: the gateway refuses it (busybox wget
    # goes through http_proxy like apt does).
    ctx = context(d, {"Dockerfile": "FROM bb\nRUN wget -q -O /got http://example.com/ && echo FETCHED\n"})
    p = build(cli, ctx, "net", check=1)
    assert "| FETCHED" not in p.err and "403 Forbidden" in p.err, p.err
    assert "Dockerfile line 2" in p.err and "failed with exit status" in p.err, p.err


def test_layers_cache_and_deletions(built):
    cli, d = built
    ctx = context(d, {"a.txt": "one\n", "sub/b.txt": "two\n", "Dockerfile": (
        "FROM bb\n"
        "ARG WHO=world\n"
        "ENV GREETING=\"hello $WHO\"\n"
        "RUN mkdir -p /data/cache && echo x > /data/cache/x && echo y > /data/keep && rm /etc/motd 2>/dev/null; true\n"
        "COPY a.txt sub /opt/app/\n"
        "RUN rm -rf /data/cache && rm /data/keep && echo $WHO > /data/who\n"
        "WORKDIR /opt/app\n"
        "USER 1000:1000\n"
        "RUN id -u > /tmp/uid-at-build; true\n"
        "CMD [\"sh\", \"-c\", \"echo $GREETING\"]\n")})
    p = build(cli, ctx, "tpl", check=0)
    assert "0 cached" in p.err, p.err
    r = cli("run", "--image", "tpl", "-q", check=0)
    assert r.out.strip() == "hello world"
    r = cli("run", "--image", "tpl", "-q", "--", "sh", "-c",
            "pwd; id -u; cat a.txt b.txt; ls /data; cat /data/who; ls -ld /tmp | cut -c1-10", check=0)
    assert r.out.split() == ["/opt/app", "1000", "one", "two", "who", "world", "drwxrwxrwt"], r.out
    # Unchanged: all cached. A changed COPY input: that step and the ones after it run.
    p = build(cli, ctx, "tpl", check=0)
    assert re.search(r": 10 steps, 4 cached", p.err), p.err
    (ctx / "a.txt").write_text("changed\n")
    p = build(cli, ctx, "tpl", check=0)
    assert re.search(r": 10 steps, 1 cached", p.err), p.err
    assert cli("run", "--image", "tpl", "-q", "--", "cat", "a.txt", check=0).out == "changed\n"
    # A build argument is an input of the RUN steps after it.
    p = build(cli, ctx, "tpl", "--build-arg", "WHO=you", check=0)
    assert re.search(r": 10 steps, 0 cached", p.err), p.err
    assert cli("run", "--image", "tpl", "-q", check=0).out.strip() == "hello you"


def test_a_failed_step_names_its_line_and_keeps_its_log(built):
    cli, d = built
    ctx = context(d, {"Dockerfile": "FROM bb\nRUN echo fine\n\nRUN echo about to fail && exit 3\nRUN echo never\n"})
    p = build(cli, ctx, "bad", check=1)
    m = re.search(r"step 3/4 \(Dockerfile line 4: RUN echo about to fail && exit 3\) failed with exit status 3; its log: (\S+)", p.err)
    assert m, p.err
    assert "about to fail" in Path(m.group(1)).read_text()
    assert "never" not in p.err
    assert "bad" not in cli("image", "ls", check=0).out.split()


@pytest.mark.parametrize("dockerfile,line,says", [
    ("FROM bb\nRUN true\nFROM bb\n", 3, "multi-stage"),
    ("FROM bb\nADD https://example.com/x /x\n", 2, "remote sources"),
    ("FROM bb\nCOPY ../etc/passwd /x\n", 2, "outside the build context"),
    ("FROM bb\nCOPY missing /x\n", 2, "not in the build context"),
    ("FROM nosuchimage.invalid/x\n", 1, "cannot pull"),
    ("FROM bb\nHEALTHCHECK CMD true\n", 2, "HEALTHCHECK"),
])
def test_bad_dockerfiles_are_refused_with_the_line(built, dockerfile, line, says):
    cli, d = built
    ctx = context(d, {"Dockerfile": dockerfile})
    p = build(cli, ctx, "refused", check=1, timeout=120)
    assert f"line {line}" in p.err and says in p.err, p.err
    assert "panicked" not in p.err


def test_build_steps_keep_only_the_file_capabilities(built):
    """A RUN step's root keeps CAP_CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID and
    SETUID (0xfb) over its own user namespace, with no_new_privs; nothing that mounts or
    reaches the host. A sandbox run from the template has none, as always."""
    cli, d = built
    ctx = context(d, {"Dockerfile": (
        "FROM bb\n"
        "RUN grep -E '^(CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status"
        " && (mount -t tmpfs none /mnt && echo MOUNTED || echo mount refused)"
        " && (chown 1234:1234 /etc/passwd && echo chowned)\n")})
    p = build(cli, ctx, "caps", check=0)
    assert re.search(r"CapEff:\s+00000000000000fb", p.err) and re.search(r"CapBnd:\s+00000000000000fb", p.err), p.err
    assert re.search(r"CapAmb:\s+0000000000000000", p.err) and re.search(r"NoNewPrivs:\s+1", p.err), p.err
    assert "| mount refused" in p.err and "| MOUNTED" not in p.err and "| chowned" in p.err, p.err
    r = cli("run", "--image", "caps", "-q", "--", "sh", "-c",
            "grep CapEff /proc/self/status; stat -c %u /etc/passwd", check=0)
    assert r.out.split() == ["CapEff:", "0000000000000000", "1234"], r.out


def test_setid_chmods_in_run_steps_succeed_without_the_bits(built):
    """Package scripts set setuid/setgid bits (fontconfig's `chmod 2775`): in a RUN step the
    call succeeds without running, so the mode stays what it was (755 here; the layer would
    lose the bits anyway); outside a build the same chmod is refused (the control)."""
    cli, d = built
    ctx = context(d, {"Dockerfile": "FROM bb\nRUN mkdir /fonts && chmod 2775 /fonts && cp /bin/busybox /bin/suidbox "
                                    "&& chmod 4755 /bin/suidbox && stat -c %a /fonts /bin/suidbox > /modes\n"})
    build(cli, ctx, "setid", check=0)
    p = cli("run", "--quiet", "--image", "setid", "--", "/bin/sh", "-c", "cat /modes; stat -c %a /fonts /bin/suidbox",
            check=0)
    assert p.out == "755\n755\n755\n755\n", p.out
    p = cli("run", "--quiet", "--image", "setid", "--", "/bin/sh", "-c", "mkdir /tmp/x && chmod 2775 /tmp/x")
    assert p.returncode != 0 and "Operation not permitted" in p.err, (p.returncode, p.err)


def test_copy_wildcards_and_dockerignore(built):
    """Wildcards expand in the context; .dockerignore keeps files out of the layer and out
    of the cache key (changing an ignored file rebuilds nothing)."""
    cli, d = built
    ctx = context(d, {"Dockerfile": "FROM bb\nCOPY *.py /app/\nCOPY conf/ /conf/\n",
                      "a.py": "a", "b.py": "b", "notes.txt": "n", "secret.py": "s",
                      "conf/app.ini": "ini", "conf/private.key": "k",
                      ".dockerignore": "# keep secrets out\nsecret.py\n**/*.key\n"})
    build(cli, ctx, "wild", check=0)
    p = cli("run", "--quiet", "--image", "wild", "--", "/bin/sh", "-c", "ls /app /conf", check=0)
    assert p.out.split() == ["/app:", "a.py", "b.py", "/conf:", "app.ini"], p.out
    # An ignored file changing is no input: every step cached.
    (ctx / "secret.py").write_text("changed")
    (ctx / "conf/private.key").write_text("changed")
    p = build(cli, ctx, "wild", check=0)
    assert "3 steps, 2 cached" in p.err, p.err  # FROM is no cache entry
    # A kept file changing is: that COPY runs again, and every step after it.
    (ctx / "a.py").write_text("a2")
    p = build(cli, ctx, "wild", check=0)
    assert "3 steps, 0 cached" in p.err, p.err
    bad = context(d, {"Dockerfile": "FROM bb\nCOPY *.none /x/\n"})
    p = build(cli, bad, "wild-bad", check=1)
    assert "line 2" in p.err and "no file in the build context" in p.err, p.err
