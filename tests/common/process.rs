//! A `tokend serve` child process, for tests that need the real binary.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_tokend");

/// A running `tokend serve` and the lines of its stderr.
pub struct Process {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Process {
    pub fn serve(data_dir: &std::path::Path, extra: &[&str]) -> Process {
        Self::serve_with_env(data_dir, extra, &[])
    }

    pub fn serve_with_env(data_dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Process {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("TOKEND_BOOTSTRAP_TOKEN")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Process { child, lines, seen: Vec::new() }
    }

    /// Waits for a stderr line containing `needle`.
    pub fn wait_for(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The address from the "serving" log line, in text (`addr=…`) or JSON
    /// (`"addr":"…"`) format.
    pub fn addr(&mut self) -> String {
        self.addr_of(&[" serving addr=", r#""message":"serving""#])
    }

    /// The address from the first log line holding one of `needles`.
    pub fn addr_of(&mut self, needles: &[&str]) -> String {
        let line = loop {
            let line = self.wait_for("addr");
            if needles.iter().any(|n| line.contains(n)) {
                break line;
            }
        };
        let after = &line[line.find("addr").expect("serving line names its addr") + 4..];
        let start = after.find(|c: char| c.is_ascii_digit() || c == '[').unwrap();
        after[start..].chars().take_while(|c| c.is_ascii_hexdigit() || ".:[]".contains(*c)).collect()
    }

    /// Everything written to stderr up to now (after `terminate`, all of it).
    pub fn log(&self) -> String {
        self.seen.join("\n")
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
        let status = self.child.wait().unwrap();
        // Drain the rest of stderr.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        status
    }
}

impl Process {
    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
