//! The two seams through which the rest of Roost plugs into the broker: authentication and
//! ingest. The broker knows these traits, never their implementations.

use super::Message;
use mqtt_codec::{TopicFilter, TopicName};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::oneshot;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a client presented in its CONNECT.
pub struct Credentials<'a> {
    /// Where the connection comes from (for limits on failed logins).
    pub peer: std::net::SocketAddr,
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("peer", &self.peer)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.map(|_| "***"))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Accepted; the identity the ACL checks use.
    Allowed { username: Option<String> },
    /// CONNACK 0x04.
    BadCredentials,
    /// CONNACK 0x05.
    NotAuthorized,
    /// CONNACK 0x03: the user database could not be asked.
    Unavailable,
}

/// Decides who may connect, publish and subscribe.
pub trait Authenticate: Send + Sync + 'static {
    /// May be slow (password hashing): implementations do heavy work off the runtime.
    fn authenticate<'a>(&'a self, credentials: Credentials<'a>) -> BoxFuture<'a, AuthOutcome>;
    fn may_publish(&self, username: Option<&str>, topic: &TopicName) -> bool;
    fn may_subscribe(&self, username: Option<&str>, filter: &TopicFilter) -> bool;
}

/// Anonymous access, everything allowed: `roost serve --allow-anonymous`.
#[derive(Debug, Default)]
pub struct AllowAll;

impl Authenticate for AllowAll {
    fn authenticate<'a>(&'a self, credentials: Credentials<'a>) -> BoxFuture<'a, AuthOutcome> {
        let username = credentials.username.map(str::to_owned);
        Box::pin(async move { AuthOutcome::Allowed { username } })
    }

    fn may_publish(&self, _: Option<&str>, _: &TopicName) -> bool {
        true
    }

    fn may_subscribe(&self, _: Option<&str>, _: &TopicFilter) -> bool {
        true
    }
}

/// Resolves once the sink has durably handled a publish; the broker acknowledges it only then.
/// An error (or a dropped sender) means it was not stored, and the client is disconnected
/// without an acknowledgement so that it sends the publish again.
pub type Receipt = oneshot::Receiver<Result<(), NotStored>>;

/// Why something an acknowledgement would promise was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotStored {
    /// The database refused it (not a transient failure: retrying cannot help).
    #[error("refused by the database: {0}")]
    Refused(String),
    /// The writer gave up or went away (shutdown while the database was failing).
    #[error("dropped before it was stored")]
    Dropped,
}

/// A publish the ingest sink took.
#[derive(Debug)]
pub struct Offered {
    pub receipt: Receipt,
    /// Set when the publish is not a valid reading and is kept as a reject (quarantined)
    /// instead: why. A 5.0 client is told so in its acknowledgement (0x99).
    pub quarantined: Option<String>,
}

/// Where publishes go besides subscribers: Roost's durable ingest.
pub trait IngestSink: Send + Sync + 'static {
    /// Whether publishes on `topic` are for this sink at all; a cheap, synchronous check so
    /// that other publishes cost nothing.
    fn wants(&self, topic: &str) -> bool;

    /// Offers a publish received from `client_id`. `None`: nothing to wait for (not a reading),
    /// acknowledge at once. Awaiting the returned future is the backpressure: a full sink makes
    /// the session stop reading from its client.
    fn offer<'a>(&'a self, client_id: &'a Arc<str>, message: &'a Message) -> BoxFuture<'a, Option<Offered>>;
}

/// No ingest: the broker alone.
#[derive(Debug, Default)]
pub struct NoIngest;

impl IngestSink for NoIngest {
    fn wants(&self, _: &str) -> bool {
        false
    }

    fn offer<'a>(&'a self, _: &'a Arc<str>, _: &'a Message) -> BoxFuture<'a, Option<Offered>> {
        Box::pin(async { None })
    }
}
