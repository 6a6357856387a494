//! Content: blobs stored by digest, and layers unpacked for overlayfs.
//!
//! Every write goes to `tmp/` first and is renamed into place only once its digest is verified,
//! so a crash never leaves a half blob or half layer under its final name.

pub mod layer;

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{EngineError, Result};
use crate::util::{digest_hex, random_id};

#[derive(Clone, Debug)]
pub struct Content {
    root: PathBuf,
}

impl Content {
    pub fn open(data_root: &Path) -> std::io::Result<Self> {
        let root = data_root.to_path_buf();
        for d in ["blobs/sha256", "layers", "tmp"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        // Whatever is in tmp/ is an interrupted write: it was never renamed, so nothing refers to it.
        if let Ok(rd) = std::fs::read_dir(root.join("tmp")) {
            for e in rd.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(digest_hex(digest))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn layer_dir(&self, diff_id: &str) -> PathBuf {
        self.root.join("layers").join(digest_hex(diff_id))
    }

    pub fn has_layer(&self, diff_id: &str) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    pub fn tmp_path(&self) -> PathBuf {
        self.root.join("tmp").join(&random_id()[..24])
    }

    /// Store `data` as a blob; returns its digest.
    pub async fn put_blob(&self, data: &[u8]) -> Result<String> {
        let digest = crate::util::sha256_digest(data);
        if !self.has_blob(&digest) {
            let tmp = self.tmp_path();
            tokio::fs::write(&tmp, data).await?;
            tokio::fs::rename(&tmp, self.blob_path(&digest)).await?;
        }
        Ok(digest)
    }

    pub async fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        tokio::fs::read(self.blob_path(digest))
            .await
            .map_err(|e| EngineError::Internal(format!("reading blob {digest}: {e}")))
    }

    pub fn blob_writer(&self) -> Result<BlobWriter> {
        BlobWriter::new(self.tmp_path())
    }

    pub async fn remove_blob(&self, digest: &str) {
        let _ = tokio::fs::remove_file(self.blob_path(digest)).await;
    }

    pub async fn remove_layer(&self, diff_id: &str) {
        let dir = self.layer_dir(diff_id);
        if dir.exists() {
            // Rename first so a crash mid-delete leaves nothing under the layer's name.
            let tmp = self.tmp_path();
            if tokio::fs::rename(&dir, &tmp).await.is_ok() {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
            }
        }
    }
}

/// Streams bytes to a temp file while hashing them; `commit` verifies and renames.
pub struct BlobWriter {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    size: u64,
}

impl BlobWriter {
    fn new(path: PathBuf) -> Result<Self> {
        let f = std::fs::File::create(&path)?;
        Ok(Self {
            path,
            file: Some(tokio::fs::File::from_std(f)),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        if let Some(f) = self.file.as_mut() {
            f.write_all(data).await?;
        }
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Verify the digest (when `expected` is given) and move the blob into place.
    pub async fn commit(mut self, content: &Content, expected: Option<&str>) -> Result<String> {
        let digest = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
        if let Some(f) = self.file.take() {
            f.sync_all().await?;
        }
        if let Some(exp) = expected {
            if exp != digest {
                let _ = tokio::fs::remove_file(&self.path).await;
                return Err(EngineError::Internal(format!(
                    "digest mismatch: expected {exp}, got {digest}"
                )));
            }
        }
        tokio::fs::rename(&self.path, content.blob_path(&digest)).await?;
        Ok(digest)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
