//! services (in progress)
