//! copiste: closes graded exams (exports to Cyclades and Imag'In), renders
//! graded copies and delivers them to establishments. See ARCHITECTURE.md
//! for the map of this crate.

pub mod access;
pub mod app;
pub mod closure;
pub mod config;
pub mod db;
pub mod domain;
pub mod download;
pub mod export;
pub mod import;
pub mod jobs;
pub mod ledger;
pub mod local_services;
pub mod memory;
pub mod op;
pub mod queue;
pub mod render;
pub mod rendered;
pub mod schedule;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod web;
pub mod worker;
