//! `turbo-orchestrator`: the orchestrator as a process of its own, the same service as
//! `turbo-coder serve orchestrator`. Thin by design: everything but the service is in `turbo_service`.

turbo_service::main!("turbo-orchestrator", orchestrator, |s| turbo_orchestrator::run(
    &s.config, s.listener, s.shutdown
));
