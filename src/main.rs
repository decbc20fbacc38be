//! The `nodedns` binary: parse the command line and hand over to [`nodedns::cli`].

fn main() -> std::process::ExitCode {
    nodedns::cli::main()
}
