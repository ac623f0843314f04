//! The tasks the server runs beside its listeners: standalone outputs (UDP pushes) and pull
//! sources, each keyed so that a reload keeps the unchanged ones running.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ferrocast_plugin_api::Framing;
use tokio::task::JoinHandle;

use crate::outputs::Output;
use crate::points::{LiveStream, PointMedia, PointRegistry};
use crate::state::PluginTable;

/// Why a plugin's requested output cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputProblem {
    #[error("there is no such publishing point")]
    UnknownPoint,
    #[error("the point does not list \"{plugin}\" in its protocols")]
    ProtocolNotListed { plugin: String },
    #[error("only broadcast points can be pushed")]
    NotBroadcast,
    #[error("the destination is not ip:port")]
    BadDestination,
    #[error("the interface is not an IP address")]
    BadInterface,
}

/// A plugin's output that cannot run, with what it asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin `{plugin}` asks to push `{point}` to {destination}, but {problem}")]
pub struct OutputRefused {
    pub plugin: String,
    pub point: String,
    pub destination: String,
    pub problem: OutputProblem,
}

/// A live stream compared by identity: a point that got a new stream (it was removed and
/// added again, or changed kind) needs a new output even if nothing else changed.
#[derive(Clone)]
struct SameStream(Arc<LiveStream>);

impl PartialEq for SameStream {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SameStream {}

impl Hash for SameStream {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

/// Everything that makes an output what it is; a reload keeps an output whose key is
/// unchanged running.
#[derive(Clone, PartialEq, Eq, Hash)]
struct OutputKey {
    plugin: String,
    stream: SameStream,
    destination: SocketAddr,
    framing: Framing,
    ttl: u8,
    interface: Option<IpAddr>,
}

impl OutputKey {
    fn of(output: &Output) -> Self {
        Self {
            plugin: output.plugin.clone(),
            stream: SameStream(Arc::clone(&output.stream)),
            destination: output.destination,
            framing: output.framing,
            ttl: output.ttl,
            interface: output.interface,
        }
    }
}

enum RunningOutput {
    /// Planned, not started yet (the server starts outputs when it runs).
    Planned(Output),
    Running(JoinHandle<()>),
}

/// The standalone outputs, by what they are.
#[derive(Default)]
pub struct OutputSet(HashMap<OutputKey, RunningOutput>);

// `OutputKey` holds a `LiveStream` (interior mutability) but hashes and compares only its
// address, which never changes.
#[allow(clippy::mutable_key_type)]
impl OutputSet {
    pub fn planned(outputs: Vec<Output>) -> Self {
        Self(
            outputs
                .into_iter()
                .map(|output| (OutputKey::of(&output), RunningOutput::Planned(output)))
                .collect(),
        )
    }

    /// Start every planned output.
    pub fn start(&mut self) {
        let planned: Vec<OutputKey> = self
            .0
            .iter()
            .filter(|(_, running)| matches!(running, RunningOutput::Planned(_)))
            .map(|(key, _)| key.clone())
            .collect();
        for key in planned {
            if let Some(RunningOutput::Planned(output)) = self.0.remove(&key) {
                self.0
                    .insert(key, RunningOutput::Running(tokio::spawn(output.run())));
            }
        }
    }

    /// Become `outputs`: those already running with the same key keep running, the others
    /// stop; the new ones are planned (see [`Self::start`]).
    pub fn replace_with(&mut self, outputs: Vec<Output>) {
        let mut next = HashMap::new();
        for output in outputs {
            let key = OutputKey::of(&output);
            let running = self
                .0
                .remove(&key)
                .unwrap_or(RunningOutput::Planned(output));
            next.insert(key, running);
        }
        self.stop_all();
        self.0 = next;
    }

    pub fn stop_all(&mut self) {
        for (_, running) in self.0.drain() {
            if let RunningOutput::Running(task) = running {
                task.abort();
            }
        }
    }
}

/// The standalone outputs the transport plugins ask for, checked against the points: each
/// must name a broadcast point that lists the plugin in its protocols.
pub fn plan_outputs(
    plugins: &PluginTable,
    points: &PointRegistry,
) -> Result<Vec<Output>, OutputRefused> {
    let mut outputs = Vec::new();
    for (name, plugin) in plugins {
        for spec in plugin.instance.outputs() {
            let refuse = |problem| OutputRefused {
                plugin: name.clone(),
                point: spec.point.to_string(),
                destination: spec.destination.to_string(),
                problem,
            };
            let point = points
                .get(&spec.point)
                .ok_or_else(|| refuse(OutputProblem::UnknownPoint))?;
            if !point.protocols.iter().any(|p| p == name) {
                return Err(refuse(OutputProblem::ProtocolNotListed {
                    plugin: name.clone(),
                }));
            }
            let PointMedia::Live(stream) = &point.media else {
                return Err(refuse(OutputProblem::NotBroadcast));
            };
            let destination = spec
                .destination
                .parse()
                .map_err(|_| refuse(OutputProblem::BadDestination))?;
            let interface = match spec.interface.as_str() {
                "" => None,
                text => Some(
                    text.parse()
                        .map_err(|_| refuse(OutputProblem::BadInterface))?,
                ),
            };
            outputs.push(Output {
                plugin: name.clone(),
                stream: Arc::clone(stream),
                destination,
                framing: spec.framing,
                ttl: spec.ttl,
                interface,
            });
        }
    }
    Ok(outputs)
}

/// A running pull, with the session number it publishes under.
pub struct PullTask {
    pub task: JoinHandle<()>,
    pub session: u64,
    pub stream: Arc<LiveStream>,
}

/// The running pulls, by point name.
#[derive(Default)]
pub struct PullSet(HashMap<String, PullTask>);

impl PullSet {
    pub fn insert(&mut self, point: String, pull: PullTask) {
        self.0.insert(point, pull);
    }

    /// Stop the pull of `point`, if it has one; its clients are held for the grace (`why`).
    pub fn stop(&mut self, point: &str, why: &str) {
        if let Some(pull) = self.0.remove(point) {
            pull.task.abort();
            pull.stream.unpublish(pull.session, why);
        }
    }

    pub fn abort_all(&mut self) {
        for pull in self.0.values() {
            pull.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stream() -> Arc<LiveStream> {
        LiveStream::for_tests("live", Duration::from_secs(1), Duration::from_secs(1))
    }

    fn output(stream: &Arc<LiveStream>, destination: &str) -> Output {
        Output {
            plugin: "udp".into(),
            stream: Arc::clone(stream),
            destination: destination.parse().unwrap(),
            framing: Framing::RTP,
            ttl: 1,
            interface: None,
        }
    }

    #[test]
    fn an_output_is_the_same_only_on_the_same_stream_and_destination() {
        let kept = stream();
        let same = OutputKey::of(&output(&kept, "127.0.0.1:5000"));
        assert!(same == OutputKey::of(&output(&kept, "127.0.0.1:5000")));
        assert!(same != OutputKey::of(&output(&kept, "127.0.0.1:5001")));
        // Same point name, but a new stream (the point was replaced): a new output.
        assert!(same != OutputKey::of(&output(&stream(), "127.0.0.1:5000")));
    }

    #[tokio::test]
    async fn replacing_keeps_unchanged_outputs_running_and_drops_the_others() {
        let live = stream();
        let mut outputs = OutputSet::planned(vec![
            output(&live, "127.0.0.1:5000"),
            output(&live, "127.0.0.1:5001"),
        ]);
        outputs.start();
        outputs.replace_with(vec![
            output(&live, "127.0.0.1:5001"),
            output(&live, "127.0.0.1:5002"),
        ]);
        let mut states: Vec<(u16, bool)> = outputs
            .0
            .iter()
            .map(|(key, running)| {
                let started = matches!(running, RunningOutput::Running(_));
                (key.destination.port(), started)
            })
            .collect();
        states.sort_unstable();
        assert_eq!(states, [(5001, true), (5002, false)]);
        outputs.stop_all();
    }
}
