//! End-to-end tests: a real gateway on a real loopback socket, real ONNX Runtime, the committed models.

mod alerts;
mod auth;
mod binary;
mod dashboard;
mod drift_compare;
mod errors;
mod fleet;
mod gitops;
mod grpc;
mod hotpath;
mod live_drift_cases;
mod live_quality_cases;
mod monitor;
mod operations;
mod repository_api;
mod rollout;
mod serve;
mod shutdown;
mod support;
mod swap;
mod tls;
mod traces;
mod tritonclient;
