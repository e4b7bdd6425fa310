//! `mqseal`: the command-line tool for devices and administrators.

use clap::Parser;

#[derive(Parser)]
#[command(name = "mqseal", version, about = "Signed, group-encrypted MQTT for device fleets")]
enum Command {}

fn main() {
    let _ = Command::parse();
}
