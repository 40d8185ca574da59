//! Users and what they may do: Argon2id passwords (`password`), topic ACLs (`acl`), the
//! broker's `Authenticate` backed by the user tables (`UserAuth`), and the accounts Roost
//! creates itself (`bootstrap`).

pub mod accounts;
pub mod acl;
pub mod bootstrap;
pub mod limiter;
pub mod password;
pub mod tokens;
pub mod verified;

use crate::broker::{AuthOutcome, Authenticate, BoxFuture, Credentials};
use crate::store::{Store, StoreError, TokenKind};
use acl::Acl;
use limiter::LoginLimiter;
use mqtt_codec::{TopicFilter, TopicName};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tracing::warn;

/// Checks CONNECT credentials against the `users` table. Each successful login refreshes that
/// user's ACL, which publish and subscribe checks then read from memory.
pub struct UserAuth {
    store: Arc<Store>,
    acls: RwLock<HashMap<String, Arc<Acl>>>,
    limiter: Arc<LoginLimiter>,
}

impl UserAuth {
    /// `limiter` is shared with the dashboard's login.
    pub fn new(store: Arc<Store>, limiter: Arc<LoginLimiter>) -> Self {
        Self { store, acls: RwLock::default(), limiter }
    }

    fn acl(&self, username: Option<&str>) -> Option<Arc<Acl>> {
        let acls = self.acls.read().unwrap_or_else(|e| e.into_inner());
        acls.get(username?).cloned()
    }

    async fn check(&self, credentials: Credentials<'_>) -> AuthOutcome {
        let admission = self.limiter.admit(credentials.peer.ip(), credentials.username.unwrap_or_default()).await;
        if !admission.waited.is_zero() {
            warn!(peer = %credentials.peer, user = credentials.username.unwrap_or_default(), waited = ?admission.waited,
                "login slowed down after failed logins");
        }
        let outcome = self.verify(credentials).await;
        match outcome {
            AuthOutcome::Allowed { .. } => admission.succeeded(),
            AuthOutcome::BadCredentials | AuthOutcome::NotAuthorized => admission.failed(),
            // Not the client's fault: neither a failure nor a success.
            AuthOutcome::Unavailable => drop(admission),
        }
        outcome
    }

    async fn verify(&self, credentials: Credentials<'_>) -> AuthOutcome {
        // [MQTT-3.1.2-19] no user name: nobody to check; anonymous access is off.
        let Some(name) = credentials.username else { return AuthOutcome::NotAuthorized };
        let user = match self.store.user(name).await {
            Ok(user) => user,
            Err(e) => {
                warn!(error = %e, "user lookup failed; refusing the connection as unavailable");
                return AuthOutcome::Unavailable;
            }
        };
        // The dashboard's MQTT console logs in with a console or API token of the user.
        // (Only passwords shaped like a token are looked up: devices' logins cost no extra query.)
        if let Some(password) = credentials.password.and_then(|p| std::str::from_utf8(p).ok()).filter(|p| tokens::looks_like_token(p)) {
            match self.store.token_owner(&tokens::hash(password)).await {
                Ok(Some(owner)) if owner.name == name && owner.kind != TokenKind::Session => {
                    if let Some(user) = user {
                        return self.allow(user);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "token lookup failed; refusing the connection as unavailable");
                    return AuthOutcome::Unavailable;
                }
            }
        }
        let password = credentials.password.unwrap_or_default().to_vec();
        match self.limiter.verify_user(user, password, limiter::Reuse::Verified).await {
            Ok(Some(user)) => self.allow(user),
            Ok(None) => AuthOutcome::BadCredentials,
            Err(limiter::TooManyLogins) => AuthOutcome::Unavailable,
        }
    }

    /// Lets `user` in, with their ACL as of now.
    fn allow(&self, user: crate::store::UserRecord) -> AuthOutcome {
        self.keep_acl(&user);
        AuthOutcome::Allowed { username: Some(user.name) }
    }

    fn keep_acl(&self, user: &crate::store::UserRecord) {
        let acl = Arc::new(Acl::for_user(user));
        self.acls.write().unwrap_or_else(|e| e.into_inner()).insert(user.name.clone(), acl);
    }

    /// Reads the ACLs of the users `names` from the store, as their logins would. The wills of
    /// the clients connected when the server stopped are published as it starts, before anyone
    /// logs in, and are checked against their users' ACLs like any publish. A user removed
    /// since then has none: their will is not published.
    pub async fn load_acls<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<(), StoreError> {
        for name in names {
            if let Some(user) = self.store.user(name).await? {
                self.keep_acl(&user);
            }
        }
        Ok(())
    }
}

impl Authenticate for UserAuth {
    fn authenticate<'a>(&'a self, credentials: Credentials<'a>) -> BoxFuture<'a, AuthOutcome> {
        Box::pin(self.check(credentials))
    }

    fn may_publish(&self, username: Option<&str>, topic: &TopicName) -> bool {
        self.acl(username).is_some_and(|acl| acl.may_publish(topic.as_str()))
    }

    fn may_subscribe(&self, username: Option<&str>, filter: &TopicFilter) -> bool {
        self.acl(username).is_some_and(|acl| acl.may_subscribe(filter.as_str()))
    }
}
