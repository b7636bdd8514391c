//! The benchmark's upstream: as little work per request as HTTP/1.1 keep-alive allows, so that
//! it is never the bottleneck (Envoy at --concurrency 1 is).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::thread;

use crate::Res;

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";

/// Serves on 127.0.0.1 (a port the OS picks, written to `port_file`) until killed.
pub fn serve(port_file: &Path) -> Res<()> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let tmp = port_file.with_extension("tmp");
    std::fs::write(&tmp, port.to_string()).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, port_file).map_err(|e| e.to_string())?;
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            // A broken connection ends its thread; nothing else to do.
            let _ = connection(stream);
        });
    }
    Ok(())
}

fn connection(stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        // Request line and headers, up to the empty line.
        let mut body_len = 0usize;
        let mut first = true;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                if first {
                    continue;
                }
                break;
            }
            first = false;
            if let Some((name, value)) = l.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    body_len = value.trim().parse().unwrap_or(0);
                }
            }
        }
        if body_len > 0 {
            std::io::copy(
                &mut (&mut reader).take(body_len as u64),
                &mut std::io::sink(),
            )?;
        }
        writer.write_all(RESPONSE)?;
    }
}
