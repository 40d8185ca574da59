//! The `roost` binary: parses the command line, sets up logging and signals, runs the app.

use clap::{CommandFactory, FromArgMatches};
use roost::app::App;
use roost::cli::{Cli, Command};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Serve(mut args) => {
            if let Some(path) = args.config.clone() {
                let serve_matches = matches.subcommand_matches("serve").expect("serve was parsed");
                roost::config_file::ConfigFile::load(&path)?.apply(&mut args, serve_matches, &path)?;
            }
            let app = App::build(&args).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            app.run_until_stopped(shutdown).await
        }
        Command::Migrate(args) => {
            let store = roost::store::Store::connect(&args.database).await?;
            let version = store.migrate().await?;
            store.close().await;
            tracing::info!(database = %args.database, version, "schema is up to date");
            Ok(())
        }
    }
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("signal received");
    shutdown.cancel();
}
