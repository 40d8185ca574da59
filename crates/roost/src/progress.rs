//! Counters shared by Roost's client tools (`simulate`, `bench`) and their live progress
//! display: one redrawn line on a terminal, a plain line every few seconds otherwise.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct Counters {
    /// Publishes written to the broker.
    pub sent: AtomicU64,
    /// QoS 1/2 publishes the broker acknowledged (PUBACK / PUBCOMP).
    pub acked: AtomicU64,
    /// Connection failures and refused connections.
    pub errors: AtomicU64,
    /// Readings that were simulated sensor faults.
    pub glitches: AtomicU64,
    /// Clients currently connected.
    pub connected: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// One line: sent, acknowledged, acknowledgement rate over the last interval, errors.
    /// The final line leaves out who is connected: by then nobody is.
    fn line(&self, label: &str, clients: u64, rate: f64, last: bool) -> String {
        let get = Self::get;
        let mut line = format!(
            "{label}: sent {} · acked {} · {} /s · errors {}",
            group(get(&self.sent)),
            group(get(&self.acked)),
            group(rate.round() as u64),
            get(&self.errors),
        );
        if !last {
            line.push_str(&format!(" · connected {}/{clients}", get(&self.connected)));
        }
        let glitches = get(&self.glitches);
        if glitches > 0 {
            line.push_str(&format!(" · glitches {}", group(glitches)));
        }
        line
    }
}

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Reports `counters` on stderr until `stop` is cancelled, then prints a final line. The rate
/// counts acknowledgements, or sends when `rate_of_sent` (QoS 0 has no acknowledgements): over
/// the last interval while running, over the whole run in the final line.
pub fn spawn_reporter(
    counters: Arc<Counters>,
    label: &'static str,
    clients: u64,
    rate_of_sent: bool,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal { Duration::from_millis(500) } else { Duration::from_secs(5) };
    tokio::spawn(async move {
        let counted = |c: &Counters| Counters::get(if rate_of_sent { &c.sent } else { &c.acked });
        let first = (Instant::now(), counted(&counters));
        let mut last = first;
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await;
        loop {
            let stopped = tokio::select! {
                _ = ticker.tick() => false,
                _ = stop.cancelled() => true,
            };
            let now = (Instant::now(), counted(&counters));
            // The final line gives the average over the whole run.
            let since = if stopped { first } else { last };
            let rate = (now.1 - since.1) as f64 / now.0.duration_since(since.0).as_secs_f64().max(1e-3);
            last = now;
            let line = counters.line(label, clients, rate, stopped);
            let mut err = std::io::stderr().lock();
            // Write errors on stderr are not worth failing the run for.
            let _ = if terminal { write!(err, "\r\x1b[2K{line}") } else { writeln!(err, "{line}") };
            if stopped {
                if terminal {
                    let _ = writeln!(err);
                }
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
    }

    #[test]
    fn the_line_shows_every_counter() {
        let counters = Counters::default();
        Counters::add(&counters.sent, 1500);
        Counters::add(&counters.acked, 1499);
        Counters::add(&counters.connected, 3);
        let line = counters.line("sim", 3, 41.6, false);
        assert_eq!(line, "sim: sent 1,500 · acked 1,499 · 42 /s · errors 0 · connected 3/3");
        assert_eq!(counters.line("sim", 3, 0.0, true), "sim: sent 1,500 · acked 1,499 · 0 /s · errors 0");
    }
}
