//! The `Transport` header (RFC 2326 §12.39): what a client asks for in SETUP, and the answer.
//!
//! A client lists one or more transport specifications, comma-separated, in its order of
//! preference; the server picks the first it can serve. This server offers RTP over unicast
//! UDP (`RTP/AVP` or `RTP/AVP/UDP` with `client_port=`) and RTP interleaved on the RTSP
//! connection (`RTP/AVP/TCP` with `interleaved=`). Real clients send, for example:
//!
//! ```text
//! RTP/AVP/UDP;unicast;client_port=25056-25057      (ffmpeg)
//! RTP/AVP;unicast;client_port=54184-54185          (GStreamer)
//! RTP/AVP;multicast                                (GStreamer, after a 461 for unicast UDP)
//! RTP/AVP/TCP;unicast;interleaved=0-1              (both)
//! ```
//!
//! [`parse`] turns the header into one [`Spec`] (or a reason it cannot be served) per
//! specification; [`Spec::choose`] validates one into the ports or channels to request, or the
//! status that refuses it. Formatting the answer ([`format_udp`], [`format_tcp`]) uses only
//! numbers, never the client's text.

/// The lower transport of a specification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lower {
    Udp,
    Tcp,
}

/// One transport specification of a `Transport` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The specification as sent, for logs.
    pub text: String,
    pub lower: Lower,
    /// `multicast` was asked for (`unicast` is assumed when neither is given).
    pub multicast: bool,
    /// `client_port=a[-b]`.
    pub client_port: Option<(u16, Option<u16>)>,
    /// `interleaved=x[-y]`.
    pub interleaved: Option<(u8, Option<u8>)>,
}

/// Why a specification cannot be served, with the RTSP status that says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `400` for a malformed or invalid specification, `461` for one this server does not
    /// offer.
    pub status: u16,
    pub message: String,
}

impl Refusal {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
        }
    }

    fn unsupported(message: impl Into<String>) -> Self {
        Self {
            status: 461,
            message: message.into(),
        }
    }
}

/// What to ask the host for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// RTP to the client's `rtp` port and RTCP to its `rtcp` port.
    Udp { rtp: u16, rtcp: u16 },
    /// RTP and RTCP interleaved on these channels.
    Tcp { rtp: u8, rtcp: u8 },
}

/// The lowest client port accepted: ports below 1024 are reserved for system services, and
/// sending media at them is how a server gets abused as a reflector.
pub const MIN_CLIENT_PORT: u16 = 1024;

/// Parse a `Transport` header value into its specifications, in the client's order.
pub fn parse(value: &str) -> Vec<Result<Spec, Refusal>> {
    split_outside_quotes(value, ',')
        .into_iter()
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(parse_spec)
        .collect()
}

fn parse_spec(text: &str) -> Result<Spec, Refusal> {
    let mut params = split_outside_quotes(text, ';').into_iter().map(str::trim);
    let protocol = params.next().unwrap_or_default();
    let lower = match protocol.to_ascii_uppercase().as_str() {
        "RTP/AVP" | "RTP/AVP/UDP" => Lower::Udp,
        "RTP/AVP/TCP" => Lower::Tcp,
        _ => {
            return Err(Refusal::unsupported(format!(
                "transport `{protocol}` is not offered; use RTP/AVP (UDP) or RTP/AVP/TCP"
            )))
        }
    };
    let mut spec = Spec {
        text: text.to_owned(),
        lower,
        multicast: false,
        client_port: None,
        interleaved: None,
    };
    for param in params.filter(|param| !param.is_empty()) {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("unicast", _) => spec.multicast = false,
            ("multicast", _) => spec.multicast = true,
            ("client_port", Some(value)) => {
                spec.client_port = Some(number_pair(value, "client_port")?);
            }
            ("interleaved", Some(value)) => {
                spec.interleaved = Some(number_pair(value, "interleaved")?);
            }
            ("mode", Some(mode)) if !mode.eq_ignore_ascii_case("PLAY") => {
                return Err(Refusal::unsupported(format!(
                    "mode `{mode}` is not offered; this server only plays"
                )))
            }
            // `destination` is ignored on purpose: media only ever goes to the address the
            // RTSP connection comes from, so a client cannot aim a stream at a third party.
            // The rest (`ssrc`, `ttl`, `layers`, `port`, `append`, `source`, …) do not apply.
            _ => {}
        }
    }
    Ok(spec)
}

/// `a` or `a-b`, each fitting in `T`.
fn number_pair<T: std::str::FromStr>(value: &str, name: &str) -> Result<(T, Option<T>), Refusal> {
    let number = |text: &str| {
        let text = text.trim();
        if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse::<T>().ok()
    };
    let invalid = || Refusal::invalid(format!("invalid {name} `{value}`"));
    match value.split_once('-') {
        Some((first, second)) => Ok((
            number(first).ok_or_else(invalid)?,
            Some(number(second).ok_or_else(invalid)?),
        )),
        None => Ok((number(value).ok_or_else(invalid)?, None)),
    }
}

impl Spec {
    /// Validate this specification into what to ask the host for.
    pub fn choose(&self) -> Result<Choice, Refusal> {
        if self.multicast {
            return Err(Refusal::unsupported(
                "multicast is not offered on RTSP sessions; use unicast UDP or TCP",
            ));
        }
        match self.lower {
            Lower::Udp => {
                let Some((rtp, rtcp)) = self.client_port else {
                    return Err(Refusal::invalid("client_port required for RTP over UDP"));
                };
                let rtcp = match rtcp {
                    Some(rtcp) => rtcp,
                    None => rtp.checked_add(1).ok_or_else(|| {
                        Refusal::invalid("client_port 65535 leaves no port for RTCP")
                    })?,
                };
                if rtp < MIN_CLIENT_PORT || rtcp < MIN_CLIENT_PORT {
                    return Err(Refusal::invalid(format!(
                        "client_port {rtp}-{rtcp} is reserved; use ports {MIN_CLIENT_PORT} to 65535"
                    )));
                }
                Ok(Choice::Udp { rtp, rtcp })
            }
            Lower::Tcp => {
                let (rtp, rtcp) = self.interleaved.unwrap_or((0, Some(1)));
                let rtcp = match rtcp {
                    Some(rtcp) => rtcp,
                    None => rtp.checked_add(1).ok_or_else(|| {
                        Refusal::invalid("interleaved=255 leaves no channel for RTCP")
                    })?,
                };
                if rtp == rtcp {
                    return Err(Refusal::invalid(format!(
                        "interleaved={rtp}-{rtcp} uses one channel for RTP and RTCP"
                    )));
                }
                Ok(Choice::Tcp { rtp, rtcp })
            }
        }
    }
}

/// The `Transport` answer for RTP over unicast UDP. Server ports of 0 (unknown) are left out.
pub fn format_udp(client: (u16, u16), server: (u16, u16), ssrc: u32) -> String {
    let mut out = format!("RTP/AVP;unicast;client_port={}-{}", client.0, client.1);
    if server.0 != 0 {
        out.push_str(&format!(";server_port={}-{}", server.0, server.1));
    }
    out.push_str(&format!(";ssrc={ssrc:08X}"));
    out
}

/// The `Transport` answer for interleaved RTP.
pub fn format_tcp(channels: (u8, u8), ssrc: u32) -> String {
    format!(
        "RTP/AVP/TCP;unicast;interleaved={}-{};ssrc={ssrc:08X}",
        channels.0, channels.1
    )
}

/// Split at `separator` where it is not inside double quotes.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            parts.push(&text[start..i]);
            start = i + 1;
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(value: &str) -> Result<Choice, Refusal> {
        let mut specs = parse(value);
        assert_eq!(specs.len(), 1, "{value}");
        specs.remove(0).and_then(|spec| spec.choose())
    }

    fn status(value: &str) -> u16 {
        one(value).unwrap_err().status
    }

    #[test]
    fn real_client_specs() {
        assert_eq!(
            one("RTP/AVP/UDP;unicast;client_port=25056-25057"),
            Ok(Choice::Udp {
                rtp: 25056,
                rtcp: 25057
            })
        );
        assert_eq!(
            one("RTP/AVP;unicast;client_port=54184-54185"),
            Ok(Choice::Udp {
                rtp: 54184,
                rtcp: 54185
            })
        );
        assert_eq!(
            one("RTP/AVP/TCP;unicast;interleaved=0-1"),
            Ok(Choice::Tcp { rtp: 0, rtcp: 1 })
        );
        assert_eq!(status("RTP/AVP;multicast"), 461);
    }

    #[test]
    fn defaults_and_single_values() {
        assert_eq!(
            one("RTP/AVP;unicast;client_port=5000"),
            Ok(Choice::Udp {
                rtp: 5000,
                rtcp: 5001
            })
        );
        assert_eq!(
            one("rtp/avp/tcp;unicast;interleaved=4"),
            Ok(Choice::Tcp { rtp: 4, rtcp: 5 })
        );
        assert_eq!(one("RTP/AVP/TCP"), Ok(Choice::Tcp { rtp: 0, rtcp: 1 }));
        assert_eq!(
            one("RTP/AVP;client_port=5000-5001;mode=\"PLAY\";ssrc=1234ABCD;destination=6.6.6.6"),
            Ok(Choice::Udp {
                rtp: 5000,
                rtcp: 5001
            })
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(status("RTP/AVP;unicast"), 400);
        assert_eq!(status("RTP/AVP;unicast;client_port=554-555"), 400);
        assert_eq!(status("RTP/AVP;unicast;client_port=0-1"), 400);
        assert_eq!(status("RTP/AVP;unicast;client_port=5000-80"), 400);
        assert_eq!(status("RTP/AVP;unicast;client_port=65535"), 400);
        assert_eq!(status("RTP/AVP;unicast;client_port=x-y"), 400);
        assert_eq!(status("RTP/AVP;unicast;client_port=70000-70001"), 400);
        assert_eq!(status("RTP/AVP/TCP;interleaved=255"), 400);
        assert_eq!(status("RTP/AVP/TCP;interleaved=256-257"), 400);
        assert_eq!(status("RTP/AVP/TCP;interleaved=3-3"), 400);
        assert_eq!(status("RAW/RAW/UDP;unicast;client_port=5000"), 461);
        assert_eq!(status("x-real-rdt/tcp"), 461);
        assert_eq!(status("RTP/AVP;unicast;client_port=5000;mode=RECORD"), 461);
        assert_eq!(status("RTP/AVP/TCP;multicast"), 461);
    }

    #[test]
    fn lists_keep_the_clients_order() {
        let specs = parse(
            "RTP/AVP;multicast, RTP/AVP;unicast;client_port=5000-5001;mode=\"PLAY,RECORD\" ,RTP/AVP/TCP;unicast",
        );
        assert_eq!(specs.len(), 3);
        assert!(specs[0].as_ref().unwrap().multicast);
        assert_eq!(
            specs[1].as_ref().unwrap_err().status,
            461,
            "the quoted comma stays inside the mode"
        );
        assert_eq!(specs[2].as_ref().unwrap().lower, Lower::Tcp);
        assert!(parse(" , ").is_empty());
    }

    #[test]
    fn answers() {
        assert_eq!(
            format_udp((5000, 5001), (6970, 6971), 0x1234_5678),
            "RTP/AVP;unicast;client_port=5000-5001;server_port=6970-6971;ssrc=12345678"
        );
        assert_eq!(
            format_udp((5000, 5001), (0, 0), 0xab),
            "RTP/AVP;unicast;client_port=5000-5001;ssrc=000000AB"
        );
        assert_eq!(
            format_tcp((2, 3), 0xdead_beef),
            "RTP/AVP/TCP;unicast;interleaved=2-3;ssrc=DEADBEEF"
        );
    }
}
