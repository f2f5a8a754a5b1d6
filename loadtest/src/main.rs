//! `docspot-loadtest`: see the library documentation.

use clap::Parser;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = docspot_loadtest::Args::parse();
    docspot_loadtest::run(args).await?;
    Ok(())
}
