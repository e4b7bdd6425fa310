//! `mqseal`: the command-line tool for devices and administrators.
//!
//! Each group of subcommands lives in its own module; this file only routes.
//! Errors print as `mqseal: error: ...` with their causes, and exit with code 1.

mod admin_cmd;
mod audit_cmd;
mod control_sync;
mod device_cmd;
mod keys_cmd;
mod mqtt_cmd;
mod mqtt_link;
mod push_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mqseal", version, about = "Signed, group-encrypted MQTT for device fleets", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Key generation (devices, the authority, the broker).
    #[command(flatten)]
    Keys(keys_cmd::Commands),
    /// The administrator's realm: devices, groups, policy, bundles.
    #[command(flatten)]
    Admin(admin_cmd::Commands),
    /// What a device does: join, seal, open, publish, subscribe.
    #[command(flatten)]
    Device(device_cmd::Commands),
    /// Reading the audit log.
    #[command(flatten)]
    Audit(audit_cmd::Commands),
    /// MQTT clients that seal and open transparently: pub, sub.
    #[command(flatten)]
    Mqtt(mqtt_cmd::Commands),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys(c) => keys_cmd::run(c),
        Command::Admin(c) => admin_cmd::run(c),
        Command::Device(c) => device_cmd::run(c),
        Command::Audit(c) => audit_cmd::run(c),
        Command::Mqtt(c) => mqtt_cmd::run(c),
    };
    if let Err(error) = result {
        eprintln!("mqseal: error: {error:#}");
        std::process::exit(1);
    }
}
