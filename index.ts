/** locret: long-context LLM inference on WebGPU with a fixed-size KV cache (Locret retaining heads + eviction). */
export { Engine, DEFAULTS, type GenerateOptions, type GenerateResult, type LoadOptions } from './runtime/engine.js';
export { Session, type CacheOptions } from './runtime/session.js';
export { createGpuContext, defaultGpu, type GpuContext } from './runtime/gpu/device.js';
export { GpuRunner } from './runtime/gpu/runner.js';
export { openModel, type ModelSource } from './runtime/model-source.js';
export { compileModel } from './runtime/compile.js';
export { POLICIES, type Policy } from './runtime/policies.js';
export { planMemory } from './runtime/plan-memory.js';
export type { ModelConfig } from './ir/config.js';
