//! The `postback-gateway` binary: parses the command line, loads the config
//! and hands both to the command (`postback_gateway::cli`): a tool
//! subcommand, or the gateway itself.

use std::process::ExitCode;

use postback_gateway::cli::{self, gateway, tools, Command, EX_USAGE};
use postback_gateway::config::{Config, Env, ProcessEnv};

/// The request path makes many small, short-lived allocations; mimalloc serves
/// them from per-thread pages where glibc's malloc splits and consolidates chunks.
/// Its 2.x line (the `v2` feature of libmimalloc-sys, whose functions
/// `os::Allocator` calls): 3.x spent about a tenth more CPU per
/// postback here, much of it handing pages back and forth with its arenas.
/// Built without its advice for transparent huge pages (the `no_thp`
/// feature): see `os::no_transparent_huge_pages`. It also stands in for the C
/// library's `malloc` and `free` (the `override` feature), so librdkafka's
/// messages, headers and buffers come from it too: glibc's malloc and free
/// cost about 1,000 instructions per postback on the request path alone.
#[global_allocator]
static ALLOC: postback_gateway::os::Allocator = postback_gateway::os::Allocator;

fn main() -> ExitCode {
    postback_gateway::os::no_transparent_huge_pages();
    let cli = match cli::parse() {
        Ok(c) => c,
        Err(code) => return ExitCode::from(code),
    };
    if let Some(Command::Completions { shell }) = cli.command {
        cli::completions(shell);
        return ExitCode::SUCCESS;
    }
    // The tools that only read the sources (or name their own brokers) run
    // on a deployment's config file without its brokers.
    let tool_env = tools::ToolEnv;
    let env: &dyn Env = match cli.command {
        None | Some(Command::CheckConfig { .. }) => &ProcessEnv,
        _ => &tool_env,
    };
    let config = match Config::load(cli.config.as_deref(), env) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("The config has {} problem(s):", errors.0.len());
            for e in &errors.0 {
                eprintln!("  - {e}");
            }
            return ExitCode::from(EX_USAGE);
        }
    };
    match cli.command {
        Some(Command::CheckConfig { connect }) => tools::check_config(&config, connect),
        Some(Command::PostbackUrl {
            source,
            base_url,
            network,
        }) => tools::postback_url(&config, &source, &base_url, network.as_deref()),
        Some(Command::TestFire {
            source,
            target,
            network,
            ca_file,
            cluster,
        }) => {
            let fire = tools::Fire {
                source,
                target,
                network,
                ca_file,
                brokers: cluster.brokers(),
            };
            tools::test_fire(&config, fire)
        }
        Some(Command::Events {
            cluster,
            follow,
            count,
        }) => tools::events(&config, cluster.brokers(), follow, count),
        Some(Command::Completions { .. }) => ExitCode::SUCCESS,
        None => gateway::main(config),
    }
}
