//! Property tests of the proto <-> domain conversions.
//!
//! - Round trips: every valid domain value survives `domain -> proto -> domain` and
//!   `domain -> proto -> bytes -> proto -> domain` unchanged.
//! - Rejections: a proto value that breaks a constraint (or is structurally wrong: unknown
//!   enum number, bad UUID, invalid JSON, missing or out-of-range timestamp) fails to convert,
//!   and the error names the field by its dotted path.

use std::collections::BTreeSet;
use std::fmt::{Debug, Display};
use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use prost::Message;
use serde_json::{Map, Value};
use turbo_core::agent::{AgentCapability, AgentRole, AgentSpecialization};
use turbo_core::event::{EventKind, TaskEvent};
use turbo_core::ids::{PlanId, ProjectId, TaskId};
use turbo_core::knowledge::KnowledgeChunk;
use turbo_core::plan::{ExecutionPhase, ExecutionPlan, ResourceRequirements};
use turbo_core::project::{Framework, Language, ProjectMetadata, ProjectType};
use turbo_core::protocol::{
    CheckResult, Finding, PhaseAssignment, PhaseOutcome, PlanOutcome, PlanRequest, ReviewReport, ReviewVerdict,
    Severity,
};
use turbo_core::system::SystemConfiguration;
use turbo_core::task::{Complexity, DevelopmentTask, TaskPriority, TaskStatus, TestResults};
use turbo_core::tool::{RiskLevel, TokenUsage, ToolSpec};
use turbo_proto::convert::ProtoEnum;
use turbo_proto::{Error, agents, common, config, knowledge, projects, tasks, tools};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Strategies for valid domain values
// ---------------------------------------------------------------------------------------------

/// Any printable text (all of Unicode but control characters) of up to `max` characters.
fn text(max: usize) -> BoxedStrategy<String> {
    proptest::string::string_regex(&format!("\\PC{{0,{max}}}")).expect("valid regex").boxed()
}

/// Text with at least one non-whitespace character first, for `not_blank` fields.
fn non_blank(max: usize) -> BoxedStrategy<String> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9\\S]\\PC{{0,{max}}}")).expect("valid regex").boxed()
}

fn strings() -> BoxedStrategy<Vec<String>> {
    vec(text(24), 0..4).boxed()
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

/// Any instant of years 1..=9999 (the proto Timestamp range), with arbitrary nanos.
fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    (-62_135_596_800i64..=253_402_300_799i64, 0u32..1_000_000_000)
        .prop_map(|(s, n)| DateTime::from_timestamp(s, n).expect("in range"))
}

/// Any duration a proto Duration can hold, with arbitrary nanos.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..100_000, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..=i64::MAX as u64, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

/// 0..=1 with its bounds.
fn unit_interval() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0f64]
}

/// 0..=100 with its bounds.
fn percentage() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(100.0), 0.0..=100.0f64]
}

fn non_negative() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), 0.0..1e12f64]
}

fn finite() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("finite", |f| f.is_finite())
}

fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite().prop_map(Value::from),
        text(16).prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(text(8), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

fn json_map() -> BoxedStrategy<Map<String, Value>> {
    btree_map(text(12), json_value(), 0..5).prop_map(|m| m.into_iter().collect()).boxed()
}

fn slug() -> impl Strategy<Value = String> {
    "[a-z0-9-]{1,30}"
}

fn abs_path() -> impl Strategy<Value = String> {
    "/[a-zA-Z0-9_./ -]{0,40}"
}

fn risk_levels() -> &'static [RiskLevel] {
    &[RiskLevel::Safe, RiskLevel::Low, RiskLevel::Medium, RiskLevel::High, RiskLevel::Critical]
}

fn project() -> impl Strategy<Value = ProjectMetadata> {
    let a = (
        uuid(),
        proptest::string::string_regex("\\PC{1,100}").expect("valid regex"),
        slug(),
        option::of(text(300)),
        select(ProjectType::ALL),
        vec(select(Language::ALL), 1..4),
        vec(select(Framework::ALL), 0..4),
        option::of(text(40)),
        non_blank(20),
        abs_path(),
    );
    let b = (
        strings(),
        strings(),
        strings(),
        strings(),
        option::of(text(20)),
        strings(),
        strings(),
        option::of(text(20)),
        strings(),
        any::<u64>(),
    );
    let c = (
        option::of(percentage()),
        option::of(non_negative()),
        option::of(non_negative()),
        strings(),
        option::of(text(40)),
        json_map(),
        option::of(timestamp()),
        timestamp(),
        timestamp(),
    );
    (a, b, c).prop_map(|(a, b, c)| ProjectMetadata {
        id: ProjectId(a.0),
        name: a.1,
        slug: a.2,
        description: a.3,
        project_type: a.4,
        languages: a.5,
        frameworks: a.6,
        repository_url: a.7,
        main_branch: a.8,
        root_path: a.9,
        source_directories: b.0,
        test_directories: b.1,
        config_files: b.2,
        dependency_files: b.3,
        build_system: b.4,
        build_commands: b.5,
        test_commands: b.6,
        architecture_pattern: b.7,
        design_patterns: b.8,
        total_lines: b.9,
        test_coverage: c.0,
        complexity_score: c.1,
        technical_debt_hours: c.2,
        team_members: c.3,
        coding_standards: c.4,
        ai_context: c.5,
        last_analyzed: c.6,
        created_at: c.7,
        updated_at: c.8,
    })
}

const AGENT_TYPES: &[&str] = &[
    "planner",
    "coder",
    "tester",
    "reviewer",
    "CoderAgent",
    "TestAgent",
    "ReviewAgent",
    "ArchitectAgent",
    "qa",
    "developer",
];

/// A phase without its name and dependencies, which depend on its place in the plan.
fn phase_body() -> impl Strategy<Value = ExecutionPhase> {
    (non_blank(40), select(AGENT_TYPES), duration(), strings(), strings(), strings(), strings(), strings(), text(10))
        .prop_map(
            |(
                description,
                agent,
                estimated_duration,
                deliverables,
                success_criteria,
                commands,
                files_to_create,
                files_to_modify,
                suffix,
            )| {
                ExecutionPhase {
                    name: suffix,
                    description,
                    agent_type: agent.to_string(),
                    estimated_duration,
                    depends_on: Vec::new(),
                    blocking_for: Vec::new(),
                    deliverables,
                    success_criteria,
                    commands,
                    files_to_create,
                    files_to_modify,
                }
            },
        )
}

fn phase() -> impl Strategy<Value = ExecutionPhase> {
    (phase_body(), non_blank(20), vec(text(10), 0..3), vec(text(10), 0..3)).prop_map(|(mut p, name, deps, blocks)| {
        p.name = name;
        p.depends_on = deps;
        p.blocking_for = blocks;
        p
    })
}

/// 1..=6 phases with unique names; every edge points forward in plan order, so no cycles.
fn phases() -> impl Strategy<Value = Vec<ExecutionPhase>> {
    vec((phase_body(), any::<u8>(), any::<u8>()), 1..=6).prop_map(|bodies| {
        let names: Vec<String> = bodies.iter().enumerate().map(|(i, (p, _, _))| format!("p{i}:{}", p.name)).collect();
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, (mut p, before, after))| {
                p.name = names[i].clone();
                p.depends_on = (0..i).filter(|j| before & (1 << j) != 0).map(|j| names[j].clone()).collect();
                p.blocking_for =
                    (i + 1..names.len()).filter(|j| after & (1 << j) != 0).map(|j| names[j].clone()).collect();
                p
            })
            .collect()
    })
}

fn resources() -> impl Strategy<Value = ResourceRequirements> {
    (1u32..=u32::MAX, non_negative(), non_negative(), text(12)).prop_map(
        |(cpu_cores, memory_gb, storage_gb, network_bandwidth)| ResourceRequirements {
            cpu_cores,
            memory_gb,
            storage_gb,
            network_bandwidth,
        },
    )
}

fn plan() -> impl Strategy<Value = ExecutionPlan> {
    let a = (uuid(), uuid(), 1u32..=u32::MAX, phases(), duration(), unit_interval(), resources());
    let b = (strings(), strings(), strings(), strings(), non_blank(20), timestamp(), timestamp());
    (a, b).prop_map(|(a, b)| ExecutionPlan {
        plan_id: PlanId(a.0),
        task_id: TaskId(a.1),
        version: a.2,
        phases: a.3,
        total_estimated_duration: a.4,
        confidence_score: a.5,
        resource_requirements: a.6,
        risk_factors: b.0,
        mitigation_strategies: b.1,
        required_knowledge: b.2,
        context_sources: b.3,
        generated_by: b.4,
        generated_at: b.5,
        last_updated: b.6,
    })
}

fn test_results() -> impl Strategy<Value = TestResults> {
    (text(30), any::<bool>(), option::of(any::<i32>()), any::<u32>(), text(200)).prop_map(
        |(command, success, exit_code, rounds, output_tail)| TestResults {
            command,
            success,
            exit_code,
            rounds,
            output_tail,
        },
    )
}

fn task() -> impl Strategy<Value = DevelopmentTask> {
    let a = (
        uuid(),
        uuid(),
        proptest::string::string_regex("\\PC{1,200}").expect("valid regex"),
        proptest::string::string_regex("[a-zA-Z]{10,20}\\PC{0,200}").expect("valid regex"),
        "[a-z][a-z_-]{0,15}",
        select(TaskPriority::ALL),
        select(Complexity::ALL),
        strings(),
        json_map(),
        strings(),
    );
    let b = (
        strings(),
        strings(),
        strings(),
        option::of(plan()),
        option::of(duration()),
        strings(),
        select(TaskStatus::ALL),
        percentage(),
        option::of(text(20)),
        strings(),
    );
    let c = (
        option::of(test_results()),
        json_map(),
        option::of(text(20)),
        option::of(text(20)),
        strings(),
        timestamp(),
        option::of(timestamp()),
        option::of(timestamp()),
        option::of(timestamp()),
    );
    (a, b, c).prop_map(|(a, b, c)| {
        let id = TaskId(a.0);
        DevelopmentTask {
            id,
            project_id: ProjectId(a.1),
            title: a.2,
            description: a.3,
            task_type: a.4,
            priority: a.5,
            complexity: a.6,
            requirements: a.7,
            constraints: a.8,
            acceptance_criteria: a.9,
            related_files: b.0,
            dependencies: b.1,
            tags: b.2,
            execution_plan: b.3.map(|mut p| {
                p.task_id = id;
                p
            }),
            estimated_duration: b.4,
            assigned_agents: b.5,
            status: b.6,
            progress_percentage: b.7,
            current_phase: b.8,
            generated_files: b.9,
            test_results: c.0,
            quality_metrics: c.1,
            reviewer: c.2,
            review_status: c.3,
            feedback: c.4,
            created_at: c.5,
            started_at: c.6,
            completed_at: c.7,
            deadline: c.8,
        }
    })
}

fn role() -> impl Strategy<Value = AgentRole> {
    select(AgentRole::ALL)
}

fn event_kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        (text(40), text(40)).prop_map(|(title, workspace)| EventKind::TaskCreated { title, workspace }),
        (select(TaskStatus::ALL), select(TaskStatus::ALL), option::of(text(40)))
            .prop_map(|(from, to, reason)| EventKind::StatusChanged { from, to, reason }),
        (uuid(), any::<u32>(), vec(text(10), 0..4), finite(), any::<u32>()).prop_map(
            |(id, version, phases, confidence, attempts)| {
                EventKind::PlanReady { plan_id: PlanId(id), version, phases, confidence, attempts }
            }
        ),
        (text(10), role(), any::<u32>()).prop_map(|(phase, role, attempt)| EventKind::PhaseStarted {
            phase,
            role,
            attempt
        }),
        (text(10), role(), any::<bool>(), text(40))
            .prop_map(|(phase, role, success, summary)| EventKind::PhaseFinished { phase, role, success, summary }),
        (
            role(),
            option::of(text(10)),
            text(20),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            option::of(any::<u64>()),
            option::of(0.0f64..1e6)
        )
            .prop_map(
                |(role, phase, model, prompt_tokens, completion_tokens, latency_ms, ttft_ms, tokens_per_second)| {
                    EventKind::ModelCall {
                        role,
                        phase,
                        model,
                        prompt_tokens,
                        completion_tokens,
                        latency_ms,
                        ttft_ms,
                        tokens_per_second,
                    }
                }
            ),
        (text(10), any::<u32>(), text(10), json_value())
            .prop_map(|(phase, step, tool, arguments)| EventKind::ToolCall { phase, step, tool, arguments }),
        (text(10), any::<u32>(), text(10), any::<bool>(), text(60), any::<u64>()).prop_map(
            |(phase, step, tool, success, output, duration_ms)| {
                EventKind::ToolResult { phase, step, tool, success, output, duration_ms }
            }
        ),
        (text(20), any::<u32>(), any::<bool>(), option::of(any::<i32>()))
            .prop_map(|(command, round, passed, exit_code)| EventKind::TestRun { command, round, passed, exit_code }),
        (select(ReviewVerdict::ALL), any::<u32>(), text(40))
            .prop_map(|(verdict, findings, summary)| EventKind::Review { verdict, findings, summary }),
        finite().prop_map(|percent| EventKind::Progress { percent }),
        (role(), text(80)).prop_map(|(role, text)| EventKind::AgentMessage { role, text }),
        (text(10), any::<u32>(), text(10), text(20), select(risk_levels()), text(40), timestamp()).prop_map(
            |(phase, step, tool, approval_id, risk, reason, expires_at)| EventKind::ApprovalRequested {
                phase,
                step,
                tool,
                approval_id,
                risk,
                reason,
                expires_at
            }
        ),
        (text(10), any::<u32>(), text(10), text(20), any::<bool>(), text(10), option::of(text(40))).prop_map(
            |(phase, step, tool, approval_id, approved, decided_by, note)| EventKind::ApprovalDecided {
                phase,
                step,
                tool,
                approval_id,
                approved,
                decided_by,
                note
            }
        ),
        (role(), option::of(text(10)), proptest::collection::vec((text(20), text(30), text(80)), 0..4)).prop_map(
            |(role, phase, chunks)| EventKind::ContextRetrieved {
                role,
                phase,
                chunks: chunks
                    .into_iter()
                    .map(|(id, source, excerpt)| turbo_core::event::UsedChunk { id, source, excerpt })
                    .collect()
            }
        ),
    ]
}

fn event() -> impl Strategy<Value = TaskEvent> {
    (uuid(), any::<u64>(), timestamp(), event_kind()).prop_map(|(id, seq, at, kind)| TaskEvent {
        task_id: TaskId(id),
        seq,
        at,
        kind,
    })
}

fn specialization() -> impl Strategy<Value = AgentSpecialization> {
    (
        non_blank(20),
        non_blank(30),
        text(100),
        vec(select(AgentCapability::ALL), 0..4),
        vec(select(Language::ALL), 0..4),
        vec(select(Framework::ALL), 0..4),
        option::of(non_negative()),
        option::of(unit_interval()),
        option::of(unit_interval()),
        1u32..=u32::MAX,
        128u32..=u32::MAX,
        1u32..=u32::MAX,
    )
        .prop_map(|a| AgentSpecialization {
            agent_type: a.0,
            name: a.1,
            description: a.2,
            capabilities: a.3,
            supported_languages: a.4,
            supported_frameworks: a.5,
            average_response_time: a.6,
            success_rate: a.7,
            quality_score: a.8,
            cpu_cores: a.9,
            memory_mb: a.10,
            max_concurrent_tasks: a.11,
        })
}

fn chunk() -> impl Strategy<Value = KnowledgeChunk> {
    let a = (
        non_blank(20),
        non_blank(40),
        proptest::string::string_regex("\\PC{10,200}").expect("valid regex"),
        non_blank(12),
        non_blank(12),
        option::of(text(12)),
        option::of(select(Language::ALL)),
        option::of(select(Framework::ALL)),
        strings(),
        strings(),
        non_blank(30),
    );
    let b = (
        option::of(text(30)),
        option::of(text(20)),
        option::of(unit_interval()),
        any::<u64>(),
        option::of(unit_interval()),
        option::of(vec(-1e6f32..1e6f32, 0..16)),
        option::of(text(20)),
        timestamp(),
        timestamp(),
        option::of(timestamp()),
    );
    (a, b).prop_map(|(a, b)| KnowledgeChunk {
        id: a.0,
        title: a.1,
        content: a.2,
        chunk_type: a.3,
        category: a.4,
        subcategory: a.5,
        language: a.6,
        framework: a.7,
        keywords: a.8,
        tags: a.9,
        source: a.10,
        source_url: b.0,
        author: b.1,
        quality_score: b.2,
        usage_count: b.3,
        success_rate: b.4,
        embedding: b.5,
        embedding_model: b.6,
        created_at: b.7,
        updated_at: b.8,
        last_used: b.9,
    })
}

fn system_config() -> impl Strategy<Value = SystemConfiguration> {
    let a = (
        text(12),
        any::<bool>(),
        text(8),
        text(20),
        1u32..=65535,
        text(6),
        strings(),
        non_blank(40),
        1u32..=u32::MAX,
        1u32..=u32::MAX,
    );
    let b = (
        non_blank(40),
        1u32..=u32::MAX,
        non_blank(20),
        non_blank(20),
        non_blank(20),
        non_blank(40),
        100u32..=u32::MAX,
        60u32..=u32::MAX,
        non_blank(64),
    );
    let c = (
        1u32..=u32::MAX,
        1u32..=u32::MAX,
        1u32..=u32::MAX,
        1u32..=u32::MAX,
        1u32..=u32::MAX,
        any::<bool>(),
        any::<bool>(),
        5u32..=u32::MAX,
    );
    (a, b, c).prop_map(|(a, b, c)| SystemConfiguration {
        environment: a.0,
        debug_mode: a.1,
        log_level: a.2,
        api_host: a.3,
        api_port: a.4,
        api_version: a.5,
        cors_origins: a.6,
        database_url: a.7,
        database_pool_size: a.8,
        database_timeout: a.9,
        redis_url: b.0,
        redis_timeout: b.1,
        planner_model: b.2,
        coder_model: b.3,
        embeddings_model: b.4,
        vector_db_url: b.5,
        max_context_tokens: b.6,
        knowledge_refresh_interval: b.7,
        jwt_secret: b.8,
        jwt_expiry_hours: c.0,
        rate_limit_per_hour: c.1,
        max_concurrent_tasks: c.2,
        task_timeout_minutes: c.3,
        agent_pool_size: c.4,
        metrics_enabled: c.5,
        tracing_enabled: c.6,
        health_check_interval: c.7,
    })
}

fn token_usage() -> impl Strategy<Value = TokenUsage> {
    (any::<u32>(), any::<u32>())
        .prop_map(|(prompt_tokens, completion_tokens)| TokenUsage { prompt_tokens, completion_tokens })
}

fn tool_spec() -> impl Strategy<Value = ToolSpec> {
    (text(20), text(80), json_value()).prop_map(|(name, description, parameters)| ToolSpec {
        name,
        description,
        parameters,
    })
}

fn review_report() -> impl Strategy<Value = ReviewReport> {
    let finding = (select(Severity::ALL), option::of(text(30)), option::of(any::<u32>()), text(60))
        .prop_map(|(severity, path, line, message)| Finding { severity, path, line, message });
    let check = (text(12), text(30), any::<bool>(), text(80))
        .prop_map(|(name, command, passed, output_tail)| CheckResult { name, command, passed, output_tail });
    (select(ReviewVerdict::ALL), text(60), vec(finding, 0..4), vec(check, 0..3))
        .prop_map(|(verdict, summary, findings, checks)| ReviewReport { verdict, summary, findings, checks })
}

fn plan_request() -> impl Strategy<Value = PlanRequest> {
    (task(), abs_path()).prop_map(|(task, workspace)| PlanRequest { task, workspace })
}

fn plan_outcome() -> impl Strategy<Value = PlanOutcome> {
    (plan(), token_usage(), any::<u32>()).prop_map(|(plan, usage, attempts)| PlanOutcome { plan, usage, attempts })
}

fn phase_assignment() -> impl Strategy<Value = PhaseAssignment> {
    (
        uuid(),
        uuid(),
        text(40),
        text(120),
        phase(),
        strings(),
        any::<u32>(),
        abs_path(),
        option::of(text(80)),
        any::<u32>(),
        option::of(uuid()),
    )
        .prop_map(|a| PhaseAssignment {
            task_id: TaskId(a.0),
            plan_id: PlanId(a.1),
            project_id: a.10.map(ProjectId),
            task_title: a.2,
            task_description: a.3,
            phase: a.4,
            plan_outline: a.5,
            attempt: a.6,
            workspace: a.7,
            feedback: a.8,
            max_steps: a.9,
        })
}

fn phase_outcome() -> impl Strategy<Value = PhaseOutcome> {
    (
        any::<bool>(),
        text(80),
        strings(),
        token_usage(),
        any::<u32>(),
        option::of(test_results()),
        option::of(review_report()),
    )
        .prop_map(|(success, summary, files_changed, usage, steps, test, review)| PhaseOutcome {
            success,
            summary,
            files_changed,
            usage,
            steps,
            test,
            review,
        })
}

// ---------------------------------------------------------------------------------------------
// Strategies for invalid values
// ---------------------------------------------------------------------------------------------

/// Floats outside `min..=max`: above, below, NaN and the infinities.
fn outside(min: f64, max: f64) -> BoxedStrategy<f64> {
    prop_oneof![
        (max..=max + 1e6).prop_filter("above max", move |x| *x > max),
        (min - 1e6..min),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
    ]
    .boxed()
}

/// Negative floats and NaN, for `>= 0` fields.
fn negative() -> BoxedStrategy<f64> {
    prop_oneof![(-1e12..0.0f64), Just(f64::NEG_INFINITY), Just(f64::NAN)].boxed()
}

/// Enum numbers no turbo enum defines, and UNSPECIFIED.
fn bad_enum() -> impl Strategy<Value = i32> {
    prop_oneof![Just(0), Just(999), 100..=i32::MAX, i32::MIN..0]
}

/// Strings that are not UUIDs: arbitrary text, and UUIDs with one character broken.
fn bad_uuid() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{1,40}".prop_filter("not a uuid", |s| Uuid::parse_str(s).is_err()),
        (uuid(), 0usize..36).prop_map(|(u, i)| {
            let mut s = u.hyphenated().to_string().into_bytes();
            s[i] = b'z';
            String::from_utf8(s).expect("ascii")
        }),
    ]
}

/// Non-empty text that does not parse as JSON.
fn bad_json() -> impl Strategy<Value = String> {
    prop_oneof![
        json_map().prop_map(|m| {
            let s = serde_json::to_string(&m).unwrap();
            s[..s.len() - 1].to_string()
        }),
        "\\PC{1,30}",
        "\\{\"[a-z]{0,5}\"?:?[0-9]{0,3}",
        "\\[[0-9,]{0,8}",
    ]
    .prop_filter("invalid JSON", |s| !s.trim().is_empty() && serde_json::from_str::<Value>(s).is_err())
}

/// Valid JSON that is not an object, for fields that must hold a JSON object.
fn json_non_object() -> impl Strategy<Value = String> {
    json_value().prop_filter("not an object", |v| !v.is_object()).prop_map(|v| v.to_string())
}

/// Timestamps chrono cannot represent or proto forbids.
fn bad_timestamp() -> impl Strategy<Value = prost_types::Timestamp> {
    prop_oneof![
        (any::<i64>(), i32::MIN..0).prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
        (any::<i64>(), 2_000_000_000..=i32::MAX).prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
        // Leap-second nanos are only valid on the 59th second of a minute.
        (
            (-1_000_000_000i64..1_000_000_000).prop_filter("not :59", |s| s.rem_euclid(60) != 59),
            1_000_000_000..2_000_000_000i32
        )
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
        prop_oneof![1_000_000_000_000_000i64..=i64::MAX, i64::MIN..=-1_000_000_000_000_000i64]
            .prop_map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
    ]
}

/// Negative or unnormalized durations.
fn bad_duration() -> impl Strategy<Value = prost_types::Duration> {
    prop_oneof![
        (i64::MIN..0, 0..1_000_000_000i32).prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
        (0..i64::MAX, i32::MIN..0).prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
        (0..i64::MAX, 1_000_000_000..=i32::MAX).prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// `domain -> proto -> domain` and `domain -> proto -> bytes -> proto -> domain` both give back `d`.
fn roundtrip<D, P>(d: D) -> Result<(), TestCaseError>
where
    D: Clone + PartialEq + Debug + Into<P>,
    P: Message + Default + Clone + PartialEq + Debug + TryInto<D>,
    <P as TryInto<D>>::Error: Display,
{
    let p: P = d.clone().into();
    let back: D = p.clone().try_into().map_err(|e| TestCaseError::fail(format!("direct conversion failed: {e}")))?;
    prop_assert_eq!(&back, &d);

    let bytes = p.encode_to_vec();
    let decoded = P::decode(bytes.as_slice()).map_err(|e| TestCaseError::fail(format!("decode failed: {e}")))?;
    prop_assert_eq!(&decoded, &p);
    let back: D =
        decoded.try_into().map_err(|e| TestCaseError::fail(format!("conversion after decode failed: {e}")))?;
    prop_assert_eq!(&back, &d);
    Ok(())
}

/// Conversion fails, and both the message and the field errors name `field` (a dotted path).
fn rejects<D: Debug, P: TryInto<D, Error = Error>>(p: P, field: &str) -> Result<(), TestCaseError> {
    match p.try_into() {
        Ok(d) => Err(TestCaseError::fail(format!("accepted {d:?}; expected an error naming {field}"))),
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(msg.contains(field), "message {:?} does not name {}", msg, field);
            let fields = e.field_errors();
            prop_assert!(
                fields.0.iter().any(|f| f.field == field),
                "field errors {:?} do not include {}",
                fields,
                field
            );
            Ok(())
        }
    }
}

fn pb_project(p: ProjectMetadata) -> projects::v1::ProjectMetadata {
    p.into()
}

fn pb_task(t: DevelopmentTask) -> tasks::v1::DevelopmentTask {
    t.into()
}

fn pb_plan(p: ExecutionPlan) -> tasks::v1::ExecutionPlan {
    p.into()
}

fn pb_spec(a: AgentSpecialization) -> agents::v1::AgentSpecialization {
    a.into()
}

fn pb_chunk(k: KnowledgeChunk) -> knowledge::v1::KnowledgeChunk {
    k.into()
}

fn pb_config(c: SystemConfiguration) -> config::v1::SystemConfiguration {
    c.into()
}

fn pb_event(e: TaskEvent) -> tasks::v1::TaskEvent {
    e.into()
}

/// A valid task that certainly has a plan.
fn planned_task() -> impl Strategy<Value = DevelopmentTask> {
    (task(), plan()).prop_map(|(mut t, mut p)| {
        p.task_id = t.id;
        t.execution_plan = Some(p);
        t
    })
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn project_roundtrips(p in project()) {
        roundtrip::<_, projects::v1::ProjectMetadata>(p)?;
    }

    #[test]
    fn task_roundtrips(t in task()) {
        roundtrip::<_, tasks::v1::DevelopmentTask>(t)?;
    }

    #[test]
    fn planned_task_roundtrips(t in planned_task()) {
        roundtrip::<_, tasks::v1::DevelopmentTask>(t)?;
    }

    #[test]
    fn plan_roundtrips(p in plan()) {
        roundtrip::<_, tasks::v1::ExecutionPlan>(p)?;
    }

    #[test]
    fn phase_roundtrips(p in phase()) {
        roundtrip::<_, tasks::v1::ExecutionPhase>(p)?;
    }

    #[test]
    fn resources_roundtrip(r in resources()) {
        roundtrip::<_, tasks::v1::ResourceRequirements>(r)?;
    }

    #[test]
    fn test_results_roundtrip(r in test_results()) {
        roundtrip::<_, tasks::v1::TestResults>(r)?;
    }

    #[test]
    fn event_roundtrips(e in event()) {
        roundtrip::<_, tasks::v1::TaskEvent>(e)?;
    }

    #[test]
    fn specialization_roundtrips(a in specialization()) {
        roundtrip::<_, agents::v1::AgentSpecialization>(a)?;
    }

    #[test]
    fn chunk_roundtrips(k in chunk()) {
        roundtrip::<_, knowledge::v1::KnowledgeChunk>(k)?;
    }

    #[test]
    fn system_config_roundtrips(c in system_config()) {
        roundtrip::<_, config::v1::SystemConfiguration>(c)?;
    }

    #[test]
    fn token_usage_roundtrips(u in token_usage()) {
        roundtrip::<_, common::v1::TokenUsage>(u)?;
    }

    #[test]
    fn tool_spec_roundtrips(t in tool_spec()) {
        roundtrip::<_, tools::v1::ToolSpec>(t)?;
    }

    #[test]
    fn plan_request_roundtrips(r in plan_request()) {
        roundtrip::<_, agents::v1::PlanRequest>(r)?;
    }

    #[test]
    fn plan_outcome_roundtrips(o in plan_outcome()) {
        roundtrip::<_, agents::v1::PlanOutcome>(o)?;
    }

    #[test]
    fn phase_assignment_roundtrips(a in phase_assignment()) {
        roundtrip::<_, agents::v1::PhaseAssignment>(a)?;
    }

    #[test]
    fn phase_outcome_roundtrips(o in phase_outcome()) {
        roundtrip::<_, agents::v1::PhaseOutcome>(o)?;
    }

    #[test]
    fn review_report_roundtrips(r in review_report()) {
        roundtrip::<_, agents::v1::ReviewReport>(r)?;
    }

    #[test]
    fn enums_roundtrip(
        l in select(Language::ALL), f in select(Framework::ALL), t in select(ProjectType::ALL), s in select(TaskStatus::ALL),
        p in select(TaskPriority::ALL), c in select(Complexity::ALL), r in role(), cap in select(AgentCapability::ALL),
        risk in select(risk_levels()), v in select(ReviewVerdict::ALL), sev in select(Severity::ALL),
    ) {
        prop_assert_eq!(Language::try_from(common::v1::Language::from(l)), Ok(l));
        prop_assert_eq!(Framework::try_from(common::v1::Framework::from(f)), Ok(f));
        prop_assert_eq!(ProjectType::try_from(common::v1::ProjectType::from(t)), Ok(t));
        prop_assert_eq!(TaskStatus::try_from(common::v1::TaskStatus::from(s)), Ok(s));
        prop_assert_eq!(TaskPriority::try_from(common::v1::TaskPriority::from(p)), Ok(p));
        prop_assert_eq!(Complexity::try_from(common::v1::Complexity::from(c)), Ok(c));
        prop_assert_eq!(AgentRole::try_from(common::v1::AgentRole::from(r)), Ok(r));
        prop_assert_eq!(AgentCapability::try_from(common::v1::AgentCapability::from(cap)), Ok(cap));
        prop_assert_eq!(RiskLevel::try_from(common::v1::RiskLevel::from(risk)), Ok(risk));
        prop_assert_eq!(ReviewVerdict::try_from(common::v1::ReviewVerdict::from(v)), Ok(v));
        prop_assert_eq!(Severity::try_from(common::v1::Severity::from(sev)), Ok(sev));
        prop_assert_eq!(RiskLevel::from_proto("risk_level", risk.to_proto()), Ok(risk));
        // Proto names follow the domain's wire names: LANGUAGE_PYTHON <-> "python".
        prop_assert_eq!(common::v1::Language::from(l).as_str_name(), format!("LANGUAGE_{}", l.as_str().to_uppercase()));
        prop_assert_eq!(common::v1::Framework::from(f).as_str_name(), format!("FRAMEWORK_{}", f.as_str().to_uppercase().replace('-', "_")));
        prop_assert_eq!(common::v1::TaskStatus::from(s).as_str_name(), format!("TASK_STATUS_{}", s.as_str().to_uppercase()));
    }

    /// chrono's leap-second instants (nanos 1e9..2e9 on a :59 second) survive too.
    #[test]
    fn leap_second_timestamps_roundtrip(minute in -1_000_000i64..1_000_000, nanos in 1_000_000_000u32..2_000_000_000, e in event()) {
        let at = DateTime::from_timestamp(minute * 60 + 59, nanos).expect("leap second");
        roundtrip::<_, tasks::v1::TaskEvent>(TaskEvent { at, ..e })?;
    }
}

/// The event strategy reaches every `EventKind` variant, so the round trip covers them all.
#[test]
fn event_strategy_covers_every_variant() {
    let mut runner = TestRunner::deterministic();
    let strategy = event_kind();
    let mut seen = BTreeSet::new();
    for _ in 0..1000 {
        seen.insert(strategy.new_tree(&mut runner).expect("value").current().name());
    }
    assert_eq!(seen.len(), 15, "{seen:?}");
}

// ---------------------------------------------------------------------------------------------
// Rejections: domain constraints
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn project_name_out_of_range(p in project(), name in prop_oneof![Just(String::new()), "\\PC{101,300}"]) {
        rejects::<ProjectMetadata, _>(projects::v1::ProjectMetadata { name, ..pb_project(p) }, "name")?;
    }

    #[test]
    fn project_slug_not_url_safe(
        p in project(),
        slug in prop_oneof![
            Just(String::new()),
            ("[a-z0-9-]{0,10}", "[A-Z_ ./!é]", "[a-z0-9-]{0,10}").prop_map(|(a, b, c)| format!("{a}{b}{c}")),
        ],
    ) {
        rejects::<ProjectMetadata, _>(projects::v1::ProjectMetadata { slug, ..pb_project(p) }, "slug")?;
    }

    #[test]
    fn project_without_languages(p in project()) {
        rejects::<ProjectMetadata, _>(projects::v1::ProjectMetadata { languages: vec![], ..pb_project(p) }, "languages")?;
    }

    #[test]
    fn project_description_too_long(p in project(), d in "\\PC{1001,1100}") {
        rejects::<ProjectMetadata, _>(projects::v1::ProjectMetadata { description: Some(d), ..pb_project(p) }, "description")?;
    }

    #[test]
    fn project_relative_root_path(p in project(), root in "[a-z.][a-z0-9/._-]{0,20}") {
        rejects::<ProjectMetadata, _>(projects::v1::ProjectMetadata { root_path: root, ..pb_project(p) }, "root_path")?;
    }

    #[test]
    fn project_blank_main_branch(p in project(), b in "[ \t]{0,3}") {
        rejects::<ProjectMetadata, _>(projects::v1::ProjectMetadata { main_branch: b, ..pb_project(p) }, "main_branch")?;
    }

    #[test]
    fn project_coverage_out_of_range(p in project(), v in outside(0.0, 100.0)) {
        rejects::<ProjectMetadata, _>(projects::v1::ProjectMetadata { test_coverage: Some(v), ..pb_project(p) }, "test_coverage")?;
    }

    #[test]
    fn project_scores_negative(p in project(), v in negative()) {
        rejects::<ProjectMetadata, _>(projects::v1::ProjectMetadata { complexity_score: Some(v), ..pb_project(p.clone()) }, "complexity_score")?;
        rejects::<ProjectMetadata, _>(projects::v1::ProjectMetadata { technical_debt_hours: Some(v), ..pb_project(p) }, "technical_debt_hours")?;
    }

    #[test]
    fn task_title_out_of_range(t in task(), title in prop_oneof![Just(String::new()), "\\PC{201,400}"]) {
        rejects::<DevelopmentTask, _>(tasks::v1::DevelopmentTask { title, ..pb_task(t) }, "title")?;
    }

    #[test]
    fn task_description_too_short(t in task(), d in prop_oneof!["\\PC{0,9}", "[ \t\n]{0,5}[a-z]{0,9}[ \t\n]{0,20}"]) {
        rejects::<DevelopmentTask, _>(tasks::v1::DevelopmentTask { description: d, ..pb_task(t) }, "description")?;
    }

    #[test]
    fn task_blank_type(t in task(), ty in "[ \t]{0,3}") {
        rejects::<DevelopmentTask, _>(tasks::v1::DevelopmentTask { task_type: ty, ..pb_task(t) }, "task_type")?;
    }

    #[test]
    fn task_progress_out_of_range(t in task(), v in outside(0.0, 100.0)) {
        rejects::<DevelopmentTask, _>(tasks::v1::DevelopmentTask { progress_percentage: v, ..pb_task(t) }, "progress_percentage")?;
    }

    #[test]
    fn task_plan_of_another_task(t in planned_task(), other in uuid()) {
        prop_assume!(other != t.id.0);
        let mut p = pb_task(t);
        p.execution_plan.as_mut().unwrap().task_id = other.to_string();
        rejects::<DevelopmentTask, _>(p, "execution_plan.task_id")?;
    }

    #[test]
    fn nested_plan_confidence_out_of_range(t in planned_task(), v in outside(0.0, 1.0)) {
        let mut p = pb_task(t);
        p.execution_plan.as_mut().unwrap().confidence_score = v;
        rejects::<DevelopmentTask, _>(p, "execution_plan.confidence_score")?;
    }

    #[test]
    fn plan_confidence_out_of_range(p in plan(), v in outside(0.0, 1.0)) {
        rejects::<ExecutionPlan, _>(tasks::v1::ExecutionPlan { confidence_score: v, ..pb_plan(p) }, "confidence_score")?;
    }

    #[test]
    fn plan_version_zero(p in plan()) {
        rejects::<ExecutionPlan, _>(tasks::v1::ExecutionPlan { version: 0, ..pb_plan(p) }, "version")?;
    }

    #[test]
    fn plan_without_phases(p in plan()) {
        rejects::<ExecutionPlan, _>(tasks::v1::ExecutionPlan { phases: vec![], ..pb_plan(p) }, "phases")?;
    }

    #[test]
    fn plan_blank_generated_by(p in plan(), g in "[ \t]{0,3}") {
        rejects::<ExecutionPlan, _>(tasks::v1::ExecutionPlan { generated_by: g, ..pb_plan(p) }, "generated_by")?;
    }

    #[test]
    fn plan_resources_out_of_range(p in plan(), v in negative()) {
        let mut m = pb_plan(p.clone());
        m.resource_requirements.as_mut().unwrap().cpu_cores = 0;
        rejects::<ExecutionPlan, _>(m, "resource_requirements.cpu_cores")?;
        let mut m = pb_plan(p.clone());
        m.resource_requirements.as_mut().unwrap().memory_gb = v;
        rejects::<ExecutionPlan, _>(m, "resource_requirements.memory_gb")?;
        let mut m = pb_plan(p.clone());
        m.resource_requirements.as_mut().unwrap().storage_gb = v;
        rejects::<ExecutionPlan, _>(m, "resource_requirements.storage_gb")?;
        // The same checks on the message alone.
        let mut r = tasks::v1::ResourceRequirements::from(p.resource_requirements);
        r.memory_gb = v;
        rejects::<ResourceRequirements, _>(r.clone(), "memory_gb")?;
        rejects::<ResourceRequirements, _>(tasks::v1::ResourceRequirements { cpu_cores: 0, ..r }, "cpu_cores")?;
    }

    #[test]
    fn plan_phase_with_unknown_agent(p in plan(), i in any::<prop::sample::Index>(), agent in "[a-z]{1,10}wizard") {
        let mut m = pb_plan(p);
        let i = i.index(m.phases.len());
        m.phases[i].agent_type = agent;
        rejects::<ExecutionPlan, _>(m, &format!("phases[{i}].agent_type"))?;
    }

    #[test]
    fn plan_phase_blank(p in plan(), i in any::<prop::sample::Index>(), blank in "[ \t]{0,3}") {
        let mut m = pb_plan(p);
        let i = i.index(m.phases.len());
        m.phases[i].description = blank;
        rejects::<ExecutionPlan, _>(m, &format!("phases[{i}].description"))?;
    }

    #[test]
    fn plan_dependency_on_unknown_phase(p in plan(), i in any::<prop::sample::Index>(), name in "[a-z]{1,10}") {
        let mut m = pb_plan(p);
        let i = i.index(m.phases.len());
        m.phases[i].depends_on.push(format!("missing:{name}"));
        rejects::<ExecutionPlan, _>(m, &format!("phases[{i}].depends_on"))?;
    }

    #[test]
    fn plan_duplicate_phase_names(p in plan(), i in any::<prop::sample::Index>()) {
        let mut m = pb_plan(p);
        let i = i.index(m.phases.len());
        let dup = m.phases[i].clone();
        let n = m.phases.len();
        m.phases.push(tasks::v1::ExecutionPhase { depends_on: vec![], blocking_for: vec![], ..dup });
        rejects::<ExecutionPlan, _>(m, &format!("phases[{n}].name"))?;
    }

    #[test]
    fn plan_dependency_cycle(p in plan(), extra in phase_body()) {
        // Close a loop: the first phase depends on a new last phase that depends on the first.
        let mut m = pb_plan(p);
        let first = m.phases[0].name.clone();
        let last = format!("cycle:{}", extra.name);
        m.phases[0].depends_on.push(last.clone());
        m.phases.push(tasks::v1::ExecutionPhase { name: last, depends_on: vec![first], ..extra.into() });
        rejects::<ExecutionPlan, _>(m, "phases")?;
    }

    #[test]
    fn specialization_limits(a in specialization(), mem in 0u32..128, rate in outside(0.0, 1.0), neg in negative()) {
        rejects::<AgentSpecialization, _>(agents::v1::AgentSpecialization { memory_mb: mem, ..pb_spec(a.clone()) }, "memory_mb")?;
        rejects::<AgentSpecialization, _>(agents::v1::AgentSpecialization { cpu_cores: 0, ..pb_spec(a.clone()) }, "cpu_cores")?;
        rejects::<AgentSpecialization, _>(agents::v1::AgentSpecialization { max_concurrent_tasks: 0, ..pb_spec(a.clone()) }, "max_concurrent_tasks")?;
        rejects::<AgentSpecialization, _>(agents::v1::AgentSpecialization { success_rate: Some(rate), ..pb_spec(a.clone()) }, "success_rate")?;
        rejects::<AgentSpecialization, _>(agents::v1::AgentSpecialization { quality_score: Some(rate), ..pb_spec(a.clone()) }, "quality_score")?;
        rejects::<AgentSpecialization, _>(agents::v1::AgentSpecialization { average_response_time: Some(neg), ..pb_spec(a.clone()) }, "average_response_time")?;
        rejects::<AgentSpecialization, _>(agents::v1::AgentSpecialization { name: " ".into(), ..pb_spec(a) }, "name")?;
    }

    #[test]
    fn chunk_limits(k in chunk(), short in "\\PC{0,9}", rate in outside(0.0, 1.0), blank in "[ \t]{0,3}") {
        rejects::<KnowledgeChunk, _>(knowledge::v1::KnowledgeChunk { content: short, ..pb_chunk(k.clone()) }, "content")?;
        rejects::<KnowledgeChunk, _>(knowledge::v1::KnowledgeChunk { quality_score: Some(rate), ..pb_chunk(k.clone()) }, "quality_score")?;
        rejects::<KnowledgeChunk, _>(knowledge::v1::KnowledgeChunk { success_rate: Some(rate), ..pb_chunk(k.clone()) }, "success_rate")?;
        rejects::<KnowledgeChunk, _>(knowledge::v1::KnowledgeChunk { id: blank.clone(), ..pb_chunk(k.clone()) }, "id")?;
        rejects::<KnowledgeChunk, _>(knowledge::v1::KnowledgeChunk { source: blank, ..pb_chunk(k.clone()) }, "source")?;
        let embedding = Some(knowledge::v1::Embedding { values: vec![0.5, f32::NAN, f32::INFINITY] });
        rejects::<KnowledgeChunk, _>(knowledge::v1::KnowledgeChunk { embedding, ..pb_chunk(k) }, "embedding")?;
    }

    #[test]
    fn config_port_out_of_range(c in system_config(), port in prop_oneof![Just(0u32), 65536u32..=u32::MAX]) {
        rejects::<SystemConfiguration, _>(config::v1::SystemConfiguration { api_port: port, ..pb_config(c) }, "api_port")?;
    }

    #[test]
    fn config_minimums(c in system_config(), tokens in 0u32..100, refresh in 0u32..60, health in 0u32..5, blank in "[ \t]{0,3}") {
        rejects::<SystemConfiguration, _>(config::v1::SystemConfiguration { max_context_tokens: tokens, ..pb_config(c.clone()) }, "max_context_tokens")?;
        rejects::<SystemConfiguration, _>(config::v1::SystemConfiguration { knowledge_refresh_interval: refresh, ..pb_config(c.clone()) }, "knowledge_refresh_interval")?;
        rejects::<SystemConfiguration, _>(config::v1::SystemConfiguration { health_check_interval: health, ..pb_config(c.clone()) }, "health_check_interval")?;
        rejects::<SystemConfiguration, _>(config::v1::SystemConfiguration { database_pool_size: 0, ..pb_config(c.clone()) }, "database_pool_size")?;
        rejects::<SystemConfiguration, _>(config::v1::SystemConfiguration { jwt_secret: blank.clone(), ..pb_config(c.clone()) }, "jwt_secret")?;
        rejects::<SystemConfiguration, _>(config::v1::SystemConfiguration { database_url: blank, ..pb_config(c) }, "database_url")?;
    }

    #[test]
    fn nested_messages_are_validated(r in plan_request(), o in plan_outcome(), a in phase_assignment(), v in outside(0.0, 100.0), blank in "[ \t]{0,3}") {
        let mut m = agents::v1::PlanRequest::from(r);
        m.task.as_mut().unwrap().progress_percentage = v;
        rejects::<PlanRequest, _>(m, "task.progress_percentage")?;
        let mut m = agents::v1::PlanOutcome::from(o);
        m.plan.as_mut().unwrap().version = 0;
        rejects::<PlanOutcome, _>(m, "plan.version")?;
        let mut m = agents::v1::PhaseAssignment::from(a);
        m.phase.as_mut().unwrap().name = blank;
        rejects::<PhaseAssignment, _>(m, "phase.name")?;
    }
}

// ---------------------------------------------------------------------------------------------
// Rejections: structure (enums, ids, JSON, timestamps, durations, required fields)
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn project_bad_enums(p in project(), n in bad_enum()) {
        rejects::<ProjectMetadata, _>(projects::v1::ProjectMetadata { project_type: n, ..pb_project(p.clone()) }, "project_type")?;
        let mut m = pb_project(p.clone());
        m.languages.push(n);
        let i = m.languages.len() - 1;
        rejects::<ProjectMetadata, _>(m, &format!("languages[{i}]"))?;
        let mut m = pb_project(p);
        m.frameworks.insert(0, n);
        rejects::<ProjectMetadata, _>(m, "frameworks[0]")?;
    }

    #[test]
    fn task_bad_enums(t in task(), n in bad_enum()) {
        rejects::<DevelopmentTask, _>(tasks::v1::DevelopmentTask { status: n, ..pb_task(t.clone()) }, "status")?;
        rejects::<DevelopmentTask, _>(tasks::v1::DevelopmentTask { priority: n, ..pb_task(t.clone()) }, "priority")?;
        rejects::<DevelopmentTask, _>(tasks::v1::DevelopmentTask { complexity: n, ..pb_task(t) }, "complexity")?;
    }

    #[test]
    fn event_bad_enums(e in event(), n in bad_enum()) {
        use tasks::v1::task_event::Kind;
        let mut m = pb_event(e);
        let field = match m.kind.as_mut().unwrap() {
            Kind::StatusChanged(k) => { k.to = n; Some("status_changed.to") }
            Kind::PhaseStarted(k) => { k.role = n; Some("phase_started.role") }
            Kind::PhaseFinished(k) => { k.role = n; Some("phase_finished.role") }
            Kind::ModelCall(k) => { k.role = n; Some("model_call.role") }
            Kind::Review(k) => { k.verdict = n; Some("review.verdict") }
            Kind::AgentMessage(k) => { k.role = n; Some("agent_message.role") }
            Kind::ContextRetrieved(k) => { k.role = n; Some("context_retrieved.role") }
            Kind::ApprovalRequested(k) => { k.risk_level = n; Some("approval_requested.risk_level") }
            _ => None,
        };
        if let Some(field) = field {
            rejects::<TaskEvent, _>(m, field)?;
        }
    }

    #[test]
    fn other_bad_enums(a in specialization(), k in chunk(), o in phase_outcome(), r in review_report(), n in bad_enum()) {
        let mut m = pb_spec(a);
        m.capabilities.push(n);
        let i = m.capabilities.len() - 1;
        rejects::<AgentSpecialization, _>(m, &format!("capabilities[{i}]"))?;
        rejects::<KnowledgeChunk, _>(knowledge::v1::KnowledgeChunk { language: Some(n), ..pb_chunk(k.clone()) }, "language")?;
        rejects::<KnowledgeChunk, _>(knowledge::v1::KnowledgeChunk { framework: Some(n), ..pb_chunk(k) }, "framework")?;
        rejects::<ReviewReport, _>(agents::v1::ReviewReport { verdict: n, ..r.clone().into() }, "verdict")?;
        let mut m = agents::v1::ReviewReport::from(r);
        m.findings.push(agents::v1::Finding { severity: n, path: None, line: None, message: "x".into() });
        let i = m.findings.len() - 1;
        rejects::<ReviewReport, _>(m.clone(), &format!("findings[{i}].severity"))?;
        let outcome = agents::v1::PhaseOutcome { review: Some(m), ..o.into() };
        rejects::<PhaseOutcome, _>(outcome, &format!("review.findings[{i}].severity"))?;
        prop_assert!(RiskLevel::from_proto("risk_level", n).unwrap_err().to_string().contains("risk_level"));
    }

    #[test]
    fn bad_ids(t in planned_task(), e in event(), a in phase_assignment(), id in bad_uuid()) {
        rejects::<DevelopmentTask, _>(tasks::v1::DevelopmentTask { id: id.clone(), ..pb_task(t.clone()) }, "id")?;
        rejects::<DevelopmentTask, _>(tasks::v1::DevelopmentTask { project_id: id.clone(), ..pb_task(t.clone()) }, "project_id")?;
        let mut m = pb_task(t);
        m.execution_plan.as_mut().unwrap().plan_id = id.clone();
        rejects::<DevelopmentTask, _>(m, "execution_plan.plan_id")?;
        rejects::<TaskEvent, _>(tasks::v1::TaskEvent { task_id: id.clone(), ..pb_event(e) }, "task_id")?;
        let ready = TaskEvent { task_id: TaskId::new(), seq: 1, at: Utc::now(), kind: EventKind::PlanReady { plan_id: PlanId::new(), version: 1, phases: vec![], confidence: 0.5, attempts: 1 } };
        let mut m = pb_event(ready);
        if let Some(tasks::v1::task_event::Kind::PlanReady(k)) = m.kind.as_mut() {
            k.plan_id = id.clone();
        }
        rejects::<TaskEvent, _>(m, "plan_ready.plan_id")?;
        rejects::<PhaseAssignment, _>(agents::v1::PhaseAssignment { plan_id: id, ..a.into() }, "plan_id")?;
    }

    #[test]
    fn bad_json_text(p in project(), t in task(), s in tool_spec(), text in bad_json(), non_object in json_non_object()) {
        rejects::<ProjectMetadata, _>(projects::v1::ProjectMetadata { ai_context_json: text.clone(), ..pb_project(p.clone()) }, "ai_context_json")?;
        rejects::<ProjectMetadata, _>(projects::v1::ProjectMetadata { ai_context_json: non_object.clone(), ..pb_project(p) }, "ai_context_json")?;
        rejects::<DevelopmentTask, _>(tasks::v1::DevelopmentTask { constraints_json: text.clone(), ..pb_task(t.clone()) }, "constraints_json")?;
        rejects::<DevelopmentTask, _>(tasks::v1::DevelopmentTask { quality_metrics_json: non_object, ..pb_task(t) }, "quality_metrics_json")?;
        rejects::<ToolSpec, _>(tools::v1::ToolSpec { parameters_json: text.clone(), ..s.into() }, "parameters_json")?;
        let call = TaskEvent { task_id: TaskId::new(), seq: 2, at: Utc::now(), kind: EventKind::ToolCall { phase: "code".into(), step: 1, tool: "read_file".into(), arguments: Value::Null } };
        let mut m = pb_event(call);
        if let Some(tasks::v1::task_event::Kind::ToolCall(k)) = m.kind.as_mut() {
            k.arguments_json = text;
        }
        rejects::<TaskEvent, _>(m, "tool_call.arguments_json")?;
    }

    #[test]
    fn bad_timestamps(p in project(), t in planned_task(), k in chunk(), e in event(), ts in bad_timestamp()) {
        rejects::<ProjectMetadata, _>(projects::v1::ProjectMetadata { created_at: Some(ts), ..pb_project(p.clone()) }, "created_at")?;
        rejects::<ProjectMetadata, _>(projects::v1::ProjectMetadata { last_analyzed: Some(ts), ..pb_project(p) }, "last_analyzed")?;
        rejects::<DevelopmentTask, _>(tasks::v1::DevelopmentTask { deadline: Some(ts), ..pb_task(t.clone()) }, "deadline")?;
        let mut m = pb_task(t);
        m.execution_plan.as_mut().unwrap().generated_at = Some(ts);
        rejects::<DevelopmentTask, _>(m, "execution_plan.generated_at")?;
        rejects::<KnowledgeChunk, _>(knowledge::v1::KnowledgeChunk { updated_at: Some(ts), ..pb_chunk(k) }, "updated_at")?;
        rejects::<TaskEvent, _>(tasks::v1::TaskEvent { at: Some(ts), ..pb_event(e) }, "at")?;
    }

    #[test]
    fn bad_durations(t in planned_task(), p in plan(), d in bad_duration(), i in any::<prop::sample::Index>()) {
        rejects::<DevelopmentTask, _>(tasks::v1::DevelopmentTask { estimated_duration: Some(d), ..pb_task(t.clone()) }, "estimated_duration")?;
        let mut m = pb_task(t);
        let plan = m.execution_plan.as_mut().unwrap();
        let i = i.index(plan.phases.len());
        plan.phases[i].estimated_duration = Some(d);
        rejects::<DevelopmentTask, _>(m, &format!("execution_plan.phases[{i}].estimated_duration"))?;
        rejects::<ExecutionPlan, _>(tasks::v1::ExecutionPlan { total_estimated_duration: Some(d), ..pb_plan(p) }, "total_estimated_duration")?;
    }

    #[test]
    fn missing_required_fields(p in project(), t in planned_task(), pl in plan(), e in event(), k in chunk(), o in plan_outcome(), a in phase_assignment()) {
        rejects::<ProjectMetadata, _>(projects::v1::ProjectMetadata { created_at: None, ..pb_project(p.clone()) }, "created_at")?;
        rejects::<ProjectMetadata, _>(projects::v1::ProjectMetadata { id: String::new(), ..pb_project(p) }, "id")?;
        rejects::<DevelopmentTask, _>(tasks::v1::DevelopmentTask { created_at: None, ..pb_task(t.clone()) }, "created_at")?;
        let mut m = pb_task(t);
        m.execution_plan.as_mut().unwrap().phases[0].estimated_duration = None;
        rejects::<DevelopmentTask, _>(m, "execution_plan.phases[0].estimated_duration")?;
        rejects::<ExecutionPlan, _>(tasks::v1::ExecutionPlan { resource_requirements: None, ..pb_plan(pl.clone()) }, "resource_requirements")?;
        rejects::<ExecutionPlan, _>(tasks::v1::ExecutionPlan { last_updated: None, ..pb_plan(pl) }, "last_updated")?;
        rejects::<TaskEvent, _>(tasks::v1::TaskEvent { kind: None, ..pb_event(e.clone()) }, "kind")?;
        rejects::<TaskEvent, _>(tasks::v1::TaskEvent { at: None, ..pb_event(e) }, "at")?;
        rejects::<KnowledgeChunk, _>(knowledge::v1::KnowledgeChunk { created_at: None, ..pb_chunk(k) }, "created_at")?;
        rejects::<PlanOutcome, _>(agents::v1::PlanOutcome { plan: None, ..o.into() }, "plan")?;
        rejects::<PhaseAssignment, _>(agents::v1::PhaseAssignment { phase: None, ..a.clone().into() }, "phase")?;
        rejects::<PhaseAssignment, _>(agents::v1::PhaseAssignment { task_id: String::new(), ..a.into() }, "task_id")?;
        rejects::<PlanRequest, _>(agents::v1::PlanRequest { task: None, workspace: "/w".into() }, "task")?;
    }

    /// Errors become INVALID_ARGUMENT statuses that carry the message and the field errors.
    #[test]
    fn errors_become_invalid_argument_statuses(p in project(), name in "\\PC{101,200}") {
        let err = ProjectMetadata::try_from(projects::v1::ProjectMetadata { name, ..pb_project(p) }).unwrap_err();
        let status = tonic::Status::from(err.clone());
        prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
        prop_assert!(status.message().contains("name"));
        prop_assert_eq!(turbo_proto::error::field_errors_of(&status), Some(err.field_errors()));
    }
}

/// Absent token usage reads as zero rather than failing.
#[test]
fn absent_usage_reads_as_zero() {
    let mut runner = TestRunner::deterministic();
    let outcome = plan_outcome().new_tree(&mut runner).expect("value").current();
    let back = PlanOutcome::try_from(agents::v1::PlanOutcome { usage: None, ..outcome.clone().into() }).expect("valid");
    assert_eq!(back, PlanOutcome { usage: TokenUsage::default(), ..outcome });
}
