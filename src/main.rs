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
    raise_fd_limit();

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
        run_until_shutdown(&gateway, &cli).await;
        tracing::info!("shutting down");
        drop(gateway);
        ExitCode::SUCCESS
    })
}

/// Serves until SIGINT/SIGTERM; SIGHUP reloads the config file's paths,
/// `[auth]` and the TLS certificate files.
async fn run_until_shutdown(gateway: &Gateway, cli: &Cli) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            let shutdown = shutdown_signal();
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = hup.recv() => {
                        if cli.config.is_none() {
                            tracing::warn!("SIGHUP: no config file in use, nothing to reload");
                            continue;
                        }
                        match gateway.reload(cli) {
                            Ok(s) => tracing::info!(
                                added = ?s.added, changed = ?s.changed, removed = ?s.removed,
                                unchanged = s.unchanged.len(), "configuration reloaded"
                            ),
                            Err(e) => tracing::error!("configuration not reloaded: {e}"),
                        }
                    }
                }
            }
        }
    }
    shutdown_signal().await;
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

/// Raises the soft limit on open files to the hard limit: every reader,
/// camera and HTTP client holds a descriptor, and the usual soft limit of
/// 1024 would turn the 1025th into a refused accept.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let before = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                tracing::debug!("open-file limit raised from {before} to {}", lim.rlim_cur);
            }
        }
    }
}
