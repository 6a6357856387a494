"""Networks (issues #4, #9): the default bridge, user-defined bridges with embedded DNS, host/
none/container modes, connect/disconnect (of created containers too, with their endpoint
settings: static addresses, aliases, links, MAC address, driver options), IPv6 networks,
isolation between networks and of internal ones, CheckDuplicate by API version, the network
API's errors, and cleanup of everything the engine made on the host (bridges, veths, netns,
iptables and ip6tables rules)."""

import json
import os
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


def v6rules_for(dev):
    return [l for l in sh("ip6tables", "-w", "5", "-S").splitlines() if dev in l]


def eth(berthd, name, ifname="eth0"):
    """(MAC, IPv4 addresses, IPv6 global addresses) of an interface inside a running container."""
    mac = berthd.docker("exec", name, "cat", f"/sys/class/net/{ifname}/address").stdout.strip()
    out = berthd.docker("exec", name, "ip", "-o", "addr", "show", "dev", ifname).stdout
    v4 = [l.split()[3].split("/")[0] for l in out.splitlines() if " inet " in l]
    v6 = [l.split()[3].split("/")[0] for l in out.splitlines() if " inet6 " in l and "scope global" in l]
    return mac, v4, v6


def test_connect_created_container_and_endpoint_settings(berthd):
    """`network connect` of a container that was only created stores the endpoint (static
    addresses, aliases, links, MAC, driver options), inspect shows it before the start, and
    the start applies it. Disconnecting the NetworkMode's own network of a running container
    and connecting it again with a static address works (NetworkMode stays)."""
    berthd.docker("pull", "-q", "busybox")
    c = berthd.client(version="1.41")
    api = c.api
    n1 = api.create_network("ep1", ipam={"Driver": "default", "Config": [
        {"Subnet": "10.213.80.0/24", "IPRange": "10.213.80.128/25", "Gateway": "10.213.80.254"}]})["Id"]
    api.create_network("ep2")
    ctr = api.create_container("busybox", "top", name="epc",
                               host_config=api.create_host_config(network_mode="ep1"))
    # Connected before it ever ran: kept and shown.
    api.connect_container_to_network(ctr, "ep2", aliases=["web"], links=[("epup", "bar")],
                                     mac_address="02:42:ac:11:00:02",
                                     driver_opt={"com.example.opt": "on"})
    nets = api.inspect_container(ctr)["NetworkSettings"]["Networks"]
    assert set(nets) == {"ep1", "ep2"}
    ep = nets["ep2"]
    assert ep["MacAddress"] == "02:42:ac:11:00:02" and ep["Aliases"] == ["web"]
    assert ep["Links"] == ["epup:bar"] and ep["DriverOpts"] == {"com.example.opt": "on"}
    assert ep["IPAddress"] == "" and nets["ep1"]["NetworkID"] == n1
    # A static address needs a network with a subnet of the user's.
    with pytest.raises(Exception, match="user configured subnets"):
        api.connect_container_to_network(ctr, "ep2", ipv4_address="10.1.1.1")
    # Disconnect of a created container: only from a network it is on.
    api.disconnect_container_from_network(ctr, "ep2")
    with pytest.raises(Exception, match="is not connected to the network"):
        api.disconnect_container_from_network(ctr, "ep2")
    api.connect_container_to_network(ctr, "ep2", aliases=["web"], links=[("epup", "bar")],
                                     mac_address="02:42:ac:11:00:02",
                                     driver_opt={"com.example.opt": "on"})
    api.start(ctr)
    nets = api.inspect_container(ctr)["NetworkSettings"]["Networks"]
    assert nets["ep1"]["IPAddress"].startswith("10.213.80.1")  # from the range
    assert nets["ep2"]["MacAddress"] == "02:42:ac:11:00:02"
    assert nets["ep2"]["DriverOpts"] == {"com.example.opt": "on"}
    mac, v4, _ = eth(berthd, "epc", "eth1")
    assert mac == "02:42:ac:11:00:02" and v4 == [nets["ep2"]["IPAddress"]]
    # The link alias names the upstream for this container only, once the upstream runs.
    api.start(api.create_container("busybox", "top", name="epup",
                                   host_config=api.create_host_config(network_mode="ep2")))
    up_ip = api.inspect_container("epup")["NetworkSettings"]["Networks"]["ep2"]["IPAddress"]
    out = berthd.docker("exec", "epc", "nslookup", "bar").stdout
    assert up_ip in out
    cp = berthd.docker("exec", "epup", "nslookup", "bar", check=False)
    assert up_ip not in cp.stdout
    # Disconnect the mode's own network while running, connect again with a static address.
    api.disconnect_container_from_network(ctr, "ep1")
    assert api.inspect_container(ctr)["HostConfig"]["NetworkMode"] == "ep1"
    api.connect_container_to_network(ctr, "ep1", ipv4_address="10.213.80.24")
    ep = api.inspect_container(ctr)["NetworkSettings"]["Networks"]["ep1"]
    assert ep["IPAMConfig"]["IPv4Address"] == "10.213.80.24" and ep["IPAddress"] == "10.213.80.24"
    assert "10.213.80.24" in berthd.docker("exec", "epc", "ip", "-o", "-4", "addr").stdout
    with pytest.raises(Exception):
        api.connect_container_to_network(ctr, "ep1")
    # Force-disconnecting what is not connected fails too, as with dockerd.
    api.disconnect_container_from_network(ctr, "ep2", force=True)
    with pytest.raises(Exception):
        api.disconnect_container_from_network(ctr, "ep2", force=True)
    # After a restart the container is on what it was left on.
    api.stop(ctr, timeout=0)
    api.start(ctr)
    nets = api.inspect_container(ctr)["NetworkSettings"]["Networks"]
    assert set(nets) == {"ep1"} and nets["ep1"]["IPAddress"] == "10.213.80.24"


def test_mac_address(berthd):
    """A MAC address given for the endpoint is the container's interface address and shown in
    inspect (the CLI sends it in EndpointsConfig at API 1.44)."""
    berthd.docker("run", "-d", "--name", "macd", "--mac-address", "02:42:ac:11:00:0a",
                  "busybox", "sleep", "300")
    ns = inspect(berthd, "macd")["NetworkSettings"]
    assert ns["MacAddress"] == "02:42:ac:11:00:0a"
    assert ns["Networks"]["bridge"]["MacAddress"] == "02:42:ac:11:00:0a"
    assert eth(berthd, "macd")[0] == "02:42:ac:11:00:0a"
    cp = berthd.docker("run", "--rm", "--mac-address", "nonsense", "busybox", "true", check=False)
    assert cp.returncode != 0


def test_create_check_duplicate_by_api_version(berthd):
    """API < 1.44 (dockerd 24): CheckDuplicate false or absent lets a second network take a
    name, with a warning; the name is then ambiguous. 1.44 (dockerd 25): names are unique."""
    r = berthd.api("POST", "/v1.41/networks/create", json={"Name": "twin", "CheckDuplicate": True})
    assert r.status == 201, r.text
    first = r.json()["Id"]
    r = berthd.api("POST", "/v1.41/networks/create", json={"Name": "twin", "CheckDuplicate": True})
    assert r.status == 409
    r = berthd.api("POST", "/v1.44/networks/create", json={"Name": "twin", "CheckDuplicate": False})
    assert r.status == 409
    r = berthd.api("POST", "/v1.41/networks/create", json={"Name": "twin", "CheckDuplicate": False})
    assert r.status == 201, r.text
    second = r.json()["Id"]
    assert second != first and f"id : {first}" in r.json()["Warning"]
    r = berthd.api("GET", "/networks/twin")
    assert r.status == 400 and "ambiguous" in r.json()["message"]
    for i in (first, second):
        assert berthd.api("GET", f"/networks/{i}").json()["Name"] == "twin"
        assert berthd.api("DELETE", f"/networks/{i}").status == 204
    assert "twin" not in berthd.docker("network", "ls", "--format", "{{.Name}}").stdout.split()


V6 = "fd42:b37e:{}::"


def test_ipv6_network(berthd):
    """EnableIPv6: the bridge has the IPv6 gateway, each container an address from the pool
    (or the one asked for) and a default route; inspect shows them; containers reach each
    other over IPv6. API < 1.44 takes a pool written with host bits as its network."""
    tag = "%x" % ((os.getpid() & 0xfff) | 0x1000)  # as ip(8) prints it: no leading zeros
    sub = V6.format(tag) + "/64"
    berthd.docker("network", "create", "--ipv6", "--subnet", sub, "v6net")
    net = inspect(berthd, "v6net", "network")
    assert net["EnableIPv6"] is True
    assert {"Subnet": sub} in net["IPAM"]["Config"]
    dev = "br-" + net["Id"][:12]
    gw = V6.format(tag) + "1"
    assert f"inet6 {gw}/64" in sh("ip", "-6", "addr", "show", "dev", dev)
    berthd.docker("run", "-d", "--name", "s6", "--network", "v6net", "busybox", "sleep", "300")
    berthd.docker("run", "-d", "--name", "t6", "--network", "v6net", "--ip6", V6.format(tag) + "f00d",
                  "busybox", "sleep", "300")
    s = inspect(berthd, "s6")["NetworkSettings"]["Networks"]["v6net"]
    t = inspect(berthd, "t6")["NetworkSettings"]["Networks"]["v6net"]
    assert s["GlobalIPv6Address"] == V6.format(tag) + "2" and s["GlobalIPv6PrefixLen"] == 64
    assert s["IPv6Gateway"] == gw and t["GlobalIPv6Address"] == V6.format(tag) + "f00d"
    assert eth(berthd, "t6")[2] == [V6.format(tag) + "f00d"]
    assert f"default via {gw}" in berthd.docker("exec", "s6", "ip", "-6", "route").stdout
    ctrs = inspect(berthd, "v6net", "network")["Containers"]
    assert sorted(c["IPv6Address"] for c in ctrs.values()) == sorted(
        [V6.format(tag) + "2/64", V6.format(tag) + "f00d/64"])
    out = berthd.docker("exec", "s6", "ping", "-6", "-c", "1", "-W", "2", V6.format(tag) + "f00d")
    assert "1 packets received" in out.stdout
    assert v6rules_for(dev)
    berthd.docker("rm", "-f", "s6", "t6")
    berthd.docker("network", "rm", "v6net")
    assert dev not in links() and v6rules_for(dev) == [] and rules_for(dev) == []
    # Without a pool there is none to take (dockerd before 27 has no default IPv6 pools).
    cp = berthd.docker("network", "create", "--ipv6", "nopool", check=False)
    assert cp.returncode != 0 and "IPv6 address pool" in cp.stderr
    # docker-py 6's pool "…::1/64": dockerd 24 took it (API 1.41); 1.44 refuses it.
    body = {"Name": "v6old", "EnableIPv6": True,
            "IPAM": {"Config": [{"Subnet": V6.format(tag) + "1/64"}]}}
    assert berthd.api("POST", "/v1.44/networks/create", json=body).status == 400
    r = berthd.api("POST", "/v1.41/networks/create", json=body)
    assert r.status == 201, r.text
    assert berthd.api("DELETE", "/networks/v6old").status == 204


def test_isolation_between_networks(berthd):
    """Containers on one user network reach each other; containers on two networks do not
    (BERTH-ISOLATION-STAGE-1/2, as dockerd's DOCKER-ISOLATION chains); an internal network
    has no way out. Every rule goes with the networks."""
    for n in ("isoa", "isob"):
        berthd.docker("network", "create", n)
    berthd.docker("network", "create", "--internal", "isoi")
    for name, net in (("a1", "isoa"), ("a2", "isoa"), ("b1", "isob"), ("i1", "isoi"), ("i2", "isoi")):
        berthd.docker("run", "-d", "--name", name, "--network", net, "busybox", "sleep", "300")
    ip = {n: inspect(berthd, n)["NetworkSettings"]["Networks"][net]["IPAddress"]
          for n, net in (("a1", "isoa"), ("a2", "isoa"), ("b1", "isob"), ("i1", "isoi"), ("i2", "isoi"))}

    def ping(src, dst):
        return berthd.docker("exec", src, "ping", "-c", "1", "-W", "1", dst, check=False).returncode == 0

    assert ping("a1", ip["a2"]) and ping("i1", ip["i2"])
    assert not ping("a1", ip["b1"]) and not ping("b1", ip["a1"])
    # TCP too: a web server on b1 serves isob, not a1.
    berthd.docker("exec", "-d", "b1", "sh", "-c", HTTPD.format(text="hi", port=7000))
    berthd.docker("run", "-d", "--name", "b2", "--network", "isob", "busybox", "sleep", "300")
    # (busybox wget -T crashes: timeout(1) bounds it instead.)
    get = lambda src: berthd.docker("exec", src, "timeout", "3", "wget", "-qO-", f"http://{ip['b1']}:7000/",
                                    check=False).stdout
    for _ in range(50):
        if get("b2") == "hi\n":
            break
        time.sleep(0.1)
    assert get("b2") == "hi\n" and get("a1") == ""
    # The internal network: no default route, and nothing forwarded in or out.
    assert "default" not in berthd.docker("exec", "i1", "ip", "route").stdout
    assert not ping("a1", ip["i1"])
    devs = {n: "br-" + inspect(berthd, n, "network")["Id"][:12] for n in ("isoa", "isob", "isoi")}
    rules = sh("iptables", "-w", "5", "-S")
    assert f"-A BERTH-ISOLATION-STAGE-1 -i {devs['isoa']} ! -o {devs['isoa']} -j BERTH-ISOLATION-STAGE-2" in rules
    assert f"-A BERTH-ISOLATION-STAGE-2 -o {devs['isob']} -j DROP" in rules
    assert f"-A BERTH-ISOLATION-STAGE-1 ! -i {devs['isoi']} -o {devs['isoi']} -j DROP" in rules
    # The jump comes before the bridges' own ACCEPT rules (engines side by side on this host
    # may have put theirs above it since).
    forward = [l for l in sh("iptables", "-w", "5", "-S", "FORWARD").splitlines() if l.startswith("-A")]
    jump = forward.index("-A FORWARD -j BERTH-ISOLATION-STAGE-1")
    assert all(i > jump for i, l in enumerate(forward) if any(d in l for d in devs.values()))
    berthd.docker("rm", "-f", "a1", "a2", "b1", "b2", "i1", "i2")
    for n in ("isoa", "isob", "isoi"):
        berthd.docker("network", "rm", n)
    for d in devs.values():
        assert rules_for(d) == [] and d not in links()
    bdev = default_bridge_dev(berthd)
    berthd.stop()
    assert rules_for(bdev) == []
    berthd.start()


def test_dockerpy_endpoint_links_and_driver_opts(berthd):
    """docker-py's endpoint config at create: Links (DNS alias for this container) and
    DriverOpts shown in inspect, never null when given."""
    berthd.docker("pull", "-q", "busybox")
    c = berthd.client(version="1.41")
    api = c.api
    api.create_network("lnk")
    ctr = api.create_container(
        "busybox", "top", name="lnkc", host_config=api.create_host_config(network_mode="lnk"),
        networking_config=api.create_networking_config({"lnk": api.create_endpoint_config(
            links=[("lnkup", "bar")], driver_opt={"com.docker-py.setting": "on"})}))
    api.start(ctr)
    ep = api.inspect_container(ctr)["NetworkSettings"]["Networks"]["lnk"]
    assert ep["Links"] == ["lnkup:bar"] and ep["DriverOpts"] == {"com.docker-py.setting": "on"}
    api.start(api.create_container("busybox", "top", name="lnkup",
                                   host_config=api.create_host_config(network_mode="lnk")))
    up = api.inspect_container("lnkup")["NetworkSettings"]["Networks"]["lnk"]["IPAddress"]
    assert up in berthd.docker("exec", "lnkc", "nslookup", "bar").stdout
    ctr = api.create_container(
        "busybox", "top", host_config=api.create_host_config(network_mode="bridge"),
        networking_config=api.create_networking_config({"bridge": api.create_endpoint_config(
            driver_opt={"com.docker-py.setting": "on"})}))
    api.start(ctr)
    ep = api.inspect_container(ctr)["NetworkSettings"]["Networks"]["bridge"]
    assert ep["DriverOpts"] == {"com.docker-py.setting": "on"}
    api.remove_container(ctr, force=True)
