//! Network setup with the classic ioctls (no `ip` process to start): `lo` up, and for
//! `berth.net=user` eth0 as QEMU's user-mode network expects it.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context};

/// QEMU user networking (slirp/passt defaults).
pub const USER_NET_DEV: &str = "eth0";
pub const USER_NET_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
pub const USER_NET_MASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);
pub const USER_NET_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const USER_NET_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);

const RTF_UP: libc::c_ushort = 0x0001;
const RTF_GATEWAY: libc::c_ushort = 0x0002;

/// `struct rtentry` from <linux/route.h> (the libc crate only has it for musl).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// /etc/resolv.conf for the user-mode network.
pub fn resolv_conf() -> String {
    format!("nameserver {USER_NET_DNS}\n")
}

/// An IPv4 `sockaddr` as the interface and route ioctls take it.
pub fn sockaddr_v4(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16-byte plain C structs; the kernel reads a
    // sockaddr_in through this sockaddr, which is exactly what C code does with a cast.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// An `ifreq` naming `name`, the rest zero.
pub fn ifreq(name: &str) -> anyhow::Result<libc::ifreq> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= libc::IFNAMSIZ || b.contains(&0) {
        bail!("invalid interface name {name:?}");
    }
    // SAFETY: ifreq is a plain C struct/union for which all-zero bytes are a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    Ok(r)
}

fn ctl_socket() -> anyhow::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket(AF_INET) for ioctls");
    }
    // SAFETY: fd is a freshly created descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// ioctl with a pointer argument; the request's C type differs between glibc and musl.
fn ioctl_ptr<T>(
    sock: &OwnedFd,
    request: libc::c_ulong,
    arg: *mut T,
    what: &str,
) -> anyhow::Result<()> {
    // SAFETY: `arg` points to a live, correctly laid out struct for `request` for the whole
    // call; the kernel reads (and for SIOCGIF* writes) only within it.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, arg) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).context(what.to_string());
    }
    Ok(())
}

/// Bring an interface up.
pub fn link_up(name: &str) -> anyhow::Result<()> {
    let s = ctl_socket()?;
    let mut r = ifreq(name)?;
    ioctl_ptr(
        &s,
        libc::SIOCGIFFLAGS,
        &mut r,
        &format!("reading the flags of {name}"),
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { r.ifr_ifru.ifru_flags };
    r.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ioctl_ptr(
        &s,
        libc::SIOCSIFFLAGS,
        &mut r,
        &format!("bringing {name} up"),
    )
}

/// Give an interface an IPv4 address and netmask.
pub fn set_addr(name: &str, addr: Ipv4Addr, mask: Ipv4Addr) -> anyhow::Result<()> {
    let s = ctl_socket()?;
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_addr = sockaddr_v4(addr);
    ioctl_ptr(
        &s,
        libc::SIOCSIFADDR,
        &mut r,
        &format!("setting {addr} on {name}"),
    )?;
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_netmask = sockaddr_v4(mask);
    ioctl_ptr(
        &s,
        libc::SIOCSIFNETMASK,
        &mut r,
        &format!("setting the netmask of {name}"),
    )
}

/// Add the default IPv4 route via `gateway`.
pub fn add_default_route(gateway: Ipv4Addr) -> anyhow::Result<()> {
    let s = ctl_socket()?;
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_v4(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr_v4(gateway),
        rt_genmask: sockaddr_v4(Ipv4Addr::UNSPECIFIED),
        rt_flags: RTF_UP | RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    ioctl_ptr(
        &s,
        libc::SIOCADDRT,
        &mut rt,
        &format!("adding the default route via {gateway}"),
    )
}

/// `lo` up (the vsock relays reach berthd's published ports on 127.0.0.1).
pub fn loopback() -> anyhow::Result<()> {
    link_up("lo")
}

/// eth0 for QEMU user networking, and its resolver.
pub fn user_network() -> anyhow::Result<()> {
    set_addr(USER_NET_DEV, USER_NET_ADDR, USER_NET_MASK)?;
    link_up(USER_NET_DEV)?;
    add_default_route(USER_NET_GATEWAY)?;
    let _ = std::fs::remove_file("/etc/resolv.conf");
    std::fs::write("/etc/resolv.conf", resolv_conf()).context("writing /etc/resolv.conf")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_layout() {
        let sa = sockaddr_v4(Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        // Port (2 bytes, 0) then the address in network order.
        assert_eq!(
            &sa.sa_data[..6],
            &[0, 0, 10, 0, 2, 15].map(|b| b as libc::c_char)
        );
    }

    #[test]
    fn ifreq_names() {
        let r = ifreq("eth0").unwrap();
        assert_eq!(
            r.ifr_name[..5],
            [b'e', b't', b'h', b'0', 0].map(|b| b as libc::c_char)
        );
        assert!(ifreq("").is_err());
        assert!(ifreq("a-very-long-interface").is_err());
    }

    #[test]
    fn rtentry_matches_the_kernel_abi() {
        // x86_64 and aarch64: 8 + 3*16 + 2 + 2 + 4 (pad) + 8 + 8 + 2 + 6 (pad) + 8 + 8 + 8 + 2 + 6.
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
    }

    #[test]
    fn resolver() {
        assert_eq!(resolv_conf(), "nameserver 10.0.2.3\n");
    }
}
