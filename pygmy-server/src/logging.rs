//! Logs through `tracing`: to stdout, and to one file per node under the
//! log directory (`logs/<node>.log`, as the seed's `logs/`).
//!
//! Every node runs inside a span with a `node` field; a small layer
//! remembers that name on the span, and the file layer writes each event to
//! the file of the node whose span it is under. So one process running
//! every node still writes one file per node. One file layer for all the
//! nodes, not one per node: every layer pays for each span entered, and
//! spans are entered at every poll of a node's tasks.

use std::collections::HashMap;
use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::fmt::writer::{EitherWriter, MakeWriter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, Registry};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Keeps the log writers flushing until dropped: hold it for the life of
/// the process.
#[must_use = "logs stop being written when the guard is dropped"]
pub struct LogGuard {
    _guards: Vec<WorkerGuard>,
}

/// The node a span belongs to, stored in the span's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeTag(String);

/// Records the `node` field of new spans as a [`NodeTag`].
struct NodeTagger;

struct NodeField(Option<String>);

impl Visit for NodeField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "node" {
            self.0 = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "node" {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for NodeTagger {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut field = NodeField(None);
        attrs.record(&mut field);
        if let (Some(node), Some(span)) = (field.0, ctx.span(id)) {
            span.extensions_mut().insert(NodeTag(node));
        }
    }
}

/// The node of the current span, if it is under one.
fn current_node() -> Option<String> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(id)?;
            span.scope()
                .find_map(|s| s.extensions().get::<NodeTag>().map(|t| t.0.clone()))
        })
        .flatten()
}

/// Each node's log file, chosen by the node of the current span.
struct NodeFiles {
    writers: HashMap<String, NonBlocking>,
}

impl<'a> MakeWriter<'a> for NodeFiles {
    type Writer = EitherWriter<NonBlocking, std::io::Sink>;

    fn make_writer(&'a self) -> Self::Writer {
        match current_node().and_then(|node| self.writers.get(&node)) {
            Some(writer) => EitherWriter::A(writer.clone()),
            // Not under a node's span: no node's file.
            None => EitherWriter::B(std::io::sink()),
        }
    }
}

/// Sets up logging for the nodes `nodes`: stdout at the `RUST_LOG` level
/// (default `info`), and `<log_dir>/<node>.log` for each at `info`.
pub fn init(log_dir: &Path, nodes: &[String]) -> std::io::Result<LogGuard> {
    std::fs::create_dir_all(log_dir)?;
    let mut guards = Vec::new();
    let mut writers = HashMap::new();
    for node in nodes {
        let file = tracing_appender::rolling::never(log_dir, format!("{node}.log"));
        let (writer, guard) = tracing_appender::non_blocking(file);
        guards.push(guard);
        writers.insert(node.clone(), writer);
    }
    let stdout_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        // Filtered to what is logged at all (node spans are at `info`): a
        // layer with no filter would make every span of every level be
        // built, openraft's many `debug` ones too: 4 % of a buy's CPU
        // (docs/history/benchmarks.md, "Where a buy's time goes").
        .with(NodeTagger.with_filter(LevelFilter::INFO))
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .with_filter(stdout_filter),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_target(false)
                .with_writer(NodeFiles { writers })
                .with_filter(LevelFilter::INFO),
        )
        .try_init()
        .map_err(std::io::Error::other)?;
    Ok(LogGuard { _guards: guards })
}
