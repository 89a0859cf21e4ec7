// Step kinds shared with the host (runtime/cache.ts mirrors them).
export const KIND_CHUNK: i32 = 0;
export const KIND_LAST_CHUNK: i32 = 1;
export const KIND_LOCAL: i32 = 2;

/** Largest capacity accepted (slots per layer and KV head); keeps every slot and position in i32/u32 range. */
export const MAX_SLOTS: i32 = 0x40000000;
