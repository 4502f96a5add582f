//! The database servers the tests talk to: checked on TCP, started when down, waited for.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a server may take to accept connections after its start command.
const START_PATIENCE: Duration = Duration::from_secs(60);

/// One server the test suite needs.
struct Server {
    name: &'static str,
    host: String,
    port: u16,
    start: fn() -> Result<()>,
}

/// Makes sure PostgreSQL and MariaDB accept TCP connections at the addresses the tests use
/// (`SMARTFLOW_TEST_POSTGRES_URL`, `SMARTFLOW_TEST_MYSQL_URL`, by default 127.0.0.1), starting
/// the local ones that are down and waiting up to 60 s for them.
pub fn ensure_databases() -> Result<()> {
    let servers = [
        server(
            "PostgreSQL",
            &smartflow_testkit::postgres_url(),
            5432,
            start_postgres,
        )?,
        server(
            "MariaDB",
            &smartflow_testkit::mysql_url(),
            3306,
            start_mariadb,
        )?,
    ];
    let mut waiting = Vec::new();
    for s in &servers {
        if accepts(&s.host, s.port) {
            println!("{} accepts connections on {}:{}", s.name, s.host, s.port);
            continue;
        }
        if is_local(&s.host) {
            println!(
                "{} is not accepting connections on {}:{}; starting it",
                s.name, s.host, s.port
            );
            (s.start)().with_context(|| format!("starting {}", s.name))?;
        } else {
            println!(
                "{} on {}:{} is not accepting connections and is not local; waiting for it",
                s.name, s.host, s.port
            );
        }
        waiting.push(s);
    }
    for s in waiting {
        let since = Instant::now();
        print!("waiting for {} on {}:{} ", s.name, s.host, s.port);
        loop {
            if accepts(&s.host, s.port) {
                println!(" up after {:.1} s", since.elapsed().as_secs_f64());
                break;
            }
            if since.elapsed() > START_PATIENCE {
                println!();
                bail!(
                    "{} did not accept connections on {}:{} within {} s",
                    s.name,
                    s.host,
                    s.port,
                    START_PATIENCE.as_secs()
                );
            }
            print!(".");
            let _ = std::io::Write::flush(&mut std::io::stdout());
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(())
}

fn server(
    name: &'static str,
    url: &str,
    default_port: u16,
    start: fn() -> Result<()>,
) -> Result<Server> {
    let (host, port) = host_port(url, default_port)
        .with_context(|| format!("cannot read a host from the {name} test URL"))?;
    Ok(Server {
        name,
        host,
        port,
        start,
    })
}

/// `scheme://user:pw@host:port/db?x` -> (`host`, `port`). IPv6 hosts keep their brackets off.
fn host_port(url: &str, default_port: u16) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let hostport = authority.rsplit('@').next()?;
    if hostport.is_empty() {
        return None;
    }
    if let Some(v6) = hostport.strip_prefix('[') {
        let (host, tail) = v6.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        return Some((host.to_owned(), port));
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((hostport.to_owned(), default_port)),
    }
}

fn is_local(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1")
}

fn accepts(host: &str, port: u16) -> bool {
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    addrs
        .collect::<Vec<SocketAddr>>()
        .iter()
        .any(|addr| TcpStream::connect_timeout(addr, Duration::from_secs(1)).is_ok())
}

/// `pg_ctlcluster --skip-systemctl-redirect <version> main start` for each installed version.
fn start_postgres() -> Result<()> {
    let dir = Path::new("/etc/postgresql");
    let mut versions: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("no PostgreSQL clusters under {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("main").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    if versions.is_empty() {
        bail!("no `main` cluster under {}", dir.display());
    }
    for version in versions {
        start(Command::new("pg_ctlcluster").args([
            "--skip-systemctl-redirect",
            &version,
            "main",
            "start",
        ]))?;
    }
    Ok(())
}

fn start_mariadb() -> Result<()> {
    start(Command::new("start-stop-daemon").args([
        "--start",
        "--oknodo",
        "--background",
        "--exec",
        "/usr/sbin/mariadbd",
    ]))
}

/// Runs a start command. A non-zero exit is reported but not fatal: a server that was already
/// starting makes some start commands fail, and the wait that follows is the real check.
fn start(cmd: &mut Command) -> Result<()> {
    let status = crate::process::run(cmd)?;
    if !status.success() {
        println!("(the start command exited with {status}; waiting for the server anyway)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_host_and_port_from_database_urls() {
        assert_eq!(
            host_port("postgres://postgres@127.0.0.1:5432/test", 1),
            Some(("127.0.0.1".into(), 5432))
        );
        assert_eq!(
            host_port("mysql://root:pw@db.internal/test?ssl=false", 3306),
            Some(("db.internal".into(), 3306))
        );
        assert_eq!(
            host_port("postgres://u@[::1]:6432/x", 5432),
            Some(("::1".into(), 6432))
        );
        assert_eq!(host_port("postgres:///x", 5432), None);
        assert_eq!(host_port("not a url", 5432), None);
    }
}
