//! Reads the broker's own configuration file for the one setting the worker
//! path depends on (`max_queued_messages`; why: mqseal_core::broker::mosquitto_conf).
//! The broker is this process: its file is the `-c` / `--config-file`
//! argument of its command line, read as Mosquitto reads it.

use std::path::{Path, PathBuf};

use mqseal_core::broker::mosquitto_conf::{effective_max_queued_messages, DEFAULT_MAX_QUEUED_MESSAGES};

/// The broker's `max_queued_messages`; `Err` says why it could not be read.
pub fn max_queued_messages() -> Result<i64, String> {
    let Some(file) = config_file()? else { return Ok(DEFAULT_MAX_QUEUED_MESSAGES) };
    let main = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Ok(effective_max_queued_messages(&main, |dir| conf_files(Path::new(dir))))
}

/// The configuration file on the broker's command line (None: it runs on defaults).
fn config_file() -> Result<Option<PathBuf>, String> {
    let cmdline = std::fs::read("/proc/self/cmdline").map_err(|e| format!("cannot read /proc/self/cmdline: {e}"))?;
    let mut args = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned());
    while let Some(arg) = args.next() {
        if arg == "-c" || arg == "--config-file" {
            return Ok(args.next().map(PathBuf::from));
        }
    }
    Ok(None)
}

/// The texts of `dir`'s `*.conf` files, in alphabetical order (as Mosquitto's
/// `include_dir`); unreadable ones are skipped (Mosquitto refuses to start on them).
fn conf_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "conf")).collect();
    files.sort();
    files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).collect()
}
