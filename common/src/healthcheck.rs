//! `distributor healthcheck` / `requester healthcheck`: a container health check that needs
//! no shell and no curl. It asks the service's own `/health` and exits 0 when it answers
//! 200, 1 otherwise (with the reason on stderr), as a Docker `HEALTHCHECK` expects.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Check that the service on this machine answers its health endpoint.
#[derive(Debug, Clone, Parser)]
#[command(name = "healthcheck")]
pub struct HealthcheckArgs {
    /// The service's address; 0.0.0.0 means this machine's loopback.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// The path to ask.
    #[arg(long, default_value = "/health")]
    pub path: String,

    /// How long to wait for the answer.
    #[arg(long, default_value = "2s", value_parser = crate::config::parse_duration)]
    pub timeout: Duration,
}

/// If the first argument is `healthcheck`, runs the check and returns its exit code.
pub fn from_args() -> Option<ExitCode> {
    let mut args = std::env::args();
    let program = args.next().unwrap_or_default();
    let first = args.next()?;
    if first != "healthcheck" {
        return None;
    }
    let parsed =
        HealthcheckArgs::parse_from(std::iter::once(format!("{program} healthcheck")).chain(args));
    Some(match check(&parsed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("unhealthy: {reason}");
            ExitCode::FAILURE
        }
    })
}

/// Asks `GET path` and wants a 200.
pub fn check(args: &HealthcheckArgs) -> Result<(), String> {
    let mut addr = args.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    let mut stream = TcpStream::connect_timeout(&addr, args.timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(args.timeout))
        .and_then(|()| stream.set_write_timeout(Some(args.timeout)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: healthcheck\r\n\r\n",
        args.path
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = stream
            .read(&mut head[got..])
            .map_err(|e| format!("no answer from {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let status = String::from_utf8_lossy(&head[..got]);
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if code == "200" {
        Ok(())
    } else {
        Err(format!(
            "{addr}{} answered `{}`",
            args.path,
            status.lines().next().unwrap_or("nothing")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_once(answer: &'static str) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ = s.write_all(answer.as_bytes());
            }
        });
        addr
    }

    fn args(addr: SocketAddr) -> HealthcheckArgs {
        HealthcheckArgs {
            addr,
            path: "/health".into(),
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn a_200_is_healthy_and_anything_else_is_not() {
        assert_eq!(check(&args(serve_once("HTTP/1.1 200 OK\r\n\r\n"))), Ok(()));
        let err = check(&args(serve_once(
            "HTTP/1.1 503 Service Unavailable\r\n\r\n",
        )))
        .expect_err("503");
        assert!(err.contains("503"), "{err}");
        // A port held by a socket that never listens: connections to it are refused, and
        // nothing else can take it while the test runs.
        let held = tokio::net::TcpSocket::new_v4().expect("a socket");
        held.bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bound");
        let closed = held.local_addr().expect("port");
        let err = check(&args(closed)).expect_err("nothing listens");
        assert!(err.contains("cannot connect"), "{err}");
    }
}
