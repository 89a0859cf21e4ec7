/**
 * A restricted pickle interpreter for `torch.save` state dicts. It implements only the opcodes such a file needs
 * and resolves only an allowlist of globals into inert descriptors; nothing is ever imported or called, so a
 * malicious pickle can at worst be refused. Sizes are checked against the remaining input before allocating.
 */
import { PickleError } from './errors.js';

export class Tuple {
  constructor(readonly items: PValue[]) {}
}
export class Global {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}
/** What BINPERSID / REDUCE produce; the caller (torch-pickle.ts) supplies them. */
export interface Opaque {
  readonly opaque: true;
}
export type PValue = null | boolean | number | string | PValue[] | Map<PValue, PValue> | Tuple | Global | Opaque;

export interface PickleHooks {
  /** globals the caller knows how to handle, as `module.name` */
  readonly allowedGlobals: ReadonlySet<string>;
  persistentLoad(pid: PValue): PValue;
  reduce(fn: Global, args: Tuple): PValue;
}

const MARK = Symbol('mark');
type Slot = PValue | typeof MARK;

// opcode bytes (pickletools names)
const OP = {
  PROTO: 0x80, FRAME: 0x95, STOP: 0x2e, EMPTY_DICT: 0x7d, EMPTY_LIST: 0x5d, EMPTY_TUPLE: 0x29, MARK: 0x28,
  BINUNICODE: 0x58, SHORT_BINUNICODE: 0x8c, BINPUT: 0x71, LONG_BINPUT: 0x72, MEMOIZE: 0x94, BINGET: 0x68,
  LONG_BINGET: 0x6a, BININT: 0x4a, BININT1: 0x4b, BININT2: 0x4d, LONG1: 0x8a, TUPLE: 0x74, TUPLE1: 0x85,
  TUPLE2: 0x86, TUPLE3: 0x87, SETITEM: 0x73, SETITEMS: 0x75, APPEND: 0x61, APPENDS: 0x65, GLOBAL: 0x63,
  STACK_GLOBAL: 0x93, REDUCE: 0x52, BINPERSID: 0x51, NEWFALSE: 0x89, NEWTRUE: 0x88, NONE: 0x4e, BUILD: 0x62,
} as const;
const OP_NAME = new Map<number, string>([
  ...Object.entries(OP).map(([k, v]) => [v, k] as [number, string]),
  // common opcodes we deliberately do not implement, named for the error message
  [0x69, 'INST'], [0x6f, 'OBJ'], [0x81, 'NEWOBJ'], [0x92, 'NEWOBJ_EX'], [0x42, 'BINBYTES'], [0x47, 'BINFLOAT'],
  [0x50, 'PERSID'], [0x43, 'SHORT_BINBYTES'], [0x8d, 'BINUNICODE8'], [0x52, 'REDUCE'], [0x56, 'UNICODE'],
]);

export function runPickle(data: Uint8Array, hooks: PickleHooks, file: string): PValue {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const stack: Slot[] = [];
  const memo = new Map<number, PValue>();
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  let p = 0;
  const fail = (msg: string): never => {
    throw new PickleError(`${file}: pickle at byte ${p}: ${msg}`, file);
  };
  const need = (n: number) => {
    if (n < 0 || p + n > data.length) fail(`needs ${n} bytes but only ${data.length - p} remain (truncated or corrupt)`);
  };
  const u8 = () => (need(1), data[p++]);
  const u16 = () => (need(2), (p += 2), dv.getUint16(p - 2, true));
  const u32 = () => (need(4), (p += 4), dv.getUint32(p - 4, true));
  const str = (n: number) => {
    need(n);
    try {
      return utf8.decode(data.subarray(p, (p += n)));
    } catch {
      return fail('invalid UTF-8 string');
    }
  };
  const pop = (): PValue => {
    const v = stack.pop();
    if (v === undefined || v === MARK) return fail('stack underflow');
    return v;
  };
  const top = (): PValue => {
    const v = stack[stack.length - 1];
    if (v === undefined || v === MARK) return fail('stack underflow');
    return v;
  };
  const popMark = (): PValue[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) fail('no MARK on the stack');
    const items = stack.splice(i) as PValue[];
    items.shift();
    return items;
  };
  const global = (module: string, name: string): Global => {
    const g = new Global(module, name);
    if (!hooks.allowedGlobals.has(g.qualified)) fail(`refusing global ${g.qualified} (not a tensor state dict; never executed)`);
    return g;
  };
  const setItems = (d: PValue, kv: PValue[]) => {
    if (!(d instanceof Map)) return fail('SETITEM(S) on a non-dict');
    for (let i = 0; i + 1 < kv.length; i += 2) d.set(kv[i], kv[i + 1]);
  };
  const append = (l: PValue, items: PValue[]) => {
    if (!Array.isArray(l)) return fail('APPEND(S) on a non-list');
    l.push(...items);
  };
  const line = () => {
    const end = data.indexOf(0x0a, p);
    if (end < 0) fail('unterminated GLOBAL');
    return str(end - p + 1).slice(0, -1);
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case OP.PROTO: if (u8() > 5) fail('pickle protocol above 5'); break;
      case OP.FRAME: need(8); p += 8; break;
      case OP.STOP: {
        const v = pop();
        if (stack.length) fail('stack not empty at STOP');
        return v;
      }
      case OP.EMPTY_DICT: stack.push(new Map()); break;
      case OP.EMPTY_LIST: stack.push([]); break;
      case OP.EMPTY_TUPLE: stack.push(new Tuple([])); break;
      case OP.MARK: stack.push(MARK); break;
      case OP.BINUNICODE: stack.push(str(u32())); break;
      case OP.SHORT_BINUNICODE: stack.push(str(u8())); break;
      case OP.BINPUT: memo.set(u8(), top()); break;
      case OP.LONG_BINPUT: memo.set(u32(), top()); break;
      case OP.MEMOIZE: memo.set(memo.size, top()); break;
      case OP.BINGET:
      case OP.LONG_BINGET: {
        const k = op === OP.BINGET ? u8() : u32();
        if (!memo.has(k)) fail(`memo key ${k} not set`);
        stack.push(memo.get(k)!);
        break;
      }
      case OP.BININT: need(4); stack.push(dv.getInt32(p, true)); p += 4; break;
      case OP.BININT1: stack.push(u8()); break;
      case OP.BININT2: stack.push(u16()); break;
      case OP.LONG1: {
        const n = u8();
        need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(data[p + i]);
        if (n > 0 && data[p + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        p += n;
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) fail(`integer ${v} too large`);
        stack.push(Number(v));
        break;
      }
      case OP.TUPLE: stack.push(new Tuple(popMark())); break;
      case OP.TUPLE1: stack.push(new Tuple([pop()])); break;
      case OP.TUPLE2: { const b = pop(); stack.push(new Tuple([pop(), b])); break; }
      case OP.TUPLE3: { const c = pop(); const b = pop(); stack.push(new Tuple([pop(), b, c])); break; }
      case OP.SETITEM: { const v = pop(); const k = pop(); setItems(top(), [k, v]); break; }
      case OP.SETITEMS: { const kv = popMark(); setItems(top(), kv); break; }
      case OP.APPEND: { const v = pop(); append(top(), [v]); break; }
      case OP.APPENDS: { const items = popMark(); append(top(), items); break; }
      case OP.GLOBAL: { const module = line(); stack.push(global(module, line())); break; }
      case OP.STACK_GLOBAL: {
        const name = pop();
        const module = pop();
        if (typeof name !== 'string' || typeof module !== 'string') fail('STACK_GLOBAL needs two strings');
        stack.push(global(module as string, name as string));
        break;
      }
      case OP.REDUCE: {
        const args = pop();
        const fn = pop();
        if (!(fn instanceof Global) || !(args instanceof Tuple)) fail('REDUCE needs an allowed global and a tuple');
        stack.push(hooks.reduce(fn as Global, args as Tuple));
        break;
      }
      case OP.BINPERSID: stack.push(hooks.persistentLoad(pop())); break;
      case OP.NEWFALSE: stack.push(false); break;
      case OP.NEWTRUE: stack.push(true); break;
      case OP.NONE: stack.push(null); break;
      case OP.BUILD: {
        // OrderedDict state (its attribute dict) carries nothing a tensor dict needs; anything else is refused
        const state = pop();
        const obj = top();
        const empty = state === null || (state instanceof Map && state.size === 0) || (state instanceof Tuple && state.items.length === 0);
        if (!(obj instanceof Map) && !empty) fail('BUILD with state on a non-dict object');
        break;
      }
      default:
        fail(`unsupported opcode ${OP_NAME.get(op) ?? ''} 0x${op.toString(16).padStart(2, '0')} ('${String.fromCharCode(op)}')`);
    }
  }
}
