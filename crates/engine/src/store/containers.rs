//! Container records.

use super::Store;
use crate::error::{EngineError, Result};

impl Store {
    pub async fn load_containers(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT record FROM containers")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Insert or update; a name already taken by another container is a conflict.
    pub async fn put_container(&self, id: &str, name: &str, record: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO containers (id, name, record) VALUES (?, ?, ?) \
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, record = excluded.record",
        )
        .bind(id)
        .bind(name)
        .bind(record)
        .execute(&self.pool)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => EngineError::Conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use. You have to remove (or rename) that container to be able to reuse that name."
            )),
            e => e.into(),
        })?;
        Ok(())
    }

    pub async fn delete_container(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM containers WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
