//! A child process driven line by line: lines written to its stdin, its
//! stdout read line by line on a helper thread, its stderr kept for failure
//! messages. For the device examples (`examples/c-device`,
//! `examples/python-device`), which speak one event per line.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct LineProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    seen: Vec<String>,
}

impl LineProcess {
    /// Starts `command` with piped stdin, stdout and stderr; `name` labels failures.
    pub fn spawn(name: &str, mut command: Command) -> LineProcess {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, stdout) = channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdin = child.stdin.take();
        LineProcess { name: name.to_string(), child, stdin, stdout, stderr, seen: Vec::new() }
    }

    /// Its process id (for /proc/<pid>/stat).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one line to its stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap_or_else(|| panic!("{}: stdin already closed", self.name));
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).unwrap_or_else(|e| panic!("{}: write stdin: {e}", self.name));
    }

    /// Closes its stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for a stdout line for which `want` holds; the lines before it are
    /// kept in [`LineProcess::seen`]. Panics with all output after `timeout`.
    pub fn expect_line(&mut self, what: &str, timeout: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("{}: no line {what} within {} s; {}", self.name, timeout.as_secs(), self.transcript()),
            }
        }
    }

    /// Waits until its stderr contains `needle`; panics with all output after `timeout`.
    pub fn expect_stderr(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr.lock().unwrap().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{}: no {needle:?} on stderr within {} s; {}",
                self.name,
                timeout.as_secs(),
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every stdout line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Its stdout lines and stderr so far, for failure messages.
    pub fn transcript(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.seen.join("\n"), self.stderr.lock().unwrap())
    }

    /// Closes stdin and waits for it to exit; panics after `timeout`.
    pub fn finish(&mut self, timeout: Duration) -> ExitStatus {
        self.close_stdin();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // Collect what it wrote last.
                while let Ok(line) = self.stdout.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {} s; {}", self.name, timeout.as_secs(), self.transcript());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
