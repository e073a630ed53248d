fn main() -> std::process::ExitCode {
    metro::client::main()
}
