//! The `dispatchd` command: configuration, then serve or migrate.

use clap::{Parser, Subcommand};
use dispatchd::app::{self, ServeOptions};
use dispatchd::settings::Settings;
use dispatchd::{store, telemetry};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "dispatchd",
    version,
    about = "Real-time dispatch engine for food delivery"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine.
    Serve {
        /// Load the demo city and accounts into an empty store.
        #[arg(long)]
        demo: bool,
        /// Address to listen on (host:port); port 0 picks a free one.
        #[arg(long)]
        listen: Option<String>,
        /// postgres://... or sqlite:PATH (default: DATABASE_URL, else sqlite:var/dispatchd.db).
        #[arg(long)]
        database_url: Option<String>,
        /// A TOML file layered over config/default.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the database migrations and exit.
    Migrate {
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Simulate a city (drivers, customers, restaurants) against a running
    /// server, over its public API, and report what clients measured.
    Sim(dispatchd::sim::SimArgs),
    /// Replay a Meal Delivery Routing Problem instance in simulated time
    /// through the engine's dispatch round, and write its solution files.
    Replay(dispatchd::replay::ReplayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dispatchd: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("dispatchd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            demo,
            listen,
            database_url,
            config,
        } => {
            let settings = Settings::load(config.as_deref())?;
            telemetry::init_logs(&settings.log);
            app::serve(
                settings,
                ServeOptions {
                    demo,
                    listen,
                    database_url,
                },
            )
            .await
        }
        Command::Migrate {
            database_url,
            config,
        } => {
            let settings = Settings::load(config.as_deref())?;
            telemetry::init_logs(&settings.log);
            store::migrate(&app::store_options(&settings, database_url.as_deref())).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Sim(args) => dispatchd::sim::run(args).await,
        // CPU-bound and synchronous: off the runtime's worker threads.
        Command::Replay(args) => tokio::task::spawn_blocking(move || dispatchd::replay::run(args))
            .await
            .map_err(|e| anyhow::anyhow!("the replay stopped: {e}"))?,
    }
}
