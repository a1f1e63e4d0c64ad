//! The `baton` command: runs plans in-process (the embedded default),
//! validates them and prints the plan format's JSON Schema.

mod progress;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use baton_agents::Registry;
use baton_engine::{Engine, EngineConfig, MemoryStore};
use baton_plan::{Limits, PlanDoc};
use baton_planner::templates::TemplateSet;
use baton_store::{PlanStatus, Store};
use clap::{Parser, Subcommand};

/// Exit code of a plan that failed, timed out or was cancelled.
const EXIT_FAILED: u8 = 1;
/// Exit code of an invalid or unreadable plan.
const EXIT_INVALID: u8 = 2;

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Orchestrates AI agents: runs DAG plans of agent steps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where agents beyond the built-ins are defined.
#[derive(clap::Args, Clone)]
struct AgentArgs {
    /// Agents file (TOML): HTTP agents and the hosts they may call.
    #[arg(long, env = "BATON_AGENTS")]
    agents: Option<PathBuf>,
}

impl AgentArgs {
    /// The registry: built-ins plus the agents file's, or why the file is
    /// unusable.
    fn registry(&self) -> Result<Registry, baton_agents::ConfigError> {
        match &self.agents {
            None => Ok(Registry::with_builtins()),
            Some(path) => {
                let cfg = baton_agents::AgentsConfig::load(path)?;
                Registry::with_config(&cfg, &path.display().to_string())
            }
        }
    }

    /// The registry, or the invalid-input exit after printing why not.
    fn registry_or_exit(&self) -> std::result::Result<Registry, ExitCode> {
        self.registry().map_err(|e| {
            eprintln!("baton: invalid agents file: {e}");
            ExitCode::from(EXIT_INVALID)
        })
    }
}

/// Limits a plan must stay within (defaults: `baton_plan::Limits`).
#[derive(clap::Args, Clone)]
struct LimitArgs {
    /// Most steps in one plan (fallbacks counted separately).
    #[arg(long, env = "BATON_MAX_STEPS", default_value_t = Limits::default().max_steps)]
    max_steps: usize,
    /// Most bytes of one step's `input` (as JSON).
    #[arg(long, env = "BATON_MAX_INPUT_BYTES", default_value_t = Limits::default().max_input_bytes)]
    max_input_bytes: usize,
    /// Most bytes of a whole plan document.
    #[arg(long, env = "BATON_MAX_PLAN_BYTES", default_value_t = Limits::default().max_plan_bytes)]
    max_plan_bytes: usize,
    /// Deepest nesting of fallback plans.
    #[arg(long, env = "BATON_MAX_FALLBACK_DEPTH", default_value_t = Limits::default().max_fallback_depth)]
    max_fallback_depth: usize,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_steps: self.max_steps,
            max_input_bytes: self.max_input_bytes,
            max_plan_bytes: self.max_plan_bytes,
            max_fallback_depth: self.max_fallback_depth,
            ..Limits::default()
        }
    }
}

#[derive(Subcommand)]
enum TemplatesCommand {
    /// List the templates: name, parameters, triggers, description.
    List {
        #[command(flatten)]
        templates: TemplateArgs,
    },
}

/// Where plan templates live.
#[derive(clap::Args, Clone)]
struct TemplateArgs {
    /// Directory of plan templates (`NAME.json`).
    #[arg(long = "templates", env = "BATON_TEMPLATES")]
    dir: Option<PathBuf>,
}

impl TemplateArgs {
    fn load(&self) -> std::result::Result<Option<TemplateSet>, ExitCode> {
        match &self.dir {
            None => Ok(None),
            Some(dir) => TemplateSet::load_dir(dir).map(Some).map_err(|e| {
                eprintln!("baton: invalid templates: {e}");
                ExitCode::from(EXIT_INVALID)
            }),
        }
    }
}

/// `NAME=VALUE`, VALUE as JSON when it parses, as text otherwise.
fn parse_param(s: &str) -> std::result::Result<(String, serde_json::Value), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=VALUE"))?;
    let value =
        serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.into()));
    Ok((name.to_string(), value))
}

#[derive(Subcommand)]
enum Command {
    /// Run a plan in this process (no Redis) and print its result JSON.
    Run {
        /// Plan file, or `-` for standard input.
        #[arg(required_unless_present = "template")]
        file: Option<PathBuf>,
        /// Run the named template (see `baton templates list`) instead.
        #[arg(long, conflicts_with = "file")]
        template: Option<String>,
        /// A template parameter, `NAME=VALUE` (VALUE as JSON, or as text).
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, serde_json::Value)>,
        #[command(flatten)]
        templates: TemplateArgs,
        /// Workers started (each serves every queue).
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Steps each worker runs at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Never show the progress display, even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// Print every event as a JSON line on standard error.
        #[arg(long)]
        events: bool,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        agents: AgentArgs,
    },
    /// Check a plan and print every error in it.
    Validate {
        /// Plan file, or `-` for standard input.
        file: PathBuf,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        agents: AgentArgs,
    },
    /// Print the JSON Schema of the plan format.
    Schema,
    /// Plan templates.
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match real_main(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("baton: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Schema => {
            let schema = schemars::schema_for!(PlanDoc);
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate {
            file,
            limits,
            agents,
        } => {
            let text = match read_plan_or_exit(&file) {
                Ok(t) => t,
                Err(code) => return Ok(code),
            };
            let registry = match agents.registry_or_exit() {
                Ok(r) => r,
                Err(code) => return Ok(code),
            };
            match baton_plan::parse_and_validate(&text, &registry, &limits.limits()) {
                Ok(plan) => {
                    println!(
                        "{}: valid ({}, fallback depth {})",
                        file.display(),
                        counted(plan.steps.len(), "step"),
                        plan.fallback_depth()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => Ok(report_invalid(&file, &errors)),
            }
        }
        Command::Templates {
            command: TemplatesCommand::List { templates },
        } => {
            let set = match templates.load() {
                Ok(Some(set)) => set,
                Ok(None) => {
                    eprintln!(
                        "baton: name the templates directory (--templates DIR or BATON_TEMPLATES)"
                    );
                    return Ok(ExitCode::from(EXIT_INVALID));
                }
                Err(code) => return Ok(code),
            };
            for t in set.iter() {
                let params: Vec<String> = t
                    .parameters
                    .iter()
                    .map(|(n, p)| {
                        if p.required {
                            format!("{n}*")
                        } else {
                            n.clone()
                        }
                    })
                    .collect();
                println!(
                    "{}\tparams: {}\ttriggers: {}\t{}",
                    t.name,
                    params.join(", "),
                    t.triggers.join(", "),
                    t.description.as_deref().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            file,
            template,
            params,
            templates,
            workers,
            concurrency,
            no_progress,
            events,
            limits,
            agents,
        } => {
            let templates = match templates.load() {
                Ok(t) => t.map(std::sync::Arc::new),
                Err(code) => return Ok(code),
            };
            let (label, text) = match (&template, &file) {
                (Some(name), _) => {
                    let Some(t) = templates.as_ref().and_then(|set| set.get(name)) else {
                        eprintln!("baton: no template '{name}' (see baton templates list)");
                        return Ok(ExitCode::from(EXIT_INVALID));
                    };
                    let params: serde_json::Map<String, serde_json::Value> =
                        params.into_iter().collect();
                    match t.instantiate(&params) {
                        Ok(plan) => (PathBuf::from(format!("template {name}")), plan.to_string()),
                        Err(e) => {
                            eprintln!("baton: {e}");
                            return Ok(ExitCode::from(EXIT_INVALID));
                        }
                    }
                }
                (None, Some(file)) => match read_plan_or_exit(file) {
                    Ok(t) => (file.clone(), t),
                    Err(code) => return Ok(code),
                },
                (None, None) => unreachable!("clap requires a file or a template"),
            };
            // One thread: every store transition on one core, which the
            // embedded benchmark measured faster than two contending ones.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let show = !no_progress && std::io::stderr().is_terminal();
            let cfg = EngineConfig {
                workers,
                concurrency,
                limits: limits.limits(),
                templates,
                ..EngineConfig::default()
            };
            let registry = match agents.registry_or_exit() {
                Ok(r) => r,
                Err(code) => return Ok(code),
            };
            runtime.block_on(run(&label, &text, registry, cfg, show, events))
        }
    }
}

async fn run(
    file: &std::path::Path,
    text: &str,
    registry: Registry,
    cfg: EngineConfig,
    show_progress: bool,
    print_events: bool,
) -> Result<ExitCode> {
    let store = MemoryStore::new();
    let engine = Engine::start(store.clone(), registry, cfg);
    let watcher = progress::Watcher::start(&store, show_progress, print_events);
    let submission = engine.submit_text(text).await?;
    let code = match submission {
        baton_planner::Submission::Rejected { id, errors } => {
            watcher.follow(&id);
            watcher.finish().await;
            report_invalid(file, &errors)
        }
        baton_planner::Submission::Accepted { id, .. } => {
            watcher.follow(&id);
            let result = tokio::select! {
                r = store.wait_result(&id) => r?,
                _ = tokio::signal::ctrl_c() => {
                    engine.cancel(&id).await?;
                    store.wait_result(&id).await?
                }
            };
            watcher.finish().await;
            println!("{}", serde_json::to_string_pretty(&result)?);
            if result.status == PlanStatus::Succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
    };
    engine.shutdown().await;
    Ok(code)
}

/// Prints every error of an invalid plan on stderr.
fn report_invalid(file: &std::path::Path, errors: &baton_plan::PlanErrors) -> ExitCode {
    eprintln!(
        "{}: invalid plan ({})",
        file.display(),
        counted(errors.0.len(), "error")
    );
    for e in &errors.0 {
        eprintln!("  {e}");
    }
    ExitCode::from(EXIT_INVALID)
}

/// "1 step", "3 steps".
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Reads a plan; an unreadable one ends the command with the invalid-plan
/// exit code, since no plan ran.
fn read_plan_or_exit(file: &std::path::Path) -> std::result::Result<String, ExitCode> {
    read_plan(file).map_err(|e| {
        eprintln!("baton: {e:#}");
        ExitCode::from(EXIT_INVALID)
    })
}

fn read_plan(file: &std::path::Path) -> Result<String> {
    if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the plan from standard input")?;
        Ok(s)
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("reading plan file {}", file.display()))
    }
}
