//! Ephemeral support users (in progress).
