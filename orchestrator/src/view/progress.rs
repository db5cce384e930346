//! Progress while waiting: a live view with one line per node in a terminal, one plain line
//! per change elsewhere (CI logs, pipes), nothing with `--quiet` or `--output json`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::wait::Progress;
use crate::wait::node::NodeWatch;

/// The view for this process's stderr and output settings.
pub(crate) fn for_terminal(quiet: bool) -> Box<dyn Progress> {
    if quiet {
        Box::new(Silent)
    } else if std::io::stderr().is_terminal() {
        Box::new(Live::new())
    } else {
        Box::new(Lines::new())
    }
}

/// Shows nothing.
#[derive(Debug)]
pub(crate) struct Silent;

impl Progress for Silent {
    fn update(&mut self, _node: &NodeWatch) {}
    fn message(&mut self, _text: &str) {}
}

/// One line per change, with the time since the start, to stderr.
#[derive(Debug)]
pub(crate) struct Lines {
    started: Instant,
    shown: HashMap<String, String>,
}

impl Lines {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            shown: HashMap::new(),
        }
    }
}

impl Progress for Lines {
    fn update(&mut self, node: &NodeWatch) {
        let activity = node.activity();
        if self.shown.get(&node.record.id) == Some(&activity) {
            return;
        }
        self.shown.insert(node.record.id.clone(), activity.clone());
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "[{:>6.1}s] {} ({}): {activity}",
            self.started.elapsed().as_secs_f64(),
            node.record.id,
            node.record.node_type
        );
    }

    fn message(&mut self, text: &str) {
        let _ = writeln!(
            std::io::stderr().lock(),
            "[{:>6.1}s] {text}",
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// The most nodes that get a line of their own; the rest are summed up in one line.
const MAX_LINES: usize = 40;

/// A spinner line per node (node, type, current step, elapsed) on stderr.
#[derive(Debug)]
pub(crate) struct Live {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    rest: Option<ProgressBar>,
    rest_states: HashMap<String, String>,
    started: Instant,
}

impl Live {
    fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: HashMap::new(),
            rest: None,
            rest_states: HashMap::new(),
            started: Instant::now(),
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner} {prefix} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
    }
}

impl Progress for Live {
    fn update(&mut self, node: &NodeWatch) {
        let elapsed = format_elapsed(node.watched_since.elapsed());
        let text = format!("{:<28} {}", node.activity(), elapsed);
        if let Some(bar) = self.bars.get(&node.record.id) {
            bar.set_message(text);
        } else if self.bars.len() < MAX_LINES {
            let bar = self
                .multi
                .add(ProgressBar::new_spinner().with_style(Self::style()));
            bar.set_prefix(format!(
                "{:<24} {:<18}",
                node.record.id, node.record.node_type
            ));
            bar.set_message(text);
            bar.enable_steady_tick(Duration::from_millis(120));
            self.bars.insert(node.record.id.clone(), bar);
        } else {
            self.rest_states
                .insert(node.record.id.clone(), node.activity());
            let ready = self.rest_states.values().filter(|s| *s == "ready").count();
            let rest = self.rest.get_or_insert_with(|| {
                self.multi
                    .add(ProgressBar::new_spinner().with_style(Self::style()))
            });
            rest.set_message(format!(
                "and {} more nodes: {ready} ready",
                self.rest_states.len()
            ));
        }
    }

    fn message(&mut self, text: &str) {
        let _ = self.multi.println(format!(
            "[{:>6.1}s] {text}",
            self.started.elapsed().as_secs_f64()
        ));
    }

    fn finish(&mut self) {
        for bar in self.bars.values() {
            bar.finish_and_clear();
        }
        if let Some(rest) = &self.rest {
            rest.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

/// `1m05s`, `42s`
pub(crate) fn format_elapsed(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", elapsed.as_secs_f64())
    }
}
