"""docker commit (POST /commit), and the container filesystem endpoints next to it (cp, export,
diff), through the real docker CLI, docker-py and the raw API."""

import json
import tarfile


def inspect(b, ref):
    return json.loads(b.docker("image", "inspect", ref).stdout)[0]


def test_commit_with_changes(berthd):
    berthd.docker("run", "--name", "cm", "-e", "FROM_RUN=1", "busybox", "sh", "-c",
                  "echo committed > /root/f && rm /bin/ls")
    base = inspect(berthd, "busybox")
    berthd.docker("commit", "-c", 'CMD ["cat", "/root/f"]', "-c", "ENV ADDED=yes",
                  "-c", "EXPOSE 9000", "-c", "LABEL via=commit", "-c", "WORKDIR /root",
                  "-m", "msg", "-a", "me <me@example.com>", "cm", "cm:1")
    assert berthd.docker("run", "--rm", "cm:1").stdout == "committed\n"
    # The deletion is a whiteout in the new layer.
    cp = berthd.docker("run", "--rm", "cm:1", "ls", check=False)
    assert cp.returncode != 0
    i = inspect(berthd, "cm:1")
    c = i["Config"]
    assert i["Comment"] == "msg" and i["Author"] == "me <me@example.com>"
    assert c["Cmd"] == ["cat", "/root/f"] and c["WorkingDir"] == "/root"
    assert "ADDED=yes" in c["Env"] and "FROM_RUN=1" in c["Env"]
    assert "9000/tcp" in c["ExposedPorts"] and c["Labels"]["via"] == "commit"
    assert i["Parent"] == base["Id"] or i["Parent"] == ""
    assert len(i["RootFS"]["Layers"]) == len(base["RootFS"]["Layers"]) + 1
    top = json.loads(berthd.api("GET", "/images/cm:1/history").body)[0]
    assert top["Comment"] == "msg" and "echo committed" in top["CreatedBy"]
    diff = berthd.docker("diff", "cm").stdout.split("\n")
    assert "A /root/f" in diff and "D /bin/ls" in diff


def test_commit_running_container_and_api(berthd):
    berthd.docker("run", "-d", "--name", "live", "busybox", "sh", "-c",
                  "echo live > /state; sleep 300")
    # Wait for the file, then commit while it runs (paused for the snapshot by default).
    for _ in range(100):
        if berthd.docker("exec", "live", "cat", "/state", check=False).stdout == "live\n":
            break
    r = berthd.api("POST", "/commit?container=live&repo=api/live&tag=v1&comment=c1")
    assert r.status == 201, r.body
    new_id = json.loads(r.body)["Id"]
    assert new_id.startswith("sha256:")
    assert inspect(berthd, "api/live:v1")["Id"] == new_id
    assert json.loads(berthd.api("GET", "/containers/live/json").body)["State"]["Status"] == "running"
    out = berthd.docker("run", "--rm", "api/live:v1", "cat", "/state").stdout
    assert out == "live\n"
    # The container's own command becomes the image's.
    assert inspect(berthd, "api/live:v1")["Config"]["Cmd"] == ["sh", "-c", "echo live > /state; sleep 300"]
    # Untagged commit, and an unknown container.
    r = berthd.api("POST", "/commit?container=live&pause=0")
    assert r.status == 201
    r = berthd.api("POST", "/commit?container=nope")
    assert r.status == 404 and "No such container: nope" in json.loads(r.body)["message"]
    berthd.docker("rm", "-f", "live")


def test_commit_docker_py(berthd):
    client = berthd.client()
    c = client.containers.run("busybox", ["sh", "-c", "echo py > /py"], detach=True)
    c.wait()
    img = c.commit(repository="pycommit", tag="1", changes=['CMD ["cat", "/py"]'],
                   message="from py", author="py")
    assert "pycommit:1" in img.tags
    assert client.containers.run("pycommit:1", remove=True) == b"py\n"
    c.remove()


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
    names = tarfile.open(exp).getnames()
    assert "bin/busybox" in names and "tmp/in.txt" in names
    berthd.docker("rm", "-f", "cpc")


def test_commit_records_container_config(berthd):
    # docker-py's CommitTest: the image names its container and parent, and `ContainerConfig`
    # (API < 1.45) is the container's config with every key dockerd writes.
    client = berthd.client()
    api = client.api
    client.images.pull("busybox", tag="latest")
    ctr = api.create_container("busybox", ["touch", "/test"])
    api.start(ctr)
    api.wait(ctr)
    img = api.inspect_image(api.commit(ctr)["Id"])
    assert img["Container"].startswith(ctr["Id"])
    assert img["Parent"] == api.inspect_image("busybox")["Id"]
    cc = img["ContainerConfig"]
    for k in ["Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr",
              "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Image", "Volumes", "WorkingDir",
              "Entrypoint", "OnBuild", "Labels"]:
        assert k in cc, k
    assert cc["Image"] == "busybox" and cc["Cmd"] == ["touch", "/test"]
