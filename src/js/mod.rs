//! The napi binding: the only module that knows about Node. It turns JS values
//! into Rust ones (config via [`walk`]), runs heavy work off the JS thread, and
//! turns results into `Buffer` / `Float32Array` and crate errors into JS errors
//! carrying the crate's stable `code`.

mod admin;
mod cache;
mod handoff;
mod portfolio;
mod walk;

use std::panic::{catch_unwind, AssertUnwindSafe};

use napi::bindgen_prelude::{
    AsyncTask, Buffer, BufferSlice, Float32Array, FromNapiValue, JsValue, Object, ToNapiValue,
    TypeName, Unknown,
};
use napi::{Env, JsError, Task};
use napi_derive::napi;

use crate::cache::{CallerBytes, CallerCopy};
use crate::config::{ScenarioConfig, Value};
use crate::scenario::{self, Metadata};
use crate::tier::Source;
use crate::view::ColumnOrder;
use crate::{codec, Error};

// ---------- errors ----------

/// A JS `Error` whose `code` is the crate's code (`E_CONFIG`, ...); config
/// errors also carry `issues: [{path, expected, given}]`.
fn js_error(env: &Env, e: &Error) -> napi::Error {
    let base: napi::Error<String> = napi::Error::new(e.code().to_string(), e.to_string());
    let unknown = JsError::from(base).into_unknown(*env);
    if let Error::Config(issues) = e {
        let issues: Vec<ConfigIssue> = issues
            .iter()
            .map(|i| ConfigIssue {
                path: i.path.clone(),
                expected: i.expected.clone(),
                given: i.given.clone(),
            })
            .collect();
        // SAFETY: `into_unknown` of a JsError is an object.
        if let Ok(mut obj) = unsafe { unknown.cast::<Object>() } {
            let _ = obj.set("issues", issues);
        }
    }
    napi::Error::from(unknown)
}

/// Runs `f`, turning a panic into `E_INTERNAL` so no panic reaches Node.
fn guarded<T>(f: impl FnOnce() -> crate::Result<T>) -> crate::Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(Error::Internal(panic_message(&*p))))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned());
    format!("panic: {}", msg.unwrap_or_else(|| "unknown".into()))
}

fn sync_call<T>(env: &Env, f: impl FnOnce() -> crate::Result<T>) -> napi::Result<T> {
    guarded(f).map_err(|e| {
        clear_pending_exception(env);
        js_error(env, &e)
    })
}

/// Reading an argument can run JS (a getter, a Proxy trap) that throws; napi
/// reports the failure and leaves the exception pending, and a pending
/// exception would replace our coded error (and make a promise-returning
/// call throw). The reading code has already turned the failure into a coded
/// error; the leftover exception is dropped here.
fn clear_pending_exception(env: &Env) {
    let mut pending = false;
    // SAFETY: plain napi calls on the JS thread with a live env.
    unsafe {
        napi::sys::napi_is_exception_pending(env.raw(), &mut pending);
        if pending {
            let mut exception = std::ptr::null_mut();
            napi::sys::napi_get_and_clear_last_exception(env.raw(), &mut exception);
        }
    }
}

fn parse_config(v: &Unknown) -> crate::Result<ScenarioConfig> {
    ScenarioConfig::from_value(&read_value(v, "the config")?)
}

/// Any JS argument as a value tree, so a wrong type becomes a coded error
/// (`E_INVALID_ARGUMENT`) rather than napi's uncoded conversion error.
fn read_value(v: &Unknown, what: &str) -> crate::Result<Value> {
    walk::to_value(v).map_err(|e| Error::InvalidArgument(format!("could not read {what}: {e}")))
}

fn read_string(v: &Unknown, what: &str) -> crate::Result<String> {
    match read_value(v, what)? {
        Value::String(s) => Ok(s),
        other => Err(Error::InvalidArgument(format!(
            "{what} must be a string, got {}",
            other.describe()
        ))),
    }
}

/// An argument through napi's own conversion (typed arrays, buffers, objects
/// of declared shape), its failure coded `E_INVALID_ARGUMENT`.
fn convert<T: FromNapiValue>(env: &Env, v: &Unknown, what: &str) -> crate::Result<T> {
    // SAFETY: both handles are live for this call, on the JS thread.
    unsafe { T::from_napi_value(env.raw(), v.raw()) }
        .map_err(|e| Error::InvalidArgument(format!("{what}: {}", e.reason)))
}

/// A whole number argument from 0 to `u32::MAX`.
fn read_u32(v: &Unknown, what: &str) -> crate::Result<u32> {
    match read_value(v, what)? {
        Value::Number(n) if n.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&n) => {
            Ok(n as u32)
        }
        other => Err(Error::InvalidArgument(format!(
            "{what} must be an integer from 0 to {}, got {}",
            u32::MAX,
            other.describe()
        ))),
    }
}

/// An optional string argument: `undefined` or `null` is `None`.
fn read_optional_string(v: Option<&Unknown>, what: &str) -> crate::Result<Option<String>> {
    match v.map(|v| read_value(v, what)).transpose()? {
        None | Some(Value::Undefined) | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Error::InvalidArgument(format!(
            "{what} must be a string, got {}",
            other.describe()
        ))),
    }
}

/// Work for the libuv thread pool: `work` runs off the JS thread (panics
/// caught), `to_js` converts its result on the JS thread. Errors, including a
/// bad argument found before the work started, reject the promise with a coded
/// JS error.
pub struct Job<T: Send + 'static, J> {
    work: Option<Box<dyn FnOnce() -> crate::Result<T> + Send>>,
    to_js: fn(&Env, T) -> napi::Result<J>,
}

impl<T: Send + 'static, J> Job<T, J> {
    fn new(
        work: impl FnOnce() -> crate::Result<T> + Send + 'static,
        to_js: fn(&Env, T) -> napi::Result<J>,
    ) -> AsyncTask<Self>
    where
        Self: Task,
    {
        AsyncTask::new(Job {
            work: Some(Box::new(work)),
            to_js,
        })
    }
}

impl<T: Send + 'static, J: ToNapiValue + TypeName> Task for Job<T, J> {
    type Output = crate::Result<T>;
    type JsValue = J;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let work = self.work.take().expect("a job runs once");
        Ok(guarded(work))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<J> {
        match output {
            Ok(t) => (self.to_js)(&env, t),
            Err(e) => Err(js_error(&env, &e)),
        }
    }
}

// ---------- JS shapes ----------

#[napi(object)]
pub struct ConfigIssue {
    pub path: String,
    pub expected: String,
    pub given: String,
}

/// How `CompressedMatrix.data` is encoded.
#[napi(string_enum)]
pub enum MatrixCodec {
    /// The checksummed envelope: byte-shuffled float planes in zstd frames.
    #[napi(value = "zstd")]
    Zstd,
    /// Legacy: zlib deflate of raw little-endian f32 (what the TypeScript code stored).
    #[napi(value = "zlib")]
    Zlib,
    /// Raw little-endian f32 bytes.
    #[napi(value = "none")]
    None,
}

#[napi(string_enum)]
pub enum MatrixLayout {
    #[napi(value = "row-major")]
    RowMajor,
}

#[napi(object)]
pub struct CompressedMatrix {
    pub data: Buffer,
    pub num_scenarios: u32,
    pub num_buckets: u32,
    /// Payload format version: 2 for the envelope, 1 for legacy zlib payloads.
    pub version: u32,
    pub uncompressed_size: u32,
    pub compressed_size: u32,
    pub codec: MatrixCodec,
    pub layout: MatrixLayout,
}

/// What `decompressMatrix` accepts: a `CompressedMatrix`, or a legacy one
/// without `codec` (then an envelope is recognised by its magic bytes and
/// anything else is read as legacy zlib).
#[napi(object)]
pub struct CompressedMatrixInput {
    pub data: Buffer,
    pub num_scenarios: u32,
    pub num_buckets: u32,
    pub version: Option<u32>,
    pub uncompressed_size: Option<f64>,
    pub compressed_size: Option<f64>,
    pub codec: Option<MatrixCodec>,
    pub layout: Option<MatrixLayout>,
}

/// Where a result came from.
#[napi(string_enum)]
pub enum MatrixSource {
    #[napi(value = "memory")]
    Memory,
    #[napi(value = "redis")]
    Redis,
    #[napi(value = "postgres")]
    Postgres,
    #[napi(value = "sqlite")]
    Sqlite,
    #[napi(value = "generated")]
    Generated,
}

impl From<Source> for MatrixSource {
    fn from(s: Source) -> Self {
        match s {
            Source::Memory => MatrixSource::Memory,
            Source::Redis => MatrixSource::Redis,
            Source::Postgres => MatrixSource::Postgres,
            Source::Sqlite => MatrixSource::Sqlite,
            Source::Generated => MatrixSource::Generated,
        }
    }
}

/// `null` marks what a legacy (TypeScript) copy did not record.
#[napi(object, use_nullable = true)]
pub struct ScenarioMetadata {
    /// The canonical key of the config.
    pub config_hash: String,
    pub num_scenarios: u32,
    pub num_buckets: u32,
    /// ISO 8601 UTC time of generation; null when unknown (a legacy matrix
    /// that only Redis held).
    pub generated_at: Option<String>,
    /// Generation + compression time in milliseconds; null for legacy matrices.
    pub duration_ms: Option<f64>,
    /// Per bucket, in the order of `bucketNames` (the caller's bucket order);
    /// null for a legacy matrix read by key before any call brought its config.
    pub recycling_multiples: Option<Vec<f64>>,
    /// The bucket names in the order of the returned columns: the caller's
    /// own order, or the key's order for a lookup by key; null when unknown
    /// (a legacy single-bucket matrix read by key).
    pub bucket_names: Option<Vec<String>>,
    /// The tier that served this call ('generated' on a miss).
    pub source: MatrixSource,
}

#[napi(object)]
pub struct ScenarioResult {
    pub compressed: CompressedMatrix,
    pub metadata: ScenarioMetadata,
}

/// Hands a Rust buffer to JS without a copy. Large ones are freed off the JS
/// thread: returning 15-20 MB to the OS takes about a millisecond, which a
/// finalizer would otherwise spend inside a garbage-collection pause.
fn js_buffer(env: &Env, mut bytes: Vec<u8>) -> napi::Result<Buffer> {
    const FREE_OFF_THREAD: usize = 1 << 20;
    if bytes.len() < FREE_OFF_THREAD {
        return Ok(bytes.into());
    }
    // Moving the Vec into the finalizer leaves its heap buffer where it is.
    let (ptr, len) = (bytes.as_mut_ptr(), bytes.len());
    owned_js(env, ptr, len, bytes)
}

/// A caller's bytes as its `Buffer`, without a copy: a copy as `js_buffer`
/// hands it over; a handed-over payload or a mapping is dropped off the JS
/// thread when JS collects the buffer.
fn caller_buffer(env: &Env, bytes: CallerBytes) -> napi::Result<Buffer> {
    match bytes {
        CallerBytes::Copied(v) => js_buffer(env, v),
        CallerBytes::Mapped(mut m) => owned_js(env, m.as_mut_ptr(), m.len(), m),
        CallerBytes::Handed(mut b) => owned_js(env, b.as_mut_ptr(), b.len(), b),
    }
}

/// `len` bytes at `ptr`, owned by `owner` (a copy, a private mapping, a
/// handed-over payload), as a Buffer; the owner is dropped off the JS thread
/// when JS collects it. V8 counts the bytes as external memory (the
/// Buffer's backing store), which paces its collections.
fn owned_js<T: Send + 'static>(
    env: &Env,
    ptr: *mut u8,
    len: usize,
    owner: T,
) -> napi::Result<Buffer> {
    // SAFETY: `ptr` and `len` describe memory `owner` owns exclusively
    // (a private mapping, or bytes nothing else references), which stays
    // alive and untouched by Rust until the finalizer drops the owner; JS
    // alone reads and writes it meanwhile.
    let slice = unsafe {
        BufferSlice::from_external(env, ptr, len, owner, |_, o| {
            rayon::spawn(move || drop(o));
        })
    };
    slice?.into_buffer(env)
}

fn compressed_matrix(data: Buffer, num_scenarios: u32, num_buckets: u32) -> CompressedMatrix {
    let compressed_size = data.len() as u32;
    CompressedMatrix {
        data,
        num_scenarios,
        num_buckets,
        version: codec::FORMAT_VERSION,
        uncompressed_size: num_scenarios * num_buckets * 4,
        compressed_size,
        codec: MatrixCodec::Zstd,
        layout: MatrixLayout::RowMajor,
    }
}

fn metadata_js(m: Metadata, source: Source) -> ScenarioMetadata {
    // Per-bucket lists that do not cover every bucket are unknown: null.
    let n = m.num_buckets as usize;
    ScenarioMetadata {
        recycling_multiples: (m.recycling_multiples.len() == n).then_some(m.recycling_multiples),
        bucket_names: (m.bucket_names.len() == n).then_some(m.bucket_names),
        config_hash: m.config_hash,
        num_scenarios: m.num_scenarios,
        num_buckets: m.num_buckets,
        generated_at: m.generated_at,
        duration_ms: m.duration_ms,
        source: source.into(),
    }
}

/// A result in the caller's bucket order, ready for the JS thread.
fn copy_js(env: &Env, c: CallerCopy) -> napi::Result<ScenarioResult> {
    let (rows, cols) = (c.metadata.num_scenarios, c.metadata.num_buckets);
    Ok(ScenarioResult {
        compressed: compressed_matrix(caller_buffer(env, c.payload)?, rows, cols),
        metadata: metadata_js(c.metadata, c.source),
    })
}

// ---------- functions ----------

/// The canonical cache key (v1.2, plus `seed` when given) of a config.
/// Throws `E_CONFIG` when the config is invalid.
#[napi(ts_args_type = "config: ScenarioConfig")]
pub fn canonical_key(env: Env, config: Unknown) -> napi::Result<String> {
    sync_call(&env, || {
        Ok(crate::key::canonical_key(&parse_config(&config)?))
    })
}

/// Throws `E_CONFIG` listing every problem (also in `err.issues`) when the config is invalid.
/// Takes any value (an HTTP body, say) and, in TypeScript, narrows it to `ScenarioConfig`.
#[napi(
    ts_args_type = "value: unknown",
    ts_return_type = "asserts value is ScenarioConfig"
)]
pub fn validate_scenario_config(env: Env, config: Unknown) -> napi::Result<()> {
    sync_call(&env, || parse_config(&config).map(drop))
}

/// Generates and compresses the matrix for a config, off the JS thread. No cache.
/// Columns and recycling multiples come back in the config's bucket order.
#[napi(
    ts_args_type = "config: ScenarioConfig",
    ts_return_type = "Promise<ScenarioResult>"
)]
pub fn generate_scenarios(env: Env, config: Unknown) -> AsyncTask<Job<CallerCopy, ScenarioResult>> {
    let parsed = guarded(|| parse_config(&config));
    clear_pending_exception(&env);
    Job::new(
        move || {
            let cfg = parsed?;
            let s = scenario::run(&cfg)?;
            // Generated in the key's bucket order; handed back in the caller's.
            let order = ColumnOrder::for_config(&cfg);
            Ok(CallerCopy {
                payload: CallerBytes::Copied(if order.is_identity() {
                    s.envelope
                } else {
                    order.envelope(&s.envelope)?
                }),
                metadata: order.metadata(&s.metadata),
                source: Source::Generated,
            })
        },
        copy_js,
    )
}

/// Compresses a row-major matrix into the checksummed envelope, off the JS thread.
#[napi(
    ts_args_type = "matrix: Float32Array, numScenarios: number, numBuckets: number",
    ts_return_type = "Promise<CompressedMatrix>"
)]
pub fn compress_matrix(
    env: Env,
    matrix: Unknown,
    num_scenarios: Unknown,
    num_buckets: Unknown,
) -> AsyncTask<Job<(Vec<u8>, u32, u32), CompressedMatrix>> {
    let args = guarded(|| {
        // The values as they are now: the caller may change its array as soon
        // as this returns, while the worker would still be reading it.
        let matrix = convert::<Float32Array>(&env, &matrix, "matrix (a Float32Array)")?.to_vec();
        Ok((
            matrix,
            read_u32(&num_scenarios, "numScenarios")?,
            read_u32(&num_buckets, "numBuckets")?,
        ))
    });
    clear_pending_exception(&env);
    Job::new(
        move || {
            let (matrix, num_scenarios, num_buckets) = args?;
            Ok((
                codec::encode(&matrix, num_scenarios, num_buckets)?,
                num_scenarios,
                num_buckets,
            ))
        },
        |env, (envelope, s, b)| Ok(compressed_matrix(js_buffer(env, envelope)?, s, b)),
    )
}

/// Decompresses and verifies a matrix (envelope or legacy zlib), off the JS thread.
/// Rejects with `E_CORRUPT` when the payload fails any check.
#[napi(
    ts_args_type = "compressed: CompressedMatrixInput",
    ts_return_type = "Promise<Float32Array>"
)]
pub fn decompress_matrix(env: Env, compressed: Unknown) -> AsyncTask<Job<Vec<f32>, Float32Array>> {
    let input = guarded(|| {
        let c: CompressedMatrixInput = convert(&env, &compressed, "compressed matrix")?;
        let label = match c.codec {
            Some(MatrixCodec::Zstd) | None => codec::Codec::Zstd,
            Some(MatrixCodec::Zlib) => codec::Codec::Zlib,
            Some(MatrixCodec::None) => codec::Codec::None,
        };
        Ok((c.data, label, c.num_scenarios, c.num_buckets))
    });
    clear_pending_exception(&env);
    Job::new(
        move || {
            let (data, label, rows, cols) = input?;
            codec::decode_labelled(&data, label, rows, cols)
        },
        |_, m| Ok(Float32Array::new(m)),
    )
}

/// Large allocations in huge pages (see there).
#[global_allocator]
static ALLOCATOR: crate::pages::LargeInHugePages = crate::pages::LargeInHugePages;

/// Large buffers straight from the OS. glibc's malloc raises its mmap
/// threshold (up to 32 MB) after the first large buffer is freed, and from then
/// on keeps freed 15-20 MB matrices in its arenas: a server's RSS climbs by
/// hundreds of MB. Fixing the threshold at 256 KiB (glibc's own behaviour
/// before that adjustment) returns such buffers to the OS when freed. It is
/// process-wide and only changes where big allocations come from; an operator
/// who set `MALLOC_MMAP_THRESHOLD_` keeps their own value.
#[napi_derive::module_init]
fn init() {
    crate::workers::lower_priority_of_pool();
    async_runtime();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        const M_MMAP_THRESHOLD: std::os::raw::c_int = -3;
        extern "C" {
            fn mallopt(
                param: std::os::raw::c_int,
                value: std::os::raw::c_int,
            ) -> std::os::raw::c_int;
        }
        // SAFETY: mallopt only sets a tunable; a refused value leaves the default.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 256 * 1024);
        }
    }
}

/// The async runtime every call runs on, as napi-rs would build it but for
/// its worker count: `TOKIO_WORKER_THREADS` when it is a whole number from 1
/// (docs/performance.md: one worker makes small Redis hits faster and
/// concurrent traffic slower), else one per core. Tokio reads that variable
/// itself and panics on anything else (`''` included), which would abort
/// the process at its first call; here such a value is ignored. Building
/// the runtime while the addon loads is safe (unlike rayon's pool, see
/// `workers`): it starts its threads without waiting for them. Should the
/// build fail, napi-rs builds its own at the first call.
fn async_runtime() {
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n >= 1)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        napi::bindgen_prelude::create_custom_tokio_runtime(rt);
    }
}
