//! Tether relay (in progress).
