//! Which points a session may start something on, and whether a reload took away something
//! it uses. Plain decisions over what the session holds ([`Uses`]) and what the current
//! tables say ([`Tables`]), so each case is tested without a server.

use std::collections::BTreeSet;
use std::sync::Arc;

use ferrocast_plugin_api::{ErrorCode, HostError};

use super::transports::TransportUse;
use crate::points::{LiveStream, PointMedia, PointRegistry};
use crate::state::PluginTable;

/// Why a session may not start something new.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the {} service is draining and takes no new sessions; try again later", .plugin.to_uppercase())]
    PluginDraining { plugin: String },
    #[error("publishing point `{point}` is draining and takes no new sessions; try again later")]
    PointDraining { point: String },
}

impl From<Refusal> for HostError {
    fn from(refusal: Refusal) -> Self {
        HostError::new(ErrorCode::DRAINING, refusal.to_string())
    }
}

/// What a reload took away from a session, which then ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LostUse {
    #[error("an operator ended this session")]
    Kicked,
    #[error("plugin `{plugin}` was disabled")]
    PluginDisabled { plugin: String },
    #[error("publishing point `{point}` was removed")]
    PointRemoved { point: String },
    #[error("{} was disabled on publishing point `{point}`", .protocol.to_uppercase())]
    ProtocolDisabled { protocol: String, point: String },
    #[error("publishing point `{point}` now pulls its source; encoders can no longer push to it")]
    NowPulls { point: String },
    #[error("publishing point `{point}` was replaced by one of another kind")]
    KindChanged { point: String },
    #[error("{} was disabled on publishing point `{point}`", .transport_plugin.to_uppercase())]
    TransportDisabled {
        transport_plugin: &'static str,
        point: String,
    },
}

/// A point as the current tables describe it, for the re-check.
pub struct PointView<'a> {
    pub protocols: &'a [String],
    /// The live stream of a broadcast point; `None` for on-demand points.
    pub live: Option<&'a Arc<LiveStream>>,
    /// The point pulls its source rather than taking pushes.
    pub pulls: bool,
}

/// The server's current tables, as the re-check reads them.
pub trait Tables {
    fn plugin_enabled(&self, name: &str) -> bool;
    fn point(&self, name: &str) -> Option<PointView<'_>>;
}

/// The running point and plugin tables.
pub struct CurrentTables<'a> {
    pub points: &'a PointRegistry,
    pub plugins: &'a PluginTable,
}

impl Tables for CurrentTables<'_> {
    fn plugin_enabled(&self, name: &str) -> bool {
        self.plugins.contains_key(name)
    }

    fn point(&self, name: &str) -> Option<PointView<'_>> {
        self.points.get(name).map(|point| PointView {
            protocols: &point.protocols,
            live: match &point.media {
                PointMedia::Live(stream) => Some(stream),
                _ => None,
            },
            pulls: point.pull.is_some(),
        })
    }
}

/// The drains that bear on one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainState {
    /// The session's plugin was draining when the session connected.
    pub plugin_at_connect: bool,
    /// The requested point is draining now.
    pub point: bool,
}

/// Everything a session holds on the server's tables.
#[derive(Clone, Copy)]
pub struct Uses<'a> {
    /// The session's own (control) plugin.
    pub plugin: &'a str,
    /// The point it plays.
    pub playing: Option<&'a str>,
    /// The live stream it plays, if the point is live.
    pub live: Option<&'a Arc<LiveStream>>,
    /// The live stream it publishes to.
    pub publishing: Option<&'a Arc<LiveStream>>,
    pub transports: &'a [TransportUse],
}

impl Uses<'_> {
    /// Points this session plays, publishes to or has transports for.
    pub fn attached_points(&self) -> BTreeSet<&str> {
        let mut points: BTreeSet<&str> = self.transports.iter().map(|t| t.point.as_str()).collect();
        points.extend(self.playing);
        points.extend(self.publishing.map(|stream| stream.name.as_str()));
        points
    }

    /// May this session start something on `point`? Not if its plugin was draining when it
    /// connected, nor if the point is draining and the session is not already on it.
    pub fn admit(&self, point: &str, drains: DrainState) -> Result<(), Refusal> {
        if drains.plugin_at_connect {
            return Err(Refusal::PluginDraining {
                plugin: self.plugin.to_owned(),
            });
        }
        if drains.point && !self.attached_points().contains(point) {
            return Err(Refusal::PointDraining {
                point: point.to_owned(),
            });
        }
        Ok(())
    }

    /// After a reload: is everything this session uses still configured? `Err` says what was
    /// taken away.
    pub fn still_allowed(&self, tables: &impl Tables) -> Result<(), LostUse> {
        if !tables.plugin_enabled(self.plugin) {
            return Err(LostUse::PluginDisabled {
                plugin: self.plugin.to_owned(),
            });
        }
        for name in self.attached_points() {
            let Some(point) = tables.point(name) else {
                return Err(LostUse::PointRemoved {
                    point: name.to_owned(),
                });
            };
            self.still_allowed_on(name, &point, tables)?;
        }
        Ok(())
    }

    fn still_allowed_on(
        &self,
        name: &str,
        point: &PointView<'_>,
        tables: &impl Tables,
    ) -> Result<(), LostUse> {
        let enabled = |protocol: &str| point.protocols.iter().any(|p| p == protocol);
        if !enabled(self.plugin) {
            return Err(LostUse::ProtocolDisabled {
                protocol: self.plugin.to_owned(),
                point: name.to_owned(),
            });
        }
        let publishes_here = self.publishing.filter(|stream| stream.name == name);
        if point.pulls && publishes_here.is_some() {
            return Err(LostUse::NowPulls {
                point: name.to_owned(),
            });
        }
        let streams_here = [publishes_here, self.live.filter(|s| s.name == name)];
        for stream in streams_here.into_iter().flatten() {
            if !point
                .live
                .is_some_and(|current| Arc::ptr_eq(current, stream))
            {
                return Err(LostUse::KindChanged {
                    point: name.to_owned(),
                });
            }
        }
        for used in self.transports.iter().filter(|t| t.point == name) {
            if !tables.plugin_enabled(used.transport_plugin) || !enabled(used.transport_plugin) {
                return Err(LostUse::TransportDisabled {
                    transport_plugin: used.transport_plugin,
                    point: name.to_owned(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    const NO_DRAIN: DrainState = DrainState {
        plugin_at_connect: false,
        point: false,
    };
    const PLUGIN_DRAINED: DrainState = DrainState {
        plugin_at_connect: true,
        point: false,
    };
    const POINT_DRAINING: DrainState = DrainState {
        plugin_at_connect: false,
        point: true,
    };

    struct FakePoint {
        protocols: Vec<String>,
        live: Option<Arc<LiveStream>>,
        pulls: bool,
    }

    #[derive(Default)]
    struct FakeTables {
        plugins: BTreeSet<String>,
        points: BTreeMap<String, FakePoint>,
    }

    impl Tables for FakeTables {
        fn plugin_enabled(&self, name: &str) -> bool {
            self.plugins.contains(name)
        }

        fn point(&self, name: &str) -> Option<PointView<'_>> {
            self.points.get(name).map(|point| PointView {
                protocols: &point.protocols,
                live: point.live.as_ref(),
                pulls: point.pulls,
            })
        }
    }

    fn stream(name: &str) -> Arc<LiveStream> {
        LiveStream::for_tests(name, Duration::from_secs(5), Duration::from_secs(5))
    }

    /// `live` (broadcast, with `live_stream`) and `vod` (on-demand), both with http, rtsp,
    /// udp and tcp; every plugin enabled.
    fn tables(live_stream: &Arc<LiveStream>) -> FakeTables {
        let all = ["http", "rtsp", "udp", "tcp"].map(String::from).to_vec();
        let mut tables = FakeTables {
            plugins: all.iter().cloned().collect(),
            ..FakeTables::default()
        };
        let live = FakePoint {
            protocols: all.clone(),
            live: Some(Arc::clone(live_stream)),
            pulls: false,
        };
        let vod = FakePoint {
            protocols: all,
            live: None,
            pulls: false,
        };
        tables.points.insert("live".into(), live);
        tables.points.insert("vod".into(), vod);
        tables
    }

    fn nothing(plugin: &str) -> Uses<'_> {
        Uses {
            plugin,
            playing: None,
            live: None,
            publishing: None,
            transports: &[],
        }
    }

    fn transport(point: &str, transport_plugin: &'static str) -> Vec<TransportUse> {
        vec![TransportUse {
            id: 1,
            point: point.into(),
            transport_plugin,
        }]
    }

    #[test]
    fn a_session_of_a_drained_plugin_may_start_nothing() {
        let refused = nothing("http").admit("live", PLUGIN_DRAINED);
        assert_eq!(
            refused,
            Err(Refusal::PluginDraining {
                plugin: "http".into()
            })
        );
        let error = HostError::from(refused.unwrap_err());
        assert_eq!(error.code, ErrorCode::DRAINING);
        assert!(error.message.contains("HTTP service is draining"));
    }

    #[test]
    fn a_draining_point_refuses_new_sessions() {
        assert_eq!(
            nothing("http").admit("live", POINT_DRAINING),
            Err(Refusal::PointDraining {
                point: "live".into()
            })
        );
        assert_eq!(nothing("http").admit("live", NO_DRAIN), Ok(()));
    }

    #[test]
    fn a_draining_point_admits_a_session_already_attached() {
        let playing = Uses {
            playing: Some("live"),
            ..nothing("http")
        };
        assert_eq!(playing.admit("live", POINT_DRAINING), Ok(()));
        let transports = transport("live", "tcp");
        let set_up = Uses {
            transports: &transports,
            ..nothing("rtsp")
        };
        assert_eq!(
            set_up.admit("live", POINT_DRAINING),
            Ok(()),
            "PLAY after SETUP"
        );
        let live = stream("live");
        let publishing = Uses {
            publishing: Some(&live),
            ..nothing("http")
        };
        assert_eq!(publishing.admit("live", POINT_DRAINING), Ok(()));
        assert!(publishing.admit("other", POINT_DRAINING).is_err());
    }

    #[test]
    fn an_untouched_session_carries_on() {
        let live = stream("live");
        let tables = tables(&live);
        let transports = transport("live", "udp");
        let uses = Uses {
            plugin: "rtsp",
            playing: Some("live"),
            live: Some(&live),
            publishing: None,
            transports: &transports,
        };
        assert_eq!(uses.still_allowed(&tables), Ok(()));
        assert_eq!(nothing("http").still_allowed(&tables), Ok(()));
    }

    #[test]
    fn a_disabled_plugin_ends_its_sessions() {
        let live = stream("live");
        let mut tables = tables(&live);
        tables.plugins.remove("http");
        assert_eq!(
            nothing("http").still_allowed(&tables),
            Err(LostUse::PluginDisabled {
                plugin: "http".into()
            })
        );
    }

    #[test]
    fn a_removed_point_gives_its_reason() {
        let live = stream("live");
        let mut tables = tables(&live);
        tables.points.remove("vod");
        let uses = Uses {
            playing: Some("vod"),
            ..nothing("http")
        };
        let lost = uses.still_allowed(&tables).unwrap_err();
        assert_eq!(
            lost,
            LostUse::PointRemoved {
                point: "vod".into()
            }
        );
        assert_eq!(lost.to_string(), "publishing point `vod` was removed");
    }

    #[test]
    fn a_protocol_disabled_on_the_point_gives_its_reason() {
        let live = stream("live");
        let mut tables = tables(&live);
        tables
            .points
            .get_mut("vod")
            .unwrap()
            .protocols
            .retain(|p| p != "http");
        let uses = Uses {
            playing: Some("vod"),
            ..nothing("http")
        };
        let lost = uses.still_allowed(&tables).unwrap_err();
        assert_eq!(
            lost.to_string(),
            "HTTP was disabled on publishing point `vod`"
        );
    }

    #[test]
    fn a_disabled_transport_plugin_gives_its_reason() {
        let live = stream("live");
        let transports = transport("live", "udp");
        let uses = Uses {
            playing: Some("live"),
            live: Some(&live),
            transports: &transports,
            ..nothing("rtsp")
        };
        let expected = LostUse::TransportDisabled {
            transport_plugin: "udp",
            point: "live".into(),
        };
        let mut off_on_point = tables(&live);
        off_on_point
            .points
            .get_mut("live")
            .unwrap()
            .protocols
            .retain(|p| p != "udp");
        assert_eq!(uses.still_allowed(&off_on_point), Err(expected.clone()));
        let mut plugin_off = tables(&live);
        plugin_off.plugins.remove("udp");
        assert_eq!(uses.still_allowed(&plugin_off), Err(expected.clone()));
        assert_eq!(
            expected.to_string(),
            "UDP was disabled on publishing point `live`"
        );
    }

    #[test]
    fn a_point_replaced_by_another_kind_gives_its_reason() {
        let live = stream("live");
        let uses = Uses {
            playing: Some("live"),
            live: Some(&live),
            ..nothing("http")
        };
        let mut now_on_demand = tables(&live);
        now_on_demand.points.get_mut("live").unwrap().live = None;
        let expected = LostUse::KindChanged {
            point: "live".into(),
        };
        assert_eq!(uses.still_allowed(&now_on_demand), Err(expected.clone()));
        // A new broadcast point of the same name is another stream, too.
        let mut replaced = tables(&live);
        replaced.points.get_mut("live").unwrap().live = Some(stream("live"));
        assert_eq!(uses.still_allowed(&replaced), Err(expected));
    }

    #[test]
    fn a_point_switched_to_pull_ends_its_publisher_but_not_its_players() {
        let live = stream("live");
        let mut tables = tables(&live);
        tables.points.get_mut("live").unwrap().pulls = true;
        let publisher = Uses {
            publishing: Some(&live),
            ..nothing("http")
        };
        assert_eq!(
            publisher.still_allowed(&tables),
            Err(LostUse::NowPulls {
                point: "live".into()
            })
        );
        let player = Uses {
            playing: Some("live"),
            live: Some(&live),
            ..nothing("http")
        };
        assert_eq!(player.still_allowed(&tables), Ok(()));
    }
}
