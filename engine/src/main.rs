//! `flywheel-engine serve --model DIR`: see the crate documentation.

use std::{
    io::{Read, Write},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
};

use clap::{Parser, Subcommand, ValueEnum};
use flywheel_api::keys::parse_sha256_hex;
use flywheel_engine::{
    registry::{Deployment, EngineOptions, Registry},
    server::{router, AppState},
};
use mistralrs::{IsqType, ModelDType};

#[derive(Parser)]
#[command(
    name = "flywheel-engine",
    version,
    about = "Flywheel inference engine (mistral.rs behind an OpenAI-compatible API)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a model directory and serve the OpenAI-compatible API. The first line on stdout
    /// is `listening on ADDR`, printed once the model is loaded.
    Serve(ServeArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DType {
    F32,
    Bf16,
    F16,
    Auto,
}

/// In-situ quantization of the weights at load: `auto` picks, `none` keeps `--dtype`, the
/// others are the types worth trying on a CPU (candle's GGML kernels).
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Isq {
    Auto,
    None,
    #[value(name = "q4_0")]
    Q4_0,
    Q4k,
    Q5k,
    Q6k,
    #[value(name = "q8_0")]
    Q8_0,
}

impl Isq {
    /// The quantization a version loads with. `auto` is Q8_0 on a CPU whose vector kernels
    /// this build has (AVX2 or NEON, chosen by candle at compile time): there it decodes
    /// 2.5-3x faster than F32 and keeps up with llama.cpp (BENCHMARKS §3). On a GPU, or a
    /// CPU build without those kernels (where the quantized matmuls are scalar loops, 4x
    /// slower than F32), `auto` is none.
    fn resolve(self, on_cpu: bool) -> Option<IsqType> {
        let fast_cpu_kernels = cfg!(any(target_feature = "avx2", target_feature = "neon"));
        match self {
            Isq::Auto if on_cpu && fast_cpu_kernels => Some(IsqType::Q8_0),
            Isq::Auto | Isq::None => None,
            Isq::Q4_0 => Some(IsqType::Q4_0),
            Isq::Q4k => Some(IsqType::Q4K),
            Isq::Q5k => Some(IsqType::Q5K),
            Isq::Q6k => Some(IsqType::Q6K),
            Isq::Q8_0 => Some(IsqType::Q8_0),
        }
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// HF-style model directory (config.json, tokenizer.json, *.safetensors), e.g. the
    /// output of `flywheel-models fetch smollm2`.
    #[arg(long)]
    model: PathBuf,
    /// Version name of this model (the `model` field of requests).
    #[arg(long, default_value = "base")]
    name: String,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// sha256 (hex) of the admin bearer token. Without it the /admin routes (runtime deploys
    /// and unloads of versions, aliases) do not exist.
    #[arg(
        long,
        env = "FLYWHEEL_ENGINE_ADMIN_TOKEN_SHA256",
        hide_env_values = true
    )]
    admin_token_sha256: Option<String>,
    /// Weight dtype as loaded (before `--isq`). On a CPU F32 is the fastest unquantized
    /// (F16 decodes at 0.74x on one stream and 0.28x over 8, BENCHMARKS §3), and BF16 is
    /// refused at start: candle 0.10.2's CPU matmul has no BF16 kernel.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DType,
    /// Quantize the weights when a version loads (mistral.rs in-situ quantization), base
    /// and deployed versions alike. `none` (default): the weights stay in `--dtype`, the
    /// trainer's numerics bit for bit. `auto`: Q8_0 on a CPU build with AVX2 or NEON kernels
    /// (`scripts/lib.sh` `build_engine` enables AVX2 where the CPU has it), none on a GPU;
    /// on a CPU about 2.7x F32's decode speed, on a par with llama.cpp, and batched answers
    /// equal the ones given alone, but SmolLM2's task-suite scores were lower with it on 4 of
    /// 5 tasks (BENCHMARKS §3), so it is not the default.
    #[arg(long, value_enum, default_value = "none")]
    isq: Isq,
    /// Most sequences decoded together per version (mistral.rs max_num_seqs).
    /// Batched answers equal the ones given alone in the engine tests
    /// `concurrent_requests_get_their_own_answers` and
    /// `answers_set_aside_mid_decode_continue_where_they_were` (mistral.rs 0.8.1
    /// needed the fixes in vendor/PATCHES.md §1, §4 and §9 for that); 1 decodes
    /// one request at a time.
    #[arg(long, default_value_t = 32)]
    max_seqs: usize,
    /// Sequences kept in mistral.rs's prefix cache per version (0: off).
    #[arg(long, default_value_t = 16)]
    prefix_cache: usize,
    /// max_tokens for requests that give none.
    #[arg(long, default_value_t = 512)]
    default_max_tokens: usize,
    /// Run on the CPU even in a CUDA build.
    #[arg(long)]
    cpu: bool,
    /// Pin the compute threads (the global rayon pool, where candle and mistral.rs run
    /// their matmuls and attention) one to each CPU this process may use, in order,
    /// instead of letting the scheduler move them (RAYON_NUM_THREADS threads, default one
    /// per CPU). Linux only. Off by default: on the 2-vCPU machine of BENCHMARKS §3
    /// ("Thread pinning, F16, BF16 and --max-seqs") decoding was within 1.5 % of unpinned.
    #[arg(long)]
    pin_threads: bool,
    /// Exit when stdin reaches end-of-file (used by tests so that the server dies with them).
    #[arg(long, hide = true)]
    exit_on_stdin_eof: bool,
    #[command(flatten)]
    tls: flywheel_listener::TlsArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // Belt and braces: we only ever load local directories (checked first), never the hub.
    // SAFETY-free in edition 2021; set before any thread is started.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    match cli.command {
        Command::Serve(args) => {
            if args.pin_threads {
                // Before anything starts the global pool.
                match pin_compute_threads() {
                    Ok(cpus) => tracing::info!(?cpus, "compute threads pinned, one per CPU"),
                    Err(e) => {
                        eprintln!("flywheel-engine: error: --pin-threads: {e:#}");
                        return ExitCode::from(1);
                    }
                }
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(serve(args)) {
                Ok(()) => {
                    // mistral.rs engine threads never exit on their own.
                    std::process::exit(0)
                }
                Err(e) => {
                    eprintln!("flywheel-engine: error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Builds the global rayon pool with each worker pinned to one of the CPUs this process
/// may run on (thread i on the i-th, round robin); the CPUs, in pool order.
#[cfg(target_os = "linux")]
fn pin_compute_threads() -> anyhow::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for this thread.
    let allowed = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            anyhow::bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect::<Vec<_>>()
    };
    if allowed.is_empty() {
        anyhow::bail!("no CPU in this process's affinity mask");
    }
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(allowed.len());
    let order: Vec<usize> = (0..threads).map(|i| allowed[i % allowed.len()]).collect();
    let pins = order.clone();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .start_handler(move |i| {
            let cpu = pins[i % pins.len()];
            // SAFETY: as above; pid 0 is the calling thread.
            let rc = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
            };
            if rc != 0 {
                tracing::warn!(cpu, error = %std::io::Error::last_os_error(), "cannot pin a compute thread");
            }
        })
        .build_global()
        .map_err(|e| anyhow::anyhow!("the global thread pool: {e}"))?;
    Ok(order)
}

#[cfg(not(target_os = "linux"))]
fn pin_compute_threads() -> anyhow::Result<Vec<usize>> {
    anyhow::bail!("thread pinning is implemented for Linux only")
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Parsed once here; each admin request compares its token's digest with it.
    let admin_sha256 = match args.admin_token_sha256.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(h) => Some(parse_sha256_hex(h).ok_or_else(|| {
            let found = match h.chars().count() {
                64 => "a character that is not a hex digit".to_string(),
                n => format!("{n} characters"),
            };
            anyhow::anyhow!(
                "--admin-token-sha256 / FLYWHEEL_ENGINE_ADMIN_TOKEN_SHA256 must be 64 hex digits \
                 (the sha256 of the admin token, as `printf %s TOKEN | sha256sum` prints it), \
                 found {found}"
            )
        })?),
    };
    if args.default_max_tokens == 0 {
        anyhow::bail!("--default-max-tokens must be at least 1");
    }
    if matches!(args.dtype, DType::Bf16) && (args.cpu || !cfg!(feature = "cuda")) {
        // Found by the engine benchmark: the weights load, then every request fails.
        anyhow::bail!(
            "--dtype bf16 does not run on the CPU: candle 0.10.2's CPU matmul has no BF16 \
             kernel, so every request would fail; use f32 (the default) or f16"
        );
    }
    // Checked before the weights load: a bad certificate path fails in a second, not a minute.
    let tls = args.tls.load()?;
    let opts = EngineOptions {
        dtype: match args.dtype {
            DType::F32 => ModelDType::F32,
            DType::Bf16 => ModelDType::BF16,
            DType::F16 => ModelDType::F16,
            DType::Auto => ModelDType::Auto,
        },
        isq: args.isq.resolve(args.cpu || !cfg!(feature = "cuda")),
        max_seqs: args.max_seqs,
        prefix_cache_n: args.prefix_cache,
        force_cpu: args.cpu,
    };
    let base = Deployment::checkpoint(args.name.clone(), args.model.clone());
    // Checked before anything is loaded: mistral.rs would take a missing path for a hub id.
    base.validate()?;
    tracing::info!(dtype = ?args.dtype, isq = ?opts.isq, "weights");
    let t0 = std::time::Instant::now();
    let registry = Registry::start(base, opts).await?;
    tracing::info!(name = %args.name, secs = t0.elapsed().as_secs_f64(), "model loaded");
    let state = Arc::new(AppState {
        registry,
        admin_sha256,
        default_max_tokens: args.default_max_tokens,
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    if admin_sha256.is_none() {
        tracing::info!("no admin token configured: /admin routes are disabled");
    }
    if args.exit_on_stdin_eof {
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
            tracing::info!("stdin closed: exiting");
            std::process::exit(0);
        });
    }
    // The gateway's accept loop and its default bounds: a client that
    // connects and sends nothing, or trickles, cannot hold a slot forever.
    flywheel_listener::serve_until_signal(listener, router(state), tls.as_ref()).await;
    Ok(())
}
