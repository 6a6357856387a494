"""A follower keeps the log it opened: removing the container right after its exit must not
cut the lines the follower has not read yet (docker-py's `containers.run` opens
`logs(follow=True)`, waits, removes, and only then reads the stream)."""

import docker


def test_follow_survives_remove_after_exit(berthd):
    berthd.docker("pull", "busybox")
    client = docker.DockerClient(base_url=berthd.host)
    try:
        outs = [client.containers.run("busybox", ["echo", f"line {i}"], remove=True)
                for i in range(30)]
        assert outs == [f"line {i}\n".encode() for i in range(30)]
        # The same by hand: the stream is read only after the container is gone.
        c = client.containers.create("busybox", ["sh", "-c", "seq 1 500"])
        c.start()
        stream = c.logs(stream=True, follow=True)
        assert c.wait()["StatusCode"] == 0
        c.remove()
        got = b"".join(stream)
        assert got == "".join(f"{i}\n" for i in range(1, 501)).encode()
    finally:
        client.close()
