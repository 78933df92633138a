//! The log callback: a tracing layer that formats each event into one line for the host.
//! It is installed as the default dispatcher of the library's own threads only, so the host's
//! (or another agent's) logging is never touched.

use std::cell::RefCell;
use std::ffi::{CString, c_char, c_void};
use std::fmt::Write as _;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt as _};

use crate::UserData;

/// Severity of a log line; a callback receives lines at its `max_level` or more severe.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum tether_log_level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl tether_log_level {
    pub(crate) fn from_u32(n: u32) -> Option<Self> {
        [
            Self::Error,
            Self::Warn,
            Self::Info,
            Self::Debug,
            Self::Trace,
        ]
        .into_iter()
        .find(|l| *l as u32 == n)
    }

    fn of(level: &Level) -> Self {
        match *level {
            Level::ERROR => Self::Error,
            Level::WARN => Self::Warn,
            Level::INFO => Self::Info,
            Level::DEBUG => Self::Debug,
            _ => Self::Trace,
        }
    }
}

/// Called with one formatted log line (`target: message key=value ...`, no newline).
pub type tether_log_callback = Option<
    unsafe extern "C" fn(userdata: *mut c_void, level: tether_log_level, line: *const c_char),
>;

/// Where the log lines of one configuration go.
pub(crate) struct LogSink {
    pub callback: unsafe extern "C" fn(*mut c_void, tether_log_level, *const c_char),
    pub userdata: UserData,
    pub max_level: tether_log_level,
}

/// The layer over a [`LogSink`].
struct SinkLayer(Arc<LogSink>);

impl<S: Subscriber> Layer<S> for SinkLayer {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        tether_log_level::of(metadata.level()) <= self.0.max_level
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let level = tether_log_level::of(event.metadata().level());
        if level > self.0.max_level {
            return;
        }
        let mut line = Line::default();
        event.record(&mut line);
        let text = format!(
            "{}: {}{}",
            event.metadata().target(),
            line.message,
            line.fields
        );
        // Interior NULs cannot cross into C; they cannot occur in the agent's own lines.
        let Ok(text) = CString::new(text.replace('\0', " ")) else {
            return;
        };
        // SAFETY: the host registered this callback for exactly these arguments; the line
        // lives until the call returns, as documented.
        unsafe { (self.0.callback)(self.0.userdata.get(), level, text.as_ptr()) };
    }
}

#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

thread_local! {
    static GUARD: RefCell<Option<tracing::dispatcher::DefaultGuard>> = const { RefCell::new(None) };
}

/// The dispatcher that sends the library's log lines to `sink`.
pub(crate) fn dispatch(sink: Arc<LogSink>) -> tracing::Dispatch {
    tracing::Dispatch::new(tracing_subscriber::registry().with(SinkLayer(sink)))
}

/// Makes `dispatch` the default of the current (library) thread until [`leave`].
pub(crate) fn enter(dispatch: &tracing::Dispatch) {
    let guard = tracing::dispatcher::set_default(dispatch);
    GUARD.with(|g| *g.borrow_mut() = Some(guard));
}

/// Undoes [`enter`] before the thread ends.
pub(crate) fn leave() {
    GUARD.with(|g| g.borrow_mut().take());
}
