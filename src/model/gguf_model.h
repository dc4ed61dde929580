// RWKV-6 / RWKV-7 models in GGUF files as llama.cpp's converter (convert_hf_to_gguf.py) writes them: arch
// "rwkv6" / "rwkv7", its tensor names ("blk.N.time_mix_key.weight", ...), its fused token-shift mixes
// (time_mix_lerp_fused: w,k,v,r,g for v6; r,w,k,v,a,g for v7), its transposed LoRAs, v6's output rescaling
// (time_mix_output and channel_mix_value of layer i divided by 2^(i / rescale_every_n_layers)), v7's copies of
// a0/a1/a2 as layer 0's v0/v1/v2, and the World vocabulary in tokenizer.ggml.tokens (Python bytes reprs).
// Reading maps a file onto the official RWKV-LM names (then canonicalize() as for a .pth); writing goes the
// other way from export_official().
#pragma once

#include <string>
#include <vector>

#include "format/format.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace rwkvl {

// The tensors of a GGUF checkpoint (read_gguf) under official names and shapes. Throws kUnsupported for an
// architecture other than rwkv6/rwkv7, kFormat for unknown or missing tensors and inconsistent shapes.
RawCheckpoint gguf_to_official(RawCheckpoint raw);

// The World vocabulary a GGUF file carries (tokenizer.ggml.model "rwkv", 65,536 tokens): each id's bytes, ""
// for token 0 and unused ids; empty when the file carries none or another vocabulary.
std::vector<std::string> gguf_world_vocab(const RawCheckpoint& raw);

// Python's repr() of a bytes object without the b'' (the GGUF token strings), and its inverse (llama.cpp's
// unescaping of RWKV tokens).
std::string gguf_token_escape(const std::string& bytes);
std::string gguf_token_unescape(const std::string& text);

// Writes the model as GGUF (llama.cpp's layout). `type`: the matrices' type: kKeep (f32, f16 and bf16 as they
// are, int8 as Q8_0, q4 as Q4_1: the same values), kF32, kF16, kBF16, kI8 (Q8_0) or kQ4 (Q4_1); vectors and
// LoRAs are F32 (v7's a/v/g LoRAs F16 unless F32). Factored matrices (compress --lowrank) are multiplied out.
// The tokenizer (World or bytes) goes into tokenizer.ggml.*. Throws kUnsupported for v4/v5 (llama.cpp has no
// such architecture), neuron-bundled channel-mix or cluster-head files, and other vocabularies.
void save_gguf(const Model& m, const Tokenizer& tok, const std::string& path, WeightDType type);

}  // namespace rwkvl
