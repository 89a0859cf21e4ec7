/**
 * Tokenizer, streaming detokenizer and chat template for a HF model directory, over `@huggingface/tokenizers`
 * (tokenizer.json + tokenizer_config.json) and `@huggingface/jinja` (chat_template). Encoding follows the
 * tokenizer's own post-processor, so BOS is added exactly where HF adds it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';

export class TokenizerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenizerError';
  }
}

export interface ChatMessage {
  readonly role: string;
  readonly content: string;
}

type Json = Record<string, unknown>;

/** tokenizer_config.json spells special tokens as strings or as AddedToken objects ({content: ...}). */
function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return undefined;
}

function readJson(file: string): Json {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Json;
  } catch (e) {
    throw new TokenizerError(`${file}: cannot read JSON (${(e as Error).message})`);
  }
}

/** The chat template: `chat_template.jinja` (newer exports), or tokenizer_config's string / named list. */
function findTemplate(dir: string, cfg: Json): string | null {
  const jinja = path.join(dir, 'chat_template.jinja');
  if (fs.existsSync(jinja)) return fs.readFileSync(jinja, 'utf8');
  const t = cfg.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const d = t.find((x) => x?.name === 'default') ?? t[0];
    if (d && typeof d.template === 'string') return d.template;
  }
  return null;
}

export class TextTokenizer {
  private readonly tok: Tokenizer;
  private template: Template | null = null;
  readonly chatTemplate: string | null;
  readonly specialTokens: Readonly<Record<string, string | undefined>>;

  constructor(
    readonly dir: string,
    tokenizerJson: Json,
    readonly tokenizerConfig: Json,
    chatTemplate: string | null,
  ) {
    this.tok = new Tokenizer(tokenizerJson, tokenizerConfig);
    this.chatTemplate = chatTemplate;
    const c = tokenizerConfig;
    this.specialTokens = {
      bos_token: tokenText(c.bos_token),
      eos_token: tokenText(c.eos_token),
      pad_token: tokenText(c.pad_token),
      unk_token: tokenText(c.unk_token),
    };
  }

  /** Load from a directory holding tokenizer.json (required) and tokenizer_config.json (optional). */
  static fromDir(dir: string): TextTokenizer {
    const tj = path.join(dir, 'tokenizer.json');
    if (!fs.existsSync(tj)) throw new TokenizerError(`${dir}: no tokenizer.json (only fast tokenizers are supported)`);
    const cf = path.join(dir, 'tokenizer_config.json');
    const cfg = fs.existsSync(cf) ? readJson(cf) : {};
    return new TextTokenizer(dir, readJson(tj), cfg, findTemplate(dir, cfg));
  }

  /** Token ids; `addSpecialTokens` (default true) lets the post-processor add BOS etc. as HF does. */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.tok.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return ''; // the library rejects empty input
    return this.tok.decode([...ids], { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  tokenId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  /** An incremental detokenizer for generated ids. */
  streamDecoder(opts: { skipSpecialTokens?: boolean } = {}): StreamDecoder {
    return new StreamDecoder((ids) => this.decode(ids, opts));
  }

  /** Render a conversation with the model's chat template (bos/eos/pad/unk tokens are in the context). */
  renderChat(messages: readonly ChatMessage[], opts: { addGenerationPrompt?: boolean; extra?: Json } = {}): string {
    if (!this.chatTemplate)
      throw new TokenizerError(`${this.dir}: no chat template (tokenizer_config.json has no "chat_template" and there is no chat_template.jinja); pass raw text instead`);
    this.template ??= new Template(this.chatTemplate);
    return this.template.render({
      ...this.specialTokens,
      ...opts.extra,
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
    });
  }
}

/**
 * Emits text as ids arrive without splitting multi-byte characters. Decoding single tokens is wrong for
 * byte-level BPE (a character may span tokens) and for SentencePiece (leading-space handling depends on context),
 * so each step decodes a short window that starts at an already-emitted "prefix" token and emits only the text
 * beyond it, holding back while the window ends in an incomplete character (U+FFFD).
 */
export class StreamDecoder {
  private ids: number[] = [];
  private prefix = 0;
  private read = 0;

  constructor(private readonly decodeFn: (ids: number[]) => string) {}

  push(id: number): string {
    this.ids.push(id);
    return this.step(false);
  }

  /** Emit whatever is still held back (e.g. a truly invalid byte sequence at the end). */
  flush(): string {
    return this.step(true);
  }

  private step(force: boolean): string {
    const prefixText = this.decodeFn(this.ids.slice(this.prefix, this.read));
    const text = this.decodeFn(this.ids.slice(this.prefix));
    if (text.length <= prefixText.length || (!force && text.endsWith('\uFFFD'))) return '';
    this.prefix = this.read;
    this.read = this.ids.length;
    // keep only the window still needed, so a long generation does not grow the array
    if (this.prefix > 0) {
      this.ids = this.ids.slice(this.prefix);
      this.read -= this.prefix;
      this.prefix = 0;
    }
    return text.slice(prefixText.length);
  }
}
