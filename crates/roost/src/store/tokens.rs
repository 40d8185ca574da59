//! Login sessions and API tokens: the SQL of the HTTP login and of `roost token`. Tokens are
//! stored as hashes (`crate::auth::tokens`), never as presented.

use super::{decode_rows, query_err, Pool, Store, StoreError, UserError};
use crate::model::TimestampMs;
use sqlx::{QueryBuilder, Row};

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// The dashboard's login cookie.
    Session,
    /// The dashboard's MQTT console: used as the MQTT password of the logged-in user.
    Console,
    /// `Authorization: Bearer` for scripts, made with `roost token create`.
    Api,
}

impl TokenKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            TokenKind::Session => "session",
            TokenKind::Console => "console",
            TokenKind::Api => "api",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [TokenKind::Session, TokenKind::Console, TokenKind::Api].into_iter().find(|k| k.as_str() == s)
    }
}

/// The user a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub name: String,
    pub is_admin: bool,
    pub kind: TokenKind,
}

/// An API token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: i64,
    pub user: String,
    pub name: String,
    pub created_at: TimestampMs,
    pub expires_at: Option<TimestampMs>,
}

impl Store {
    /// Stores a token (its hash) for `user`; returns its id.
    pub async fn create_token(
        &self,
        user: &str,
        kind: TokenKind,
        name: &str,
        token_hash: &str,
        expires_at: Option<TimestampMs>,
    ) -> Result<i64, UserError> {
        let user_id = self.user_id(user).await?.ok_or_else(|| UserError::NoSuchUser(user.to_owned()))?;
        let now = TimestampMs::now().0;
        on_pool!(self, pool => {
            let mut tx = pool.begin().await.map_err(query_err("starting a transaction"))?;
            // Expired tokens go whenever a new one is made.
            QueryBuilder::new("DELETE FROM tokens WHERE expires_at IS NOT NULL AND expires_at < ")
                .push_bind(now)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(query_err("removing expired tokens"))?;
            QueryBuilder::new("INSERT INTO tokens (user_id, kind, name, token_hash, created_at, expires_at) VALUES (")
                .push_bind(user_id)
                .push(", ").push_bind(kind.as_str())
                .push(", ").push_bind(name)
                .push(", ").push_bind(token_hash)
                .push(", ").push_bind(now)
                .push(", ").push_bind(expires_at.map(|t| t.0))
                .push(")")
                .build()
                .execute(&mut *tx)
                .await
                .map_err(query_err("storing a token"))?;
            let id: i64 = QueryBuilder::new("SELECT id FROM tokens WHERE token_hash = ")
                .push_bind(token_hash)
                .build()
                .fetch_one(&mut *tx)
                .await
                .and_then(|row| row.try_get(0))
                .map_err(query_err("reading a token's id"))?;
            tx.commit().await.map_err(query_err("committing a token"))?;
            Ok(id)
        })
    }

    /// The owner of an unexpired token, if any.
    pub async fn token_owner(&self, token_hash: &str) -> Result<Option<TokenOwner>, StoreError> {
        let now = TimestampMs::now().0;
        on_pool!(self, pool => {
            let row = QueryBuilder::new("SELECT u.name, u.is_admin, t.kind FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ")
                .push_bind(token_hash)
                .push(" AND (t.expires_at IS NULL OR t.expires_at > ").push_bind(now).push(")")
                .build()
                .fetch_optional(pool)
                .await
                .map_err(query_err("looking up a token"))?;
            row.map(|row| -> Result<Option<TokenOwner>, sqlx::Error> {
                let kind: String = row.try_get(2)?;
                Ok(TokenKind::parse(&kind).map(|kind| TokenOwner { name: row.get(0), is_admin: row.get(1), kind }))
            })
            .transpose()
            .map(Option::flatten)
            .map_err(query_err("decoding a token"))
        })
    }

    /// Deletes the token with this hash (logout); `true` if there was one.
    pub async fn delete_token(&self, token_hash: &str) -> Result<bool, StoreError> {
        on_pool!(self, pool => QueryBuilder::new("DELETE FROM tokens WHERE token_hash = ")
            .push_bind(token_hash)
            .build()
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0)
            .map_err(query_err("deleting a token")))
    }

    /// API tokens (not sessions) of `owner` (everyone's for `None`), oldest first.
    pub async fn api_tokens(&self, owner: Option<&str>) -> Result<Vec<TokenRow>, StoreError> {
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("SELECT t.id, u.name, t.name, t.created_at, t.expires_at FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.kind = ");
            query.push_bind(TokenKind::Api.as_str());
            if let Some(owner) = owner {
                query.push(" AND u.name = ").push_bind(owner);
            }
            let rows = query
                .push(" ORDER BY t.id")
                .build()
                .fetch_all(pool)
                .await
                .map_err(query_err("listing tokens"))?;
            decode_rows(&rows, "decoding tokens", |row| Ok(TokenRow {
                    id: row.try_get(0)?,
                    user: row.try_get(1)?,
                    name: row.try_get(2)?,
                    created_at: TimestampMs(row.try_get(3)?),
                    expires_at: row.try_get::<Option<i64>, _>(4)?.map(TimestampMs),
                }))
        })
    }

    /// Revokes an API token by id, only if it belongs to `owner` (any user's for `None`); `true`
    /// if there was one.
    pub async fn revoke_api_token(&self, id: i64, owner: Option<&str>) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
            let mut query = QueryBuilder::new("DELETE FROM tokens WHERE id = ");
            query.push_bind(id).push(" AND kind = ").push_bind(TokenKind::Api.as_str());
            if let Some(owner) = owner {
                query.push(" AND user_id IN (SELECT id FROM users WHERE name = ").push_bind(owner).push(")");
            }
            query.build()
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0)
            .map_err(query_err("revoking a token"))
        })
    }
}
