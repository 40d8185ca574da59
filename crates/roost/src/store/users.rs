//! User accounts and their extra grants: the SQL of `roost user` and of MQTT authentication.
//! Passwords arrive here already hashed (Argon2id, `crate::auth::password`).

use super::{decode_rows, query_err, Pool, Store, StoreError, TokenKind};
use crate::model::TimestampMs;
use sqlx::{QueryBuilder, Row};

/// A topic filter a user may use besides `iot/{name}/#`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub filter: String,
    pub publish: bool,
    pub subscribe: bool,
}

/// A user as stored. `Debug` leaves the hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub created_at: TimestampMs,
    pub grants: Vec<Grant>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("is_admin", &self.is_admin)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("a user named {0:?} already exists")]
    Exists(String),
    #[error("there is no user named {0:?}")]
    NoSuchUser(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl Store {
    pub async fn count_users(&self) -> Result<i64, StoreError> {
        self.count_rows("users", "counting users").await
    }

    pub async fn create_user(&self, name: &str, password_hash: &str, is_admin: bool) -> Result<(), UserError> {
        let result = on_pool!(self, pool => QueryBuilder::new("INSERT INTO users (name, password_hash, is_admin, created_at) VALUES (")
            .push_bind(name)
            .push(", ").push_bind(password_hash)
            .push(", ").push_bind(is_admin)
            .push(", ").push_bind(TimestampMs::now().0)
            .push(")")
            .build()
            .execute(pool)
            .await
            .map(|_| ()));
        match result {
            Err(e) if is_unique_violation(&e) => Err(UserError::Exists(name.to_owned())),
            other => Ok(other.map_err(query_err("creating a user"))?),
        }
    }

    /// Every user with their grants, ordered by name.
    pub async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let mut users = self.user_rows(None).await?;
        for user in &mut users {
            user.grants = self.grants_of(&user.name).await?;
        }
        Ok(users)
    }

    /// One user with their grants, if they exist.
    pub async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let Some(mut user) = self.user_rows(Some(name)).await?.pop() else { return Ok(None) };
        user.grants = self.grants_of(name).await?;
        Ok(Some(user))
    }

    async fn user_rows(&self, name: Option<&str>) -> Result<Vec<UserRecord>, StoreError> {
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("SELECT name, password_hash, is_admin, created_at FROM users");
            if let Some(name) = name {
                query.push(" WHERE name = ").push_bind(name);
            }
            let rows = query.push(" ORDER BY name").build().fetch_all(pool).await.map_err(query_err("reading users"))?;
            decode_rows(&rows, "decoding users", |row| {
                    Ok(UserRecord {
                        name: row.try_get(0)?,
                        password_hash: row.try_get(1)?,
                        is_admin: row.try_get(2)?,
                        created_at: TimestampMs(row.try_get(3)?),
                        grants: Vec::new(),
                    })
                })
        })
    }

    async fn grants_of(&self, name: &str) -> Result<Vec<Grant>, StoreError> {
        on_pool!(self, pool => {
            let rows = QueryBuilder::new("SELECT g.filter, g.publish, g.subscribe FROM user_grants g JOIN users u ON u.id = g.user_id WHERE u.name = ")
                .push_bind(name)
                .push(" ORDER BY g.filter")
                .build()
                .fetch_all(pool)
                .await
                .map_err(query_err("reading grants"))?;
            decode_rows(&rows, "decoding grants", |row| Ok(Grant { filter: row.try_get(0)?, publish: row.try_get(1)?, subscribe: row.try_get(2)? }))
        })
    }

    /// Sets a new password and ends the user's dashboard sessions and console tokens (which
    /// were granted by the old one), in one transaction. API tokens stay: they are revoked
    /// one by one (`roost token revoke`).
    pub async fn set_password(&self, name: &str, password_hash: &str) -> Result<(), UserError> {
        let changed = on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_err("starting a transaction"))?;
            let changed = QueryBuilder::new("UPDATE users SET password_hash = ")
                .push_bind(password_hash)
                .push(" WHERE name = ").push_bind(name)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(query_err("changing a password"))?
                .rows_affected();
            QueryBuilder::new("DELETE FROM tokens WHERE kind IN (")
                .push_bind(TokenKind::Session.as_str())
                .push(", ").push_bind(TokenKind::Console.as_str())
                .push(") AND user_id IN (SELECT id FROM users WHERE name = ").push_bind(name)
                .push(")")
                .build()
                .execute(&mut *tx)
                .await
                .map_err(query_err("ending a user's sessions"))?;
            tx.commit().await.map_err(query_err("committing"))?;
            changed
        });
        if changed == 0 {
            return Err(UserError::NoSuchUser(name.to_owned()));
        }
        Ok(())
    }

    /// Removes a user with their grants and tokens.
    pub async fn delete_user(&self, name: &str) -> Result<(), UserError> {
        let deleted = on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_err("starting a transaction"))?;
            for table in ["user_grants", "tokens"] {
                QueryBuilder::new(format!("DELETE FROM {table} WHERE user_id IN (SELECT id FROM users WHERE name = "))
                    .push_bind(name)
                    .push(")")
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("removing a user's grants and tokens"))?;
            }
            let deleted = QueryBuilder::new("DELETE FROM users WHERE name = ")
                .push_bind(name)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(query_err("removing a user"))?
                .rows_affected();
            tx.commit().await.map_err(query_err("committing"))?;
            deleted
        });
        if deleted == 0 {
            return Err(UserError::NoSuchUser(name.to_owned()));
        }
        Ok(())
    }

    /// Sets (or replaces) what `name` may do with `filter`.
    pub async fn grant(&self, name: &str, grant: &Grant) -> Result<(), UserError> {
        let id = self.user_id(name).await?.ok_or_else(|| UserError::NoSuchUser(name.to_owned()))?;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_err("starting a transaction"))?;
            QueryBuilder::new("DELETE FROM user_grants WHERE user_id = ")
                .push_bind(id)
                .push(" AND filter = ").push_bind(grant.filter.as_str())
                .build()
                .execute(&mut *tx)
                .await
                .map_err(query_err("replacing a grant"))?;
            QueryBuilder::new("INSERT INTO user_grants (user_id, filter, publish, subscribe) VALUES (")
                .push_bind(id)
                .push(", ").push_bind(grant.filter.as_str())
                .push(", ").push_bind(grant.publish)
                .push(", ").push_bind(grant.subscribe)
                .push(")")
                .build()
                .execute(&mut *tx)
                .await
                .map_err(query_err("adding a grant"))?;
            tx.commit().await.map_err(query_err("committing"))?;
        });
        Ok(())
    }

    /// Removes a grant; `false` if there was none.
    pub async fn revoke(&self, name: &str, filter: &str) -> Result<bool, UserError> {
        let id = self.user_id(name).await?.ok_or_else(|| UserError::NoSuchUser(name.to_owned()))?;
        let deleted = on_pool!(self, pool => QueryBuilder::new("DELETE FROM user_grants WHERE user_id = ")
            .push_bind(id)
            .push(" AND filter = ").push_bind(filter)
            .build()
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
            .map_err(query_err("removing a grant")))?;
        Ok(deleted > 0)
    }

    pub(super) async fn user_id(&self, name: &str) -> Result<Option<i64>, StoreError> {
        on_pool!(self, pool => QueryBuilder::new("SELECT id FROM users WHERE name = ")
            .push_bind(name)
            .build()
            .fetch_optional(pool)
            .await
            .and_then(|row| row.map(|r| r.try_get(0)).transpose())
            .map_err(query_err("looking up a user")))
    }
}
