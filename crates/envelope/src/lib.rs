//! sidekey envelope (skeleton).
