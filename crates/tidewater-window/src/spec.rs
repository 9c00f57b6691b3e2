//! Window kinds and their slicing.

use tidewater_core::time::{floor_div, gcd};
use tidewater_core::{Error, Result};

/// A window table-valued function, sizes in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// Fixed, non-overlapping windows of `size`.
    Tumble {
        /// Window length.
        size: i64,
    },
    /// Windows of `size` starting every `slide`.
    Hop {
        /// Window length.
        size: i64,
        /// Distance between window starts.
        slide: i64,
    },
    /// Windows growing by `step` from the start of each `max_size` period.
    Cumulate {
        /// Growth step.
        step: i64,
        /// Largest window, after which a new period starts.
        max_size: i64,
    },
    /// Per key, events closer than `gap` share a window.
    Session {
        /// Inactivity gap.
        gap: i64,
    },
}

impl WindowSpec {
    /// Checks sizes the way Flink does and explains what is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::config("window", m));
        match *self {
            WindowSpec::Tumble { size } if size <= 0 => {
                bad(format!("TUMBLE size must be positive, got {size} ms"))
            }
            WindowSpec::Hop { size, slide } if size <= 0 || slide <= 0 => bad(format!(
                "HOP slide and size must be positive, got slide {slide} ms, size {size} ms"
            )),
            WindowSpec::Cumulate { step, max_size }
                if step <= 0 || max_size <= 0 || max_size % step != 0 =>
            {
                bad(format!(
                    "CUMULATE max size must be a positive multiple of the step, got step {step} ms, max size {max_size} ms"
                ))
            }
            WindowSpec::Session { gap } if gap <= 0 => {
                bad(format!("SESSION gap must be positive, got {gap} ms"))
            }
            _ => Ok(()),
        }
    }

    /// The slice width: gcd(size, slide) for hop, the step for cumulate, the size for
    /// tumble; `None` for session windows, which are not sliced.
    pub fn slice_width(&self) -> Option<i64> {
        match *self {
            WindowSpec::Tumble { size } => Some(size),
            WindowSpec::Hop { size, slide } => Some(gcd(size, slide)),
            WindowSpec::Cumulate { step, .. } => Some(step),
            WindowSpec::Session { .. } => None,
        }
    }

    /// For sliced windows: the distance between consecutive window ends.
    pub(crate) fn end_step(&self) -> i64 {
        match *self {
            WindowSpec::Tumble { size } => size,
            WindowSpec::Hop { slide, .. } => slide,
            WindowSpec::Cumulate { step, .. } => step,
            WindowSpec::Session { gap } => gap,
        }
    }

    /// For sliced windows: window ends are `end_offset() + k * end_step()`. Hop windows
    /// start at multiples of the slide, so they end at multiples plus `size mod slide`.
    pub(crate) fn end_offset(&self) -> i64 {
        match *self {
            WindowSpec::Hop { size, slide } => size.rem_euclid(slide),
            _ => 0,
        }
    }

    /// For sliced windows: the end of the last window containing the slice that starts at
    /// `t`. An event is late only once that window has fired (as in Flink): until then
    /// it still counts in the windows that are open.
    /// `None` when the window would lie outside the representable time range.
    pub(crate) fn last_end_containing(&self, t: i64) -> Option<i64> {
        let (unit, size) = match *self {
            WindowSpec::Tumble { size } => (size, size),
            WindowSpec::Hop { size, slide } => (slide, size),
            WindowSpec::Cumulate { max_size, .. } => (max_size, max_size),
            WindowSpec::Session { gap } => return t.checked_add(gap),
        };
        floor_div(t, unit).checked_mul(unit)?.checked_add(size)
    }

    /// For sliced windows: the start of the window that ends at `end`.
    pub(crate) fn start_of(&self, end: i64) -> i64 {
        match *self {
            WindowSpec::Tumble { size } => end - size,
            WindowSpec::Hop { size, .. } => end - size,
            WindowSpec::Cumulate { max_size, .. } => floor_div(end - 1, max_size) * max_size,
            WindowSpec::Session { gap } => end - gap,
        }
    }

    /// A human description for `explain`.
    pub fn describe(&self) -> String {
        match *self {
            WindowSpec::Tumble { size } => format!("TUMBLE size {size} ms: 1 slice per window"),
            WindowSpec::Hop { size, slide } => format!(
                "HOP size {size} ms slide {slide} ms: slices of {} ms, each event updates 1 slice, each window merges {} slices",
                gcd(size, slide),
                size / gcd(size, slide)
            ),
            WindowSpec::Cumulate { step, max_size } => format!(
                "CUMULATE step {step} ms max {max_size} ms: slices of {step} ms, each window merges up to {} slices",
                max_size / step
            ),
            WindowSpec::Session { gap } => {
                format!("SESSION gap {gap} ms: per-key sessions merged on overlap")
            }
        }
    }
}
