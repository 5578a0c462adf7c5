//! The `tokend` binary: parses the command line and runs a subcommand.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokend::{Tokend, config::ServeArgs, health::Health, telemetry, token};

#[derive(Parser)]
#[command(name = "tokend", version, about = "Issues, verifies, lists, revokes and rotates API tokens over gRPC.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server.
    Serve(Box<ServeArgs>),
    /// Measure Verify against Health/Check, durable writes and start-up on
    /// a throwaway store of synthetic tokens.
    Bench(tokend::loadgen::BenchArgs),
    /// Offline token utilities.
    #[command(subcommand)]
    Token(TokenCommand),
    #[command(flatten)]
    Client(tokend::cli::ClientCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a fresh, well-formed token (e.g. for --bootstrap-token-file).
    Generate {
        /// Token prefix.
        #[arg(long, env = "TOKEND_TOKEN_PREFIX", default_value = token::DEFAULT_PREFIX)]
        prefix: String,
    },
    /// Print the token that --bootstrap-token-seed-file makes of a seed.
    FromSeed {
        /// File holding the 43-character seed (`-` for standard input).
        #[arg(long, default_value = "-")]
        file: std::path::PathBuf,
        /// Token prefix (as the server's --token-prefix).
        #[arg(long, env = "TOKEND_TOKEN_PREFIX", default_value = token::DEFAULT_PREFIX)]
        prefix: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Client(command) = cli.command {
        // The client has exit codes of its own (see `tokend::cli`).
        return tokend::cli::run(command);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokend: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Token(TokenCommand::Generate { prefix }) => {
            token::validate_prefix(&prefix).map_err(|_| {
                anyhow::anyhow!("--prefix {prefix:?}: must be 1-16 of [a-z0-9], starting with a letter")
            })?;
            println!("{}", token::Secret::generate(&prefix).expose());
            Ok(())
        }
        Command::Client(_) => unreachable!("handled in main"),
        Command::Bench(args) => tokend::loadgen::run(&args).map_err(|e| anyhow::anyhow!(e)),
        Command::Token(TokenCommand::FromSeed { file, prefix }) => {
            let seed = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read the seed from stdin")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?
            };
            let token = token::Secret::from_body(&prefix, seed.trim()).map_err(|_| {
                anyhow::anyhow!("the seed must be 43 characters of [A-Za-z0-9]; the prefix 1-16 of [a-z0-9]")
            })?;
            println!("{}", token.expose());
            Ok(())
        }
        Command::Serve(mut args) => {
            telemetry::init(args.log_format);
            args.bootstrap_token = std::env::var("TOKEND_BOOTSTRAP_TOKEN").ok();
            let addresses = Addresses {
                grpc: args.listen,
                admin: args.admin_listen,
                metrics: args.metrics_listen,
                health: args.health_listen,
            };
            let config = args.into_config().map_err(anyhow::Error::msg)?;
            tokio::runtime::Runtime::new().context("cannot start the async runtime")?.block_on(serve(addresses, config))
        }
    }
}

/// The addresses to serve on, from the flags.
struct Addresses {
    grpc: std::net::SocketAddr,
    admin: Option<std::net::SocketAddr>,
    metrics: Option<std::net::SocketAddr>,
    health: Option<std::net::SocketAddr>,
}

/// Serves health checks (NOT_SERVING) from the start, opens the store, then
/// binds and serves everything until SIGTERM or SIGINT.
async fn serve(addresses: Addresses, config: tokend::Config) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let health = Health::starting().await;
    // Up before the store opens, so probes get an answer (NOT_SERVING)
    // while a replica waits for its database or loads its tokens.
    let (stop_health, health_stopped) = tokio::sync::oneshot::channel::<()>();
    let health_task = match bind_optional(addresses.health, "--health-listen").await? {
        Some(listener) => {
            let addr = listener.local_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string());
            tracing::info!(addr = %addr, "serving health checks (plaintext)");
            let (health, limits) = (health.clone(), config.limits.clone());
            Some(tokio::spawn(async move {
                health
                    .serve_alone(listener, &limits, async {
                        let _ = health_stopped.await;
                    })
                    .await
            }))
        }
        None => None,
    };
    let mut tokend = Tokend::open_reporting(config, health).await?;
    if let Some(secret) = tokend.take_bootstrap_secret() {
        print_bootstrap_banner(&secret);
    }
    let listeners = tokend::server::Listeners {
        grpc: bind(addresses.grpc, "--listen").await?,
        admin: bind_optional(addresses.admin, "--admin-listen").await?,
        metrics: bind_optional(addresses.metrics, "--metrics-listen").await?,
        health: None, // served above since start-up
    };
    let served = tokend.serve_on(listeners, shutdown).await;
    let _ = stop_health.send(());
    if let Some(task) = health_task {
        task.await.context("health server task")?.context("health server")?;
    }
    served?;
    Ok(())
}

async fn bind(addr: std::net::SocketAddr, flag: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} ({flag})"))
}

async fn bind_optional(
    addr: Option<std::net::SocketAddr>,
    flag: &str,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    match addr {
        Some(addr) => bind(addr, flag).await.map(Some),
        None => Ok(None),
    }
}

/// The one place a secret is printed outside a gRPC response: the generated
/// first admin token, on stderr, once.
fn print_bootstrap_banner(secret: &token::Secret) {
    eprintln!(
        "\n\
         ================================================================================\n\
         tokend: a bootstrap admin token was generated. It is shown only this once.\n\
         \n    {}\n\n\
         Use it as `authorization: Bearer <token>` for TokenService calls. Mint your own\n\
         admin token (scope tokend.admin), then revoke this one.\n\
         ================================================================================\n",
        secret.expose()
    );
}

/// Registers for SIGTERM and SIGINT at once — before the store is opened,
/// so a signal during start-up ends in a graceful stop rather than the
/// default kill — and returns a future that resolves on either.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
        }
    })
}
