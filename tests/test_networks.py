"""Networks (issue #4): the default bridge, user-defined bridges with embedded DNS, host/none/
container modes, connect/disconnect, the network API's errors, and cleanup of everything the
engine made on the host (bridges, veths, netns, iptables rules)."""

import json
import subprocess
import time

import pytest

HTTPD = "mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p {port} -h /www"


def sh(*cmd):
    return subprocess.run(list(cmd), capture_output=True, text=True).stdout


def links():
    return sh("ip", "-o", "link")


def netns():
    return sh("ip", "netns", "list")


def rules_for(dev):
    return [l for t in ("filter", "nat") for l in sh("iptables", "-w", "5", "-t", t, "-S").splitlines()
            if dev in l]


def inspect(berthd, what, kind="container"):
    return json.loads(berthd.docker(kind, "inspect", what).stdout)[0]


def default_bridge_dev(berthd):
    return inspect(berthd, "bridge", "network")["Options"]["com.docker.network.bridge.name"]


def test_default_bridge(berthd):
    net = inspect(berthd, "bridge", "network")
    dev = net["Options"]["com.docker.network.bridge.name"]
    assert dev.startswith("bb") and len(dev) <= 15
    subnet = net["IPAM"]["Config"][0]["Subnet"]
    gw = net["IPAM"]["Config"][0]["Gateway"]
    assert f"{gw}/{subnet.split('/')[1]}" in sh("ip", "-4", "addr", "show", "dev", dev)
    berthd.docker("run", "-d", "--name", "ca", "--hostname", "ahost", "busybox", "sleep", "300")
    ns = inspect(berthd, "ca")["NetworkSettings"]
    ip = ns["IPAddress"]
    assert ns["Gateway"] == gw and ns["Networks"]["bridge"]["NetworkID"] == net["Id"]
    # Legacy bridge: /etc/hosts has the container's own address, no DNS by name.
    hosts = berthd.docker("exec", "ca", "cat", "/etc/hosts").stdout
    assert f"{ip}\tahost" in hosts
    assert gw not in berthd.docker("exec", "ca", "cat", "/etc/resolv.conf").stdout
    # Containers on the bridge reach each other by address, and the host reaches them.
    berthd.docker("run", "-d", "--name", "cb", "busybox", "sh", "-c", HTTPD.format(text="b", port=80))
    bip = inspect(berthd, "cb")["NetworkSettings"]["IPAddress"]
    for _ in range(50):
        cp = berthd.docker("exec", "ca", "wget", "-qO-", f"http://{bip}/", check=False)
        if cp.returncode == 0:
            break
        time.sleep(0.1)
    assert cp.stdout == "b\n"
    assert "Containers" in net and len(inspect(berthd, "bridge", "network")["Containers"]) == 2
    # --add-host host-gateway is the default bridge's gateway.
    out = berthd.docker("run", "--rm", "--add-host", "hg:host-gateway", "busybox", "cat", "/etc/hosts").stdout
    assert f"{gw}\thg" in out


def test_user_network_dns_and_aliases(berthd):
    berthd.docker("network", "create", "--label", "t=1", "appnet")
    berthd.docker("run", "-d", "--name", "srv", "--network", "appnet", "--network-alias", "backend",
                  "busybox", "sh", "-c", HTTPD.format(text="from-srv", port=80))
    cid = inspect(berthd, "srv")["Id"]
    out = berthd.docker("run", "--rm", "--network", "appnet", "busybox", "sh", "-c",
                        f"sleep 0.5; wget -qO- http://srv/; wget -qO- http://backend/; "
                        f"wget -qO- http://{cid[:12]}/").stdout
    assert out == "from-srv\n" * 3
    ep = inspect(berthd, "srv")["NetworkSettings"]["Networks"]["appnet"]
    assert "backend" in ep["Aliases"] and {"srv", "backend", cid[:12]} <= set(ep["DNSNames"])
    # nslookup through the embedded server (the gateway); an unknown name is not found.
    gw = inspect(berthd, "appnet", "network")["IPAM"]["Config"][0]["Gateway"]
    out = berthd.docker("run", "--rm", "--network", "appnet", "busybox", "sh", "-c",
                        "cat /etc/resolv.conf; nslookup srv").stdout
    assert f"nameserver {gw}" in out and ep["IPAddress"] in out
    net = inspect(berthd, "appnet", "network")
    assert net["Labels"] == {"t": "1"} and len(net["Containers"]) == 1
    cp = berthd.docker("network", "rm", "appnet", check=False)
    assert cp.returncode != 0
    assert f"error while removing network: network appnet id {net['Id']} has active endpoints" in cp.stderr
    berthd.docker("rm", "-f", "srv")
    berthd.docker("network", "rm", "appnet")
    dev = "br-" + net["Id"][:12]
    assert dev not in links() and rules_for(dev) == []


def test_networks_are_isolated_by_name(berthd):
    berthd.docker("network", "create", "left")
    berthd.docker("network", "create", "right")
    berthd.docker("run", "-d", "--name", "lsrv", "--network", "left", "busybox", "sleep", "300")
    cp = berthd.docker("run", "--rm", "--network", "right", "busybox", "nslookup", "lsrv", check=False)
    assert "lsrv" not in cp.stdout or cp.returncode != 0
    assert "Address" not in cp.stdout.split("lsrv", 1)[-1]


def test_connect_disconnect_and_two_endpoints(berthd):
    berthd.docker("network", "create", "--subnet", "10.213.7.0/24", "--gateway", "10.213.7.254", "n1")
    berthd.docker("network", "create", "n2")
    n1 = inspect(berthd, "n1", "network")
    assert n1["IPAM"]["Config"] == [{"Subnet": "10.213.7.0/24", "Gateway": "10.213.7.254"}]
    berthd.docker("run", "-d", "--name", "two", "--network", "n1", "busybox", "sleep", "300")
    berthd.docker("run", "-d", "--name", "other", "--network", "n2", "busybox", "sleep", "300")
    berthd.docker("network", "connect", "--alias", "twoalias", "n2", "two")
    nets = inspect(berthd, "two")["NetworkSettings"]["Networks"]
    assert set(nets) == {"n1", "n2"}
    assert nets["n1"]["IPAddress"].startswith("10.213.7.") and nets["n1"]["Gateway"] == "10.213.7.254"
    ifaces = berthd.docker("exec", "two", "ip", "-o", "-4", "addr").stdout
    assert "eth0" in ifaces and "eth1" in ifaces
    # The newly connected network's DNS knows it by name and alias.
    out = berthd.docker("exec", "other", "sh", "-c", "nslookup two; nslookup twoalias").stdout
    assert out.count(nets["n2"]["IPAddress"]) == 2
    assert len(inspect(berthd, "n2", "network")["Containers"]) == 2
    berthd.docker("network", "disconnect", "n2", "two")
    assert "eth1" not in berthd.docker("exec", "two", "ip", "-o", "link").stdout
    assert set(inspect(berthd, "two")["NetworkSettings"]["Networks"]) == {"n1"}
    cp = berthd.docker("network", "disconnect", "n2", "two", check=False)
    assert cp.returncode != 0 and "is not connected to network n2" in cp.stderr
    # A stopped container connected to a network joins it at its next start.
    berthd.docker("stop", "-t", "0", "two")
    berthd.docker("network", "connect", "n2", "two")
    berthd.docker("start", "two")
    assert set(inspect(berthd, "two")["NetworkSettings"]["Networks"]) == {"n1", "n2"}
    assert "eth1" in berthd.docker("exec", "two", "ip", "-o", "link").stdout


def test_host_none_and_container_modes(berthd):
    out = berthd.docker("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link").stdout
    assert "lo" in out and "eth0" not in out
    host_lo = berthd.docker("run", "--rm", "--network", "host", "busybox", "cat", "/proc/net/dev").stdout
    assert "lo:" in host_lo
    assert inspect(berthd, "host", "network")["Driver"] == "host"
    berthd.docker("run", "-d", "--name", "owner", "busybox", "sh", "-c", HTTPD.format(text="shared", port=8000))
    ip = inspect(berthd, "owner")["NetworkSettings"]["IPAddress"]
    out = berthd.docker("run", "--rm", "--network", "container:owner", "busybox", "sh", "-c",
                        "sleep 0.3; wget -qO- http://127.0.0.1:8000/; ip -o -4 addr").stdout
    assert out.startswith("shared\n") and ip in out
    cp = berthd.docker("network", "connect", "bridge", "owner", check=False)
    assert cp.returncode != 0


def test_network_api_errors(berthd):
    cp = berthd.docker("network", "create", "--subnet", "300.1.1.0/24", "bad", check=False)
    assert cp.returncode != 0 and "invalid subnet 300.1.1.0/24" in cp.stderr
    cp = berthd.docker("network", "create", "--subnet", "10.213.8.5/24", "bad", check=False)
    assert cp.returncode != 0 and "it should be 10.213.8.0/24" in cp.stderr
    r = berthd.api("POST", "/networks/create", json={"Name": "bad", "IPAM": {"Config": [{"Subnet": "nonsense"}]}})
    assert r.status == 400
    assert "bad" not in berthd.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    berthd.docker("network", "create", "dup")
    cp = berthd.docker("network", "create", "dup", check=False)
    assert cp.returncode != 0 and "network with name dup already exists" in cp.stderr
    r = berthd.api("POST", "/networks/create", json={"Name": "dup"})
    assert r.status == 409
    cp = berthd.docker("network", "rm", "bridge", check=False)
    assert cp.returncode != 0 and "pre-defined network" in cp.stderr
    cp = berthd.docker("network", "inspect", "nosuchnet", check=False)
    assert cp.returncode != 0 and "network nosuchnet not found" in cp.stderr
    # A container on a network that does not exist is refused at create.
    cp = berthd.docker("run", "--name", "lost", "--network", "nosuchnet", "busybox", "true", check=False)
    assert cp.returncode == 125 and "network nosuchnet not found" in cp.stderr
    assert berthd.docker("ps", "-aq").stdout.strip() == ""
    # Overlapping subnets are refused.
    berthd.docker("network", "create", "--subnet", "10.213.9.0/24", "ov1")
    cp = berthd.docker("network", "create", "--subnet", "10.213.9.128/25", "ov2", check=False)
    assert cp.returncode != 0 and "overlaps" in cp.stderr


def test_ls_filters_and_prune(berthd):
    berthd.docker("network", "create", "--label", "team=a", "pa")
    berthd.docker("network", "create", "pb")
    berthd.docker("network", "create", "--internal", "pint")
    assert inspect(berthd, "pint", "network")["Internal"] is True
    berthd.docker("run", "-d", "--name", "onb", "--network", "pb", "busybox", "sleep", "300")
    names = lambda *f: berthd.docker("network", "ls", *f, "--format", "{{.Name}}").stdout.split()
    assert names("--filter", "label=team=a") == ["pa"]
    assert set(names("--filter", "dangling=true")) == {"pa", "pint"}
    assert set(names("--filter", "type=builtin")) == {"bridge", "host", "none"}
    assert names("--filter", "name=pin") == ["pint"]
    # Internal networks have no default route.
    out = berthd.docker("run", "--rm", "--network", "pint", "busybox", "ip", "route").stdout
    assert "default" not in out
    ids = {n: inspect(berthd, n, "network")["Id"] for n in ("pa", "pint")}
    out = berthd.docker("network", "prune", "-f").stdout
    assert "pa" in out and "pint" in out and "pb" not in out
    assert set(names()) == {"bridge", "host", "none", "pb"}
    for i in ids.values():
        assert "br-" + i[:12] not in links()


def test_add_host_and_dns_files(berthd):
    out = berthd.docker("run", "--rm", "--add-host", "myhost:10.1.2.3", "--dns", "10.9.9.9",
                        "--dns-search", "example.test", "--dns-option", "ndots:2", "--hostname", "hn",
                        "busybox", "sh", "-c", "cat /etc/hosts /etc/resolv.conf /etc/hostname").stdout
    assert "10.1.2.3\tmyhost" in out and "nameserver 10.9.9.9" in out and "hn" in out
    assert "search example.test" in out and "options ndots:2" in out
    cp = berthd.docker("run", "--rm", "--add-host", "x:notanip", "busybox", "true", check=False)
    assert cp.returncode != 0


def test_cleanup_of_host_devices(berthd):
    """Everything the engine made is gone once containers and networks are removed, and the
    default bridge goes with a clean engine stop."""
    berthd.docker("network", "create", "cl")
    net = inspect(berthd, "cl", "network")
    dev = "br-" + net["Id"][:12]
    subnet = net["IPAM"]["Config"][0]["Subnet"]
    berthd.docker("run", "-d", "--name", "c1", "--network", "cl", "-p", "127.0.0.1::80", "busybox", "sleep", "300")
    berthd.docker("run", "-d", "--name", "c2", "busybox", "sleep", "300")
    ids = [inspect(berthd, c)["Id"] for c in ("c1", "c2")]
    assert all(f"berth-{i[:12]}" in netns() for i in ids)
    assert f"master {dev}" in links()
    assert any(subnet in r and "MASQUERADE" in r for r in rules_for(dev))
    berthd.docker("rm", "-f", "c1", "c2")
    assert not any(f"berth-{i[:12]}" in netns() for i in ids)
    assert f"master {dev}" not in links()
    berthd.docker("network", "rm", "cl")
    assert dev not in links() and rules_for(dev) == []
    bdev = default_bridge_dev(berthd)
    assert bdev in links()
    berthd.stop()
    assert bdev not in links() and rules_for(bdev) == []
    berthd.start()
    assert bdev in links()


def test_ipam_range_aux_and_validation(berthd):
    """IPAM pools as docker-py and the CLI send them: IPRange and AuxiliaryAddresses kept and
    shown as given (no Gateway when none was given), dynamic addresses from the range, reserved
    addresses never handed out, and dockerd's ValidateIPAM wording for bad pools."""
    pool = {"Subnet": "10.213.16.0/20", "IPRange": "10.213.21.0/24", "Gateway": "10.213.21.254",
            "AuxiliaryAddresses": {"a": "10.213.21.0", "b": "10.213.21.1"}}
    r = berthd.api("POST", "/networks/create", json={
        "Name": "rng", "CheckDuplicate": None, "Options": None,
        "IPAM": {"Driver": "default", "Config": [pool], "Options": None}})
    assert r.status == 201, r.text
    net = inspect(berthd, "rng", "network")
    assert net["IPAM"] == {"Driver": "default", "Options": None, "Config": [pool]}
    assert net["Options"] == {}
    berthd.docker("run", "-d", "--name", "inr", "--network", "rng", "busybox", "sleep", "300")
    ep = inspect(berthd, "inr")["NetworkSettings"]["Networks"]["rng"]
    # The range's first addresses are the auxiliary ones: the next is the first free.
    assert ep["IPAddress"] == "10.213.21.2" and ep["Gateway"] == "10.213.21.254"
    # A static address may lie outside the range (inside the subnet); a reserved one may not.
    berthd.docker("run", "-d", "--name", "sta", "--network", "rng", "--ip", "10.213.17.9",
                  "busybox", "sleep", "300")
    assert inspect(berthd, "sta")["NetworkSettings"]["Networks"]["rng"]["IPAddress"] == "10.213.17.9"
    cp = berthd.docker("run", "-d", "--name", "aux", "--network", "rng", "--ip", "10.213.21.1",
                       "busybox", "sleep", "300", check=False)
    assert cp.returncode != 0 and "Address already in use" in cp.stderr, cp.stderr
    # Only a subnet: the Config entry shows just that (the gateway is still the first address).
    berthd.docker("network", "create", "--subnet", "10.213.32.0/24", "sub")
    sub = inspect(berthd, "sub", "network")
    assert sub["IPAM"]["Config"] == [{"Subnet": "10.213.32.0/24"}]
    berthd.docker("run", "-d", "--name", "ins", "--network", "sub", "busybox", "sleep", "300")
    ep = inspect(berthd, "ins")["NetworkSettings"]["Networks"]["sub"]
    assert ep["Gateway"] == "10.213.32.1" and ep["IPAddress"] == "10.213.32.2"
    # No pool: the engine's choice is shown with its gateway.
    berthd.docker("network", "create", "auto")
    cfg = inspect(berthd, "auto", "network")["IPAM"]["Config"]
    assert len(cfg) == 1 and set(cfg[0]) == {"Subnet", "Gateway"}

    def refused(ipam, enable_ipv6=False):
        r = berthd.api("POST", "/networks/create",
                       json={"Name": "bad", "IPAM": ipam, "EnableIPv6": enable_ipv6})
        assert r.status == 400, r.text
        return r.json()["message"]

    assert refused({"Config": [{"Subnet": "10.213.48.0/24", "Gateway": "10.213.49.1"}]}) == (
        "invalid network config:\ninvalid gateway 10.213.49.1: "
        "parent subnet 10.213.48.0/24 doesn't contain this address")
    assert refused({"Config": [{"Subnet": "10.213.48.0/24", "IPRange": "10.213.48.0/23"}]}) == (
        "invalid network config:\ninvalid ip-range 10.213.48.0/23: "
        "CIDR block is bigger than its parent subnet 10.213.48.0/24")
    msg = refused({"Config": [{"Subnet": "10.213.48.0/24", "IPRange": "10.213.50.0/24",
                               "AuxiliaryAddresses": {"x": "nonsense"}}]})
    assert msg == ("invalid network config:\n"
                   "* invalid ip-range 10.213.50.0/24: parent subnet 10.213.48.0/24 doesn't contain ip-range\n"
                   "* invalid auxiliary address x: invalid address")
    # IPv6 pools are checked when IPv6 is enabled (docker-py 6's tests use a host address).
    assert refused({"Config": [{"Subnet": "2001:389::1/64"}]}, enable_ipv6=True) == (
        "invalid network config:\ninvalid subnet 2001:389::1/64: it should be 2001:389::/64")
    assert "bad" not in berthd.docker("network", "ls", "--format", "{{.Name}}").stdout.split()


def test_dockerpy_ipam_config(berthd):
    """docker-py's IPAMConfig/IPAMPool round trip (its integration test, with a free subnet)."""
    from docker.types import IPAMConfig, IPAMPool
    c = berthd.client()
    net = c.networks.create("pyipam", ipam=IPAMConfig(driver="default", pool_configs=[IPAMPool(
        subnet="10.213.64.0/20", iprange="10.213.69.0/24", gateway="10.213.69.254",
        aux_addresses={"a": "10.213.65.5", "b": "10.213.65.6"})]))
    ipam = c.api.inspect_network(net.id)["IPAM"]
    assert ipam.pop("Options", None) is None and ipam["Driver"] == "default"
    assert ipam["Config"] == [{"Subnet": "10.213.64.0/20", "IPRange": "10.213.69.0/24",
                               "Gateway": "10.213.69.254",
                               "AuxiliaryAddresses": {"a": "10.213.65.5", "b": "10.213.65.6"}}]
    net.remove()
