//! Where Roost's own clients (`roost simulate`, `roost bench`, `serve --demo`) connect: a broker
//! URL such as `mqtt://host:1883` or `ws://host:9001/mqtt`, credentials and TLS trust, turned
//! into `rumqttc` options; and one client over rumqttc's 3.1.1 and 5.0 clients ([`versioned`]).

mod versioned;

pub use versioned::{Client, ClientEvent, EventLoop, Protocol};

/// Whether a connection error (as the event loop words it) is the broker refusing the
/// credentials (CONNACK 0x04/0x05, 5.0 0x86/0x87), which no retry changes.
pub fn refused_login(error: &str) -> bool {
    error.contains("return code") && (error.contains("BadUserNamePassword") || error.contains("NotAuthorized"))
}

use anyhow::Context;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The transports a broker URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Mqtt,
    Mqtts,
    Ws,
    Wss,
}

/// `mqtt://HOST[:PORT]`, `mqtts://…`, `ws://HOST[:PORT][/PATH]` or `wss://…`. A bare `HOST:PORT`
/// means `mqtt://`. Default ports: 1883, 8883, 9001 (path `/mqtt`), 443.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// WebSocket path, starting with `/`; empty for TCP.
    pub path: String,
}

impl FromStr for BrokerUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => (scheme, rest),
            None => ("mqtt", s),
        };
        let scheme = match scheme {
            "mqtt" | "tcp" => Scheme::Mqtt,
            "mqtts" | "ssl" => Scheme::Mqtts,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            other => return Err(format!("{s:?}: unknown scheme {other:?} (use mqtt://, mqtts://, ws:// or wss://)")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if !path.is_empty() && matches!(scheme, Scheme::Mqtt | Scheme::Mqtts) {
            return Err(format!("{s:?}: an MQTT-over-TCP URL has no path"));
        }
        // `[v6]:port`, `[v6]`, `host:port` or `host`.
        let (host, port) = match authority.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) = bracketed.split_once(']').ok_or_else(|| format!("{s:?}: unclosed '['"))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = port.map(|p| p.parse::<u16>().map_err(|_| format!("{s:?}: {p:?} is not a port number"))).transpose()?;
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        let default_port = match scheme {
            Scheme::Mqtt => 1883,
            Scheme::Mqtts => 8883,
            Scheme::Ws => 9001,
            Scheme::Wss => 443,
        };
        let path = match scheme {
            Scheme::Mqtt | Scheme::Mqtts => String::new(),
            Scheme::Ws | Scheme::Wss if path.is_empty() => "/mqtt".to_owned(),
            Scheme::Ws | Scheme::Wss => path.to_owned(),
        };
        Ok(Self { scheme, host: host.to_owned(), port: port.unwrap_or(default_port), path })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Mqtt => "mqtt",
            Scheme::Mqtts => "mqtts",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "{scheme}://{host}:{}{}", self.port, self.path)
    }
}

/// A password given as a setting: `Debug` (settings are logged and compared as text) never
/// shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Everything needed to open a client connection. The password never appears in `Debug`.
#[derive(Clone)]
pub struct ClientSettings {
    pub url: BrokerUrl,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM file with the CA that signed the broker's certificate (TLS only); without it the
    /// system's roots are trusted.
    pub ca_file: Option<PathBuf>,
    pub keep_alive: Duration,
    /// The MQTT version to speak (see [`ClientSettings::connect`]).
    pub protocol: Protocol,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("url", &self.url.to_string())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl ClientSettings {
    pub fn new(url: BrokerUrl) -> Self {
        Self { url, username: None, password: None, ca_file: None, keep_alive: Duration::from_secs(30), protocol: Protocol::V311 }
    }

    /// The transport `self.url` names, with TLS trust from `ca_file` (or the system's roots).
    fn transport(&self) -> anyhow::Result<rumqttc::Transport> {
        use rumqttc::{TlsConfiguration, Transport};
        let tls = || -> anyhow::Result<TlsConfiguration> {
            Ok(match &self.ca_file {
                Some(path) => TlsConfiguration::Simple {
                    ca: std::fs::read(path).with_context(|| format!("reading the CA file {}", path.display()))?,
                    alpn: None,
                    client_auth: None,
                },
                None => match Transport::tls_with_default_config() {
                    Transport::Tls(config) => config,
                    _ => unreachable!("tls_with_default_config returns Transport::Tls"),
                },
            })
        };
        Ok(match self.url.scheme {
            Scheme::Mqtt => Transport::Tcp,
            Scheme::Mqtts => Transport::Tls(tls()?),
            Scheme::Ws => Transport::Ws,
            Scheme::Wss => Transport::Wss(tls()?),
        })
    }

    /// The host rumqttc connects to: for WebSocket transports it takes the whole URL.
    fn host(&self) -> String {
        match self.url.scheme {
            Scheme::Mqtt | Scheme::Mqtts => self.url.host.clone(),
            Scheme::Ws | Scheme::Wss => self.url.to_string(),
        }
    }

    /// `rumqttc` 5.0 options, as [`ClientSettings::mqtt_options`] for 3.1.1.
    pub fn mqtt5_options(&self, client_id: &str, inflight: u16) -> anyhow::Result<rumqttc::v5::MqttOptions> {
        let mut options = rumqttc::v5::MqttOptions::new(client_id, self.host(), self.url.port);
        options.set_transport(self.transport()?);
        options.set_keep_alive(self.keep_alive).set_clean_start(true).set_outgoing_inflight_upper_limit(inflight.max(1));
        if let Some(user) = &self.username {
            options.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        Ok(options)
    }

    /// `rumqttc` options for a clean-session client called `client_id`, with `inflight`
    /// unacknowledged QoS 1/2 publishes at most.
    pub fn mqtt_options(&self, client_id: &str, inflight: u16) -> anyhow::Result<rumqttc::MqttOptions> {
        let mut options = rumqttc::MqttOptions::new(client_id, self.host(), self.url.port);
        options.set_transport(self.transport()?);
        options.set_keep_alive(self.keep_alive).set_clean_session(true).set_inflight(inflight.max(1));
        if let Some(user) = &self.username {
            options.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_round_trip() {
        let url: BrokerUrl = "localhost".parse().unwrap();
        assert_eq!((url.scheme, url.host.as_str(), url.port), (Scheme::Mqtt, "localhost", 1883));
        let url: BrokerUrl = "ws://10.0.0.2".parse().unwrap();
        assert_eq!(url.to_string(), "ws://10.0.0.2:9001/mqtt");
        let url: BrokerUrl = "wss://hub.example:8443/ws".parse().unwrap();
        assert_eq!((url.port, url.path.as_str()), (8443, "/ws"));
        let url: BrokerUrl = "mqtts://[::1]".parse().unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 8883));
        assert_eq!(url.to_string(), "mqtts://[::1]:8883");
        let url: BrokerUrl = "127.0.0.1:18830".parse().unwrap();
        assert_eq!(url.port, 18830);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        assert!("http://x".parse::<BrokerUrl>().unwrap_err().contains("unknown scheme"));
        assert!("mqtt://x:http".parse::<BrokerUrl>().unwrap_err().contains("not a port"));
        assert!("mqtt://x/y".parse::<BrokerUrl>().unwrap_err().contains("no path"));
        assert!("mqtt://:1883".parse::<BrokerUrl>().unwrap_err().contains("no host"));
    }

    #[test]
    fn debug_output_hides_the_password() {
        let mut settings = ClientSettings::new("localhost".parse().unwrap());
        settings.password = Some("hunter2".into());
        assert!(!format!("{settings:?}").contains("hunter2"));
        let secret: Secret = "hunter2".parse().unwrap();
        assert_eq!((format!("{secret:?}").as_str(), secret.expose()), ("<redacted>", "hunter2"));
    }
}
