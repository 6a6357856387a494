"""docker build with the classic builder (issue #5): the real docker CLI (DOCKER_BUILDKIT=0, so it
uses POST /build), docker-py and the raw API."""

import gzip
import http.server
import io
import json
import os
import tarfile
import threading
import time
from urllib.parse import urlencode

import pytest


def build(b, ctx, *args, check=True, timeout=300):
    # No buildx plugin here; say so explicitly so the CLI always takes the classic path.
    b.env["DOCKER_BUILDKIT"] = "0"
    return b.docker("build", *args, str(ctx), check=check, timeout=timeout)


def write(ctx, files):
    for name, text in files.items():
        p = ctx / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def inspect(b, ref):
    return json.loads(b.docker("image", "inspect", ref).stdout)[0]


def context_tar(files, gz=False):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            data = data.encode() if isinstance(data, str) else data
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            t.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw) if gz else raw


def api_build(b, query, body, content_type="application/x-tar"):
    r = b.api("POST", "/build?" + query, body=body, headers={"Content-Type": content_type},
              timeout=300)
    msgs = [json.loads(line) for line in r.body.splitlines() if line.strip()] \
        if r.status == 200 else []
    return r, msgs


def no_containers(b):
    assert b.docker("ps", "-aq").stdout.strip() == ""
    assert json.loads(b.api("GET", "/containers/json?all=1").body) == []


EVERY = """# syntax=docker/dockerfile:1
# escape=\\
ARG BASE=busybox
FROM ${BASE} AS base
LABEL org.example.team="core" version=1
MAINTAINER someone@example.com
ENV APP_HOME=/app \\
    GREETING=hello
ARG NAME=world
WORKDIR $APP_HOME
COPY app.sh ./
COPY --chown=65534:65534 --chmod=0640 conf/a.conf conf/
ADD bundle.tar /opt/
RUN chmod +x app.sh && echo "$GREETING $NAME" > greeting.txt
EXPOSE 8080 53/udp
VOLUME ["/data"]
USER nobody
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=2s --retries=2 CMD test -f /app/greeting.txt
SHELL ["/bin/sh", "-c"]
ONBUILD RUN echo triggered > /tmp/onbuild
ENTRYPOINT ["/app/app.sh"]
CMD ["arg1"]
"""


def test_every_instruction(berthd, tmp_path):
    ctx = tmp_path / "ctx"
    write(ctx, {
        "Dockerfile": EVERY,
        "app.sh": "#!/bin/sh\necho \"app $@ $(cat /app/greeting.txt)\"\n",
        "conf/a.conf": "a=1\n",
    })
    with tarfile.open(ctx / "bundle.tar", "w") as t:
        src = tmp_path / "inner.txt"
        src.write_text("from-tar\n")
        t.add(src, arcname="inner.txt")
    cp = build(berthd, ctx, "-t", "every:1", "--build-arg", "NAME=berth")
    out = cp.stdout
    assert "Step 1/20 : ARG BASE=busybox\n" in out and "Step 2/20 : FROM ${BASE} AS base\n" in out
    assert "Step 20/20 : CMD [\"arg1\"]\n" in out
    assert " ---> Running in " in out and " ---> Removed intermediate container " in out
    assert "Successfully built" in out and "Successfully tagged every:1" in out
    assert berthd.docker("run", "--rm", "every:1").stdout == "app arg1 hello berth\n"
    i = inspect(berthd, "every:1")
    c = i["Config"]
    assert c["Labels"] == {"org.example.team": "core", "version": "1"}
    assert "APP_HOME=/app" in c["Env"] and "GREETING=hello" in c["Env"]
    assert not any(e.startswith("NAME=") for e in c["Env"])  # build args stay out of the image
    assert c["WorkingDir"] == "/app" and c["User"] == "nobody"
    assert set(c["ExposedPorts"]) == {"8080/tcp", "53/udp"} and set(c["Volumes"]) == {"/data"}
    assert c["StopSignal"] == "SIGINT"
    assert c["Healthcheck"] == {"Test": ["CMD-SHELL", "test -f /app/greeting.txt"],
                                "Interval": 5_000_000_000, "Timeout": 2_000_000_000,
                                "Retries": 2}
    assert c["Entrypoint"] == ["/app/app.sh"] and c["Cmd"] == ["arg1"]
    assert c["Shell"] == ["/bin/sh", "-c"]
    assert c["OnBuild"] == ["RUN echo triggered > /tmp/onbuild"]
    assert i["Author"] == "someone@example.com"
    ls = berthd.docker("run", "--rm", "-u", "0", "--entrypoint", "sh", "every:1", "-c",
                       "ls -ln /app/conf/a.conf; ls -ld /tmp; cat /opt/inner.txt").stdout
    assert "-rw-r-----    1 65534    65534" in ls, ls
    assert "drwxrwxrwt" in ls  # COPY/ADD leave existing parents alone
    assert "from-tar" in ls
    # One history row per instruction of the stage (+ busybox's two), metadata rows empty.
    hist = berthd.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}\t{{.Size}}",
                         "every:1").stdout.splitlines()
    assert len(hist) == 18 + 2
    rows = dict(h.rsplit("\t", 1) for h in hist)
    assert rows['/bin/sh -c #(nop)  CMD ["arg1"]'] == "0B"
    assert rows["/bin/sh -c #(nop)  LABEL org.example.team=core version=1"] == "0B"
    run_row = [h for h in rows if "chmod +x app.sh" in h][0]
    assert run_row.startswith("|1 NAME=berth /bin/sh -c chmod +x app.sh")
    assert rows[run_row] != "0B"
    # ONBUILD triggers run in a child and are not inherited further.
    child = tmp_path / "child"
    write(child, {"Dockerfile": "FROM every:1\nRUN [\"true\"]\n"})
    cp = build(berthd, child, "-t", "child:1")
    assert "# Executing 1 build trigger" in cp.stdout
    assert berthd.docker("run", "--rm", "--entrypoint", "cat", "child:1",
                         "/tmp/onbuild").stdout == "triggered\n"
    assert inspect(berthd, "child:1")["Config"].get("OnBuild") in (None, [])
    no_containers(berthd)


def test_seed_multistage_from_scratch(berthd, tmp_path):
    """The seed's Go-style example: a builder stage "compiles", the final stage is FROM scratch
    with only the copied artifacts."""
    ctx = tmp_path / "ms"
    write(ctx, {
        "Dockerfile": """FROM busybox AS builder
WORKDIR /src
COPY main.src .
RUN mkdir -p /out && (echo '#!/bin/busybox sh'; echo "echo compiled: $(cat main.src)") > /out/app \\
    && chmod +x /out/app
FROM busybox AS tester
RUN echo testing > /t
FROM scratch
COPY --from=builder /bin/busybox /bin/busybox
COPY --from=0 /out/app /app
ENTRYPOINT ["/bin/busybox", "sh", "/app"]
""",
        "main.src": "v1",
        "notes.md": "ignored",
        ".dockerignore": "*.md\n",
    })
    build(berthd, ctx, "-t", "ms:1")
    assert berthd.docker("run", "--rm", "ms:1").stdout == "compiled: v1\n"
    i = inspect(berthd, "ms:1")
    assert len(i["RootFS"]["Layers"]) == 2  # only the final stage's copies
    assert i["Config"]["Entrypoint"] == ["/bin/busybox", "sh", "/app"]
    assert len(berthd.docker("history", "-q", "ms:1").stdout.split()) == 3
    # --target stops at that stage.
    build(berthd, ctx, "--target", "tester", "-t", "tester:1")
    assert berthd.docker("run", "--rm", "tester:1", "cat", "/t").stdout == "testing\n"
    cp = build(berthd, ctx, "--target", "nope", check=False)
    assert cp.returncode != 0 and "failed to reach build target nope in Dockerfile" in cp.stderr
    no_containers(berthd)


def test_cache_hit_and_miss(berthd, tmp_path):
    ctx = tmp_path / "cache"
    write(ctx, {
        "Dockerfile": """FROM busybox
ENV A=1
COPY a.txt /a.txt
RUN cat /a.txt > /copy && cat /proc/sys/kernel/random/uuid > /stamp
COPY b.txt /b.txt
RUN cat /proc/sys/kernel/random/uuid > /stamp2
CMD ["cat", "/copy"]
""",
        "a.txt": "one\n",
        "b.txt": "bee\n",
    })
    first = build(berthd, ctx, "-t", "c:1").stdout
    assert "Using cache" not in first
    id1 = inspect(berthd, "c:1")["Id"]
    stamp = berthd.docker("run", "--rm", "c:1", "cat", "/stamp").stdout
    again = build(berthd, ctx, "-t", "c:1").stdout
    assert again.count(" ---> Using cache") == 6 and "Running in" not in again
    assert inspect(berthd, "c:1")["Id"] == id1
    # Only a.txt changes: its COPY and everything after are rebuilt, ENV before it is cached.
    (ctx / "a.txt").write_text("two\n")
    os.utime(ctx / "b.txt")  # a new mtime alone does not invalidate
    third = build(berthd, ctx, "-t", "c:1").stdout
    steps = third.split("Step ")[1:]
    cached = [s.split(" :")[0] for s in steps if "Using cache" in s]
    assert cached == ["2/7"], third
    assert berthd.docker("run", "--rm", "c:1").stdout == "two\n"
    assert berthd.docker("run", "--rm", "c:1", "cat", "/stamp").stdout != stamp
    # --no-cache rebuilds everything; build args in effect are part of RUN's key.
    nc = build(berthd, ctx, "--no-cache", "-t", "c:nc").stdout
    assert "Using cache" not in nc
    write(ctx, {"Dockerfile": "FROM busybox\nARG V=1\nRUN echo $V > /v\n"})
    build(berthd, ctx, "-t", "c:arg")
    out = build(berthd, ctx, "-t", "c:arg2", "--build-arg", "V=2").stdout
    assert out.count("Using cache") == 1  # the ARG step only
    assert berthd.docker("run", "--rm", "c:arg2", "cat", "/v").stdout == "2\n"
    # build/prune forgets the cache.
    r = berthd.api("POST", "/build/prune")
    assert r.status == 200 and "CachesDeleted" in json.loads(r.body)
    assert "Using cache" not in build(berthd, ctx, "-t", "c:arg").stdout


def test_dockerignore(berthd, tmp_path):
    ctx = tmp_path / "ig"
    write(ctx, {"Dockerfile": "FROM busybox\nCOPY . /ctx/\n", "keep.txt": "k", "secret.md": "s",
                "README.md": "r", "docs/a.txt": "a", "docs/keep/b.txt": "b",
                "x/y/z.tmp": "t", "x/y/z.txt": "t",
                ".dockerignore": "*.md\n!README.md\ndocs\n!docs/keep\n**/*.tmp\n"})
    build(berthd, ctx, "-t", "ig:1")
    out = berthd.docker("run", "--rm", "ig:1", "find", "/ctx").stdout.split()
    assert set(out) == {"/ctx", "/ctx/keep.txt", "/ctx/README.md", "/ctx/Dockerfile",
                        "/ctx/.dockerignore", "/ctx/docs", "/ctx/docs/keep",
                        "/ctx/docs/keep/b.txt", "/ctx/x", "/ctx/x/y", "/ctx/x/y/z.txt"}, out
    # A raw API client that sends everything: the engine applies .dockerignore itself.
    body = context_tar({"Dockerfile": "FROM busybox\nCOPY . /ctx/\n", ".dockerignore": "*.md\n",
                        "a.md": "x", "b.txt": "y"})
    r, msgs = api_build(berthd, "t=ig:2", body)
    assert r.status == 200 and not [m for m in msgs if "error" in m], msgs
    assert berthd.docker("run", "--rm", "ig:2", "ls", "/ctx").stdout.split() == ["Dockerfile", "b.txt"]
    r, msgs = api_build(berthd, "t=ig:3", context_tar({
        "Dockerfile": "FROM busybox\nCOPY a.md /\n", ".dockerignore": "*.md\n", "a.md": "x"}))
    assert "file not found in build context or excluded by .dockerignore" in msgs[-1]["error"]


def test_copy_rules(berthd, tmp_path):
    ctx = tmp_path / "cr"
    write(ctx, {
        "Dockerfile": """FROM busybox
COPY *.txt /multi/
COPY one.txt /renamed
COPY one.txt /etc
COPY dir /into/
COPY dir/ /into2
COPY ["sp ace.dat", "/json form/"]
WORKDIR /w
COPY one.txt rel/
RUN ln -s /real /link && mkdir /real
COPY one.txt /link/
""",
        "one.txt": "1", "two.txt": "2", "sp ace.dat": "s", "dir/sub/f": "f", "dir/g": "g",
    })
    build(berthd, ctx, "-t", "cr:1")
    out = berthd.docker("run", "--rm", "cr:1", "sh", "-c",
                        "cd / && ls multi renamed etc/one.txt into into/sub into2 'json form' "
                        "w/rel real; ls -ld /etc /w").stdout
    for want in ("one.txt\ntwo.txt", "renamed", "etc/one.txt", "into:\ng\nsub",
                 "into/sub:\nf", "into2:\ng\nsub", "json form:\nsp ace.dat",
                 "w/rel:\none.txt", "real:\none.txt", "drwxr-xr-x"):
        assert want in out, (want, out)
    write(ctx, {"Dockerfile": "FROM busybox\nCOPY one.txt two.txt /nodir\n"})
    cp = build(berthd, ctx, check=False)
    assert cp.returncode != 0
    assert "When using COPY with more than one source file, the destination must be a directory " \
           "and end with a /" in cp.stderr
    write(ctx, {"Dockerfile": "FROM busybox\nCOPY missing.txt /\n"})
    cp = build(berthd, ctx, check=False)
    assert "file not found in build context or excluded by .dockerignore: stat missing.txt" in cp.stderr
    no_containers(berthd)


def test_add_url_and_compressed_tar(berthd, tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    (served / "hello.txt").write_text("over http\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        ctx = tmp_path / "add"
        write(ctx, {"Dockerfile": f"""FROM busybox
ADD http://127.0.0.1:{srv.server_port}/hello.txt /dl/
ADD http://127.0.0.1:{srv.server_port}/hello.txt /named.txt
ADD pkg.tar.gz /pkg
"""})
        with tarfile.open(ctx / "pkg.tar.gz", "w:gz") as t:
            data = b"gz content\n"
            ti = tarfile.TarInfo("inside/file.txt")
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        build(berthd, ctx, "-t", "add:1")
        out = berthd.docker("run", "--rm", "add:1", "sh", "-c",
                            "cat /dl/hello.txt /named.txt /pkg/inside/file.txt; "
                            "stat -c %a /named.txt").stdout
        assert out == "over http\nover http\ngz content\n600\n"
        write(ctx, {"Dockerfile": f"FROM busybox\nADD http://127.0.0.1:{srv.server_port}/nope /x\n"})
        cp = build(berthd, ctx, check=False)
        assert cp.returncode != 0 and "404" in cp.stderr
    finally:
        srv.shutdown()


def failed_step_containers(b):
    """The exited containers a failed build left (Status "Exited (N) …")."""
    return b.docker("ps", "-a", "--format", "{{.Status}}").stdout.split("\n")[:-1]


def test_failing_step(berthd, tmp_path):
    ctx = tmp_path / "bad"
    write(ctx, {"Dockerfile": "FROM busybox\nRUN echo ok > /f\nRUN echo before && exit 3\n"})
    cp = build(berthd, ctx, "-t", "bad:1", check=False)
    assert cp.returncode == 3, (cp.returncode, cp.stderr)  # the CLI exits with the step's code
    assert "before\n" in cp.stdout
    assert "The command '/bin/sh -c echo before && exit 3' returned a non-zero code: 3" in cp.stderr
    assert berthd.docker("images", "-q", "bad").stdout.strip() == ""
    # As dockerd's classic builder (measured on dockerd 20.10.24): with --rm (the default) the
    # committed steps' containers go, the failed step's stays for inspection.
    left = failed_step_containers(berthd)
    assert len(left) == 1 and left[0].startswith("Exited (3)"), left
    berthd.docker("container", "prune", "-f")
    # The raw stream: error and errorDetail (with the code), no aux ID, nothing tagged.
    body = context_tar({"Dockerfile": "FROM busybox\nRUN false\n"}, gz=True)
    r, msgs = api_build(berthd, "t=bad:2&rm=0", body)
    assert r.status == 200
    err = msgs[-1]
    assert err["error"] == "The command '/bin/sh -c false' returned a non-zero code: 1"
    assert err["errorDetail"] == {"code": 1, "message": err["error"]}
    assert not any("aux" in m for m in msgs)
    assert berthd.api("GET", "/images/bad:2/json").status == 404
    left = failed_step_containers(berthd)
    assert len(left) == 1 and left[0].startswith("Exited (1)"), left
    berthd.docker("container", "prune", "-f")
    # --force-rm: nothing stays.
    cp = build(berthd, ctx, "--force-rm", "-t", "bad:1", check=False)
    assert cp.returncode == 3
    no_containers(berthd)
    # No stray mounts of the engine's own (intermediate containers, image views).
    with open("/proc/self/mountinfo") as fh:
        assert not [ln for ln in fh if berthd.tmp in ln]


def test_parse_errors(berthd, tmp_path):
    for df, msg in [
        ("FROM busybox\nFOO bar\n", "dockerfile parse error line 2: unknown instruction: FOO"),
        ("RUN true\n", "dockerfile parse error line 1: RUN instruction before FROM"),
        ("", "the Dockerfile (Dockerfile) cannot be empty"),
    ]:
        ctx = tmp_path / f"perr{len(msg)}"
        write(ctx, {"Dockerfile": df})
        cp = build(berthd, ctx, check=False)
        assert cp.returncode != 0 and msg in cp.stderr, (df, cp.stderr)


def test_raw_api_options(berthd):
    files = {"sub/Build.df": "FROM busybox\nARG X\nLABEL x=$X\nRUN echo run-output\n"}
    # gzip context, dockerfile path, several tags, labels and build args, quiet.
    q = urlencode([("dockerfile", "sub/Build.df"), ("t", "raw:1"), ("t", "raw:2"), ("q", "1"),
                   ("labels", json.dumps({"from.api": "yes"})),
                   ("buildargs", json.dumps({"X": "ex"}))])
    r, msgs = api_build(berthd, q, context_tar(files, gz=True))
    assert r.status == 200
    streams = [m["stream"] for m in msgs if "stream" in m]
    assert len(streams) == 1 and streams[0].startswith("sha256:"), msgs  # q=1: the id only
    assert not [m for m in msgs if "status" in m], msgs  # nor pull progress
    i = inspect(berthd, "raw:2")
    assert i["Id"] == streams[0].strip()
    assert i["Config"]["Labels"] == {"x": "ex", "from.api": "yes"}
    # Not quiet: Docker's stream, aux ID before "Successfully built".
    r, msgs = api_build(berthd, "t=raw:3&dockerfile=sub%2FBuild.df", context_tar(files))
    text = "".join(m.get("stream", "") for m in msgs)
    assert "Step 1/4 : FROM busybox\n" in text and "Successfully tagged raw:3\n" in text, msgs
    aux = [m["aux"]["ID"] for m in msgs if "aux" in m]
    assert aux and text.index("Successfully built") > 0 and f"Successfully built {aux[0][7:19]}\n" in text
    assert "[Warning] One or more build-args" not in text
    r = berthd.api("POST", "/build?remote=https://example.com/x.git", body=b"")
    assert r.status == 400 and "remote" in json.loads(r.body)["message"]
    r, msgs = api_build(berthd, "platform=linux/s390x", context_tar(files))
    assert "linux/s390x" in (msgs[-1].get("error", "") if msgs else r.body.decode())
    r, msgs = api_build(berthd, "", context_tar({"Dockerfile.other": "FROM busybox\n"}))
    assert "Cannot locate specified Dockerfile: Dockerfile" in (
        msgs[-1].get("error", "") if msgs else r.body.decode())


def test_dockerfile_from_stdin_and_outside_context(berthd, tmp_path):
    berthd.env["DOCKER_BUILDKIT"] = "0"
    cp = berthd.docker("build", "-t", "stdin:1", "-", input="FROM busybox\nRUN echo in > /s\n")
    assert "Successfully tagged stdin:1" in cp.stdout
    assert berthd.docker("run", "--rm", "stdin:1", "cat", "/s").stdout == "in\n"
    ctx = tmp_path / "ctx"
    write(ctx, {"f.txt": "f\n"})
    df = tmp_path / "elsewhere.Dockerfile"
    df.write_text("FROM busybox\nCOPY f.txt /\n")
    build(berthd, ctx, "-f", str(df), "-t", "outside:1")
    assert berthd.docker("run", "--rm", "outside:1", "cat", "/f.txt").stdout == "f\n"


def test_docker_py_build(berthd, tmp_path):
    ctx = tmp_path / "py"
    write(ctx, {"Dockerfile": "FROM busybox\nARG WHO\nRUN echo py $WHO > /py\nCMD cat /py\n"})
    client = berthd.client()
    img, logs = client.images.build(path=str(ctx), tag="py:1", buildargs={"WHO": "me"}, rm=True)
    assert "py:1" in img.tags
    assert any("Successfully built" in l.get("stream", "") for l in logs)
    assert client.containers.run("py:1", remove=True) == b"py me\n"
    assert img.attrs["Config"]["Cmd"] == ["/bin/sh", "-c", "cat /py"]
    import docker.errors
    write(ctx, {"Dockerfile": "FROM busybox\nRUN exit 7\n"})
    with pytest.raises(docker.errors.BuildError) as e:
        client.images.build(path=str(ctx), tag="py:bad")
    assert "returned a non-zero code: 7" in str(e.value)
    # The failed step's container stays, as with dockerd.
    left = failed_step_containers(berthd)
    assert len(left) == 1 and left[0].startswith("Exited (7)"), left


def test_build_push_and_pull_on_fresh_engine(berthd, berthd_factory, registry, tmp_path):
    ctx = tmp_path / "pp"
    write(ctx, {"Dockerfile": "FROM busybox\nCOPY f /f\nRUN echo pushed >> /f\nCMD [\"cat\", \"/f\"]\n",
                "f": "copied\n"})
    build(berthd, ctx, "-t", "pp:local")
    ref = f"{registry.host}/built/pp:{os.getpid()}"
    berthd.docker("tag", "pp:local", ref)
    berthd.docker("push", ref, timeout=180)
    other = berthd_factory()
    other.docker("pull", ref, timeout=180)
    assert other.docker("run", "--rm", ref).stdout == "copied\npushed\n"
    assert other.docker("history", "-q", ref).stdout.split() != []


def steps_in_order(out):
    """The `Step N/M` numbers of a classic build stream, in the order printed."""
    return [int(line.split()[1].split("/")[0]) for line in out.splitlines()
            if line.startswith("Step ")]


def test_multistage_parallel_stages(berthd, tmp_path):
    """Independent stages build concurrently: each RUN records /proc/uptime (host-wide) when it
    starts and ends, and the two intervals must overlap, which a sequential build can never do.
    The stream still reads as the classic builder's: steps numbered over the file, each stage's
    lines together, in stage order."""
    ctx = tmp_path / "par"
    run = "RUN echo {0} && cut -d' ' -f1 /proc/uptime > /start && sleep 3 && " \
          "cut -d' ' -f1 /proc/uptime > /end"
    write(ctx, {"Dockerfile": "\n".join([
        "FROM busybox AS a", run.format("a"),
        "FROM busybox AS b", run.format("b"),
        "FROM busybox AS unused", "RUN echo unused > /u",
        "FROM busybox",
        "COPY --from=a /start /a.start", "COPY --from=a /end /a.end",
        "COPY --from=b /start /b.start", "COPY --from=1 /end /b.end",
        'CMD ["sh", "-c", "cat /a.start /a.end /b.start /b.end"]', ""])})
    cp = build(berthd, ctx, "--no-cache", "-t", "par:1")
    out = cp.stdout
    assert steps_in_order(out) == list(range(1, 13)), out
    assert "Step 12/12 : CMD" in out
    # Each step's lines stay with it: the RUN of stage b prints "b" between its header and the
    # next header (stage "unused" is built too, as the classic builder does).
    sb = out.index("Step 4/12 : RUN echo b")
    assert "\nb\n" in out[sb:out.index("Step 5/12")] and "\na\n" in out[:sb]
    assert "Step 6/12 : RUN echo unused" in out
    a0, a1, b0, b1 = map(float, berthd.docker("run", "--rm", "par:1").stdout.split())
    assert a0 < a1 and b0 < b1
    assert a0 < b1 and b0 < a1, ("stages did not overlap", a0, a1, b0, b1)
    # Only the final stage's layers are in the image.
    base = len(inspect(berthd, "busybox")["RootFS"]["Layers"])
    assert len(inspect(berthd, "par:1")["RootFS"]["Layers"]) == base + 4
    hist = berthd.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", "par:1").stdout
    assert "sleep" not in hist
    no_containers(berthd)


def test_multistage_failing_stage_cancels_the_others(berthd, tmp_path):
    ctx = tmp_path / "pfail"
    write(ctx, {"Dockerfile": "\n".join([
        "FROM busybox AS slow", "RUN echo slow-started && sleep 600",
        "FROM busybox AS bad", "RUN echo failing >&2; exit 5",
        "FROM busybox", "COPY --from=slow /etc/hostname /h", ""])})
    t0 = time.monotonic()
    cp = build(berthd, ctx, "-t", "pfail:1", check=False, timeout=500)
    took = time.monotonic() - t0
    assert cp.returncode == 5, (cp.returncode, cp.stdout, cp.stderr)
    assert took < 300, took  # the other stage's `sleep 600` was stopped, not waited for
    assert "The command '/bin/sh -c echo failing >&2; exit 5' returned a non-zero code: 5" \
        in cp.stderr
    # The stream: stage 1 (cancelled) then stage 2 (failed, its stderr in the classic builder's
    # red); nothing of the stage after the failed one.
    assert "slow-started" in cp.stdout and "\x1b[91mfailing\n\x1b[0m" in cp.stdout, cp.stdout
    assert steps_in_order(cp.stdout) == [1, 2, 3, 4], cp.stdout
    assert berthd.docker("images", "-q", "pfail").stdout.strip() == ""
    # The failed step's container stays (as dockerd's); the stopped stage's too, exited.
    left = failed_step_containers(berthd)
    assert any(st.startswith("Exited (5)") for st in left), left
    assert all(st.startswith("Exited") for st in left), left


HEREDOCS = """# syntax=docker/dockerfile:1.4
FROM busybox
ARG WHO=world
RUN <<EOF
echo "hello $WHO" > /greeting
mkdir -p /d
EOF
RUN <<-EOT sh
\techo tabbed > /d/tabbed
\tEOT
RUN cat <<'EOF' > /d/literal
$WHO stays
EOF
RUN <<EOF
#!/bin/sh
echo "shebang $0" > /d/shebang
EOF
COPY <<EOF /d/copied
who=$WHO
EOF
COPY --chmod=0600 <<"EOF" <<EOT2 /d/many/
raw $WHO
EOF
two
EOT2
"""


def test_heredocs(berthd, tmp_path):
    ctx = tmp_path / "hd"
    write(ctx, {"Dockerfile": HEREDOCS})
    cp = build(berthd, ctx, "-t", "hd:1", "--build-arg", "WHO=berth")
    assert "Step 3/8 : RUN <<EOF\n" in cp.stdout, cp.stdout
    out = berthd.docker("run", "--rm", "hd:1", "sh", "-c",
                        "cat /greeting /d/tabbed /d/literal /d/shebang /d/copied "
                        "/d/many/EOF /d/many/EOT2; stat -c %a /d/copied /d/many/EOF").stdout
    assert out == ("hello berth\ntabbed\n$WHO stays\nshebang /dev/pipes/EOF\nwho=berth\n"
                   "raw $WHO\ntwo\n644\n600\n"), out
    # The heredoc's text is part of the cache key.
    again = build(berthd, ctx, "-t", "hd:1", "--build-arg", "WHO=berth").stdout
    assert again.count("Using cache") == 7
    write(ctx, {"Dockerfile": HEREDOCS.replace("two\n", "2\n")})
    third = build(berthd, ctx, "-t", "hd:2", "--build-arg", "WHO=berth").stdout
    assert third.count("Using cache") == 6
    assert berthd.docker("run", "--rm", "hd:2", "cat", "/d/many/EOT2").stdout == "2\n"
    no_containers(berthd)


def test_extra_hosts(berthd, tmp_path):
    ctx = tmp_path / "eh"
    write(ctx, {"Dockerfile": "FROM busybox\nRUN cp /etc/hosts /hosts-file\n"})
    build(berthd, ctx, "--no-cache", "-t", "eh:1", "--add-host", "extrahost.local.test:127.0.0.1",
          "--add-host", "hello.world.test:10.1.2.3")
    hosts = berthd.docker("run", "--rm", "eh:1", "cat", "/hosts-file").stdout
    assert "127.0.0.1\textrahost.local.test\n" in hosts and "10.1.2.3\thello.world.test\n" in hosts
    # docker-py sends the parameter once per host.
    client = berthd.client()
    client.images.build(path=str(ctx), tag="eh:2", nocache=True,
                        extra_hosts={"py.host.test": "10.9.8.7", "other.test": "127.0.0.2"})
    hosts = berthd.docker("run", "--rm", "eh:2", "cat", "/hosts-file").stdout
    assert "10.9.8.7\tpy.host.test\n" in hosts and "127.0.0.2\tother.test\n" in hosts
    cp = build(berthd, ctx, "--add-host", "bad:not-an-ip", check=False)
    assert cp.returncode != 0 and "invalid IP address in add-host" in cp.stderr


def test_cache_from(berthd, tmp_path):
    ctx = tmp_path / "cf"
    write(ctx, {"Dockerfile": "FROM busybox\nENV FOO=bar\n"
                              "RUN cat /proc/sys/kernel/random/uuid > /stamp\nRUN touch /bax\n"})
    build(berthd, ctx, "-t", "cf:1")
    first = inspect(berthd, "cf:1")["Id"]
    stamp = berthd.docker("run", "--rm", "cf:1", "cat", "/stamp").stdout
    out = build(berthd, ctx, "-t", "cf:2", "--cache-from", "cf:1").stdout
    assert out.count("Using cache") == 3 and inspect(berthd, "cf:2")["Id"] == first
    # Naming only images that do not exist: nothing is cached (dockerd's rule).
    out = build(berthd, ctx, "-t", "cf:3", "--cache-from", "nosuchtag").stdout
    assert "Using cache" not in out
    assert berthd.docker("run", "--rm", "cf:3", "cat", "/stamp").stdout != stamp
    # An image known only by its history (saved, removed, loaded back: no parent chain, no
    # build cache) still satisfies the cache, as a pulled one would.
    saved = tmp_path / "cf.tar"
    berthd.docker("save", "-o", str(saved), "cf:1")
    berthd.docker("rmi", "cf:1", "cf:2")
    berthd.api("POST", "/build/prune")
    berthd.docker("load", "-i", str(saved))
    out = build(berthd, ctx, "-t", "cf:4", "--cache-from", "cf:1").stdout
    assert out.count("Using cache") == 3 and "Running in" not in out, out
    assert inspect(berthd, "cf:4")["Id"] == first
    assert berthd.docker("run", "--rm", "cf:4", "cat", "/stamp").stdout == stamp
    # A changed step stops the reuse there.
    write(ctx, {"Dockerfile": "FROM busybox\nENV FOO=bar\nRUN cat /proc/sys/kernel/random/uuid "
                              "> /stamp\nRUN touch /other\n"})
    out = build(berthd, ctx, "-t", "cf:5", "--cache-from", "cf:1").stdout
    assert out.count("Using cache") == 2 and out.count("Running in") == 1, out
    assert berthd.docker("run", "--rm", "cf:5", "cat", "/stamp").stdout == stamp
    no_containers(berthd)


def test_run_flags_need_buildkit(berthd, tmp_path):
    ctx = tmp_path / "mnt"
    write(ctx, {"Dockerfile": "FROM busybox\nRUN echo ok\n"
                              "RUN --mount=type=cache,target=/root/.cache true\n"})
    cp = build(berthd, ctx, check=False)
    assert cp.returncode != 0
    assert "the --mount option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ " \
           "to learn how to build images with BuildKit enabled" in cp.stderr, cp.stderr
    no_containers(berthd)


def test_docker_py_build_stream_and_config(berthd, tmp_path):
    """What docker-py's own build tests check: stderr lines of a RUN arrive as their own stream
    chunks in the classic builder's red; image configs carry OnBuild (null when unset)."""
    api = berthd.client().api
    df = io.BytesIO(b"FROM busybox\nRUN sh -c \">&2 echo 'Ancient Temple'\"\n")
    lines = [c.get("stream") for c in api.build(fileobj=df, decode=True, nocache=True)]
    assert "\x1b[91mAncient Temple\n\x1b[0m" in lines, lines
    df = io.BytesIO(b"FROM busybox as first\nRUN mkdir -p /tmp/test\n"
                    b"FROM busybox\nONBUILD RUN echo never\n")
    for _ in api.build(fileobj=df, target="first", tag="pyfirst:1"):
        pass
    cfg = api.inspect_image("pyfirst:1")["Config"]
    assert "OnBuild" in cfg and not cfg["OnBuild"]


def test_multistage_cache(berthd, tmp_path):
    ctx = tmp_path / "mc"
    write(ctx, {"Dockerfile": "FROM busybox AS a\nCOPY a.txt /a.txt\n"
                              "FROM busybox AS b\nRUN echo b > /b.txt\n"
                              "FROM busybox\nCOPY --from=b /b.txt /\nCOPY --from=a /a.txt /\n",
                "a.txt": "one\n"})
    build(berthd, ctx, "-t", "mc:1")
    out = build(berthd, ctx, "-t", "mc:1").stdout
    assert out.count("Using cache") == 4, out
    (ctx / "a.txt").write_text("two\n")
    out = build(berthd, ctx, "-t", "mc:2").stdout
    cached = [s.split(" :")[0] for s in out.split("Step ")[1:] if "Using cache" in s]
    assert cached == ["4/7", "6/7"], out  # stage b's RUN and the copy from it
    assert berthd.docker("run", "--rm", "mc:2", "cat", "/a.txt", "/b.txt").stdout == "two\nb\n"
    no_containers(berthd)


def test_client_hanging_up_cancels_the_build(berthd):
    """As dockerd: a build whose client went away starts no further step (and tags nothing)."""
    import socket
    body = context_tar({"Dockerfile": "FROM busybox\nRUN sleep 1\nRUN echo two > /two\n"
                                      "RUN echo three > /three\n"})
    s = socket.socket(socket.AF_UNIX)
    s.connect(berthd.sock)
    s.sendall(b"POST /build?t=cancelled:1 HTTP/1.1\r\nHost: d\r\nContent-Type: application/x-tar\r\n"
              + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    got = b""
    while b"Step 2/4" not in got:
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
    s.close()
    # Long enough for the whole build to finish had it gone on.
    time.sleep(6)
    assert berthd.docker("images", "-q", "cancelled").stdout.strip() == ""
    # Nothing of the steps after the hang-up ran, and the builder left nothing running.
    assert "Up " not in berthd.docker("ps", "-a", "--format", "{{.Status}}").stdout
    events = berthd.docker("events", "--since", "0", "--until", "0s", "--filter", "event=create",
                           "--format", "{{.ID}}").stdout.split()
    assert len(events) <= 1, events
