//! The server side of plain HTTP/1.1 for small stand-in servers (a package host, a status
//! server) that answer by the request line alone.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;

/// Reads the head of the request on `stream`: answers its request line (`GET /path
/// HTTP/1.1\r\n`) and reads past the headers, which such servers do not look at. `None` when
/// the request line cannot be read.
pub fn read_request_line(stream: &TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok() && line != "\r\n" && !line.is_empty() {
        line.clear();
    }
    Some(request_line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn the_request_line_is_answered_and_the_headers_are_read_past() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client =
            TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        client
            .write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n")
            .expect("write");
        let (server, _) = listener.accept().expect("accept");
        assert_eq!(
            read_request_line(&server).as_deref(),
            Some("GET /v1/status HTTP/1.1\r\n")
        );
    }
}
