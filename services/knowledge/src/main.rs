//! `turbo-knowledge`: the knowledge service as a process of its own, the same service as
//! `turbo-coder serve knowledge`. Thin by design: everything but the service is in `turbo_service`.

turbo_service::main!("turbo-knowledge", knowledge, |s| turbo_knowledge::run(&s.config, s.listener, s.shutdown));
