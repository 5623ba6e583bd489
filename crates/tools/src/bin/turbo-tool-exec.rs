//! Runs one file tool call inside the sandbox: the call as JSON on stdin, the answer as JSON on
//! stdout. Started by the tool-runner (see the `confined` module of turbo-tools).

fn main() -> std::process::ExitCode {
    turbo_tools::tool_exec_main()
}
