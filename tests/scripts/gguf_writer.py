#!/usr/bin/env python3
"""An independent GGUF writer for the tests (numpy; shares no code with rwkv-lite): turns an rwkv.cpp file of an
RWKV-6 or RWKV-7 model into a GGUF file laid out as llama.cpp's convert_hf_to_gguf.py writes one (arch rwkv6 /
rwkv7, its tensor names, fused token-shift mixes, (out, in) LoRAs, v6 rescaling of time_mix_output and
channel_mix_value by 2^(layer // rescale), v7's layer-0 v0/v1/v2 copies of a0/a1/a2, the vocabulary as Python
bytes reprs), with the big matrices quantised to a chosen ggml type by quantisers written here.

usage: gguf_writer.py IN.bin OUT.gguf [--type f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q4_k|q5_k|q6_k]
                      [--rescale N] [--dequant OUT_F32.gguf]
--dequant also writes the same model with the quantised matrices stored as their dequantised F32 values (the
values this script's own dequantiser gives), so a reader's result can be compared with exact numbers.
Also: gguf_writer.py --quant-fixture OUT.gguf OUT.f32  (one tensor per quantised type, random blocks, and the
expected values in tensor order)."""
import struct
import sys

import numpy as np

TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q4_k": 12, "q5_k": 13, "q6_k": 14,
         "bf16": 30}
BLOCK = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
         12: (256, 144), 13: (256, 176), 14: (256, 210)}


# ---------------------------------------------------------------------------- rwkv.cpp reader

def read_rwkvcpp(path):
    data = open(path, "rb").read()
    magic, version, n_vocab, n_embd, n_layer, _ = struct.unpack_from("<6i", data, 0)
    assert magic == 0x67676D66 and version in (100, 101), "not an rwkv.cpp file"
    off, tensors = 24, {}
    while off < len(data):
        nd, kl, dt = struct.unpack_from("<3i", data, off)
        off += 12
        ne = struct.unpack_from(f"<{nd}i", data, off)
        off += 4 * nd
        name = data[off:off + kl].decode()
        off += kl
        n = int(np.prod(ne))
        dtype = {0: np.float32, 1: np.float16}[dt]
        a = np.frombuffer(data, dtype=dtype, count=n, offset=off).astype(np.float32)
        off += n * np.dtype(dtype).itemsize
        tensors[name] = a.reshape(tuple(reversed(ne)))  # torch order
    return tensors, n_vocab, n_embd, n_layer


# ---------------------------------------------------------------------------- quantisers (one row at a time)

def f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16)


def q_blocks(x, t):
    """Quantises a 1-D float32 array (a multiple of the block size) to ggml type t: bytes, and the values those
    bytes stand for (this script's dequantiser)."""
    out, deq = bytearray(), []
    be = BLOCK[t][0]
    for b in x.reshape(-1, be):
        raw, y = QUANT[t](b.astype(np.float32))
        out += raw
        deq.append(y)
    return bytes(out), np.concatenate(deq).astype(np.float32)


def q8_0(b):
    d = f16(np.abs(b).max() / 127.0)
    q = np.round(b / np.float32(d)).clip(-127, 127).astype(np.int8) if d != 0 else np.zeros(32, np.int8)
    return d.tobytes() + q.tobytes(), q.astype(np.float32) * np.float32(d)


def nibbles(q):
    return (q[:16] | (q[16:] << 4)).astype(np.uint8).tobytes()


def q4_0(b):
    m = b[np.argmax(np.abs(b))]
    d = f16(m / -8.0)
    q = (np.floor(b / np.float32(d) + 8.5) if d != 0 else np.full(32, 8)).clip(0, 15).astype(np.uint8)
    return d.tobytes() + nibbles(q), (q.astype(np.float32) - 8) * np.float32(d)


def q4_1(b):
    lo, hi = b.min(), b.max()
    d, m = f16((hi - lo) / 15.0), f16(lo)
    q = (np.floor((b - np.float32(m)) / np.float32(d) + 0.5) if d != 0 else np.zeros(32)).clip(0, 15).astype(np.uint8)
    return d.tobytes() + m.tobytes() + nibbles(q), q.astype(np.float32) * np.float32(d) + np.float32(m)


def q5(b, with_min):
    if with_min:
        lo, hi = b.min(), b.max()
        d, m = f16((hi - lo) / 31.0), f16(lo)
        q = (np.floor((b - np.float32(m)) / np.float32(d) + 0.5) if d != 0 else np.zeros(32)).clip(0, 31).astype(np.uint32)
        y = q.astype(np.float32) * np.float32(d) + np.float32(m)
    else:
        mx = b[np.argmax(np.abs(b))]
        d = f16(mx / -16.0)
        q = (np.floor(b / np.float32(d) + 16.5) if d != 0 else np.full(32, 16)).clip(0, 31).astype(np.uint32)
        y = (q.astype(np.float32) - 16) * np.float32(d)
    qh = int(sum(((int(q[j]) >> 4) & 1) << j for j in range(32)))
    head = d.tobytes() + (m.tobytes() if with_min else b"")
    return head + struct.pack("<I", qh) + nibbles((q & 15).astype(np.uint8)), y


def pack_scales_k4(sc, mn):
    """The 12-byte scales of Q4_K/Q5_K for 8 six-bit scales and mins (the inverse of get_scale_min_k4)."""
    s = [0] * 12
    for j in range(8):
        if j < 4:
            s[j] = (s[j] & 0xC0) | sc[j]
            s[j + 4] = (s[j + 4] & 0xC0) | mn[j]
        else:
            s[j + 4] = (sc[j] & 0xF) | ((mn[j] & 0xF) << 4)
            s[j - 4] |= (sc[j] >> 4) << 6
            s[j] |= (mn[j] >> 4) << 6
    return bytes(s)


def qk(b, bits):
    """Q4_K (bits 4) / Q5_K (bits 5): 8 sub-blocks of 32 with a 6-bit scale and min each."""
    top = (1 << bits) - 1
    subs = b.reshape(8, 32)
    mins = np.maximum(0, -subs.min(axis=1))          # value = d*sc*q - dmin*mn, q >= 0
    scales = (subs.max(axis=1) + mins) / top
    d, dmin = f16(scales.max() / 63.0), f16(mins.max() / 63.0)
    sc = np.round(scales / np.float32(d)).clip(0, 63).astype(int) if d != 0 else np.zeros(8, int)
    mn = np.round(mins / np.float32(dmin)).clip(0, 63).astype(int) if dmin != 0 else np.zeros(8, int)
    ds, ms = np.float32(d) * sc.astype(np.float32), np.float32(dmin) * mn.astype(np.float32)
    q = np.zeros((8, 32), dtype=np.int64)
    for s in range(8):
        if ds[s] > 0:
            q[s] = np.round((subs[s] + ms[s]) / ds[s]).clip(0, top)
    y = (ds[:, None] * q.astype(np.float32) - ms[:, None]).reshape(-1)
    qs = bytearray(128)
    qh = bytearray(32)
    for c in range(4):
        lo, hi = q[2 * c], q[2 * c + 1]
        for l in range(32):
            qs[32 * c + l] = (int(lo[l]) & 15) | ((int(hi[l]) & 15) << 4)
            if bits == 5:
                qh[l] |= ((int(lo[l]) >> 4) & 1) << (2 * c)
                qh[l] |= ((int(hi[l]) >> 4) & 1) << (2 * c + 1)
    raw = d.tobytes() + dmin.tobytes() + pack_scales_k4([int(v) for v in sc], [int(v) for v in mn])
    return raw + (bytes(qh) if bits == 5 else b"") + bytes(qs), y


def q6_k(b):
    subs = b.reshape(16, 16)
    amax = np.abs(subs).max(axis=1)
    scale = amax / 31.0
    d = f16(np.abs(scale).max() / 127.0)
    sc = np.round(scale / np.float32(d)).clip(-128, 127).astype(np.int8) if d != 0 else np.zeros(16, np.int8)
    step = np.float32(d) * sc.astype(np.float32)
    q = np.zeros((16, 16), dtype=np.int64)
    for s in range(16):
        if step[s] != 0:
            q[s] = np.round(subs[s] / step[s]).clip(-32, 31)
    y = (step[:, None] * q.astype(np.float32)).reshape(-1)
    u = (q.reshape(-1) + 32).astype(np.int64)  # value index i = 128 n + 32 k + l, k = 0..3
    ql, qh = bytearray(128), bytearray(64)
    for n in range(2):
        for l in range(32):
            v = [int(u[128 * n + 32 * k + l]) for k in range(4)]
            ql[64 * n + l] = (v[0] & 15) | ((v[2] & 15) << 4)
            ql[64 * n + l + 32] = (v[1] & 15) | ((v[3] & 15) << 4)
            qh[32 * n + l] = (v[0] >> 4) | ((v[1] >> 4) << 2) | ((v[2] >> 4) << 4) | ((v[3] >> 4) << 6)
    return bytes(ql) + bytes(qh) + sc.tobytes() + d.tobytes(), y


QUANT = {8: q8_0, 2: q4_0, 3: q4_1, 6: lambda b: q5(b, False), 7: lambda b: q5(b, True), 12: lambda b: qk(b, 4),
         13: lambda b: qk(b, 5), 14: q6_k}


def encode(a, t):
    """(bytes, the values they stand for) of a float32 array stored as ggml type t (rows along the last axis)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if t == 0:
        return a.tobytes(), a
    if t == 1:
        return a.astype(np.float16).tobytes(), a.astype(np.float16).astype(np.float32)
    if t == 30:
        u = a.view(np.uint32)
        r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
        return r.tobytes(), (r.astype(np.uint32) << 16).view(np.float32).reshape(a.shape)
    raw, y = q_blocks(a.reshape(-1), t)
    return raw, y.reshape(a.shape)


# ---------------------------------------------------------------------------- GGUF writing

def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def kv_bytes(key, kind, value):
    out = gstr(key)
    if kind == "u32":
        return out + struct.pack("<II", 4, value)
    if kind == "f32":
        return out + struct.pack("<If", 6, value)
    if kind == "str":
        return out + struct.pack("<I", 8) + gstr(value)
    if kind == "strs":
        return out + struct.pack("<IIQ", 9, 8, len(value)) + b"".join(gstr(v) for v in value)
    if kind == "i32s":
        return out + struct.pack("<IIQ", 9, 5, len(value)) + struct.pack(f"<{len(value)}i", *value)
    raise ValueError(kind)


def write_gguf(path, kvs, tensors):
    """tensors: (name, ggml type, torch shape, bytes)."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kv_bytes(*kv) for kv in kvs)
    infos, off = b"", 0
    for name, t, shape, raw in tensors:
        ne = list(reversed(shape))
        infos += gstr(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne) + struct.pack("<IQ", t, off)
        off += (len(raw) + 31) // 32 * 32
    blob = head + infos
    blob += b"\0" * ((32 - len(blob) % 32) % 32)
    with open(path, "wb") as f:
        f.write(blob)
        for _, _, _, raw in tensors:
            f.write(raw + b"\0" * ((32 - len(raw) % 32) % 32))


def py_repr_bytes(b):
    return repr(bytes(b))[2:-1]


def convert(src, dst, qtype, rescale, dequant_path):
    w, V, C, L = read_rwkvcpp(src)
    v7 = "blocks.0.att.x_rwkvag" in w
    arch = "rwkv7" if v7 else "rwkv6"
    out, deq = [], []

    def add(name, a, t=0, big=False):
        a = np.asarray(a, dtype=np.float32)
        tt = qtype if big and a.shape[-1] % BLOCK.get(qtype, (1, 0))[0] == 0 else (0 if not big else 1)
        raw, y = encode(a, tt if big else t)
        out.append((name, tt if big else t, list(a.shape), raw))
        deq.append((name, 0, list(a.shape), np.ascontiguousarray(y, dtype=np.float32).tobytes()))

    add("token_embd.weight", w["emb.weight"], big=True)
    add("token_embd_norm.weight", w["blocks.0.ln0.weight"])
    add("token_embd_norm.bias", w["blocks.0.ln0.bias"])
    add("output_norm.weight", w["ln_out.weight"])
    add("output_norm.bias", w["ln_out.bias"])
    add("output.weight", w["head.weight"], big=True)
    for i in range(L):
        p, g = f"blocks.{i}.", f"blk.{i}."
        for a, b in (("ln1", "attn_norm"), ("ln2", "attn_norm_2"), ("att.ln_x", "time_mix_ln")):
            add(g + b + ".weight", w[p + a + ".weight"])
            add(g + b + ".bias", w[p + a + ".bias"])
        scale = 2.0 ** (i // rescale) if rescale and not v7 else 1.0
        for a, b in (("att.key", "time_mix_key"), ("att.value", "time_mix_value"), ("att.receptance", "time_mix_receptance"),
                     ("ffn.key", "channel_mix_key")):
            add(g + b + ".weight", w[p + a + ".weight"], big=True)
        add(g + "time_mix_output.weight", w[p + "att.output.weight"] / scale, big=True)
        add(g + "channel_mix_value.weight", w[p + "ffn.value.weight"] / scale, big=True)
        if v7:
            add(g + "time_mix_lerp_fused.weight", w[p + "att.x_rwkvag"].reshape(6, 1, 1, C))  # r,w,k,v,a,g
            for n in ("w0", "a0", "k_k", "k_a"):
                add(g + f"time_mix_{n}.weight", w[p + "att." + n].reshape(C))
            add(g + "time_mix_r_k.weight", w[p + "att.r_k"].reshape(C))
            add(g + "channel_mix_lerp_k.weight", w[p + "ffn.x_k"].reshape(C))
            for lo in "wavg":
                src_lo = "a" if (lo == "v" and i == 0) else lo  # layer 0: copies of a0/a1/a2
                add(g + f"time_mix_{lo}1.weight", w[p + f"att.{src_lo}1"])  # rwkv.cpp keeps (out, in) as GGUF does
                add(g + f"time_mix_{lo}2.weight", w[p + f"att.{src_lo}2"])
                if lo == "v":
                    add(g + "time_mix_v0.weight", w[p + f"att.{src_lo}0"].reshape(C))
        else:
            add(g + "time_mix_gate.weight", w[p + "att.gate.weight"], big=True)
            add(g + "channel_mix_receptance.weight", w[p + "ffn.receptance.weight"], big=True)
            add(g + "time_mix_lerp_x.weight", w[p + "att.time_maa_x"].reshape(C))
            add(g + "time_mix_lerp_fused.weight",
                np.stack([w[p + "att.time_maa_" + k].reshape(C) for k in "wkvrg"]).reshape(5, 1, 1, C))
            add(g + "time_mix_w1.weight", w[p + "att.time_maa_w1"])   # rwkv.cpp (5 Dm, C) = GGUF torch order
            add(g + "time_mix_w2.weight", w[p + "att.time_maa_w2"])   # (5, C, Dm)
            add(g + "time_mix_decay.weight", w[p + "att.time_decay"].reshape(C))
            add(g + "time_mix_decay_w1.weight", w[p + "att.time_decay_w1"])
            add(g + "time_mix_decay_w2.weight", w[p + "att.time_decay_w2"])
            H = w["blocks.0.att.time_faaaa"].shape[0]
            add(g + "time_mix_first.weight", w[p + "att.time_faaaa"].reshape(H, C // H))
            add(g + "channel_mix_lerp_k.weight", w[p + "ffn.time_maa_k"].reshape(C))
            add(g + "channel_mix_lerp_r.weight", w[p + "ffn.time_maa_r"].reshape(C))
    F = w["blocks.0.ffn.key.weight"].shape[0]
    heads = w["blocks.0.att.r_k"].shape[0] if v7 else w["blocks.0.att.time_faaaa"].shape[0]
    head_size = C // heads
    kvs = [("general.architecture", "str", arch), ("general.type", "str", "model"), ("general.name", "str", "tiny"),
           (f"{arch}.context_length", "u32", 1048576), (f"{arch}.embedding_length", "u32", C),
           (f"{arch}.block_count", "u32", L), (f"{arch}.attention.layer_norm_epsilon", "f32", 1e-5),
           (f"{arch}.wkv.head_size", "u32", head_size), (f"{arch}.feed_forward_length", "u32", F)]
    if v7:
        kvs += [("rwkv7.attention.decay_lora_rank", "u32", w["blocks.0.att.w1"].shape[0]),
                ("rwkv7.attention.iclr_lora_rank", "u32", w["blocks.0.att.a1"].shape[0]),
                ("rwkv7.attention.value_residual_mix_lora_rank", "u32", w["blocks.1.att.v1"].shape[0]),
                ("rwkv7.attention.gate_lora_rank", "u32", w["blocks.0.att.g1"].shape[0])]
    else:
        kvs += [("rwkv6.rescale_every_n_layers", "u32", rescale),
                ("rwkv6.time_mix_extra_dim", "u32", w["blocks.0.att.time_maa_w1"].shape[0] // 5),
                ("rwkv6.time_decay_extra_dim", "u32", w["blocks.0.att.time_decay_w1"].shape[0])]
    kvs += [(f"{arch}.attention.head_count", "u32", 0), ("general.quantization_version", "u32", 2),
            ("tokenizer.ggml.model", "str", "rwkv"),
            ("tokenizer.ggml.tokens", "strs", [py_repr_bytes([i]) for i in range(V)]),
            ("tokenizer.ggml.token_type", "i32s", [1] * V)]
    write_gguf(dst, kvs, out)
    if dequant_path:
        write_gguf(dequant_path, kvs, deq)


def quant_fixture(path, expected_path):
    rng = np.random.default_rng(7)
    tensors, expected = [], []
    for name, t in (("q4_0", 2), ("q4_1", 3), ("q5_0", 6), ("q5_1", 7), ("q8_0", 8), ("q4_k", 12), ("q5_k", 13), ("q6_k", 14)):
        a = (rng.standard_normal((2, 512)) * rng.uniform(0.01, 3, size=(2, 1))).astype(np.float32)
        a[1, :40] = 0  # a zero run (zero scales)
        raw, y = encode(a, t)
        tensors.append((name, t, [2, 512], raw))
        expected.append(y.astype(np.float32).tobytes())
    write_gguf(path, [("general.architecture", "str", "none")], tensors)
    open(expected_path, "wb").write(b"".join(expected))


def main(argv):
    if argv[1:2] == ["--quant-fixture"]:
        quant_fixture(argv[2], argv[3])
        return 0
    src, dst = argv[1], argv[2]
    qtype, rescale, dequant = 0, 0, None
    i = 3
    while i < len(argv):
        if argv[i] == "--type":
            qtype = TYPES[argv[i + 1]]
        elif argv[i] == "--rescale":
            rescale = int(argv[i + 1])
        elif argv[i] == "--dequant":
            dequant = argv[i + 1]
        else:
            sys.exit(f"unknown argument {argv[i]}")
        i += 2
    convert(src, dst, qtype, rescale, dequant)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
