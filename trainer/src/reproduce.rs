//! `reproduce`.
use anyhow::Result;
use clap::Args;

/// All three.
#[derive(Args, Debug)]
pub struct ReproduceArgs {}

pub fn run(_args: &ReproduceArgs) -> Result<()> {
    Ok(())
}
