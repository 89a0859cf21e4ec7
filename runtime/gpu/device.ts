/**
 * One place that obtains a WebGPU device: Dawn's Node bindings (`webgpu` package) in Node, `navigator.gpu` in a
 * browser. Dawn crashes the process if the object returned by `create()` is garbage-collected while a device
 * lives, so it is held at module scope for the life of the process.
 */
import { env, envFlag } from '../env.js';

export interface GpuContext {
  readonly device: GPUDevice;
  readonly adapterName: string;
  /** native f16 in shaders (`shader-f16`) */
  readonly f16: boolean;
  /** `chromium-experimental-subgroup-matrix` (f16 tensor-core tiles) */
  readonly subgroupMatrix: boolean;
  readonly subgroups: boolean;
  /** the narrowest subgroup the adapter may run (0 without `subgroups`, or where the adapter does not say) */
  readonly subgroupMinSize: number;
  /**
   * the tensor-core prefill kernels can run (compiler/kernels/mm-sgmat.ts): subgroup matrices with an f16×f16→f32
   * 16×16×16 configuration, subgroups of at most 32 lanes, 32 KiB of workgroup memory, workgroups of 512 threads
   */
  readonly tensorCores: boolean;
  readonly limits: GPUSupportedLimits;
  /** largest storage binding the kernels may use (can be lowered for tests) */
  readonly maxBinding: number;
  /**
   * shaders bound-check every storage access (Dawn's robustness transform): always in a browser; off in Node unless
   * LOCRET_ROBUSTNESS=1 (see dawnFlags)
   */
  readonly robustness: boolean;
  /** `timestamp-query`: GPU time per dispatch for profiles (profile.ts); Node asks Dawn for unquantized timestamps */
  readonly timestamps: boolean;
  /**
   * the decode gemv takes q8 / q4 dot products on int8 (dot4I8Packed, mm-gemv-dot.ts): WGSL has the
   * `packed_4x8_integer_dot_product` builtins and the adapter is not Apple's (Metal runs them as a polyfill, slower
   * than the float forms); LOCRET_NO_INT_DOT=1 refuses them (A/B timing, the float forms' tests)
   */
  readonly intDot: boolean;
  /**
   * GPU errors nobody captured (validation, out of memory, internal) since the last call, oldest first. Reads throw
   * on them (runner.ts), so an invalid shader or dispatch fails loudly instead of leaving stale outputs behind.
   */
  readonly takeErrors: () => string[];
}

/** uncaptured GPU errors kept for the next read to report (the rest are counted) */
const MAX_KEPT_ERRORS = 8;

let dawnGpu: GPU | null = null; // keeps Dawn's instance alive; see above
let dawnRobustness = true; // as Dawn's instance was created
let shared: Promise<GpuContext> | null = null;

async function nodeGpu(): Promise<GPU> {
  if (dawnGpu) return dawnGpu;
  const mod = (await import('webgpu')) as { create(flags: string[]): GPU; globals: object };
  Object.assign(globalThis, mod.globals);
  const flags = dawnFlags(env('LOCRET_DAWN_FLAGS'), envFlag('LOCRET_ROBUSTNESS'));
  dawnRobustness = !toggles(flags, 'enable').includes(NO_ROBUSTNESS);
  dawnGpu = mod.create(flags);
  return dawnGpu;
}

const NO_ROBUSTNESS = 'disable_robustness';
/** Dawn rounds timestamps to 100 µs unless this toggle is off: too coarse for dispatches of a few µs */
const QUANTIZED_TIMESTAMPS = 'timestamp_quantization';
/** The toggles a flag list enables (`which` = 'enable') or disables. */
const toggles = (flags: readonly string[], which: 'enable' | 'disable') =>
  flags.filter((f) => f.startsWith(`${which}-dawn-features=`)).flatMap((f) => f.slice(f.indexOf('=') + 1).split(','));

/**
 * Flags for Dawn's Node `create()`: the user's (space separated, e.g. the toggles that unlock f16 on NVIDIA) plus the
 * device toggle `disable_robustness` unless `robust` or the user disables that toggle. Robustness clamps every
 * storage index in every shader; the kernels here keep their own indices in bounds (tests run with every buffer
 * followed by a NaN guard, see runner.ts, so a read past a binding shows up as NaN in their outputs), and the clamps
 * cost 15% of a prefill chunk on an H200 (bench/README.md). Dawn reads one `enable-dawn-features` list, so the
 * toggle joins the user's.
 */
export function dawnFlags(user: string | undefined, robust: boolean): string[] {
  let flags = (user ?? '').split(/\s+/).filter(Boolean);
  const named = (t: string) => toggles(flags, 'disable').includes(t) || toggles(flags, 'enable').includes(t);
  if (!named(QUANTIZED_TIMESTAMPS)) flags = withToggle(flags, 'disable', QUANTIZED_TIMESTAMPS);
  if (robust || named(NO_ROBUSTNESS)) return flags;
  return withToggle(flags, 'enable', NO_ROBUSTNESS);
}

/** Adds a toggle to the flags' one `enable-` / `disable-dawn-features` list (Dawn reads one of each). */
function withToggle(flags: readonly string[], which: 'enable' | 'disable', toggle: string): string[] {
  const prefix = `${which}-dawn-features=`;
  const i = flags.findIndex((f) => f.startsWith(prefix));
  if (i < 0) return [...flags, `${prefix}${toggle}`];
  return flags.map((f, j) => (j === i ? `${f.replace(/,$/, '')}${f.endsWith('=') ? '' : ','}${toggle}` : f));
}

export interface DeviceOptions {
  /** refuse native f16 even where the adapter has it (tests the packed path) */
  readonly disableF16?: boolean;
  /** refuse subgroup operations even where the adapter has them (tests the workgroup-memory reductions) */
  readonly disableSubgroups?: boolean;
  /** refuse the int8 dot-product gemv even where WGSL has it (tests the float forms) */
  readonly disableIntDot?: boolean;
  /** lower the storage-binding limit the kernels plan for (tests splitting) */
  readonly maxBinding?: number;
}

export async function createGpuContext(opts: DeviceOptions = {}): Promise<GpuContext> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  const gpu = nav?.gpu ?? (await nodeGpu());
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    throw new Error(
      'no WebGPU adapter found. On a machine without a GPU install a CPU Vulkan driver: ' +
        'export VK_ICD_FILENAMES=$(scripts/cpu-webgpu.sh)  (see README)',
    );
  }
  const want: GPUFeatureName[] = [];
  const f16 = adapter.features.has('shader-f16') && !opts.disableF16 && !envFlag('LOCRET_NO_F16');
  if (f16) want.push('shader-f16');
  const subgroups = adapter.features.has('subgroups' as GPUFeatureName) && !opts.disableSubgroups && !envFlag('LOCRET_NO_SUBGROUPS');
  if (subgroups) want.push('subgroups' as GPUFeatureName);
  const sgm = adapter.features.has('chromium-experimental-subgroup-matrix' as GPUFeatureName) && f16;
  if (sgm) want.push('chromium-experimental-subgroup-matrix' as GPUFeatureName);
  const timestamps = adapter.features.has('timestamp-query');
  if (timestamps) want.push('timestamp-query');
  const l = adapter.limits;
  const device = await adapter.requestDevice({
    requiredFeatures: want,
    requiredLimits: {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      // smaller offsets pack a submission's uniform parameters tighter (runner.ts)
      minUniformBufferOffsetAlignment: l.minUniformBufferOffsetAlignment,
    },
  });
  const errors: string[] = [];
  let dropped = 0;
  device.addEventListener?.('uncapturederror', (e) => {
    const message = (e as GPUUncapturedErrorEvent).error.message;
    console.error('WebGPU error:', message);
    if (errors.length < MAX_KEPT_ERRORS) errors.push(message);
    else dropped++;
  });
  const takeErrors = () => {
    const out = dropped ? [...errors, `(${dropped} more)`] : [...errors];
    errors.length = 0;
    dropped = 0;
    return out;
  };
  const info = adapter.info;
  const adapterName = [info?.vendor, info?.architecture, info?.device, info?.description].filter(Boolean).join(' ') || 'unknown adapter';
  const envMax = Number(env('LOCRET_MAX_BINDING') ?? 0);
  const maxBinding = Math.min(l.maxStorageBufferBindingSize, opts.maxBinding ?? Infinity, envMax > 0 ? envMax : Infinity);
  const tensorCores = sgm && subgroups && hasF16Tile(info) && (info?.subgroupMaxSize ?? 32) <= 32 &&
    device.limits.maxComputeWorkgroupStorageSize >= 32768 && device.limits.maxComputeInvocationsPerWorkgroup >= 512;
  const robustness = nav?.gpu ? true : dawnRobustness; // a browser never drops the bound checks
  const intDot = gpu.wgslLanguageFeatures?.has('packed_4x8_integer_dot_product') === true && info?.vendor !== 'apple' &&
    !opts.disableIntDot && !envFlag('LOCRET_NO_INT_DOT');
  const subgroupMinSize = subgroups ? (info?.subgroupMinSize ?? 0) : 0;
  return { device, adapterName, f16, subgroupMatrix: sgm, subgroups, subgroupMinSize, tensorCores, limits: device.limits, maxBinding, robustness, timestamps, intDot, takeErrors };
}

/** The adapter lists an f16×f16→f32 16×16×16 subgroup-matrix configuration (bindings that list none: assume so). */
function hasF16Tile(info: GPUAdapterInfo | undefined): boolean {
  type Config = { componentType: string; resultComponentType: string; M: number | bigint; N: number | bigint; K: number | bigint };
  const configs = (info as { subgroupMatrixConfigs?: readonly Config[] } | undefined)?.subgroupMatrixConfigs;
  if (!configs) return true;
  return [...configs].some((c) => c.componentType === 'f16' && c.resultComponentType === 'f32' &&
    Number(c.M) === 16 && Number(c.N) === 16 && Number(c.K) === 16);
}

/** A process-wide default context, created on first use. */
export function defaultGpu(): Promise<GpuContext> {
  shared ??= createGpuContext();
  return shared;
}
