fn main() -> std::process::ExitCode {
    rvm_loader::cli::main()
}
