//! login-bench: a fleet reconnecting at once with passwords (boards after a power cut). Starts
//! `roost serve` with logins on and a user per board (`board-N`, or with `--shared-user` all as
//! the first admin), then `--boards` clients connect together, each the way PubSubClient does: CONNECT, wait `--connack-timeout` for the CONNACK, and on a
//! timeout or a refusal close, wait `--retry-after` and try again. Prints, per binary given with
//! `--roost` (runs alternate), how many were logged in at each mark, when the last one was, how
//! many CONNECTs it took, and Roost's CPU time. With `--reconnect`, the boards then all drop
//! their connections and reconnect at once to the same server (a Wi-Fi outage, a router
//! restarting): a second row.
//!
//! `--cpus 0` pins Roost to one core (`taskset`) to play a slower machine: a Raspberry Pi
//! checks about a dozen Argon2id passwords a second.
//!
//! `cargo build --release -p roost -p roost-benchmarks && target/release/login-bench --boards 2000 --cpus 0`

mod cpu;
mod launch;

use anyhow::{bail, Context};
use bytes::BytesMut;
use clap::Parser;
use mqtt_codec::{decode, encode, Connect, Packet, Properties, ProtocolVersion};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

#[derive(Debug, Parser)]
struct Args {
    /// Boards reconnecting at once.
    #[arg(long, default_value_t = 2_000)]
    boards: usize,
    /// Seconds a board waits for its CONNACK (PubSubClient's MQTT_SOCKET_TIMEOUT: 15).
    #[arg(long, default_value_t = 15)]
    connack_timeout: u64,
    /// Seconds a board waits before trying again (the PubSubClient examples: 5).
    #[arg(long, default_value_t = 5)]
    retry_after: u64,
    /// Seconds after which a run ends with whoever is logged in by then.
    #[arg(long, default_value_t = 180)]
    give_up: u64,
    /// Runs per binary.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Every board logs in as the first admin (one user for the fleet), not as its own user.
    #[arg(long)]
    shared_user: bool,
    /// After the fleet is in, drop every connection and reconnect at once (a second row).
    #[arg(long)]
    reconnect: bool,
    /// Pin Roost to these CPUs (`taskset -c`), e.g. `0` for one core.
    #[arg(long)]
    cpus: Option<String>,
    /// The roost binaries to compare (default: the one next to this one).
    #[arg(long)]
    roost: Vec<PathBuf>,
}

/// Seconds into a run at which the table says how many are logged in.
const MARKS: [u64; 5] = [15, 30, 60, 120, 180];

struct Server {
    child: Child,
    mqtt: SocketAddr,
    password: String,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start(bin: &PathBuf, cpus: Option<&str>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mqtt: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(["serve", "--max-connections-per-ip", "0", "--mqtt-listen", &mqtt.to_string()])
            .args(["--mqtt-ws-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("RUST_LOG", std::env::var("BENCH_ROOST_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let limit = Duration::from_secs(20);
        let deadline = Instant::now() + limit;
        launch::wait_listening(mqtt, "roost", limit).await?;
        // The first start's admin password (written as it starts, around when it listens).
        let file = dir.path().join("roost-admin-password");
        while !file.exists() {
            if Instant::now() > deadline {
                bail!("roost wrote no {}", file.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let password = std::fs::read_to_string(&file)?.trim().to_owned();
        Ok(Self { child, mqtt, password, dir })
    }

    /// Adds the users `board-0` … with passwords `secret-0` … (each hashed with its own salt,
    /// on this process's cores, before the clock starts).
    async fn add_board_users(&self, boards: usize) -> anyhow::Result<()> {
        let url = roost::store::DatabaseUrl::new(format!("sqlite://{}", self.dir.path().join("roost.db").display()));
        let store = Arc::new(roost::store::Store::open(&url).await?);
        let adding = Arc::new(tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));
        let mut tasks = Vec::new();
        for n in 0..boards {
            let (store, adding) = (Arc::clone(&store), Arc::clone(&adding));
            tasks.push(tokio::spawn(async move {
                let _turn = adding.acquire().await?;
                let hash = roost::auth::password::hash(format!("secret-{n}")).await?;
                store.create_user(&format!("board-{n}"), &hash, false).await.map_err(|e| anyhow::anyhow!("adding board-{n}: {e}"))
            }));
        }
        for task in tasks {
            task.await??;
        }
        store.close().await;
        Ok(())
    }
}

/// The user and password board `n` logs in with.
#[derive(Clone)]
enum Logins {
    /// The first admin's, for every board.
    Shared(Arc<String>),
    /// `board-N` / `secret-N`.
    PerBoard,
}

impl Logins {
    fn of(&self, n: usize) -> (String, String) {
        match self {
            Logins::Shared(password) => ("admin".to_owned(), password.to_string()),
            Logins::PerBoard => (format!("board-{n}"), format!("secret-{n}")),
        }
    }
}

/// How one board got in: when (since the start), after how many CONNECTs, and its connection
/// (kept open until the run ends, as a board's would be); `None` if it had not by the end.
type LoggedIn = (Option<(Duration, TcpStream)>, u32);

/// One board: connects until it is logged in or the run ends.
async fn board(mqtt: SocketAddr, n: usize, logins: Logins, args: Arc<Args>, started: Instant) -> LoggedIn {
    let (user, password) = logins.of(n);
    let end = started + Duration::from_secs(args.give_up);
    let mut attempts = 0;
    while Instant::now() < end {
        attempts += 1;
        let wait = Duration::from_secs(args.connack_timeout).min(end.saturating_duration_since(Instant::now()));
        if let Ok(Ok(Some(connection))) = tokio::time::timeout(wait, log_in(mqtt, n, &user, &password)).await {
            return (Some((started.elapsed(), connection)), attempts);
        }
        // Refused, timed out or closed: the connection is dropped; try again later.
        tokio::time::sleep(Duration::from_secs(args.retry_after)).await;
    }
    (None, attempts)
}

/// One CONNECT; the connection if the CONNACK let it in.
async fn log_in(mqtt: SocketAddr, n: usize, user: &str, password: &str) -> anyhow::Result<Option<TcpStream>> {
    let mut stream = TcpStream::connect(mqtt).await?;
    let connect = Packet::Connect(Connect {
        protocol: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: Duration::ZERO,
        client_id: format!("board-{n}"),
        will: None,
        username: Some(user.into()),
        password: Some(password.as_bytes().to_vec().into()),
        properties: Properties::default(),
    });
    let mut out = BytesMut::new();
    encode(&connect, ProtocolVersion::V311, &mut out)?;
    stream.write_all(&out).await?;
    let mut buf = BytesMut::new();
    loop {
        if let Some(packet) = decode(&mut buf, ProtocolVersion::V311, usize::MAX)? {
            let Packet::ConnAck(ack) = packet else { bail!("{packet:?} before the CONNACK") };
            return Ok((ack.code == 0).then_some(stream));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(None);
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.roost.is_empty() {
        args.roost.push(launch::roost_binary(None)?);
    }
    let args = Arc::new(args);
    println!(
        "{} boards ({}), CONNACK timeout {} s, retry after {} s{}",
        args.boards,
        if args.shared_user { "one user for all" } else { "a user each" },
        args.connack_timeout,
        args.retry_after,
        args.cpus.as_deref().map(|c| format!(", Roost on CPUs {c}")).unwrap_or_default()
    );
    let marks: Vec<String> = MARKS.iter().filter(|&&m| m <= args.give_up).map(|m| format!("in by {m} s")).collect();
    println!("| roost | run | {} | all in after | CONNECTs | Roost CPU s |", marks.join(" | "));
    println!("|---|---|{}---|---|---|", "---|".repeat(marks.len()));
    for run in 1..=args.runs {
        for bin in &args.roost {
            let mut server = Server::start(bin, args.cpus.as_deref()).await?;
            let pid = server.child.id().context("roost exited")?;
            let logins = if args.shared_user {
                Logins::Shared(Arc::new(server.password.clone()))
            } else {
                server.add_board_users(args.boards).await?;
                Logins::PerBoard
            };
            let rounds = if args.reconnect { ["first", "again"].as_slice() } else { ["first"].as_slice() };
            for round in rounds {
                let cpu_before = cpu::cpu_time(pid)?;
                let started = Instant::now();
                let boards: Vec<_> =
                    (0..args.boards).map(|n| tokio::spawn(board(server.mqtt, n, logins.clone(), Arc::clone(&args), started))).collect();
                let mut results = Vec::with_capacity(boards.len());
                for b in boards {
                    results.push(b.await?);
                }
                let cpu = cpu::cpu_time(pid)?.saturating_sub(cpu_before);
                let times: Vec<Option<Duration>> = results.iter().map(|(at, _)| at.as_ref().map(|(t, _)| *t)).collect();
                let by = |secs: u64| times.iter().filter(|t| t.is_some_and(|t| t <= Duration::from_secs(secs))).count();
                let counts: Vec<String> = MARKS.iter().filter(|&&m| m <= args.give_up).map(|&m| by(m).to_string()).collect();
                let all_in = match times.iter().copied().collect::<Option<Vec<_>>>() {
                    Some(times) => format!("{:.1} s", times.iter().max().copied().unwrap_or_default().as_secs_f64()),
                    None => format!("not all ({} of {})", times.iter().flatten().count(), args.boards),
                };
                let connects: u32 = results.iter().map(|(_, n)| n).sum();
                println!(
                    "| {} | {run} {round} | {} | {all_in} | {connects} | {:.1} |",
                    bin.display(),
                    counts.join(" | "),
                    cpu.as_secs_f64()
                );
                // Every board's connection drops here; the server sees them go before the next round.
                drop(results);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            server.child.start_kill()?;
            server.child.wait().await?;
        }
    }
    Ok(())
}
