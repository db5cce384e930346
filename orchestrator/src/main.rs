//! The binary: everything lives in the library, so benchmarks and fuzz targets build the
//! same code.

fn main() -> std::process::ExitCode {
    rayefa_orchestrator::main()
}
