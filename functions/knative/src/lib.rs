//! Knative shells (in progress).
