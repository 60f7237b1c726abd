//! `kafkactor asyncapi`: writes a running application's AsyncAPI document,
//! as its HTTP endpoint serves it (`/asyncapi`), to a file or the standard
//! output. Needs no broker.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::Ended;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub(crate) struct Fetch {
    /// The application's HTTP endpoint (`AppBuilder::serve_http`):
    /// `http://host:port` or `host:port`.
    #[arg(long)]
    from: String,
    /// Where to write the document (default: the standard output).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

impl Fetch {
    pub(crate) async fn run(self, timeout: Duration) -> Result<Ended> {
        let from = self.from.clone();
        let body = tokio::task::spawn_blocking(move || get(&from, "/asyncapi", timeout))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))??;
        let document: Value = serde_json::from_str(&body).map_err(|e| {
            Error::Decode(format!(
                "{}/asyncapi answered no JSON document: {e}",
                self.from
            ))
        })?;
        if document["asyncapi"].as_str().is_none() {
            return Err(Error::Decode(format!(
                "{}/asyncapi answered JSON that is no AsyncAPI document (no `asyncapi` version)",
                self.from
            )));
        }
        let text = serde_json::to_string_pretty(&document).expect("JSON prints");
        match self.output {
            Some(path) => {
                std::fs::write(&path, text + "\n")
                    .map_err(|e| Error::Config(format!("cannot write {}: {e}", path.display())))?;
                eprintln!("wrote {}", path.display());
            }
            None => println!("{text}"),
        }
        Ok(Ended::Done)
    }
}

/// `GET path` on `from` over plain HTTP/1.1: the body of a 200 answer.
fn get(from: &str, path: &str, timeout: Duration) -> Result<String> {
    let unreachable = |why: String| Error::Unavailable(format!("{from}{path}: {why}"));
    let authority = from
        .strip_prefix("http://")
        .unwrap_or(from)
        .trim_end_matches('/');
    if authority.contains("://") {
        return Err(Error::Config(format!(
            "--from {from}: only plain http:// endpoints are read"
        )));
    }
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("no address".into()))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| unreachable(e.to_string()))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| unreachable(e.to_string()))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| unreachable(e.to_string()))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| unreachable(e.to_string()))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| unreachable("no HTTP answer".into()))?;
    let status = head.split(' ').nth(1).unwrap_or_default();
    if status != "200" {
        return Err(unreachable(format!(
            "answered {} (is it a kafkactor application's HTTP endpoint?)",
            head.lines().next().unwrap_or_default()
        )));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(unreachable(
            "answered in chunks, which this reader does not take".into(),
        ));
    }
    Ok(body.to_string())
}
