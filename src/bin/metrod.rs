fn main() -> std::process::ExitCode {
    metro::daemon::main()
}
