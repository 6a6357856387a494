"""docker build with the classic builder (issue #5), through the real docker CLI."""

import json
import os


def build(b, ctx, *args, check=True):
    env_args = list(args)
    cp = b.docker("build", *env_args, str(ctx), check=check, timeout=300)
    return cp


def write(ctx, files):
    for name, text in files.items():
        p = ctx / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def inspect(b, ref):
    return json.loads(b.docker("image", "inspect", ref).stdout)[0]


def test_every_instruction(berthd, tmp_path):
    ctx = tmp_path / "ctx"
    write(ctx, {
        "Dockerfile": """# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM ${BASE} AS base
LABEL org.example.team="core" version=1
MAINTAINER someone@example.com
ENV APP_HOME=/app \\
    GREETING=hello
ARG NAME=world
WORKDIR $APP_HOME
COPY app.sh ./
COPY --chown=65534:65534 --chmod=0640 conf/ conf/
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
""",
        "app.sh": "#!/bin/sh\necho \"app $@ $(cat /app/greeting.txt)\"\n",
        "conf/a.conf": "a=1\n",
    })
    import tarfile
    with tarfile.open(ctx / "bundle.tar", "w") as t:
        src = tmp_path / "inner.txt"
        src.write_text("from-tar\n")
        t.add(src, arcname="inner.txt")
    cp = build(berthd, ctx, "-t", "every:1", "--build-arg", "NAME=berth")
    assert "Successfully built" in cp.stdout and "Successfully tagged every:1" in cp.stdout
    assert "Step 1/" in cp.stdout
    out = berthd.docker("run", "--rm", "every:1").stdout
    assert out == "app arg1 hello berth\n"
    i = inspect(berthd, "every:1")
    c = i["Config"]
    assert c["Labels"]["org.example.team"] == "core" and c["Labels"]["version"] == "1"
    assert "APP_HOME=/app" in c["Env"] and c["WorkingDir"] == "/app" and c["User"] == "nobody"
    assert set(c["ExposedPorts"]) == {"8080/tcp", "53/udp"} and "/data" in c["Volumes"]
    assert c["StopSignal"] == "SIGINT" and c["Healthcheck"]["Test"] == ["CMD-SHELL", "test -f /app/greeting.txt"]
    assert c["Entrypoint"] == ["/app/app.sh"] and c["Cmd"] == ["arg1"]
    assert c["OnBuild"] == ["RUN echo triggered > /tmp/onbuild"]
    assert i["Author"] == "someone@example.com"
    ls = berthd.docker("run", "--rm", "--entrypoint", "sh", "every:1", "-c",
                       "ls -ln /app/conf/a.conf; cat /opt/inner.txt").stdout
    assert "65534" in ls and "-rw-r-----" in ls and "from-tar" in ls
    hist = berthd.docker("history", "every:1", "--format", "{{.CreatedBy}}").stdout.splitlines()
    assert len(hist) >= 18
    # ONBUILD triggers run in a child.
    child = tmp_path / "child"
    write(child, {"Dockerfile": "FROM every:1\n"})
    build(berthd, child, "-t", "child:1")
    assert berthd.docker("run", "--rm", "--entrypoint", "cat", "child:1", "/tmp/onbuild").stdout == "triggered\n"


def test_multistage_scratch_target_and_cache(berthd, tmp_path):
    ctx = tmp_path / "ms"
    write(ctx, {
        "Dockerfile": """FROM busybox AS builder
WORKDIR /src
COPY main.src .
RUN (echo '#!/bin/busybox sh'; echo "echo compiled: $(cat main.src)") > app && chmod +x app
FROM busybox AS tester
RUN echo testing > /t
FROM scratch
COPY --from=builder /bin/busybox /bin/busybox
COPY --from=builder /src/app /app
ENTRYPOINT ["/bin/busybox", "sh", "/app"]
""",
        "main.src": "v1",
        "notes.md": "ignored",
        ".dockerignore": "*.md\n",
    })
    build(berthd, ctx, "-t", "ms:1")
    assert berthd.docker("run", "--rm", "ms:1").stdout == "compiled: v1\n"
    layers = inspect(berthd, "ms:1")["RootFS"]["Layers"]
    assert len(layers) == 2  # only the final stage's copies
    cp = build(berthd, ctx, "-t", "ms:1")
    assert cp.stdout.count("Using cache") >= 6
    (ctx / "main.src").write_text("v2")
    cp = build(berthd, ctx, "-t", "ms:1")
    assert "Step 3/" in cp.stdout
    assert berthd.docker("run", "--rm", "ms:1").stdout == "compiled: v2\n"
    cp = build(berthd, ctx, "--target", "tester", "-t", "tester:1")
    assert berthd.docker("run", "--rm", "tester:1", "cat", "/t").stdout == "testing\n"
    cp = build(berthd, ctx, "--no-cache", "-t", "ms:nc")
    assert "Using cache" not in cp.stdout


def test_dockerignore_excludes(berthd, tmp_path):
    ctx = tmp_path / "ig"
    write(ctx, {"Dockerfile": "FROM busybox\nCOPY . /ctx/\n", "keep.txt": "k", "secret.md": "s",
                "README.md": "r", ".dockerignore": "*.md\n!README.md\n"})
    build(berthd, ctx, "-t", "ig:1")
    out = berthd.docker("run", "--rm", "ig:1", "ls", "/ctx").stdout.split()
    assert "keep.txt" in out and "README.md" in out and "secret.md" not in out


def test_failing_step_leaves_nothing(berthd, tmp_path):
    ctx = tmp_path / "bad"
    write(ctx, {"Dockerfile": "FROM busybox\nRUN echo before && exit 3\n"})
    cp = build(berthd, ctx, "-t", "bad:1", check=False)
    assert cp.returncode != 0
    assert "The command '/bin/sh -c echo before && exit 3' returned a non-zero code: 3" in cp.stderr
    assert berthd.docker("images", "-q", "bad").stdout.strip() == ""
    assert berthd.docker("ps", "-aq").stdout.strip() == ""


def test_docker_py_build_and_parse_error(berthd, tmp_path):
    ctx = tmp_path / "py"
    write(ctx, {"Dockerfile": "FROM busybox\nRUN echo py > /py\n"})
    img, logs = berthd.client().images.build(path=str(ctx), tag="py:1")
    assert "py:1" in img.tags
    ctx2 = tmp_path / "perr"
    write(ctx2, {"Dockerfile": "FROM busybox\nFOO bar\n"})
    cp = build(berthd, ctx2, check=False)
    assert cp.returncode != 0 and "unknown instruction: FOO" in cp.stderr


def test_commit_with_changes(berthd):
    berthd.docker("run", "--name", "cm", "busybox", "sh", "-c", "echo committed > /root/f")
    berthd.docker("commit", "-c", "CMD [\"cat\", \"/root/f\"]", "-m", "msg", "cm", "cm:1")
    assert berthd.docker("run", "--rm", "cm:1").stdout == "committed\n"
    assert inspect(berthd, "cm:1")["Comment"] == "msg"
    diff = berthd.docker("diff", "cm").stdout.split("\n")
    assert "A /root/f" in diff


def test_cp_and_export(berthd, tmp_path):
    berthd.docker("run", "-d", "--name", "cpc", "busybox", "sleep", "300")
    src = tmp_path / "in.txt"
    src.write_text("copied-in\n")
    berthd.docker("cp", str(src), "cpc:/tmp/")
    assert berthd.docker("exec", "cpc", "cat", "/tmp/in.txt").stdout == "copied-in\n"
    berthd.docker("exec", "cpc", "sh", "-c", "mkdir -p /d && echo x > /d/y")
    berthd.docker("cp", "cpc:/d", str(tmp_path / "out"))
    assert (tmp_path / "out" / "y").read_text() == "x\n"
    cp = berthd.docker("cp", "cpc:/nonexistent", str(tmp_path / "n"), check=False)
    assert cp.returncode != 0 and "Could not find the file /nonexistent" in cp.stderr
    exp = tmp_path / "exp.tar"
    berthd.docker("export", "-o", str(exp), "cpc")
    import tarfile
    names = tarfile.open(exp).getnames()
    assert "bin/busybox" in names and "tmp/in.txt" in names


def test_build_push_and_pull_on_fresh_engine(berthd, berthd_factory, registry, tmp_path):
    ctx = tmp_path / "pp"
    write(ctx, {"Dockerfile": "FROM busybox\nRUN echo pushed > /p\nCMD [\"cat\", \"/p\"]\n"})
    ref = f"{registry.host}/built/pp:{os.getpid()}"
    build(berthd, ctx, "-t", ref)
    berthd.docker("push", ref, timeout=180)
    other = berthd_factory()
    other.docker("pull", ref, timeout=180)
    assert other.docker("run", "--rm", ref).stdout == "pushed\n"
