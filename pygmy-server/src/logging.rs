//! Logs through `tracing`: to stdout, and to one file per node under the
//! log directory (`logs/<node>.log`, as the seed's `logs/`).
//!
//! Every node runs inside a span with a `node` field; a small layer
//! remembers that name on the span, and each node's file layer keeps only
//! the events under its node's span. So one process running every node
//! still writes one file per node.

use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{DynFilterFn, EnvFilter, LevelFilter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
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

/// Whether the current span is inside node `name`'s span.
fn in_node<S: Subscriber + for<'a> LookupSpan<'a>>(ctx: &Context<'_, S>, name: &str) -> bool {
    ctx.lookup_current().is_some_and(|span| {
        span.scope()
            .any(|s| s.extensions().get::<NodeTag>().is_some_and(|t| t.0 == name))
    })
}

/// Sets up logging for the nodes `nodes`: stdout at the `RUST_LOG` level
/// (default `info`), and `<log_dir>/<node>.log` for each at `info`.
pub fn init(log_dir: &Path, nodes: &[String]) -> std::io::Result<LogGuard> {
    std::fs::create_dir_all(log_dir)?;
    let mut guards = Vec::new();
    // Filtered to what is logged at all (node spans are at `info`): a
    // layer with no filter would make every span of every level be built,
    // openraft's many `debug` ones too (seen in the profile).
    let mut layers: Vec<Box<dyn Layer<_> + Send + Sync>> =
        vec![NodeTagger.with_filter(LevelFilter::INFO).boxed()];
    let stdout_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    layers.push(
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_filter(stdout_filter)
            .boxed(),
    );
    for node in nodes {
        let file = tracing_appender::rolling::never(log_dir, format!("{node}.log"));
        let (writer, guard) = tracing_appender::non_blocking(file);
        guards.push(guard);
        let name = node.clone();
        let only_this_node =
            DynFilterFn::new(move |meta, ctx| meta.is_span() || in_node(ctx, &name));
        layers.push(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_target(false)
                .with_writer(writer)
                .with_filter(only_this_node)
                .with_filter(LevelFilter::INFO)
                .boxed(),
        );
    }
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(std::io::Error::other)?;
    Ok(LogGuard { _guards: guards })
}
