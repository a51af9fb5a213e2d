//! A minimal HTTP/1.1 client: one request in flight per connection, requests
//! written from ready-made bytes, replies parsed with `httparse`. Small on
//! purpose, so the generator's own cost per request stays far below the
//! server's and one core can drive a server pinned to another.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a request got no usable reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    Connect,
    Write,
    Read,
    /// The server closed the connection before a whole reply arrived.
    Closed,
    /// Bytes that are not an HTTP/1.1 reply this client understands.
    BadResponse,
    Timeout,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Write => "write",
            Failure::Read => "read",
            Failure::Closed => "closed",
            Failure::BadResponse => "bad_response",
            Failure::Timeout => "timeout",
        }
    }
}

/// What a reply says, as far as the generator cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// The outcome line: the `X-Postback-Result` header when present (pixels),
    /// else the body, trimmed.
    pub text: String,
    /// The body is the 43-byte GIF (`Content-Type: image/gif`).
    pub gif: bool,
    /// The server will close the connection after this reply.
    pub close: bool,
}

pub async fn connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|_| Failure::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Writes `request` and reads one whole reply into `buf` (cleared first).
pub async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<Reply, Failure> {
    stream
        .write_all(request)
        .await
        .map_err(|_| Failure::Write)?;
    buf.clear();
    let (head_len, body_len, mut reply) = loop {
        fill(stream, buf).await?;
        if let Some(head) = parse_head(buf)? {
            break head;
        }
    };
    let end = match body_len {
        Some(n) => head_len + n,
        None => {
            // No length: the body runs to the end of the connection.
            while stream.read_buf(buf).await.map_err(|_| Failure::Read)? > 0 {}
            reply.close = true;
            buf.len()
        }
    };
    while buf.len() < end {
        fill(stream, buf).await?;
    }
    if reply.text.is_empty() && !reply.gif {
        let body = std::str::from_utf8(&buf[head_len..end]).map_err(|_| Failure::BadResponse)?;
        reply.text = body.trim().to_owned();
    }
    Ok(reply)
}

/// Reads once more into `buf`; the end of the stream is an error here.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Failure> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    match stream.read_buf(buf).await {
        Ok(0) => Err(Failure::Closed),
        Ok(_) => Ok(()),
        Err(_) => Err(Failure::Read),
    }
}

/// Parses a reply head: `None` while it is incomplete; else the head length,
/// the body length (`None`: to the end of the stream) and the reply so far.
pub fn parse_head(buf: &[u8]) -> Result<Option<(usize, Option<usize>, Reply)>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; 24];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf).map_err(|_| Failure::BadResponse)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.ok_or(Failure::BadResponse)?;
    let mut reply = Reply {
        status,
        text: String::new(),
        gif: false,
        close: resp.version == Some(0),
    };
    let mut body_len = None;
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| Failure::BadResponse)?;
            body_len = Some(v.trim().parse().map_err(|_| Failure::BadResponse)?);
        } else if name.eq_ignore_ascii_case("x-postback-result") {
            reply.text = String::from_utf8_lossy(h.value).trim().to_owned();
        } else if name.eq_ignore_ascii_case("content-type") {
            reply.gif = h.value.eq_ignore_ascii_case(b"image/gif");
        } else if name.eq_ignore_ascii_case("connection") {
            reply.close = h.value.eq_ignore_ascii_case(b"close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The gateway and the baseline always send a length; chunked
            // bodies are not worth a parser here.
            return Err(Failure::BadResponse);
        }
    }
    if status == 204 || status == 304 || (100..200).contains(&status) {
        body_len = Some(0);
    }
    Ok(Some((head_len, body_len, reply)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_text_reply_head() {
        let raw = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 16\r\n\r\nERROR bad_amount";
        let (head, len, r) = parse_head(raw).unwrap().unwrap();
        assert_eq!(&raw[head..], b"ERROR bad_amount");
        assert_eq!(len, Some(16));
        assert_eq!(r.status, 400);
        assert!(!r.close && !r.gif);
    }

    #[test]
    fn takes_the_outcome_of_a_pixel_from_its_header() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: image/gif\r\nX-Postback-Result: OK abc\r\nconnection: close\r\ncontent-length: 43\r\n\r\n";
        let (_, len, r) = parse_head(raw).unwrap().unwrap();
        assert_eq!(len, Some(43));
        assert_eq!(r.text, "OK abc");
        assert!(r.gif && r.close);
    }

    #[test]
    fn waits_for_the_rest_of_a_head() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le").unwrap(), None);
        assert_eq!(parse_head(b"garbage\r\n\r\n"), Err(Failure::BadResponse));
    }
}
