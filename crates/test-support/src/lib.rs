//! sidekey test-support (skeleton).
