//! The `roost` binary: parses the command line, sets up logging and signals, runs a command.

use clap::{CommandFactory, FromArgMatches};
use roost::app::App;
use roost::cli::{Cli, Command};
use roost::progress::{spawn_reporter, Counters};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Errors reach people as `error: what: why` on standard error, whatever `RUST_BACKTRACE`
/// says (backtraces are for panics, which are bugs). Exit status 2 for invalid settings, as
/// for a bad flag; 1 for everything else.
fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(e) => {
            // Not `eprintln!`, which panics when standard error is closed.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            if e.downcast_ref::<roost::settings::SettingsError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn try_main() -> anyhow::Result<ExitCode> {
    // The local UTC offset (for the simulator's day/night cycle) can only be read safely while
    // the process has a single thread, so before the runtime starts.
    let utc_offset_secs = time::UtcOffset::current_local_offset().map_or(0, |o| o.whole_seconds());
    // A log line that cannot be written (standard error closed: a pipe whose reader is gone)
    // is dropped. tracing-subscriber would report it with `eprintln!`, which panics there, in
    // whichever task logged: every connection, and the shutdown.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn")))
        .init();
    let (args, warnings) =
        roost::cli::renamed::upgrade_command_line(&Cli::command(), std::env::args_os().collect(), |name| std::env::var_os(name));
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let matches = Cli::command().try_get_matches_from(&args).unwrap_or_else(|e| exit_on_clap_error(e, &args));
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli, matches, utc_offset_secs))
}

/// Exits as clap would for `error`, but a value from a `ROOST_*` variable that does not parse
/// is named by its variable, on one line (clap names the flag, which was not given, and adds a
/// hint to try --help): `error: invalid value 'abc' for ROOST_RETENTION (environment variable
/// for --retention): …`.
fn exit_on_clap_error(error: clap::Error, args: &[std::ffi::OsString]) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(error.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        if let Some(ContextValue::String(named)) = error.get(ContextKind::InvalidArg) {
            // `--retention <RETENTION>`: the flag, looked up among the subcommands' arguments
            // (a long name has the same variable wherever it is used).
            let long = named.split_whitespace().next().unwrap_or_default().trim_start_matches("--");
            let given_as_flag =
                args.iter().any(|a| a.to_str().is_some_and(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}="))));
            let env = Cli::command()
                .get_subcommands()
                .flat_map(|sub| sub.get_arguments().cloned().collect::<Vec<_>>())
                .find(|arg| arg.get_long() == Some(long))
                .and_then(|arg| arg.get_env().map(|env| env.to_os_string()));
            if let (false, Some(env)) = (given_as_flag, env) {
                if std::env::var_os(&env).is_some() {
                    let text = error.to_string();
                    let mut lines = text.lines();
                    let first = lines.next().unwrap_or_default();
                    let named_in_text = format!("'{named}'");
                    let line = first.replacen(&named_in_text, &format!("{} (environment variable for --{long})", env.to_string_lossy()), 1);
                    let _ = writeln!(std::io::stderr(), "{line}");
                    // What clap adds but its hint to try --help: `[possible values: …]`, a tip.
                    for more in lines.filter(|l| !l.trim().is_empty() && !l.starts_with("For more information")) {
                        let _ = writeln!(std::io::stderr(), "{more}");
                    }
                    std::process::exit(2);
                }
            }
        }
    }
    error.exit()
}

/// Whether `id` was given on the command line or in its environment variable (not a default).
fn given(matches: Option<&clap::ArgMatches>, id: &str) -> bool {
    use clap::parser::ValueSource;
    matches
        .filter(|m| m.try_contains_id(id).is_ok())
        .and_then(|m| m.value_source(id))
        .is_some_and(|s| matches!(s, ValueSource::CommandLine | ValueSource::EnvVariable))
}

/// Points the client commands at the `roost serve` running from their data directory when
/// their broker or database was not given; without a running server, the database defaults to
/// the data directory's `roost.db`.
fn use_running_server(command: &mut Command, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    use roost::cli::{DatabaseArgs, TokenCommand, UserCommand};
    let sub = matches.subcommand().map(|(_, m)| m);
    let nested = sub.and_then(|m| m.subcommand()).map(|(_, m)| m);
    let (dir, broker, db) = match command {
        Command::Simulate(args) => (args.dir.data_dir.clone(), Some(&mut args.client.url), None),
        Command::Bench(args) => (args.db.dir.data_dir.clone(), Some(&mut args.client.url), Some(&mut args.db)),
        Command::User(command) => match command {
            UserCommand::Add { db, .. }
            | UserCommand::List { db }
            | UserCommand::Remove { db, .. }
            | UserCommand::Passwd { db, .. }
            | UserCommand::Grant { db, .. }
            | UserCommand::Revoke { db, .. } => (db.dir.data_dir.clone(), None, Some(db)),
        },
        Command::Token(command) => match command {
            TokenCommand::Create { db, .. } | TokenCommand::List { db } | TokenCommand::Revoke { db, .. } => {
                (db.dir.data_dir.clone(), None, Some(db))
            }
        },
        Command::Migrate(db) => (db.dir.data_dir.clone(), None, Some(db)),
        Command::Export(args) => (args.db.dir.data_dir.clone(), None, Some(&mut args.db)),
        Command::Import(args) => (args.db.dir.data_dir.clone(), None, Some(&mut args.db)),
        Command::Serve(_) => return Ok(()),
    };
    let database_given = given(nested.or(sub), "database");
    let broker = broker.filter(|_| !given(sub, "url"));
    let db = db.filter(|_| !database_given);
    if broker.is_none() && db.is_none() {
        return Ok(());
    }
    let Some((server, file)) = roost::running::RunningServer::find(&dir) else {
        if let Some(db) = db {
            db.database = DatabaseArgs::default_in(&dir);
        }
        return Ok(());
    };
    if let Some(url) = broker {
        *url = server.mqtt.parse().map_err(|e: String| anyhow::anyhow!("{}: mqtt: {e}", file.display()))?;
        tracing::info!(broker = %url, file = %file.display(), "using the running server's broker");
    }
    if let Some(db) = db {
        db.database = roost::store::DatabaseUrl::new(server.database.clone());
        tracing::info!(database = %db.database, file = %file.display(), "using the running server's database");
    }
    Ok(())
}

async fn run(mut cli: Cli, matches: clap::ArgMatches, utc_offset_secs: i32) -> anyhow::Result<ExitCode> {
    use_running_server(&mut cli.command, &matches)?;
    match cli.command {
        Command::Serve(args) => {
            let serve_matches = matches.subcommand_matches("serve").expect("serve was parsed");
            let settings = roost::settings::Settings::from_command_line(*args, serve_matches)?;
            let shutdown = CancellationToken::new();
            cancel_on_signal(shutdown.clone())?;
            let app = App::build(&settings).await?.with_utc_offset(utc_offset_secs);
            app.run_until_stopped(shutdown).await?;
        }
        Command::Migrate(args) => {
            args.create_directories().await?;
            let store = roost::store::Store::connect(&args.database).await?;
            let version = store.migrate().await?;
            store.close().await;
            tracing::info!(database = %args.database, version, "schema is up to date");
        }
        Command::Simulate(args) => {
            let config = roost::sim::FleetConfig::from_args(&args, utc_offset_secs);
            let stop = CancellationToken::new();
            cancel_on_signal(stop.clone())?;
            if let Some(duration) = args.duration {
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(duration).await;
                    stop.cancel();
                });
            }
            tracing::info!(
                broker = %config.client.url,
                boards = config.boards,
                owner = config.owner,
                seed = config.seed,
                "simulating boards; Ctrl-C stops"
            );
            let counters = Arc::new(Counters::default());
            let qos0 = config.qos == rumqttc::QoS::AtMostOnce;
            let report = CancellationToken::new();
            let reporter = spawn_reporter(Arc::clone(&counters), "simulate", config.boards as u64, qos0, report.clone());
            let result = roost::sim::run(config, Arc::clone(&counters), stop).await;
            report.cancel();
            let _ = reporter.await;
            result?;
            let load = |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
            let delivered = load(if qos0 { &counters.sent } else { &counters.acked });
            if delivered == 0 && load(&counters.errors) > 0 {
                anyhow::bail!(
                    "nothing was {}: the connections failed, or the broker refused the publishes (see above)",
                    if qos0 { "sent" } else { "acknowledged" }
                );
            }
        }
        Command::Bench(args) => {
            let config = roost::bench::BenchConfig::from_args(&args);
            let stop = CancellationToken::new();
            cancel_on_signal(stop.clone())?;
            tracing::info!(
                broker = %config.client.url,
                database = %config.database,
                clients = config.clients,
                readings = config.count,
                "benchmarking; every acknowledged reading is verified in the database afterwards"
            );
            let counters = Arc::new(Counters::default());
            let report = CancellationToken::new();
            let reporter = spawn_reporter(Arc::clone(&counters), "bench", config.clients as u64, false, report.clone());
            let result = roost::bench::run(config, counters, stop).await;
            report.cancel();
            let _ = reporter.await;
            let result = result?;
            // Not `print!`, which panics when standard output is closed.
            anyhow::Context::context(write!(std::io::stdout(), "{result}"), "writing to standard output")?;
            if !result.passed() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Export(args) => roost::transfer::run_export(args).await?,
        Command::Import(args) => roost::transfer::run_import(args).await?,
        Command::User(command) => roost::auth::accounts::run(command).await?,
        Command::Token(command) => roost::auth::accounts::run_token(command).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM. The handlers are installed before this returns:
/// a signal that arrives right after the server says it is ready (a supervisor, a script) must
/// find them, not the default action that kills the process.
fn cancel_on_signal(shutdown: CancellationToken) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut term, mut interrupt) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::info!("signal received");
            shutdown.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("signal received");
        shutdown.cancel();
    });
    Ok(())
}
