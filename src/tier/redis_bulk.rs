//! Large Redis values moved on a plain connection of their own: read
//! straight into a buffer of their exact size, written straight from the
//! payload.
//!
//! redis-rs reads a reply into a buffer that doubles as it fills (copying
//! what it holds at each step) and then copies the value out of it: for a
//! 16 MB value about 48 MB of copies into fresh memory, most of a Redis hit's
//! time (perf). The size of a value is known before it is asked for (the
//! lookup's `STRLEN`), so one copy is enough: the kernel's, from the socket
//! into the buffer the caller is handed. A write through redis-rs copies the
//! value into the command, the command into a packed buffer and that into
//! the connection's write buffer (48 MB at the peak of a miss, 16 MB of it
//! kept for the connection's life, heaptrack); here the payload goes from
//! where it lies to the socket. The connection speaks the few lines of RESP
//! that `AUTH`, `SELECT`, `GET` and `SET` need.
//!
//! Used for one server over plain TCP; TLS, Unix sockets and clusters read
//! through redis-rs. Timeouts and the circuit breaker stay with the caller
//! (`Link::bulk_get`): this module only moves bytes.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// Values from this size are moved here (below it the copies cost little).
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

pub struct Bulk {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    /// One connection and when it was last used, kept between exchanges.
    /// Taken out for an exchange and put back only after a complete one, so
    /// a failed or abandoned one (its future dropped at a timeout) never
    /// leaves a half-read reply behind.
    conn: Mutex<Option<(TcpStream, Instant)>>,
    /// Set by `disconnect`: an exchange under way drops its connection.
    closed: AtomicBool,
}

/// A connection idle longer than this is replaced rather than trusted: a
/// NAT or load balancer may have dropped it silently, and a read on it
/// would wait out its whole allowance.
const MAX_IDLE: Duration = Duration::from_secs(30);

impl Bulk {
    /// A reader for the server `info` names, when it is reached over plain TCP.
    pub fn for_server(info: &redis::ConnectionInfo) -> Option<Bulk> {
        let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
            return None;
        };
        let settings = info.redis_settings();
        Some(Bulk {
            host: host.clone(),
            port: *port,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
            db: settings.db(),
            conn: Mutex::new(None),
            closed: AtomicBool::new(false),
        })
    }

    /// `GET key`: the value, or None when the key does not exist. `expected`
    /// is the size `STRLEN` gave; a reply claiming much more is taken as a
    /// broken stream, not allocated.
    pub async fn get(&self, key: &[u8], expected: usize) -> Result<Option<Vec<u8>>, BulkError> {
        self.exchange(&Request::Get { key, expected }).await
    }

    /// `SET key value EX ttl`, the value given as `parts` laid end to end
    /// (written from where they lie).
    pub async fn set(
        &self,
        key: &[u8],
        parts: &[&[u8]],
        ttl_seconds: u64,
    ) -> Result<(), BulkError> {
        self.exchange(&Request::Set {
            key,
            parts,
            ttl_seconds,
        })
        .await
        .map(drop)
    }

    /// Runs `request` on the kept connection, or a new one. A kept
    /// connection may have been closed by the server since (a restart, an
    /// idle timeout), so a failure of the way there on it is tried once more
    /// on a fresh one (`GET` and `SET` may be repeated).
    async fn exchange(&self, request: &Request<'_>) -> Result<Option<Vec<u8>>, BulkError> {
        let mut slot = self.conn.lock().await;
        let keep = |slot: &mut Option<(TcpStream, Instant)>, s: TcpStream| {
            if !self.closed.load(Ordering::SeqCst) {
                *slot = Some((s, Instant::now()));
            }
        };
        let kept = slot.take().filter(|(_, used)| used.elapsed() < MAX_IDLE);
        if let Some((mut kept, _)) = kept {
            match request.run(&mut kept).await {
                Ok(v) => {
                    keep(&mut slot, kept);
                    return Ok(v);
                }
                Err(BulkError::Io(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let mut fresh = self.connect().await?;
        let v = request.run(&mut fresh).await?;
        keep(&mut slot, fresh);
        Ok(v)
    }

    /// Closes for good: drops the kept connection, and one in use when its
    /// exchange ends (not waited for).
    pub fn disconnect(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut slot) = self.conn.try_lock() {
            slot.take();
        }
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

enum Request<'a> {
    Get {
        key: &'a [u8],
        expected: usize,
    },
    Set {
        key: &'a [u8],
        parts: &'a [&'a [u8]],
        ttl_seconds: u64,
    },
}

impl Request<'_> {
    /// Sends the command and reads its reply: the value for `GET`, None for `SET`.
    async fn run(&self, s: &mut TcpStream) -> Result<Option<Vec<u8>>, BulkError> {
        match *self {
            Request::Get { key, expected } => {
                send(s, &[b"GET", key]).await?;
                // The value may have been rewritten since its STRLEN (same
                // matrix, another record layout): some slack, not gigabytes.
                read_bulk(s, expected.saturating_mul(2).saturating_add(MIN_LEN)).await
            }
            Request::Set {
                key,
                parts,
                ttl_seconds,
            } => {
                let len: usize = parts.iter().map(|p| p.len()).sum();
                let mut head = format!("*5\r\n$3\r\nSET\r\n${}\r\n", key.len()).into_bytes();
                head.extend_from_slice(key);
                head.extend_from_slice(format!("\r\n${len}\r\n").as_bytes());
                s.write_all(&head).await?;
                for p in parts {
                    s.write_all(p).await?;
                }
                let ttl = ttl_seconds.to_string();
                let tail = format!("\r\n$2\r\nEX\r\n${}\r\n{ttl}\r\n", ttl.len());
                s.write_all(tail.as_bytes()).await?;
                expect_ok(s).await?;
                Ok(None)
            }
        }
    }
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
async fn read_bulk(s: &mut TcpStream, max_len: usize) -> Result<Option<Vec<u8>>, BulkError> {
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
        .filter(|&n| n <= max_len)
        .and_then(|n| n.checked_add(2))
        .ok_or_else(|| invalid("a bulk string far larger than its STRLEN"))?;
    if rest.len() > want {
        return Err(invalid("bytes after the reply"));
    }
    let mut buf = Vec::new();
    buf.try_reserve_exact(want)
        .map_err(|_| BulkError::Io(io::ErrorKind::OutOfMemory.into()))?;
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
