// The `ZoneStore` implementation shared by both backends (issue 13).
// Included after sql.rs by postgres.rs and sqlite.rs.

use crate::zones::{ZoneRecord, ZoneStore};

#[async_trait]
impl ZoneStore for SqlStore {
    async fn create_zone(&self, name: &str, geometry: &serde_json::Value) -> StoreResult<ZoneRecord> {
        let row = sqlx::query(
            "INSERT INTO zones (name, geometry, created_at) VALUES ($1, $2, $3) RETURNING id, created_at",
        )
        .bind(name)
        .bind(geometry.to_string())
        .bind(Utc::now())
        .fetch_one(&self.pool)
        .await
        .map_err(map_error)?;
        Ok(ZoneRecord {
            id: row.try_get("id").map_err(map_error)?,
            name: name.to_string(),
            geometry: geometry.clone(),
            restaurant_ids: Vec::new(),
            created_at: row.try_get("created_at").map_err(map_error)?,
        })
    }

    async fn zones(&self) -> StoreResult<Vec<ZoneRecord>> {
        let rows = sqlx::query("SELECT id, name, geometry, created_at FROM zones ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        let limits = sqlx::query("SELECT restaurant_id, zone_id FROM restaurant_zones ORDER BY restaurant_id")
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        let mut zones = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("id").map_err(map_error)?;
            let text: String = row.try_get("geometry").map_err(map_error)?;
            let mut restaurant_ids = Vec::new();
            for limit in &limits {
                if limit.try_get::<i64, _>("zone_id").map_err(map_error)? == id {
                    restaurant_ids.push(limit.try_get("restaurant_id").map_err(map_error)?);
                }
            }
            zones.push(ZoneRecord {
                id,
                name: row.try_get("name").map_err(map_error)?,
                geometry: serde_json::from_str(&text).map_err(|_| corrupt("zone geometry", &text))?,
                restaurant_ids,
                created_at: row.try_get("created_at").map_err(map_error)?,
            });
        }
        Ok(zones)
    }

    async fn delete_zone(&self, id: i64) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(map_error)?;
        sqlx::query("DELETE FROM restaurant_zones WHERE zone_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        let done = sqlx::query("DELETE FROM zones WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        tx.commit().await.map_err(map_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_restaurant_zone(&self, restaurant_id: i64, zone_id: Option<i64>) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_error)?;
        sqlx::query("DELETE FROM restaurant_zones WHERE restaurant_id = $1")
            .bind(restaurant_id)
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        if let Some(zone_id) = zone_id {
            sqlx::query("INSERT INTO restaurant_zones (restaurant_id, zone_id) VALUES ($1, $2)")
                .bind(restaurant_id)
                .bind(zone_id)
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
        }
        tx.commit().await.map_err(map_error)?;
        Ok(())
    }
}
