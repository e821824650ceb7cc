//! The integration tests: real PostgreSQL and Redis, each test on a fresh
//! database and its own Redis namespace (see `support`).

mod access;
mod api;
mod cli;
mod closure;
mod demo;
mod demo_data;
mod docs;
mod faults;
mod import;
mod jobs;
mod jobs_list;
mod layers;
mod metrics;
mod migrations;
mod operators;
mod ops;
mod pages;
mod render;
mod schedule;
mod summaries;
mod support;
mod uai;
mod zips;
