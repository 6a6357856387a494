//! The data disk (`/dev/vda`, formatted ext4 on first use, mounted at /var/lib/berth) and the
//! 9p share of the user's home.

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
