use std::process::ExitCode;

use clap::Parser;
use rtspgate::config::{Cli, Config};
use rtspgate::Gateway;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_cli(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rtspgate: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let default_filter = match config.verbose {
        0 => "info",
        _ => "info,rtspgate=debug",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rtspgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let gateway = match Gateway::start(&config).await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("rtspgate: {e}");
                return ExitCode::FAILURE;
            }
        };
        for line in gateway.banner(&config) {
            println!("{line}");
        }
        shutdown_signal().await;
        tracing::info!("shutting down");
        drop(gateway);
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
