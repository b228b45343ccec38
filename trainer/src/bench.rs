//! `kernel-bench` and `rnn-bench`.
use anyhow::Result;
use clap::Args;

/// Table 1.
#[derive(Args, Debug)]
pub struct KernelBenchArgs {}
/// Table 2.
#[derive(Args, Debug)]
pub struct RnnBenchArgs {}

pub fn kernel_bench(_args: &KernelBenchArgs) -> Result<()> {
    Ok(())
}
pub fn rnn_bench(_args: &RnnBenchArgs) -> Result<()> {
    Ok(())
}
