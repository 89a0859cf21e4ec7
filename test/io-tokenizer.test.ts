import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TextTokenizer, TokenizerError } from '../runtime/io/tokenizer.js';

const MODELS = path.resolve(__dirname, '../../shared/models');
const dir = path.join(MODELS, 'tiny-llama');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'locret-io-tok-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('tokenizer', () => {
  const tok = TextTokenizer.fromDir(dir);
  const golden = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));

  it('encodes the golden prompt to exactly the HF input_ids (BOS included)', () => {
    expect(tok.encode(golden.prompt)).toEqual(golden.input_ids);
    expect(tok.encode(golden.prompt, { addSpecialTokens: false })).toEqual(golden.input_ids.slice(1));
    expect(tok.decode(golden.input_ids, { skipSpecialTokens: true })).toBe(golden.prompt);
    expect(tok.decode(golden.input_ids)).toBe('<|begin_of_text|>' + golden.prompt);
    expect(tok.tokenId('<|end_of_text|>')).toBe(1);
  });

  it('golden greedy continuation decodes to the golden text', () => {
    const ids: number[] = golden.greedy_24 ?? [];
    if (typeof golden.greedy_24_text === 'string') expect(tok.decode(ids, { skipSpecialTokens: true })).toBe(golden.greedy_24_text);
  });

  it('stream decoder never splits multi-byte characters and reproduces the full decode', () => {
    const text = 'héllo 世界 🙂 naïve — café\nThe pass key is 48213.';
    const ids = tok.encode(text, { addSpecialTokens: false });
    const s = tok.streamDecoder();
    const pieces = ids.map((id) => s.push(id));
    pieces.push(s.flush());
    expect(pieces.join('')).toBe(text);
    for (const p of pieces) expect(p).not.toContain('\uFFFD');
    // at least one token produced no text yet (the middle of a multi-byte character)
    expect(pieces.slice(0, -1).some((p) => p === '')).toBe(true);
  });

  it('stream decoder flushes an incomplete trailing character', () => {
    const ids = tok.encode('世', { addSpecialTokens: false });
    const s = tok.streamDecoder();
    expect(s.push(ids[0])).toBe('');
    expect(s.flush()).toContain('\uFFFD');
  });

  it('renders a chat template with bos/eos in context; clear error without one', () => {
    expect(() => tok.renderChat([{ role: 'user', content: 'hi' }])).toThrow(TokenizerError);
    expect(() => tok.renderChat([{ role: 'user', content: 'hi' }])).toThrow(/no chat template/);
    const d = path.join(tmp, 'chat');
    fs.mkdirSync(d);
    fs.copyFileSync(path.join(dir, 'tokenizer.json'), path.join(d, 'tokenizer.json'));
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
    cfg.chat_template =
      "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";
    fs.writeFileSync(path.join(d, 'tokenizer_config.json'), JSON.stringify(cfg));
    const t = TextTokenizer.fromDir(d);
    const msgs = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }];
    expect(t.renderChat(msgs, { addGenerationPrompt: true })).toBe(
      '<|begin_of_text|><|system|>Be brief.<|end_of_text|><|user|>Hi<|end_of_text|><|assistant|>',
    );
    expect(t.renderChat(msgs)).not.toContain('<|assistant|>');
    expect(() => TextTokenizer.fromDir(tmp)).toThrow(/no tokenizer\.json/);
  });
});
