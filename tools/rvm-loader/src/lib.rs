//! `rvm-loader` (also installed as `rvm`): the host CLI that deploys the
//! `@metaharness/host-rvm` adapter's files on the RVM hypervisor.
//!
//! Layers, bottom up: [`source`] and [`parse`] read and validate the
//! adapter's files into the [`model`]; [`home`] keeps registrations under
//! `RVM_HOME`; [`resolve`] and [`wasm`] find and check guest modules;
//! [`bundler`] lays out the bundle; [`boot`], [`qemu`], [`stream`] and
//! [`witness_sink`] run it and file its witness logs; [`instance`] keeps
//! one running in the background, [`control`] and [`channel`] carry orders
//! and [`admission`]s of tenants to it; [`folder`] and
//! [`commands`] put it together for [`cli`], with [`witness_cli`] (the
//! `witness` commands), [`approval`] (`caps prove`) and [`state`] (the
//! committed state kept for an instance's partitions, `state show`);
//! [`tools`] runs the tools agents call under their claims (a run serves them over its control channel).
#![forbid(unsafe_code)]

pub mod admission;
pub mod approval;
pub mod board;
pub mod boot;
pub mod bundler;
pub mod channel;
pub mod cli;
pub mod commands;
pub mod control;
pub mod diag;
pub mod domains;
pub mod error;
pub mod folder;
pub mod home;
pub mod instance;
pub mod keys;
pub mod limits;
pub mod model;
pub mod parse;
pub mod qemu;
pub mod replay;
pub mod resolve;
pub mod roster;
pub mod source;
pub mod state;
pub mod stream;
pub mod tools;
pub mod wasm;
pub mod witness_cli;
pub mod witness_sink;
