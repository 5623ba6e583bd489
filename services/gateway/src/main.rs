//! `turbo-gateway`: the gateway as a process of its own, the same service as
//! `turbo-coder serve gateway`. Thin by design: everything but the service is in `turbo_service`.

turbo_service::main!("turbo-gateway", gateway, |s| turbo_gateway::run(&s.config, s.listener, s.shutdown));
