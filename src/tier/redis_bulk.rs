//! Large Redis values read on a plain connection of their own, straight into
//! a buffer of their exact size.
//!
//! redis-rs reads a reply into a buffer that doubles as it fills (copying
//! what it holds at each step) and then copies the value out of it: for a
//! 16 MB value about 48 MB of copies into fresh memory, most of a Redis hit's
//! time (perf). The size of a value is known before it is asked for (the
//! lookup's `STRLEN`), so one copy is enough: the kernel's, from the socket
//! into the buffer the caller is handed. The connection speaks the few lines
//! of RESP that `AUTH`, `SELECT` and `GET` need.
//!
//! Used for one server over plain TCP; TLS, Unix sockets and clusters read
//! through redis-rs. Timeouts and the circuit breaker stay with the caller
//! (`Link::bulk_get`): this module only moves bytes.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// Values from this size are read here (below it the copies cost little).
pub const MIN_LEN: usize = 1 << 20;

/// Longest reply line accepted (a length, `+OK`, or an error message).
const MAX_LINE: usize = 4096;

/// Why a read failed: the way to Redis, or an answer Redis gave.
#[derive(Debug)]
pub enum BulkError {
    Io(io::Error),
    /// An error reply (`-ERR ...`, `-NOAUTH ...`): Redis is alive.
    Reply(String),
}

impl From<io::Error> for BulkError {
    fn from(e: io::Error) -> Self {
        BulkError::Io(e)
    }
}

impl std::fmt::Display for BulkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BulkError::Io(e) => write!(f, "{e}"),
            BulkError::Reply(r) => write!(f, "{r}"),
        }
    }
}

pub struct BulkReader {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    /// One connection, kept between reads. Taken out for an exchange and put
    /// back only after a complete one, so a failed or abandoned read (its
    /// future dropped at a timeout) never leaves a half-read reply behind.
    conn: Mutex<Option<TcpStream>>,
}

impl BulkReader {
    /// A reader for the server `info` names, when it is reached over plain TCP.
    pub fn for_server(info: &redis::ConnectionInfo) -> Option<BulkReader> {
        let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
            return None;
        };
        let settings = info.redis_settings();
        Some(BulkReader {
            host: host.clone(),
            port: *port,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            db: settings.db(),
            conn: Mutex::new(None),
        })
    }

    /// `GET key`: the value, or None when the key does not exist.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BulkError> {
        let mut slot = self.conn.lock().await;
        if let Some(mut kept) = slot.take() {
            match exchange(&mut kept, key).await {
                Ok(v) => {
                    *slot = Some(kept);
                    return Ok(v);
                }
                // A kept connection may have been closed by the server since
                // (a restart, an idle timeout): one try on a fresh one.
                Err(BulkError::Io(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let mut fresh = self.connect().await?;
        let v = exchange(&mut fresh, key).await?;
        *slot = Some(fresh);
        Ok(v)
    }

    /// Drops the kept connection (closing, or after the server was lost).
    pub async fn disconnect(&self) {
        self.conn.lock().await.take();
    }

    async fn connect(&self) -> Result<TcpStream, BulkError> {
        let mut s = TcpStream::connect((self.host.as_str(), self.port)).await?;
        s.set_nodelay(true)?;
        if let Some(password) = &self.password {
            match &self.username {
                Some(user) => {
                    send(&mut s, &[b"AUTH", user.as_bytes(), password.as_bytes()]).await?
                }
                None => send(&mut s, &[b"AUTH", password.as_bytes()]).await?,
            }
            expect_ok(&mut s).await?;
        }
        if self.db != 0 {
            send(&mut s, &[b"SELECT", self.db.to_string().as_bytes()]).await?;
            expect_ok(&mut s).await?;
        }
        Ok(s)
    }
}

async fn exchange(s: &mut TcpStream, key: &[u8]) -> Result<Option<Vec<u8>>, BulkError> {
    send(s, &[b"GET", key]).await?;
    read_bulk(s).await
}

/// Writes one command as a RESP array of bulk strings.
async fn send(s: &mut TcpStream, args: &[&[u8]]) -> io::Result<()> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    s.write_all(&out).await
}

/// Reads one reply line (without its CRLF) and whatever followed it in the
/// same read.
async fn read_line(s: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), BulkError> {
    let mut got = Vec::with_capacity(64);
    loop {
        if let Some(end) = got.windows(2).position(|w| w == b"\r\n") {
            let rest = got.split_off(end + 2);
            got.truncate(end);
            return Ok((got, rest));
        }
        if got.len() > MAX_LINE {
            return Err(invalid("a reply line longer than 4 KiB"));
        }
        let mut chunk = [0u8; 256];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        got.extend_from_slice(&chunk[..n]);
    }
}

async fn expect_ok(s: &mut TcpStream) -> Result<(), BulkError> {
    let (line, rest) = read_line(s).await?;
    if !rest.is_empty() {
        return Err(invalid("bytes after a status reply"));
    }
    match line.first() {
        Some(b'+') => Ok(()),
        Some(b'-') => Err(BulkError::Reply(
            String::from_utf8_lossy(&line[1..]).into_owned(),
        )),
        _ => Err(invalid("not a status reply")),
    }
}

/// Reads a bulk string reply into a buffer of exactly its size.
async fn read_bulk(s: &mut TcpStream) -> Result<Option<Vec<u8>>, BulkError> {
    let (line, rest) = read_line(s).await?;
    match line.first() {
        Some(b'$') => {}
        Some(b'-') => {
            return Err(BulkError::Reply(
                String::from_utf8_lossy(&line[1..]).into_owned(),
            ));
        }
        _ => return Err(invalid("not a bulk string reply")),
    }
    let len: i64 = std::str::from_utf8(&line[1..])
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| invalid("a bulk string length that is not a number"))?;
    if len < 0 {
        return if rest.is_empty() {
            Ok(None)
        } else {
            Err(invalid("bytes after a null reply"))
        };
    }
    // The value and its CRLF, read into spare capacity (never zeroed first).
    let want = usize::try_from(len)
        .ok()
        .and_then(|n| n.checked_add(2))
        .ok_or_else(|| invalid("a bulk string too large"))?;
    if rest.len() > want {
        return Err(invalid("bytes after the reply"));
    }
    let mut buf = crate::pages::with_capacity_bytes(want);
    buf.extend_from_slice(&rest);
    while buf.len() < want {
        // `read_buf` fills spare capacity only: the buffer never grows past `want`.
        if s.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
    }
    if !buf.ends_with(b"\r\n") {
        return Err(invalid("a bulk string not ended by CRLF"));
    }
    buf.truncate(want - 2);
    Ok(Some(buf))
}

fn invalid(what: &str) -> BulkError {
    BulkError::Io(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected reply from Redis: {what}"),
    ))
}
