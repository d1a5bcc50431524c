//! The tracker: applies source events and keeps the desired state up to date.
