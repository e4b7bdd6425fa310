//! The one setting of the broker's own configuration file that mqseal must
//! know: `max_queued_messages`. Mosquitto 2.0 with its fix for CVE-2023-28366
//! (upstream since 2.0.16, in `handle__publish`; Debian 12's 2.0.11 carries it)
//! answers every refused publish with a
//! disconnection while the publisher's outgoing queue holds at least
//! `max_queued_messages` packets, which with `max_queued_messages 0` is always.
//! Verification on worker threads refuses each original it takes
//! (crate::broker::offload), so there it would disconnect every publisher.
//! One 2.0 cannot be told from another at run time, so on 2.0 the plugin reads
//! the file the broker was started with and turns the worker path off then.
//!
//! Only reading: options as Mosquitto reads them (one per line, `#` comments,
//! the last occurrence wins), with `include_dir` files (`*.conf`, in
//! alphabetical order) read where the line stands, as Mosquitto does.

/// Mosquitto's default.
pub const DEFAULT_MAX_QUEUED_MESSAGES: i64 = 1000;

/// The `max_queued_messages` in force for the configuration `main`;
/// `include_dir(dir)` returns the texts of that directory's `*.conf` files in
/// alphabetical order. A value that is not a number is left to Mosquitto,
/// which refuses it.
pub fn effective_max_queued_messages(main: &str, include_dir: impl Fn(&str) -> Vec<String>) -> i64 {
    let mut value = DEFAULT_MAX_QUEUED_MESSAGES;
    scan(main, &mut value, Some(&include_dir));
    value
}

fn scan(text: &str, value: &mut i64, include_dir: Option<&dyn Fn(&str) -> Vec<String>>) {
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("max_queued_messages"), Some(n)) => {
                if let Ok(n) = n.parse() {
                    *value = n;
                }
            }
            // Mosquitto reads include_dir only in the main file.
            (Some("include_dir"), Some(dir)) => {
                if let Some(read) = include_dir {
                    for included in read(dir) {
                        scan(&included, value, None);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Vec<String> {
        Vec::new()
    }

    #[test]
    fn the_default_the_last_line_and_comments() {
        assert_eq!(effective_max_queued_messages("listener 1883\n", none), 1000);
        assert_eq!(effective_max_queued_messages("max_queued_messages 0\n", none), 0);
        assert_eq!(effective_max_queued_messages("  max_queued_messages   0  \nmax_queued_messages 50\n", none), 50);
        assert_eq!(effective_max_queued_messages("#max_queued_messages 0\n", none), 1000);
        assert_eq!(effective_max_queued_messages("max_queued_messages_bytes 0\n", none), 1000);
    }

    #[test]
    fn include_dir_files_count_where_the_line_stands() {
        let dir = |d: &str| if d == "/etc/mosquitto/conf.d" { vec!["max_queued_messages 0".to_string()] } else { Vec::new() };
        assert_eq!(effective_max_queued_messages("include_dir /etc/mosquitto/conf.d\n", dir), 0);
        assert_eq!(effective_max_queued_messages("include_dir /etc/mosquitto/conf.d\nmax_queued_messages 9\n", dir), 9);
        assert_eq!(effective_max_queued_messages("max_queued_messages 9\ninclude_dir /etc/mosquitto/conf.d\n", dir), 0);
    }
}
