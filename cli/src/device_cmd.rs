//! (filled in by the issue that owns these subcommands)

#[derive(clap::Subcommand)]
pub enum Commands {}

pub fn run(command: Commands) -> anyhow::Result<()> {
    match command {}
}
