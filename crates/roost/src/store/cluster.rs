//! Several nodes on one database: the upstream deliveries a node committed (to recognise a
//! message sent again after a crash), leases (a job that must run on one node at a time), and
//! PostgreSQL's LISTEN/NOTIFY (what one node committed, told to the others).

use super::{query_err, Dialect, Pool, Store, StoreError};
use sqlx::{QueryBuilder, Row};

/// One upstream delivery a node committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryRow {
    pub packet_id: u16,
    pub hash: i64,
    pub seq: i64,
}

/// PostgreSQL notifications of one channel, from every node.
pub struct Notifications(sqlx::postgres::PgListener);

impl Notifications {
    /// The next notification's payload; reconnects by itself if the connection breaks (what
    /// was sent meanwhile is lost).
    pub async fn next(&mut self) -> Result<String, StoreError> {
        let notification = self.0.recv().await.map_err(query_err("waiting for notifications"))?;
        Ok(notification.payload().to_owned())
    }
}

impl Store {
    /// The `limit` latest deliveries `node` committed, newest first.
    pub async fn recent_deliveries(&self, node: &str, limit: usize) -> Result<Vec<DeliveryRow>, StoreError> {
        on_pool!(self, pool => {
            let rows = QueryBuilder::new("SELECT packet_id, hash, seq FROM upstream_deliveries WHERE node = ")
                .push_bind(node)
                .push(" ORDER BY seq DESC LIMIT ")
                .push_bind(limit as i64)
                .build()
                .fetch_all(pool)
                .await
                .map_err(query_err("reading upstream deliveries"))?;
            rows.iter()
                .map(|row| {
                    let packet_id: i32 = row.try_get(0)?;
                    Ok(DeliveryRow { packet_id: packet_id as u16, hash: row.try_get(1)?, seq: row.try_get(2)? })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(query_err("decoding upstream deliveries"))
        })
    }

    /// Forgets every delivery `node` recorded: its upstream session is new, and so are its ids.
    pub async fn forget_deliveries(&self, node: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => QueryBuilder::new("DELETE FROM upstream_deliveries WHERE node = ")
            .push_bind(node)
            .build()
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(query_err("forgetting upstream deliveries")))
    }

    /// Takes or renews the lease `name` for `holder` until `now + ttl` (epoch ms): true if
    /// `holder` has it now. A lease another holder let expire is taken over.
    pub async fn acquire_lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool, StoreError> {
        let until = now_ms + ttl_ms;
        on_pool!(self, pool => {
            QueryBuilder::new("UPDATE leases SET holder = ")
                .push_bind(holder)
                .push(", expires_at = ")
                .push_bind(until)
                .push(" WHERE name = ")
                .push_bind(name)
                .push(" AND (holder = ")
                .push_bind(holder)
                .push(" OR expires_at < ")
                .push_bind(now_ms)
                .push(")")
                .build()
                .execute(pool)
                .await
                .map_err(query_err("renewing a lease"))?;
            let mut insert = QueryBuilder::new("INSERT INTO leases (name, holder, expires_at) VALUES (");
            insert.push_bind(name).push(", ").push_bind(holder).push(", ").push_bind(until).push(")");
            insert.push(match self.dialect() {
                Dialect::MySql => " ON DUPLICATE KEY UPDATE name = name",
                _ => " ON CONFLICT (name) DO NOTHING",
            });
            insert.build().execute(pool).await.map_err(query_err("taking a lease"))?;
            let row = QueryBuilder::new("SELECT holder, expires_at FROM leases WHERE name = ")
                .push_bind(name)
                .build()
                .fetch_one(pool)
                .await
                .map_err(query_err("reading a lease"))?;
            let (current, expires_at): (String, i64) =
                (row.try_get(0).map_err(query_err("decoding a lease"))?, row.try_get(1).map_err(query_err("decoding a lease"))?);
            Ok(current == holder && expires_at >= now_ms)
        })
    }

    /// How many leases named `prefix…` holders other than `holder` hold at `now_ms` (the nodes
    /// announcing themselves with `node:<id>` leases).
    pub async fn others_holding(&self, prefix: &str, holder: &str, now_ms: i64) -> Result<usize, StoreError> {
        on_pool!(self, pool => {
            let row = QueryBuilder::new("SELECT COUNT(*) FROM leases WHERE name LIKE ")
                .push_bind(format!("{prefix}%"))
                .push(" AND holder <> ")
                .push_bind(holder)
                .push(" AND expires_at >= ")
                .push_bind(now_ms)
                .build()
                .fetch_one(pool)
                .await
                .map_err(query_err("counting the other nodes"))?;
            let count: i64 = row.try_get(0).map_err(query_err("counting the other nodes"))?;
            Ok(count as usize)
        })
    }

    /// Gives the lease `name` up if `holder` has it, so another node takes it at once.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            QueryBuilder::new("UPDATE leases SET expires_at = 0 WHERE name = ")
                .push_bind(name)
                .push(" AND holder = ")
                .push_bind(holder)
                .build()
                .execute(pool)
                .await
                .map(|_| ())
                .map_err(query_err("releasing a lease"))
        })
    }

    /// Sends `payload` (at most 8,000 bytes) to every node listening on `channel`; PostgreSQL
    /// only (false elsewhere: there is nobody to tell).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<bool, StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(false) };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(pool)
            .await
            .map(|_| true)
            .map_err(query_err("notifying the other nodes"))
    }

    /// Listens on `channel` on a connection of its own; `None` unless this is PostgreSQL.
    pub async fn listen(&self, channel: &str) -> Result<Option<Notifications>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(None) };
        let own = sqlx::PgPool::connect_lazy_with(pool.connect_options().as_ref().clone());
        let mut listener = sqlx::postgres::PgListener::connect_with(&own).await.map_err(query_err("listening for notifications"))?;
        listener.listen(channel).await.map_err(query_err("listening for notifications"))?;
        Ok(Some(Notifications(listener)))
    }
}
