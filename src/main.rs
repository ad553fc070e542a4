//! The `nimbus` binary: parse flags, set up logging, run the server until a signal arrives.
use clap::Parser;

/// See the README (Performance): a size-segregated allocator keeps every connection's outbox lane
/// next to the other lanes, so a fan-out walks a few pages instead of one per recipient.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = nimbus::Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    actix_web::rt::System::new().block_on(nimbus::server::run(config))?;
    Ok(())
}
