//! A throwaway PostgreSQL server for tests: `initdb` into a temp dir, then
//! `postgres` on a free loopback port, as the `postgres` user when the
//! tests run as root (PostgreSQL refuses to run as root).
//!
//! The server binaries come from `pg_config --bindir` or PATH. Where there
//! are none, [`Postgres::start`] prints why and returns `None`, so the test
//! skips; with `TOKEND_REQUIRE_POSTGRES=1` (CI) that is a failure instead.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// The superuser's password (host connections need one: scram-sha-256).
pub const PASSWORD: &str = "tokend-test-password";

pub struct Postgres {
    pub port: u16,
    bindir: PathBuf,
    dir: TempDir,
    as_postgres: bool,
    /// Serve TLS only (`ssl=on`, every `host` rule made `hostssl`).
    tls: bool,
    child: Option<Child>,
}

/// PEM files of a TLS-only server's CA, and of an unrelated CA.
pub struct TlsRoots {
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    _dir: TempDir,
}

impl Postgres {
    /// Starts a server, or returns `None` (printing why) when PostgreSQL's
    /// server binaries are not installed and TOKEND_REQUIRE_POSTGRES is unset.
    pub fn start() -> Option<Postgres> {
        Self::start_with(None)
    }

    /// A server that accepts TCP clients over TLS only, with a certificate
    /// for 127.0.0.1 and localhost made at run time.
    pub fn start_tls() -> Option<(Postgres, TlsRoots)> {
        let dir = tempfile::tempdir().unwrap();
        let pg = Self::start_with(Some(dir.path()))?;
        let roots = TlsRoots { ca: dir.path().join("ca.pem"), other_ca: dir.path().join("other-ca.pem"), _dir: dir };
        Some((pg, roots))
    }

    fn start_with(tls_roots: Option<&Path>) -> Option<Postgres> {
        let Some(bindir) = bindir() else {
            assert!(
                std::env::var("TOKEND_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "TOKEND_REQUIRE_POSTGRES=1 but no PostgreSQL server binaries (initdb, postgres) were found \
                 in `pg_config --bindir` or on PATH"
            );
            eprintln!("skipped: no PostgreSQL server binaries (initdb, postgres) in `pg_config --bindir` or on PATH");
            return None;
        };
        let as_postgres = run_output("id", &["-u"]).trim() == "0";
        let dir = tempfile::tempdir().unwrap();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if as_postgres {
            let ok = Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()).status().unwrap();
            assert!(ok.success(), "chown of the test cluster dir to postgres failed");
        }
        let data = dir.path().join("data");
        let mut pg = Postgres { port: 0, bindir, dir, as_postgres, tls: tls_roots.is_some(), child: None };
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--no-sync", "--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        if let Some(roots) = tls_roots {
            pg.make_tls_only(&data, roots);
        }
        pg.port = free_port();
        pg.launch();
        Some(pg)
    }

    fn make_tls_only(&self, data: &Path, roots: &Path) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
        };
        let (ours, other) = (ca("tokend test CA"), ca("someone else's CA"));
        let key = KeyPair::generate().unwrap();
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &ours).unwrap();
        std::fs::write(roots.join("ca.pem"), ours.pem()).unwrap();
        std::fs::write(roots.join("other-ca.pem"), other.pem()).unwrap();
        std::fs::write(data.join("server.crt"), cert.pem()).unwrap();
        std::fs::write(data.join("server.key"), key.serialize_pem()).unwrap();
        let ok = Command::new("chmod").arg("600").arg(data.join("server.key")).status().unwrap();
        assert!(ok.success());
        if self.as_postgres {
            let files = [data.join("server.crt"), data.join("server.key")];
            assert!(Command::new("chown").arg("postgres:").args(files).status().unwrap().success());
        }
        let hba = data.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).unwrap();
        let rules: String = rules
            .lines()
            .map(|l| if l.starts_with("host ") { format!("hostssl{}\n", &l[4..]) } else { format!("{l}\n") })
            .collect();
        std::fs::write(&hba, rules).unwrap();
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        if self.as_postgres {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            // Tests kill tokend, not the database: durability of PostgreSQL
            // itself is not under test, speed is welcome.
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"])
            .args(["-c", if self.tls { "ssl=on" } else { "ssl=off" }])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let ok = Command::new(self.bindir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("PostgreSQL not ready within 60 s; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The URL of database `db` over TCP, without TLS.
    pub fn url(&self, db: &str) -> String {
        self.url_with(db, "sslmode=disable")
    }

    /// The URL of database `db` over TCP with the query string `query`.
    pub fn url_with(&self, db: &str, query: &str) -> String {
        format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/{db}?{query}", self.port)
    }

    /// A new, empty database; returns its URL.
    pub async fn create_database(&self) -> String {
        let name = self.create_database_named().await;
        self.url(&name)
    }

    /// A new, empty database; returns its name.
    pub async fn create_database_named(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("t{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        self.execute("postgres", &format!("CREATE DATABASE {name}")).await;
        name
    }

    /// Runs `sql` in database `db` (the test's own side door).
    pub async fn execute(&self, db: &str, sql: &str) {
        // Through the Unix socket (trusted, no TLS), whatever TCP requires.
        let socket = format!("host={} port={} user=postgres dbname={db}", self.dir.path().display(), self.port);
        let (client, connection) = tokio_postgres::connect(&socket, tokio_postgres::NoTls).await.unwrap();
        let task = tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        let _ = task.await;
    }

    /// Fast shutdown (SIGINT), waiting for the server to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// Starts the stopped server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bindir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|d| has_server(d));
    from_pg_config.or_else(|| std::env::split_paths(&std::env::var_os("PATH")?).find(|d| has_server(d)))
}

fn run_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
