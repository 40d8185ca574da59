//! One client connection: the MQTT 3.1.1 and 5.0 protocol state machine between a byte stream
//! and the broker. Owns its socket, its read/write buffers and (while connected) its session.

mod packets;
mod v5;

use v5::{reason, V5};

use super::acks::AckQueue;
use super::durability::{StateChange, MAX_STORED_CLIENT_ID};
use super::hooks::{AuthOutcome, Credentials, NotStored};
use super::limits::Permit;
use super::mailbox::{Alarm, Congestion, Delivery, Mailbox, MailboxEvent};
use super::sessions::{Claimed, NewSession, SessionState};
use super::stats::BrokerStats;
use super::{Broker, Message, MessageProperties};
use bytes::BytesMut;
use mqtt_codec::{
    connect_return, decode, encode, ConnAck, Connect, ConnectRefusal, DecodeError, Disconnect, LastWill, Packet, Properties, Property,
    ProtocolVersion,
};
use std::fmt;
use std::future::Future;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tracing::{info, warn};

/// Bytes read at once on the stack while a connection has no read buffer (it is idle).
const LANDING: usize = 1024;
/// The read buffer of a client that sends fast.
const BUSY_BUFFER: usize = 16 * 1024;
/// How long a publisher stops reading when an online QoS 1/2 subscriber it feeds has its queue
/// over half full (see `Congestion::Reliable`).
const CONGESTION_PAUSE: Duration = Duration::from_millis(1);

/// Why a connection ended. Everything but a normal `Disconnect` publishes the will
/// [MQTT-3.1.2-8].
#[derive(Debug)]
enum End {
    /// The client sent DISCONNECT; `will`: a 5.0 client asked for its will anyway (0x04).
    Disconnect {
        will: bool,
    },
    ClosedByPeer,
    TakenOver,
    Shutdown,
    Dropped,
    KeepAliveExpired(Duration),
    QueueOverflow,
    /// The client broke the protocol: the 5.0 DISCONNECT reason code, and why.
    Protocol(Box<(u8, String)>),
    Io(std::io::Error),
    NotStored(NotStored),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Disconnect { will: false } => f.write_str("client sent DISCONNECT"),
            End::Disconnect { will: true } => f.write_str("client sent DISCONNECT with its will (0x04)"),
            End::ClosedByPeer => f.write_str("client closed the connection"),
            End::TakenOver => f.write_str("[MQTT-3.1.4-2] another connection took over this client id"),
            End::Shutdown => f.write_str("server shutting down"),
            End::Dropped => f.write_str("an admin dropped this persistent session"),
            End::KeepAliveExpired(limit) => {
                write!(f, "[MQTT-3.1.2-24] nothing received for {limit:?} (1.5 x keep-alive)")
            }
            End::QueueOverflow => f.write_str("QoS 1/2 queue overflowed: client cannot keep up"),
            End::Protocol(violation) => write!(f, "protocol error: {}", violation.1),
            End::Io(e) => write!(f, "I/O error: {e}"),
            End::NotStored(why) => write!(f, "publish could not be stored, not acknowledged: {why}"),
        }
    }
}

impl End {
    /// A protocol error (5.0: 0x82).
    fn protocol(why: impl Into<String>) -> Self {
        End::violation(reason::PROTOCOL_ERROR, why)
    }

    /// A violation with its 5.0 reason code. (Boxed: `End` lives in every connection's future.)
    fn violation(code: u8, why: impl Into<String>) -> Self {
        End::Protocol(Box::new((code, why.into())))
    }

    /// The reason code of the DISCONNECT a 5.0 client is sent before the connection closes
    /// (§3.14.2.1); `None` when the client ended it.
    fn disconnect_reason(&self) -> Option<u8> {
        match self {
            End::Disconnect { .. } | End::ClosedByPeer | End::Io(_) => None,
            End::TakenOver => Some(reason::SESSION_TAKEN_OVER),
            End::Shutdown => Some(reason::SERVER_SHUTTING_DOWN),
            End::Dropped => Some(reason::ADMINISTRATIVE_ACTION),
            End::KeepAliveExpired(_) => Some(reason::KEEP_ALIVE_TIMEOUT),
            End::QueueOverflow => Some(reason::QUOTA_EXCEEDED),
            End::Protocol(violation) => Some(violation.0),
            End::NotStored(_) => Some(reason::IMPLEMENTATION_SPECIFIC_ERROR),
        }
    }
}

impl From<DecodeError> for End {
    fn from(e: DecodeError) -> Self {
        let code = match e {
            DecodeError::PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            _ => reason::MALFORMED_PACKET,
        };
        End::violation(code, e.to_string())
    }
}

impl From<std::io::Error> for End {
    fn from(e: std::io::Error) -> Self {
        End::Io(e)
    }
}

struct Connection<S> {
    broker: Arc<Broker>,
    stream: S,
    peer: SocketAddr,
    /// This connection's slot in the per-address limit, given back when it ends.
    _permit: Permit,
    version: ProtocolVersion,
    /// Empty (no memory held) while the connection is idle; see `poll_read_input`.
    read_buf: BytesMut,
    write_buf: BytesMut,
    pending_acks: AckQueue,
    scratch: Vec<Delivery>,
    /// How full the fullest subscriber queue our publishes went to was, since the last read.
    congestion: Congestion,
    /// 1.5 times the client's keep-alive [MQTT-3.1.2-24]; `None` when it is disabled.
    keep_alive: Option<Duration>,
    /// What a 5.0 connection agreed on; `None` for 3.1.1.
    v5: Option<Box<V5>>,
    /// In-flight messages of the resumed session not yet sent again (see `Outbound::unsent`).
    pending_resends: usize,
}

/// What woke a connection waiting for work.
enum Wake {
    Alarm(Alarm),
    /// Queued messages to send (asked for only while the in-flight window is open).
    Messages,
    /// The ingest sink's receipt for the oldest unacknowledged publish.
    Receipt(Result<(), NotStored>),
    /// Bytes read; 0 when the client closed the connection.
    Input(std::io::Result<usize>),
}

/// Runs one connection to its end; how it ended is logged. Every connection task holds this
/// future for its whole life, so it is kept small: all state lives in one boxed `Connection`,
/// short phases are boxed, and an idle connection waits on a plain poll function (no timer,
/// no waiter nodes; see `Connection::poll_wake`).
pub(crate) fn serve<S>(broker: Arc<Broker>, stream: S, peer: SocketAddr, permit: Permit) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let conn = Box::new(Connection {
        broker,
        stream,
        peer,
        _permit: permit,
        version: ProtocolVersion::V311,
        read_buf: BytesMut::new(),
        write_buf: BytesMut::new(),
        pending_acks: AckQueue::default(),
        scratch: Vec::new(),
        congestion: Congestion::None,
        keep_alive: None,
        v5: None,
        pending_resends: 0,
    });
    conn.run()
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn run(mut self: Box<Self>) {
        if let Some(connect) = Box::pin(self.expect_connect()).await {
            self.run_session(connect).await;
        }
    }

    /// The CONNECT, within the connect timeout; `None` (logged) if none came.
    async fn expect_connect(&mut self) -> Option<Box<Connect>> {
        let timeout = self.broker.config.connect_timeout;
        match tokio::time::timeout(timeout, self.read_connect()).await {
            Ok(Ok(Some(connect))) => Some(Box::new(connect)),
            Ok(Ok(None)) => None,
            Ok(Err(end)) => {
                if matches!(end, End::Protocol(..)) {
                    BrokerStats::incr(&self.broker.stats.protocol_errors);
                }
                info!(peer = %self.peer, reason = %end, "connection refused before CONNECT completed");
                None
            }
            Err(_) => {
                info!(peer = %self.peer, ?timeout, "[MQTT-3.1.4] no CONNECT in time; closing");
                None
            }
        }
    }

    /// Reads the first packet, which must be a CONNECT [MQTT-3.1.0-1]. `Ok(None)`: the
    /// connection was answered and closed (refused CONNACK) or closed by the peer.
    async fn read_connect(&mut self) -> Result<Option<Connect>, End> {
        loop {
            match decode(&mut self.read_buf, self.version, self.broker.config.max_packet_size) {
                Ok(Some(Packet::Connect(connect))) => return Ok(Some(connect)),
                Ok(Some(other)) => return Err(End::protocol(format!("[MQTT-3.1.0-1] first packet was {}, not CONNECT", other.name()))),
                Err(DecodeError::UnsupportedProtocolLevel(level)) => {
                    // [MQTT-3.1.2-2] answer 0x01, then close.
                    self.refuse(ConnectRefusal::UnacceptableProtocolVersion).await;
                    info!(peer = %self.peer, level, "unsupported protocol level; refused");
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
                Ok(None) => {}
            }
            if std::future::poll_fn(|cx| self.poll_read_input(cx)).await? == 0 {
                return Ok(None);
            }
        }
    }

    async fn refuse(&mut self, why: ConnectRefusal) {
        self.refuse_with(why.code(self.version)).await;
    }

    /// Answers the CONNECT with CONNACK `code` [MQTT-3.2.2-6, -7] (the connection then closes).
    async fn refuse_with(&mut self, code: u8) {
        self.queue(Packet::ConnAck(ConnAck { session_present: false, code, properties: Default::default() }));
        let _ = self.flush().await;
    }

    async fn run_session(mut self: Box<Self>, connect: Box<Connect>) {
        self.version = connect.protocol;
        if connect.protocol.is_v5() {
            match V5::negotiate(&connect, &self.broker.config) {
                Ok(v5) => self.v5 = Some(Box::new(v5)),
                Err(refusal) => {
                    Box::pin(self.refuse_with(refusal.code)).await;
                    info!(peer = %self.peer, code = refusal.code, why = refusal.why, "MQTT 5.0 CONNECT refused");
                    return;
                }
            }
        }
        let Some((client_id, username, assigned)) = Box::pin(self.accept_identity(&connect)).await else { return };
        // Built in place and destructured at once: a named `NewSession` or `Option<Claimed>`
        // would keep its room in the connection's future for the whole session.
        let Some(Claimed { mut state, session_present, generation }) = Box::pin(self.broker.sessions.claim(
            NewSession {
                client_id: &client_id,
                clean_start: connect.clean_start,
                persistent: self.v5.as_ref().map_or(!connect.clean_start, |v5| v5.session_expiry > 0),
                expiry_secs: self.v5.as_ref().map(|v5| v5.session_expiry),
                username: username.as_deref(),
            },
            &self.broker.router,
            &self.broker.config,
            &self.broker.durable,
        ))
        .await
        else {
            Box::pin(self.refuse(ConnectRefusal::ServerUnavailable)).await;
            info!(peer = %self.peer, %client_id, "server shutting down; connection refused");
            return;
        };
        drop(client_id); // the session holds it from here on (state.client_id)
        {
            let cleared = || self.broker.durable.record(StateChange::WillCleared { client_id: Arc::clone(&state.client_id) });
            if let Some(pending) = self.broker.delayed_wills.cancel(&state.client_id, cleared) {
                // [MQTT-3.1.3-9] the client is back before its will delay passed: no will; unless
                // it starts a clean session, which ends the old one, and with it the delay.
                if connect.clean_start {
                    self.broker.publish_will(&pending.will, pending.username.as_deref());
                }
            }
        }
        BrokerStats::incr(&self.broker.stats.clients_connected);
        info!(peer = %self.peer, client_id = %state.client_id, ?username, protocol = connect.protocol.level(), clean_start = connect.clean_start, persistent = !state.clean, session_present, "client connected");
        let server_keep_alive = self.v5.as_ref().and_then(|_| server_keep_alive(connect.keep_alive, self.broker.config.max_keep_alive));
        // Boxed: it waits across the will's store, in the future every connection holds.
        let properties = self.v5.as_ref().map(|v5| {
            Box::new(v5.connack_properties(&connect, assigned.then_some(&*state.client_id), server_keep_alive, &self.broker.config))
        });
        let (keep_alive, will) = keep_alive_and_will(connect);
        let keep_alive = server_keep_alive.map_or(keep_alive, |seconds| Duration::from_secs(seconds.into()));
        // [MQTT-3.1.2-24] 1.5 times the keep-alive; zero disables it.
        self.keep_alive = (!keep_alive.is_zero()).then(|| keep_alive.mul_f64(1.5));
        let will = Box::pin(store_will(&self.broker, &state.client_id, will, username.as_deref())).await;
        // [MQTT-3.2.2-1..3]
        let properties = properties.map(|p| *p).unwrap_or_default();
        self.queue(Packet::ConnAck(ConnAck { session_present, code: connect_return::ACCEPTED, properties }));
        let end = self.resume(&mut state, session_present, username.as_deref()).await;
        self.broker.stats.clients_connected.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        match &end {
            End::Protocol(..) => {
                BrokerStats::incr(&self.broker.stats.protocol_errors);
                warn!(peer = %self.peer, client_id = %state.client_id, reason = %end, "connection closed");
            }
            End::QueueOverflow => {
                BrokerStats::incr(&self.broker.stats.overflow_disconnects);
                warn!(peer = %self.peer, client_id = %state.client_id, reason = %end, "connection closed");
            }
            _ => info!(peer = %self.peer, client_id = %state.client_id, reason = %end, "connection closed"),
        }
        Box::pin(self.settle_pending_acks(&mut state)).await;
        if let (Some(code), Some(_)) = (end.disconnect_reason(), &self.v5) {
            Box::pin(self.send_disconnect(code, &end)).await;
        }
        if matches!(end, End::Dropped) {
            state.clean = true; // discarded on release (and out of its shared subscriptions now)
        }
        self.hand_over_shared(&mut state);
        if let Some(will) = will {
            self.settle_will(will, &end, &state, username);
        }
        let _ = Box::pin(self.stream.shutdown()).await;
        let expiry = self.v5.as_ref().map(|v5| v5.session_expiry());
        self.broker.sessions.release(generation, state, expiry, &self.broker.router, &self.broker.durable);
    }

    /// The will at the end of a connection: not published after a normal DISCONNECT
    /// [MQTT-3.14.4-3]; otherwise now, or (5.0) after its will delay, at most until the session
    /// would expire [MQTT-3.1.3-9].
    fn settle_will(&self, will: Arc<Message>, end: &End, state: &SessionState, username: Option<String>) {
        let client_id = Arc::clone(&state.client_id);
        if matches!(end, End::Disconnect { will: false }) {
            self.broker.durable.record(StateChange::WillCleared { client_id });
            return;
        }
        let delay = match &self.v5 {
            Some(v5) if !state.clean => Duration::from_secs(u64::from(v5.will_delay.min(v5.session_expiry))),
            _ => Duration::ZERO,
        };
        if delay.is_zero() {
            self.broker.publish_will(&will, username.as_deref());
            self.broker.durable.record(StateChange::WillCleared { client_id });
        } else {
            self.broker.publish_will_later(client_id, username, will, delay);
        }
    }

    /// Tells a 5.0 client why the server closes the connection (§3.14.2.1), with a reason
    /// string.
    async fn send_disconnect(&mut self, code: u8, end: &End) {
        let properties = Properties(vec![Property::ReasonString(end.to_string())]);
        self.queue(Packet::Disconnect(Disconnect { reason: code, properties }));
        let _ = tokio::time::timeout(Duration::from_millis(100), self.flush()).await;
    }

    /// Checks the client id and credentials; answers a refusal itself. Returns the client id
    /// (assigned if the client sent none), the authenticated user name, and for a 5.0 client
    /// whether the id was assigned (a 5.0 client is told it in CONNACK [MQTT-3.2.2-16]).
    async fn accept_identity(&mut self, connect: &Connect) -> Option<(String, Option<String>, bool)> {
        let mut client_id = connect.client_id.clone();
        let mut assigned = false;
        if client_id.is_empty() {
            // [MQTT-3.1.3-8] a 3.1.1 zero-length id needs clean session; 3.1 never allowed it;
            // 5.0 allows it with either clean start [MQTT-3.1.3-6].
            if (!connect.clean_start && !connect.protocol.is_v5()) || connect.protocol == ProtocolVersion::V31 {
                self.refuse(ConnectRefusal::IdentifierRejected).await;
                info!(peer = %self.peer, "empty client id without clean session; refused");
                return None;
            }
            // [MQTT-3.1.3-6] assign a unique id.
            client_id = format!("roost-auto-{}", self.broker.sessions.unique_suffix());
            assigned = true;
        }
        if client_id.chars().count() > MAX_STORED_CLIENT_ID {
            // [MQTT-3.1.3-5] a server may refuse long ids; sessions and wills are stored under it.
            self.refuse(ConnectRefusal::IdentifierRejected).await;
            info!(peer = %self.peer, limit = MAX_STORED_CLIENT_ID, "client id longer than the limit (characters); refused");
            return None;
        }
        let credentials = Credentials {
            peer: self.peer,
            client_id: &client_id,
            username: connect.username.as_deref(),
            password: connect.password.as_deref(),
        };
        match self.broker.auth.authenticate(credentials).await {
            AuthOutcome::Allowed { username } => Some((client_id, username, assigned)),
            refused => {
                BrokerStats::incr(&self.broker.stats.connections_refused);
                let why = match refused {
                    AuthOutcome::BadCredentials => ConnectRefusal::BadUsernameOrPassword,
                    AuthOutcome::Unavailable => ConnectRefusal::ServerUnavailable,
                    _ => ConnectRefusal::NotAuthorized,
                };
                self.refuse(why).await;
                info!(peer = %self.peer, %client_id, ?why, "authentication refused");
                None
            }
        }
    }

    async fn resume(&mut self, state: &mut SessionState, session_present: bool, username: Option<&str>) -> End {
        if session_present {
            // [MQTT-4.4.0-1] resend unacknowledged PUBLISH (DUP set) and PUBREL, in order, as
            // many as the client's receive maximum lets in flight; the rest as room frees up.
            for outbound in state.outbound.iter_mut() {
                outbound.unsent = true;
            }
            self.pending_resends = state.outbound.len();
            self.resend_within_window(state);
        }
        // Clients may send packets right behind their CONNECT, before the CONNACK arrives.
        if let Err(end) = Box::pin(self.handle_input(state, username)).await {
            return end;
        }
        self.heard_from(state);
        self.resize_read_buffer(0);
        loop {
            if let Err(end) = self.release_ready_acks(state) {
                return end;
            }
            if let Err(end) = self.drain_mailbox(state) {
                return end;
            }
            if !self.write_buf.is_empty() {
                if let Err(e) = Box::pin(self.flush()).await {
                    return End::Io(e);
                }
            }
            let window_open = state.outbound.len() < self.inflight_limit();
            let reading = self.pending_acks.len() < self.broker.config.max_pending_acks;
            let mailbox = &state.mailbox;
            let wake = std::future::poll_fn(|cx| self.poll_wake(cx, mailbox, window_open, reading)).await;
            match wake {
                Wake::Alarm(Alarm::TakenOver) => return End::TakenOver,
                Wake::Alarm(Alarm::Overflow) => return End::QueueOverflow,
                Wake::Alarm(Alarm::KeepAliveExpired) => return End::KeepAliveExpired(self.keep_alive.unwrap_or_default()),
                Wake::Alarm(Alarm::Shutdown) => return End::Shutdown,
                Wake::Alarm(Alarm::Dropped) => return End::Dropped,
                Wake::Messages | Wake::Receipt(Ok(())) => {}
                Wake::Receipt(Err(why)) => return End::NotStored(why),
                Wake::Input(Ok(0)) => return End::ClosedByPeer,
                Wake::Input(Ok(n)) => {
                    if let Err(end) = Box::pin(self.handle_input(state, username)).await {
                        return end;
                    }
                    self.heard_from(state);
                    self.resize_read_buffer(n);
                }
                Wake::Input(Err(e)) => return End::Io(e),
            }
        }
    }

    /// Waits for the next thing to do, in this order: an alarm (end now), the receipt of the
    /// oldest unacknowledged publish, input (unless too many acks are pending), queued
    /// messages (while the in-flight window is open).
    fn poll_wake(&mut self, cx: &mut Context<'_>, mailbox: &Mailbox, window_open: bool, reading: bool) -> Poll<Wake> {
        let event = mailbox.poll_event(cx, window_open);
        if let Poll::Ready(MailboxEvent::Alarm(alarm)) = event {
            return Poll::Ready(Wake::Alarm(alarm));
        }
        if self.pending_acks.front_waits() {
            if let Poll::Ready(result) = self.pending_acks.poll_front(cx) {
                return Poll::Ready(Wake::Receipt(result));
            }
        }
        if reading {
            if let Poll::Ready(read) = self.poll_read_input(cx) {
                return Poll::Ready(Wake::Input(read));
            }
        }
        match event {
            Poll::Ready(_) => Poll::Ready(Wake::Messages),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Reads what the client sent into `read_buf`. An idle connection holds no read buffer:
    /// its reads land on the stack, and only the bytes that arrived are copied to the heap.
    /// A client sending fast gets a real buffer to read into (see `resize_read_buffer`).
    fn poll_read_input(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.read_buf.capacity() > self.read_buf.len() {
            return tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read_buf);
        }
        let mut landing = [MaybeUninit::<u8>::uninit(); LANDING];
        let mut buf = ReadBuf::uninit(&mut landing);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
        self.read_buf.extend_from_slice(buf.filled());
        Poll::Ready(Ok(buf.filled().len()))
    }

    /// Keep-alive: the client was heard from just now [MQTT-3.1.2-24].
    fn heard_from(&self, state: &SessionState) {
        if let Some(limit) = self.keep_alive {
            state.mailbox.expect_by(self.broker.clock_ms() + limit.as_millis() as u64);
        }
    }

    /// After input of `last_read` bytes was handled: gives the read buffer back once the
    /// connection is idle again; gives a client that sends fast (a read filled the landing
    /// area, or the buffer) a larger one.
    fn resize_read_buffer(&mut self, last_read: usize) {
        if self.read_buf.is_empty() && last_read < LANDING {
            self.read_buf = BytesMut::new();
        } else if last_read >= LANDING || self.read_buf.capacity() == self.read_buf.len() {
            self.read_buf.reserve(BUSY_BUFFER);
        }
    }

    async fn handle_input(&mut self, state: &mut SessionState, username: Option<&str>) -> Result<(), End> {
        // Only a PUBLISH (and the congestion pause below) is awaited, and no decoded packet is
        // held across that: this future is boxed for every input, and under 1 KiB glibc takes
        // it from the thread's own cache.
        loop {
            let publish = {
                let Some(packet) = decode(&mut self.read_buf, self.version, self.broker.config.max_packet_size)? else { break };
                self.handle_packet(packet, state, username)?
            };
            if let Some(publish) = publish {
                self.handle_publish(publish, state, username).await?;
            }
        }
        // A subscriber we publish to is falling behind: let it catch up before we read more,
        // or one fast publisher starves the subscribers it feeds, whose queues then overflow
        // (QoS 0 dropped, QoS 1/2 subscribers disconnected). Both are bounded: a stuck
        // subscriber slows its publishers only until its queue overflows.
        match std::mem::take(&mut self.congestion) {
            Congestion::None => {}
            Congestion::Filling => tokio::task::yield_now().await,
            Congestion::Reliable => tokio::time::sleep(CONGESTION_PAUSE).await,
        }
        Ok(())
    }

    /// Queues the acknowledgements whose publishes are handled, in arrival order.
    fn release_ready_acks(&mut self, state: &mut SessionState) -> Result<(), End> {
        let mut ready = std::mem::take(&mut self.pending_acks);
        let (unacknowledged, limit) = (ready.pubacks(), self.broker.config.max_pending_acks);
        let result = ready.release_ready(|pending| {
            if let Some((id, hash)) = pending.stored {
                state.stored_qos1.remember(id, hash, unacknowledged, limit);
            }
            self.queue(pending.reply);
            self.push_retained(state, pending.then_retained);
        });
        self.pending_acks = ready;
        result.map_err(End::NotStored)
    }

    /// At the end of a connection, waits (briefly) for publishes still being committed, so that
    /// the session remembers them and a resend after reconnecting is not stored twice. Their
    /// acks are sent if the socket still takes them.
    async fn settle_pending_acks(&mut self, state: &mut SessionState) {
        const SETTLE: Duration = Duration::from_secs(10);
        let settle = async {
            while !self.pending_acks.is_empty() {
                let receipt = std::future::poll_fn(|cx| self.pending_acks.poll_front(cx)).await;
                if receipt.is_err() || self.release_ready_acks(state).is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(SETTLE, settle).await.is_err() {
            warn!(client_id = %state.client_id, "publishes still uncommitted at disconnect; a resend may be stored twice");
        }
        self.pending_acks.clear();
        let _ = tokio::time::timeout(Duration::from_millis(100), self.flush()).await;
    }

    fn queue(&mut self, packet: Packet) {
        if let Err(e) = encode(&packet, self.version, &mut self.write_buf) {
            // Only possible for fields over protocol limits, which nothing we send has.
            warn!(peer = %self.peer, packet = packet.name(), error = %e, "could not encode packet");
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&self.write_buf).await?;
        self.stream.flush().await?;
        if self.write_buf.capacity() > BUSY_BUFFER {
            self.write_buf = BytesMut::new();
        } else {
            self.write_buf.clear();
        }
        Ok(())
    }
}

/// Keeps the will for the end of the connection, and stores it before the CONNACK: if the
/// server dies with this connection, the will is published when the server starts again.
async fn store_will(broker: &Broker, client_id: &Arc<str>, will: Option<Box<LastWill>>, username: Option<&str>) -> Option<Arc<Message>> {
    let will = *will?;
    // The expiry interval starts when the will is published: until then it is kept relative
    // (see `Broker::publish_will`).
    let properties = MessageProperties::from_publish(&will.properties, 0);
    let will = Arc::new(Message { topic: will.topic, payload: will.payload, qos: will.qos, retain: will.retain, properties });
    broker.durable.record(StateChange::WillSet {
        client_id: Arc::clone(client_id),
        username: username.map(Arc::from),
        will: Arc::clone(&will),
    });
    if let Some(committed) = broker.durable.committed() {
        if !matches!(committed.await, Ok(Ok(()))) {
            warn!(client_id = %client_id, "the will could not be stored; it is kept in memory only");
        }
    }
    Some(will)
}

/// The Server Keep Alive a 5.0 client is told (§3.2.2.3.14): the server's maximum when the
/// client asked for more, or for none.
fn server_keep_alive(asked: Duration, max: Duration) -> Option<u16> {
    let max = u16::try_from(max.as_secs()).unwrap_or(u16::MAX);
    (asked.is_zero() || asked.as_secs() > u64::from(max)).then_some(max)
}

/// Keeps what a session needs of its CONNECT, and frees the rest now. (Moving fields out of
/// the box in `run_session` would keep the box allocated until the session ends.)
fn keep_alive_and_will(connect: Box<Connect>) -> (Duration, Option<Box<LastWill>>) {
    let Connect { keep_alive, will, .. } = *connect;
    (keep_alive, will.map(Box::new))
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// Every connection's task holds this future for its whole life: its size is most of what
    /// an idle connection costs (BENCHMARKS.md). A guard against regressions, not a timing.
    #[test]
    fn an_idle_connection_future_stays_small() {
        let broker = Broker::new(Default::default(), super::super::Hooks::none(), Default::default());
        let (stream, _other) = tokio::io::duplex(64);
        let permit = Arc::new(super::super::limits::ConnectionsPerIp::default()).acquire([127, 0, 0, 1].into(), 0).unwrap();
        let future = serve(broker, stream, "127.0.0.1:1".parse().unwrap(), permit);
        let size = std::mem::size_of_val(&future);
        // 480 bytes when this was written, 512 with MQTT 5.0. tokio allocates a task as one
        // 128-byte-aligned cell with its header and trailer: a 480-byte future made a 640-byte
        // task, one of 536 bytes a 768-byte task (measured with massif), so the header and
        // trailer take 105 to 160 bytes and 512 still fits the 640-byte cell.
        assert!(size <= 512, "the connection future grew to {size} bytes");
    }

    /// The size of what `f` returns, without calling it.
    fn returned_size<'a, A: 'a, B: 'a, R>(_: impl FnOnce(&'a mut A, &'a mut B, Option<&'a str>) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Input is handled in a future boxed for every read: glibc serves requests of up to
    /// 1,032 bytes from the thread's own cache, and a larger one first consolidates its free
    /// lists, which a fleet's publishes keep full (BENCHMARKS.md, fleet part 16). 1,488 bytes
    /// when each packet was handled in an async function of its own, 696 since.
    #[test]
    fn the_input_future_stays_in_the_allocators_thread_cache() {
        let size = returned_size(Connection::<tokio::io::DuplexStream>::handle_input);
        assert!(size <= 1024, "handle_input's future grew to {size} bytes");
    }
}
