// Reads GGUF files with an independent reader (the @huggingface/gguf npm package) and checks what a file should
// hold: its architecture, counts, the tensor list as llama.cpp's converter names it (with dims) and, per tensor,
// that offsets are increasing, aligned and inside the data. usage: node gguf_check.mjs FILE ARCH N_LAYER [...more]
import fs from "node:fs";
import { gguf } from "@huggingface/gguf";

let failures = 0, checked = 0;
const args = process.argv.slice(2);
for (let i = 0; i < args.length; i += 3) {
  const [file, arch, nLayer] = [args[i], args[i + 1], Number(args[i + 2])];
  const fail = (what) => { console.log(`FAIL ${file}: ${what}`); failures++; };
  const r = await gguf(file, { allowLocalFile: true });
  const md = r.metadata;
  if (md["general.architecture"] !== arch) fail(`architecture ${md["general.architecture"]}, want ${arch}`);
  if (Number(md[`${arch}.block_count`]) !== nLayer) fail(`block_count ${md[`${arch}.block_count`]}`);
  for (const k of ["context_length", "embedding_length", "feed_forward_length", "wkv.head_size", "attention.layer_norm_epsilon"])
    if (md[`${arch}.${k}`] === undefined) fail(`missing ${arch}.${k}`);
  if (md["tokenizer.ggml.model"] !== "rwkv") fail(`tokenizer.ggml.model ${md["tokenizer.ggml.model"]}`);
  const C = Number(md[`${arch}.embedding_length`]);
  const byName = new Map(r.tensorInfos.map((t) => [t.name, t]));
  const perLayer = arch === "rwkv6"
    ? ["attn_norm.weight", "attn_norm.bias", "attn_norm_2.weight", "attn_norm_2.bias", "time_mix_lerp_x.weight",
       "time_mix_lerp_fused.weight", "time_mix_w1.weight", "time_mix_w2.weight", "time_mix_decay.weight",
       "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_first.weight", "time_mix_key.weight",
       "time_mix_value.weight", "time_mix_receptance.weight", "time_mix_gate.weight", "time_mix_ln.weight",
       "time_mix_ln.bias", "time_mix_output.weight", "channel_mix_lerp_k.weight", "channel_mix_lerp_r.weight",
       "channel_mix_key.weight", "channel_mix_receptance.weight", "channel_mix_value.weight"]
    : ["attn_norm.weight", "attn_norm.bias", "attn_norm_2.weight", "attn_norm_2.bias", "time_mix_lerp_fused.weight",
       "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight", "time_mix_a0.weight", "time_mix_a1.weight",
       "time_mix_a2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_g1.weight",
       "time_mix_g2.weight", "time_mix_k_k.weight", "time_mix_k_a.weight", "time_mix_r_k.weight",
       "time_mix_receptance.weight", "time_mix_key.weight", "time_mix_value.weight", "time_mix_ln.weight",
       "time_mix_ln.bias", "time_mix_output.weight", "channel_mix_lerp_k.weight", "channel_mix_key.weight",
       "channel_mix_value.weight"];
  const want = ["token_embd.weight", "token_embd_norm.weight", "token_embd_norm.bias", "output_norm.weight",
                "output_norm.bias", "output.weight"];
  for (let l = 0; l < nLayer; l++) for (const n of perLayer) want.push(`blk.${l}.${n}`);
  for (const n of want) if (!byName.has(n)) fail(`missing tensor ${n}`);
  if (r.tensorInfos.length !== want.length) fail(`${r.tensorInfos.length} tensors, llama.cpp expects ${want.length}`);
  const fused = byName.get("blk.0.time_mix_lerp_fused.weight");
  if (fused && fused.shape.map(Number).join(",") !== [C, 1, 1, arch === "rwkv6" ? 5 : 6].join(","))
    fail(`time_mix_lerp_fused dims ${fused.shape}`);
  const emb = byName.get("token_embd.weight");
  if (emb && Number(emb.shape[0]) !== C) fail(`token_embd dims ${emb.shape}`);
  const tokens = md["tokenizer.ggml.tokens"];
  if (!Array.isArray(tokens) || tokens.length !== Number(emb.shape[1])) fail(`tokenizer.ggml.tokens has ${tokens?.length}`);
  const size = fs.statSync(file).size;
  let prev = -1n;
  for (const t of r.tensorInfos) {
    if (t.offset <= prev || t.offset % 32n !== 0n || r.tensorDataOffset + t.offset >= BigInt(size))
      fail(`tensor ${t.name} at offset ${t.offset}`);
    prev = t.offset;
  }
  checked++;
}
if (!failures) console.log(`ok   @huggingface/gguf read ${checked} files: architecture, metadata, the tensor list llama.cpp requires, offsets`);
process.exit(failures ? 1 : 0);
