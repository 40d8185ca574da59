//! Webhooks: an alert's state change POSTed as JSON to the rule's URL, retried with backoff.
//! One queue and task per URL, so a dead endpoint delays only its own notifications; queues
//! are bounded and full ones drop the newest (counted, logged): nothing here ever makes ingest
//! or the alert engine wait.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Notifications waiting per URL before new ones are dropped.
pub const QUEUE_PER_URL: usize = 1000;
/// Attempts per notification; between them 1 s, 2 s, 4 s … up to [`MAX_BACKOFF`].
pub const ATTEMPTS: u32 = 8;
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// One attempt's limit: connect, send, and the answer's head.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// A checked `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl WebhookUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("`webhook` {url:?}: {why}");
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported (put a token in the path)"));
        }
        let (host, port) = match authority.rsplit_once(':').filter(|(h, _)| !h.ends_with(']') || h.starts_with('[')) {
            Some((host, port)) if !host.contains(':') || host.starts_with('[') => {
                (host, port.parse::<u16>().map_err(|_| bad("the port must be a number up to 65535"))?)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("needs a host, and no spaces"));
        }
        Ok(Self { tls, host: host.to_owned(), port, path: path.to_owned() })
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    /// Given up after every attempt, or dropped from a full queue.
    pub given_up: AtomicU64,
}

/// Where notifications go: a queue and a task per URL, started on first use.
pub struct Webhooks {
    /// Per URL and whether it is restricted ([`Webhooks::send`]).
    queues: std::sync::Mutex<HashMap<(String, bool), mpsc::Sender<Bytes>>>,
    tls: Arc<rustls::ClientConfig>,
    pub stats: Arc<WebhookStats>,
    tasks: TaskTracker,
    stop: CancellationToken,
    first_backoff: Duration,
}

impl Webhooks {
    pub fn new(stop: CancellationToken) -> Self {
        Self::with_backoff(stop, Duration::from_secs(1))
    }

    /// With a shorter first backoff (tests).
    pub fn with_backoff(stop: CancellationToken, first_backoff: Duration) -> Self {
        Self {
            queues: Default::default(),
            tls: Arc::new(client_tls()),
            stats: Arc::default(),
            tasks: TaskTracker::new(),
            stop,
            first_backoff,
        }
    }

    /// Queues `body` for `url`; never waits. A `restricted` URL (a rule of a user who is not an
    /// admin) may not reach this machine or link-local addresses (a cloud's metadata service):
    /// a user's rule must not make the server call what only the server can reach.
    pub fn send(&self, url: &str, body: Bytes, restricted: bool) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let queue = queues.entry((url.to_owned(), restricted)).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE_PER_URL);
            let worker = Worker {
                restricted,
                url: url.to_owned(),
                tls: Arc::clone(&self.tls),
                stats: Arc::clone(&self.stats),
                stop: self.stop.clone(),
                first_backoff: self.first_backoff,
            };
            self.tasks.spawn(worker.run(rx));
            tx
        });
        if queue.try_send(body).is_err() {
            self.stats.given_up.fetch_add(1, Relaxed);
            tracing::warn!(webhook = %shown(url), limit = QUEUE_PER_URL, "webhook queue full: notification dropped");
        }
    }

    /// Waits for the workers after `stop` was cancelled.
    pub async fn stopped(&self) {
        self.queues.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// A URL as logged: scheme, host and port, not its path (webhook paths often hold a secret).
fn shown(url: &str) -> String {
    match WebhookUrl::parse(url) {
        Ok(u) => format!("{}://{}:{}/…", if u.tls { "https" } else { "http" }, u.host, u.port),
        Err(_) => "an invalid URL".into(),
    }
}

struct Worker {
    restricted: bool,
    url: String,
    tls: Arc<rustls::ClientConfig>,
    stats: Arc<WebhookStats>,
    stop: CancellationToken,
    first_backoff: Duration,
}

impl Worker {
    async fn run(self, mut bodies: mpsc::Receiver<Bytes>) {
        let Ok(url) = WebhookUrl::parse(&self.url) else { return };
        loop {
            let body = tokio::select! {
                body = bodies.recv() => match body { Some(b) => b, None => return },
                _ = self.stop.cancelled() => return,
            };
            let mut backoff = self.first_backoff;
            for attempt in 1..=ATTEMPTS {
                let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, post(&url, self.restricted, &self.tls, body.clone())).await;
                let (error, retry) = match outcome {
                    Ok(Ok(status)) if (200..300).contains(&status) => {
                        self.stats.delivered.fetch_add(1, Relaxed);
                        break;
                    }
                    // A client error means the request is wrong for that server: sending it
                    // again will not help (but "timeout" and "too many requests" may).
                    Ok(Ok(status)) => (format!("answered HTTP {status}"), !(400..500).contains(&status) || status == 408 || status == 429),
                    Ok(Err(Refused(e))) => (e, false),
                    Ok(Err(Failed(e))) => (e, true),
                    Err(_) => (format!("no answer within {ATTEMPT_TIMEOUT:?}"), true),
                };
                self.stats.failed_attempts.fetch_add(1, Relaxed);
                if attempt == ATTEMPTS || !retry {
                    self.stats.given_up.fetch_add(1, Relaxed);
                    tracing::warn!(webhook = %shown(&self.url), %error, attempts = attempt, "webhook failed; notification dropped");
                    break;
                }
                tracing::debug!(webhook = %shown(&self.url), %error, attempt, retry_in = ?backoff, "webhook attempt failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = self.stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Why an attempt failed: worth another try, or not.
enum AttemptError {
    Failed(String),
    Refused(String),
}
use AttemptError::{Failed, Refused};

/// Addresses a restricted webhook may not call: this machine (loopback, and the addresses of
/// its own interfaces, where services listening on every interface answer), and link-local
/// ones.
fn forbidden(ip: std::net::IpAddr) -> bool {
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    };
    // Clouds' metadata services outside the link-local range: AWS over IPv6, Alibaba.
    const METADATA: [std::net::IpAddr; 2] = [
        std::net::IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(100, 100, 100, 200)),
    ];
    METADATA.contains(&ip)
        || match ip {
            std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified() || v4.is_link_local(),
            std::net::IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80,
        }
        || is_own_address(ip)
}

/// Whether a restricted webhook could never call `url`: every address its host has now is
/// forbidden (checked again at each delivery: names may resolve elsewhere later). A host that
/// does not resolve now is not refused.
pub async fn only_forbidden(url: &str) -> bool {
    let Ok(url) = WebhookUrl::parse(url) else { return false };
    let Ok(addrs) = resolve(&url).await else { return false };
    !addrs.is_empty() && addrs.iter().all(|a| forbidden(a.ip()))
}

/// The addresses `url`'s host has now.
async fn resolve(url: &WebhookUrl) -> std::io::Result<Vec<std::net::SocketAddr>> {
    Ok(tokio::net::lookup_host((url.host.as_str(), url.port)).await?.collect())
}

/// Whether `ip` may be an address of one of this machine's interfaces: only those can be bound
/// to (an immediate system call; nothing is sent). Any other failure than "not available" (no
/// file descriptor left) counts as this machine's: when in doubt, refuse.
fn is_own_address(ip: std::net::IpAddr) -> bool {
    match std::net::UdpSocket::bind((ip, 0)) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::AddrNotAvailable,
    }
}

/// One POST; the answer's status code. The host is resolved once and the address checked is
/// the one connected to.
async fn post(url: &WebhookUrl, restricted: bool, tls: &Arc<rustls::ClientConfig>, body: Bytes) -> Result<u16, AttemptError> {
    let addrs = resolve(url).await.map_err(|e| Failed(format!("resolving the host: {e}")))?;
    let allowed: Vec<std::net::SocketAddr> = addrs.iter().copied().filter(|a| !(restricted && forbidden(a.ip()))).collect();
    if allowed.is_empty() && !addrs.is_empty() {
        return Err(Refused(
            "a rule of a user who is not an admin may not call this machine (loopback or one of its own addresses) or a link-local address"
                .into(),
        ));
    }
    let tcp = tokio::net::TcpStream::connect(&allowed[..]).await.map_err(|e| Failed(format!("connecting: {e}")))?;
    if url.tls {
        let name = rustls::pki_types::ServerName::try_from(url.host.clone()).map_err(|e| Refused(format!("host name: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls)).connect(name, tcp).await.map_err(|e| Failed(format!("TLS: {e}")))?;
        exchange(url, stream, body).await.map_err(Failed)
    } else {
        exchange(url, tcp, body).await.map_err(Failed)
    }
}

async fn exchange<S>(url: &WebhookUrl, stream: S, body: Bytes) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(connection);
    // An IPv6 literal goes in brackets [RFC 9110, 7.2].
    let name = if url.host.contains(':') { format!("[{}]", url.host) } else { url.host.clone() };
    let host = if (url.tls && url.port == 443) || (!url.tls && url.port == 80) { name } else { format!("{name}:{}", url.port) };
    let request = hyper::Request::post(url.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, concat!("roost/", env!("CARGO_PKG_VERSION")))
        .body(http_body_util::Full::new(body))
        .map_err(|e| format!("request: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| format!("HTTP: {e}"))?;
    Ok(response.status().as_u16())
}

/// TLS for webhooks: the system's trusted roots.
fn client_tls() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::debug!(%error, "a system certificate could not be loaded");
    }
    roots.add_parsable_certificates(found.certs);
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = WebhookUrl::parse("https://hooks.example.com/services/T0/B1?x=1").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.path.as_str()), (true, "hooks.example.com", 443, "/services/T0/B1?x=1"));
        let u = WebhookUrl::parse("http://127.0.0.1:8123").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.path.as_str()), (false, "127.0.0.1", 8123, "/"));
        let u = WebhookUrl::parse("http://[::1]:9000/hook").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        for bad in ["ftp://x", "http://", "http://h:99999/", "http://u:p@h/", "http://h/a b"] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(shown("https://hooks.example.com/services/SECRET"), "https://hooks.example.com:443/…", "no path in logs");
    }

    #[test]
    fn restricted_webhooks_may_not_call_this_machine_or_link_local_addresses() {
        for ip in ["127.0.0.1", "0.0.0.0", "169.254.169.254", "::1", "fe80::1", "::ffff:127.0.0.1", "fd00:ec2::254", "100.100.100.200"] {
            assert!(forbidden(ip.parse().unwrap()), "{ip}");
        }
        // Documentation ranges: no machine's own address.
        for ip in ["198.51.100.10", "203.0.113.5", "2001:db8::1"] {
            assert!(!forbidden(ip.parse().unwrap()), "{ip}: the LAN and the internet are fine");
        }
        // This machine's own address on its network (the one it would send from; a UDP
        // "connection" sends nothing): its services listening on every interface answer there.
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.connect("192.0.2.1:9").expect("this test needs a network interface with a route out");
        let own = socket.local_addr().unwrap().ip();
        assert!(!own.is_loopback(), "{own}");
        assert!(forbidden(own), "{own}: this machine's own LAN address");
    }
}
