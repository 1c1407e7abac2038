//! A counting HTTP/1.1 proxy on loopback in front of the AWS emulator: every
//! request is forwarded byte for byte, its response returned byte for byte, and
//! both are recorded (operation from `X-Amz-Target` or the `Action=` form
//! parameter, bodies, timing) for the request-count and cost figures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One forwarded request and its response.
#[derive(Debug, Clone)]
pub struct Record {
    /// The phase the proxy was in when the response arrived.
    pub phase: usize,
    /// `service.Operation`, e.g. `DynamoDB_20120810.TransactWriteItems`.
    pub op: String,
    /// Request body.
    pub req: Vec<u8>,
    /// Response body (de-chunked).
    pub resp: Vec<u8>,
    /// Response status.
    pub status: u16,
    /// When the request head arrived.
    pub at: Instant,
    /// Round trip through the proxy.
    pub elapsed_ms: f64,
}

/// The proxy's shared log.
#[derive(Default)]
pub struct Log {
    /// Every request, in completion order.
    pub records: Mutex<Vec<Record>>,
    /// Current phase (see [`Record::phase`]).
    pub phase: AtomicUsize,
}

impl Log {
    /// Records of `phase`.
    pub fn of_phase(&self, phase: usize) -> Vec<Record> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.phase == phase)
            .cloned()
            .collect()
    }
    /// Switches the phase new requests are tagged with.
    pub fn set_phase(&self, phase: usize) {
        self.phase.store(phase, Ordering::SeqCst);
    }
}

/// Starts the proxy on an ephemeral loopback port in front of `upstream`.
pub async fn start(upstream: SocketAddr) -> anyhow::Result<(SocketAddr, Arc<Log>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let log = Arc::new(Log::default());
    let l2 = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let log = l2.clone();
            tokio::spawn(async move {
                if let Err(e) = connection(sock, upstream, log).await {
                    eprintln!("proxy: {e:#}");
                }
            });
        }
    });
    Ok((addr, log))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads one message head (up to and including the blank line) into `buf`,
/// returning its length; `None` on a clean EOF before any byte.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Option<usize>> {
    loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            return Ok(Some(i + 4));
        }
        let mut chunk = [0u8; 16384];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            anyhow::bail!("EOF inside a message head");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> anyhow::Result<bool> {
    while buf.len() < want {
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(true)
}

/// Reads a whole message body after a head of `head_len` bytes in `buf`;
/// returns (raw message length, decoded body). `to_eof`: without a length,
/// the body runs to EOF (responses).
async fn read_body(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    head_len: usize,
    to_eof: bool,
) -> anyhow::Result<(usize, Vec<u8>)> {
    let head = String::from_utf8_lossy(&buf[..head_len]).to_string();
    if let Some(cl) = header(&head, "content-length") {
        let cl: usize = cl.parse()?;
        if !fill(s, buf, head_len + cl).await? {
            anyhow::bail!("EOF inside a body");
        }
        return Ok((head_len + cl, buf[head_len..head_len + cl].to_vec()));
    }
    if header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut pos = head_len;
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&buf[pos..], b"\r\n") {
                    break pos + i;
                }
                if !fill(s, buf, buf.len() + 1).await? {
                    anyhow::bail!("EOF inside a chunk size");
                }
            };
            let size_str = String::from_utf8_lossy(&buf[pos..line_end]).to_string();
            let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("0").trim(), 16)?;
            pos = line_end + 2;
            if size == 0 {
                // Trailers end with an empty line.
                loop {
                    if let Some(i) = find(&buf[pos..], b"\r\n") {
                        let empty = i == 0;
                        pos += i + 2;
                        if empty {
                            return Ok((pos, body));
                        }
                    } else if !fill(s, buf, buf.len() + 1).await? {
                        return Ok((buf.len(), body));
                    }
                }
            }
            if !fill(s, buf, pos + size + 2).await? {
                anyhow::bail!("EOF inside a chunk");
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
    }
    if to_eof {
        while fill(s, buf, buf.len() + 1).await? {}
        return Ok((buf.len(), buf[head_len..].to_vec()));
    }
    Ok((head_len, Vec::new()))
}

fn operation(head: &str, body: &[u8]) -> String {
    if let Some(t) = header(head, "x-amz-target") {
        return t.to_string();
    }
    let form = String::from_utf8_lossy(body);
    let target = head.split(' ').nth(1).unwrap_or("");
    for part in form.split('&').chain(target.split(['?', '&'])) {
        if let Some(a) = part.strip_prefix("Action=") {
            return format!("query.{a}");
        }
    }
    format!("other {}", head.split("\r\n").next().unwrap_or(""))
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    log: Arc<Log>,
) -> anyhow::Result<()> {
    let _ = client.set_nodelay(true);
    let mut cbuf = Vec::new();
    let mut up: Option<TcpStream> = None;
    loop {
        let Some(head_len) = read_head(&mut client, &mut cbuf).await? else {
            return Ok(());
        };
        let at = Instant::now();
        let (req_len, req_body) = read_body(&mut client, &mut cbuf, head_len, false).await?;
        let head = String::from_utf8_lossy(&cbuf[..head_len]).to_string();
        let op = operation(&head, &req_body);
        let raw: Vec<u8> = cbuf.drain(..req_len).collect();
        let u = match up.as_mut() {
            Some(u) => u,
            None => {
                let s = TcpStream::connect(upstream).await?;
                let _ = s.set_nodelay(true);
                up.insert(s)
            }
        };
        u.write_all(&raw).await?;
        let mut rbuf = Vec::new();
        let Some(rhead_len) = read_head(u, &mut rbuf).await? else {
            anyhow::bail!("upstream closed without a response");
        };
        let rhead = String::from_utf8_lossy(&rbuf[..rhead_len]).to_string();
        let status: u16 = rhead
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let bodiless = status == 204 || status == 304 || (100..200).contains(&status);
        let (resp_len, resp_body) = if bodiless {
            (rhead_len, Vec::new())
        } else {
            read_body(u, &mut rbuf, rhead_len, true).await?
        };
        // Tagged when the response arrives: a long poll belongs to the phase it returns in.
        let phase = log.phase.load(Ordering::SeqCst);
        client.write_all(&rbuf[..resp_len]).await?;
        log.records.lock().unwrap().push(Record {
            phase,
            op,
            req: req_body,
            resp: resp_body,
            status,
            at,
            elapsed_ms: at.elapsed().as_secs_f64() * 1000.0,
        });
        let close = header(&rhead, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if close {
            let _ = client.shutdown().await;
            return Ok(());
        }
    }
}
