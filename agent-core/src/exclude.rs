//! exclude (in progress)
