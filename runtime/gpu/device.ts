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
  /**
   * the tensor-core prefill kernels can run (compiler/kernels/mm-sgmat.ts): subgroup matrices with an f16×f16→f32
   * 16×16×16 configuration, subgroups of at most 32 lanes, 32 KiB of workgroup memory
   */
  readonly tensorCores: boolean;
  readonly limits: GPUSupportedLimits;
  /** largest storage binding the kernels may use (can be lowered for tests) */
  readonly maxBinding: number;
}

let dawnGpu: GPU | null = null; // keeps Dawn's instance alive; see above
let shared: Promise<GpuContext> | null = null;

async function nodeGpu(): Promise<GPU> {
  if (dawnGpu) return dawnGpu;
  const mod = (await import('webgpu')) as { create(flags: string[]): GPU; globals: object };
  Object.assign(globalThis, mod.globals);
  const flags = (env('LOCRET_DAWN_FLAGS') ?? '').split(/\s+/).filter(Boolean);
  dawnGpu = mod.create(flags);
  return dawnGpu;
}

export interface DeviceOptions {
  /** refuse native f16 even where the adapter has it (tests the packed path) */
  readonly disableF16?: boolean;
  /** refuse subgroup operations even where the adapter has them (tests the workgroup-memory reductions) */
  readonly disableSubgroups?: boolean;
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
  device.addEventListener?.('uncapturederror', (e) => {
    console.error('WebGPU error:', (e as GPUUncapturedErrorEvent).error.message);
  });
  const info = adapter.info;
  const adapterName = [info?.vendor, info?.architecture, info?.device, info?.description].filter(Boolean).join(' ') || 'unknown adapter';
  const envMax = Number(env('LOCRET_MAX_BINDING') ?? 0);
  const maxBinding = Math.min(l.maxStorageBufferBindingSize, opts.maxBinding ?? Infinity, envMax > 0 ? envMax : Infinity);
  const tensorCores = sgm && subgroups && hasF16Tile(info) && (info?.subgroupMaxSize ?? 32) <= 32 &&
    device.limits.maxComputeWorkgroupStorageSize >= 32768;
  return { device, adapterName, f16, subgroupMatrix: sgm, subgroups, tensorCores, limits: device.limits, maxBinding };
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
