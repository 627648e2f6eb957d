use anyhow::Context;
use golive_server::config::Config;
use std::io::{IsTerminal, Write};
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// Our own crates at info; the `rtc` stack logs every peer's state changes at info, warns for
/// every datagram its pipeline refuses (so a peer sending garbage could flood the log: golive
/// counts those instead), and `rtc_dtls` warns 18 times per Chromium handshake about DTLS 1.3
/// extensions it ignores (the handshake falls back to DTLS 1.2), so those stay at error.
const DEFAULT_LOG_FILTER: &str =
    "warn,golive=info,golive_server=info,golive_sfu=info,rtc=error,rtc_dtls=error";
/// After the drain timeout, HTTP connections get this long to finish before the process exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::load()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        workers = config.worker_count(),
        "golive {}",
        env!("CARGO_PKG_VERSION")
    );

    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = signalled_rx.await;
    };
    let state = golive_server::start_media(&config)?;
    let drain_timeout = state.lifecycle.drain_timeout();
    #[cfg(unix)]
    {
        // SIGHUP re-reads the stream keys.
        let reload_state = state.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match reload_state.keys.reload() {
                    Ok(n) => tracing::info!(streams = n, "stream keys reloaded"),
                    Err(e) => tracing::error!("stream keys not reloaded, the old ones stay: {e}"),
                }
            }
        });
    }
    let mut server = tokio::spawn(golive_server::serve(state, listener, shutdown));
    // Scripts and tests wait for this line on stdout.
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;

    tokio::select! {
        r = &mut server => return r.context("server task")?,
        _ = shutdown_signal() => {}
    }
    let _ = signalled_tx.send(());
    let limit = drain_timeout + SHUTDOWN_GRACE;
    match tokio::time::timeout(limit, server).await {
        Ok(r) => r.context("server task")?,
        Err(_) => {
            tracing::warn!("connections did not close in {limit:?}; exiting");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
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
