//! `turbo-tool-runner`: the tool-runner as a process of its own, the same service as
//! `turbo-coder serve tool-runner`. Thin by design: everything but the service is in `turbo_service`.

turbo_service::main!("turbo-tool-runner", tool_runner, |s| turbo_tool_runner::run(&s.config, s.listener, s.shutdown));
