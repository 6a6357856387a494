"""exec, attach and `run -it` through the real docker CLI (in a real terminal: tmux) and
docker-py (issue #3)."""

import json
import subprocess
import time

from lib.berthd import docker_cli
from lib.ctr import Tmux, inspect, past_events, require_tmux, wait_for


def run(b, *args, **kw):
    return b.docker("run", *args, **kw)


def test_exec_exit_codes_user_workdir_env(berthd):
    run(berthd, "-d", "--name", "ex", "-e", "FROM_RUN=1", "busybox", "sleep", "300")
    assert berthd.docker("exec", "ex", "sh", "-c", "exit 42", check=False).returncode == 42
    # An exec that cannot start exits 126 whatever the cause, as dockerd up to Docker 27 (the
    # API 1.44 contract; Debian's dockerd 20.10.24 here gives 126 too); `run` keeps 127.
    cp = berthd.docker("exec", "ex", "nosuch", check=False)
    assert cp.returncode == 126
    assert 'exec: "nosuch": executable file not found in $PATH' in cp.stdout + cp.stderr
    cp = berthd.docker("exec", "ex", "/etc/passwd", check=False)
    assert cp.returncode == 126 and "permission denied" in (cp.stdout + cp.stderr).lower()
    out = berthd.docker("exec", "-u", "1000:1000", "-w", "/", "-e", "A=b", "-e", "FROM_RUN=2", "ex", "sh", "-c",
                        "echo $(id -u):$(id -g) $(pwd) $A $FROM_RUN").stdout
    assert out == "1000:1000 / b 2\n"
    # The container's env is the base of an exec's env.
    assert berthd.docker("exec", "ex", "sh", "-c", "echo $FROM_RUN").stdout == "1\n"
    cp = berthd.docker("exec", "-u", "nosuchuser", "ex", "true", check=False)
    assert cp.returncode == 126
    assert "unable to find user nosuchuser: no matching entries in passwd file" in cp.stdout + cp.stderr
    # -i: stdin reaches the process and its EOF ends it.
    assert berthd.docker("exec", "-i", "ex", "sh", "-c", "cat; echo end", input="in\n").stdout == "in\nend\n"
    # -t without a terminal on our side still gives the process a pty.
    assert berthd.docker("exec", "-t", "ex", "tty").stdout.startswith("/dev/pts/")
    # -d returns at once; the process runs on.
    t0 = time.monotonic()
    berthd.docker("exec", "-d", "ex", "sh", "-c", "sleep 1; echo done > /tmp/d")
    assert time.monotonic() - t0 < 1
    assert wait_for(lambda: berthd.docker("exec", "ex", "cat", "/tmp/d", check=False).stdout == "done\n")


def test_exec_errors(berthd):
    cp = berthd.docker("exec", "nosuch", "true", check=False)
    assert cp.returncode != 0 and "No such container: nosuch" in cp.stderr
    run(berthd, "--name", "stopped", "busybox", "true")
    cp = berthd.docker("exec", "stopped", "true", check=False)
    assert cp.returncode != 0 and "is not running" in cp.stderr
    r = berthd.api("POST", "/containers/stopped/exec", json={"Cmd": ["true"]})
    assert r.status == 409
    r = berthd.api("GET", "/exec/nosuch/json")
    assert r.status == 404 and "No such exec instance" in json.loads(r.body)["message"]


def test_exec_docker_py_inspect_and_demux(berthd):
    c = berthd.client()
    ctr = c.containers.run("busybox", ["sleep", "300"], detach=True, name="pyex")
    r = ctr.exec_run(["sh", "-c", "echo o; sleep 0.1; echo e >&2; exit 3"], demux=True)
    assert r.exit_code == 3 and r.output == (b"o\n", b"e\n")
    r = ctr.exec_run(["sh", "-c", "echo o; echo e >&2"], tty=True)
    assert r.exit_code == 0 and b"o\r\n" in r.output and b"e\r\n" in r.output
    eid = c.api.exec_create(ctr.id, ["sh", "-c", "sleep 0.5; exit 4"], workdir="/tmp", user="nobody")["Id"]
    info = c.api.exec_inspect(eid)
    assert info["Running"] is False and info["ExitCode"] is None and info["ContainerID"] == ctr.id
    assert info["ProcessConfig"]["entrypoint"] == "sh" and info["ProcessConfig"]["user"] == "nobody"
    c.api.exec_start(eid, detach=True)
    assert wait_for(lambda: c.api.exec_inspect(eid)["Running"] is True or c.api.exec_inspect(eid)["ExitCode"] == 4, timeout=5)
    assert wait_for(lambda: c.api.exec_inspect(eid)["ExitCode"] == 4, timeout=10)
    assert c.api.exec_inspect(eid)["Pid"] > 0
    # Streaming output as it comes.
    r = ctr.exec_run(["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done"], stream=True)
    assert b"".join(r.output) == b"1\n2\n3\n"
    # exec events carry the exit code.
    ev = past_events(berthd, "--filter", "event=exec_die", fmt="{{.Actor.Attributes.exitCode}}")
    assert "3" in ev and "4" in ev
    # Exec processes do not linger.
    top = berthd.docker("top", "pyex").stdout.splitlines()
    assert len(top) == 2, top


def test_exec_it_in_a_terminal(berthd):
    require_tmux()
    run(berthd, "-d", "--name", "xt", "busybox", "sleep", "300")
    with Tmux(berthd, "exec -it -e TERMTEST=yes xt sh") as t:
        time.sleep(1)
        t.type("echo v=$((6*7)) $TERMTEST; stty size")
        assert t.wait_screen("v=42 yes"), t.screen()
        assert t.wait_screen("40 120"), t.screen()
        t.resize(100, 30)
        time.sleep(0.5)
        t.type("stty size")
        assert t.wait_screen("30 100"), t.screen()
        t.type("exit 5")
        assert t.wait_screen("CLI-EXITED-5"), t.screen()
    assert inspect(berthd, "xt")["State"]["Running"] is True


def test_run_it_detach_attach_and_exit(berthd):
    require_tmux()
    with Tmux(berthd, "run -it --name it1 busybox sh") as t:
        assert wait_for(lambda: inspect(berthd, "it1")["State"]["Running"], timeout=30)
        time.sleep(0.5)
        t.type("cd /tmp && echo persisted > f && echo typed-$((6*7))")
        assert t.wait_screen("typed-42"), t.screen()
        t.send("C-p", "C-q")
        assert t.wait_screen("CLI-EXITED-0"), t.screen()
    time.sleep(0.5)
    assert inspect(berthd, "it1")["State"]["Running"] is True
    assert berthd.docker("exec", "it1", "cat", "/tmp/f").stdout == "persisted\n"
    # Attach again from another terminal: the same shell (still in /tmp), resized to it.
    with Tmux(berthd, "attach it1", width=90, height=25) as t:
        time.sleep(1)
        t.type("echo again-$(pwd); stty size")
        assert t.wait_screen("again-/tmp"), t.screen()
        assert t.wait_screen("25 90"), t.screen()
        t.send("C-p", "C-q")
        # `docker attach` (unlike `run`) reports the detach as an error, whatever the engine.
        assert t.wait_screen("read escape sequence\nCLI-EXITED-1"), t.screen()
    assert inspect(berthd, "it1")["State"]["Running"] is True
    # Custom detach keys.
    with Tmux(berthd, "attach --detach-keys ctrl-x,x it1") as t:
        time.sleep(1)
        t.type("echo third")
        assert t.wait_screen("third"), t.screen()
        t.send("C-x", "x")
        assert t.wait_screen("CLI-EXITED-1"), t.screen()
    assert inspect(berthd, "it1")["State"]["Running"] is True
    # `exit` in an attached shell ends the container with its code; the CLI returns it.
    with Tmux(berthd, "attach it1") as t:
        time.sleep(1)
        t.type("exit 7")
        assert t.wait_screen("CLI-EXITED-7"), t.screen()
    i = inspect(berthd, "it1")
    assert i["State"]["Status"] == "exited" and i["State"]["ExitCode"] == 7
    # Its log is the terminal session.
    assert "typed-42" in berthd.docker("logs", "it1").stdout


def test_seed_bob_session(berthd):
    """The seed's lifecycle: `docker run --name bob -it ...`, write a file in /tmp, Ctrl-P Ctrl-Q,
    stop, start, exec: the file is still there; rm: gone."""
    require_tmux()
    with Tmux(berthd, "run --name bob -it busybox sh") as t:
        assert wait_for(lambda: inspect(berthd, "bob")["State"]["Running"], timeout=30)
        time.sleep(0.5)
        t.type("cd /tmp && echo 'some text' > newfile && cat newfile")
        assert t.wait_screen("some text"), t.screen()
        t.send("C-p", "C-q")
        assert t.wait_screen("CLI-EXITED-0"), t.screen()
    berthd.docker("stop", "bob", timeout=30)
    assert berthd.docker("ps", "--format", "{{.Names}}").stdout.strip() == ""
    assert "bob" in berthd.docker("ps", "-a", "--format", "{{.Names}}").stdout
    berthd.docker("start", "bob")
    assert berthd.docker("exec", "bob", "cat", "/tmp/newfile").stdout == "some text\n"
    berthd.docker("stop", "-t", "1", "bob")
    berthd.docker("rm", "bob")
    run(berthd, "-d", "--name", "bob", "busybox", "sleep", "300")
    assert berthd.docker("exec", "bob", "ls", "/tmp").stdout == ""


def test_run_i_stdin_half_close_and_attach_piped(berthd):
    # stdin EOF closes the container's stdin; output still arrives in full.
    data = "".join(f"line{i}\n" for i in range(2000))
    cp = run(berthd, "-i", "--rm", "busybox", "sh", "-c", "cat; sleep 0.5; echo after-eof", input=data)
    assert cp.stdout == data + "after-eof\n"
    # -i with a non-tty: stdout and stderr stay apart on the CLI.
    cp = run(berthd, "-i", "--rm", "busybox", "sh", "-c", "read x; echo out-$x; echo err-$x >&2", input="v\n")
    assert cp.stdout == "out-v\n" and cp.stderr == "err-v\n"
    # The raw API: hijack with 101, framed output.
    berthd.docker("create", "-i", "--name", "raw", "busybox", "sh", "-c", "read x; echo got-$x; echo e >&2")
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(berthd.sock)
    s.sendall(b"POST /v1.44/containers/raw/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n"
              b"Host: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    assert b"application/vnd.docker.multiplexed-stream" in head.lower() or \
        b"application/vnd.docker.multiplexed-stream" in head
    berthd.docker("start", "raw")
    s.sendall(b"hi\n")
    s.shutdown(socket.SHUT_WR)
    buf = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    s.close()
    frames = []
    while buf:
        kind, n = buf[0], int.from_bytes(buf[4:8], "big")
        frames.append((kind, buf[8:8 + n]))
        buf = buf[8 + n:]
    assert (1, b"got-hi\n") in frames and (2, b"e\n") in frames
    assert berthd.docker("wait", "raw", timeout=30).stdout.strip() == "0"


def test_attach_docker_py_stream_and_resize(berthd):
    c = berthd.client()
    # The first line comes after a pause: attach with logs=1 replays the log, then follows, and
    # (as with dockerd) a line written between the two may be missed.
    ctr = c.containers.run("busybox", ["sh", "-c", "sleep 1; for i in 1 2 3; do echo o$i; echo e$i >&2; sleep 0.3; done"],
                           detach=True, name="pyat")
    chunks = list(c.api.attach(ctr.id, stream=True, demux=True, logs=True))
    out = b"".join(o for o, e in chunks if o)
    err = b"".join(e for o, e in chunks if e)
    assert out == b"o1\no2\no3\n" and err == b"e1\ne2\ne3\n"
    # resize of a tty container is seen by the process.
    run(berthd, "-d", "-t", "--name", "rz", "busybox", "sh", "-c", "sleep 300")
    c.api.resize("rz", height=33, width=77)
    assert berthd.docker("exec", "rz", "sh", "-c", "stty size < /proc/1/fd/0").stdout.strip() == "33 77"
    r = berthd.api("POST", "/containers/pyat/resize?h=10&w=10")
    assert r.status in (409, 500) or r.status == 200
    r = berthd.api("POST", "/containers/nosuch/resize?h=10&w=10")
    assert r.status == 404


def test_attach_logs_no_stream_docker_py(berthd):
    # docker-py's attach(stream=False, logs=True) of an exited container (its own
    # test_attach_no_stream): the log must reach it every time. Without berthd's pause after
    # the 101, the bytes sent with the response head were lost to docker-py in ~5 of 100.
    berthd.docker("pull", "busybox")
    c = berthd.client()
    bad = []
    for i in range(40):
        ctr = c.api.create_container("busybox", "echo hello")
        c.api.start(ctr)
        c.api.wait(ctr, condition="not-running")
        out = c.api.attach(ctr, stream=False, logs=True)
        if out != b"hello\n":
            bad.append((i, out))
        c.api.remove_container(ctr)
    assert not bad, bad


def test_attach_to_stopped_container_refused(berthd):
    run(berthd, "--name", "st", "busybox", "true")
    cp = berthd.docker("attach", "st", check=False, timeout=20)
    assert cp.returncode != 0 and "You cannot attach to a stopped container, start it first" in cp.stderr


def test_exec_user_workdir_and_errors_as_dockerd(berthd):
    # The alpine stand-in carries alpine-baselayout's users and directories.
    run(berthd, "-d", "--name", "al", "alpine:3.10", "sleep", "300")
    assert berthd.docker("exec", "-u", "postgres", "al", "whoami").stdout == "postgres\n"
    assert berthd.docker("exec", "-u", "postgres", "al", "id", "-G").stdout == "70\n"
    assert berthd.docker("exec", "-w", "/var/opt", "al", "pwd").stdout == "/var/opt\n"
    # A missing user: dockerd's own wording, no runtime prefix; a missing workdir: the
    # runtime's wording, once; both 126, dockerd's code for an exec that did not start.
    cp = berthd.docker("exec", "-u", "nosuch", "al", "true", check=False)
    assert cp.returncode == 126
    assert cp.stdout + cp.stderr == "unable to find user nosuch: no matching entries in passwd file\n"
    cp = berthd.docker("exec", "-w", "/nope", "al", "pwd", check=False)
    assert cp.returncode == 126
    assert ('OCI runtime exec failed: exec failed: unable to start container process: chdir to cwd '
            '("/nope") set in config.json failed: no such file or directory: unknown\n') == cp.stdout + cp.stderr


def test_exec_detach_keys_any_key_case(berthd):
    # Go's JSON decoding ignores case: docker-py sends `detachKeys` from ~/.docker/config.json.
    import socket
    run(berthd, "-d", "-i", "--name", "dk", "busybox", "cat")
    r = berthd.api("POST", "/containers/dk/exec", json={
        "AttachStdin": True, "AttachStdout": True, "Tty": True, "Cmd": ["cat"], "detachKeys": "ctrl-x"})
    eid = json.loads(r.body)["Id"]
    assert berthd.client().api.exec_inspect(eid)["DetachKeys"] == "ctrl-x"
    s = socket.socket(socket.AF_UNIX)
    s.connect(berthd.sock)
    body = b'{"Detach": false, "Tty": true}'
    s.sendall(b"POST /exec/" + eid.encode() + b"/start HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
              b"Upgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)
    s.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    s.sendall(b"\x18")
    # Detached: the connection ends; the process lives on.
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert wait_for(lambda: berthd.client().api.exec_inspect(eid)["Running"] is True, timeout=5)


def _ws(berthd, path):
    """A websocket-client connection to berthd's Unix socket (the library takes a connected
    socket as is)."""
    import socket
    import websocket
    s = socket.socket(socket.AF_UNIX)
    s.connect(berthd.sock)
    return websocket.create_connection("ws://localhost" + path, socket=s, timeout=15)


def test_attach_websocket(berthd):
    import websocket
    # Before start, with logs and stream: output raw (never multiplexed) in binary messages.
    cid = berthd.docker("create", "busybox", "sh", "-c", "printf 'out line'; printf 'err line' >&2").stdout.strip()
    ws = _ws(berthd, f"/v1.41/containers/{cid}/attach/ws?stdout=1&stderr=1&stream=1&logs=1")
    berthd.docker("start", cid)
    got = b""
    while True:
        try:
            op, data = ws.recv_data()
        except websocket.WebSocketConnectionClosedException:
            break
        if op == websocket.ABNF.OPCODE_CLOSE:
            break
        assert op == websocket.ABNF.OPCODE_BINARY
        got += data
    assert sorted([b"out line", b"err line"]) == sorted([got[:8], got[8:]]) or got in (
        b"out lineerr line", b"err lineout line")
    ws.close()
    # stdin from the client's messages (text or binary); before API 1.28 output is text.
    berthd.docker("create", "-i", "--name", "wsin", "busybox", "sh", "-c", "read a; read b; echo got:$a:$b")
    ws = _ws(berthd, "/v1.27/containers/wsin/attach/ws?stream=1")
    berthd.docker("start", "wsin")
    ws.send("one\n")
    ws.send_binary(b"two\n")
    op, data = ws.recv_data()
    assert (op, data) == (websocket.ABNF.OPCODE_TEXT, b"got:one:two\n")
    ws.close()
    # API >= 1.42 honours stdout/stderr: only stderr here; logs of a stopped container.
    berthd.docker("run", "--name", "wslog", "busybox", "sh", "-c", "echo o; echo e >&2")
    ws = _ws(berthd, "/v1.44/containers/wslog/attach/ws?stderr=1&logs=1")
    assert ws.recv() == b"e\n"
    ws.close()
    # Not a websocket handshake, and an unknown container.
    r = berthd.api("GET", "/containers/wslog/attach/ws")
    assert r.status == 400
    r = berthd.api("GET", "/containers/nosuch/attach/ws")
    assert r.status == 404
