//! Recognising RTSP tunnelled over HTTP (the QuickTime scheme) on an HTTP port: the GET that
//! carries a tunnel's answers (`Accept: application/x-rtsp-tunnelled`) and the POST that
//! carries its requests (`Content-Type: application/x-rtsp-tunnelled`), both with an
//! `x-sessioncookie`. Such a connection is handed over to the `rtsp` plugin, which serves
//! the tunnel exactly as on its own port.

use ferrocast_plugin_kit::head::{find_head_end, header};

/// The plugin that serves tunnelled RTSP.
pub const RTSP_PLUGIN: &str = "rtsp";

const TUNNEL_TYPE: &str = "application/x-rtsp-tunnelled";

/// Whether the first request of a connection opens a tunnel: `None` until its head is
/// complete.
pub fn opens_tunnel(first: &[u8]) -> Option<bool> {
    let end = find_head_end(first)?;
    let Ok(head) = std::str::from_utf8(&first[..end]) else {
        return Some(false);
    };
    let mut lines = head.lines();
    let method = lines
        .next()
        .and_then(|line| line.split(' ').next())
        .unwrap_or_default();
    let fields: Vec<(&str, &str)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim(), value.trim()))
        .collect();
    let typed = |name: &str| {
        header(&fields, name).is_some_and(|v| v.to_ascii_lowercase().contains(TUNNEL_TYPE))
    };
    let tunnelled = match method {
        "GET" => typed("Accept"),
        "POST" => typed("Content-Type"),
        _ => false,
    };
    let cookie = header(&fields, "x-sessioncookie").is_some_and(|c| !c.is_empty());
    Some(tunnelled && cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_halves_are_recognised_once_their_head_is_complete() {
        let get = b"GET /live HTTP/1.1\r\nx-sessioncookie: abc\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n";
        assert_eq!(opens_tunnel(&get[..get.len() - 2]), None);
        assert_eq!(opens_tunnel(get), Some(true));
        let post = b"POST /live HTTP/1.1\r\nx-sessioncookie: abc\r\nContent-Type: application/x-rtsp-tunnelled\r\nContent-Length: 32767\r\n\r\nT1BUSU";
        assert_eq!(opens_tunnel(post), Some(true));
    }

    #[test]
    fn ordinary_requests_are_not_tunnels() {
        assert_eq!(
            opens_tunnel(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(false)
        );
        let no_cookie = b"GET /live HTTP/1.1\r\nAccept: application/x-rtsp-tunnelled\r\n\r\n";
        assert_eq!(opens_tunnel(no_cookie), Some(false));
        let put = b"PUT /live HTTP/1.1\r\nx-sessioncookie: a\r\nContent-Type: application/x-rtsp-tunnelled\r\n\r\n";
        assert_eq!(opens_tunnel(put), Some(false));
    }
}
