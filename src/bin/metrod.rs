// glibc malloc took 30 % of the daemon's CPU under publish load
// (docs/benchmarks.md); jemalloc's thread caches fit its allocate-here,
// free-there pattern better, and keep memory tight.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    metro::daemon::main()
}
