//! Image, layer, tag and repo-digest records.

use sqlx::FromRow;

use super::Store;
use crate::error::Result;

#[derive(Debug, Clone, FromRow)]
pub struct ImageRecord {
    pub id: String,
    pub config: String,
    pub created: i64,
    pub size: i64,
    pub parent: Option<String>,
    pub manifest: Option<String>,
    pub added_at: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct LayerRecord {
    pub diff_id: String,
    pub blob_digest: Option<String>,
    pub blob_size: Option<i64>,
    pub media_type: Option<String>,
    pub size: i64,
}

impl Store {
    pub async fn get_image(&self, id: &str) -> Result<Option<ImageRecord>> {
        Ok(sqlx::query_as("SELECT * FROM images WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn list_images(&self) -> Result<Vec<ImageRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM images ORDER BY created DESC, added_at DESC")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn image_ids_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let pat = format!("sha256:{}%", prefix.replace(['%', '_'], ""));
        let rows: Vec<(String,)> = sqlx::query_as("SELECT id FROM images WHERE id LIKE ?")
            .bind(pat)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    pub async fn image_layers(&self, id: &str) -> Result<Vec<LayerRecord>> {
        Ok(sqlx::query_as(
            "SELECT l.* FROM image_layers il JOIN layers l ON l.diff_id = il.diff_id \
             WHERE il.image_id = ? ORDER BY il.idx",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn get_layer(&self, diff_id: &str) -> Result<Option<LayerRecord>> {
        Ok(sqlx::query_as("SELECT * FROM layers WHERE diff_id = ?")
            .bind(diff_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Record an unpacked layer. An existing row keeps its blob unless it had none.
    pub async fn put_layer(&self, l: &LayerRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO layers (diff_id, blob_digest, blob_size, media_type, size) VALUES (?,?,?,?,?) \
             ON CONFLICT(diff_id) DO UPDATE SET \
               blob_digest = COALESCE(layers.blob_digest, excluded.blob_digest), \
               blob_size = COALESCE(layers.blob_size, excluded.blob_size), \
               media_type = COALESCE(layers.media_type, excluded.media_type)",
        )
        .bind(&l.diff_id)
        .bind(&l.blob_digest)
        .bind(l.blob_size)
        .bind(&l.media_type)
        .bind(l.size)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Insert (or refresh) an image with its layers, and point `tags`/`digests` at it, atomically.
    pub async fn put_image(
        &self,
        img: &ImageRecord,
        diff_ids: &[String],
        tags: &[String],
        digests: &[String],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // A write first, so the transaction takes the write lock at once (waiting under the
        // busy timeout): a read first would fail with SQLITE_BUSY_SNAPSHOT when another writer
        // commits before this one upgrades (concurrent build stages, pulls).
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO images (id, config, created, size, parent, manifest, added_at) VALUES (?,?,?,?,?,?,?)",
        )
        .bind(&img.id)
        .bind(&img.config)
        .bind(img.created)
        .bind(img.size)
        .bind(&img.parent)
        .bind(&img.manifest)
        .bind(img.added_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if inserted {
            for (i, d) in diff_ids.iter().enumerate() {
                sqlx::query("INSERT INTO image_layers (image_id, idx, diff_id) VALUES (?,?,?)")
                    .bind(&img.id)
                    .bind(i as i64)
                    .bind(d)
                    .execute(&mut *tx)
                    .await?;
            }
        } else if img.manifest.is_some() {
            sqlx::query("UPDATE images SET manifest = COALESCE(manifest, ?) WHERE id = ?")
                .bind(&img.manifest)
                .bind(&img.id)
                .execute(&mut *tx)
                .await?;
        }
        for t in tags {
            sqlx::query("INSERT OR REPLACE INTO tags (name, image_id) VALUES (?, ?)")
                .bind(t)
                .bind(&img.id)
                .execute(&mut *tx)
                .await?;
        }
        for d in digests {
            sqlx::query("INSERT OR REPLACE INTO repo_digests (name, image_id) VALUES (?, ?)")
                .bind(d)
                .bind(&img.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_manifest(&self, id: &str, manifest: &str) -> Result<()> {
        sqlx::query("UPDATE images SET manifest = ? WHERE id = ?")
            .bind(manifest)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn tag_target(&self, name: &str) -> Result<Option<String>> {
        let r: Option<(String,)> = sqlx::query_as("SELECT image_id FROM tags WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| r.0))
    }

    pub async fn digest_target(&self, name: &str) -> Result<Option<String>> {
        let r: Option<(String,)> =
            sqlx::query_as("SELECT image_id FROM repo_digests WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(r.map(|r| r.0))
    }

    pub async fn all_tags(&self) -> Result<Vec<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT name, image_id FROM tags ORDER BY name")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn all_repo_digests(&self) -> Result<Vec<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT name, image_id FROM repo_digests ORDER BY name")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn set_tag(&self, name: &str, image_id: &str) -> Result<()> {
        sqlx::query("INSERT OR REPLACE INTO tags (name, image_id) VALUES (?, ?)")
            .bind(name)
            .bind(image_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn remove_tag(&self, name: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM tags WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn remove_repo_digest(&self, name: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM repo_digests WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Delete an image row (tags, digests and layer links cascade).
    pub async fn delete_image(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM images WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn children_of(&self, id: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT id FROM images WHERE parent = ?")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Layers no image refers to any more.
    pub async fn orphan_layers(&self) -> Result<Vec<LayerRecord>> {
        Ok(sqlx::query_as(
            "SELECT * FROM layers WHERE diff_id NOT IN (SELECT diff_id FROM image_layers)",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn delete_layer(&self, diff_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM layers WHERE diff_id = ?")
            .bind(diff_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Blob digests still referenced by some layer row.
    pub async fn referenced_blobs(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT blob_digest FROM layers WHERE blob_digest IS NOT NULL")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }
}
