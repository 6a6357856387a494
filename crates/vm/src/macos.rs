//! macOS backend: Apple's Virtualization.framework (objc2 bindings).
//!
//! `VzBackend` boots the kernel directly with `VZLinuxBootLoader` (an uncompressed arm64 `Image`
//! on Apple silicon, which is what the framework accepts; initrd and command line as on every
//! backend), and gives the guest:
//!
//! - the data disk as virtio-blk (`VZDiskImageStorageDeviceAttachment` over the raw image);
//! - a virtio-vsock device (`VZVirtioSocketDeviceConfiguration`);
//! - the user's home as virtio-fs with tag `home` (`VZSingleDirectoryShare`), not 9p: the guest
//!   is told with `berth.sharefs=virtiofs`;
//! - a NAT NIC (`VZNATNetworkDeviceAttachment`, DHCP from vmnet, so `berth.net=dhcp` instead of
//!   QEMU's `berth.net=user`);
//! - a virtio console (`hvc0`) written to the console log, and an entropy device.
//!
//! The framework's vsock is not a socket the host can connect to: the app calls
//! `-[VZVirtioSocketDevice connectToPort:completionHandler:]` and gets a file descriptor. So the
//! backend serves the same hybrid-vsock Unix socket as the other backends (docs/VM.md) and
//! bridges: a host client's `CONNECT <port>\n` becomes a `connectToPort:` call; the connection's
//! descriptor is duplicated, `OK <source port>\n` is written, and bytes are copied both ways
//! (threads, half-close preserved). Guest-initiated connections arrive through a
//! `VZVirtioSocketListener` registered for the host ports Berth uses (the control port 1025);
//! its delegate connects to `<socket>_<port>` and bridges the same way.
//!
//! Threading follows Apple's rule for a VM created with `initWithConfiguration:queue:`: every
//! call on the `VZVirtualMachine` (and its devices) happens on that serial dispatch queue, and
//! completion handlers run there; callers wait on channels.
//!
//! Like the KVM backend the VM lives inside the calling process (`pid` is that process), and
//! the binary must be signed with the `com.apple.security.virtualization` entitlement.
//!
//! The unix helpers here (CONNECT handshake, stream bridge, command line) are plain Rust and
//! tested on Linux; the framework part is compiled for macOS only and was only type-checked
//! (`cargo check --target aarch64-apple-darwin`), never run, in this repository's CI.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use crate::hypervisor::VmConfig;

/// The guest listens on these (docs/VM.md), the host on `HOST_PORTS`.
pub const HOST_PORTS: [u32; 1] = [crate::hvsock::CONTROL_PORT];
/// A `CONNECT <port>` line is short; longer input is a protocol error.
const MAX_CONNECT_LINE: usize = 32;

/// The kernel command line under Virtualization.framework: the virtio console, and the
/// caller's parameters with the network and share adapted to the devices this backend gives.
pub fn vz_cmdline(cfg: &VmConfig) -> String {
    let mut parts: Vec<String> = vec!["console=hvc0".into(), "panic=-1".into()];
    for p in cfg.cmdline.split_whitespace() {
        if p.starts_with("berth.net=") {
            continue;
        }
        parts.push(p.to_string());
    }
    parts.push("berth.net=dhcp".into());
    if cfg.share.is_some() {
        parts.push("berth.sharefs=virtiofs".into());
    }
    parts.join(" ")
}

/// Read `CONNECT <port>\n` a byte at a time (what follows belongs to the connection) and
/// return the port.
pub fn read_connect_request(stream: &mut impl Read) -> io::Result<u32> {
    let mut line = Vec::with_capacity(MAX_CONNECT_LINE);
    let mut b = [0u8; 1];
    loop {
        stream.read_exact(&mut b)?;
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > MAX_CONNECT_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "CONNECT line too long",
            ));
        }
    }
    std::str::from_utf8(&line)
        .ok()
        .map(|s| s.trim_end_matches('\r'))
        .and_then(|s| s.strip_prefix("CONNECT "))
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "expected CONNECT <port>"))
}

fn pipe(mut from: UnixStream, mut to: UnixStream) {
    let _ = io::copy(&mut from, &mut to);
    // EOF one way is a half-close, not the end of the connection (attach streams rely on it).
    let _ = to.shutdown(Shutdown::Write);
}

/// Copy bytes both ways between two streams until both directions reach EOF.
pub fn bridge(a: UnixStream, b: UnixStream) -> io::Result<[JoinHandle<()>; 2]> {
    let (a2, b2) = (a.try_clone()?, b.try_clone()?);
    let t1 = std::thread::Builder::new()
        .name("berth-vz-bridge".into())
        .spawn(move || pipe(a, b2))?;
    let t2 = std::thread::Builder::new()
        .name("berth-vz-bridge".into())
        .spawn(move || pipe(b, a2))?;
    Ok([t1, t2])
}

/// Answer a host client once the guest accepted: `OK <port>\n`, then bridge.
pub fn accept_host_client(mut client: UnixStream, guest: UnixStream, port: u32) -> io::Result<()> {
    client.write_all(format!("OK {port}\n").as_bytes())?;
    bridge(client, guest).map(|_| ())
}

#[cfg(target_os = "macos")]
pub use vz::VzBackend;

#[cfg(target_os = "macos")]
mod vz {
    use std::collections::HashMap;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc, Mutex, OnceLock};
    use std::thread::JoinHandle;
    use std::time::Duration;

    use block2::RcBlock;
    use dispatch2::{DispatchQueue, DispatchRetained};
    use objc2::rc::Retained;
    use objc2::runtime::{Bool, ProtocolObject};
    use objc2::{define_class, msg_send, AllocAnyThread, DefinedClass};
    use objc2_foundation::{NSArray, NSError, NSObject, NSObjectProtocol, NSString, NSURL};
    use objc2_virtualization::*;

    use super::{accept_host_client, bridge, read_connect_request, vz_cmdline, HOST_PORTS};
    use crate::hvsock::host_listener_path;
    use crate::hypervisor::{Hypervisor, VmConfig, VmError, VmResult, VmState};

    const PID_FILE: &str = "vz.pid";
    const START_TIMEOUT: Duration = Duration::from_secs(60);
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// An Objective-C object that is only ever used on the VM's dispatch queue.
    ///
    /// Retain/release are atomic, so moving the pointer between threads is sound; calling its
    /// methods is confined to closures run on the VM's serial queue, as Apple requires for a
    /// `VZVirtualMachine` created with `initWithConfiguration:queue:`.
    struct OnQueue<T>(T);
    // SAFETY: see the type's documentation: the value is only dereferenced on the VM's queue.
    unsafe impl<T> Send for OnQueue<T> {}
    // SAFETY: as above; shared references are only used to clone the retained pointer or on
    // the VM's queue.
    unsafe impl<T> Sync for OnQueue<T> {}

    impl<T> OnQueue<T> {
        /// Through a method, so closures capture the whole (Send) wrapper, not the field.
        fn get(&self) -> &T {
            &self.0
        }
    }

    fn describe(err: *mut NSError) -> String {
        if err.is_null() {
            return "unknown error".into();
        }
        // SAFETY: the framework passes a valid NSError (or nil, handled above) that lives for
        // the duration of the completion handler, during which this is called.
        unsafe { (*err).localizedDescription().to_string() }
    }

    fn ns_err(what: &str, e: Retained<NSError>) -> VmError {
        VmError::Other(format!("{what}: {}", e.localizedDescription()))
    }

    fn file_url(p: &Path) -> Retained<NSURL> {
        NSURL::fileURLWithPath(&NSString::from_str(&p.to_string_lossy()))
    }

    struct ListenerIvars {
        vsock_socket: PathBuf,
    }

    define_class!(
        // SAFETY: NSObject has no subclassing requirements, and this class does not
        // implement Drop.
        #[unsafe(super(NSObject))]
        #[ivars = ListenerIvars]
        struct GuestConnectDelegate;

        // SAFETY: NSObjectProtocol's requirements are met by the NSObject superclass.
        unsafe impl NSObjectProtocol for GuestConnectDelegate {}

        // SAFETY: the one method implemented has the protocol's selector and signature.
        unsafe impl VZVirtioSocketListenerDelegate for GuestConnectDelegate {
            /// The guest connects to a host port: reach `<socket>_<port>` and bridge.
            #[unsafe(method(listener:shouldAcceptNewConnection:fromSocketDevice:))]
            fn should_accept_new_connection(
                &self,
                _listener: &VZVirtioSocketListener,
                connection: &VZVirtioSocketConnection,
                _device: &VZVirtioSocketDevice,
            ) -> Bool {
                // SAFETY: called by the framework on the VM's queue with a live connection.
                let port = unsafe { connection.destinationPort() };
                let path = host_listener_path(&self.ivars().vsock_socket, port);
                let Ok(host) = UnixStream::connect(&path) else {
                    return Bool::NO;
                };
                // SAFETY: as above; the descriptor is the connection's, owned by it.
                let Some(guest) = (unsafe { dup_connection(connection) }) else {
                    return Bool::NO;
                };
                Bool::new(bridge(host, guest).is_ok())
            }
        }
    );

    impl GuestConnectDelegate {
        fn new(vsock_socket: PathBuf) -> Retained<Self> {
            let this = Self::alloc().set_ivars(ListenerIvars { vsock_socket });
            // SAFETY: NSObject's designated initializer on a freshly allocated object.
            unsafe { msg_send![super(this), init] }
        }
    }

    /// Our own descriptor for a vsock connection, so it outlives the connection object
    /// (which closes its descriptor when released).
    ///
    /// # Safety
    /// Call on the VM's queue with a live connection.
    unsafe fn dup_connection(connection: &VZVirtioSocketConnection) -> Option<UnixStream> {
        // SAFETY: the caller guarantees the connection is live; reading its descriptor is a
        // plain property access.
        let fd = unsafe { connection.fileDescriptor() };
        // SAFETY: dup on a descriptor that is open while `connection` lives.
        let copy = unsafe { libc::dup(fd) };
        if copy < 0 {
            return None;
        }
        // SAFETY: `copy` is a fresh descriptor nothing else owns.
        Some(UnixStream::from(unsafe { OwnedFd::from_raw_fd(copy) }))
    }

    /// Build and validate the machine description.
    fn configuration(cfg: &VmConfig) -> VmResult<Retained<VZVirtualMachineConfiguration>> {
        // SAFETY (whole function): plain object construction and property setters on objects
        // this function owns; Virtualization.framework configuration objects may be built on
        // any thread before the VM exists.
        unsafe {
            let boot = VZLinuxBootLoader::initWithKernelURL(
                VZLinuxBootLoader::alloc(),
                &file_url(&cfg.kernel),
            );
            boot.setInitialRamdiskURL(Some(&file_url(&cfg.initrd)));
            boot.setCommandLine(&NSString::from_str(&vz_cmdline(cfg)));

            let conf = VZVirtualMachineConfiguration::new();
            conf.setBootLoader(Some(&boot));
            let cpus = (cfg.cpus as usize).clamp(
                VZVirtualMachineConfiguration::minimumAllowedCPUCount(),
                VZVirtualMachineConfiguration::maximumAllowedCPUCount(),
            );
            conf.setCPUCount(cpus);
            let mem = (u64::from(cfg.memory_mib) << 20).clamp(
                VZVirtualMachineConfiguration::minimumAllowedMemorySize(),
                VZVirtualMachineConfiguration::maximumAllowedMemorySize(),
            );
            conf.setMemorySize(mem);

            let disk = VZDiskImageStorageDeviceAttachment::initWithURL_readOnly_error(
                VZDiskImageStorageDeviceAttachment::alloc(),
                &file_url(&cfg.data_disk),
                false,
            )
            .map_err(|e| ns_err(&format!("attaching {}", cfg.data_disk.display()), e))?;
            let blk = VZVirtioBlockDeviceConfiguration::initWithAttachment(
                VZVirtioBlockDeviceConfiguration::alloc(),
                &disk,
            );
            // The read-only system disk (berth-guest finds it by its read-only flag and
            // mounts it at /usr), after the data disk so the data disk stays /dev/vda.
            let mut blks = vec![blk];
            if let Some(sys) = &cfg.system_disk {
                let att = VZDiskImageStorageDeviceAttachment::initWithURL_readOnly_error(
                    VZDiskImageStorageDeviceAttachment::alloc(),
                    &file_url(sys),
                    true,
                )
                .map_err(|e| ns_err(&format!("attaching {}", sys.display()), e))?;
                blks.push(VZVirtioBlockDeviceConfiguration::initWithAttachment(
                    VZVirtioBlockDeviceConfiguration::alloc(),
                    &att,
                ));
            }
            let blk_refs: Vec<&VZStorageDeviceConfiguration> = blks.iter().map(|b| &***b).collect();
            conf.setStorageDevices(&NSArray::from_slice(&blk_refs));

            let vsock = VZVirtioSocketDeviceConfiguration::new();
            conf.setSocketDevices(&NSArray::from_slice(&[&**vsock]));

            if let Some(share) = &cfg.share {
                let dir = VZSharedDirectory::initWithURL_readOnly(
                    VZSharedDirectory::alloc(),
                    &file_url(share),
                    false,
                );
                let single = VZSingleDirectoryShare::initWithDirectory(
                    VZSingleDirectoryShare::alloc(),
                    &dir,
                );
                let fs = VZVirtioFileSystemDeviceConfiguration::initWithTag(
                    VZVirtioFileSystemDeviceConfiguration::alloc(),
                    &NSString::from_str("home"),
                );
                fs.setShare(Some(&single));
                conf.setDirectorySharingDevices(&NSArray::from_slice(&[&**fs]));
            }

            let net = VZVirtioNetworkDeviceConfiguration::new();
            net.setAttachment(Some(&VZNATNetworkDeviceAttachment::new()));
            conf.setNetworkDevices(&NSArray::from_slice(&[&**net]));

            let log = VZFileSerialPortAttachment::initWithURL_append_error(
                VZFileSerialPortAttachment::alloc(),
                &file_url(&cfg.console_log()),
                false,
            )
            .map_err(|e| ns_err("opening the console log", e))?;
            let console = VZVirtioConsoleDeviceSerialPortConfiguration::new();
            console.setAttachment(Some(&log));
            conf.setSerialPorts(&NSArray::from_slice(&[&**console]));

            let rng = VZVirtioEntropyDeviceConfiguration::new();
            conf.setEntropyDevices(&NSArray::from_slice(&[&**rng]));

            conf.validateWithError()
                .map_err(|e| ns_err("invalid VM configuration", e))?;
            Ok(conf)
        }
    }

    /// A VM this process runs.
    struct VzVm {
        vm: OnQueue<Retained<VZVirtualMachine>>,
        queue: DispatchRetained<DispatchQueue>,
        /// Kept alive: the listener holds its delegate weakly.
        _delegate: OnQueue<Retained<GuestConnectDelegate>>,
        _listener: OnQueue<Retained<VZVirtioSocketListener>>,
        accept_stop: Arc<AtomicBool>,
        accept_thread: Option<JoinHandle<()>>,
    }

    impl VzVm {
        fn state(&self) -> VZVirtualMachineState {
            let (tx, rx) = mpsc::channel();
            let vm = OnQueue(self.vm.0.clone());
            self.queue.exec_sync(move || {
                // SAFETY: on the VM's queue.
                let _ = tx.send(unsafe { vm.get().state() });
            });
            rx.recv().unwrap_or(VZVirtualMachineState::Error)
        }
    }

    fn registry() -> &'static Mutex<HashMap<PathBuf, VzVm>> {
        static VMS: OnceLock<Mutex<HashMap<PathBuf, VzVm>>> = OnceLock::new();
        VMS.get_or_init(|| Mutex::new(HashMap::new()))
    }

    fn map_state(s: VZVirtualMachineState) -> VmState {
        match s {
            VZVirtualMachineState::Stopped => VmState::Stopped,
            VZVirtualMachineState::Error => VmState::Crashed,
            VZVirtualMachineState::Starting
            | VZVirtualMachineState::Resuming
            | VZVirtualMachineState::Restoring => VmState::Starting,
            VZVirtualMachineState::Stopping => VmState::Stopping,
            _ => VmState::Running,
        }
    }

    /// Serve the hybrid-vsock socket: each client's `CONNECT <port>` becomes a
    /// `connectToPort:` on the VM's queue.
    fn accept_loop(
        listener: UnixListener,
        vm: OnQueue<Retained<VZVirtualMachine>>,
        queue: DispatchRetained<DispatchQueue>,
        stop: Arc<AtomicBool>,
    ) {
        let vm = Arc::new(vm);
        while !stop.load(Ordering::Acquire) {
            let mut client = match listener.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(_) => continue,
            };
            let _ = client.set_nonblocking(false);
            let Ok(port) = read_connect_request(&mut client) else {
                continue;
            };
            let (tx, rx) = mpsc::channel::<Option<(UnixStream, u32)>>();
            let vm = vm.clone();
            queue.exec_async(move || {
                let handler = RcBlock::new(
                    move |conn: *mut VZVirtioSocketConnection, _err: *mut NSError| {
                        // SAFETY: the framework passes a live connection or nil.
                        let conn = unsafe { conn.as_ref() };
                        let got = conn.and_then(|c| {
                            // SAFETY: on the VM's queue (completion handlers run there) with
                            // a live connection.
                            unsafe { Some((dup_connection(c)?, c.sourcePort())) }
                        });
                        let _ = tx.send(got);
                    },
                );
                // SAFETY: on the VM's queue, as Apple requires.
                unsafe {
                    let devices = vm.get().socketDevices();
                    match devices
                        .firstObject()
                        .and_then(|d| d.downcast::<VZVirtioSocketDevice>().ok())
                    {
                        Some(dev) => dev.connectToPort_completionHandler(port, &handler),
                        None => handler.call((std::ptr::null_mut(), std::ptr::null_mut())),
                    }
                }
            });
            // The guest not listening: the framework reports an error, we hang up (docs/VM.md).
            if let Ok(Some((guest, src_port))) = rx.recv_timeout(CONNECT_TIMEOUT) {
                let _ = accept_host_client(client, guest, src_port);
            }
        }
    }

    /// `Hypervisor` over Virtualization.framework, VM in this process (see the module docs).
    #[derive(Debug, Default, Clone, Copy)]
    pub struct VzBackend;

    impl VzBackend {
        pub fn new() -> Self {
            VzBackend
        }
    }

    fn pid_file(cfg: &VmConfig) -> PathBuf {
        cfg.state_dir.join(PID_FILE)
    }

    fn read_pid(cfg: &VmConfig) -> Option<u32> {
        std::fs::read_to_string(pid_file(cfg))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn alive(pid: u32) -> bool {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    fn io_err(what: String) -> impl FnOnce(std::io::Error) -> VmError {
        move |source| VmError::Io { what, source }
    }

    fn ensure_disk(cfg: &VmConfig) -> VmResult<()> {
        if cfg.data_disk.exists() {
            return Ok(());
        }
        let f = std::fs::File::create(&cfg.data_disk)
            .map_err(io_err(format!("creating {}", cfg.data_disk.display())))?;
        f.set_len(u64::from(cfg.data_disk_gib) << 30)
            .map_err(io_err(format!("sizing {}", cfg.data_disk.display())))
    }

    impl Hypervisor for VzBackend {
        fn name(&self) -> &'static str {
            "vz"
        }

        fn available(&self) -> VmResult<()> {
            // SAFETY: a class property without preconditions.
            if unsafe { VZVirtualMachine::isSupported() } {
                Ok(())
            } else {
                Err(VmError::Unavailable(
                    "Virtualization.framework reports virtualization is not supported here".into(),
                ))
            }
        }

        fn start(&self, cfg: &VmConfig) -> VmResult<()> {
            self.available()?;
            let mut vms = registry()
                .lock()
                .map_err(|_| VmError::Other("poisoned".into()))?;
            if let Some(v) = vms.get(&cfg.state_dir) {
                if matches!(
                    map_state(v.state()),
                    VmState::Running | VmState::Starting | VmState::Stopping
                ) {
                    return Err(VmError::AlreadyRunning(std::process::id()));
                }
            }
            if let Some(pid) = read_pid(cfg) {
                if pid != std::process::id() && alive(pid) {
                    return Err(VmError::AlreadyRunning(pid));
                }
            }
            std::fs::create_dir_all(&cfg.state_dir)
                .map_err(io_err(format!("creating {}", cfg.state_dir.display())))?;
            ensure_disk(cfg)?;
            let conf = configuration(cfg)?;

            // Apple: "every operation on the virtual machine must be done on that queue".
            let queue = DispatchQueue::new("dev.berth.vz", None);
            // SAFETY: a validated configuration and a serial queue.
            let vm = unsafe {
                VZVirtualMachine::initWithConfiguration_queue(
                    VZVirtualMachine::alloc(),
                    &conf,
                    &queue,
                )
            };

            let delegate = GuestConnectDelegate::new(cfg.vsock_socket());
            // SAFETY: a fresh listener; setting its delegate has no preconditions.
            let listener = unsafe {
                let l = VZVirtioSocketListener::new();
                l.setDelegate(Some(ProtocolObject::from_ref(&*delegate)));
                l
            };

            let (tx, rx) = mpsc::channel::<Result<(), String>>();
            {
                let vm = OnQueue(vm.clone());
                let listener = OnQueue(listener.clone());
                queue.exec_async(move || {
                    let done = RcBlock::new(move |err: *mut NSError| {
                        let _ = tx.send(if err.is_null() {
                            Ok(())
                        } else {
                            Err(describe(err))
                        });
                    });
                    // SAFETY: on the VM's queue.
                    unsafe {
                        // Listeners for the host ports the guest connects to.
                        let devices = vm.get().socketDevices();
                        if let Some(dev) = devices
                            .firstObject()
                            .and_then(|d| d.downcast::<VZVirtioSocketDevice>().ok())
                        {
                            for port in HOST_PORTS {
                                dev.setSocketListener_forPort(listener.get(), port);
                            }
                        }
                        vm.get().startWithCompletionHandler(&done);
                    }
                });
            }
            match rx.recv_timeout(START_TIMEOUT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(VmError::Other(format!("starting the VM: {e}"))),
                Err(_) => return Err(VmError::Other("the VM did not start in time".into())),
            }

            let sock = cfg.vsock_socket();
            let _ = std::fs::remove_file(&sock);
            let ulistener = UnixListener::bind(&sock)
                .map_err(io_err(format!("listening on {}", sock.display())))?;
            ulistener
                .set_nonblocking(true)
                .map_err(io_err("non-blocking listener".into()))?;
            let accept_stop = Arc::new(AtomicBool::new(false));
            let accept_thread = {
                let (vm, queue, stop) = (OnQueue(vm.clone()), queue.clone(), accept_stop.clone());
                std::thread::Builder::new()
                    .name("berth-vz-vsock".into())
                    .spawn(move || accept_loop(ulistener, vm, queue, stop))
                    .map_err(io_err("spawning the vsock thread".into()))?
            };
            std::fs::write(pid_file(cfg), format!("{}\n", std::process::id()))
                .map_err(io_err(format!("writing {}", pid_file(cfg).display())))?;
            vms.insert(
                cfg.state_dir.clone(),
                VzVm {
                    vm: OnQueue(vm),
                    queue,
                    _delegate: OnQueue(delegate),
                    _listener: OnQueue(listener),
                    accept_stop,
                    accept_thread: Some(accept_thread),
                },
            );
            Ok(())
        }

        fn kill(&self, cfg: &VmConfig) -> VmResult<()> {
            let taken = registry()
                .lock()
                .map_err(|_| VmError::Other("poisoned".into()))?
                .remove(&cfg.state_dir);
            let Some(mut v) = taken else {
                return match read_pid(cfg) {
                    Some(pid) if alive(pid) => Err(VmError::Other(format!(
                        "the VM runs inside process {pid}; stop it there or through the control channel"
                    ))),
                    _ => Err(VmError::NotRunning),
                };
            };
            let (tx, rx) = mpsc::channel::<Result<(), String>>();
            let vm = OnQueue(v.vm.0.clone());
            v.queue.exec_async(move || {
                let done = RcBlock::new(move |err: *mut NSError| {
                    let _ = tx.send(if err.is_null() {
                        Ok(())
                    } else {
                        Err(describe(err))
                    });
                });
                // SAFETY: on the VM's queue.
                unsafe {
                    if vm.get().canStop() {
                        vm.get().stopWithCompletionHandler(&done);
                    } else {
                        done.call((std::ptr::null_mut(),));
                    }
                }
            });
            let result = rx.recv_timeout(START_TIMEOUT);
            v.accept_stop.store(true, Ordering::Release);
            if let Some(t) = v.accept_thread.take() {
                let _ = t.join();
            }
            let _ = std::fs::remove_file(pid_file(cfg));
            let _ = std::fs::remove_file(cfg.vsock_socket());
            match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(VmError::Other(format!("stopping the VM: {e}"))),
                Err(_) => Err(VmError::Other("the VM did not stop in time".into())),
            }
        }

        fn state(&self, cfg: &VmConfig) -> VmState {
            if let Ok(vms) = registry().lock() {
                if let Some(v) = vms.get(&cfg.state_dir) {
                    return map_state(v.state());
                }
            }
            match read_pid(cfg) {
                Some(pid) if alive(pid) => VmState::Running,
                Some(_) => VmState::Crashed,
                None => VmState::Stopped,
            }
        }

        fn pid(&self, cfg: &VmConfig) -> Option<u32> {
            match self.state(cfg) {
                VmState::Running | VmState::Starting | VmState::Stopping => {
                    read_pid(cfg).or(Some(std::process::id()))
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn cfg(cmdline: &str, share: Option<&str>) -> VmConfig {
        VmConfig {
            kernel: "k".into(),
            initrd: "i".into(),
            cmdline: cmdline.into(),
            cpus: 2,
            memory_mib: 1024,
            data_disk: "d".into(),
            data_disk_gib: 1,
            system_disk: None,
            share: share.map(PathBuf::from),
            state_dir: "s".into(),
            guest_cid: 3,
        }
    }

    #[test]
    fn cmdline_uses_hvc0_dhcp_and_virtiofs() {
        let c = vz_cmdline(&cfg(
            "berth.time=5 berth.net=user berth.share=/Users/me",
            Some("/Users/me"),
        ));
        assert_eq!(
            c,
            "console=hvc0 panic=-1 berth.time=5 berth.share=/Users/me berth.net=dhcp berth.sharefs=virtiofs"
        );
        let c = vz_cmdline(&cfg("", None));
        assert_eq!(c, "console=hvc0 panic=-1 berth.net=dhcp");
    }

    #[test]
    fn connect_request_leaves_the_payload() {
        let mut input: &[u8] = b"CONNECT 2375\nGET /";
        assert_eq!(read_connect_request(&mut input).expect("port"), 2375);
        assert_eq!(input, b"GET /");
        let mut bad: &[u8] = b"HELLO\n";
        assert!(read_connect_request(&mut bad).is_err());
        let mut long: &[u8] = &[b'x'; 100];
        assert!(read_connect_request(&mut long).is_err());
    }

    #[test]
    fn host_client_gets_ok_then_a_half_closable_pipe() {
        // client <-> [bridge] <-> guest, as with a VZ vsock descriptor.
        let (client, client_far) = UnixStream::pair().expect("pair");
        let (guest_near, mut guest) = UnixStream::pair().expect("pair");
        accept_host_client(client_far, guest_near, 1234).expect("accept");
        let mut client = client;
        let mut line = [0u8; 8];
        client.read_exact(&mut line).expect("ok");
        assert_eq!(&line, b"OK 1234\n");
        client.write_all(b"ping").expect("write");
        client.shutdown(Shutdown::Write).expect("half-close");
        let mut got = Vec::new();
        guest.read_to_end(&mut got).expect("guest reads to EOF");
        assert_eq!(got, b"ping");
        // The other direction still works after the half-close.
        guest.write_all(b"pong").expect("write");
        guest.shutdown(Shutdown::Write).expect("close");
        let mut back = Vec::new();
        client.read_to_end(&mut back).expect("client reads");
        assert_eq!(back, b"pong");
    }
}
