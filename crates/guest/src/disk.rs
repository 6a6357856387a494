//! The read-only system disk (the image's `/usr`, mounted over the initramfs's), the data disk
//! (`/dev/vda`, formatted ext4 on first use, mounted at /var/lib/berth) and the 9p share of the
//! user's home.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use nix::mount::{mount, MsFlags};

use crate::reaper::{describe, Reaper};

pub const DATA_DEVICE: &str = "/dev/vda";
pub const DATA_ROOT: &str = "/var/lib/berth";
/// Where the ext2/3/4 superblock magic lives on the device.
pub const EXT4_MAGIC_OFFSET: u64 = 1080;
pub const EXT4_MAGIC: u16 = 0xEF53;
pub const SHARE_TAG: &str = "home";
pub const SHARE_OPTIONS: &str = "trans=virtio,version=9p2000.L,msize=262144,cache=mmap";
/// virtio-blk serial of the system disk (QEMU sets it; Virtualization.framework cannot, so a
/// read-only disk other than the data disk is taken as well).
pub const SYSTEM_SERIAL: &str = "berth-system";
pub const SYSTEM_MOUNT: &str = "/usr";

/// True when the two bytes read at [`EXT4_MAGIC_OFFSET`] are the ext superblock magic
/// (little endian on disk).
pub fn is_ext4_magic(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && u16::from_le_bytes([bytes[0], bytes[1]]) == EXT4_MAGIC
}

fn has_ext4(dev: &str) -> anyhow::Result<bool> {
    let f = fs::File::open(dev).with_context(|| format!("opening {dev}"))?;
    let mut b = [0u8; 2];
    match f.read_exact_at(&mut b, EXT4_MAGIC_OFFSET) {
        Ok(()) => Ok(is_ext4_magic(&b)),
        // A device smaller than the superblock: blank as far as we care (mke2fs will refuse).
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading the superblock of {dev}")),
    }
}

/// The mke2fs command line for a blank data disk.
pub fn mke2fs_args(dev: &str) -> Vec<String> {
    [
        "-t",
        "ext4",
        "-q",
        "-F",
        "-E",
        "lazy_itable_init=1,lazy_journal_init=1",
        "-L",
        "berth-data",
        dev,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One virtio disk as sysfs describes it: name (`vdb`), serial, read-only flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockInfo {
    pub name: String,
    pub serial: String,
    pub read_only: bool,
}

/// The system disk among `disks`: the one with [`SYSTEM_SERIAL`], else the first read-only
/// one that is not the data disk.
pub fn pick_system_disk(disks: &[BlockInfo]) -> Option<&BlockInfo> {
    let data = DATA_DEVICE.trim_start_matches("/dev/");
    disks
        .iter()
        .find(|d| d.serial == SYSTEM_SERIAL)
        .or_else(|| disks.iter().find(|d| d.read_only && d.name != data))
}

fn virtio_disks() -> Vec<BlockInfo> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/sys/block") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("vd") {
            continue;
        }
        let read = |f: &str| {
            fs::read_to_string(e.path().join(f))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        out.push(BlockInfo {
            serial: read("serial"),
            read_only: read("ro") == "1",
            name,
        });
    }
    out.sort_by(|a, b| (a.name.len(), &a.name).cmp(&(b.name.len(), &b.name)));
    out
}

/// Mount the system disk read-only at [`SYSTEM_MOUNT`] when the image has one (its
/// programs and libraries are then paged in on demand instead of unpacked from the
/// initramfs at boot). Returns the device, or `None` when everything is in the initramfs.
pub fn mount_system_disk() -> anyhow::Result<Option<String>> {
    let disks = virtio_disks();
    let Some(d) = pick_system_disk(&disks) else {
        return Ok(None);
    };
    let dev = format!("/dev/{}", d.name);
    fs::create_dir_all(SYSTEM_MOUNT).with_context(|| format!("creating {SYSTEM_MOUNT}"))?;
    mount(
        Some(dev.as_str()),
        SYSTEM_MOUNT,
        Some("ext4"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOATIME | MsFlags::MS_NODEV,
        Some("noload"),
    )
    .with_context(|| {
        format!("mounting the system disk {dev} (ext4, read-only) at {SYSTEM_MOUNT}")
    })?;
    Ok(Some(dev))
}

/// What ended up at /var/lib/berth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDisk {
    Ext4 { formatted: bool },
    Tmpfs,
}

/// Format (when blank) and mount the data disk at [`DATA_ROOT`]; a tmpfs when there is none.
pub async fn mount_data_disk(reaper: &Reaper) -> anyhow::Result<DataDisk> {
    fs::create_dir_all(DATA_ROOT).with_context(|| format!("creating {DATA_ROOT}"))?;
    if !Path::new(DATA_DEVICE).exists() {
        tracing::warn!(
            "no data disk ({DATA_DEVICE}): images and containers live in memory and are lost at shutdown"
        );
        mount_tmpfs()?;
        return Ok(DataDisk::Tmpfs);
    }
    let mut formatted = false;
    if !has_ext4(DATA_DEVICE)? {
        tracing::info!("{DATA_DEVICE} is blank: formatting it ext4");
        let t = std::time::Instant::now();
        let status = reaper
            .run(Command::new("mke2fs").args(mke2fs_args(DATA_DEVICE)))
            .await?;
        if !status.success() {
            bail!("mke2fs {DATA_DEVICE} failed: {}", describe(status));
        }
        tracing::info!("formatted {DATA_DEVICE} in {} ms", t.elapsed().as_millis());
        formatted = true;
    }
    if let Err(e) = mount_ext4() {
        // Not clean enough for the kernel: repair what can be repaired without asking, retry.
        tracing::warn!("{e:#}; running e2fsck -p {DATA_DEVICE}");
        let s = reaper
            .run(Command::new("e2fsck").args(["-p", DATA_DEVICE]))
            .await;
        tracing::info!(
            "e2fsck: {}",
            s.map(describe).unwrap_or_else(|e| format!("{e:#}"))
        );
        mount_ext4()?;
    }
    Ok(DataDisk::Ext4 { formatted })
}

fn mount_ext4() -> anyhow::Result<()> {
    mount(
        Some(DATA_DEVICE),
        DATA_ROOT,
        Some("ext4"),
        MsFlags::MS_NOATIME,
        None::<&str>,
    )
    .with_context(|| format!("mounting {DATA_DEVICE} (ext4) at {DATA_ROOT}"))
}

pub fn mount_tmpfs() -> anyhow::Result<()> {
    mount(
        Some("tmpfs"),
        DATA_ROOT,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0711"),
    )
    .with_context(|| format!("mounting a tmpfs at {DATA_ROOT}"))
}

/// Mount the 9p share of the user's home at `path` (created as needed).
pub fn mount_share(path: &str) -> anyhow::Result<()> {
    fs::create_dir_all(path).with_context(|| format!("creating {path}"))?;
    mount(
        Some(SHARE_TAG),
        path,
        Some("9p"),
        MsFlags::empty(),
        Some(SHARE_OPTIONS),
    )
    .with_context(|| format!("mounting the 9p share {SHARE_TAG:?} at {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext4_magic() {
        assert!(is_ext4_magic(&[0x53, 0xEF]));
        assert!(!is_ext4_magic(&[0xEF, 0x53]));
        assert!(!is_ext4_magic(&[0, 0]));
        assert!(!is_ext4_magic(&[0x53]));
    }

    #[test]
    fn ext4_magic_in_an_image() {
        let dir = std::env::temp_dir().join(format!("berth-guest-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let img = dir.join("disk.img");
        let mut data = vec![0u8; 4096];
        fs::write(&img, &data).unwrap();
        assert!(!has_ext4(img.to_str().unwrap()).unwrap());
        data[1080] = 0x53;
        data[1081] = 0xEF;
        fs::write(&img, &data).unwrap();
        assert!(has_ext4(img.to_str().unwrap()).unwrap());
        fs::write(&img, [0u8; 100]).unwrap();
        assert!(!has_ext4(img.to_str().unwrap()).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    fn blk(name: &str, serial: &str, ro: bool) -> BlockInfo {
        BlockInfo {
            name: name.into(),
            serial: serial.into(),
            read_only: ro,
        }
    }

    #[test]
    fn system_disk_by_serial_then_read_only_flag() {
        let d = [
            blk("vda", "berth-data", false),
            blk("vdb", "berth-system", true),
        ];
        assert_eq!(pick_system_disk(&d).unwrap().name, "vdb");
        // Virtualization.framework: no serial, the read-only disk.
        let d = [blk("vda", "", false), blk("vdb", "", true)];
        assert_eq!(pick_system_disk(&d).unwrap().name, "vdb");
        // Never the data disk, and none when only the data disk is there.
        assert!(pick_system_disk(&[blk("vda", "", true)]).is_none());
        assert!(pick_system_disk(&[blk("vda", "berth-data", false)]).is_none());
        assert!(pick_system_disk(&[]).is_none());
    }

    #[test]
    fn mke2fs_is_lazy_and_forced() {
        let a = mke2fs_args("/dev/vda");
        assert_eq!(a.last().map(String::as_str), Some("/dev/vda"));
        assert!(a
            .iter()
            .any(|x| x == "lazy_itable_init=1,lazy_journal_init=1"));
        assert!(a.iter().any(|x| x == "-F") && a.iter().any(|x| x == "ext4"));
    }
}
